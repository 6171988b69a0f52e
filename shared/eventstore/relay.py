"""The outbox relay: publishes the event store to Kafka in commit order and records how far it got.

Publishing is at-least-once: the checkpoint moves only after the broker has
acknowledged a whole batch (acks=all), so a crash or an outage re-sends, never
skips. Consumers dedupe on the event `id`. Because appends take positions in
commit order (see schema.APPEND_LOCK_KEY), "every position above the
checkpoint" is exactly "every event not yet published".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg
from aiokafka import AIOKafkaProducer

from shared.contracts import CONTENT_TYPE, topic_name
from shared.contracts.codec import CONTENT_TYPE_HEADER
from shared.contracts.provenance import Attester
from shared.db import DATABASE_UNAVAILABLE
from shared.eventstore.schema import OUTBOX_CHANNEL, RELAY_LOCK_KEY
from shared.settings import KafkaSettings

log = logging.getLogger(__name__)

_HEADERS = [(CONTENT_TYPE_HEADER, CONTENT_TYPE.encode())]
#: Events a relay publishes (and so attests with one signed tree head) at most at a time.
RELAY_BATCH_SIZE = 500


class OutboxRelay:
    """Moves appended events from one service's event store onto their Kafka topics."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        producer: AIOKafkaProducer,
        kafka: KafkaSettings,
        *,
        attester: Attester | None = None,
        name: str = "kafka",
        batch_size: int = RELAY_BATCH_SIZE,
        idle_wait_seconds: float = 1.0,
        retry_backoff_seconds: float = 0.5,
    ) -> None:
        self._pool = pool
        self._producer = producer
        self._prefix = kafka.topic_prefix
        #: Attests each batch as it goes out (SPEC §11): readers trust only what the service attests.
        self._attester = attester
        self._name = name
        self._batch_size = batch_size
        self._idle_wait = idle_wait_seconds
        self._retry_backoff = retry_backoff_seconds
        self._appended = asyncio.Event()
        self.published_position = 0
        #: While it leads, no other relay writes the checkpoint, so `published_position` is the
        #: checkpoint and need not be read back before every batch (a round trip per batch).
        self._leading = False

    async def checkpoint(self) -> int:
        """The position of the last event the broker acknowledged (0 before the first)."""
        async with self._pool.acquire() as conn:
            return await conn.fetchval(
                "SELECT coalesce((SELECT position FROM outbox_checkpoint WHERE relay = $1), 0)", self._name
            )

    async def publish_pending(self) -> int:
        """Publish one batch above the checkpoint, advance it; returns how many events went out."""
        checkpoint = self.published_position if self._leading else await self.checkpoint()
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                """SELECT position, topic, record_key, payload FROM event_store
                   WHERE position > $1 ORDER BY position LIMIT $2""",
                checkpoint,
                self._batch_size,
            )
        if not rows:
            self.published_position = checkpoint
            return 0
        headers = self._headers([row["payload"] for row in rows])
        # send() only enqueues; the producer keeps one request in flight per partition, so
        # per-key (per-stream) order on the topic is the position order here.
        deliveries = [
            await self._producer.send(
                topic_name(row["topic"], self._prefix),
                value=row["payload"],
                key=row["record_key"].encode(),
                headers=row_headers,
            )
            for row, row_headers in zip(rows, headers, strict=True)
        ]
        await asyncio.gather(*deliveries)
        last = rows[-1]["position"]
        async with self._pool.acquire() as conn:
            await conn.execute(
                """INSERT INTO outbox_checkpoint (relay, position) VALUES ($1, $2)
                   ON CONFLICT (relay) DO UPDATE SET position = greatest(outbox_checkpoint.position, $2)""",
                self._name,
                last,
            )
        self.published_position = last
        return len(rows)

    def _headers(self, values: list[bytes]) -> list[list[tuple[str, bytes]]]:
        """Each record's headers: with an attester, the batch's one signed tree head and the record's proof."""
        if self._attester is None:
            return [_HEADERS] * len(values)
        return [[*_HEADERS, *attestation] for attestation in self._attester.attest(values)]

    async def run(self) -> None:
        """Publish forever: wake on each commit's notification, poll as a fallback, retry on failure.

        Only one relay per database publishes at a time (a session advisory lock);
        a second replica waits, ready to take over if the first dies. The lock lives
        as long as the leader's connection: when the database restarts, that
        connection dies with the lock, and the relay goes back to winning it first,
        never publishing without it.
        """
        while True:
            try:
                await self._lead()
            except DATABASE_UNAVAILABLE as exc:
                log.warning("outbox relay: lost the database (%s); reconnecting", type(exc).__name__)
                await asyncio.sleep(self._retry_backoff)

    async def _lead(self) -> None:
        async with self._pool.acquire() as leader:
            try:
                while not await leader.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_LOCK_KEY):
                    await asyncio.sleep(self._idle_wait)
                await leader.add_listener(OUTBOX_CHANNEL, self._on_append)
                self.published_position, self._leading = await self.checkpoint(), True
                await self._publish_while_leading(leader)
            finally:
                self._leading = False
                # Closing the connection ends its session lock and its LISTEN together, however
                # leadership ended (a cancellation mid-close aborts it, with the same effect): the
                # pool, which resets nothing on release (`shared.db.keep_session`), never hands
                # out a connection still holding them. The pool opens a fresh one when needed.
                with contextlib.suppress(Exception):
                    await leader.close(timeout=5)

    async def _publish_while_leading(self, leader: asyncpg.Connection) -> None:
        while not leader.is_closed():
            self._appended.clear()
            try:
                published = await self.publish_pending()
            except DATABASE_UNAVAILABLE as exc:
                log.warning("outbox relay: database unavailable (%s); retrying", type(exc).__name__)
                await asyncio.sleep(self._retry_backoff)
                continue
            except Exception as exc:  # noqa: BLE001 - any broker failure: keep the events, retry the batch
                log.warning("outbox relay: publish failed (%s: %s); retrying", type(exc).__name__, exc)
                await asyncio.sleep(self._retry_backoff)
                continue
            if published < self._batch_size:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._appended.wait(), self._idle_wait)
        raise asyncpg.ConnectionDoesNotExistError("the leader's connection closed; its lock went with it")

    def _on_append(self, *_: object) -> None:
        self._appended.set()
