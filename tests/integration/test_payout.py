"""The payout service on the real broker and PostgreSQL: the ledger, payout runs, crashes and rebalances.

Production is not needed: the tests publish `piece-woven` / `qc-passed` events
onto the (prefixed) production topic themselves, exactly as production's relay
would, and read what the payout service published back with an independent client.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from anyam.bench.history import generate_history
from anyam.stack.processes import free_port
from services.payout import domain, projections
from services.payout.app import PayoutSettings, create_app
from services.payout.dashboard import dashboard_consumer
from services.payout.messaging import ledger_consumer
from shared.contracts import Envelope, Topic, decode, encode, service_source, topic_name
from shared.contracts.events import Paid, PayoutFailed, PieceWoven, QcPassed, ResidentRegistered
from shared.contracts.provenance import TOPIC_OWNERS, signed_result, signing_key_text
from shared.contracts.signing import generate_private_key
from shared.eventstore import Reject, stored_offsets, wait_until_caught_up, wait_until_published
from shared.kafka import start_producer
from shared.timeutil import WIB
from tests.fuzzing import fuzz_openapi
from tests.kafka_reader import read_topic
from tests.services import SERVICE_KEYS, Tokens, attested_headers, client, new_tokens, serve, service_settings
from tests.unit.test_payout_domain import simulate  # the pure command side: runs and payments

REPO = Path(__file__).resolve().parents[2]
PRODUCTION = service_source("production")
MARCH = datetime(2024, 3, 1, 8, 0, tzinfo=WIB)
PERIOD_END = "2024-03-31T23:59:59+07:00"
TOPICS = [Topic.PRODUCTION, Topic.PAYOUT]
COLLABORATOR_KEY = generate_private_key()


# --- the history production would have written ------------------------------------------------


def piece_events(artisan: str, n: int, amount: int, *, at: datetime, passed: bool = True) -> list[Envelope]:
    """A piece woven, then its QC result; the CloudEvents `time` is the business time, as production sets it."""
    piece, collaborator = f"pc_{artisan}_{n}", f"col_{n % 2}"
    woven = Envelope.wrap(PieceWoven(piece_id=piece, artisan_id=artisan, collaborator_id=collaborator,
                                     product="piring", rate_idr=amount, woven_at=at), source=PRODUCTION, time=at)
    inspected = at + timedelta(hours=2)
    result = signed_result(COLLABORATOR_KEY, piece_id=piece, artisan_id=artisan, collaborator_id=collaborator,
                           inspected_at=inspected, amount_idr=amount if passed else None,
                           defects=() if passed else ["loose-weave"])
    return [woven, Envelope.wrap(result, source=PRODUCTION, time=inspected)]


def production_history(artisans: int, pieces: int, *, seed: int = 1) -> list[Envelope]:
    """`pieces` pieces spread over `artisans` artisans in March; about one in ten fails QC."""
    rng = random.Random(seed)
    events: list[Envelope] = []
    for n in range(pieces):
        at = MARCH + timedelta(minutes=rng.randrange(0, 29 * 24 * 60))
        events += piece_events(f"res_{n % artisans:03d}", n, rng.randrange(5, 60) * 1_000, at=at,
                               passed=rng.random() > 0.1)
    return events


def earned(events: Iterable[Envelope]) -> dict[str, int]:
    totals: dict[str, int] = defaultdict(int)
    for event in events:
        if isinstance(event.data, QcPassed):
            totals[event.data.artisan_id] += event.data.amount_idr
    return dict(totals)


def expected_ledger(events: Iterable[Envelope]) -> dict[str, domain.LedgerTransaction]:
    return {tx.transaction_id: tx for event in events if (tx := domain.transaction_for(event)) is not None}


def expected_postings(events: Iterable[Envelope]) -> set[tuple[str, str, int]]:
    return {(tx.transaction_id, p.account, p.amount_idr) for tx in expected_ledger(events).values()
            for p in tx.postings}


def expected_digest(events: Iterable[Envelope]) -> str:
    return domain.ledger_digest(domain.digest_rows(expected_ledger(events).values()))


# --- plumbing -------------------------------------------------------------------------------------




@pytest.fixture
async def producer(kafka_settings):
    producer = await start_producer(kafka_settings, linger_ms=5)
    yield producer
    await producer.stop()


async def publish(producer, kafka_settings, events: Iterable[Envelope]) -> None:
    """Publish as a relay would: each event on its own topic, keyed per SPEC §4."""
    for event in events:
        record = encode(event)
        await producer.send(topic_name(record.topic, kafka_settings.topic_prefix), record.value, key=record.key,
                            headers=attested_headers(TOPIC_OWNERS[record.topic], record.value))
    await producer.flush()


async def topic_events(kafka_settings, topic: Topic) -> list[Envelope]:
    records = await read_topic(kafka_settings.bootstrap_servers, topic_name(topic, kafka_settings.topic_prefix),
                               timeout=60)
    return [decode(r.value) for r in records]


@contextlib.asynccontextmanager
async def database(url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(url, min_size=1, max_size=4)
    try:
        yield pool
    finally:
        await pool.close()


async def caught_up(url: str, kafka_settings, *, published: bool = False, timeout: float = 90) -> None:
    """Wait until the ledger has applied everything on both topics (after the relay, with `published`)."""
    async with database(url) as pool:
        if published:
            await wait_until_published(pool, timeout=timeout)
        await wait_until_caught_up(pool, ledger_consumer(kafka_settings.topic_prefix), kafka_settings, TOPICS,
                                   timeout=timeout)


async def ledger_postings(url: str) -> set[tuple[str, str, int]]:
    async with database(url) as pool:
        rows = await pool.fetch("SELECT transaction_id, account, amount_idr FROM ledger_postings")
    return {(r["transaction_id"], r["account"], r["amount_idr"]) for r in rows}


async def ledger_size(url: str) -> tuple[int, int]:
    async with database(url) as pool:
        return (await pool.fetchval("SELECT count(*) FROM ledger_transactions"),
                await pool.fetchval("SELECT count(*) FROM ledger_postings"))


@contextlib.asynccontextmanager
async def payout_service(kafka_settings, database_url: str, tokens: Tokens) -> AsyncIterator[str]:
    settings = PayoutSettings(**service_settings(kafka_settings, database_url, tokens, "payout"))
    async with serve(create_app(settings)) as url:
        yield url


@pytest.fixture
async def payout(kafka_settings, database_url, producer):
    tokens = new_tokens()
    async with payout_service(kafka_settings, database_url, tokens) as url, client(url, tokens.staff) as staff:
        yield staff, tokens, url, database_url


def account_balances(balances: dict[str, int], artisan: str) -> tuple[int, int, int]:
    return tuple(balances.get(account, 0) for account in domain.artisan_accounts(artisan))


async def confirm(staff, payout_id: str, reference: str = "TRF-1", **extra):
    body = {"method": "bank-transfer", "reference": reference, "paid_at": datetime.now(WIB).isoformat()} | extra
    return await staff.post(f"/payouts/{payout_id}/confirmation", json=body)


# --- end to end -------------------------------------------------------------------------------------


async def test_pieces_that_pass_qc_are_payable_and_a_run_and_its_confirmations_pay_exactly_that(
    payout, producer, kafka_settings
):
    staff, _, _, db = payout
    history = production_history(artisans=4, pieces=40)
    await publish(producer, kafka_settings, history)
    await caught_up(db, kafka_settings)
    owed = earned(history)

    balances = (await staff.get("/ledger/balances")).json()["accounts"]
    assert {a: account_balances(balances, a) for a in owed} == {a: (total, 0, 0) for a, total in owed.items()}
    statement = (await staff.get("/artisans/res_000/statement")).json()
    passed = [e for e in history if isinstance(e.data, QcPassed) and e.data.artisan_id == "res_000"]
    assert sorted(entry["event_id"] for entry in statement["entries"]) == sorted(e.id for e in passed)
    assert {entry["event_type"] for entry in statement["entries"]} == {"qc-passed"}
    assert statement["balances"] == {"earned_idr": owed["res_000"], "payable_idr": owed["res_000"],
                                     "in_transit_idr": 0, "paid_idr": 0}

    run = await staff.post("/payout-runs", json={"run_id": "2024-03", "period_end": PERIOD_END})
    assert run.status_code == 201, run.text
    assert {p["artisan_id"]: p["amount_idr"] for p in run.json()["payouts"]} == owed
    await caught_up(db, kafka_settings, published=True)
    balances = (await staff.get("/ledger/balances")).json()["accounts"]
    assert {a: account_balances(balances, a) for a in owed} == {a: (0, total, 0) for a, total in owed.items()}

    for n, scheduled in enumerate(run.json()["payouts"]):
        confirmed = await confirm(staff, scheduled["payout_id"], reference=f"TRF-{n}")
        assert confirmed.status_code == 201, confirmed.text
        assert confirmed.json()["status"] == "paid"
    await caught_up(db, kafka_settings, published=True)

    balances = (await staff.get("/ledger/balances")).json()["accounts"]
    assert {a: account_balances(balances, a) for a in owed} == {a: (0, 0, total) for a, total in owed.items()}
    statement = (await staff.get("/artisans/res_000/statement")).json()
    assert [e["event_type"] for e in statement["entries"]][-4:] == [
        "payout-scheduled", "payout-scheduled", "paid", "paid"]
    assert statement["balances"]["paid_idr"] == owed["res_000"]
    # Before the first piece passed QC, the artisan had nothing.
    early = (await staff.get("/artisans/res_000/statement", params={"as_of": "2024-02-01T00:00:00+07:00"})).json()
    assert early["entries"] == [] and early["balances"]["earned_idr"] == 0
    # The live digest is the digest of the events, computed independently of the database.
    everything = await topic_events(kafka_settings, Topic.PRODUCTION) + await topic_events(kafka_settings,
                                                                                           Topic.PAYOUT)
    assert (await staff.get("/ledger/digest")).json()["digest"] == expected_digest(everything)
    middle = "2024-03-15T00:00:00+07:00"
    assert (await staff.get("/ledger/digest", params={"as_of": middle})).json()["digest"] == domain.ledger_digest(
        domain.digest_rows(expected_ledger(everything).values()), as_of=datetime.fromisoformat(middle))


async def test_a_run_for_one_rusunawa_pays_only_its_residents_and_its_balances_are_theirs(
    payout, producer, kafka_settings
):
    """Residents are in a rusunawa by where they registered (the enrollment topic); a run made for one
    rusunawa schedules its residents' earnings only, and the others' stay payable for their own run."""
    staff, _, _, db = payout
    registered = [Envelope.wrap(ResidentRegistered(resident_id=artisan, rusunawa=place,
                                                   registered_at=datetime(2024, 2, 1, tzinfo=WIB)),
                                source=service_source("enrollment"))
                  for artisan, place in (("res_000", "Rusunawa Nagrak"), ("res_001", "Rusunawa Marunda"))]
    history = production_history(artisans=2, pieces=10)
    await publish(producer, kafka_settings, [*registered, *history])
    await caught_up(db, kafka_settings)
    async with database(db) as pool:
        await wait_until_caught_up(pool, dashboard_consumer(kafka_settings.topic_prefix), kafka_settings,
                                   [Topic.ENROLLMENT], timeout=90)
    owed = earned(history)

    run = await staff.post("/payout-runs", json={"run_id": "nagrak-03", "period_end": PERIOD_END,
                                                  "rusunawa": "rusunawa  NAGRAK"})
    again = await staff.post("/payout-runs", json={"run_id": "nagrak-03", "period_end": PERIOD_END})
    marunda = (await staff.get("/ledger/balances", params={"rusunawa": "Rusunawa Marunda"})).json()["accounts"]
    await caught_up(db, kafka_settings, published=True)
    nagrak = (await staff.get("/ledger/balances", params={"rusunawa": "Rusunawa Nagrak"})).json()["accounts"]

    assert run.status_code == 201, run.text
    assert {p["artisan_id"]: p["amount_idr"] for p in run.json()["payouts"]} == {"res_000": owed["res_000"]}
    assert (again.status_code, again.json()["code"]) == (409, "run-id-reused")  # the same id for everyone
    assert set(marunda) == {"artisan:res_001:payable"} and marunda["artisan:res_001:payable"] == owed["res_001"]
    assert account_balances(nagrak, "res_000") == (0, owed["res_000"], 0)
    assert all(account.startswith("artisan:res_000:") for account in nagrak)


async def test_a_failed_payout_returns_to_payable_is_scheduled_again_and_is_paid_once(
    payout, producer, kafka_settings
):
    staff, tokens, url, db = payout
    history = piece_events("res_f", 1, 20_000, at=MARCH) + piece_events("res_f", 2, 30_000, at=MARCH)
    await publish(producer, kafka_settings, history)
    await caught_up(db, kafka_settings)
    (first,) = (await staff.post("/payout-runs", json={"run_id": "r1", "period_end": PERIOD_END})).json()["payouts"]
    assert first["amount_idr"] == 50_000

    failed = await staff.post(f"/payouts/{first['payout_id']}/failure", json={"reason": "account-closed"})
    again = await staff.post(f"/payouts/{first['payout_id']}/failure", json={"reason": "account-closed"})
    pay_failed = await confirm(staff, first["payout_id"])
    assert (failed.status_code, again.status_code) == (201, 200)
    assert (pay_failed.status_code, pay_failed.json()["code"]) == (409, "payout-failed")
    await caught_up(db, kafka_settings, published=True)
    balances = (await staff.get("/ledger/balances")).json()["accounts"]
    assert account_balances(balances, "res_f") == (50_000, 0, 0)

    (second,) = (await staff.post("/payout-runs", json={"run_id": "r2", "period_end": PERIOD_END})).json()["payouts"]
    assert second["amount_idr"] == 50_000 and second["payout_id"] != first["payout_id"]
    nothing_left = await staff.post("/payout-runs", json={"run_id": "r3", "period_end": PERIOD_END})
    assert nothing_left.status_code == 201 and nothing_left.json()["payouts"] == []
    paid = await confirm(staff, second["payout_id"], reference="TRF-9", paid_at="2099-01-01T00:00:00+07:00")
    assert (paid.status_code, paid.json()["code"]) == (422, "paid-at-in-future")
    when = datetime.now(WIB).isoformat()
    assert (await confirm(staff, second["payout_id"], reference="TRF-9", paid_at=when)).status_code == 201
    assert (await confirm(staff, second["payout_id"], reference="TRF-9", paid_at=when)).status_code == 200
    other = await confirm(staff, second["payout_id"], reference="TRF-10")
    late_failure = await staff.post(f"/payouts/{second['payout_id']}/failure", json={"reason": "other"})
    assert (other.status_code, other.json()["code"]) == (409, "payout-already-paid")
    assert (late_failure.status_code, late_failure.json()["code"]) == (409, "payout-already-paid")
    unstorable = await staff.post(f"/payouts/{second['payout_id']}/failure", json={"reason": "ditolak \u0093"})
    assert (unstorable.status_code, unstorable.json()["code"]) == (422, "invalid-request")
    await caught_up(db, kafka_settings, published=True)
    assert account_balances((await staff.get("/ledger/balances")).json()["accounts"], "res_f") == (0, 0, 50_000)

    reused = await staff.post("/payout-runs", json={"run_id": "r1", "period_end": "2024-02-29T23:59:59+07:00"})
    future = await staff.post("/payout-runs", json={"run_id": "r4", "period_end": "2099-12-31T00:00:00+07:00"})
    naive = await staff.post("/payout-runs", json={"run_id": "r5", "period_end": "2024-03-31T23:59:59"})
    unknown = await confirm(staff, "po_nope")
    assert (reused.status_code, reused.json()["code"]) == (409, "run-id-reused")
    assert (future.status_code, future.json()["code"]) == (422, "period-not-ended")
    assert (naive.status_code, naive.json()["code"]) == (422, "invalid-request")
    assert (unknown.status_code, unknown.json()["code"]) == (404, "payout-not-found")
    assert (await staff.get("/artisans/res_nobody/statement")).status_code == 404
    assert (await staff.get("/ledger/balances", params={"as_of": "yesterday"})).status_code == 422
    async with client(url, tokens.auditor) as auditor, client(url, None) as anonymous:
        assert (await auditor.get("/artisans/res_f/statement")).status_code == 200
        assert (await auditor.get("/ledger/digest")).status_code == 200
        assert (await auditor.post("/payout-runs", json={"run_id": "r6", "period_end": PERIOD_END})).status_code == 403
        failure = await auditor.post(f"/payouts/{second['payout_id']}/failure", json={"reason": "other"})
        assert failure.status_code == 403
        assert (await anonymous.get("/ledger/balances")).status_code == 401
        asyncapi = (await auditor.get("/asyncapi.json")).json()["channels"]
        assert set(asyncapi) == {"payout", "production", "enrollment", "dead-letters"}


async def test_concurrent_runs_with_one_run_id_schedule_one_set_and_with_different_ids_never_pay_twice(
    payout, producer, kafka_settings
):
    staff, _, _, db = payout
    history = production_history(artisans=6, pieces=30, seed=3)
    await publish(producer, kafka_settings, history)
    await caught_up(db, kafka_settings)
    owed = earned(history)

    same = await asyncio.gather(*(
        staff.post("/payout-runs", json={"run_id": "same", "period_end": "2024-03-15T00:00:00+07:00"})
        for _ in range(6)))
    different = await asyncio.gather(*(
        staff.post("/payout-runs", json={"run_id": f"run-{n}", "period_end": PERIOD_END}) for n in range(6)))

    assert sorted(r.status_code for r in same) == [200] * 5 + [201]
    assert all(r.json()["payouts"] == same[0].json()["payouts"] for r in same)
    assert all(r.status_code == 201 for r in different)
    await caught_up(db, kafka_settings, published=True)
    scheduled = [e.data for e in await topic_events(kafka_settings, Topic.PAYOUT)]
    assert len({s.payout_id for s in scheduled}) == len(scheduled)
    assert len([s for s in scheduled if s.run_id == "same"]) == len(same[0].json()["payouts"])
    per_artisan: dict[str, int] = defaultdict(int)
    for s in scheduled:
        per_artisan[s.artisan_id] += s.amount_idr
    assert per_artisan == owed  # everything earned scheduled, nothing twice
    balances = (await staff.get("/ledger/balances")).json()["accounts"]
    assert {a: account_balances(balances, a) for a in owed} == {a: (0, total, 0) for a, total in owed.items()}


# --- exactly-once projection ------------------------------------------------------------------------


async def test_every_event_delivered_twice_leaves_the_ledger_unchanged(payout, producer, kafka_settings):
    staff, _, _, db = payout
    history = production_history(artisans=5, pieces=60, seed=5)
    await publish(producer, kafka_settings, history)
    await caught_up(db, kafka_settings)
    await staff.post("/payout-runs", json={"run_id": "once", "period_end": PERIOD_END})
    await caught_up(db, kafka_settings, published=True)
    before = ((await staff.get("/ledger/digest")).json(), await ledger_postings(db), await ledger_size(db))

    # Every event again, on both topics: what an at-least-once relay does after a crash.
    again = await topic_events(kafka_settings, Topic.PRODUCTION) + await topic_events(kafka_settings, Topic.PAYOUT)
    await publish(producer, kafka_settings, again)
    await caught_up(db, kafka_settings)

    after = ((await staff.get("/ledger/digest")).json(), await ledger_postings(db), await ledger_size(db))
    assert after == before
    assert before[1] == expected_postings(again)
    dead_letters = topic_name(Topic.DEAD_LETTERS, kafka_settings.topic_prefix)
    assert await read_topic(kafka_settings.bootstrap_servers, dead_letters) == []  # deduplicated, not refused


async def wait_for_group(kafka_settings, members: int, *, timeout: float = 60) -> None:
    """Wait until the ledger's consumer group is stable with `members` members, as the broker sees it."""
    admin = AIOKafkaAdminClient(**kafka_settings.client_options())
    await admin.start()
    try:
        deadline = time.monotonic() + timeout
        while True:
            (response,) = await admin.describe_consumer_groups([ledger_consumer(kafka_settings.topic_prefix)])
            _, _, state, _, _, group_members, *_ = response.groups[0]
            if state == "Stable" and len(group_members) == members:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the group is {state} with {len(group_members)} members, not {members}")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


