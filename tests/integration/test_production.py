"""The production service over real HTTP and Kafka, on the real broker and PostgreSQL.

Submissions are written to `qc-submissions` with confluent-kafka (librdkafka), an
independent client, and signed with keys made by `anyam collaborator keygen`, as a
collaborator's own IT would. Every wait is on stored offsets or positions, with a deadline.
"""

from __future__ import annotations

import asyncio
import json
import re
import stat
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from confluent_kafka import Producer
from typer.testing import CliRunner

from anyam.collaborator import collaborator_app
from services.production.app import ProductionSettings, create_app
from services.production.domain import SetRate, SubmissionRejected
from services.production.handlers import ProductionHandlers, validate_submission
from services.production.messaging import QC_CONSUMER
from services.production.projections import TRAINING_CONSUMER
from shared.contracts import CONTENT_TYPE, Envelope, Topic, encode, service_source, topic_name
from shared.contracts.events import TrainingCompleted, Withdrawn
from shared.contracts.provenance import TOPIC_OWNERS
from shared.contracts.signing import generate_private_key, public_key_b64, verifying_key
from shared.eventstore import DeadLetter, EventStore, PostgresUnitOfWork, wait_until_caught_up, wait_until_published
from shared.ids import new_event_id
from shared.settings import KafkaSettings
from shared.timeutil import WIB
from shared.web.access import collaborator_token, read_collaborator_token
from tests.fuzzing import fuzz_openapi
from tests.kafka_reader import librdkafka_config, read_topic, wait_for_records
from tests.services import Tokens, attested_headers, client, new_tokens, serve, service_settings

runner = CliRunner()
#: Collaborators registered by these tests sign for results inspected from this moment on (2024 pieces).
KEYS_VALID_FROM = "2024-01-01T00:00:00+07:00"


@dataclass
class Production:
    staff: httpx.AsyncClient
    tokens: Tokens
    url: str
    pool: asyncpg.Pool
    kafka: KafkaSettings

    def topic(self, topic: Topic) -> str:
        return topic_name(topic, self.kafka.topic_prefix)

    def collaborator(self, collaborator_id: str) -> httpx.AsyncClient:
        return client(self.url, collaborator_token(self.tokens.secret, collaborator_id))


@pytest.fixture
async def production(kafka_settings, database_url):
    tokens = new_tokens()
    app = create_app(ProductionSettings(**service_settings(kafka_settings, database_url, tokens, "production")))
    async with serve(app) as url, client(url, tokens.staff) as staff:
        yield Production(staff, tokens, url, app.state.runtime.pool, kafka_settings)


# --- helpers --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    """A collaborator's key pair as `anyam collaborator keygen` made it."""

    path: Path
    public: str


def keygen(directory: Path, name: str) -> Key:
    path = directory / f"{name}.key"
    result = runner.invoke(collaborator_app, ["keygen", "--key-file", str(path)])
    assert result.exit_code == 0, result.output
    return Key(path, result.stdout.strip())


def cli_sign(directory: Path, key: Key, data: dict[str, Any]) -> dict[str, Any]:
    data_file = directory / f"{data['submission_id']}.json"
    data_file.write_text(json.dumps(data, ensure_ascii=False))
    result = runner.invoke(collaborator_app, ["sign", str(data_file), "--key-file", str(key.path)])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def result_data(submission_id: str, piece_id: str, collaborator_id: str, **changes: Any) -> dict[str, Any]:
    # `.000` on purpose: the signature covers the text as written, which a re-serialisation would change.
    return {"submission_id": submission_id, "piece_id": piece_id, "collaborator_id": collaborator_id,
            "result": "passed", "inspector": "QC-07", "inspected_at": "2024-03-21T10:00:00.000+07:00",
            "defects": []} | changes


def cloud_event(data: Any, **envelope: Any) -> bytes:
    """A `qc-submitted` CloudEvent built by hand, as a non-Python client would."""
    collaborator_id = data.get("collaborator_id") if isinstance(data, dict) else None
    document = {"specversion": "1.0", "id": new_event_id(), "source": f"/collaborators/{collaborator_id}",
                "type": "qc-submitted", "time": "2024-03-21T10:05:00+07:00", "datacontenttype": "application/json",
                "dataversion": 2, "data": data} | envelope
    return json.dumps(document, ensure_ascii=False).encode()


def _produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]], owner: str | None) -> None:
    producer = Producer({**librdkafka_config(KafkaSettings(kafka_bootstrap=bootstrap)), "acks": "all"})
    failures: list[str] = []
    for key, value in records:
        headers = attested_headers(owner, value) if owner else [("content-type", CONTENT_TYPE.encode())]
        producer.produce(topic, value=value, key=key, headers=headers,
                         on_delivery=lambda err, _msg: failures.append(str(err)) if err else None)
    assert producer.flush(30) == 0, "librdkafka could not deliver every record in time"
    assert not failures, failures


async def produce(prod: Production, topic: Topic, records: list[tuple[bytes, bytes]]) -> None:
    """Write `records` (key, value) with confluent-kafka, then wait until the broker has them all; on a
    service's topic, attested as that service attests its records (a collaborator's are not)."""
    await asyncio.to_thread(_produce, prod.kafka.bootstrap_servers, prod.topic(topic), records,
                            TOPIC_OWNERS.get(topic))


async def submit_over_kafka(prod: Production, records: list[tuple[bytes, bytes]]) -> None:
    await produce(prod, Topic.QC_SUBMISSIONS, records)
    await wait_until_caught_up(prod.pool, QC_CONSUMER, prod.kafka, [Topic.QC_SUBMISSIONS], timeout=60)


