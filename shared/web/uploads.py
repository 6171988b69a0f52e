"""An upload of many independent commands (one per row), each run exactly once however often it is retried.

The upload's `Idempotency-Key` names the upload; each row's command runs through
`shared.web.commands.execute` as a command of its own, in its own unit of work,
under a key derived from the upload's key and the row's number. So:

- a retry after a timeout (same key, same rows) records nothing twice: a row
  recorded before answers its stored answer, and is reported as done earlier;
- rows are independent: one refused row undoes nothing of another, and a
  failure half-way (a crash, the database gone) leaves the rows done so far
  recorded with their answers, which the retry picks up;
- the upload's whole answer is stored under its key once every row has one,
  so every later retry gets exactly that answer;
- the key used for a different upload (other rows) is `422 idempotency-key-reused`,
  before any row runs.

The upload's key lives in the commands' own table (`idempotency_keys`), which
forgets it with the rows' keys (`ANYAM_IDEMPOTENCY_KEY_TTL_SECONDS`). While the
upload runs its answer is NULL; a command with the same key (another route)
meets a different fingerprint there and is refused, as for any reused key.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import asyncpg

from shared.web.access import Principal
from shared.web.commands import Action, execute, fingerprint
from shared.web.problems import Problem

REUSED = "idempotency-key-reused"


@dataclass(frozen=True)
class RowAnswer:
    """What a row's command answered (a status and a JSON body), and whether an earlier attempt answered it."""

    status: int
    body: dict[str, Any]
    earlier: bool


class Upload:
    """One upload's rows, run once each for the upload's key. Use `start`, then `run` per row, then `finish`."""

    def __init__(self, pool: asyncpg.Pool, principal: Principal, key: str, *, method: str, path: str,
                 payload: Any) -> None:
        self.pool = pool
        self.scope = principal.name
        self.principal = principal
        self.key = key
        self.method, self.path = method, path
        self.fingerprint = fingerprint(method, path, payload)
        # Row keys: the upload key's digest (any length, any characters) and the row number; well under
        # the 200-character limit of a key, and unlike any key a client sends to another route by chance.
        self._row_prefix = f"upload:{hashlib.sha256(key.encode()).hexdigest()[:40]}:row-"
        self._earlier: dict[str, tuple[str, int, dict[str, Any]]] = {}

    async def start(self, rows: list[int]) -> dict[str, Any] | None:
        """Claim the key for this upload; the whole answer stored for it before, if there is one.

        Raises `Problem(422, idempotency-key-reused)` when the key was used for anything else.
        """
        async with self.pool.acquire() as conn:
            claimed = await conn.fetchval(
                """INSERT INTO idempotency_keys (scope, key, fingerprint) VALUES ($1, $2, $3)
                   ON CONFLICT DO NOTHING RETURNING true""",
                self.scope, self.key, self.fingerprint,
            )
            if not claimed:
                stored = await conn.fetchrow(
                    "SELECT fingerprint, body FROM idempotency_keys WHERE scope = $1 AND key = $2",
                    self.scope, self.key,
                )
                if stored is not None and stored["fingerprint"] != self.fingerprint:
                    raise Problem(422, REUSED, "This Idempotency-Key was already used for a different request; "
                                               "use a new key for a new upload.")
                if stored is not None and stored["body"] is not None:
                    answer: dict[str, Any] = json.loads(stored["body"])
                    return answer
                # Claimed by an attempt that has not finished (or never will): rows it did keep their answers.
            found = await conn.fetch(
                "SELECT key, fingerprint, status, body FROM idempotency_keys WHERE scope = $1 AND key = ANY($2)",
                self.scope, [self._row_key(row) for row in rows],
            )
        self._earlier = {r["key"]: (r["fingerprint"], r["status"], json.loads(r["body"]))
                         for r in found if r["body"] is not None}
        return None

    async def run(self, row: int, payload: Any, action: Action, *, one_statement: bool = False) -> RowAnswer:
        """The row's command run once for this upload (or its answer from an earlier attempt)."""
        key, row_fingerprint = self._row_key(row), fingerprint(self.method, f"{self.path}#row", payload)
        if key in self._earlier:
            stored_fingerprint, status, body = self._earlier[key]
            if stored_fingerprint != row_fingerprint:
                return RowAnswer(422, _reused(), earlier=False)
            return RowAnswer(status, body, earlier=True)
        try:
            response = await execute(self.pool, action, principal=self.principal, idempotency_key=key,
                                     request_fingerprint=row_fingerprint, one_statement=one_statement)
        except Problem as problem:
            if problem.code != REUSED:
                raise  # e.g. `busy`: not an answer to keep; the upload's retry runs the row again
            return RowAnswer(422, problem.body(), earlier=False)
        return RowAnswer(response.status_code, json.loads(bytes(response.body)), earlier=False)

    async def finish(self, answer: dict[str, Any]) -> dict[str, Any]:
        """Store `answer` as the upload's; the answer that stands (another attempt's, if it finished first)."""
        async with self.pool.acquire() as conn:
            stored = await conn.fetchval(
                """UPDATE idempotency_keys SET status = 200, body = $3
                   WHERE scope = $1 AND key = $2 AND body IS NULL RETURNING true""",
                self.scope, self.key, json.dumps(answer),
            )
            if stored:
                return answer
            earlier = await conn.fetchval(
                "SELECT body FROM idempotency_keys WHERE scope = $1 AND key = $2 AND fingerprint = $3",
                self.scope, self.key, self.fingerprint,
            )
        return json.loads(earlier) if earlier is not None else answer

    def _row_key(self, row: int) -> str:
        return f"{self._row_prefix}{row}"


def _reused() -> dict[str, Any]:
    return Problem(422, REUSED, "This row's key was already used for a different request.").body()