async def test_two_instances_in_one_group_while_partitions_move_post_each_event_exactly_once(
    kafka_settings, database_url, producer
):
    """Trap 3: B joins while A works through a backlog, then A leaves mid-stream; nothing doubled or missing."""
    tokens = new_tokens()
    history = production_history(artisans=11, pieces=900, seed=11)
    backlog, during_join, during_leave = history[:900], history[900:1_200], history[1_200:]
    await publish(producer, kafka_settings, backlog)
    async with contextlib.AsyncExitStack() as first:
        await first.enter_async_context(payout_service(kafka_settings, database_url, tokens))
        await wait_for_group(kafka_settings, members=1)
        async with payout_service(kafka_settings, database_url, tokens) as second_url:
            await publish(producer, kafka_settings, during_join)
            await wait_for_group(kafka_settings, members=2)
            leaving = asyncio.create_task(first.aclose())  # A leaves while events keep coming
            await publish(producer, kafka_settings, during_leave)
            await leaving
            await caught_up(database_url, kafka_settings, timeout=120)
            async with client(second_url, tokens.staff) as staff:
                digest = (await staff.get("/ledger/digest")).json()

    assert await ledger_postings(database_url) == expected_postings(history)
    assert digest["digest"] == expected_digest(history)
    assert digest["transactions"] == sum(isinstance(e.data, QcPassed) for e in history)