async def train(prod: Production, *residents: str) -> None:
    """Publish `training-completed` for `residents` on the enrollment topic and wait until production read it."""
    records = []
    for resident in residents:
        record = encode(Envelope.wrap(
            TrainingCompleted(resident_id=resident, cohort_id="coh_nagrak", completed_on=date(2024, 2, 29)),
            source=service_source("enrollment"),
        ))
        records.append((record.key, record.value))
    await produce(prod, Topic.ENROLLMENT, records)
    await wait_until_caught_up(prod.pool, TRAINING_CONSUMER, prod.kafka, [Topic.ENROLLMENT], timeout=60)


async def register(prod: Production, key: Key, name: str = "PT Anyaman Nusantara") -> str:
    response = await prod.staff.post("/collaborators", json={"name": name, "public_key": key.public,
                                                             "valid_from": KEYS_VALID_FROM})
    assert response.status_code == 201, response.text
    return response.json()["collaborator_id"]


async def set_rate(prod: Production, collaborator_id: str, rate_idr: int, effective_from: str,
                   product: str = "piring") -> None:
    response = await prod.staff.post(f"/collaborators/{collaborator_id}/rates", json={
        "product": product, "rate_idr": rate_idr, "effective_from": effective_from})
    assert response.status_code == 201, response.text


async def weave(prod: Production, artisan: str, collaborator_id: str, woven_at: str,
                product: str = "piring") -> dict[str, Any]:
    response = await prod.staff.post("/pieces", json={
        "artisan_id": artisan, "collaborator_id": collaborator_id, "product": product, "woven_at": woven_at})
    assert response.status_code == 201, response.text
    return response.json()


async def production_events(prod: Production) -> list[dict[str, Any]]:
    await wait_until_published(prod.pool, timeout=60)
    records = await read_topic(prod.kafka.bootstrap_servers, prod.topic(Topic.PRODUCTION))
    return [json.loads(r.value) | {"_key": r.key.decode()} for r in records]


async def dead_letters(prod: Production, count: int) -> list[DeadLetter]:
    records = await wait_for_records(prod.kafka.bootstrap_servers, prod.topic(Topic.DEAD_LETTERS),
                                     lambda rs: len(rs) >= count, timeout=60)
    return [DeadLetter.from_record(r.key, r.value, r.headers) for r in records]


@dataclass
class Workshop:
    """One collaborator with rates, one trained artisan: what most tests start from."""

    key: Key
    collaborator_id: str
    artisan: str


async def workshop(prod: Production, directory: Path, name: str = "acme", artisan: str = "res_siti") -> Workshop:
    key = keygen(directory, name)
    collaborator_id = await register(prod, key, name=f"PT {name.title()}")
    await set_rate(prod, collaborator_id, 10_000, "2024-03-01T00:00:00+07:00")
    await set_rate(prod, collaborator_id, 12_500, "2024-04-01T00:00:00+07:00")
    await train(prod, artisan)
    return Workshop(key, collaborator_id, artisan)


# --- QC over Kafka --------------------------------------------------------------------------


async def test_a_submission_from_librdkafka_signed_with_a_keygen_key_is_accepted_at_the_rate_in_force_when_woven(
    production, tmp_path
):
    shop = await workshop(production, tmp_path)
    piece = await weave(production, shop.artisan, shop.collaborator_id, "2024-03-20T15:30:00+07:00")
    assert piece["rate_idr"] == 10_000  # 12 500 takes effect only on 1 April
    data = cli_sign(tmp_path, shop.key, result_data("sub_1", piece["piece_id"], shop.collaborator_id))

    await submit_over_kafka(production, [(piece["piece_id"].encode(), cloud_event(data))])

    events = await production_events(production)
    [passed] = [e for e in events if e["type"] == "qc-passed"]
    received_at = passed["data"].pop("received_at")
    assert passed["data"] == {
        "piece_id": piece["piece_id"], "artisan_id": shop.artisan, "collaborator_id": shop.collaborator_id,
        "product": "piring", "amount_idr": 10_000, "submission_id": "sub_1",
        "inspected_at": "2024-03-21T10:00:00+07:00", "signature": data["signature"],
        # What was signed, exactly as sent, and the key it verified with: checkable from the log alone.
        "submission": data, "signing_key": shop.key.public,
    }
    assert datetime.fromisoformat(received_at) > datetime.fromisoformat(passed["data"]["inspected_at"])
    assert passed["_key"] == shop.artisan
    assert passed["source"] == "/services/production"
    view = (await production.staff.get(f"/pieces/{piece['piece_id']}")).json()
    assert view["qc"]["result"] == "passed" and view["qc"]["amount_idr"] == 10_000


