"""Transactional consumers: a projection's rows and its consumed offsets commit in one transaction.

This is the read side of ARCHITECTURE.md. Kafka's own committed offsets are
only informational here; the truth is the `consumer_offsets` table, written in
the same PostgreSQL transaction as whatever the handler wrote. On partition
assignment the consumer seeks to those stored offsets, so a crash, a
cancellation or a rebalance can neither lose nor repeat an effect:

- each batch first locks its partitions' offset rows (an upsert that changes nothing) and drops
  records below the stored offset, so two instances that briefly both hold a
  partition during a rebalance cannot both apply it (trap 3);
- event ids are recorded too, so the relay's at-least-once duplicates are no-ops;
- a batch is one unit of work (`PostgresUnitOfWork`): a handler takes it and one event, or
  (`BatchHandler`) a whole batch's fresh events at once, for projections where one statement per
  batch beats a few round trips per event; what it appends and writes commits with the offsets;
- a record that cannot be decoded, or that the handler refuses (`Reject`), is
  dead-lettered with a machine-readable reason and the offset moves on; a
  handler that keeps failing is retried a bounded number of times, then
  dead-lettered as `handler-error` (trap 2). A database outage is not the
  record's fault: the batch is retried from the stored offsets until it passes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener

from shared.contracts import DecodeError, Envelope, Topic, base_topic, decode, provenance, topic_name
from shared.contracts.provenance import TrustAnchors
from shared.db import DATABASE_UNAVAILABLE  # retry the batch, never dead-letter for these
from shared.eventstore.deadletters import DeadLetterPublisher
from shared.eventstore.store import PostgresUnitOfWork
from shared.eventstore.unit import UnitOfWork
from shared.kafka import end_offsets
from shared.settings import KafkaSettings

log = logging.getLogger(__name__)



class Reject(Exception):
    """Raised by a handler to refuse a record: it is dead-lettered with `reason`, and nothing it wrote stays.

    `on_rejected`, if given, runs after the handler's writes were rolled back, in the
    batch's unit of work: what it writes (e.g. feedback for the record's sender)
    commits with the offset, exactly once, as the handler's own writes would have.
    """

    def __init__(
        self, reason: str, detail: str, *, on_rejected: Callable[[UnitOfWork], Awaitable[None]] | None = None
    ) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.on_rejected = on_rejected


class OffsetBeyondEnd(Exception):
    """A stored offset lies beyond the topic's end: the log was truncated or replaced under us.

    Carrying on would silently skip whatever is written up to the stored offset
    (or, resetting, re-apply history); a person has to decide.
    """


#: Applies one record's event in the batch's unit of work; raises `Reject` to refuse it.
EventHandler = Callable[[UnitOfWork, Envelope, ConsumerRecord], Awaitable[None]]
#: A batch's fresh events, in the order a per-event handler would get them.
BatchItems = Sequence[tuple[Envelope, ConsumerRecord]]


@dataclass(frozen=True)
class BatchHandler:
    """A handler given a whole batch at once, with a per-event handler to fall back on.

    `apply_batch(unit, items)` applies the fresh events of a batch (decoded, deduplicated, in
    partition and offset order) in the batch's unit of work and returns its refusals: the
    index into `items` and the `Reject`, whose event's writes it has already undone. Should it
    raise (the database being unavailable aside), all its writes are undone and the batch is
    applied event by event with `each`, so a failing event gets exactly the bounded retries and
    the dead letter it would get from a per-event handler.
    """

    apply_batch: Callable[[UnitOfWork, BatchItems], Awaitable[Sequence[tuple[int, Reject]]]]
    each: EventHandler


Handler = EventHandler | BatchHandler

#: A write of a projection that is an idempotent upsert: its statement and arguments.
Upsert = tuple[str, Sequence[Any]]


def upserting(upserts: Callable[[Envelope], Iterable[Upsert | None]]) -> BatchHandler:
    """The handler of a read model whose every write is an idempotent upsert (`upserts(event)`, None for
    none): per event, or for a batch with one `executemany` per statement, each keeping the batch's order.
    It never refuses. Across statements order must not matter: each upsert sets its own columns or fills
    empty ones, so any interleaving ends the same."""

    async def each(uow: UnitOfWork, event: Envelope, record: ConsumerRecord) -> None:
        for upsert in upserts(event):
            if upsert is not None:
                await uow.connection.execute(upsert[0], *upsert[1])

    async def batch(uow: UnitOfWork, items: BatchItems) -> list[tuple[int, Reject]]:
        batched: dict[str, list[Sequence[Any]]] = {}
        for event, _ in items:
            for upsert in upserts(event):
                if upsert is not None:
                    batched.setdefault(upsert[0], []).append(upsert[1])
        for statement, rows in batched.items():
            await uow.connection.executemany(statement, rows)
        return []

    return BatchHandler(apply_batch=batch, each=each)


@dataclass(frozen=True)
class _Refusal:
    record: ConsumerRecord
    reason: str
    detail: str


class TransactionalConsumer:
    """Consumes `topics` in consumer group `name`, applying `handler` with exactly-once effects."""

    def __init__(
        self,
        *,
        name: str,
        topics: Sequence[Topic],
        pool: asyncpg.Pool,
        kafka: KafkaSettings,
        handler: Handler,
        dead_letters: DeadLetterPublisher,
        trust: TrustAnchors | None = None,
        max_batch: int = 500,
        max_attempts: int = 3,
        retry_backoff_seconds: float = 0.2,
    ) -> None:
        self.name = name
        self._topics = tuple(topics)
        self._pool = pool
        self._kafka = kafka
        self._handler = handler
        self._dead_letters = dead_letters
        #: With anchors, a record on a service's topic counts only if that service attested it (SPEC §11).
        self._trust = trust
        self._max_batch = max_batch
        self._max_attempts = max_attempts
        self._retry_backoff = retry_backoff_seconds
        self._fatal: Exception | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def run(self) -> None:
        """Consume until cancelled; raises `OffsetBeyondEnd` if the log no longer matches the stored offsets."""
        consumer = AIOKafkaConsumer(
            **self._kafka.client_options(),
            group_id=self.name,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self._max_batch,
            fetch_max_wait_ms=self._kafka.fetch_max_wait_ms,
        )
        self._consumer = consumer
        consumer.subscribe(
            [topic_name(topic, self._kafka.topic_prefix) for topic in self._topics],
            listener=_SeekToStoredOffsets(self, consumer),
        )
        try:
            # start() inside the try: cancelled while joining the group (seconds on a busy broker),
            # the consumer must still leave it, or a ghost member keeps its partitions forever.
            await consumer.start()
            while True:
                if self._fatal is not None:
                    raise self._fatal
                batch = await consumer.getmany(timeout_ms=500, max_records=self._max_batch)
                if self._fatal is not None:
                    raise self._fatal
                if batch:
                    await self._process_until_done(consumer, batch)
        finally:
            self._consumer = None
            await consumer.stop()

    async def _process_until_done(
        self, consumer: AIOKafkaConsumer, batch: dict[TopicPartition, list[ConsumerRecord]]
    ) -> None:
        while True:
            try:
                committed = await self._process(batch)
                break
            except DATABASE_UNAVAILABLE as exc:
                log.warning("%s: database unavailable (%s); retrying the batch", self.name, type(exc).__name__)
            except Exception as exc:  # noqa: BLE001 - e.g. the broker refused a dead letter: retry, never skip
                log.warning("%s: batch failed (%s); retrying it", self.name, type(exc).__name__)
            await asyncio.sleep(self._retry_backoff)
        # Kafka's committed offsets are informational (lag dashboards); the stored ones rule.
        try:
            await consumer.commit({tp: offset for tp, offset in committed.items() if tp in consumer.assignment()})
        except Exception as exc:  # noqa: BLE001 - a rebalance may have moved the partition; harmless
            log.debug("%s: informational Kafka commit skipped (%s)", self.name, type(exc).__name__)

    async def _process(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> dict[TopicPartition, int]:
        refusals: list[_Refusal] = []
        next_offsets: dict[TopicPartition, int] = {}
        async with self._pool.acquire() as conn, conn.transaction():
            unit = PostgresUnitOfWork(conn)
            stored = await self._lock_offsets(conn, batch)
            decoded: list[tuple[ConsumerRecord, Envelope]] = []
            for tp, records in sorted(batch.items(), key=lambda item: (item[0].topic, item[0].partition)):
                start = stored.get(tp, 0)
                for record in records:
                    if record.offset >= start and (event := self._decode(record, refusals)) is not None:
                        decoded.append((record, event))
                next_offsets[tp] = max(start, records[-1].offset + 1)
            new_ids = await self._record_event_ids(conn, [event.id for _, event in decoded])
            fresh: list[tuple[Envelope, ConsumerRecord]] = []
            for record, event in decoded:
                if event.id in new_ids:
                    new_ids.discard(event.id)  # a duplicate inside the batch is applied once
                    fresh.append((event, record))
            if isinstance(self._handler, BatchHandler):
                await self._apply_batch(unit, self._handler, fresh, refusals)
            else:
                for event, record in fresh:
                    await self._apply(unit, self._handler, event, record, refusals)
            # Dead letters in the order of the log, whichever step refused them.
            refusals.sort(key=lambda refusal: (refusal.record.topic, refusal.record.partition, refusal.record.offset))
            for refusal in refusals:
                record = refusal.record
                await self._dead_letters.publish(
                    reason=refusal.reason,
                    detail=refusal.detail,
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                    key=record.key,
                    value=record.value,
                    headers=list(record.headers or ()),
                )
            await conn.executemany(
                """INSERT INTO consumer_offsets (consumer, topic, partition, next_offset) VALUES ($1, $2, $3, $4)
                   ON CONFLICT (consumer, topic, partition) DO UPDATE SET next_offset = excluded.next_offset""",
                [(self.name, tp.topic, tp.partition, offset) for tp, offset in next_offsets.items()],
            )
            # Last: from here to COMMIT, every other writer waits for the append lock.
            await unit.flush()
        return next_offsets

    async def _lock_offsets(
        self, conn: asyncpg.Connection, batch: dict[TopicPartition, list[ConsumerRecord]]
    ) -> dict[TopicPartition, int]:
        # One statement: a missing row is created at 0 ("nothing consumed yet"), an existing one is
        # locked by the no-op update, in the rows' order so that two consumers cannot deadlock.
        keys = sorted((tp.topic, tp.partition) for tp in batch)
        rows = await conn.fetch(
            """INSERT INTO consumer_offsets (consumer, topic, partition, next_offset)
               SELECT $1, k.topic, k.partition, 0 FROM unnest($2::text[], $3::int[]) AS k(topic, partition)
               ORDER BY k.topic, k.partition
               ON CONFLICT (consumer, topic, partition) DO UPDATE SET next_offset = consumer_offsets.next_offset
               RETURNING topic, partition, next_offset""",
            self.name,
            [topic for topic, _ in keys],
            [partition for _, partition in keys],
        )
        return {TopicPartition(row["topic"], row["partition"]): row["next_offset"] for row in rows}

    async def _record_event_ids(self, conn: asyncpg.Connection, event_ids: list[str]) -> set[str]:
        if not event_ids:
            return set()
        rows = await conn.fetch(
            """INSERT INTO consumed_events (consumer, event_id) SELECT $1, unnest($2::text[])
               ON CONFLICT DO NOTHING RETURNING event_id""",
            self.name,
            event_ids,
        )
        return {row["event_id"] for row in rows}

    def _decode(self, record: ConsumerRecord, refusals: list[_Refusal]) -> Envelope | None:
        try:
            topic = base_topic(record.topic, self._kafka.topic_prefix)
            event = decode(record.value, topic=topic)
            if self._trust is not None:
                provenance.check(topic, record.value, record.headers, event, self._trust)
            return event
        except DecodeError as exc:
            refusals.append(_Refusal(record, exc.reason, str(exc)))
            return None

    async def _apply_batch(
        self, unit: PostgresUnitOfWork, handler: BatchHandler, items: list[tuple[Envelope, ConsumerRecord]],
        refusals: list[_Refusal],
    ) -> None:
        if not items:
            return
        try:
            async with unit.savepoint():  # a failed batch leaves nothing behind
                rejected = await handler.apply_batch(unit, items)
        except DATABASE_UNAVAILABLE:
            raise
        except Exception as exc:  # noqa: BLE001 - one event's refusal or failure: find it, event by event
            log.log(logging.DEBUG if isinstance(exc, Reject) else logging.WARNING,
                    "%s: batch handler raised %s; applying the batch event by event", self.name, type(exc).__name__)
            for event, record in items:
                await self._apply(unit, handler.each, event, record, refusals)
            return
        for index, rejection in rejected:
            event, record = items[index]
            await self._refuse(unit, event, record, rejection, refusals)

    async def _apply(
        self, unit: PostgresUnitOfWork, handler: EventHandler, event: Envelope, record: ConsumerRecord,
        refusals: list[_Refusal],
    ) -> None:
        for attempt in range(1, self._max_attempts + 1):
            try:
                async with unit.savepoint():  # a refused record leaves nothing behind
                    await handler(unit, event, record)
                return
            except Reject as rejection:
                await self._refuse(unit, event, record, rejection, refusals)
                return
            except DATABASE_UNAVAILABLE:
                raise
            except Exception as exc:  # noqa: BLE001 - bounded retries, then the record is dead-lettered
                # Only the type is reported: an exception's text may quote the record's values.
                log.warning(
                    "%s: handler failed on %s (%s), attempt %d", self.name, event.id, type(exc).__name__, attempt
                )
                if attempt == self._max_attempts:
                    refusals.append(
                        _Refusal(record, "handler-error", f"{type(exc).__name__} after {attempt} attempts")
                    )
                    return
                await asyncio.sleep(self._retry_backoff * attempt)

    async def _refuse(
        self, unit: PostgresUnitOfWork, event: Envelope, record: ConsumerRecord, rejection: Reject,
        refusals: list[_Refusal],
    ) -> None:
        refusals.append(_Refusal(record, rejection.reason, rejection.detail))
        if rejection.on_rejected is not None:
            await self._after_rejection(unit, event, rejection.on_rejected)

    async def _after_rejection(
        self, unit: PostgresUnitOfWork, event: Envelope, on_rejected: Callable[[UnitOfWork], Awaitable[None]]
    ) -> None:
        try:
            async with unit.savepoint():
                await on_rejected(unit)
        except DATABASE_UNAVAILABLE:
            raise
        except Exception as exc:  # noqa: BLE001 - the dead letter matters more than the feedback: never stall on it
            log.warning("%s: on_rejected failed for %s (%s)", self.name, event.id, type(exc).__name__)

    async def _on_assigned(self, consumer: AIOKafkaConsumer, assigned: Iterable[TopicPartition]) -> None:
        assigned = list(assigned)
        if not assigned:
            return
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT topic, partition, next_offset FROM consumer_offsets WHERE consumer = $1", self.name
            )
        stored = {TopicPartition(row["topic"], row["partition"]): row["next_offset"] for row in rows}
        ends = await end_offsets(self._kafka, {tp.topic for tp in assigned})
        for tp in assigned:
            offset = stored.get(tp)
            if offset is not None and offset > ends[tp]:
                self._fatal = OffsetBeyondEnd(
                    f"{self.name}: stored offset {offset} of {tp.topic}[{tp.partition}] is beyond the topic's end "
                    f"{ends[tp]}; the log was truncated or replaced. Rebuild this projection from the beginning "
                    "(anyam replay) or restore the topic; refusing to skip or re-read silently."
                )
                consumer.pause(*assigned)
                return
            if offset is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, offset)


class _SeekToStoredOffsets(ConsumerRebalanceListener):
    def __init__(self, owner: TransactionalConsumer, consumer: AIOKafkaConsumer) -> None:
        self._owner = owner
        # Its own reference: an assignment may complete while `run` is already stopping.
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        # Nothing to save: offsets are stored with each batch's effects, never later.
        return None

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self._owner._on_assigned(self._consumer, assigned)