# --- crash: SIGKILL mid-stream ----------------------------------------------------------------------


def start_payout_process(kafka_settings, database_url: str, tokens: Tokens, port: int, log: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "ANYAM_KAFKA_BOOTSTRAP": kafka_settings.kafka_bootstrap,
        "ANYAM_TOPIC_PREFIX": kafka_settings.topic_prefix,
        "ANYAM_DATABASE_URL": database_url,
        "ANYAM_HTTP_PORT": str(port),
        "ANYAM_STAFF_TOKEN": tokens.staff,
        "ANYAM_AUDITOR_TOKEN": tokens.auditor,
        "ANYAM_TOKEN_SECRET": tokens.secret,
        "ANYAM_SIGNING_KEY": signing_key_text(SERVICE_KEYS["payout"]),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "services.payout"], cwd=REPO, env=env, stdout=out,
                                stderr=subprocess.STDOUT)


async def wait_healthy(process: subprocess.Popen, url: str, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=url, timeout=2) as http:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the payout service exited ({process.returncode}):\n{log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get("/health")).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the payout service did not answer in {timeout}s:\n{log.read_text()[-3000:]}")
            await asyncio.sleep(0.1)


async def test_killed_with_sigkill_mid_stream_and_restarted_the_ledger_is_exact_and_digests_like_a_rebuild(
    kafka_settings, database_url, producer, scratch_database, tmp_path
):
    tokens, port, log = new_tokens(), free_port(), tmp_path / "payout.log"
    history = production_history(artisans=25, pieces=2_000, seed=42)  # 4,000 events
    backlog, rest = history[:2_400], history[2_400:]
    await publish(producer, kafka_settings, backlog)
    production = topic_name(Topic.PRODUCTION, kafka_settings.topic_prefix)
    group = ledger_consumer(kafka_settings.topic_prefix)

    async def applied(pool) -> int:
        return sum(o for tp, o in (await stored_offsets(pool, group)).items() if tp.topic == production)

    process = start_payout_process(kafka_settings, database_url, tokens, port, log)
    try:
        await wait_healthy(process, f"http://127.0.0.1:{port}", log)
        async with database(database_url) as pool:
            deadline = time.monotonic() + 90
            while await applied(pool) == 0:  # kill as soon as the first batches have committed
                assert time.monotonic() < deadline, "the ledger consumer never started"
                await asyncio.sleep(0.005)
            process.send_signal(signal.SIGKILL)
            await asyncio.to_thread(process.wait, 10)
            at_kill = await applied(pool)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert 0 < at_kill < len(backlog), f"not killed mid-stream: {at_kill} of {len(backlog)} events applied"

    await publish(producer, kafka_settings, rest)  # the stream goes on while the service is down
    process = start_payout_process(kafka_settings, database_url, tokens, port, log)
    try:
        await wait_healthy(process, f"http://127.0.0.1:{port}", log)
        await caught_up(database_url, kafka_settings, timeout=150)
        async with client(f"http://127.0.0.1:{port}", tokens.auditor) as auditor:
            live = (await auditor.get("/ledger/digest")).json()
    finally:
        process.terminate()
        await asyncio.to_thread(process.wait, 30)

    assert await ledger_postings(database_url) == expected_postings(history)
    assert live["digest"] == expected_digest(history)
    async with database(database_url) as pool:  # trap 4: projecting history scheduled and paid nothing
        assert await pool.fetchval("SELECT count(*) FROM event_store") == 0
    # A clean rebuild from the topic alone, through the same projection code, into a fresh database.
    conn = await asyncpg.connect(await scratch_database())
    try:
        await projections.install_ledger(conn)
        async with conn.transaction():
            for event in await topic_events(kafka_settings, Topic.PRODUCTION):
                await projections.apply_event(conn, event)
        assert (await projections.ledger_digest(conn)).digest == live["digest"]
    finally:
        await conn.close()


