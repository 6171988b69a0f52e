"""Transactional consumers on the real broker and PostgreSQL: exactly-once effects, dead letters."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import pytest
from aiokafka import ConsumerRecord

from shared.contracts import Envelope, Topic, encode, topic_name
from shared.contracts.events import PieceWoven
from shared.eventstore import (
    BatchHandler,
    DeadLetter,
    DeadLetterPublisher,
    EventStore,
    OffsetBeyondEnd,
    Reject,
    TransactionalConsumer,
    UnitOfWork,
    install,
    wait_until_caught_up,
)
from shared.kafka import start_producer
from shared.timeutil import wib_now
from tests.kafka_reader import wait_for_records

PROJECTION = "test-projection"


def projection(kafka_settings) -> str:
    """This test's consumer name, and so its consumer group: its own, like its topics. Sharing one
    group across tests let a test's consumer wait on partitions the broker still kept assigned to
    an earlier test's members (tansu, under load: two of three partitions never consumed)."""
    return f"{PROJECTION}-{kafka_settings.topic_prefix.rstrip('-')}"


def woven(artisan: str, n: int) -> Envelope:
    return Envelope.wrap(
        PieceWoven(piece_id=f"pc_{artisan}_{n}", artisan_id=artisan, collaborator_id="col_1", product="tas",
                   rate_idr=1_000 + n, woven_at=wib_now()),
        source="/services/production",
    )


@pytest.fixture
async def pool(database_url):
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=10)
    await install(pool)
    async with pool.acquire() as conn:
        # Deliberately no unique constraint: a doubled effect must show up as a second row.
        await conn.execute("CREATE TABLE applied (event_id text NOT NULL, artisan_id text, rate_idr int)")
    yield pool
    await pool.close()


@pytest.fixture
async def producer(kafka_settings):
    producer = await start_producer(kafka_settings)
    yield producer
    await producer.stop()


async def project_piece(uow: UnitOfWork, event: Envelope, record: ConsumerRecord) -> None:
    await uow.connection.execute(
        "INSERT INTO applied (event_id, artisan_id, rate_idr) VALUES ($1, $2, $3)",
        event.id, event.data.artisan_id, event.data.rate_idr,
    )


async def project_pieces(uow: UnitOfWork, items) -> list[tuple[int, Reject]]:
    await uow.connection.executemany("INSERT INTO applied (event_id, artisan_id, rate_idr) VALUES ($1, $2, $3)",
                                     [(event.id, event.data.artisan_id, event.data.rate_idr) for event, _ in items])
    return []


def consumer_for(pool, kafka_settings, producer, handler=project_piece, name=None, **options):
    name = name or projection(kafka_settings)
    return TransactionalConsumer(
        name=name, topics=[Topic.PRODUCTION], pool=pool, kafka=kafka_settings, handler=handler,
        dead_letters=DeadLetterPublisher(producer, topic_prefix=kafka_settings.topic_prefix, consumer=name),
        retry_backoff_seconds=0.01, **options,
    )


async def publish(producer, kafka_settings, events, *, times: int = 1) -> None:
    topic = topic_name(Topic.PRODUCTION, kafka_settings.topic_prefix)
    for event in events:
        record = encode(event)
        for _ in range(times):
            await producer.send(topic, record.value, key=record.key, headers=list(record.headers))
    await producer.flush()


async def publish_raw(producer, kafka_settings, value: bytes, key: bytes = b"res_x") -> None:
    await producer.send_and_wait(topic_name(Topic.PRODUCTION, kafka_settings.topic_prefix), value, key=key)


async def applied_rows(pool) -> list[str]:
    async with pool.acquire() as conn:
        return [r["event_id"] for r in await conn.fetch("SELECT event_id FROM applied ORDER BY event_id")]


async def run_until_caught_up(consumer, pool, kafka_settings, timeout=60.0):
    task = asyncio.create_task(consumer.run())
    try:
        await wait_until_caught_up(pool, consumer.name, kafka_settings, [Topic.PRODUCTION], timeout=timeout)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def dead_letters(broker, kafka_settings, count: int) -> list[DeadLetter]:
    records = await wait_for_records(
        broker.bootstrap, topic_name(Topic.DEAD_LETTERS, kafka_settings.topic_prefix), lambda rs: len(rs) >= count
    )
    return [DeadLetter.from_record(r.key, r.value, r.headers) for r in records]


