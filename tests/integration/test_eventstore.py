"""The event store as outbox, on real PostgreSQL and the real broker.

Each test names the trap of ARCHITECTURE.md it guards against.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict

import asyncpg
import pytest

from shared.contracts import Envelope, Topic, service_source, topic_name
from shared.contracts.events import Enrolled, PieceWoven
from shared.db import create_pool
from shared.eventstore import (
    NO_STREAM,
    EventStore,
    OutboxRelay,
    PostgresUnitOfWork,
    install,
    wait_until_published,
)
from shared.eventstore.schema import APPEND_LOCK_KEY, RELAY_LOCK_KEY
from shared.kafka import start_producer
from shared.timeutil import wib_now
from tests.kafka_reader import read_topic, wait_for_records
from tests.waiting import until


def enrolled(resident: str, n: int = 0) -> Envelope:
    return Envelope.wrap(
        Enrolled(resident_id=resident, cohort_id=f"coh_{n}", enrolled_at=wib_now()),
        source=service_source("enrollment"),
    )


def woven(artisan: str, n: int) -> Envelope:
    return Envelope.wrap(
        PieceWoven(piece_id=f"pc_{artisan}_{n}", artisan_id=artisan, collaborator_id="col_1", product="piring",
                   rate_idr=15_000, woven_at=wib_now()),
        source=service_source("production"),
    )


@pytest.fixture
async def pool(database_url):
    pool = await create_pool(database_url, max_size=10)  # the services' pool, which resets nothing on release
    await install(pool)
    yield pool
    await pool.close()


@pytest.fixture
async def producer(kafka_settings):
    producer = await start_producer(kafka_settings, request_timeout_ms=60_000)
    yield producer
    await producer.stop()


@pytest.fixture
async def relay(pool, producer, kafka_settings):
    relay = OutboxRelay(pool, producer, kafka_settings, idle_wait_seconds=0.2)
    task = asyncio.create_task(relay.run())
    yield relay
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def first_occurrence_order(records) -> dict[str, list[int]]:
    """Per key, the data versions in the order they first appear on the topic (duplicates allowed)."""
    seen: set[str] = set()
    order: dict[str, list[int]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        event = json.loads(record.value)
        if event["id"] in seen:
            continue
        seen.add(event["id"])
        order[record.key.decode()].append(int(event["data"]["piece_id"].rsplit("_", 1)[1]))
    return order


async def test_a_units_appends_take_positions_in_the_order_of_their_streams_first_appends(pool):
    """A unit writes its appends in one statement: each stream's versions follow on, and positions (the
    order the relay publishes in) follow the streams in the order the unit first appended to them."""
    store = EventStore(pool)
    await store.append("res_m1", NO_STREAM, [woven("res_m1", 0)])
    first, second, third = woven("res_m1", 1), woven("res_m2", 0), woven("res_m1", 2)
    async with store.unit() as uow:
        uow.append("res_m1", 1, [first])
        uow.append("res_m2", NO_STREAM, [second])
        uow.append("res_m1", 2, [third])

    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT stream_id, version, event_id FROM event_store WHERE stream_id LIKE 'res_m%' "
                                "ORDER BY position")
    assert [(r["stream_id"], r["version"], r["event_id"]) for r in rows][1:] == [
        ("res_m1", 2, first.id), ("res_m1", 3, third.id), ("res_m2", 1, second.id)]


async def holds_the_append_lock(conn: asyncpg.Connection, observer: asyncpg.Connection) -> bool:
    return await observer.fetchval(
        # A one-key advisory lock shows as its high and low 32 bits, with objsubid 1.
        """SELECT count(*) > 0 FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = $1
           AND classid = $2::bigint >> 32 AND objid = $2::bigint & x'FFFFFFFF'::bigint AND objsubid = 1""",
        conn.get_server_pid(), APPEND_LOCK_KEY)


async def test_a_units_appends_take_the_append_lock_only_when_flushed(pool):
    """A unit's appends wait for the end of its transaction: until then other writers append freely."""
    store = EventStore(pool)
    async with pool.acquire() as conn, pool.acquire() as observer:
        async with conn.transaction():
            uow = PostgresUnitOfWork(conn)
            assert uow.append("res_h", NO_STREAM, [enrolled("res_h")]) == 1
            assert not await holds_the_append_lock(conn, observer)
            assert await store.append("res_other", NO_STREAM, [enrolled("res_other")]) == 1  # not kept waiting
            assert (await store.load("res_h")).version == NO_STREAM  # nothing written yet
            await uow.flush()
            assert await holds_the_append_lock(conn, observer)
        assert not await holds_the_append_lock(conn, observer)
    assert (await store.load("res_h")).version == 1