# --- determinism and the database's own guards (PostgreSQL only) -------------------------------------


def partition_of(event: Envelope) -> tuple[str, int]:
    # Any stable key → partition map will do; what matters is that each partition's order is kept.
    return event.data.topic.value, sum(event.key.encode()) % 3


def interleave(events: list[Envelope], rng: random.Random, *, partition_order: list | None = None) -> list[Envelope]:
    """A consumption order Kafka could produce: each partition in its own order, partitions interleaved."""
    partitions: dict[tuple[str, int], list[Envelope]] = defaultdict(list)
    for event in events:
        partitions[partition_of(event)].append(event)
    if partition_order is not None:  # one partition after another, in the given order
        return [e for p in partition_order for e in partitions.get(p, [])]
    queues = {p: list(reversed(q)) for p, q in partitions.items()}
    order = []
    while queues:
        p = rng.choice(sorted(queues))
        order.append(queues[p].pop())
        if not queues[p]:
            del queues[p]
    return order


async def project_into_fresh_database(create_database, events: Iterable[Envelope]) -> str:
    url = await create_database()
    conn = await asyncpg.connect(url)
    try:
        await projections.install_ledger(conn)
        for event in events:  # each event in a transaction of its own, as the apply_event contract allows
            await projections.apply_event(conn, event)
    finally:
        await conn.close()
    return url


