"""The event store: append-only streams with optimistic concurrency, and the outbox of the relay."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from shared.contracts import Envelope, decode, encode
from shared.eventstore.schema import APPEND_LOCK_KEY, OUTBOX_CHANNEL

NO_STREAM = 0
"""`expected_version` for a stream that must not exist yet."""


class ConcurrencyConflict(Exception):
    """The stream moved on since it was loaded: reload, decide again, retry."""

    def __init__(self, stream_id: str, expected: int, actual: int) -> None:
        super().__init__(f"stream {stream_id!r} is at version {actual}, not the expected {expected}")
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual


@dataclass(frozen=True)
class StreamHistory:
    """A stream's events in version order; `version` is the number of events (0: no stream)."""

    stream_id: str
    version: int
    events: tuple[Envelope, ...]


class EventStore:
    """Appends events to streams and loads them back, in one service's own database.

    Command handlers pass the connection of their transaction to every call and
    need no pool; without a `connection`, a call uses the store's own pool.
    """

    def __init__(self, pool: asyncpg.Pool | None = None) -> None:
        self._pool = pool

    def _own_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("this EventStore has no pool: pass the connection of your transaction")
        return self._pool

    async def append(
        self,
        stream_id: str,
        expected_version: int,
        events: Sequence[Envelope],
        *,
        connection: asyncpg.Connection | None = None,
    ) -> int:
        """Append `events` after version `expected_version`; returns the stream's new version.

        Raises `ConcurrencyConflict` when the stream is not at `expected_version`.
        With `connection`, the append joins the caller's open transaction, so the
        caller's other writes (idempotency records, read models) commit with it;
        the caller should append last, because the append lock is held until commit.
        """
        if connection is not None:
            if not connection.is_in_transaction():
                raise RuntimeError("append(connection=...) needs a connection inside a transaction")
            return await self._append(connection, stream_id, expected_version, events)
        async with self._own_pool().acquire() as conn, conn.transaction():
            return await self._append(conn, stream_id, expected_version, events)

    async def _append(
        self, conn: asyncpg.Connection, stream_id: str, expected_version: int, events: Sequence[Envelope]
    ) -> int:
        await conn.execute("SELECT pg_advisory_xact_lock($1)", APPEND_LOCK_KEY)
        actual = await conn.fetchval(
            "SELECT coalesce(max(version), 0) FROM event_store WHERE stream_id = $1", stream_id
        )
        if actual != expected_version:
            raise ConcurrencyConflict(stream_id, expected_version, actual)
        if not events:
            return actual
        records = [encode(event) for event in events]
        await conn.executemany(
            """INSERT INTO event_store (stream_id, version, event_id, event_type, topic, record_key, payload)
               VALUES ($1, $2, $3, $4, $5, $6, $7)""",
            [
                (stream_id, expected_version + i, event.id, event.type, record.topic.value, record.key.decode(),
                 record.value)
                for i, (event, record) in enumerate(zip(events, records, strict=True), start=1)
            ],
        )
        # Delivered at commit, and only if it commits: wakes the relay without polling.
        await conn.execute("SELECT pg_notify($1, '')", OUTBOX_CHANNEL)
        return expected_version + len(events)

    @staticmethod
    async def lock_stream(connection: asyncpg.Connection, stream_id: str) -> None:
        """Serialise deciders on `stream_id` until the connection's transaction ends.

        Optimistic concurrency alone stays correct under contention, but 40 requests
        racing for one cohort would mostly lose and retry; waiting in line is kinder.
        (The two-key advisory lock space is disjoint from the append lock's one-key space.)
        """
        await connection.execute("SELECT pg_advisory_xact_lock(1, hashtext($1))", stream_id)

    async def load(self, stream_id: str, *, connection: asyncpg.Connection | None = None) -> StreamHistory:
        """Every event of `stream_id` in version order (an empty history when the stream does not exist)."""
        query = "SELECT version, payload, topic FROM event_store WHERE stream_id = $1 ORDER BY version"
        if connection is not None:
            rows = await connection.fetch(query, stream_id)
        else:
            async with self._own_pool().acquire() as conn:
                rows = await conn.fetch(query, stream_id)
        events = tuple(decode(row["payload"]) for row in rows)
        return StreamHistory(stream_id=stream_id, version=rows[-1]["version"] if rows else NO_STREAM, events=events)
