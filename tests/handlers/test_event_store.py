"""The event store and its unit of work, one body on both stores (`conftest.backend`).

What a handler relies on: a stream loads back what was appended, in order; a unit's appends commit
all together when it ends, or not at all; a unit reads its own appends; a stream that moved on is a
`ConcurrencyConflict`, never a second history; a stream's lock makes other deciders wait.
"""

from __future__ import annotations

import asyncio

import pytest

from shared.contracts import Envelope, service_source
from shared.contracts.events import PieceWoven
from shared.eventstore import NO_STREAM, ConcurrencyConflict
from shared.handling import Aggregate, handle
from shared.timeutil import wib_now
from tests.waiting import until


def woven(stream: str, n: int) -> Envelope:
    return Envelope.wrap(
        PieceWoven(piece_id=f"pc_{stream}_{n}", artisan_id="res_1", collaborator_id="col_1", product="piring",
                   rate_idr=15_000, woven_at=wib_now()),
        source=service_source("production"),
    )


def ids(history) -> list[str]:
    return [event.id for event in history.events]


#: Appends whatever it is told to decide, as it is.
ECHO = Aggregate(initial=None, evolve=lambda state, _: state, decide=lambda _, command: [command])


async def test_a_stream_loads_back_what_was_appended_in_version_order(backend):
    store = backend.store
    events = [woven("a", n) for n in range(3)]

    assert await store.append("a", NO_STREAM, events[:2]) == 2
    assert await store.append("a", 2, events[2:]) == 3

    history = await store.load("a")
    assert (history.version, ids(history)) == (3, [e.id for e in events])
    assert (await store.load("nobody")).version == NO_STREAM


async def test_of_appends_at_the_same_expected_version_exactly_one_succeeds(backend):
    store = backend.store
    await store.append("b", NO_STREAM, [woven("b", 0)])

    results = await asyncio.gather(*(store.append("b", 1, [woven("b", n)]) for n in range(1, 9)),
                                   return_exceptions=True)

    assert [r for r in results if not isinstance(r, Exception)] == [2]
    conflicts = [r for r in results if isinstance(r, ConcurrencyConflict)]
    assert len(conflicts) == 7 and all((c.expected, c.actual) == (1, 2) for c in conflicts)


async def test_a_units_appends_are_seen_by_others_only_once_it_ends_and_it_reads_its_own(backend):
    store = backend.store
    first, second = woven("c", 1), woven("c", 2)
    async with store.unit() as uow:
        version = uow.append("c", NO_STREAM, [first])
        assert (await store.load("c")).version == NO_STREAM  # nobody else sees it yet
        assert ids(await uow.load("c", lock=True)) == [first.id]
        uow.append("c", version, [second])
    assert ids(await store.load("c")) == [first.id, second.id]  # each written once


async def test_a_unit_appends_to_several_streams_all_or_nothing(backend):
    store = backend.store
    await store.append("d2", NO_STREAM, [woven("d2", 0)])
    with pytest.raises(ConcurrencyConflict) as conflict:
        async with store.unit() as uow:
            uow.append_streams({"d1": (NO_STREAM, [woven("d1", 0)]), "d2": (NO_STREAM, [woven("d2", 1)])})

    assert (conflict.value.stream_id, conflict.value.expected, conflict.value.actual) == ("d2", NO_STREAM, 1)
    assert (await store.load("d1")).version == NO_STREAM  # the stream that was fine got nothing either

    async with store.unit() as uow:
        uow.append_streams({"d1": (NO_STREAM, [woven("d1", 0)]), "d2": (1, [woven("d2", 1)])})
        histories = await uow.load_streams(["d2", "d1", "nobody"])
    assert {stream: history.version for stream, history in histories.items()} == {"d1": 1, "d2": 2, "nobody": 0}


async def test_a_unit_left_by_an_exception_appends_nothing(backend):
    store = backend.store
    with pytest.raises(LookupError):
        async with store.unit() as uow:
            uow.append("e", NO_STREAM, [woven("e", 0)])
            raise LookupError("the handler failed")
    assert (await store.load("e")).version == NO_STREAM


async def test_a_savepoint_that_fails_undoes_its_own_appends_and_only_those(backend):
    store = backend.store
    kept, dropped = woven("f", 1), woven("g", 1)
    async with store.unit() as uow:
        uow.append("f", NO_STREAM, [kept])
        with pytest.raises(LookupError):
            async with uow.savepoint():
                await uow.load("f")  # reading writes what is held: the rollback must not lose it
                uow.append("g", NO_STREAM, [dropped])
                raise LookupError("this record is refused")
    assert ids(await store.load("f")) == [kept.id]
    assert (await store.load("g")).version == NO_STREAM


async def test_two_appends_decided_on_one_state_of_a_stream_are_a_conflict(backend):
    store = backend.store
    with pytest.raises(ConcurrencyConflict):
        async with store.unit() as uow:
            uow.append("h", NO_STREAM, [woven("h", 1)])
            uow.append("h", NO_STREAM, [woven("h", 2)])
    assert (await store.load("h")).version == NO_STREAM


async def test_a_command_on_a_new_stream_that_exists_after_all_is_a_conflict_not_a_second_history(backend):
    """`handle(fresh_id=True)` skips loading a stream whose id it just made; should the id exist anyway,
    the append's version check refuses it (the command runner then retries with a fresh id)."""
    store = backend.store
    await store.append("pc_taken", NO_STREAM, [woven("taken", 0)])
    with pytest.raises(ConcurrencyConflict):
        async with store.unit() as uow:
            await handle(uow, ECHO, "pc_taken", woven("taken", 1).data, source="/services/test", fresh_id=True)
    async with store.unit() as uow:
        (event,) = await handle(uow, ECHO, "pc_fresh", woven("fresh", 0).data, source="/services/test",
                                fresh_id=True)
    assert (await store.load("pc_taken")).version == 1
    assert ids(await store.load("pc_fresh")) == [event.id]


async def test_a_streams_lock_makes_other_deciders_wait_and_then_see_what_was_appended(backend):
    store = backend.store

    async def decide_on(stream: str) -> int:
        async with store.unit() as uow:
            return (await uow.load(stream, lock=True)).version

    async with store.unit() as uow:
        histories = await uow.load_streams(["l1", "l2"], lock=True)
        assert histories["l2"].version == NO_STREAM
        waiting = asyncio.create_task(decide_on("l2"))
        await until(backend.someone_waits_for_a_lock, what="the second decider to wait for the lock")
        assert not waiting.done()
        uow.append("l2", NO_STREAM, [woven("l2", 0)])
    assert await asyncio.wait_for(waiting, timeout=30) == 1
