"""Forgeries by someone who can write to every topic (issue 25, SPEC §11 defence 2), against live services.

The attacker has no service's key and no collaborator's key, only a producer. Each forgery of the
issue is published onto the programme's topics as it was tried at 70033a0, where every one of them
moved money: here each credits nothing, is dead-lettered by the payout service with its reason,
and `anyam verify` names it by event id, while an honest history, HTTP submissions included,
verifies with exit 0.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import datetime

import asyncpg
import httpx
import pytest

from services.payout.messaging import ledger_consumer
from shared.contracts import Envelope, Topic, encode, service_source, topic_name
from shared.contracts.events import (
    CollaboratorRegistered,
    PayoutFailed,
    PieceWoven,
    QcPassed,
)
from shared.contracts.provenance import ATTESTATION_HEADER, ATTESTATION_PROOF_HEADER, Attester, signed_result
from shared.contracts.signing import generate_private_key, public_key_b64, signed, submission_event
from shared.eventstore.deadletters import DeadLetter
from shared.eventstore.tracking import wait_until_caught_up
from shared.kafka import start_producer
from shared.timeutil import WIB, wib_now
from tests.integration.test_audit import Programme, anyam, live_balances, programme  # noqa: F401 - the fixture
from tests.kafka_reader import read_topic

ATTACKER = generate_private_key()
WOVEN = datetime(2024, 3, 25, 9, 0, tzinfo=WIB)
INSPECTED = datetime(2024, 3, 26, 10, 0, tzinfo=WIB)


async def caught_up(stack: Programme) -> None:
    """Until the payout service's ledger consumer has read everything on its topics."""
    pool = await asyncpg.create_pool(stack.payout_database_url, min_size=1, max_size=1)
    try:
        await wait_until_caught_up(pool, ledger_consumer(stack.kafka.topic_prefix), stack.kafka,
                                   [Topic.PRODUCTION, Topic.PAYOUT], timeout=60)
    finally:
        await pool.close()


async def publish(stack: Programme, event: Envelope, *, attested_by=None,
                  headers: list[tuple[str, bytes]] = ()) -> None:
    """Write `event` as an attacker with a producer would: optionally 'attested' with a key of theirs, or
    with headers taken from elsewhere."""
    record = encode(event)
    value = record.value
    headers = [*record.headers, *headers]
    if attested_by is not None:
        headers += Attester(attested_by).headers(value)
    producer = await start_producer(stack.kafka)
    try:
        await producer.send_and_wait(topic_name(record.topic, stack.kafka.topic_prefix), value, key=record.key,
                                     headers=headers)
    finally:
        await producer.stop()


async def verify_report(stack: Programme, tmp_path, name: str) -> tuple[int, dict]:
    report = tmp_path / f"{name}.json"
    code, stdout, stderr = await anyam(stack, "verify", "--json-report", str(report), cwd=tmp_path, timeout=300)
    assert report.exists(), stdout[-2000:] + stderr[-2000:]
    return code, json.loads(report.read_text())


