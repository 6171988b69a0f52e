"""Hostile input and access (issue #9): every service's OpenAPI fuzzed with valid and invalid tokens.

The three services run together on one broker and one PostgreSQL, with a
programme seeded through their own doors first: residents with personal data
(names, NIKs, phones, units, payout accounts), a trained cohort, two
collaborator companies (A and B) with their keys, rates, pieces, QC results
and refused submissions, and a payout run with one payout paid and one failed.

Schemathesis then fuzzes each service's whole OpenAPI document three times:
as staff, as collaborator A, and with hostile tokens (none, garbage, a forged
collaborator token with a wrong HMAC, a near-miss of the staff token, and an
auditor's where staff is needed), each case with one of them. Real ids are
fed to the generator half of the time, so cases reach the seeded records.
Every response is checked by `tests/schemathesis_checks.py`: no 5xx; no
personal datum anywhere in it (staff reading `/residents/{id}/personal-data`
excepted), nor, for A, anything of B's; and the 401/403 problem details of
SPEC §10 wherever the caller may not act.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from anyam.demo.runner import consumers_of
from anyam.stack import ensure_topics
from services.enrollment.app import EnrollmentSettings
from services.enrollment.app import create_app as enrollment_app
from services.payout.app import PayoutSettings
from services.payout.app import create_app as payout_app
from services.production.app import ProductionSettings
from services.production.app import create_app as production_app
from shared.contracts import Topic, topic_name
from shared.contracts.signing import generate_private_key, public_key_b64, signed
from shared.eventstore import wait_until_caught_up, wait_until_published
from shared.settings import KafkaSettings
from shared.web.access import collaborator_token
from tests import schemathesis_checks as checks
from tests.conftest import drop_databases
from tests.fuzzing import fuzz_hostile
from tests.kafka_reader import read_topic
from tests.services import Tokens, client, new_personal_data_key, new_tokens, serve, service_settings

SERVICES = ("enrollment", "production", "payout")
#: Made up, as the demo's people are; distinctive enough that no fuzzed value hits one by chance.
PEOPLE = (
    {"full_name": "Siti Nurhaliza Purnamasari", "nik": "3175064112850001", "phone": "081298765431",
     "unit": "Blok C-417", "payout_account": "BRI 004512398761234"},
    {"full_name": "Dewi Kusumawati Rahayu", "nik": "3175065503790002", "phone": "+6285711122233",
     "unit": "Blok A-1203", "payout_account": "Mandiri 1370098765432"},
    {"full_name": "Ratna Anggraini Safitri", "nik": "3175062807910003", "phone": "6287788990011",
     "unit": "Blok D-508", "payout_account": "DANA 0877-1234-5566"},
    # Registered, never trained: personal data with no programme around it.
    {"full_name": "Endang Sulastri Maharani", "nik": "3175061901680004", "phone": "082133445566",
     "unit": "Blok B-210", "payout_account": "BCA 5271092288"},
)
PERSONAL_FIELDS = ("full_name", "nik", "phone", "unit", "payout_account")


@dataclass
class Collaborator:
    collaborator_id: str
    name: str
    public_key: str
    token: str
    pieces: list[str] = field(default_factory=list)
    submissions: list[str] = field(default_factory=list)

    def belongings(self, tag: str) -> dict[str, str]:
        """What is this collaborator's and no other collaborator's business, labelled."""
        owned = {f"{tag}: collaborator id": self.collaborator_id, f"{tag}: name": self.name,
                 f"{tag}: public key": self.public_key}
        owned |= {f"{tag}: piece {i}": piece for i, piece in enumerate(self.pieces)}
        owned |= {f"{tag}: submission {i}": s for i, s in enumerate(self.submissions)}
        return owned


@dataclass
class Programme:
    tokens: Tokens
    apps: dict[str, FastAPI]
    urls: dict[str, str]
    residents: list[str]
    cohort_id: str
    a: Collaborator
    b: Collaborator
    payouts: list[str]
    kafka: KafkaSettings | None = None

    def personal_data(self) -> dict[str, str]:
        return {f"personal: resident {i} {name}": person[name]
                for i, person in enumerate(PEOPLE) for name in PERSONAL_FIELDS}

    def known_values(self, *, as_collaborator_a: bool = False) -> dict[str, list[str]]:
        """Real ids for the generator; A's run gets B's ids only where A names them in a path."""
        collaborators = [self.a.collaborator_id, self.b.collaborator_id]
        pieces = self.a.pieces + self.b.pieces
        known = {
            "path.collaborator_id": collaborators, "path.piece_id": pieces, "path.resident_id": self.residents,
            "path.artisan_id": self.residents, "path.cohort_id": [self.cohort_id], "path.payout_id": self.payouts,
            "body.collaborator_id": collaborators, "body.piece_id": pieces, "body.resident_id": self.residents,
            "body.artisan_id": self.residents,
        }
        if as_collaborator_a:
            # A refused submission naming B's piece would be filed in A's own feed, an echo of what A
            # sent itself and not a leak; so A's bodies name only A's pieces.
            known["body.piece_id"] = list(self.a.pieces)
        return known


async def settle(apps: dict[str, FastAPI], kafka: KafkaSettings, timeout: float = 120) -> None:
    """Until every outbox is published and every consumer caught up, twice in a row (consuming makes events)."""
    pools = {name: app.state.runtime.pool for name, app in apps.items()}
    previous = None
    while True:
        positions = []
        for pool in pools.values():
            await wait_until_published(pool, timeout=timeout)
            async with pool.acquire() as conn:
                positions.append(await conn.fetchval("SELECT coalesce(max(position), 0) FROM event_store"))
        for service, consumer, topics in consumers_of(kafka.topic_prefix):
            await wait_until_caught_up(pools[service], consumer, kafka, list(topics), timeout=timeout)
        if positions == previous:
            return
        previous = positions


async def post(http: httpx.AsyncClient, path: str, body: dict, *, expect: int = 201) -> dict:
    response = await http.post(path, json=body)
    # The status and code only: a refusal's text is not printed, whatever it holds.
    assert response.status_code == expect, (path, response.status_code, response.json().get("code"))
    return response.json()


async def seed(tokens: Tokens, apps: dict[str, FastAPI], urls: dict[str, str], kafka: KafkaSettings) -> Programme:
    async with client(urls["enrollment"], tokens.staff) as staff:
        residents = [(await post(staff, "/residents", {"rusunawa": "Nagrak", **person}))["resident_id"]
                     for person in PEOPLE]
        await post(staff, "/rusunawa", {"name": "Nagrak", "ovop_product": "piring"})
        cohort_id = (await post(staff, "/cohorts", {
            "rusunawa": "Nagrak", "skill": "menganyam", "product_focus": "piring", "starts_on": "2024-02-26",
            "ends_on": "2024-02-29", "capacity": 10}))["cohort_id"]
        for resident in residents[:3]:
            await post(staff, f"/cohorts/{cohort_id}/enrolments", {"resident_id": resident})
            await post(staff, f"/cohorts/{cohort_id}/completions",
                       {"resident_id": resident, "completed_on": date(2024, 2, 29).isoformat()})
    await settle(apps, kafka)  # production knows who is trained

    collaborators, keys = [], []
    async with client(urls["production"], tokens.staff) as staff:
        for name in ("PT Anyaman Nusantara Sejahtera", "CV Rotan Kreasi Cipayung"):
            key = generate_private_key()
            collaborator_id = (await post(staff, "/collaborators", {
                "name": name, "public_key": public_key_b64(key), "valid_from": "2024-03-01T00:00:00+07:00"}))[
                "collaborator_id"]
            await post(staff, f"/collaborators/{collaborator_id}/rates",
                       {"product": "piring", "rate_idr": 15_000, "effective_from": "2024-03-01T00:00:00+07:00"})
            collaborators.append(Collaborator(collaborator_id, name, public_key_b64(key),
                                              collaborator_token(tokens.secret, collaborator_id)))
            keys.append(key)
        a, b = collaborators
        # A's pieces by residents 0 and 1, B's by residents 1 and 2 (one woman weaves for both).
        for owner, weavers in ((a, residents[:2]), (b, residents[1:3])):
            for artisan in weavers:
                await post(staff, "/material-issues", {"artisan_id": artisan, "collaborator_id": owner.collaborator_id,
                                                       "material": "rotan sintetis", "quantity": 5, "unit": "kg"})
                piece = await post(staff, "/pieces", {"artisan_id": artisan, "collaborator_id": owner.collaborator_id,
                                                      "product": "piring", "woven_at": "2024-03-05T10:00:00+07:00"})
                owner.pieces.append(piece["piece_id"])

    for owner, key, other_key in ((a, keys[0], keys[1]), (b, keys[1], keys[0])):
        async with client(urls["production"], owner.token) as http:
            for index, (piece, verdict) in enumerate(zip(owner.pieces, ("passed", "failed"), strict=True)):
                data = {"submission_id": f"qc-{piece}", "piece_id": piece, "collaborator_id": owner.collaborator_id,
                        "result": verdict, "inspector": f"QC-0{index}", "inspected_at": "2024-03-06T09:00:00+07:00",
                        "defects": [] if verdict == "passed" else ["loose-weave"]}
                response = await http.post("/qc-submissions", content=json.dumps(signed(key, data)))
                assert response.status_code == 201, response.status_code
                owner.submissions.append(data["submission_id"])
                # And one signed with the wrong key: a refusal in this collaborator's own feed.
                forged = {**data, "submission_id": f"forged-{piece}"}
                response = await http.post("/qc-submissions", content=json.dumps(signed(other_key, forged)))
                assert response.json()["code"] == "bad-signature", response.status_code
                owner.submissions.append(forged["submission_id"])
            feed = (await http.get(f"/collaborators/{owner.collaborator_id}/rejections")).json()
            assert len(feed["rejections"]) == 2
    await settle(apps, kafka)  # the ledger has both qc-passed

    async with client(urls["payout"], tokens.staff) as staff:
        run = await post(staff, "/payout-runs", {"run_id": "2024-w10", "period_end": "2024-03-10T23:59:59+07:00"})
        payouts = sorted(p["payout_id"] for p in run["payouts"])
        assert len(payouts) == 2
        scheduled_at = (await staff.get(f"/payouts/{payouts[0]}")).json()["scheduled_at"]
        await post(staff, f"/payouts/{payouts[0]}/confirmation",
                   {"method": "bank-transfer", "reference": "TRF-0001", "paid_at": scheduled_at})
        await post(staff, f"/payouts/{payouts[1]}/failure", {"reason": "wallet-inactive"})
    await settle(apps, kafka)
    return Programme(tokens, apps, urls, residents, cohort_id, a, b, payouts, kafka)


@pytest.fixture(scope="module")
async def programme(broker, postgres) -> AsyncIterator[Programme]:
    kafka = KafkaSettings(kafka_bootstrap=broker.bootstrap, topic_prefix=f"t{uuid.uuid4().hex[:8]}-")
    await ensure_topics(kafka, partitions=3)
    tokens = new_tokens()
    apps, databases = {}, []
    for name, settings_class, factory, extra in (
        ("enrollment", EnrollmentSettings, enrollment_app, {"personal_data_key": new_personal_data_key()}),
        ("production", ProductionSettings, production_app, {}),
        ("payout", PayoutSettings, payout_app, {}),
    ):
        databases.append(f"hostile_{name}_{uuid.uuid4().hex[:8]}")
        database = await postgres.create_database(databases[-1])
        apps[name] = factory(settings_class(**service_settings(kafka, database, tokens, name), **extra))
    try:
        async with serve(apps["enrollment"]) as enrollment, serve(apps["production"]) as production, \
                serve(apps["payout"]) as payout:
            urls = {"enrollment": enrollment, "production": production, "payout": payout}
            yield await seed(tokens, apps, urls, kafka)
    finally:
        await drop_databases(postgres.server_url, databases)


# --- no personal data reaches a topic through any free-text input ------------------------------------------

#: Shaped as what must never reach a topic: a NIK and a phone number, in the words a clerk might type.
NIK_TEXT, PHONE_TEXT = "NIK 3175099912870042", "hubungi 0813-4455-6677"


async def test_nik_or_phone_shaped_text_in_any_free_text_input_never_reaches_a_topic(programme):
    urls, tokens, a = programme.urls, programme.tokens, programme.a
    answers: dict[str, int] = {}
    for n, text in enumerate((NIK_TEXT, PHONE_TEXT)):
        async with client(urls["enrollment"], tokens.staff) as staff:
            person = {"full_name": "Ani", "nik": f"31750999128700{n}9", "unit": "C-1"}
            answers[f"resident.rusunawa {n}"] = (await staff.post("/residents", json={
                "rusunawa": f"Nagrak {text}", **person})).status_code
            for field in ("name", "ovop_product"):
                answers[f"rusunawa.{field} {n}"] = (await staff.post("/rusunawa", json={
                    "name": "Marunda", "ovop_product": "batik", field: text})).status_code
            for field in ("rusunawa", "skill", "product_focus"):
                answers[f"cohort.{field} {n}"] = (await staff.post("/cohorts", json={
                    "rusunawa": "Nagrak", "skill": "menganyam", "product_focus": "piring", field: text,
                    "starts_on": "2024-02-26", "ends_on": "2024-02-29", "capacity": 5})).status_code
            answers[f"withdrawal.reason {n}"] = (await staff.post(
                f"/cohorts/{programme.cohort_id}/withdrawals",
                json={"resident_id": programme.residents[0], "reason": text})).status_code
        async with client(urls["production"], tokens.staff) as staff:
            answers[f"collaborator.name {n}"] = (await staff.post("/collaborators", json={
                "name": f"CV {text}", "public_key": public_key_b64(generate_private_key())})).status_code
            answers[f"rate.product {n}"] = (await staff.post(f"/collaborators/{a.collaborator_id}/rates", json={
                "product": text, "rate_idr": 1, "effective_from": "2024-03-01T00:00:00+07:00"})).status_code
            for field in ("product", "material", "unit"):
                answers[f"usage.{field} {n}"] = (await staff.post(
                    f"/collaborators/{a.collaborator_id}/material-usages", json={
                        "product": "piring", "material": "rotan", "unit": "g", "quantity_per_piece": 250,
                        "effective_from": "2024-03-01T00:00:00+07:00", field: text})).status_code
            for field in ("material", "unit"):
                answers[f"materials.{field} {n}"] = (await staff.post("/material-issues", json={
                    "artisan_id": programme.residents[0], "collaborator_id": a.collaborator_id,
                    "material": "rotan", "quantity": 1, "unit": "kg", field: text})).status_code
            answers[f"piece.product {n}"] = (await staff.post("/pieces", json={
                "artisan_id": programme.residents[0], "collaborator_id": a.collaborator_id, "product": text,
                "woven_at": "2024-03-05T10:00:00+07:00"})).status_code
            # An upload answers 200 with a result per row: a row refused at the door counts as a 422.
            sheet = ("artisan_id,collaborator_id,product,woven_at\n"
                     f'{programme.residents[0]},{a.collaborator_id},"{text}",2024-03-05T10:00:00+07:00\n')
            uploaded = await staff.post("/piece-batches", content=sheet.encode(), headers={
                "Content-Type": "text/csv", "Idempotency-Key": f"pii-upload-{n}"})
            (row,) = uploaded.json()["results"] if uploaded.status_code == 200 else [{}]
            answers[f"piece-batch.product {n}"] = (
                422 if (row.get("status"), row.get("code")) == ("refused", "invalid-row") else uploaded.status_code)
        async with client(urls["production"], a.token) as http:
            for field, value in (("inspector", text), ("defects", [text])):
                data = {"submission_id": f"pii-{field}-{n}", "piece_id": a.pieces[0],
                        "collaborator_id": a.collaborator_id, "result": "failed", "inspector": "QC-01",
                        "inspected_at": "2024-03-06T09:00:00+07:00", "defects": ["stain"], field: value}
                answers[f"submission.{field} {n}"] = (await http.post(
                    "/qc-submissions", content=json.dumps(data))).status_code
        async with client(urls["payout"], tokens.staff) as staff:
            answers[f"failure.reason {n}"] = (await staff.post(
                f"/payouts/{programme.payouts[1]}/failure", json={"reason": text})).status_code
            answers[f"confirmation.method {n}"] = (await staff.post(
                f"/payouts/{programme.payouts[0]}/confirmation",
                json={"method": text, "reference": "TRF-1", "paid_at": "2024-03-10T10:00:00+07:00"})).status_code

    # Each was refused at the door, naming the field: none was taken and written on somewhere.
    assert {name: status for name, status in answers.items() if status != 422} == {}
    await settle(programme.apps, programme.kafka)
    everything = b""
    for topic in Topic:
        for record in await read_topic(programme.kafka, topic_name(topic, programme.kafka.topic_prefix)):
            everything += (record.value or b"") + (record.key or b"") + b"".join(v for _, v in record.headers)
    assert everything  # the seeded programme is there to be searched
    for shaped in ("3175099912870042", "0813-4455-6677", "081344556677"):
        assert shaped.encode() not in everything


# --- the checks can fail ------------------------------------------------------------------------------------

FORBIDDEN = {"personal: resident 0 nik": "3175064112850001", "personal: resident 0 full_name": "Siti Nurhaliza",
             "personal: resident 0 phone": "081298765431", "B: piece 0": "pc_01HBPIECE"}


@pytest.mark.parametrize(("content", "headers", "leaked"), [
    (b'{"resident_id": "res_1", "nik": "3175064112850001"}', {}, ["personal: resident 0 nik"]),
    (b'{"name": "SITI NURHALIZA"}', {}, ["personal: resident 0 full_name"]),
    (b'{"name": "Siti Nurhaliza Purnamasari"}', {}, ["personal: resident 0 full_name"]),
    (b'<td>+6281298765431</td>', {}, ["personal: resident 0 phone"]),  # the same number, normalised
    (b"{}", {"Location": ["/pieces/pc_01HBPIECE"]}, ["B: piece 0"]),
    (b"{}", {"X-Debug": "nik=3175064112850001"}, ["personal: resident 0 nik"]),
    (b'{"piece_id": "pc_01HAPIECE", "resident_id": "res_1"}', {"Content-Type": ["application/json"]}, []),
])
def test_the_leak_check_flags_a_forbidden_value_in_a_body_or_a_header(content, headers, leaked):
    assert checks.find_leaks(FORBIDDEN, content, headers) == leaked


def test_the_access_check_knows_who_may_do_what():
    refusal = checks.acceptable_refusals
    assert refusal("invalid", "GET", "/pieces/{piece_id}", {"piece_id": "x"}, {}) == {401}
    assert refusal("invalid", "GET", "/health", {}, {}) is None
    assert refusal("auditor", "GET", "/residents/{resident_id}/personal-data", {}, {}) == {403}
    assert refusal("auditor", "POST", "/payout-runs", {}, {}) == {403}
    assert refusal("auditor", "GET", "/ledger/balances", {}, {}) is None
    own = {"collaborator_id": "col_A"}
    assert refusal("collaborator:col_A", "GET", "/collaborators/{collaborator_id}/rejections", own, {}) is None
    assert refusal("collaborator:col_A", "GET", "/collaborators/{collaborator_id}/rejections",
                   {"collaborator_id": "col_B"}, {}) == {403, 422}
    assert refusal("collaborator:col_A", "POST", "/pieces", {}, {}) == {403}
    assert refusal("collaborator:col_A", "GET", "/pieces", {}, {}) is None
    assert refusal("collaborator:col_A", "GET", "/pieces", {}, {"collaborator_id": "col_A"}) is None
    assert refusal("collaborator:col_A", "GET", "/pieces", {}, {"collaborator_id": "col_B"}) == {403, 422}
    assert refusal("collaborator:col_A", "GET", "/pieces/{piece_id}", {"piece_id": "pc_1"}, {}) == {403}
    assert refusal("staff", "GET", "/dashboard", {}, {"token": "x"}) == {401}
    assert refusal("invalid", "TRACE", "/pieces/{piece_id}", {}, {}, declared_method="GET") == {405}

    problem = json.dumps({"status": 401, "code": "unauthorized"}).encode()
    ok = checks.refusal_problems(401, {401}, ("GET", "/pieces/{piece_id}"), "application/problem+json", problem,
                                 {"WWW-Authenticate": ["Bearer"]})
    assert ok == []
    assert checks.refusal_problems(200, {401}, ("GET", "/pieces/{piece_id}"), "application/json", b"{}", {})
    assert checks.refusal_problems(401, {401}, ("GET", "/pieces/{piece_id}"), "application/problem+json", problem, {})
    assert checks.refusal_problems(401, {401}, ("GET", "/pieces/{piece_id}"), "text/plain", b"no", {})


async def test_schemathesis_runs_the_checks_and_they_fail_a_leaking_service(tmp_path):
    """The same hooks through the schemathesis command line, against an app that leaks and admits anyone."""
    leaky = FastAPI()

    @leaky.get("/residents/{resident_id}")
    async def resident(resident_id: str) -> JSONResponse:
        return JSONResponse({"resident_id": resident_id, "nik": "3175064112850001"})

    async with serve(leaky) as url:
        run = await fuzz_hostile(url, leaky.openapi(), tmp_path, tokens={"none": None, "garbage": "not-a-token"},
                                 roles={"none": "invalid", "garbage": "invalid"}, forbidden=FORBIDDEN,
                                 max_examples=5)
    assert run.code != 0
    assert "no_leaked_data" in run.output and "personal: resident 0 nik" in run.output, run.output[-3000:]
    assert "refused_as_spec_says" in run.output, run.output[-3000:]
    assert run.tally, "no response went through the hooks"


async def test_a_body_that_cannot_be_read_is_refused_by_token_and_role_first(programme):
    """Found by the fuzzing below: FastAPI reads the body before any dependency, so a body that is not
    UTF-8 (400) or not JSON (422) was answered before the token was looked at."""
    p = programme
    url = p.urls["enrollment"]
    for token, expected in ((None, 401), ("not-a-token", 401), (p.tokens.auditor, 403), (p.a.token, 403),
                            (p.tokens.staff, None)):
        async with client(url, token) as http:
            for body in (b"\x10\xff*", b"{not json"):
                response = await http.post("/residents", content=body, headers={"Content-Type": "application/json"})
                if expected is None:
                    assert response.status_code in (400, 422), response.status_code
                else:
                    assert response.status_code == expected, (token is None, body, response.status_code)
                    assert response.headers["content-type"] == "application/problem+json"
                    assert response.json()["code"] == checks.PROBLEM_CODES[expected]


# --- the services under fire -----------------------------------------------------------------------------

RUNS = [(caller, service) for caller in ("collaborator-a", "hostile", "staff") for service in SERVICES]


@pytest.mark.parametrize(("caller", "service"), RUNS, ids=[f"{s}-{c}" for c, s in RUNS])
async def test_fuzzing_finds_no_server_error_no_leak_and_no_wrong_admission(programme, caller, service, tmp_path):
    p = programme
    personal = p.personal_data()
    forged_a = collaborator_token("not-the-secret", p.a.collaborator_id)
    if caller == "staff":
        tokens, roles = {"staff": p.tokens.staff}, {"staff": "staff"}
        forbidden, readers, known = personal, ("staff",), p.known_values()
    elif caller == "collaborator-a":
        tokens, roles = {"a": p.a.token}, {"a": f"collaborator:{p.a.collaborator_id}"}
        forbidden, readers, known = personal | p.b.belongings("collaborator B"), (), p.known_values(
            as_collaborator_a=True)
        assert forged_a != p.a.token
    else:
        tokens = {"none": None, "garbage": "not-a-token", "forged-collaborator": forged_a,
                  "near-staff": p.tokens.staff[:-1], "auditor": p.tokens.auditor}
        roles = {kind: "invalid" for kind in tokens} | {"auditor": "auditor"}
        forbidden, readers, known = personal, (), p.known_values()

    run = await fuzz_hostile(p.urls[service], p.apps[service].openapi(), tmp_path / "fuzz", tokens=tokens,
                             roles=roles, forbidden=forbidden, personal_data_readers=readers, known_values=known)

    assert run.code == 0, run.output[-6000:]
    assert re.search(r"[1-9]\d* generated, [1-9]\d* passed", run.output), run.output[-2000:]
    # Every kind of caller was really tried, on every operation the document has.
    assert set(run.kinds()) == set(tokens), run.kinds()
    operations = {(m.upper(), path) for path, ops in p.apps[service].openapi()["paths"].items() for m in ops}
    assert {(row["operation"], row["path"]) for row in run.tally} == operations
    statuses = {(row["kind"], row["method"], row["path"], row["status"]) for row in run.tally}
    if caller == "hostile":
        assert {kind for kind, _, _, status in statuses if status == 401} >= set(tokens) - {"auditor"}
        assert any(kind == "auditor" and status == 403 for kind, _, _, status in statuses)
        # Admitted somewhere: the guard refuses by token before it reads a path or body, so any answer to
        # the auditor but 401/403 (a 200, or a 404 for a generated id) means the token was let in.
        assert any(kind == "auditor" and status not in (401, 403) for kind, _, _, status in statuses)
        # And where an auditor belongs, on a seeded record, the read succeeds: not left to the generator's luck.
        readable = {"enrollment": f"/residents/{p.residents[0]}", "production": f"/pieces/{p.a.pieces[0]}",
                    "payout": f"/payouts/{p.payouts[0]}"}[service]
        async with client(p.urls[service], p.tokens.auditor) as auditor:
            assert (await auditor.get(readable)).status_code == 200
    elif caller == "collaborator-a":
        assert any(status == 403 for *_, status in statuses)
        if service == "production":
            # A's own feed was reached and read (it holds A's seeded refusals) — and nothing of B's was in it.
            assert ("a", "GET", "/collaborators/{collaborator_id}/rejections", 200) in statuses
    else:
        reached = {
            "enrollment": ("GET", "/residents/{resident_id}/personal-data"),
            "production": ("GET", "/pieces/{piece_id}"),
            "payout": ("GET", "/payouts/{payout_id}"),
        }[service]
        # The seeded records were reached, personal data included: the leak check had something to find.
        assert ("staff", *reached, 200) in statuses, sorted(statuses)


def test_the_hooks_module_is_where_fuzz_hostile_loads_it_from():
    from tests.fuzzing import HOOKS

    assert Path(checks.__file__).resolve() == HOOKS.resolve()