async def test_each_rejection_reason_lands_in_dead_letters_and_a_valid_submission_after_them_is_accepted(
    production, tmp_path
):
    shop = await workshop(production, tmp_path)
    other = await workshop(production, tmp_path, name="beta", artisan="res_dewi")
    stranger = keygen(tmp_path, "stranger")
    first, contested, last = [
        (await weave(production, shop.artisan, shop.collaborator_id, f"2024-03-1{n}T09:00:00+07:00"))["piece_id"]
        for n in range(3)
    ]
    theirs = (await weave(production, other.artisan, other.collaborator_id, "2024-03-20T09:00:00+07:00"))["piece_id"]
    me = shop.collaborator_id
    valid_first = cli_sign(tmp_path, shop.key, result_data("sub_ok_1", contested, me))
    valid_last = cli_sign(tmp_path, shop.key, result_data("sub_ok_2", last, me))
    unsigned = result_data("sub_unsigned", first, me)
    bad_records = [
        ("malformed", b"{this is not json"),
        ("wrong-specversion", cloud_event(valid_first, specversion="0.3")),
        ("unknown-type", cloud_event(valid_first, type="qc-approved")),
        ("unexpected-type", cloud_event(valid_first, type="qc-passed")),  # a forged authoritative result
        ("schema-invalid", cloud_event(unsigned)),  # no signature at all
        ("schema-invalid", cloud_event(valid_last, source="/collaborators/col_somebody_else")),
        ("bad-signature", cloud_event(cli_sign(tmp_path, stranger, result_data("sub_forged", first, me)))),
        ("unknown-collaborator",
         cloud_event(cli_sign(tmp_path, stranger, result_data("sub_x", first, "col_nobody")))),
        ("unknown-piece", cloud_event(cli_sign(tmp_path, shop.key, result_data("sub_np", "pc_nothing", me)))),
        ("wrong-collaborator", cloud_event(cli_sign(tmp_path, shop.key, result_data("sub_theirs", theirs, me)))),
        ("conflicting-result", cloud_event(cli_sign(tmp_path, shop.key, result_data(
            "sub_other_verdict", contested, me, result="failed", defects=["loose-weave"])))),
    ]
    repeat = cloud_event(valid_first)  # the same submission again, in a new envelope: a no-op
    # One record key for all, so they share a partition and the valid one truly comes after the rest.
    key = last.encode()
    records = [(key, cloud_event(valid_first)), *((key, value) for _, value in bad_records),
               (key, repeat), (key, cloud_event(valid_last))]

    await submit_over_kafka(production, records)

    letters = await dead_letters(production, len(bad_records))
    assert sorted((letter.reason, letter.value) for letter in letters) == sorted(bad_records)
    for letter in letters:
        assert letter.consumer == QC_CONSUMER
        assert letter.source_topic == production.topic(Topic.QC_SUBMISSIONS)
        assert letter.detail
    events = await production_events(production)
    passed = sorted((e["data"]["piece_id"], e["data"]["submission_id"]) for e in events if e["type"] == "qc-passed")
    assert passed == sorted([(contested, "sub_ok_1"), (last, "sub_ok_2")])
    assert not [e for e in events if e["type"] == "qc-failed"]
    # The collaborator can read back why its submissions were refused.
    async with production.collaborator(me) as mine:
        feedback = (await mine.get(f"/collaborators/{me}/rejections")).json()["rejections"]
    # (Records that did not decode never reach the judge, so only the dead letters hold them.)
    assert sorted(r["reason"] for r in feedback) == [
        "bad-signature", "conflicting-result", "schema-invalid", "unknown-piece", "wrong-collaborator"]
    conflict = next(r for r in feedback if r["reason"] == "conflicting-result")
    assert (conflict["submission_id"], conflict["piece_id"], conflict["channel"]) == (
        "sub_other_verdict", contested, "kafka")
    assert conflict["rejected_at"].endswith("+07:00")
    assert "sub_ok_1" in conflict["detail"]


async def test_a_batch_judged_at_once_ends_exactly_as_judging_its_submissions_one_after_another(
    production, tmp_path
):
    """The QC consumer judges a whole batch in three round trips (`judge_many`); every outcome and
    every recorded event must be what judging the submissions one by one gives, including a
    submission that sees what an earlier one in the same batch recorded."""
    shop = await workshop(production, tmp_path)
    other = await workshop(production, tmp_path, name="beta", artisan="res_dewi")
    stranger = keygen(tmp_path, "stranger")
    me = shop.collaborator_id
    first, second, third = [
        (await weave(production, shop.artisan, me, f"2024-03-1{n}T09:00:00+07:00"))["piece_id"] for n in range(3)]
    theirs = (await weave(production, other.artisan, other.collaborator_id, "2024-03-20T09:00:00+07:00"))["piece_id"]
    passed = cli_sign(tmp_path, shop.key, result_data("sub_1", first, me))
    submissions = [
        passed,
        passed,  # the same again: recorded once, then "already recorded"
        cli_sign(tmp_path, shop.key, result_data("sub_2", first, me, result="failed", defects=["loose-weave"])),
        cli_sign(tmp_path, stranger, result_data("sub_3", second, me)),  # bad signature
        cli_sign(tmp_path, shop.key, result_data("sub_4", second, me, result="failed", defects=["broken-strand"])),
        cli_sign(tmp_path, shop.key, result_data("sub_5", "pc_nothing", me)),
        cli_sign(tmp_path, shop.key, result_data("sub_7", theirs, me)),
        cli_sign(tmp_path, shop.key, result_data("sub_8", third, me, inspected_at="1999-03-21T10:00:00.000+07:00")),
        cli_sign(tmp_path, stranger, result_data("sub_9", third, "col_nobody")),
        cli_sign(tmp_path, shop.key, result_data("sub_10", third, me)),
    ]
    # One clock for both runs: the results record when they were received.
    handlers = ProductionHandlers(clock=lambda: datetime(2024, 4, 1, tzinfo=WIB))
    items = [(validate_submission(raw), raw) for raw in submissions]

    async def judged(all_at_once: bool) -> tuple[list[Any], list[tuple[str, int, str, str]]]:
        async with production.pool.acquire() as conn:
            transaction = conn.transaction()
            await transaction.start()
            uow = PostgresUnitOfWork(conn)
            try:
                if all_at_once:
                    outcomes = await handlers.judge_many(uow, items)
                else:
                    outcomes = []
                    for submission, raw in items:
                        try:
                            outcomes.append(await handlers.judge(uow, submission, raw))
                        except SubmissionRejected as rejected:
                            outcomes.append(rejected)
                await uow.flush()
                rows = await conn.fetch(
                    "SELECT stream_id, version, event_type, payload FROM event_store WHERE event_type LIKE 'qc-%' "
                    "ORDER BY position")
            finally:
                await transaction.rollback()  # both runs start from the same history
        described = [(o.reason, o.message) if isinstance(o, SubmissionRejected) else (o.recorded_now, o.result)
                     for o in outcomes]
        recorded = [(r["stream_id"], r["version"], r["event_type"], json.dumps(json.loads(r["payload"])["data"]))
                    for r in rows]
        return described, recorded

    at_once, one_by_one = await judged(True), await judged(False)

    assert at_once == one_by_one
    outcomes, recorded = at_once
    assert [o[0] for o in outcomes] == [
        True, False, "conflicting-result", "bad-signature", True, "unknown-piece",
        "wrong-collaborator", "schema-invalid", "unknown-collaborator", True]
    assert [(stream, version, kind) for stream, version, kind, _ in recorded] == [
        (first, 2, "qc-passed"), (second, 2, "qc-failed"), (third, 2, "qc-passed")]


