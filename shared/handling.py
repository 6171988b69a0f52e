"""Load → decide → append: how every service runs a command against one aggregate."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from cachetools import LRUCache

from shared.contracts import Envelope, EventData
from shared.domain import fold
from shared.eventstore import NO_STREAM, PostgresUnitOfWork, StreamHistory, UnitOfWork

S = TypeVar("S")


@dataclass(frozen=True)
class Aggregate(Generic[S]):
    """A pure decider: an initial state, `evolve(state, event)` and `decide(state, command)`."""

    initial: S
    evolve: Callable[[S, EventData], S]
    decide: Callable[[S, Any], Sequence[EventData]]


class RememberedStates(Generic[S]):
    """One aggregate's states as commands written in one statement last read them, kept by this
    process so that the next such command can decide without reading the stream again.

    Sound because a stream's history up to a version never changes (appends only, versions
    unique), so a state is exact for its version, and because a command that decides on one
    commits only if the stream is still at that version (`PostgresUnitOfWork.read_at`, checked by
    its one statement under the append lock); if not, or if it was refused, it is decided again on
    states read afresh, which are remembered in turn. Only states read outside any transaction
    are kept: those are committed, never a transaction's own uncommitted appends. The least
    recently used are forgotten beyond `capacity`.
    """

    def __init__(self, capacity: int = 10_000) -> None:
        self._states: LRUCache[str, tuple[S, int]] = LRUCache(maxsize=capacity)

    def __len__(self) -> int:
        return len(self._states)

    async def load(self, uow: UnitOfWork, aggregate: Aggregate[S], stream_id: str) -> tuple[S, int]:
        """`load_state`, from memory when it may be; outside a unit written in one statement, read afresh."""
        if not (isinstance(uow, PostgresUnitOfWork) and uow.one_statement):
            return await load_state(uow, aggregate, stream_id)
        # A unit that appended already reads its store to raise: it cannot read back its own appends.
        if uow.may_remember and not uow.pending and (remembered := self._states.get(stream_id)) is not None:
            uow.remembered = True
        else:
            remembered = self._states[stream_id] = await load_state(uow, aggregate, stream_id)
        uow.read_at(stream_id, remembered[1])
        return remembered


async def load_state(
    uow: UnitOfWork, aggregate: Aggregate[S], stream_id: str, *, lock: bool = False
) -> tuple[S, int]:
    """The aggregate's current state and version; with `lock`, other deciders on it wait for this unit."""
    return _state(aggregate, await uow.load(stream_id, lock=lock))


async def load_states(
    uow: UnitOfWork, aggregate: Aggregate[S], stream_ids: Iterable[str], *, lock: bool = False,
) -> dict[str, tuple[S, int]]:
    """`load_state` for many streams of one aggregate in one round trip: `{stream_id: (state, version)}`."""
    histories = await uow.load_streams(stream_ids, lock=lock)
    return {stream_id: _state(aggregate, history) for stream_id, history in histories.items()}


def _state(aggregate: Aggregate[S], history: StreamHistory) -> tuple[S, int]:
    return fold(aggregate.evolve, aggregate.initial, (event.data for event in history.events)), history.version


async def handle(
    uow: UnitOfWork,
    aggregate: Aggregate[S],
    stream_id: str,
    command: Any,
    *,
    source: str,
    time: Callable[[EventData], datetime | None] = lambda _: None,
    fresh_id: bool = False,
) -> list[Envelope]:
    """Decide `command` on the stream's current state and append the events to `uow`.

    `time` picks each event's CloudEvents `time` (its business time; now when it returns None).
    `fresh_id`: the stream's id was made for this command (`new_id`), so nobody else can know it
    yet and there is no history to load or lock (a round trip saved); the append still refuses,
    as a concurrency conflict, should the stream exist after all.
    """
    if fresh_id:
        state, version = aggregate.initial, NO_STREAM
    else:
        state, version = await load_state(uow, aggregate, stream_id, lock=True)
    decided = aggregate.decide(state, command)
    events = [Envelope.wrap(data, source=source, time=time(data)) for data in decided]
    if events:
        uow.append(stream_id, version, events)
    return events
