"""The event store in memory, behind the interface of `EventStore` and its unit of work.

For fast tests of handlers: one test body runs on this store and on PostgreSQL
(`tests/unit/test_handlers.py`), so what the handlers decide is checked without a database and
the two stores are held to the same behaviour. A unit commits its appends all or nothing, as a
transaction does, refusing them as a `ConcurrencyConflict` when a stream moved on; a stream's
lock is an asyncio lock held until the unit that took it ends. A unit has no database
connection: handlers that write read models beside their events need PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence

import asyncpg

from shared.contracts import Envelope
from shared.eventstore.unit import ConcurrencyConflict, StreamHistory, merge_appends


class InMemoryEventStore:
    """Streams of events in memory, in one process (see the module's docstring)."""

    def __init__(self) -> None:
        self._streams: dict[str, list[Envelope]] = {}
        self._event_ids: set[str] = set()
        #: Every event in the order it was appended: the positions the relay would publish in.
        self._log: list[Envelope] = []
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        #: How many units wait for a stream's lock (what `pg_locks` shows of PostgreSQL's).
        self.waiting_for_locks = 0

    @property
    def events(self) -> tuple[Envelope, ...]:
        """Every event appended, in the order of their positions."""
        return tuple(self._log)

    async def append(self, stream_id: str, expected_version: int, events: Sequence[Envelope]) -> int:
        self._commit({stream_id: (expected_version, list(events))})
        return expected_version + len(events)

    async def load(self, stream_id: str) -> StreamHistory:
        events = self._streams.get(stream_id, [])
        return StreamHistory(stream_id, len(events), tuple(events))

    @contextlib.asynccontextmanager
    async def unit(self) -> AsyncIterator[InMemoryUnitOfWork]:
        """A unit of work whose appends are committed when the block ends without an exception."""
        unit = InMemoryUnitOfWork(self)
        try:
            yield unit
            self._commit(unit.take())
        finally:
            unit.release_locks()

    def version(self, stream_id: str) -> int:
        return len(self._streams.get(stream_id, ()))

    def check(self, appends: Mapping[str, tuple[int, Sequence[Envelope]]]) -> None:
        """Raise `ConcurrencyConflict` for the first stream not at its expected version (as PostgreSQL orders them)."""
        for stream_id in sorted(appends):
            expected, _ = appends[stream_id]
            if (actual := self.version(stream_id)) != expected:
                raise ConcurrencyConflict(stream_id, expected, actual)

    def lock(self, stream_id: str) -> asyncio.Lock:
        return self._locks[stream_id]

    def _commit(self, appends: Mapping[str, tuple[int, Sequence[Envelope]]]) -> None:
        self.check(appends)
        new_ids = [event.id for _, events in appends.values() for event in events]
        if len(set(new_ids)) != len(new_ids) or self._event_ids.intersection(new_ids):
            raise ValueError("an event id is stored once")  # PostgreSQL's unique index refuses it too
        for stream_id, (_, events) in appends.items():
            self._streams.setdefault(stream_id, []).extend(events)
            self._log.extend(events)
        self._event_ids.update(new_ids)


class InMemoryUnitOfWork:
    """A unit of work on an `InMemoryEventStore`: `shared.eventstore.unit.UnitOfWork`, with no connection."""

    def __init__(self, store: InMemoryEventStore) -> None:
        self._store = store
        self._appends: list[tuple[str, int, Sequence[Envelope]]] = []
        self._locked: list[asyncio.Lock] = []
        self._locked_streams: set[str] = set()

    @property
    def connection(self) -> asyncpg.Connection:
        raise RuntimeError("an in-memory unit of work has no database: this handler's test needs PostgreSQL")

    def append(self, stream_id: str, expected_version: int, events: Sequence[Envelope]) -> int:
        self._appends.append((stream_id, expected_version, events))
        return expected_version + len(events)

    def append_streams(self, appends: Mapping[str, tuple[int, Sequence[Envelope]]]) -> None:
        for stream_id, (expected_version, events) in appends.items():
            if events:
                self.append(stream_id, expected_version, events)

    async def load(self, stream_id: str, *, lock: bool = False) -> StreamHistory:
        return (await self.load_streams([stream_id], lock=lock))[stream_id]

    async def load_streams(self, stream_ids: Iterable[str], *, lock: bool = False) -> dict[str, StreamHistory]:
        wanted = sorted(set(stream_ids))
        if lock:
            for stream_id in wanted:  # in one order, as PostgreSQL takes them: no deadlock
                await self.lock_stream(stream_id)
        # As PostgreSQL writes held appends before a read: a stream that moved on fails the read.
        held = self._merged()
        self._store.check(held)
        found = {}
        for stream_id in wanted:
            committed = (await self._store.load(stream_id)).events
            events = committed + tuple(held.get(stream_id, (0, []))[1])
            found[stream_id] = StreamHistory(stream_id, len(events), events)
        return found

    async def lock_stream(self, stream_id: str) -> None:
        if stream_id in self._locked_streams:
            return
        lock = self._store.lock(stream_id)
        self._store.waiting_for_locks += 1
        try:
            await lock.acquire()
        finally:
            self._store.waiting_for_locks -= 1
        self._locked.append(lock)
        self._locked_streams.add(stream_id)

    @contextlib.asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        appends = list(self._appends)
        try:
            yield
        except BaseException:
            self._appends = appends
            raise

    def take(self) -> dict[str, tuple[int, list[Envelope]]]:
        """Everything held, merged per stream (what the unit commits), and forgotten."""
        merged = self._merged()
        self._appends = []
        return merged

    def release_locks(self) -> None:
        for lock in reversed(self._locked):
            lock.release()
        self._locked.clear()
        self._locked_streams.clear()

    def _merged(self) -> dict[str, tuple[int, list[Envelope]]]:
        return merge_appends(self._appends)