async def test_a_collaborator_token_cannot_submit_for_another_collaborators_piece(production, tmp_path):
    shop = await workshop(production, tmp_path)
    other = await workshop(production, tmp_path, name="beta", artisan="res_dewi")
    mine = (await weave(production, shop.artisan, shop.collaborator_id, "2024-03-20T09:00:00+07:00"))["piece_id"]
    theirs = (await weave(production, other.artisan, other.collaborator_id, "2024-03-20T09:00:00+07:00"))["piece_id"]
    for_their_piece = cli_sign(tmp_path, shop.key, result_data("sub_1", theirs, shop.collaborator_id))
    posing_as_them = cli_sign(tmp_path, shop.key, result_data("sub_2", theirs, other.collaborator_id))
    own = cli_sign(tmp_path, shop.key, result_data("sub_3", mine, shop.collaborator_id))

    async with production.collaborator(shop.collaborator_id) as acme:
        over_http = await acme.post("/qc-submissions", json=for_their_piece)
        impersonating = await acme.post("/qc-submissions", json=posing_as_them)
        accepted = await acme.post("/qc-submissions", json=own)
        repeated = await acme.post("/qc-submissions", json=own)
        reading_theirs = await acme.get(f"/collaborators/{other.collaborator_id}/rejections")
        their_feedback = await acme.get(f"/collaborators/{shop.collaborator_id}/rejections")
    await submit_over_kafka(production, [(theirs.encode(), cloud_event(for_their_piece))])

    assert over_http.status_code == 403, over_http.text
    assert over_http.headers["content-type"].startswith("application/problem+json")
    assert over_http.json()["code"] == "wrong-collaborator"
    assert (impersonating.status_code, impersonating.json()["code"]) == (403, "wrong-collaborator")
    assert accepted.status_code == 201, accepted.text
    assert (accepted.json()["event"], accepted.json()["amount_idr"]) == ("qc-passed", 10_000)
    assert (repeated.status_code, repeated.json()) == (200, accepted.json())
    assert reading_theirs.status_code == 403
    assert [r["channel"] for r in their_feedback.json()["rejections"]] == ["http", "http"]
    letters = await dead_letters(production, 3)
    assert sorted((letter.reason, letter.consumer) for letter in letters) == [
        ("wrong-collaborator", "production-http"), ("wrong-collaborator", "production-http"),
        ("wrong-collaborator", QC_CONSUMER)]
    events = await production_events(production)
    assert [e["data"]["piece_id"] for e in events if e["type"].startswith("qc-")] == [mine]


async def test_http_submissions_get_the_same_reasons_as_problem_details(production, tmp_path):
    shop = await workshop(production, tmp_path)
    piece = (await weave(production, shop.artisan, shop.collaborator_id, "2024-03-20T09:00:00+07:00"))["piece_id"]
    good = cli_sign(tmp_path, shop.key, result_data("sub_1", piece, shop.collaborator_id, result="failed",
                                                     defects=["colour-mismatch"]))
    cases = {
        "malformed": b"{nope",
        "schema-invalid": json.dumps(good | {"result": "maybe"}).encode(),
        "bad-signature": json.dumps(good | {"defects": []}).encode(),
        "unknown-collaborator": json.dumps(good | {"collaborator_id": "col_nobody"}).encode(),
        "unknown-piece": json.dumps(cli_sign(tmp_path, shop.key, result_data(
            "sub_2", "pc_nothing", shop.collaborator_id))).encode(),
    }

    answers = {reason: await production.staff.post("/qc-submissions", content=body,
                                                   headers={"content-type": "application/json"})
               for reason, body in cases.items()}
    failed = await production.staff.post("/qc-submissions", json=good)
    conflicting = await production.staff.post("/qc-submissions", json=cli_sign(
        tmp_path, shop.key, result_data("sub_3", piece, shop.collaborator_id)))

    for reason, answer in answers.items():
        assert 400 <= answer.status_code < 500, (reason, answer.text)
        assert answer.json()["code"] == reason, answer.text
    assert failed.status_code == 201 and failed.json()["event"] == "qc-failed"
    assert failed.json()["defects"] == ["colour-mismatch"]
    assert (conflicting.status_code, conflicting.json()["code"]) == (409, "conflicting-result")


# --- rules of production --------------------------------------------------------------------