async def test_every_event_delivered_twice_is_applied_once(pool, producer, kafka_settings):
    events = [woven(f"res_{i % 7}", i) for i in range(200)]
    await publish(producer, kafka_settings, events, times=2)

    await run_until_caught_up(consumer_for(pool, kafka_settings, producer), pool, kafka_settings)

    assert await applied_rows(pool) == sorted(e.id for e in events)


async def test_a_consumer_cancelled_in_the_middle_of_a_batch_and_restarted_applies_each_event_once(
    pool, producer, kafka_settings
):
    events = [woven(f"res_{i % 5}", i) for i in range(300)]
    await publish(producer, kafka_settings, events)
    handled = 0
    halfway = asyncio.Event()
    never = asyncio.Event()

    async def stall_halfway(uow, event, record):
        nonlocal handled
        await project_piece(uow, event, record)
        handled += 1
        if handled == 40:
            halfway.set()
            await never.wait()  # cancelled here, mid-batch, with 40 rows written but not committed

    first = asyncio.create_task(consumer_for(pool, kafka_settings, producer, stall_halfway, max_batch=100).run())
    await asyncio.wait_for(halfway.wait(), 30)
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)

    await run_until_caught_up(consumer_for(pool, kafka_settings, producer), pool, kafka_settings)

    assert await applied_rows(pool) == sorted(e.id for e in events)


async def test_two_instances_in_one_group_while_partitions_move_apply_each_event_once(pool, producer, kafka_settings):
    """Trap 3: a rebalance mid-stream must neither double nor drop an effect."""
    events = [woven(f"res_{i % 11}", i) for i in range(600)]

    async def slow_projection(uow, event, record):
        await project_piece(uow, event, record)
        await asyncio.sleep(0.002)  # keep batches in flight while the group rebalances

    first = asyncio.create_task(consumer_for(pool, kafka_settings, producer, slow_projection, max_batch=20).run())
    await publish(producer, kafka_settings, events[:300])
    second = asyncio.create_task(consumer_for(pool, kafka_settings, producer, slow_projection, max_batch=20).run())
    await publish(producer, kafka_settings, events[300:])
    try:
        await wait_until_caught_up(pool, projection(kafka_settings), kafka_settings, [Topic.PRODUCTION], timeout=120)
    finally:
        for task in (first, second):
            task.cancel()
        await asyncio.gather(first, second, return_exceptions=True)

    assert await applied_rows(pool) == sorted(e.id for e in events)


async def test_poison_records_are_dead_lettered_with_their_reason_and_the_consumer_carries_on(
    pool, producer, kafka_settings, broker
):
    good_before, good_after = woven("res_1", 1), woven("res_1", 2)
    wrong_type = json.loads(encode(woven("res_1", 3)).value) | {"data": {"piece_id": "pc"}}
    await publish(producer, kafka_settings, [good_before])
    await publish_raw(producer, kafka_settings, b"\x00 not json")
    await publish_raw(producer, kafka_settings, json.dumps(wrong_type).encode())
    await publish_raw(producer, kafka_settings, json.dumps({"specversion": "1.0", "type": "x"}).encode())
    await publish(producer, kafka_settings, [good_after])

    await run_until_caught_up(consumer_for(pool, kafka_settings, producer), pool, kafka_settings)

    assert await applied_rows(pool) == sorted([good_before.id, good_after.id])
    letters = await dead_letters(broker, kafka_settings, 3)
    assert sorted(letter.reason for letter in letters) == ["malformed", "schema-invalid", "unknown-type"]
    malformed = next(letter for letter in letters if letter.reason == "malformed")
    assert malformed.value == b"\x00 not json"
    assert malformed.key == b"res_x"
    assert malformed.source_topic == topic_name(Topic.PRODUCTION, kafka_settings.topic_prefix)
    assert malformed.consumer == projection(kafka_settings)
    assert next(letter for letter in letters if letter.reason == "schema-invalid").detail.startswith(
        "`data.artisan_id` is missing"
    )