async def test_the_same_events_replayed_in_a_different_partition_order_give_the_same_digest(scratch_database):
    rng = random.Random(2024)
    history = production_history(artisans=7, pieces=150, seed=9)
    operations = [("run", 20 * 24 * 60, 1.0), ("pay", 0), ("pay", 1), ("fail", 2), ("run", 29 * 24 * 60, 1.0),
                  ("pay", 3), ("pay", 4), ("fail", 5), ("pay", 6)]
    history += simulate_with_earnings(history, operations)
    partitions = sorted({partition_of(e) for e in history})

    forward = await project_into_fresh_database(scratch_database, interleave(history, rng, partition_order=partitions))
    backward = await project_into_fresh_database(
        scratch_database, interleave(history, rng, partition_order=partitions[::-1]) + history[::7])  # and some twice
    shuffled = await project_into_fresh_database(scratch_database, interleave(history, rng))

    middle = MARCH + timedelta(days=12)
    results = []
    for url in (forward, backward, shuffled):
        conn = await asyncpg.connect(url)
        try:
            results.append(((await projections.ledger_digest(conn)).digest,
                            (await projections.ledger_digest(conn, middle)).digest,
                            await projections.balances(conn, middle)))
        finally:
            await conn.close()
    assert results[0] == results[1] == results[2]
    assert results[0][0] == expected_digest(history)
    assert {e.type for e in history} >= {"qc-passed", "payout-scheduled", "paid", "payout-failed"}