async def test_a_resident_who_has_not_completed_training_gets_409_for_materials_and_pieces(production, tmp_path):
    shop = await workshop(production, tmp_path)
    withdrawn = encode(Envelope.wrap(Withdrawn(resident_id="res_rina", cohort_id="coh_nagrak", reason="moved-away"),
                                     source=service_source("enrollment")))
    await produce(production, Topic.ENROLLMENT, [(withdrawn.key, withdrawn.value)])
    await wait_until_caught_up(production.pool, TRAINING_CONSUMER, production.kafka, [Topic.ENROLLMENT])
    materials = {"artisan_id": "res_rina", "collaborator_id": shop.collaborator_id, "material": "rotan sintetis",
                 "quantity": 5, "unit": "kg"}
    piece = {"artisan_id": "res_rina", "collaborator_id": shop.collaborator_id, "product": "piring",
             "woven_at": "2024-03-20T09:00:00+07:00"}

    refused = [await production.staff.post("/material-issues", json=materials),
               await production.staff.post("/pieces", json=piece)]
    await train(production, "res_rina")
    allowed = [await production.staff.post("/material-issues", json=materials),
               await production.staff.post("/pieces", json=piece)]

    for response in refused:
        assert response.status_code == 409, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["code"] == "not-trained"
        assert "has not completed training" in response.json()["detail"]
    assert [r.status_code for r in allowed] == [201, 201]
    assert allowed[0].json()["issue_id"].startswith("iss_")
    types = [e["type"] for e in await production_events(production) if e["_key"] == "res_rina"]
    assert types == ["materials-issued", "piece-woven"]


async def test_after_a_rate_change_older_pieces_keep_the_old_rate_and_newer_ones_get_the_new(production, tmp_path):
    key = keygen(tmp_path, "acme")
    collaborator = await register(production, key)
    await train(production, "res_siti")
    await set_rate(production, collaborator, 10_000, "2024-03-01T00:00:00+07:00")
    before_change = await weave(production, "res_siti", collaborator, "2024-03-10T09:00:00+07:00")

    await set_rate(production, collaborator, 12_500, "2024-04-01T00:00:00+07:00")
    after_change = await weave(production, "res_siti", collaborator, "2024-04-02T09:00:00+07:00")
    woven_before_recorded_after = await weave(production, "res_siti", collaborator, "2024-03-31T23:59:00+07:00")
    before_any_rate = await production.staff.post("/pieces", json={
        "artisan_id": "res_siti", "collaborator_id": collaborator, "product": "piring",
        "woven_at": "2024-02-29T09:00:00+07:00"})  # trained that day, before any rate
    same_moment_other_rate = await production.staff.post(f"/collaborators/{collaborator}/rates", json={
        "product": "piring", "rate_idr": 9_000, "effective_from": "2024-04-01T00:00:00+07:00"})

    assert [before_change["rate_idr"], after_change["rate_idr"], woven_before_recorded_after["rate_idr"]] == [
        10_000, 12_500, 10_000]
    assert (before_any_rate.status_code, before_any_rate.json()["code"]) == (409, "no-rate-in-force")
    assert (same_moment_other_rate.status_code, same_moment_other_rate.json()["code"]) == (409, "rate-already-set")
    for n, piece in enumerate((before_change, after_change)):
        data = cli_sign(tmp_path, key, result_data(f"sub_{n}", piece["piece_id"], collaborator,
                                                   inspected_at="2024-04-03T10:00:00+07:00"))
        assert (await production.staff.post("/qc-submissions", json=data)).status_code == 201
    events = await production_events(production)
    woven = {e["data"]["piece_id"]: e["data"]["rate_idr"] for e in events if e["type"] == "piece-woven"}
    paid = {e["data"]["piece_id"]: e["data"]["amount_idr"] for e in events if e["type"] == "qc-passed"}
    assert woven == {before_change["piece_id"]: 10_000, after_change["piece_id"]: 12_500,
                     woven_before_recorded_after["piece_id"]: 10_000}
    assert paid == {before_change["piece_id"]: 10_000, after_change["piece_id"]: 12_500}
    rates = [e["data"] for e in events if e["type"] == "piece-rate-set"]
    assert [(r["rate_idr"], r["effective_from"]) for r in rates] == [
        (10_000, "2024-03-01T00:00:00+07:00"), (12_500, "2024-04-01T00:00:00+07:00")]
    assert all(e["_key"] == collaborator for e in events if e["type"] == "piece-rate-set")


async def test_a_rate_set_by_another_service_process_prices_the_very_next_piece(production, tmp_path):
    # The service remembers a collaborator between pieces (a round trip fewer per piece); a rate set
    # by another process must still price the next piece, and a product it just priced be accepted.
    shop = await workshop(production, tmp_path)
    remembered = await weave(production, shop.artisan, shop.collaborator_id, "2024-05-02T09:00:00+07:00")
    unpriced = await production.staff.post("/pieces", json={
        "artisan_id": shop.artisan, "collaborator_id": shop.collaborator_id, "product": "tas",
        "woven_at": "2024-05-02T09:00:00+07:00"})
    another_process = ProductionHandlers()
    async with EventStore(production.pool).unit() as uow:
        for product, rate in (("piring", 15_000), ("tas", 40_000)):
            await another_process.set_rate(uow, SetRate(
                collaborator_id=shop.collaborator_id, product=product, rate_idr=rate,
                effective_from=datetime.fromisoformat("2024-05-01T00:00:00+07:00")))

    next_plate = await weave(production, shop.artisan, shop.collaborator_id, "2024-05-02T09:00:00+07:00")
    next_bag = await weave(production, shop.artisan, shop.collaborator_id, "2024-05-02T09:00:00+07:00", "tas")

    assert remembered["rate_idr"] == 12_500
    assert (unpriced.status_code, unpriced.json()["code"]) == (409, "no-rate-in-force")
    assert (next_plate["rate_idr"], next_bag["rate_idr"]) == (15_000, 40_000)


