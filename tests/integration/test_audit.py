"""`anyam replay` and `anyam verify` on the real broker and PostgreSQL, after a realistic history.

The history is the Nagrak programme (`anyam.demo`) driven through the three
services, served in this process on the session's broker and PostgreSQL:
residents trained, pieces woven, signed QC submissions published onto Kafka,
weekly payout runs with payments and one bounced transfer. It is built once
for the module; every test reads it, and the one that tampers with the live
ledger puts it back.

Expected figures come from three independent places: the live payout service
(HTTP), the events themselves (read with librdkafka and summed here), and the
replay under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import sys
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from anyam.audit.lanes import read_history_in_processes
from anyam.audit.replay import AuditError, ReplayResult, replay, sorted_order
from anyam.audit.verify import verify
from anyam.demo.runner import DemoResult, run_demo
from anyam.demo.scenario import Scenario, nagrak
from anyam.stack import ensure_topics
from anyam.stack import stackfile as keys
from anyam.stack.principals import write_credentials
from anyam.stack.stackfile import kafka_environment
from services.enrollment.app import EnrollmentSettings
from services.enrollment.app import create_app as enrollment_app
from services.payout import domain, projections
from services.payout.app import PayoutSettings
from services.payout.app import create_app as payout_app
from services.production.app import ProductionSettings
from services.production.app import create_app as production_app
from shared.contracts import ALL_TOPICS, EVENT_TOPICS, Envelope, Topic, base_topic, decode, encode, topic_name
from shared.contracts.acls import ADMIN
from shared.contracts.events import Paid, PayoutFailed, PayoutScheduled, QcPassed
from shared.contracts.provenance import signed_result
from shared.contracts.signing import generate_private_key
from shared.kafka import end_offsets, start_producer
from shared.settings import KafkaSettings
from shared.timeutil import WIB
from shared.web.access import collaborator_token
from tests.kafka_reader import read_topic
from tests.services import TRUST, Tokens, attested_headers, new_personal_data_key, new_tokens, serve, service_settings

REPO = Path(__file__).resolve().parents[2]
#: Small enough to build in seconds, large enough for every partition, a failed payout and a rate raise.
PARTICIPANTS = 8
SEED = 11
#: In the middle of the weaving weeks: some pieces have passed QC, most have not.
MID_WEAVING = datetime(2024, 3, 17, 12, 0, tzinfo=WIB)


@dataclass
class Programme:
    kafka: KafkaSettings
    tokens: Tokens
    payout_url: str
    payout_database_url: str
    scenario: Scenario
    production_url: str
    demo: DemoResult

    def live(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.payout_url, timeout=30,
                                 headers={"Authorization": f"Bearer {self.tokens.auditor}"})

    def cli_env(self) -> dict[str, str]:
        """What an auditor's shell holds: where the stack is (and which broker), the auditor's token, nothing else."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("ANYAM_")}
        return env | kafka_environment(self.kafka) | {  # the broker, and signing in to it
                      "ANYAM_TOPIC_PREFIX": self.kafka.topic_prefix, "ANYAM_PAYOUT_URL": self.payout_url,
                      "ANYAM_AUDITOR_TOKEN": self.tokens.auditor,
                      "ANYAM_TRUST_ANCHORS": TRUST.setting(), "COLUMNS": "200", "NO_COLOR": "1"}


