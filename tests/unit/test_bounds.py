"""Bounds (issue 25, item 5): every amount is at most Rp 1 trillion, and what is bigger is refused by name.

An attacker published `qc-passed` events of 2^63-1 and 2^64+5 rupiah; the ledger's sums then
overflowed `bigint` on every read and the auditor's replay died packing the amount. These tests
pin each door the amount now meets: the decoder (a record), the HTTP inputs (a request), the
payout run (a total that may exceed one amount's bound), and the posting rules (an event that no
ledger row can hold). The integration test (`tests/integration/test_bounds.py`) runs the attack
end to end against the real broker and PostgreSQL.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Annotated

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel, Field, ValidationError

from anyam.audit.invariants import HistoryFacts, Position
from services.payout import domain as payout
from services.production.http import SetRate
from shared.contracts import Envelope, SchemaInvalid, Topic, decode, encode, service_source
from shared.contracts import events as ev
from shared.contracts.events import MAX_RUPIAH
from shared.web.inputs import CommandBody, Rupiah
from shared.web.problems import install_problem_handlers
from tests.unit.test_contracts import EXAMPLES

WIB = timezone(timedelta(hours=7))
MARCH = datetime(2024, 3, 4, 9, 15, tzinfo=WIB)
#: What the attacker published, and the first amount past the bound.
HOSTILE = [2**63 - 1, 2**64 + 5, MAX_RUPIAH + 1]

#: Every example event that carries money, with the name of each of its `*_idr` fields.
MONEY_FIELDS = [(example, name) for example in EXAMPLES for name in type(example).model_fields
                if name.endswith("_idr")]


def test_the_bound_is_one_trillion_rupiah_as_the_contract_says():
    assert MAX_RUPIAH == 1_000_000_000_000
    # Every event type's money is bounded, not only the ones the attacker used.
    assert {type(e).event_type for e, _ in MONEY_FIELDS} == {
        "piece-rate-set", "piece-woven", "qc-passed", "payout-scheduled", "paid", "payout-failed",
        "personal-data-erased", "collaborator-invoiced", "collaborator-paid"}


def record_with(example: ev.EventData, name: str, amount: int) -> bytes:
    """The record of `example` with its field `name` rewritten to `amount`, as a forger would write it."""
    document = json.loads(encode(wrapped(example)).value)
    document["data"][name] = amount
    return json.dumps(document).encode()


def wrapped(example: ev.EventData) -> Envelope:
    return Envelope.wrap(example, source=service_source("production"), time=MARCH)


@pytest.mark.parametrize(("example", "name"), MONEY_FIELDS, ids=lambda p: getattr(p, "event_type", p))
@pytest.mark.parametrize("amount", HOSTILE, ids=["2^63-1", "2^64+5", "10^12+1"])
def test_the_decoder_refuses_an_amount_over_the_bound_as_schema_invalid_naming_the_field(example, name, amount):
    with pytest.raises(SchemaInvalid) as refused:
        decode(record_with(example, name, amount), topic=example.topic)

    assert refused.value.reason == "schema-invalid"
    assert refused.value.path == f"data.{name}"
    assert f"`data.{name}`" in refused.value.message
    assert str(amount) not in refused.value.message  # values are never quoted: they may be personal data


@pytest.mark.parametrize(("example", "name"), MONEY_FIELDS, ids=lambda p: getattr(p, "event_type", p))
def test_the_decoder_accepts_exactly_one_trillion_and_zero(example, name):
    for amount in (MAX_RUPIAH, 0):
        assert getattr(decode(record_with(example, name, amount), topic=example.topic).data, name) == amount


def test_no_producer_can_make_an_event_over_the_bound():
    with pytest.raises(ValidationError, match="less than or equal to 1000000000000"):
        ev.QcPassed(piece_id="pc_1", artisan_id="res_1", collaborator_id="col_1", product="piring",
                    amount_idr=MAX_RUPIAH + 1, submission_id="sub_1", inspected_at=MARCH, signature="c2ln")


# --- HTTP inputs ------------------------------------------------------------------------------------


class Amount(CommandBody):
    amount_idr: Rupiah


def amount_app() -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)

    @app.post("/amounts")
    async def take(body: Amount) -> dict[str, int]:
        return {"amount_idr": body.amount_idr}

    return app


@pytest.mark.parametrize("amount", [*HOSTILE, -1, "1000", 1000.0, True])
async def test_a_request_with_an_amount_out_of_bounds_is_a_422_problem_naming_the_field(amount):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=amount_app()), base_url="http://t") as http:
        response = await http.post("/amounts", json={"amount_idr": amount})

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "invalid-request"
    assert [error["field"] for error in problem["errors"]] == ["amount_idr"]


async def test_a_request_with_exactly_one_trillion_is_taken():
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=amount_app()), base_url="http://t") as http:
        response = await http.post("/amounts", json={"amount_idr": MAX_RUPIAH})

    assert (response.status_code, response.json()) == (200, {"amount_idr": MAX_RUPIAH})


def test_an_amount_field_may_narrow_the_bound_never_widen_it():
    class Narrow(BaseModel):
        amount_idr: Annotated[Rupiah, Field(ge=1, le=5)]

    assert Narrow(amount_idr=5).amount_idr == 5
    for amount in (0, 6, MAX_RUPIAH + 1):
        with pytest.raises(ValidationError):
            Narrow(amount_idr=amount)


@pytest.mark.parametrize("rate", [0, 100_000_001, *HOSTILE, "15000", 15000.0])
def test_a_piece_rate_out_of_bounds_is_refused_naming_rate_idr(rate):
    with pytest.raises(ValidationError) as refused:
        SetRate(product="piring", rate_idr=rate, effective_from=MARCH)
    assert [error["loc"] for error in refused.value.errors()] == [("rate_idr",)]


def test_a_piece_rate_within_bounds_is_taken():
    assert SetRate(product="piring", rate_idr=100_000_000, effective_from=MARCH).rate_idr == 100_000_000
    schema = SetRate.model_json_schema()["properties"]["rate_idr"]
    assert (schema["minimum"], schema["maximum"]) == (1, 100_000_000)  # what the OpenAPI document publishes


# --- totals: a payout run ---------------------------------------------------------------------------


def test_a_payout_run_pays_at_most_one_trillion_per_artisan_and_the_next_runs_pay_the_rest():
    earned = {"res_big": 2 * MAX_RUPIAH + 5, "res_small": 35_000}
    committed: dict[str, int] = {}
    paid_per_run = []
    for n in range(4):
        command = payout.RunPayouts(f"run-{n}", MARCH, MARCH + timedelta(days=1))
        payouts = payout.plan_run(command, earned, committed)
        paid_per_run.append({p.artisan_id: p.amount_idr for p in payouts})
        for p in payouts:
            committed[p.artisan_id] = committed.get(p.artisan_id, 0) + p.amount_idr

    assert paid_per_run == [{"res_big": MAX_RUPIAH, "res_small": 35_000}, {"res_big": MAX_RUPIAH}, {"res_big": 5}, {}]
    assert committed == earned  # all of it, once, and never a payout event over the bound


# --- an event no ledger row can hold ----------------------------------------------------------------


def passed_at(time: str) -> bytes:
    example = next(e for e in EXAMPLES if isinstance(e, ev.QcPassed))
    document = json.loads(encode(wrapped(example)).value)
    document["time"] = time
    return json.dumps(document).encode()


@pytest.mark.parametrize("time", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:00:00-12:00"])
def test_a_money_event_whose_time_is_no_moment_in_wib_is_unpostable_and_named_never_a_crash(time):
    event = decode(passed_at(time), topic=Topic.PRODUCTION)  # a valid envelope: any offset is RFC 3339

    with pytest.raises(payout.Unpostable, match="`time`"):
        payout.transaction_for(event)
    # The auditor's fact gathering sees it, and does not count it as money.
    facts = HistoryFacts()
    facts.observe(event, Position("production", 0, 7), passed_at(time))
    assert event.id not in facts.money_event_ids


def test_a_business_time_that_is_no_moment_in_wib_is_schema_invalid():
    example = next(e for e in EXAMPLES if isinstance(e, ev.QcPassed))
    document = json.loads(encode(wrapped(example)).value)
    document["data"]["inspected_at"] = "9999-12-31T23:59:59-12:00"

    with pytest.raises(SchemaInvalid) as refused:
        decode(json.dumps(document).encode(), topic=Topic.PRODUCTION)
    assert refused.value.path == "data.inspected_at"
