"""The command runner of every HTTP command (`shared.web.commands.execute`) on real PostgreSQL.

What a staff client relies on: a refused command leaves nothing behind, a retry with the same
`Idempotency-Key` gets the first answer even after the world moved on, and an answer the action
chose to give (a 4xx it returns rather than raises) keeps what the action wrote.
"""

from __future__ import annotations

import json

import asyncpg
import pytest

from shared.db import create_pool
from shared.domain import Conflict
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

    async def action(conn: asyncpg.Connection) -> Outcome:
        await conn.execute("INSERT INTO notes VALUES ($1)", note)
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