async def test_a_unit_appends_only_inside_its_transaction(pool):
    async with pool.acquire() as conn:
        with pytest.raises(RuntimeError, match="inside its transaction"):
            PostgresUnitOfWork(conn).append("res_t", NO_STREAM, [enrolled("res_t")])
        with pytest.raises(RuntimeError, match="has none"):
            await PostgresUnitOfWork(conn).load("res_t", lock=True)


async def test_history_cannot_be_edited_or_deleted_in_the_database(pool):
    store = EventStore(pool)
    await store.append("res_c", NO_STREAM, [enrolled("res_c")])
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.PostgresError, match="append-only"):
            await conn.execute("UPDATE event_store SET record_key = 'someone-else'")
        with pytest.raises(asyncpg.PostgresError, match="append-only"):
            await conn.execute("DELETE FROM event_store")


async def test_commit_order_gap_an_open_append_is_not_skipped_by_a_later_commit(pool, relay, kafka_settings, broker):
    """Trap 1: a transaction holding position N commits after one that took N+1 -- nothing may be skipped."""
    store = EventStore(pool)
    await store.append("res_d", NO_STREAM, [woven("res_d", 1)])
    await wait_until_published(pool, timeout=30)

    slow = await pool.acquire()
    open_tx = slow.transaction()
    await open_tx.start()
    uow = PostgresUnitOfWork(slow)
    uow.append("res_d", 1, [woven("res_d", 2)])
    await uow.flush()  # holds its position, uncommitted

    later = asyncio.create_task(store.append("res_e", NO_STREAM, [woven("res_e", 1)]))
    # The later append cannot take a position ahead of the open one: it waits for it.
    done, _ = await asyncio.wait({later}, timeout=1.0)
    assert not done, "a later append committed while an earlier one held its position open"
    assert await relay.checkpoint() == 1

    await open_tx.commit()
    await pool.release(slow)
    await later
    await wait_until_published(pool, timeout=30)

    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT stream_id, version, position FROM event_store ORDER BY position")
    assert [(r["stream_id"], r["version"]) for r in rows] == [("res_d", 1), ("res_d", 2), ("res_e", 1)]
    records = await read_topic(broker.bootstrap, topic_name(Topic.PRODUCTION, kafka_settings.topic_prefix))
    assert first_occurrence_order(records) == {"res_d": [1, 2], "res_e": [1]}


async def test_broker_outage_every_appended_event_reaches_the_topic_in_per_stream_order(
    pool, relay, kafka_settings, broker
):
    """1,000 events appended while the broker is frozen all arrive, in order per stream, once it answers."""
    store = EventStore(pool)
    streams = [f"res_{i:02d}" for i in range(50)]
    appended: dict[str, str] = {}

    with broker.frozen():
        for version in range(1, 21):
            batch = [(stream, woven(stream, version)) for stream in streams]
            for stream, event in batch:
                await store.append(stream, version - 1, [event])
                appended[event.id] = stream
        assert len(appended) == 1000

    topic = topic_name(Topic.PRODUCTION, kafka_settings.topic_prefix)
    records = await wait_for_records(
        broker.bootstrap, topic, lambda rs: appended.keys() <= {json.loads(r.value)["id"] for r in rs}, timeout=120
    )

    order = first_occurrence_order(records)
    assert set(order) == set(streams)
    assert all(versions == list(range(1, 21)) for versions in order.values())
    for record in records:
        assert record.key.decode() == appended[json.loads(record.value)["id"]]


async def relay_lock_is_free(database_url: str) -> bool:
    """Whether another session could take the relay's lock now (it lets go at once if it could)."""
    conn = await asyncpg.connect(database_url)
    try:
        if taken := await conn.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_LOCK_KEY):
            await conn.execute("SELECT pg_advisory_unlock($1)", RELAY_LOCK_KEY)
        return taken
    finally:
        await conn.close()


async def test_a_relay_that_stops_leaves_no_pooled_connection_holding_its_lock(
    pool, producer, kafka_settings, database_url
):
    """Pooled connections are not reset on release (a round trip saved on every command), so the
    relay's session lock and LISTEN must leave with their connection however leadership ends;
    otherwise an idle pooled connection would keep the lock and no relay could ever lead again."""
    async def held() -> bool:
        return not await relay_lock_is_free(database_url)

    first = asyncio.create_task(OutboxRelay(pool, producer, kafka_settings, idle_wait_seconds=0.2).run())
    await until(held)
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)

    await until(lambda: relay_lock_is_free(database_url))
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == 0

    # A relay started again in the same process, on the same pool, leads and publishes.
    again = asyncio.create_task(OutboxRelay(pool, producer, kafka_settings, idle_wait_seconds=0.2).run())
    try:
        await EventStore(pool).append("res_after_stop", NO_STREAM, [woven("res_after_stop", 1)])
        await wait_until_published(pool, timeout=60)
    finally:
        again.cancel()
        await asyncio.gather(again, return_exceptions=True)