async def test_a_key_rotation_keeps_results_signed_with_the_old_key_verifiable(production, tmp_path):
    shop = await workshop(production, tmp_path)
    pieces = [(await weave(production, shop.artisan, shop.collaborator_id, f"2024-03-1{n}T09:00:00+07:00"))
              ["piece_id"] for n in range(3)]
    new_key = keygen(tmp_path, "acme-2025")
    before = cli_sign(tmp_path, shop.key, result_data("sub_old_1", pieces[0], shop.collaborator_id))
    await submit_over_kafka(production, [(pieces[0].encode(), cloud_event(before))])

    rotated = await production.staff.post(f"/collaborators/{shop.collaborator_id}/keys",
                                          json={"public_key": new_key.public, "valid_from": KEYS_VALID_FROM})
    again = await production.staff.post(f"/collaborators/{shop.collaborator_id}/keys",
                                        json={"public_key": new_key.public, "valid_from": KEYS_VALID_FROM})
    with_old = cli_sign(tmp_path, shop.key, result_data("sub_old_2", pieces[1], shop.collaborator_id))
    with_new = cli_sign(tmp_path, new_key, result_data("sub_new", pieces[2], shop.collaborator_id))
    await submit_over_kafka(production, [(pieces[1].encode(), cloud_event(with_old)),
                                         (pieces[2].encode(), cloud_event(with_new))])

    assert rotated.status_code == 201 and again.status_code == 200
    assert rotated.json()["public_keys"] == [shop.key.public, new_key.public]
    events = await production_events(production)
    registrations = [e for e in events if e["type"] == "collaborator-registered"
                     and e["data"]["collaborator_id"] == shop.collaborator_id]
    assert [e["data"]["public_key"] for e in registrations] == [shop.key.public, new_key.public]
    assert {e["data"]["submission_id"] for e in events if e["type"] == "qc-passed"} == {
        "sub_old_1", "sub_old_2", "sub_new"}
    # An auditor re-checks every submission on the log against the keys registered on the log.
    keys = [e["data"]["public_key"] for e in registrations]
    submissions = await read_topic(production.kafka.bootstrap_servers, production.topic(Topic.QC_SUBMISSIONS))
    signers = {json.loads(r.value)["data"]["submission_id"]: verifying_key(keys, json.loads(r.value)["data"])
               for r in submissions}
    assert signers == {"sub_old_1": shop.key.public, "sub_old_2": shop.key.public, "sub_new": new_key.public}


async def test_a_revoked_key_signs_nothing_more_and_what_it_signed_before_stays_credited(production, tmp_path):
    shop = await workshop(production, tmp_path)
    pieces = [(await weave(production, shop.artisan, shop.collaborator_id, f"2024-03-1{n}T09:00:00+07:00"))
              ["piece_id"] for n in range(2)]
    before = cli_sign(tmp_path, shop.key, result_data("sub_before", pieces[0], shop.collaborator_id))
    await submit_over_kafka(production, [(pieces[0].encode(), cloud_event(before))])

    revoked = await production.staff.post(f"/collaborators/{shop.collaborator_id}/key-revocations",
                                          json={"public_key": shop.key.public})
    # A thief holding the key backdates the inspection: it is when production receives it that counts.
    after = cli_sign(tmp_path, shop.key, result_data("sub_after", pieces[1], shop.collaborator_id))
    await submit_over_kafka(production, [(pieces[1].encode(), cloud_event(after))])
    over_http = await production.collaborator(shop.collaborator_id).post(
        "/qc-submissions", content=json.dumps(after).encode())

    assert revoked.status_code == 201, revoked.text
    [key] = revoked.json()["keys"]
    assert key["public_key"] == shop.key.public and key["revoked_from"] is not None
    assert over_http.status_code == 422 and over_http.json()["code"] == "revoked-key"
    events = await production_events(production)
    assert [e["data"]["submission_id"] for e in events if e["type"] == "qc-passed"] == ["sub_before"]
    # Refused on both paths: the topic's copy and the HTTP one are dead-lettered with the reason.
    letters = await dead_letters(production, 2)
    assert sorted((letter.reason, letter.consumer) for letter in letters) == [
        ("revoked-key", "production-http"), ("revoked-key", QC_CONSUMER)]
    # Both are the CloudEvent of the submission, whichever way it came: the HTTP one as it would have
    # been on the topic, with the body as sent.
    events = {letter.consumer: json.loads(letter.value) for letter in letters}
    assert {e["type"] for e in events.values()} == {"qc-submitted"}
    assert events["production-http"]["source"] == f"/collaborators/{shop.collaborator_id}"
    assert events["production-http"]["data"] == after == events[QC_CONSUMER]["data"]
    assert all(dict(letter.original_headers)["content-type"] == b"application/cloudevents+json" for letter in letters)


# --- the HTTP surface -----------------------------------------------------------------------


async def test_a_collaborator_refused_too_often_is_answered_429_until_the_minute_passes(
    kafka_settings, database_url, tmp_path
):
    tokens = new_tokens()
    settings = ProductionSettings(**service_settings(kafka_settings, database_url, tokens, "production"),
                                  qc_rejections_per_minute=3)
    app = create_app(settings)
    async with serve(app) as url, client(url, tokens.staff) as staff:
        production = Production(staff, tokens, url, app.state.runtime.pool, kafka_settings)
        shop = await workshop(production, tmp_path)
        other = await workshop(production, tmp_path, name="lain", artisan="res_ayu")
        piece = await weave(production, other.artisan, other.collaborator_id, "2024-03-20T09:00:00+07:00")
        valid = cli_sign(tmp_path, other.key, result_data("sub_ok", piece["piece_id"], other.collaborator_id))
        async with production.collaborator(shop.collaborator_id) as flooder, \
                production.collaborator(other.collaborator_id) as honest:
            refused = [await flooder.post("/qc-submissions", content=b'{"garbage": %d}' % n) for n in range(3)]
            limited = await flooder.post("/qc-submissions", content=b'{"garbage": 4}')
            accepted = await honest.post("/qc-submissions", json=valid)
            feedback = await flooder.get(f"/collaborators/{shop.collaborator_id}/rejections")

    assert [r.status_code for r in refused] == [422] * 3
    assert limited.status_code == 429, limited.text
    assert limited.json()["code"] == "too-many-rejections"
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    # The fourth was not read: no fourth row of feedback (nor dead letter) for it.
    assert len(feedback.json()["rejections"]) == 3
    assert accepted.status_code == 201, accepted.text  # another collaborator is not held back