@pytest.mark.parametrize("batched", [False, True], ids=["per-event", "batch-undone-then-per-event"])
async def test_a_handler_that_keeps_failing_is_retried_a_bounded_number_of_times_then_dead_lettered(
    pool, producer, kafka_settings, broker, batched
):
    """Trap 2: a failing record is neither passed over silently nor retried forever.

    Batched, the failing batch is undone and applied event by event: the same retries, the same dead letter.
    """
    poison, healthy = woven("res_p", 1), woven("res_h", 2)
    attempts = 0

    async def batch_fails_with_poison(uow, items):
        await project_pieces(uow, items)  # written, then undone with the failure
        if any(event.id == poison.id for event, _ in items):
            raise ValueError("cannot project this batch")
        return []

    async def fails_on_poison(uow, event, record):
        nonlocal attempts
        await project_piece(uow, event, record)  # written, then rolled back with the failure
        if event.id == poison.id:
            attempts += 1
            raise ValueError("cannot project this one")

    await publish(producer, kafka_settings, [poison, healthy])
    handler = BatchHandler(apply_batch=batch_fails_with_poison, each=fails_on_poison) if batched else fails_on_poison
    await run_until_caught_up(
        consumer_for(pool, kafka_settings, producer, handler, max_attempts=3), pool, kafka_settings
    )

    assert attempts == 3
    assert await applied_rows(pool) == [healthy.id]
    (letter,) = await dead_letters(broker, kafka_settings, 1)
    assert letter.reason == "handler-error"
    assert json.loads(letter.value)["id"] == poison.id


async def test_a_rejected_record_leaves_nothing_behind_and_carries_the_handlers_reason(
    pool, producer, kafka_settings, broker
):
    refused, accepted = woven("res_r", 1), woven("res_r", 2)

    async def refuse_one(uow, event, record):
        await project_piece(uow, event, record)
        if event.id == refused.id:
            raise Reject("bad-signature", "the signature does not verify against the collaborator's key")

    await publish(producer, kafka_settings, [refused, accepted])
    await run_until_caught_up(consumer_for(pool, kafka_settings, producer, refuse_one), pool, kafka_settings)

    assert await applied_rows(pool) == [accepted.id]
    (letter,) = await dead_letters(broker, kafka_settings, 1)
    assert (letter.reason, letter.source_offset) == ("bad-signature", 0)


async def test_a_handlers_appends_commit_with_the_offsets_once_and_a_refused_records_appends_are_undone(
    pool, producer, kafka_settings, broker
):
    """The batch is one unit of work: what a handler appends to the event store commits with its rows and the
    offsets, exactly once however often the record is delivered; a refused record's appends go with it,
    and the appends of the records around it stay."""
    before, refused, after = woven("res_u", 1), woven("res_u", 2), woven("res_u", 3)

    async def acknowledge(uow: UnitOfWork, event: Envelope, record: ConsumerRecord) -> None:
        stream = f"ack_{event.data.piece_id}"
        history = await uow.load(stream, lock=True)
        uow.append(stream, history.version, [woven(f"ack_{event.data.piece_id}", history.version)])
        await project_piece(uow, event, record)
        if event.id == refused.id:
            raise Reject("bad-signature", "the signature does not verify against the collaborator's key")

    await publish(producer, kafka_settings, [before, refused, after], times=2)
    await run_until_caught_up(consumer_for(pool, kafka_settings, producer, acknowledge), pool, kafka_settings)

    store = EventStore(pool)
    versions = [(await store.load(f"ack_{e.data.piece_id}")).version for e in (before, refused, after)]
    assert versions == [1, 0, 1]
    assert await applied_rows(pool) == sorted([before.id, after.id])
    (letter,) = await dead_letters(broker, kafka_settings, 1)
    assert letter.reason == "bad-signature"


