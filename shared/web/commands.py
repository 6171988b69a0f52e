"""Running one HTTP command: idempotently, atomically with its events, retried on concurrency conflicts.

A command's events, its response and its `Idempotency-Key` commit in one
transaction: a retry with the same key finds the stored response and changes
nothing, even when the first attempt's client never saw the answer. Two
requests with the same key at once are serialised by the key's row, so the
second returns the first's response. Refusals (4xx problems) are stored too,
so a retry gets the same answer, not a different one because the world moved.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg
from fastapi import Request
from fastapi.responses import JSONResponse

from shared.db import DATABASE_UNAVAILABLE
from shared.domain import Refused
from shared.eventstore import ConcurrencyConflict, PostgresUnitOfWork
from shared.eventstore.store import append_streams_arguments, conflict
from shared.web.access import Principal
from shared.web.problems import Problem, problem_response

IDEMPOTENCY_DDL = """
CREATE TABLE IF NOT EXISTS idempotency_keys (
    scope        text        NOT NULL,
    key          text        NOT NULL,
    fingerprint  text        NOT NULL,
    status       integer,
    body         jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);
-- Answers are forgotten once they expire (`forget_expired_answers`), oldest first.
CREATE INDEX IF NOT EXISTS idempotency_keys_created_at ON idempotency_keys (created_at);

