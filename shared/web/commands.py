"""Running one HTTP command: idempotently, atomically with its events, retried on concurrency conflicts.

A command's events, its response and its `Idempotency-Key` commit in one
transaction: a retry with the same key finds the stored response and changes
nothing, even when the first attempt's client never saw the answer. Two
requests with the same key at once are serialised by the key's row, so the
second returns the first's response. Refusals (4xx problems) are stored too,
so a retry gets the same answer, not a different one because the world moved.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
from fastapi import Request
from fastapi.responses import JSONResponse

from shared.domain import Refused
from shared.eventstore import ConcurrencyConflict
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
"""

MAX_KEY_LENGTH = 200
CONFLICT_RETRIES = 10


@dataclass(frozen=True)
class Outcome:
    """What a command answers: a status and a JSON body."""

    status: int
    body: dict[str, Any]


Action = Callable[[asyncpg.Connection], Awaitable[Outcome]]


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
) -> JSONResponse:
    """Run `action` in a transaction (once per idempotency key) and answer its outcome or problem."""
    if idempotency_key is not None and not 0 < len(idempotency_key) <= MAX_KEY_LENGTH:
        raise Problem(400, "invalid-idempotency-key", f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters.")
    scope = principal.name
    for _ in range(CONFLICT_RETRIES):
        try:
            async with pool.acquire() as conn, conn.transaction():
                if idempotency_key is None:
                    outcome, refused = await _outcome_or_refusal(action, conn)
                    if refused:
                        raise _Undo(outcome)  # nothing to keep: the whole transaction rolls back
                    return _respond(outcome)
                stored = await _claim(conn, scope, idempotency_key, request_fingerprint)
                if stored is not None:
                    return _respond(stored)
                # A refused command leaves nothing behind but its stored answer. The savepoint is
                # never released (COMMIT does that), a round trip saved on every accepted command.
                await conn.execute("SAVEPOINT command")
                outcome, refused = await _outcome_or_refusal(action, conn)
                if refused:
                    await conn.execute("ROLLBACK TO SAVEPOINT command")
                await conn.execute(
                    "UPDATE idempotency_keys SET status = $3, body = $4 WHERE scope = $1 AND key = $2",
                    scope, idempotency_key, outcome.status, json.dumps(outcome.body),
                )
                return _respond(outcome)
        except _Undo as undone:
            return _respond(undone.outcome)
        except ConcurrencyConflict:
            continue  # someone else appended to the stream first: load again and decide again
    raise Problem(409, "busy", "The record was changed by many requests at once; try again.")


class _Undo(Exception):
    """Leaves a transaction by rolling it back, carrying the refusal to answer."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.status)
        self.outcome = outcome


async def _outcome_or_refusal(action: Action, conn: asyncpg.Connection) -> tuple[Outcome, bool]:
    """The action's outcome, or the problem it raised to refuse (whose writes must then be undone).

    An action may also *return* a 4xx outcome: that is an answer whose writes it keeps (e.g. the
    feedback a refused QC submission leaves for its collaborator).
    """
    try:
        return await action(conn), False
    except Problem as problem:
        return Outcome(problem.status, problem.body()), True
    except Refused as refusal:
        return Outcome(refusal.status, Problem.from_refusal(refusal).body()), True


async def install(pool: asyncpg.Pool) -> None:
    """Create the idempotency table if it is missing."""
    async with pool.acquire() as conn:
        await conn.execute(IDEMPOTENCY_DDL)


async def _claim(conn: asyncpg.Connection, scope: str, key: str, request_fingerprint: str) -> Outcome | None:
    # Waits for a concurrent request holding the same key, then sees its committed answer.
    claimed = await conn.fetchval(
        """INSERT INTO idempotency_keys (scope, key, fingerprint) VALUES ($1, $2, $3)
           ON CONFLICT DO NOTHING RETURNING true""",
        scope, key, request_fingerprint,
    )
    if claimed:
        return None
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


RunCommand = Callable[[Request, Principal, "str | None", Any, Action], Awaitable[JSONResponse]]


def command_runner(pool: Callable[[], asyncpg.Pool]) -> RunCommand:
    """What every router's command endpoints call: `execute` with the request's fingerprint.

    `pool` is looked up per call, because routers are built before the runtime opens its pool.
    """

    async def run(
        request: Request, principal: Principal, key: str | None, payload: Any, action: Action
    ) -> JSONResponse:
        return await execute(
            pool(), action, principal=principal, idempotency_key=key,
            request_fingerprint=fingerprint(request.method, request.url.path, payload),
        )

    return run