async def test_a_stored_offset_beyond_the_topics_end_stops_the_consumer_with_a_clear_error(
    pool, producer, kafka_settings
):
    await publish(producer, kafka_settings, [woven("res_t", 1)])
    async with pool.acquire() as conn:
        await conn.executemany(
            "INSERT INTO consumer_offsets (consumer, topic, partition, next_offset) VALUES ($1, $2, $3, 5000)",
            [(projection(kafka_settings), topic_name(Topic.PRODUCTION, kafka_settings.topic_prefix), p)
             for p in range(3)],
        )

    with pytest.raises(OffsetBeyondEnd, match="beyond the topic's end"):
        await asyncio.wait_for(consumer_for(pool, kafka_settings, producer).run(), 60)
    assert await applied_rows(pool) == []


# --- batch handlers ---------------------------------------------------------------------------------


async def test_a_batch_handler_gets_each_event_once_in_log_order(pool, producer, kafka_settings):
    events = [woven(f"res_{i % 7}", i) for i in range(200)]
    await publish(producer, kafka_settings, events, times=2)
    batches: list[list[tuple[str, int, int]]] = []

    async def record_batches(uow, items):
        batches.append([(record.topic, record.partition, record.offset) for _, record in items])
        return await project_pieces(uow, items)

    handler = BatchHandler(apply_batch=record_batches, each=project_piece)
    await run_until_caught_up(consumer_for(pool, kafka_settings, producer, handler), pool, kafka_settings)

    assert await applied_rows(pool) == sorted(e.id for e in events)
    assert all(batch == sorted(batch) for batch in batches)
    assert any(len(batch) > 1 for batch in batches)


async def test_a_batch_handlers_refusals_are_dead_lettered_with_their_reason_and_their_feedback_kept(
    pool, producer, kafka_settings, broker
):
    refused, accepted = woven("res_r", 1), woven("res_r", 2)
    async with pool.acquire() as conn:
        await conn.execute("CREATE TABLE feedback (event_id text NOT NULL)")

    async def note_for_sender(uow):
        await uow.connection.execute("INSERT INTO feedback VALUES ($1)", refused.id)

    async def refuse_one(uow, items):
        # The contract: a refused event's writes are undone by the handler itself (here: never made).
        await project_pieces(uow, [(event, record) for event, record in items if event.id != refused.id])
        return [(index, Reject("bad-signature", "does not verify", on_rejected=note_for_sender))
                for index, (event, _) in enumerate(items) if event.id == refused.id]

    await publish(producer, kafka_settings, [refused, accepted])
    handler = BatchHandler(apply_batch=refuse_one, each=project_piece)
    await run_until_caught_up(consumer_for(pool, kafka_settings, producer, handler), pool, kafka_settings)

    assert await applied_rows(pool) == [accepted.id]
    async with pool.acquire() as conn:
        assert [r["event_id"] for r in await conn.fetch("SELECT event_id FROM feedback")] == [refused.id]
    (letter,) = await dead_letters(broker, kafka_settings, 1)
    assert (letter.reason, letter.source_offset) == ("bad-signature", 0)


async def test_a_batch_handler_that_raises_is_undone_and_its_events_applied_one_by_one(
    pool, producer, kafka_settings, broker
):
    events = [woven("res_s", n) for n in range(30)]
    refused = events[17]

    async def refuse_one(uow, event, record):
        await project_piece(uow, event, record)  # written, then undone with the refusal
        if event.id == refused.id:
            raise Reject("bad-signature", "the signature does not verify against the collaborator's key")

    async def write_all_then_refuse(uow, items):
        for event, record in items:  # no savepoint per event: a refusal anywhere undoes the batch
            await refuse_one(uow, event, record)
        return []

    await publish(producer, kafka_settings, events)
    handler = BatchHandler(apply_batch=write_all_then_refuse, each=refuse_one)
    await run_until_caught_up(consumer_for(pool, kafka_settings, producer, handler), pool, kafka_settings)

    assert await applied_rows(pool) == sorted(e.id for e in events if e is not refused)
    (letter,) = await dead_letters(broker, kafka_settings, 1)
    assert (letter.reason, json.loads(letter.value)["id"]) == ("bad-signature", refused.id)