-- A command written in one statement (`execute(one_statement=True)`): its answer for its key, then
-- its appends (`event_store_append_streams`, which takes the append lock), committed by the
-- statement itself, so the append lock is held for no round trip at all. False, with nothing
-- written, when the key already has an answer; a stream that moved on, whether appended to or only
-- read, undoes the answer too (SQLSTATE AY409, the stream's id as its detail).
CREATE OR REPLACE FUNCTION command_commit(
    command_scope text, command_key text, request_fingerprint text, answer_status integer, answer_body jsonb,
    streams text[], expected integer[], event_streams text[], event_ids text[], event_types text[],
    topics text[], record_keys text[], payloads bytea[]
) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    conflicts text[];
BEGIN
    IF command_key IS NOT NULL THEN
        INSERT INTO idempotency_keys (scope, key, fingerprint, status, body)
            VALUES (command_scope, command_key, request_fingerprint, answer_status, answer_body)
            ON CONFLICT DO NOTHING;
        IF NOT FOUND THEN
            RETURN false;
        END IF;
    END IF;
    -- Streams only read are checked too (no events): the command decided on them as they were.
    IF cardinality(streams) > 0 THEN
        conflicts := event_store_append_streams(streams, expected, event_streams, event_ids, event_types, topics,
                                                record_keys, payloads);
        IF cardinality(conflicts) > 0 THEN
            RAISE EXCEPTION 'stream % moved on since the command read it', conflicts[1]
                USING ERRCODE = 'AY409', DETAIL = conflicts[1];
        END IF;
    END IF;
    RETURN true;
END $$;
"""

log = logging.getLogger(__name__)

#: How long an answer is kept for its Idempotency-Key unless the service says otherwise
#: (`ANYAM_IDEMPOTENCY_KEY_TTL_SECONDS`): a retry within it gets the first answer, a request after it is new.
IDEMPOTENCY_KEY_TTL = timedelta(hours=24)
#: How often expired answers are looked for at most: an answer outlives its expiry by up to this.
FORGET_EVERY_SECONDS = 60.0

#: Serialises installs of the idempotency table and `command_commit` by several processes at once.
INSTALL_LOCK_KEY = 0x616E79616D10

#: `command_commit`'s SQLSTATE for a stream that moved on.
STREAM_MOVED_ON = "AY409"

MAX_KEY_LENGTH = 200
CONFLICT_RETRIES = 10


@dataclass(frozen=True)
class Outcome:
    """What a command answers: a status and a JSON body."""

    status: int
    body: dict[str, Any]


#: A command's work, done through the unit of work `execute` opens for it.
Action = Callable[[PostgresUnitOfWork], Awaitable[Outcome]]


def fingerprint(method: str, path: str, payload: Any) -> str:
    """A digest of the request, so a key reused for a different request is caught, not replayed."""
    canonical = json.dumps([method, path, payload], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


async def execute(
    pool: asyncpg.Pool,
    action: Action,
    *,
    principal: Principal,
    idempotency_key: str | None,
    request_fingerprint: str,
    one_statement: bool = False,
) -> JSONResponse:
    """Run `action` in a unit of work (once per idempotency key) and answer its outcome or problem.

    The unit's appends, the action's other writes and the key's answer commit in one transaction.

    `one_statement`: the action only reads and appends (no locks, no other writes). It then runs
    outside a transaction (each read sees what is committed, as each statement of a READ COMMITTED
    transaction would), and its appends and answer are written by one statement at the end
    (`command_commit`): three round trips fewer, and no wait for this process while the append
    lock is held. Such a command may decide on states remembered from earlier ones
    (`shared.handling.RememberedStates`): its statement also checks that every stream it read is
    still at the version it decided on. When one moved on, or when it was refused on a remembered
    state (a refusal commits nothing that would check), it is decided again on states read afresh.

    With a key, the key and its answer are written after the action, in its transaction: the
    first transaction to commit them wins, and any other attempt with that key (a retry, or
    the same request sent twice at once, which waits on the first's uncommitted key) rolls
    back everything it wrote and answers what the winner stored. Claiming the key first would
    cost two more round trips on every command (the claim, and a savepoint to keep it when
    the action is refused) to spare a retry re-running its action, which is rare.
    """
    if idempotency_key is not None and not 0 < len(idempotency_key) <= MAX_KEY_LENGTH:
        raise Problem(400, "invalid-idempotency-key", f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters.")
    scope = principal.name
    may_remember = True
    for _ in range(CONFLICT_RETRIES):
        try:
            if one_statement:
                async with pool.acquire() as conn:
                    return await _execute_in_one_statement(
                        conn, action, scope, idempotency_key, request_fingerprint, may_remember=may_remember)
            async with pool.acquire() as conn:
                try:
                    async with conn.transaction():
                        unit = PostgresUnitOfWork(conn)
                        outcome, refused = await _outcome_or_refusal(action, unit)
                        if refused:
                            raise _Undo(outcome, refusal=True)  # the whole transaction rolls back
                        if idempotency_key is not None:
                            stored = await _store(conn, scope, idempotency_key, request_fingerprint, outcome)
                            if stored is not None:
                                raise _Undo(stored)  # another attempt's answer stands; ours is undone
                        # Last: from here to COMMIT, every other writer waits for the append lock.
                        await unit.flush()
                        return _respond(outcome)
                except _Undo as undone:
                    if undone.refusal:
                        return await _answer_refusal(conn, scope, idempotency_key, request_fingerprint,
                                                     undone.outcome)
                    return _respond(undone.outcome)
        except (ConcurrencyConflict, _DecideAfresh):
            # Someone else appended to a stream first, or a refusal came from a remembered state:
            # read every state afresh and decide again.
            may_remember = False
    raise Problem(409, "busy", "The record was changed by many requests at once; try again.")


async def _execute_in_one_statement(
    conn: asyncpg.Connection, action: Action, scope: str, idempotency_key: str | None, request_fingerprint: str,
    *, may_remember: bool,
) -> JSONResponse:
    unit = PostgresUnitOfWork(conn, one_statement=True, may_remember=may_remember)
    outcome, refused = await _outcome_or_refusal(action, unit)
    held = unit.take()  # a refusal's appends are dropped: it leaves nothing but its answer
    if refused:
        if unit.remembered:
            # Nothing will check that the remembered state was current; a refusal must come from one that is.
            raise _DecideAfresh
        return await _answer_refusal(conn, scope, idempotency_key, request_fingerprint, outcome)
    try:
        written = await conn.fetchval(
            "SELECT command_commit($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            scope, idempotency_key, request_fingerprint, outcome.status, json.dumps(outcome.body),
            *append_streams_arguments(held),
        )
    except asyncpg.PostgresError as exc:
        if exc.sqlstate == STREAM_MOVED_ON:
            raise await conflict(conn, exc.detail, held[exc.detail][0]) from None
        raise
    if written:
        return _respond(outcome)
    assert idempotency_key is not None  # nothing written: the key already had an answer
    return _respond(await _stored_answer(conn, scope, idempotency_key, request_fingerprint))


async def _answer_refusal(
    conn: asyncpg.Connection, scope: str, idempotency_key: str | None, request_fingerprint: str, refusal: Outcome
) -> JSONResponse:
    """Answer a refused command, whose writes are already undone. A refusal is an answer too, kept for
    its key so that a retry gets it again (unless another attempt stored its answer first), in one
    statement of its own."""
    if idempotency_key is None:
        return _respond(refusal)
    stored = await _store(conn, scope, idempotency_key, request_fingerprint, refusal)
    return _respond(stored or refusal)


class _DecideAfresh(Exception):
    """A command written in one statement was refused on a remembered state: decide it again on fresh ones."""


class _Undo(Exception):
    """Leaves a transaction by rolling it back, carrying the answer to give: the action's refusal,
    or the answer another attempt with the same key stored."""

    def __init__(self, outcome: Outcome, *, refusal: bool = False) -> None:
        super().__init__(outcome.status)
        self.outcome = outcome
        self.refusal = refusal


async def _outcome_or_refusal(action: Action, unit: PostgresUnitOfWork) -> tuple[Outcome, bool]:
    """The action's outcome, or the problem it raised to refuse (whose writes must then be undone).

    An action may also *return* a 4xx outcome: that is an answer whose writes it keeps (e.g. the
    feedback a refused QC submission leaves for its collaborator).
    """
    try:
        return await action(unit), False
    except Problem as problem:
        return Outcome(problem.status, problem.body()), True
    except Refused as refusal:
        return Outcome(refusal.status, Problem.from_refusal(refusal).body()), True


async def install(pool: asyncpg.Pool) -> None:
    """Create the idempotency table if it is missing, and `command_commit`; safe from several processes."""
    async with pool.acquire() as conn, conn.transaction():
        # Two processes replacing one function at once would fail ("tuple concurrently updated").
        await conn.execute("SELECT pg_advisory_xact_lock($1)", INSTALL_LOCK_KEY)
        await conn.execute(IDEMPOTENCY_DDL)


async def _store(
    conn: asyncpg.Connection, scope: str, key: str, request_fingerprint: str, outcome: Outcome
) -> Outcome | None:
    """Store `outcome` as the key's answer; None if it was stored, else the answer stored before.

    The insert waits for a concurrent attempt holding the same key, then sees its committed answer.
    """
    stored = await conn.fetchval(
        """INSERT INTO idempotency_keys (scope, key, fingerprint, status, body) VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT DO NOTHING RETURNING true""",
        scope, key, request_fingerprint, outcome.status, json.dumps(outcome.body),
    )
    if stored:
        return None
    return await _stored_answer(conn, scope, key, request_fingerprint)


async def _stored_answer(conn: asyncpg.Connection, scope: str, key: str, request_fingerprint: str) -> Outcome:
    """The answer stored for `key`; a 422 problem when the key was stored for another request."""
    row = await conn.fetchrow(
        "SELECT fingerprint, status, body FROM idempotency_keys WHERE scope = $1 AND key = $2", scope, key
    )
    if row["fingerprint"] != request_fingerprint:
        raise Problem(
            422, "idempotency-key-reused",
            "This Idempotency-Key was already used for a different request; use a new key for a new request.",
        )
    return Outcome(row["status"], json.loads(row["body"]))


def _respond(outcome: Outcome) -> JSONResponse:
    if outcome.status >= 400:
        return problem_response(outcome.body)
    return JSONResponse(outcome.body, status_code=outcome.status)


RunCommand = Callable[..., Awaitable[JSONResponse]]


def command_runner(pool: Callable[[], asyncpg.Pool]) -> RunCommand:
    """What every router's command endpoints call: `execute` with the request's fingerprint.

    `pool` is looked up per call, because routers are built before the runtime opens its pool.
    """

    async def run(
        request: Request, principal: Principal, key: str | None, payload: Any, action: Action, *,
        one_statement: bool = False,
    ) -> JSONResponse:
        return await execute(
            pool(), action, principal=principal, idempotency_key=key,
            request_fingerprint=fingerprint(request.method, request.url.path, payload), one_statement=one_statement,
        )

    return run


async def forget_expired_answers(pool: asyncpg.Pool, ttl: timedelta, *, batch: int = 10_000) -> int:
    """Delete the answers stored longer than `ttl` ago, `batch` at a time (no long lock); how many went."""
    forgotten = 0
    while True:
        async with pool.acquire() as conn:
            deleted = await conn.fetchval(
                """WITH gone AS (
                       DELETE FROM idempotency_keys WHERE ctid = ANY(ARRAY(
                           SELECT ctid FROM idempotency_keys WHERE created_at < now() - $1::interval LIMIT $2))
                       RETURNING 1)
                   SELECT count(*) FROM gone""",
                ttl, batch,
            )
        forgotten += deleted
        if deleted < batch:
            return forgotten


async def keep_forgetting_expired_answers(pool: asyncpg.Pool, ttl: timedelta) -> None:
    """Forever: forget expired answers, then wait (half the TTL, at most `FORGET_EVERY_SECONDS`)."""
    interval = min(FORGET_EVERY_SECONDS, max(0.5, ttl.total_seconds() / 2))
    while True:
        try:
            await forget_expired_answers(pool, ttl)
        except DATABASE_UNAVAILABLE as exc:  # the next round retries; the table only grows meanwhile
            log.warning("idempotency keys: database unavailable (%s); forgetting later", type(exc).__name__)
        await asyncio.sleep(interval)