async def test_forged_records_credit_nothing_are_dead_lettered_and_verify_names_each(programme, tmp_path):  # noqa: F811
    staff = {"Authorization": f"Bearer {programme.tokens.staff}"}
    artisan = programme.demo.artisans[0].resident_id
    collaborator_id = programme.demo.collaborator_id

    # --- an honest piece, its QC result sent over HTTP: as verifiable as the demo's Kafka ones ---------
    key = generate_private_key()
    async with httpx.AsyncClient(base_url=programme.production_url, headers=staff, timeout=30) as production:
        registered = await production.post("/collaborators", json={
            "name": "CV Rotan Jujur", "public_key": public_key_b64(key), "valid_from": "2024-03-01T00:00:00+07:00"})
        honest = registered.json()["collaborator_id"]
        await production.post(f"/collaborators/{honest}/rates", json={
            "product": "piring", "rate_idr": 11_000, "effective_from": "2024-03-01T00:00:00+07:00"})
        piece = (await production.post("/pieces", json={"artisan_id": artisan, "collaborator_id": honest,
                                                        "product": "piring", "woven_at": WOVEN.isoformat()})).json()
        submission = signed(key, {"submission_id": f"sub_http_{uuid.uuid4().hex[:6]}", "piece_id": piece["piece_id"],
                                  "collaborator_id": honest, "result": "passed", "inspector": "QC-3",
                                  "inspected_at": INSPECTED.isoformat(), "defects": []})
        accepted = await production.post("/qc-submissions", content=json.dumps(submission).encode())
    assert registered.status_code == 201 and piece["rate_idr"] == 11_000 and accepted.status_code == 201
    payable = f"artisan:{artisan}:payable"
    deadline_balances = await _until(programme, lambda accounts: accounts.get(payable, 0) >= 11_000)
    code, report = await verify_report(programme, tmp_path, "honest")
    assert code == 0 and report["verified"] is True, report["broken_invariants"]
    before = deadline_balances

    # --- forgery 1: a bare qc-passed of Rp 5,000,000, no piece, no key ----------------------------------
    bare = Envelope.wrap(QcPassed(piece_id="pc_nothing", artisan_id=artisan, collaborator_id=collaborator_id,
                                  product="piring", amount_idr=5_000_000, submission_id="sub_forged",
                                  inspected_at=INSPECTED, signature="AAAA"), source="/attacker/anything")
    await publish(programme, bare)

    # --- forgery 2: the attacker's key for a real collaborator, a piece at Rp 7.5M, its signed result ----
    takeover = Envelope.wrap(CollaboratorRegistered(collaborator_id=collaborator_id, name="PT Anyaman",
                                                    public_key=public_key_b64(ATTACKER)),
                             source=service_source("production"))
    woven = Envelope.wrap(PieceWoven(piece_id="pc_forged", artisan_id=artisan, collaborator_id=collaborator_id,
                                     product="piring", rate_idr=7_500_000, woven_at=WOVEN),
                          source=service_source("production"), time=WOVEN)
    result = signed_result(ATTACKER, piece_id="pc_forged", artisan_id=artisan, collaborator_id=collaborator_id,
                           amount_idr=7_500_000, inspected_at=INSPECTED)
    passed = Envelope.wrap(result, source=service_source("production"), time=INSPECTED)
    for event in (takeover, woven, passed):
        await publish(programme, event, attested_by=ATTACKER)  # "attested", with the attacker's own key
    await publish_submission(programme, result)
    # ... and a result carrying the honest attestation headers (signed tree head and inclusion proof) of a
    # genuine record, copied off the topic.
    genuine = next(r for r in await read_topic(programme.kafka, topic_name(Topic.PRODUCTION,
                                                                           programme.kafka.topic_prefix))
                   if json.loads(r.value)["type"] == "qc-passed")
    copied = Envelope.wrap(result.model_copy(update={"piece_id": "pc_forged_2"}), source=service_source("production"),
                           time=INSPECTED)
    copied_headers = [(name, raw) for name, raw in genuine.headers
                      if name in (ATTESTATION_HEADER, ATTESTATION_PROOF_HEADER)]
    assert len(copied_headers) == 2
    await publish(programme, copied, headers=copied_headers)

    # --- forgery 4: a payout-failed before staff confirm the payment ------------------------------------
    async with httpx.AsyncClient(base_url=programme.payout_url, headers=staff, timeout=30) as payout:
        run = await payout.post("/payout-runs", json={"run_id": f"run_forgery_{uuid.uuid4().hex[:6]}",
                                                      "period_end": "2024-03-31T23:59:59+07:00"})
        assert run.status_code in (200, 201), run.text
        mine = next(p for p in run.json()["payouts"] if p["artisan_id"] == artisan)
        await caught_up(programme)
        failed = Envelope.wrap(PayoutFailed(payout_id=mine["payout_id"], artisan_id=artisan,
                                            amount_idr=mine["amount_idr"], reason="account-closed"),
                               source=service_source("payout"))
        await publish(programme, failed)
        await caught_up(programme)
        confirmed = await payout.post(f"/payouts/{mine['payout_id']}/confirmation", json={
            "method": "bank-transfer", "reference": "TRF-77", "paid_at": wib_now().isoformat()})
        assert confirmed.status_code in (200, 201), confirmed.text
    after = await _until(programme, lambda accounts: accounts.get(f"artisan:{artisan}:paid", 0)
                         >= before.get(f"artisan:{artisan}:paid", 0) + mine["amount_idr"])
    await caught_up(programme)
    after = await live_balances(programme)

    # Nothing forged moved money: what was payable went to the genuine payment, and nothing else changed.
    assert after[f"artisan:{artisan}:paid"] == before.get(f"artisan:{artisan}:paid", 0) + mine["amount_idr"]
    assert after.get(payable, 0) == before[payable] - mine["amount_idr"]
    assert sum(v for k, v in after.items() if k.startswith("artisan:")) == sum(
        v for k, v in before.items() if k.startswith("artisan:"))

    forged = {bare.id: "unattested", takeover.id: "unattested", woven.id: "unattested", passed.id: "unattested",
              copied.id: "unattested", failed.id: "unattested"}
    letters = [DeadLetter.from_record(r.key, r.value, r.headers) for r in await read_topic(
        programme.kafka, topic_name(Topic.DEAD_LETTERS, programme.kafka.topic_prefix))]
    lettered = {json.loads(letter.value)["id"]: letter.reason for letter in letters
                if letter.consumer == ledger_consumer(programme.kafka.topic_prefix)}
    assert {event_id: lettered.get(event_id) for event_id in forged} == forged

    code, report = await verify_report(programme, tmp_path, "forged")
    assert code == 1 and report["broken_invariants"] == ["history-attested"]
    [attested] = [r for r in report["invariants"] if r["name"] == "history-attested"]
    named = {v["event_ids"][0]: v["kind"] for v in attested["violations"]}
    assert {event_id: named.get(event_id) for event_id in forged} == forged
    assert report["replayed_ledger"]["digest"] == report["live_ledger"]["digest"]


async def publish_submission(stack: Programme, result: QcPassed) -> None:
    """The attacker's signed `qc-submitted` on `qc-submissions`: production refuses it (the key is not theirs)."""
    assert result.submission is not None
    value = submission_event(result.submission)
    producer = await start_producer(stack.kafka)
    try:
        await producer.send_and_wait(topic_name(Topic.QC_SUBMISSIONS, stack.kafka.topic_prefix), value,
                                     key=result.piece_id.encode(), headers=[("content-type",
                                                                             b"application/cloudevents+json")])
    finally:
        await producer.stop()


async def _until(stack: Programme, condition, timeout: float = 60) -> dict[str, int]:
    """The live balances once `condition` holds of them (a deadline, not a sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        accounts = await live_balances(stack)
        if condition(accounts):
            return accounts
        if time.monotonic() > deadline:
            pytest.fail(f"the live ledger never reached the expected state: {accounts}")
        await asyncio.sleep(0.2)
