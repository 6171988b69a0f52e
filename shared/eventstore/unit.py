"""The unit of work: what one command or one consumer batch reads, appends and writes, committed together.

Both entry points open one, explicitly: an HTTP command (`shared.web.commands.execute`) and a
consumer batch (`shared.eventstore.consumer.TransactionalConsumer`). Handlers are given the unit
and do everything through it: they load and append streams (`load`, `append`), and their other
writes (read models, the vault) go to its `connection`, in its transaction, beside what the entry
point writes itself (the idempotency answer, the consumed offsets). Nothing is ambient: what an
append does depends only on the unit it was made on.

`UnitOfWork` is the interface handlers are written against; `shared.eventstore.store.PostgresUnitOfWork`
is the services' own, and `shared.eventstore.memory.InMemoryUnitOfWork` runs the same handlers without a database.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

import asyncpg

from shared.contracts import Envelope

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


class UnitOfWork(Protocol):
    """What a handler does its work through (see the module's docstring)."""

    @property
    def connection(self) -> asyncpg.Connection:
        """The unit's database connection, for the handler's writes beside its events (in its transaction)."""
        ...

    async def load(self, stream_id: str, *, lock: bool = False) -> StreamHistory:
        """The stream's history, with what this unit appended to it; with `lock`, other deciders on
        the stream wait until this unit ends."""
        ...

    async def load_streams(self, stream_ids: Iterable[str], *, lock: bool = False) -> dict[str, StreamHistory]:
        """`load` for many streams at once (locked in an order that cannot deadlock)."""
        ...

    async def lock_stream(self, stream_id: str) -> None:
        """Make other deciders on `stream_id` wait until this unit ends."""
        ...

    def append(self, stream_id: str, expected_version: int, events: Sequence[Envelope]) -> int:
        """Append `events` after `expected_version` when the unit commits; returns the stream's new version.
        A stream not at that version by then fails the unit with `ConcurrencyConflict`."""
        ...

    def append_streams(self, appends: Mapping[str, tuple[int, Sequence[Envelope]]]) -> None:
        """`append` for several streams: `{stream_id: (expected_version, events)}`."""
        ...

    def savepoint(self) -> AbstractAsyncContextManager[None]:
        """A block whose writes and appends are undone, and only they, when it raises."""
        ...


def merge_appends(appends: Iterable[tuple[str, int, Sequence[Envelope]]]) -> dict[str, tuple[int, list[Envelope]]]:
    """A unit's appends as it commits them, `{stream_id: (expected_version, events)}`: each stream's
    events in the order appended, streams in the order of their first append. An append that does
    not follow on from the unit's earlier one to its stream was decided on a stale state: a
    `ConcurrencyConflict`."""
    merged: dict[str, tuple[int, list[Envelope]]] = {}
    for stream_id, expected_version, events in appends:
        if stream_id in merged:
            first_expected, earlier = merged[stream_id]
            if expected_version != first_expected + len(earlier):
                raise ConcurrencyConflict(stream_id, expected_version, first_expected + len(earlier))
            earlier.extend(events)
        else:
            merged[stream_id] = (expected_version, list(events))
    return merged