async def test_tokens_roles_documents_and_idempotency(production, tmp_path):
    shop = await workshop(production, tmp_path)
    body = {"artisan_id": shop.artisan, "collaborator_id": shop.collaborator_id, "product": "piring",
            "woven_at": "2024-03-20T09:00:00+07:00"}

    first = await production.staff.post("/pieces", json=body, headers={"Idempotency-Key": "weave-1"})
    retry = await production.staff.post("/pieces", json=body, headers={"Idempotency-Key": "weave-1"})
    async with client(production.url, None) as anonymous, \
            client(production.url, production.tokens.auditor) as auditor, \
            production.collaborator(shop.collaborator_id) as acme:
        assert (await anonymous.post("/pieces", json=body)).status_code == 401
        assert (await anonymous.get(f"/collaborators/{shop.collaborator_id}")).status_code == 401
        assert (await anonymous.get("/health")).status_code == 200
        assert (await auditor.post("/pieces", json=body)).status_code == 403
        assert (await auditor.post("/qc-submissions", json={})).status_code == 403
        assert (await acme.post("/pieces", json=body)).status_code == 403
        assert (await acme.get(f"/collaborators/{shop.collaborator_id}")).status_code == 403
        view = (await auditor.get(f"/collaborators/{shop.collaborator_id}")).json()
        assert view["public_keys"] == [shop.key.public]
        assert view["rates"]["piring"][1] == {"effective_from": "2024-04-01T00:00:00+07:00", "rate_idr": 12_500}
        assert (await auditor.get(f"/collaborators/{shop.collaborator_id}/rejections")).status_code == 200
        assert (await auditor.get("/pieces/pc_nothing")).status_code == 404
        metrics = (await auditor.get("/metrics")).text
        # Counted by route template (ids never become labels) and by the status the client got.
        assert re.search(r'anyam_http_requests_total\{method="POST",route="/pieces",service="production",'
                         r'status="403"\} [1-9]', metrics)
        assert 'route="/pieces/{piece_id}"' in metrics and "pc_nothing" not in metrics
        assert (await auditor.get("/openapi.json")).json()["info"]["title"] == "Anyam production"
        channels = (await auditor.get("/asyncapi.json")).json()["channels"]
        assert set(channels) == {"production", "dead-letters", "enrollment", "qc-submissions"}

    assert first.status_code == retry.status_code == 201
    assert retry.json() == first.json()
    assert [e["type"] for e in await production_events(production)].count("piece-woven") == 1


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/collaborators", {"name": "PT X", "public_key": "c2hvcnQ="}, "public_key"),
        ("/collaborators", {"name": "PT X", "public_key": "not base64!"}, "public_key"),
        ("/collaborators", {"name": "", "public_key": "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="}, "name"),
        ("/pieces", {"artisan_id": "res_1", "collaborator_id": "col_1", "product": "piring",
                     "woven_at": "2024-03-20T09:00:00"}, "woven_at"),
        ("/pieces", {"artisan_id": "res_1", "collaborator_id": "col_1", "product": "piring",
                     "woven_at": "0001-01-01T00:00:00+14:00"}, "woven_at"),
        ("/material-issues", {"artisan_id": "res_1", "collaborator_id": "col_1", "material": "rotan",
                              "quantity": 1.5, "unit": "kg"}, "quantity"),
        ("/pieces", {"artisan_id": "res\u00001", "collaborator_id": "col_1", "product": "piring",
                     "woven_at": "2024-03-20T09:00:00+07:00"}, "artisan_id"),
    ],
)
async def test_invalid_commands_are_refused_with_a_problem_naming_the_field(production, path, body, field):
    response = await production.staff.post(path, json=body)

    assert response.status_code == 422, response.text
    assert response.json()["code"] == "invalid-request"
    assert field in response.json()["detail"]


async def test_rates_for_missing_collaborators_and_pieces_for_unpriced_products_are_refused(production, tmp_path):
    shop = await workshop(production, tmp_path)

    missing = await production.staff.post("/collaborators/col_nobody/rates", json={
        "product": "piring", "rate_idr": 1_000, "effective_from": "2024-03-01T00:00:00+07:00"})
    unpriced = await production.staff.post("/pieces", json={
        "artisan_id": shop.artisan, "collaborator_id": shop.collaborator_id, "product": "dompet",
        "woven_at": "2024-03-20T09:00:00+07:00"})
    strict_money = await production.staff.post(f"/collaborators/{shop.collaborator_id}/rates", json={
        "product": "tas", "rate_idr": "15000", "effective_from": "2024-03-01T00:00:00+07:00"})

    assert (missing.status_code, missing.json()["code"]) == (404, "collaborator-not-found")
    assert (unpriced.status_code, unpriced.json()["code"]) == (409, "no-rate-in-force")
    assert "piring" in unpriced.json()["detail"]
    assert strict_money.status_code == 422


# --- the collaborator command line ----------------------------------------------------------


