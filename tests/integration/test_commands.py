"""The command runner of every HTTP command (`shared.web.commands.execute`) on real PostgreSQL.

What a staff client relies on: a refused command leaves nothing behind, a retry with the same
`Idempotency-Key` gets the first answer even after the world moved on, and an answer the action
chose to give (a 4xx it returns rather than raises) keeps what the action wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import asyncpg
import pytest

from shared.contracts import Envelope, service_source
from shared.contracts.events import Enrolled
from shared.db import create_pool
from shared.domain import Conflict
from shared.eventstore import NO_STREAM, EventStore, PostgresUnitOfWork
from shared.eventstore import install as install_event_store
from shared.handling import Aggregate, RememberedStates
from shared.timeutil import wib_now
from shared.web import commands
from shared.web.access import STAFF, Principal
from shared.web.commands import Outcome, execute
from shared.web.problems import Problem


@pytest.fixture
async def pool(database_url):
    pool = await create_pool(database_url, max_size=4)
    await commands.install(pool)
    async with pool.acquire() as conn:
        await conn.execute("CREATE TABLE notes (note text NOT NULL)")
    yield pool
    await pool.close()


async def notes(pool: asyncpg.Pool) -> list[str]:
    async with pool.acquire() as conn:
        return [row["note"] for row in await conn.fetch("SELECT note FROM notes ORDER BY note")]


def writes_then(outcome: str, note: str):
    """An action that writes `note`, then refuses (raises), answers 409 itself, or succeeds."""

    async def action(uow: PostgresUnitOfWork) -> Outcome:
        await uow.connection.execute("INSERT INTO notes VALUES ($1)", note)
        if outcome == "refuses":
            raise Conflict("cohort-full", "The cohort is full.")
        if outcome == "answers 409":
            return Outcome(409, Problem(409, "conflicting-result", "Noted for the sender.").body())
        return Outcome(201, {"note": note})

    return action


async def run(pool, action, key: str | None):
    response = await execute(pool, action, principal=Principal(STAFF), idempotency_key=key,
                             request_fingerprint="POST /things")
    return response.status_code, json.loads(response.body)


@pytest.mark.parametrize("key", [None, "k-1"])
async def test_a_refused_command_leaves_nothing_of_what_it_wrote(pool, key):
    status, body = await run(pool, writes_then("refuses", "refused"), key)

    assert (status, body["code"]) == (409, "cohort-full")
    assert await notes(pool) == []


async def test_a_retry_with_the_key_of_a_refused_command_gets_the_same_refusal_and_writes_nothing(pool):
    first = await run(pool, writes_then("refuses", "first"), "k-2")
    # The world moved on (the action would now succeed), but the key's answer is kept.
    retry = await run(pool, writes_then("succeeds", "retry"), "k-2")

    assert retry == first and first[0] == 409
    assert await notes(pool) == []
    assert (await run(pool, writes_then("succeeds", "new key"), "k-3"))[0] == 201
    assert await notes(pool) == ["new key"]


@pytest.mark.parametrize("key", [None, "k-4"])
async def test_an_answer_the_action_gives_itself_keeps_its_writes(pool, key):
    assert (await run(pool, writes_then("answers 409", "feedback"), key))[0] == 409
    assert await notes(pool) == ["feedback"]


async def test_a_retry_after_success_gets_the_first_answer_and_writes_nothing(pool):
    first = await run(pool, writes_then("succeeds", "first"), "k-5")
    # The world moved on (the action would now be refused), but the key's answer is kept.
    retry = await run(pool, writes_then("refuses", "retry"), "k-5")
    again = await run(pool, writes_then("succeeds", "again"), "k-5")

    assert retry == again == first == (201, {"note": "first"})
    assert await notes(pool) == ["first"]


async def test_a_key_reused_for_a_different_request_is_refused_and_writes_nothing(pool):
    await run(pool, writes_then("succeeds", "first"), "k-6")

    with pytest.raises(Problem) as reused:
        await execute(pool, writes_then("succeeds", "other"), principal=Principal(STAFF), idempotency_key="k-6",
                      request_fingerprint="POST /other-things")

    assert (reused.value.status, reused.value.code) == (422, "idempotency-key-reused")
    assert await notes(pool) == ["first"]


@pytest.mark.parametrize("second", ["succeeds", "refuses"])
async def test_one_request_sent_twice_at_once_is_carried_out_once(pool, second):
    """A client that retries before its first attempt was answered: both get the one answer kept."""
    both_running = asyncio.Barrier(2)

    def overlapping(outcome: str, note: str):
        write = writes_then(outcome, note)

        async def action(uow: PostgresUnitOfWork) -> Outcome:
            # Each waits (up to a deadline) until the other is inside its transaction too, so
            # that neither has committed when the other decides.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2):
                    await both_running.wait()
            return await write(uow)

        return action

    answers = await asyncio.gather(run(pool, overlapping("succeeds", "one"), "k-7"),
                                   run(pool, overlapping(second, "two"), "k-7"))

    assert answers[0] == answers[1]
    status, body = answers[0]
    # One answer, and only its writes: a success's one note, or nothing after a refusal.
    assert await notes(pool) == ([body["note"]] if status == 201 else [])


# --- commands written in one statement (`one_statement=True`): reads, then appends with the answer -----


def appends_then(outcome: str, stream: str, note: str, *, before_appending=None):
    """An action that reads `stream`, then appends one event to it and succeeds, or refuses."""

    async def action(uow: PostgresUnitOfWork) -> Outcome:
        version = (await uow.load(stream)).version
        if before_appending is not None:
            await before_appending()
        uow.append(stream, version, [enrolled(stream, note)])
        if outcome == "refuses":
            raise Conflict("cohort-full", "The cohort is full.")
        return Outcome(201, {"note": note, "version": version + 1})

    return action


def enrolled(resident: str, cohort: str) -> Envelope:
    return Envelope.wrap(Enrolled(resident_id=resident, cohort_id=cohort, enrolled_at=wib_now()),
                         source=service_source("enrollment"))


async def run_in_one_statement(pool, action, key: str | None):
    response = await execute(pool, action, principal=Principal(STAFF), idempotency_key=key,
                             request_fingerprint="POST /things", one_statement=True)
    return response.status_code, json.loads(response.body)


async def cohorts(pool, stream: str) -> list[str]:
    return [event.data.cohort_id for event in (await EventStore(pool).load(stream)).events]


@pytest.fixture
async def event_pool(pool):
    await install_event_store(pool)
    return pool


async def test_one_statement_commits_the_appends_with_the_answer_and_a_retry_writes_nothing(event_pool):
    first = await run_in_one_statement(event_pool, appends_then("succeeds", "res_1", "first"), "k-10")
    retry = await run_in_one_statement(event_pool, appends_then("succeeds", "res_1", "retry"), "k-10")
    refused = await run_in_one_statement(event_pool, appends_then("refuses", "res_1", "refused"), "k-11")
    refused_again = await run_in_one_statement(event_pool, appends_then("succeeds", "res_1", "later"), "k-11")

    assert first == retry == (201, {"note": "first", "version": 1})
    assert refused == refused_again and refused[0] == 409
    assert await cohorts(event_pool, "res_1") == ["first"]


async def test_one_statement_decides_again_when_its_stream_moved_on(event_pool):
    attempts = []

    async def someone_else_appends_first() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            await EventStore(event_pool).append("res_2", NO_STREAM, [enrolled("res_2", "theirs")])

    answer = await run_in_one_statement(
        event_pool, appends_then("succeeds", "res_2", "ours", before_appending=someone_else_appends_first), "k-12")

    assert answer == (201, {"note": "ours", "version": 2}) and len(attempts) == 2
    assert await cohorts(event_pool, "res_2") == ["theirs", "ours"]


async def test_one_statement_sent_twice_at_once_is_carried_out_once(event_pool):
    both_running = asyncio.Barrier(2)

    async def together() -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                await both_running.wait()

    answers = await asyncio.gather(*(
        run_in_one_statement(event_pool, appends_then("succeeds", f"res_3_{n}", "once", before_appending=together),
                             "k-13") for n in range(2)))

    assert answers[0] == answers[1] == (201, {"note": "once", "version": 1})
    assert sorted([await cohorts(event_pool, "res_3_0"), await cohorts(event_pool, "res_3_1")]) == [[], ["once"]]


async def test_one_statement_cannot_read_back_its_own_appends(event_pool):
    async def reads_back(uow: PostgresUnitOfWork) -> Outcome:
        uow.append("res_4", NO_STREAM, [enrolled("res_4", "mine")])
        await uow.load("res_4")
        return Outcome(201, {})

    with pytest.raises(RuntimeError, match="cannot read back"):
        await run_in_one_statement(event_pool, reads_back, "k-14")
    assert await cohorts(event_pool, "res_4") == []


# --- remembered states (`shared.handling.RememberedStates`): deciding without reading the stream -------


@pytest.fixture
def loads(monkeypatch) -> list[str]:
    """Every stream a unit of work reads, in order."""
    loaded: list[str] = []
    load = PostgresUnitOfWork.load

    async def counted(self, stream_id, **options):
        loaded.append(stream_id)
        return await load(self, stream_id, **options)

    monkeypatch.setattr(PostgresUnitOfWork, "load", counted)
    return loaded


#: A stream's state: the cohorts its events name, in order.
COHORTS = Aggregate((), lambda state, event: (*state, event.cohort_id), lambda state, command: ())


def decides_on(remembered: RememberedStates, stream: str, note: str):
    """An action that decides on `stream`'s state (refusing unless a cohort "open" is in it) and
    appends what it saw to a stream of its own, `note`."""

    async def action(uow: PostgresUnitOfWork) -> Outcome:
        seen, _ = await remembered.load(uow, COHORTS, stream)
        if "open" not in seen:
            raise Conflict("cohort-closed", "No cohort is open.")
        uow.append(note, NO_STREAM, [enrolled(note, ",".join(seen))])
        return Outcome(201, {"seen": list(seen)})

    return action


async def test_a_remembered_state_decides_only_while_its_stream_is_unchanged(event_pool, loads):
    remembered = RememberedStates()
    await EventStore(event_pool).append("coh_1", NO_STREAM, [enrolled("coh_1", "open")])

    first = await run_in_one_statement(event_pool, decides_on(remembered, "coh_1", "note_1"), "k-20")
    second = await run_in_one_statement(event_pool, decides_on(remembered, "coh_1", "note_2"), "k-21")
    reads_before_the_change = len(loads)
    # Another process appends to the stream: this one's remembered state is out of date.
    await EventStore(event_pool).append("coh_1", 1, [enrolled("coh_1", "later")])
    third = await run_in_one_statement(event_pool, decides_on(remembered, "coh_1", "note_3"), "k-22")

    assert first == second == (201, {"seen": ["open"]})
    assert reads_before_the_change == 1  # the second command decided without reading the stream
    # The third was decided on the remembered state, refused at commit, and decided again afresh.
    assert third == (201, {"seen": ["open", "later"]}) and len(loads) == 2
    assert [await cohorts(event_pool, f"note_{n}") for n in (1, 2, 3)] == [["open"], ["open"], ["open,later"]]


async def test_a_refusal_on_a_remembered_state_is_decided_again_on_the_stream_as_it_is(event_pool, loads):
    remembered = RememberedStates()
    await EventStore(event_pool).append("coh_2", NO_STREAM, [enrolled("coh_2", "closed")])

    refused = await run_in_one_statement(event_pool, decides_on(remembered, "coh_2", "note_4"), "k-23")
    await EventStore(event_pool).append("coh_2", 1, [enrolled("coh_2", "open")])
    # Remembered: closed, so it would refuse; a refusal commits nothing that checks the state, so
    # it is decided again on the stream as it is now.
    accepted = await run_in_one_statement(event_pool, decides_on(remembered, "coh_2", "note_5"), "k-24")
    retried = await run_in_one_statement(event_pool, decides_on(remembered, "coh_2", "note_6"), "k-24")

    assert refused[0] == 409 and refused[1]["code"] == "cohort-closed"
    assert accepted == retried == (201, {"seen": ["closed", "open"]})
    assert await cohorts(event_pool, "note_5") == ["closed,open"] and await cohorts(event_pool, "note_6") == []


async def test_a_command_in_a_transaction_neither_uses_nor_keeps_remembered_states(event_pool, loads):
    remembered = RememberedStates()
    await EventStore(event_pool).append("coh_3", NO_STREAM, [enrolled("coh_3", "open")])

    answers = [await run(event_pool, decides_on(remembered, "coh_3", f"note_{n}"), None) for n in (7, 8)]

    assert answers == [(201, {"seen": ["open"]})] * 2
    assert len(loads) == 2 and len(remembered) == 0


async def test_a_stream_only_read_is_checked_at_commit_too(event_pool):
    attempts = []

    async def reads_only(uow: PostgresUnitOfWork) -> Outcome:
        attempts.append(uow)
        version = (await uow.load("coh_4")).version
        uow.read_at("coh_4", version)  # decided on it; appends nothing
        if len(attempts) == 1:
            await EventStore(event_pool).append("coh_4", NO_STREAM, [enrolled("coh_4", "meanwhile")])
        return Outcome(200, {"version": version})

    answer = await run_in_one_statement(event_pool, reads_only, "k-25")

    assert answer == (200, {"version": 1}) and len(attempts) == 2