@pytest.fixture(scope="module")
async def programme(broker, postgres, tmp_path_factory) -> AsyncIterator[Programme]:
    kafka = KafkaSettings(kafka_bootstrap=broker.bootstrap, topic_prefix=f"audit{uuid.uuid4().hex[:8]}-")
    # The demo signs its collaborator in as a principal of its own, which admin (the session's sign-in) creates.
    credentials = tmp_path_factory.mktemp("audit-credentials")
    write_credentials(credentials, ADMIN, kafka_environment(kafka))
    await ensure_topics(kafka, partitions=3)
    names = {service: f"t_audit_{service}_{uuid.uuid4().hex[:8]}" for service in ("enrollment", "production",
                                                                                  "payout")}
    databases = {service: await postgres.create_database(name) for service, name in names.items()}
    tokens = new_tokens()
    scenario = nagrak(SEED, participants=PARTICIPANTS)
    try:
        async with contextlib.AsyncExitStack() as services:
            urls = {
                "enrollment": await services.enter_async_context(serve(enrollment_app(EnrollmentSettings(
                    **service_settings(kafka, databases["enrollment"], tokens, "enrollment"),
                    personal_data_key=new_personal_data_key())))),
                "production": await services.enter_async_context(serve(production_app(ProductionSettings(
                    **service_settings(kafka, databases["production"], tokens, "production"))))),
                "payout": await services.enter_async_context(serve(payout_app(PayoutSettings(
                    **service_settings(kafka, databases["payout"], tokens, "payout"))))),
            }
            env = {**kafka_environment(kafka), "ANYAM_STAFF_TOKEN": tokens.staff,
                   keys.CREDENTIALS: str(credentials)}
            for service in urls:
                env[f"ANYAM_{service.upper()}_URL"] = urls[service]
                env[f"ANYAM_{service.upper()}_DATABASE_URL"] = databases[service]
            # run_demo returns once every relay published and every consumer applied everything.
            demo = await run_demo(env, scenario)
            yield Programme(kafka, tokens, urls["payout"], databases["payout"], scenario, urls["production"], demo)
    finally:
        with contextlib.suppress(Exception):
            conn = await asyncpg.connect(postgres.server_url)
            try:
                for name in names.values():
                    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await conn.close()
        with contextlib.suppress(Exception):
            admin = AIOKafkaAdminClient(**kafka.client_options())
            await admin.start()
            try:
                await admin.delete_topics([topic_name(t, kafka.topic_prefix) for t in ALL_TOPICS])
            finally:
                await admin.close()


@pytest.fixture
async def producer(kafka_settings):
    producer = await start_producer(kafka_settings)
    yield producer
    await producer.stop()