async def test_cli_publish_writes_a_submission_that_production_accepts(production, tmp_path):
    shop = await workshop(production, tmp_path)
    piece = await weave(production, shop.artisan, shop.collaborator_id, "2024-04-03T09:00:00+07:00")
    data_file = tmp_path / "result.json"
    data_file.write_text(json.dumps(result_data("sub_cli", piece["piece_id"], shop.collaborator_id,
                                                inspected_at="2024-04-04T08:00:00Z")))

    result = await asyncio.to_thread(runner.invoke, collaborator_app, [
        "publish", str(data_file), "--key-file", str(shop.key.path),
        "--bootstrap-servers", production.kafka.bootstrap_servers,
        "--topic-prefix", production.kafka.topic_prefix,
    ])
    await wait_until_caught_up(production.pool, QC_CONSUMER, production.kafka, [Topic.QC_SUBMISSIONS], timeout=60)

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["topic"] == production.topic(Topic.QC_SUBMISSIONS)
    [record] = await read_topic(production.kafka.bootstrap_servers, production.topic(Topic.QC_SUBMISSIONS))
    envelope = json.loads(record.value)
    assert (record.key.decode(), envelope["source"]) == (piece["piece_id"], f"/collaborators/{shop.collaborator_id}")
    assert envelope["data"]["inspected_at"] == "2024-04-04T08:00:00Z"  # sent exactly as signed
    [passed] = [e for e in await production_events(production) if e["type"] == "qc-passed"]
    assert (passed["data"]["amount_idr"], passed["data"]["inspected_at"]) == (12_500, "2024-04-04T15:00:00+07:00")


async def test_cli_token_is_accepted_by_the_service_for_that_collaborator_only(production, tmp_path):
    shop = await workshop(production, tmp_path)

    issued = runner.invoke(collaborator_app, ["token", shop.collaborator_id],
                           env={"ANYAM_TOKEN_SECRET": production.tokens.secret})
    stack_env = tmp_path / "stack.env"
    stack_env.write_text(f"ANYAM_TOKEN_SECRET={production.tokens.secret}\n")
    from_file = runner.invoke(collaborator_app, ["token", shop.collaborator_id, "--stack-env", str(stack_env)],
                              env={"ANYAM_TOKEN_SECRET": None})

    assert issued.exit_code == 0 and from_file.exit_code == 0, issued.output + from_file.output
    # Both name the collaborator (each stamped with when it was issued: the same second or not).
    for token in (issued.stdout.strip(), from_file.stdout.strip()):
        assert read_collaborator_token(production.tokens.secret, token)[0] == shop.collaborator_id
        async with client(production.url, token) as acme:
            assert (await acme.get(f"/collaborators/{shop.collaborator_id}/rejections")).status_code == 200
            assert (await acme.get("/collaborators/col_other/rejections")).status_code == 403


def test_cli_keygen_writes_a_private_key_only_its_owner_can_read_and_refuses_to_overwrite(tmp_path):
    key = keygen(tmp_path, "acme")
    again = runner.invoke(collaborator_app, ["keygen", "--key-file", str(key.path)])

    assert stat.S_IMODE(key.path.stat().st_mode) == 0o600
    assert len(key.public) == 44 and key.public.endswith("=")
    assert again.exit_code == 1 and "exists" in again.stderr and "--force" in again.stderr


@pytest.mark.parametrize(
    ("args", "env", "wording"),
    [
        (["sign", "{data}", "--key-file", "{missing}"], {}, "collaborator keygen"),
        (["sign", "{missing}", "--key-file", "{key}"], {}, "no data file"),
        (["sign", "{not_json}", "--key-file", "{key}"], {}, "is not JSON"),
        (["sign", "{incomplete}", "--key-file", "{key}"], {}, "`inspected_at` is missing"),
        (["sign", "{data}", "--key-file", "{not_key}"], {}, "is not a key"),
        (["publish", "{data}", "--key-file", "{key}", "--stack-env", "{missing}"],
         {"ANYAM_KAFKA_BOOTSTRAP": None}, "no broker given"),
        (["publish", "{data}", "--key-file", "{key}", "--bootstrap-servers", "127.0.0.1:1", "--timeout", "3"],
         {}, "127.0.0.1:1"),
        (["token", "col_1", "--stack-env", "{missing}"], {"ANYAM_TOKEN_SECRET": None}, "ANYAM_TOKEN_SECRET"),
    ],
)
def test_cli_mistakes_get_one_clear_line_and_a_non_zero_exit(tmp_path, args, env, wording):
    key = keygen(tmp_path, "acme")
    files = {"key": key.path, "missing": tmp_path / "missing", "data": tmp_path / "data.json",
             "not_json": tmp_path / "bad.json", "incomplete": tmp_path / "incomplete.json",
             "not_key": tmp_path / "not.key"}
    files["data"].write_text(json.dumps(result_data("sub_1", "pc_1", "col_1")))
    files["not_json"].write_text("{oops")
    files["incomplete"].write_text(json.dumps({k: v for k, v in result_data("s", "p", "c").items()
                                               if k != "inspected_at"}))
    files["not_key"].write_text("hello")

    result = runner.invoke(collaborator_app, [arg.format(**files) for arg in args], env=env)

    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: ")
    assert wording in result.stderr
    assert "Traceback" not in result.output


def test_signed_data_from_the_cli_verifies_with_the_printed_public_key(tmp_path):
    key = keygen(tmp_path, "acme")
    data = cli_sign(tmp_path, key, result_data("sub_ü", "pc_1", "col_1", defects=["loose-weave", "frayed-edge"]))

    assert verifying_key([key.public], data) == key.public
    assert verifying_key([public_key_b64(generate_private_key())], data) is None


async def test_fuzzing_the_openapi_document_never_yields_a_server_error(production, tmp_path):
    code, output = await fuzz_openapi(production.url, production.tokens.staff, max_examples=25)

    assert code == 0, output[-4000:]
    assert re.search(r"[1-9]\d* generated, [1-9]\d* passed", output), output[-2000:]