def simulate_with_earnings(history: list[Envelope], operations) -> list[Envelope]:
    """Payout events the deciders make for `history`'s earnings (only the payout events are returned)."""
    earnings = [("earn", e.data.artisan_id, e.data.amount_idr, e.data.collaborator_id,
                 int((e.time - MARCH).total_seconds() // 60)) for e in history if isinstance(e.data, QcPassed)]
    return [e for e in simulate(earnings + operations) if e.data.topic is Topic.PAYOUT]


def _with_trouble(events: list[Envelope]) -> list[Envelope]:
    """The history with what a replay must survive: redeliveries, and second events for one piece or payout."""
    troubled = list(events)
    passed = [e for e in events if isinstance(e.data, QcPassed)]
    paid = [e for e in events if isinstance(e.data, Paid)]
    for event in passed[:5] + paid[:3]:
        troubled.insert(events.index(event) + 2, event)  # the relay's at-least-once: the same event again
    for event in passed[5:9]:
        # A second, different qc-passed for one piece: the first one posted wins, the second is refused.
        second = Envelope.wrap(event.data.model_copy(update={"amount_idr": 1}), source=event.source,
                               time=event.time + timedelta(minutes=5))
        troubled.insert(troubled.index(event) + 1, second)
    for event in paid[3:6]:
        # A payout that ends twice: failed after it was paid.
        failed = Envelope.wrap(PayoutFailed(payout_id=event.data.payout_id, artisan_id=event.data.artisan_id,
                                            amount_idr=event.data.amount_idr, reason="returned"),
                               source=event.source, time=event.time)
        troubled.insert(troubled.index(event) + 3, failed)
    return troubled


async def test_apply_events_writes_what_apply_event_writes(scratch_database):
    events = _with_trouble(list(generate_history(1500, 12, seed=3)))
    sources = [projections.Source("production", n % 3, n) for n in range(len(events))]
    one_by_one, batched = await scratch_database(), await scratch_database()
    digests, refusals = {}, {}
    for url in (one_by_one, batched):
        conn = await asyncpg.connect(url)
        try:
            await projections.install_ledger(conn)
            refused: list[tuple[int, str, str]] = []
            if url == one_by_one:
                async with conn.transaction():
                    for n, (event, source) in enumerate(zip(events, sources, strict=True)):
                        try:
                            await projections.apply_event(conn, event, source=source)
                        except Reject as refusal:
                            refused.append((n, refusal.reason, refusal.detail))
            else:
                # Batches of 7: redeliveries and second events land both inside a batch and across batches.
                for start in range(0, len(events), 7):
                    async with conn.transaction():
                        outcome = await projections.apply_events(
                            conn, list(zip(events[start:start + 7], sources[start:start + 7], strict=True)))
                    assert not outcome.failed
                    refused += [(start + i, r.reason, r.detail) for i, r in outcome.rejected]
            digests[url] = (await projections.ledger_digest(conn)).digest
            rows = await conn.fetch("""SELECT transaction_id, kind, business_key, event_id, event_type, event_time,
                                              artisan_id, subject_id, amount_idr, source_topic, source_partition,
                                              source_offset FROM ledger_transactions ORDER BY transaction_id""")
            refusals[url] = (refused, [tuple(row) for row in rows])
        finally:
            await conn.close()
    assert digests[one_by_one] == digests[batched]
    assert refusals[one_by_one] == refusals[batched]  # the same refusals, word for word, and the same rows
    refused = refusals[batched][0]
    assert {reason for _, reason, _ in refused} == {"piece-already-posted", "payout-already-posted"}
    assert len(refused) == 4 + 3
    expected = domain.ledger_digest(domain.digest_rows(
        {tx.business_key: tx for tx in reversed([domain.transaction_for(e) for e in events])
         if tx is not None}.values()))
    assert digests[batched] == expected


async def test_the_database_refuses_a_transaction_that_is_not_a_transfer_and_any_edit_of_the_ledger(database_url):
    conn = await asyncpg.connect(database_url)
    try:
        await projections.install_ledger(conn)
        (woven, passed) = piece_events("res_g", 1, 9_000, at=MARCH)
        assert await projections.apply_event(conn, passed) is True
        assert await projections.apply_event(conn, passed) is False  # redelivered: nothing changes
        assert await projections.apply_event(conn, woven) is False  # moves no money
        posted = domain.transaction_for(passed).transaction_id
        # Its two postings, out of the collaborator's fees into her payable, summing to zero.
        assert sorted(tuple(row) for row in await conn.fetch(
            "SELECT account, amount_idr FROM ledger_postings WHERE transaction_id = $1", posted)) == [
            ("artisan:res_g:payable", 9_000), ("collaborator:col_1:fees", -9_000)]

        forge = """INSERT INTO ledger_transactions (transaction_id, kind, business_key, event_id, event_type,
                       event_time, artisan_id, subject_id, amount_idr, from_account, to_account)
                   VALUES ('earned:forged', 'earned', 'piece:forged', 'forged', 'qc-passed', now(), 'res_g',
                           'forged', $1, $2, 'artisan:res_g:payable')"""
        # Money moves between two accounts, and forwards: a transfer within one account, or of a
        # negative amount, is refused.
        with pytest.raises(asyncpg.CheckViolationError, match="ledger_transactions_between_two_accounts"):
            await conn.execute(forge, 1_000_000, "artisan:res_g:payable")
        with pytest.raises(asyncpg.CheckViolationError, match="amount_idr_check"):
            await conn.execute(forge, -1_000_000, "collaborator:col_1:fees")
        with pytest.raises(asyncpg.NotNullViolationError, match="to_account"):
            await conn.execute(forge.replace(", to_account)", ")").replace(", 'artisan:res_g:payable')", ")"),
                               5, "collaborator:col_1:fees")
        # Postings are the transfers' legs: there is no lone posting to add, edit or remove.
        with pytest.raises(asyncpg.PostgresError, match="cannot insert into view"):
            await conn.execute("INSERT INTO ledger_postings VALUES ($1, 'artisan:res_g:paid', 700)", posted)
        with pytest.raises(asyncpg.PostgresError, match="cannot update view"):
            await conn.execute("UPDATE ledger_postings SET amount_idr = amount_idr * 2")
        with pytest.raises(asyncpg.RestrictViolationError, match="append-only"):
            await conn.execute("UPDATE ledger_transactions SET amount_idr = amount_idr * 2")
        with pytest.raises(asyncpg.RestrictViolationError, match="append-only"):
            await conn.execute("DELETE FROM ledger_transactions")
        with pytest.raises(asyncpg.RestrictViolationError, match="append-only"):
            await conn.execute("TRUNCATE ledger_transactions")

        # A second, different qc-passed for the same piece is refused; the first stays.
        (_, duplicate) = piece_events("res_g", 1, 50_000, at=MARCH + timedelta(days=1))
        with pytest.raises(Reject) as refused:
            await projections.apply_event(conn, duplicate)
        assert refused.value.reason == "piece-already-posted"
        assert await projections.balances(conn) == {"artisan:res_g:payable": 9_000, "collaborator:col_1:fees": -9_000}
    finally:
        await conn.close()


#: The ledger as installed before a transaction was one row: postings in a table of their own.
POSTINGS_TABLE_DDL = (Path(__file__).parent / "ledger_layouts" / "postings_table.sql").read_text()
#: How that ledger posted one transaction: its row and its postings in one statement (its triggers
#: check the postings balance at the statement's end).
POSTINGS_TABLE_INSERT = """
WITH tx AS (
    INSERT INTO ledger_transactions (transaction_id, kind, business_key, event_id, event_type, event_time,
                                     artisan_id, subject_id, amount_idr)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING transaction_id
)
INSERT INTO ledger_postings (transaction_id, account, amount_idr)
SELECT tx.transaction_id, leg.account, leg.amount_idr
FROM tx, unnest($10::text[], $11::bigint[]) AS leg(account, amount_idr)
"""


async def post_the_old_way(conn: asyncpg.Connection, transactions: Iterable[domain.LedgerTransaction]) -> None:
    async with conn.transaction():
        for tx in transactions:
            await conn.execute(POSTINGS_TABLE_INSERT, tx.transaction_id, tx.kind.value, tx.business_key, tx.event_id,
                               tx.event_type, tx.event_time, tx.artisan_id, tx.subject_id, tx.amount_idr,
                               [p.account for p in tx.postings], [p.amount_idr for p in tx.postings])


@pytest.mark.parametrize("keys", ["C", "default collation"])
async def test_a_ledger_that_kept_its_postings_in_a_table_is_brought_over_with_the_same_digest(database_url, keys):
    """Ledgers installed before a transaction was one row (and, older still, before their keys were
    `COLLATE "C"`) are converted by installing again, as every start does: same postings, same digest,
    and posting goes on from where it was."""
    history = list(generate_history(400, 6, seed=5))
    # A piece that passed for 0 rupiah: its two postings are both 0, whichever account the amount left.
    history.append(piece_events("res_zero", 1, 0, at=MARCH)[1])
    conn = await asyncpg.connect(database_url)
    try:
        old_ddl = POSTINGS_TABLE_DDL if keys == "C" else re.sub(
            r"DO \$\$.*?END \$\$;", "", POSTINGS_TABLE_DDL.replace(' COLLATE "C"', ""), flags=re.S)
        await conn.execute(old_ddl)
        first = history[:300] + history[-1:]
        await post_the_old_way(conn, expected_ledger(first).values())
        old_postings = {tuple(row) for row in await conn.fetch("SELECT * FROM ledger_postings")}
        assert len(old_postings) == 2 * len(expected_ledger(first))

        await projections.install_ledger(conn)
        # As a service starting again: a new connection (one that prepared statements on the old
        # tables must prepare them again, which asyncpg refuses to do inside a transaction).
        await conn.close()
        conn = await asyncpg.connect(database_url)

        assert await conn.fetchval("SELECT relkind::text FROM pg_class WHERE oid = 'ledger_postings'::regclass") == "v"
        assert {tuple(row) for row in await conn.fetch("SELECT * FROM ledger_postings")} == old_postings
        transfers = {row["transaction_id"]: (row["from_account"], row["to_account"]) for row in await conn.fetch(
            "SELECT transaction_id, from_account, to_account FROM ledger_transactions")}
        assert transfers.keys() == expected_ledger(first).keys()
        for tx in expected_ledger(first).values():
            if tx.amount_idr:
                assert transfers[tx.transaction_id] == (tx.from_account, tx.to_account)
            else:
                assert set(transfers[tx.transaction_id]) == {tx.from_account, tx.to_account}
        assert (await projections.ledger_digest(conn)).digest == expected_digest(first)
        collations = await conn.fetch("""SELECT a.attname, c.collname FROM pg_attribute a
                                         JOIN pg_collation c ON c.oid = a.attcollation
                                         WHERE a.attrelid = 'ledger_transactions'::regclass AND a.attnum > 0
                                           AND a.attname IN ('transaction_id', 'business_key', 'event_id',
                                                             'artisan_id', 'subject_id', 'from_account',
                                                             'to_account')""")
        assert {row["collname"] for row in collations} == {"C"} and len(collations) == 7
        # The old checks are gone with their table; the ledger's own constraints hold on.
        assert not await conn.fetchval("SELECT count(*) FROM pg_proc WHERE proname IN "
                                       "('ledger_transaction_balances', 'ledger_postings_belong_and_balance')")
        with pytest.raises(asyncpg.RestrictViolationError, match="append-only"):
            await conn.execute("UPDATE ledger_transactions SET amount_idr = 0")
        # Posting goes on: a redelivery changes nothing, the rest posts.
        async with conn.transaction():
            outcome = await projections.apply_events(conn, [(e, None) for e in history[250:-1]])
        assert not outcome.rejected and not outcome.failed
        assert (await projections.ledger_digest(conn)).digest == expected_digest(history)
        await projections.install_ledger(conn)  # and the next start changes nothing
        assert (await projections.ledger_digest(conn)).digest == expected_digest(history)
    finally:
        await conn.close()


async def test_a_ledger_whose_postings_are_not_one_transfer_each_is_left_as_it_was(database_url):
    """The conversion takes nothing on trust: a transaction with three postings (balanced, but not a
    transfer between two accounts) stops it, and the ledger stays as it was for people to look at."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(POSTINGS_TABLE_DDL)
        (_, passed) = piece_events("res_odd", 1, 9_000, at=MARCH)
        await post_the_old_way(conn, [domain.transaction_for(passed)])
        odd = domain.transaction_for(piece_events("res_odd", 2, 6_000, at=MARCH)[1])
        await conn.execute(POSTINGS_TABLE_INSERT, odd.transaction_id, odd.kind.value, odd.business_key, odd.event_id,
                           odd.event_type, odd.event_time, odd.artisan_id, odd.subject_id, odd.amount_idr,
                           [odd.from_account, odd.to_account, "collaborator:col_2:fees"], [-3_000, 6_000, -3_000])
        before = {tuple(row) for row in await conn.fetch("SELECT * FROM ledger_postings")}

        with pytest.raises(asyncpg.CheckViolationError, match=f"{odd.transaction_id} is not one transfer"):
            await projections.install_ledger(conn)

        assert await conn.fetchval("SELECT relkind::text FROM pg_class WHERE oid = 'ledger_postings'::regclass") == "r"
        assert {tuple(row) for row in await conn.fetch("SELECT * FROM ledger_postings")} == before
        assert not await conn.fetchval("""SELECT count(*) FROM pg_attribute WHERE attname = 'from_account'
                                          AND attrelid = 'ledger_transactions'::regclass""")
    finally:
        await conn.close()


async def test_the_digest_reads_a_ledger_of_any_length_in_the_same_memory(database_url):
    """`ledger_digest` streams the ledger (an auditor's replay and `GET /ledger/digest` digest
    histories of any length): what it holds while reading must not grow with the ledger."""
    import tracemalloc

    history = list(generate_history(30_000, 300, seed=11))
    conn = await asyncpg.connect(database_url)

    async def digest_peak() -> tuple[projections.DigestResult, int]:
        tracemalloc.start()
        try:
            result = await projections.ledger_digest(conn)
            return result, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    try:
        await projections.install_ledger(conn)
        async with conn.transaction():
            await projections.apply_events(conn, [(e, None) for e in history[:1_500]])
        small, small_peak = await digest_peak()
        async with conn.transaction():
            await projections.apply_events(conn, [(e, None) for e in history[1_500:]])
        large, large_peak = await digest_peak()
        assert large.transactions > 15 * small.transactions  # a ledger fifteen times as long...
        assert large.digest == expected_digest(history)
        assert large.transactions == len(expected_ledger(history))
        assert large_peak < 1.5 * small_peak, (small_peak, large_peak)  # ...read in the same memory
    finally:
        await conn.close()


async def test_posting_probes_the_ledger_and_never_scans_it(database_url):
    """The ledger's checks look transactions up by key: were any of them to scan the ledger (as a
    join in a trigger once did, through the plan PL/pgSQL cached while the ledger was small),
    posting would slow down as the history grows, for the live consumer and every replay."""
    conn = await asyncpg.connect(database_url)

    async def sequential_scans() -> int:
        await conn.execute("SELECT pg_stat_force_next_flush()")
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        return await conn.fetchval("""SELECT sum(seq_scan) FROM pg_stat_user_tables
                                      WHERE relname = 'ledger_transactions'""")

    try:
        await projections.install_ledger(conn)
        history = list(generate_history(3_000, 30))
        for event in history[:2_000]:  # long enough for PL/pgSQL to settle on its cached plans
            await projections.apply_event(conn, event)
        before = await sequential_scans()
        for event in history[2_000:]:
            await projections.apply_event(conn, event)
        async with conn.transaction():
            outcome = await projections.apply_events(conn, [(e, None) for e in generate_history(600, 30, seed=9)])
        assert outcome.posted > 300 and not outcome.failed
        assert await sequential_scans() == before
    finally:
        await conn.close()


async def test_fuzzing_the_openapi_document_never_yields_a_server_error(payout, producer, kafka_settings):
    staff, tokens, url, db = payout
    await publish(producer, kafka_settings, piece_events("res_z", 1, 10_000, at=MARCH))
    await caught_up(db, kafka_settings)

    code, output = await fuzz_openapi(url, tokens.staff, max_examples=25)

    assert code == 0, output[-4000:]
    counts = re.search(r"(\d+) generated, (\d+) passed", output)
    assert counts and int(counts[1]) > 100 and counts[1] == counts[2], output[-2000:]