async def live_digest(programme: Programme, as_of: datetime | None = None, known_at: datetime | None = None) -> dict:
    params = {"as_of": as_of.isoformat()} if as_of else {}
    if known_at is not None:
        params["as_known_at"] = known_at.isoformat()
    async with programme.live() as live:
        response = await live.get("/ledger/digest", params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def live_balances(
    programme: Programme, as_of: datetime | None = None, known_at: datetime | None = None
) -> dict[str, int]:
    params = {"as_of": as_of.isoformat()} if as_of else {}
    if known_at is not None:
        params["as_known_at"] = known_at.isoformat()
    async with programme.live() as live:
        response = await live.get("/ledger/balances", params=params)
    assert response.status_code == 200, response.text
    return response.json()["accounts"]


async def history_events(programme: Programme, topic: Topic) -> list[Envelope]:
    """A topic's events, read with an independent client (librdkafka), not the replay's."""
    records = await read_topic(programme.kafka.bootstrap_servers, topic_name(topic, programme.kafka.topic_prefix),
                               timeout=60)
    return [decode(r.value, topic=topic) for r in records]


def balances_from_events(events: list[Envelope], as_of: datetime) -> dict[str, tuple[int, int, int, int]]:
    """Per artisan, (earned, payable, in transit, paid) as of `as_of`, summed from the events by hand.

    Events are deduplicated by id (the relay publishes at least once), as the ledger is.
    """
    money: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for event in {e.id: e for e in events}.values():
        if event.time > as_of:
            continue
        data = event.data
        match data:
            case QcPassed():
                money[data.artisan_id][0] += data.amount_idr
                money[data.artisan_id][1] += data.amount_idr
            case PayoutScheduled():
                money[data.artisan_id][1] -= data.amount_idr
                money[data.artisan_id][2] += data.amount_idr
            case Paid():
                money[data.artisan_id][2] -= data.amount_idr
                money[data.artisan_id][3] += data.amount_idr
            case PayoutFailed():
                money[data.artisan_id][2] -= data.amount_idr
                money[data.artisan_id][1] += data.amount_idr
    return {artisan: tuple(values) for artisan, values in money.items()}


def per_artisan(result: ReplayResult) -> dict[str, tuple[int, int, int, int]]:
    return {a.artisan_id: (a.earned_idr, a.payable_idr, a.in_transit_idr, a.paid_idr) for a in result.artisans}


async def anyam(programme: Programme, *args: str, cwd: Path, timeout: float = 120) -> tuple[int, str, str]:
    """Run the `anyam` command as an auditor would, without blocking this loop (the services run in it)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "anyam.cli", *args, cwd=cwd, env=programme.cli_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    return process.returncode, stdout.decode(), stderr.decode()


# --- replay -----------------------------------------------------------------------------------------


async def test_a_replay_after_a_realistic_history_gives_the_live_digest_and_balances(programme, scratch_database):
    result = await replay(programme.kafka, trust=TRUST, database_url=await scratch_database())

    live = await live_digest(programme)
    assert result.digest == live["digest"] == programme.demo.ledger_digest
    assert (result.transactions, result.postings) == (live["transactions"], live["postings"])
    assert result.accounts == await live_balances(programme)
    assert result.history.undecodable_count == 0 and result.history.refused_count == 0
    # The programme as the scenario made it: every passed piece earned, and by the last run all paid.
    passed = sum(w.passes for w in programme.scenario.weavings)
    assert result.history.by_type["qc-passed"] == passed
    assert sum(a.earned_idr for a in result.artisans) == sum(a.paid_idr for a in result.artisans) > 0


async def test_reading_the_partitions_in_reverse_or_shuffled_gives_the_same_digest(programme, scratch_database):
    # Forward by two connections in two processes (the default here), backward by one connection in this
    # process, shuffled by two connections side by side in this process.
    forward = await replay(programme.kafka, trust=TRUST, database_url=await scratch_database(), workers=2, processes=2)
    backward = await replay(programme.kafka, trust=TRUST, database_url=await scratch_database(), workers=1, processes=1,
                            partition_order=lambda parts: list(reversed(sorted_order(parts))))
    shuffled = await replay(programme.kafka, trust=TRUST, database_url=await scratch_database(), workers=2, processes=1,
                            partition_order=lambda parts: random.Random(3).sample(parts, len(parts)))

    assert backward.history.order == list(reversed(forward.history.order))
    assert shuffled.history.order not in (forward.history.order, backward.history.order)
    assert forward.digest == backward.digest == shuffled.digest
    assert forward.accounts == backward.accounts == shuffled.accounts
    # Read in two processes, it is read as in one: the same records, by type, posted once each.
    assert forward.history.lane_peak_rss_mb and not backward.history.lane_peak_rss_mb
    assert forward.history.to_json() | {"seconds": 0} == backward.history.to_json() | {
        "seconds": 0, "partitions": list(reversed(backward.history.to_json()["partitions"]))}


async def test_a_replay_as_of_mid_history_gives_the_balances_that_were_true_then(programme, scratch_database):
    events = [*await history_events(programme, Topic.PRODUCTION), *await history_events(programme, Topic.PAYOUT)]
    # Two cuts: in the middle of the weaving weeks, and between the first two payout runs, whose events
    # carry the moment they ran (the first run paid, the second not yet).
    runs = sorted({(e.time, e.data.run_id) for e in events if isinstance(e.data, PayoutScheduled)})
    second_run = min(t for t, run_id in runs if run_id != runs[0][1])
    between_runs = second_run - timedelta(microseconds=1)
    database_url = await scratch_database()
    for cut in (MID_WEAVING, between_runs):
        result = await replay(programme.kafka, trust=TRUST, as_of=cut, database_url=database_url)
        database_url = await scratch_database()

        expected = balances_from_events(events, cut)
        assert per_artisan(result) == expected
        assert result.accounts == await live_balances(programme, cut)
        assert result.digest == (await live_digest(programme, cut))["digest"]
        assert result.digest != programme.demo.ledger_digest  # the cut did cut
    for cut in (MID_WEAVING, between_runs):
        # The demo records its payouts at the programme's dates: by the middle of March the first
        # week was paid (its run on Monday 11 March), the rest not yet.
        earned, _, _, paid = (sum(v) for v in zip(*balances_from_events(events, cut).values(), strict=True))
        assert 0 < paid < earned


async def test_a_replay_as_known_at_a_moment_reads_only_what_the_topics_held_then(programme, scratch_database):
    records = [r for t in EVENT_TOPICS for r in await read_topic(
        programme.kafka.bootstrap_servers, topic_name(t, programme.kafka.topic_prefix), timeout=60)]
    # A moment in the middle of the programme's publishing, by the records' own stamps.
    stamps = sorted(r.timestamp_ms for r in records)
    moment_ms = stamps[len(stamps) // 2]
    moment = datetime.fromtimestamp(moment_ms / 1000, tz=WIB)
    if programme.kafka.on_tansu:
        with pytest.raises(AuditError, match="time index"):
            await replay(programme.kafka, trust=TRUST, known_at=moment, database_url=await scratch_database())
        return
    # Counted here with another client: per partition, the records appended by then.
    held: dict[tuple[str, int], int] = defaultdict(int)
    for r in records:
        held[(base_topic(r.topic, programme.kafka.topic_prefix).value, r.partition)] += r.timestamp_ms <= moment_ms

    cut = await replay(programme.kafka, trust=TRUST, known_at=moment, database_url=await scratch_database())
    full = await replay(programme.kafka, trust=TRUST, database_url=await scratch_database())
    report = await verify(programme.kafka, trust=TRUST, payout_url=programme.payout_url,
                          auditor_token=programme.tokens.auditor, known_at=moment,
                          database_url=await scratch_database())

    assert cut.history.ends == {key: held.get(key, 0) for key in cut.history.ends}
    assert cut.history.records == sum(held.values()) < len(records)  # only what was needed was read
    assert cut.digest != full.digest and full.history.records == len(records)
    # What the live ledger knew then (cut by the same records' times) is what the topics held then.
    assert (await live_digest(programme, known_at=moment))["digest"] == cut.digest
    assert await live_balances(programme, known_at=moment) == cut.accounts
    artisan = next(account.split(":")[1] for account in cut.accounts if account.startswith("artisan:"))
    async with programme.live() as live:
        statement = (await live.get(f"/artisans/{artisan}/statement",
                                    params={"as_known_at": moment.isoformat()})).json()
    assert statement["balances"]["payable_idr"] == cut.accounts.get(f"artisan:{artisan}:payable", 0)
    assert statement["balances"]["paid_idr"] == cut.accounts.get(f"artisan:{artisan}:paid", 0)
    assert report.ok, [v.message for r in report.broken for v in r.violations]


async def test_a_replay_leaves_every_topics_end_offsets_and_consumer_groups_as_they_were(programme, scratch_database):
    names = [topic_name(t, programme.kafka.topic_prefix) for t in ALL_TOPICS]
    admin = AIOKafkaAdminClient(**programme.kafka.client_options())
    await admin.start()
    try:
        before, groups_before = await end_offsets(programme.kafka, names), await admin.list_consumer_groups()
        result = await replay(programme.kafka, trust=TRUST, database_url=await scratch_database())
        after, groups_after = await end_offsets(programme.kafka, names), await admin.list_consumer_groups()
    finally:
        await admin.close()

    assert result.history.records == sum(end for tp, end in before.items()
                                         if tp.topic != topic_name(Topic.DEAD_LETTERS, programme.kafka.topic_prefix))
    assert after == before  # nothing published, not even a dead letter
    assert sorted(groups_after) == sorted(groups_before)  # no group joined, no offsets committed


async def test_anyam_replay_as_of_prints_the_cut_ledger_as_json(programme, tmp_path):
    code, stdout, stderr = await anyam(programme, "replay", "--as-of", MID_WEAVING.isoformat(), "--json",
                                       cwd=tmp_path)

    assert code == 0, stderr[-3000:]
    document = json.loads(stdout)
    assert document["as_of"] == MID_WEAVING.isoformat()
    assert document["digest"]["digest"] == (await live_digest(programme, MID_WEAVING))["digest"]
    # By mid-March the first week's run had paid (the demo pays at the programme's dates).
    events = [*await history_events(programme, Topic.PRODUCTION), *await history_events(programme, Topic.PAYOUT)]
    assert {a["artisan_id"]: (a["earned_idr"], a["payable_idr"], a["in_transit_idr"], a["paid_idr"])
            for a in document["artisans"]} == balances_from_events(events, MID_WEAVING)
    assert document["history"]["undecodable"]["count"] == 0


@pytest.mark.parametrize("processes", [1, 2], ids=["in-this-process", "in-two-processes"])
async def test_records_that_are_not_events_are_counted_and_reported_never_fatal(
    kafka_settings, producer, scratch_database, processes
):
    passed = Envelope.wrap(signed_result(generate_private_key(), piece_id="pc_1", artisan_id="res_1",
                                         collaborator_id="col_1", amount_idr=15_000, inspected_at=MID_WEAVING),
                           source="/services/production", time=MID_WEAVING)
    record = encode(passed)
    production, submissions = (topic_name(t, kafka_settings.topic_prefix) for t in (Topic.PRODUCTION,
                                                                                     Topic.QC_SUBMISSIONS))
    await producer.send_and_wait(production, record.value, key=b"res_1",
                                 headers=attested_headers("production", record.value))
    await producer.send_and_wait(production, b"{not json", key=b"res_1")
    await producer.send_and_wait(production, None, key=b"res_1")  # a tombstone
    await producer.send_and_wait(submissions, record.value, key=b"pc_1")  # a qc-passed forged onto submissions

    result = await replay(kafka_settings, trust=TRUST, database_url=await scratch_database(), workers=2,
                          processes=processes)

    assert result.history.records == 4 and result.history.events == 1
    # The submissions' partition and the production one are two shares: one read by a child process.
    assert len(result.history.lane_peak_rss_mb) == processes - 1
    assert sorted(u.reason for u in result.history.undecodable) == ["malformed", "malformed", "unexpected-type"]
    assert result.history.undecodable_count == 3
    assert result.accounts == {"artisan:res_1:payable": 15_000, "collaborator:col_1:fees": -15_000}
    assert result.digest == domain.ledger_digest(domain.digest_rows([domain.transaction_for(passed)]))


async def test_an_empty_history_replayed_in_two_processes_is_an_empty_ledger(kafka_settings, scratch_database):
    result = await replay(kafka_settings, trust=TRUST, database_url=await scratch_database(), workers=2, processes=2)

    assert result.history.records == 0 and result.transactions == 0 and result.accounts == {}
    assert result.history.lane_peak_rss_mb == []  # nothing to deal: no child process started


async def test_a_lane_that_fails_in_a_child_process_fails_the_replay_with_its_own_words(
    kafka_settings, scratch_database
):
    url = await scratch_database()
    conn = await asyncpg.connect(url)
    try:
        await projections.install_ledger(conn)
    finally:
        await conn.close()
    production = topic_name(Topic.PRODUCTION, kafka_settings.topic_prefix)
    # Offsets the empty partitions never reach: both shares (this process's and the child's) stall.
    beyond = {TopicPartition(production, 0): 5, TopicPartition(production, 1): 3}

    with pytest.raises(AuditError, match="stopped answering"):
        await read_history_in_processes(url, kafka_settings, trust=TRUST, topics=[Topic.PRODUCTION], stop_at=beyond,
                                        idle_timeout=1.0, processes=2, workers=2)


async def test_a_replay_refuses_to_write_into_a_database_that_holds_a_ledger(programme):
    with pytest.raises(AuditError, match="already holds a ledger"):
        await replay(programme.kafka, trust=TRUST, database_url=programme.payout_database_url)

    assert (await live_digest(programme))["digest"] == programme.demo.ledger_digest


# --- verify -----------------------------------------------------------------------------------------


async def test_verify_with_a_wrong_token_stops_before_replaying(programme, scratch_database):
    with pytest.raises(AuditError, match="refused the auditor token"):
        await verify(programme.kafka, trust=TRUST, payout_url=programme.payout_url, auditor_token="not-the-token",
                     database_url=await scratch_database())
    collaborator = collaborator_token(programme.tokens.secret, "col_1")  # a real token, of a role that may not read
    with pytest.raises(AuditError, match=r"refused the auditor token \(HTTP 403\)"):
        await verify(programme.kafka, trust=TRUST, payout_url=programme.payout_url, auditor_token=collaborator,
                     database_url=await scratch_database())


async def test_anyam_verify_on_an_untouched_programme_verifies_and_exits_zero(programme, tmp_path):
    # No --database-url: the replay runs in an embedded PostgreSQL of its own, removed afterwards.
    code, stdout, stderr = await anyam(programme, "verify", "--json-report", str(tmp_path / "report.json"),
                                       cwd=tmp_path)

    assert code == 0, stdout[-3000:] + stderr[-3000:]
    assert "Verified over the whole history" in stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["verified"] is True and report["broken_invariants"] == []
    assert {r["name"] for r in report["invariants"]} == {
        "live-matches-replay", "ledger-events-in-history", "transactions-balance", "piece-earned-once",
        "earned-at-piece-rate", "paid-within-earned", "qc-signature-verifies", "payout-follows-schedule",
        "history-attested"}
    assert report["replayed_ledger"]["digest"] == report["live_ledger"]["digest"] == programme.demo.ledger_digest
    assert not list(tmp_path.glob("**/pgdata"))  # nothing of the scratch database is left behind


async def test_verify_as_of_a_moment_checks_the_ledger_of_that_moment(programme, scratch_database):
    report = await verify(programme.kafka, trust=TRUST, payout_url=programme.payout_url,
                          auditor_token=programme.tokens.auditor, as_of=MID_WEAVING,
                          database_url=await scratch_database())

    assert report.ok, [v.message for r in report.broken for v in r.violations]
    assert report.replayed.digest == (await live_digest(programme, MID_WEAVING))["digest"]
    assert report.replayed.digest != programme.demo.ledger_digest


@contextlib.asynccontextmanager
async def tampered(programme: Programme) -> AsyncIterator[dict[str, str]]:
    """Edit one transaction's amount, delete one payment and forge one earning in the live payout
    database, as a tamperer with database access would (triggers off); everything is put back on exit."""
    conn = await asyncpg.connect(programme.payout_database_url)
    try:
        # The ledger's triggers refuse edits; a superuser can switch them off.
        await conn.execute("SET session_replication_role = replica")
        earned = await conn.fetchrow("""SELECT transaction_id, event_id, artisan_id FROM ledger_transactions
                                        WHERE kind = 'earned' ORDER BY transaction_id LIMIT 1""")
        deleted = await conn.fetchrow("""SELECT * FROM ledger_transactions WHERE kind = 'paid'
                                         ORDER BY transaction_id LIMIT 1""")
        forged_event = str(uuid.uuid4())
        forged = {"transaction_id": f"earned:{forged_event}", "event_id": forged_event}
        async with conn.transaction():
            await conn.execute("UPDATE ledger_transactions SET amount_idr = amount_idr + 50000 "
                               "WHERE transaction_id = $1", earned["transaction_id"])
            await conn.execute("DELETE FROM ledger_transactions WHERE transaction_id = $1", deleted["transaction_id"])
            await conn.execute(
                """INSERT INTO ledger_transactions (transaction_id, kind, business_key, event_id, event_type,
                       event_time, artisan_id, subject_id, amount_idr, from_account, to_account)
                   VALUES ($1, 'earned', 'piece:pc_forged', $2, 'qc-passed', $3, $4, 'pc_forged', 75000,
                           'collaborator:col_forged:fees', $5)""",
                forged["transaction_id"], forged_event, datetime(2024, 3, 20, 10, 0, tzinfo=WIB),
                earned["artisan_id"], domain.payable(earned["artisan_id"]))
        yield {"edited": earned["transaction_id"], "edited_event": earned["event_id"],
               "deleted": deleted["transaction_id"], "deleted_event": deleted["event_id"],
               "forged": forged["transaction_id"], "forged_event": forged_event}
    finally:
        async with conn.transaction():
            with contextlib.suppress(NameError, TypeError):
                await conn.execute("DELETE FROM ledger_transactions WHERE transaction_id = $1",
                                   forged["transaction_id"])
                await conn.execute("UPDATE ledger_transactions SET amount_idr = amount_idr - 50000 "
                                   "WHERE transaction_id = $1", earned["transaction_id"])
                columns = list(deleted.keys())
                await conn.execute(
                    f"INSERT INTO ledger_transactions ({', '.join(columns)}) "
                    f"VALUES ({', '.join(f'${i}' for i in range(1, len(columns) + 1))})", *deleted.values())
        await conn.close()


async def test_a_ledger_edited_in_the_database_fails_verify_which_names_each_row(programme, scratch_database, tmp_path):
    async with tampered(programme) as tamper:
        code, stdout, stderr = await anyam(programme, "verify", "--database-url", await scratch_database(),
                                           "--json-report", str(tmp_path / "report.json"), cwd=tmp_path)

    assert code == 1, stdout[-3000:] + stderr[-3000:]
    assert "NOT verified" in stdout
    for name in ("edited", "deleted", "forged"):
        assert tamper[name] in stdout
    for name in ("edited_event", "deleted_event", "forged_event"):
        assert tamper[name] in stdout

    report = json.loads((tmp_path / "report.json").read_text())
    assert report["verified"] is False
    # Each transaction is one transfer row, so no edit leaves the live ledger unbalanced (the
    # `transactions-balance` check of a live ledger that does not sum to zero: unit tests).
    assert set(report["broken_invariants"]) == {"live-matches-replay", "ledger-events-in-history"}
    violations = {(v["kind"], v.get("transaction_id")): v for r in report["invariants"] for v in r["violations"]}
    assert violations[("amount-differs", tamper["edited"])]["event_ids"] == [tamper["edited_event"]]
    assert violations[("missing-in-live", tamper["deleted"])]["event_ids"] == [tamper["deleted_event"]]
    assert violations[("extra-in-live", tamper["forged"])]["event_ids"] == [tamper["forged_event"]]
    assert violations[("event-not-in-history", tamper["forged"])]["event_ids"] == [tamper["forged_event"]]
    assert ("digest-differs", None) in violations

    # Put back, the ledger verifies again: the report was about the tampering and nothing else.
    assert (await live_digest(programme))["digest"] == programme.demo.ledger_digest
