"""Payout's lists (`GET /payouts`, `GET /payout-runs`): read from the command side's own record.

`payouts` and `payout_runs` (`handlers.DDL`) are written in the transaction that appends each run's
and each payment's events, so a list is exact the moment a command commits. Both are listed in the
order the runs were made: payouts by (`scheduled_at`, `payout_id`), runs by (`started_at`, `run_id`),
each pair the keyset a cursor holds and an index of its own. `scheduled_at` and `started_at` are the
run's business time (`run_at`), which a run may set in the past: a run made while a client pages, with
a time before the page it is on, is on no page of that walk; nothing is ever listed twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import asyncpg
from pydantic import AwareDatetime, StringConstraints, TypeAdapter

from services.payout.projections import whole_rupiah
from shared.timeutil import to_wib
from shared.web.inputs import STORABLE
from shared.web.pages import decode_cursor

PAYOUTS, RUNS = "payouts", "payout-runs"
STATUSES = ("scheduled", "paid", "failed")
#: A cursor's key: the last item's moment and id (ids are at most 100 characters, `shared.web.inputs.Id`).
_KEY = TypeAdapter(tuple[AwareDatetime, Annotated[str, StringConstraints(min_length=1, max_length=200), STORABLE]])

DDL = """
CREATE INDEX IF NOT EXISTS payouts_listed ON payouts (scheduled_at, payout_id);
CREATE INDEX IF NOT EXISTS payout_runs_listed ON payout_runs (started_at, run_id);
"""

Key = tuple[datetime, str]


async def install(pool: asyncpg.Pool) -> None:
    """The lists' indexes, on the command side's tables (installed before this)."""
    async with pool.acquire() as conn:
        await conn.execute(DDL)


def key_after(list_name: str, cursor: str | None) -> Key | None:
    """The key a page of `list_name` starts after (None: the first page); 400 `invalid-cursor` for a bad one."""
    return None if cursor is None else decode_cursor(list_name, cursor, _KEY)


def _cursor_key(moment: datetime, item_id: str) -> tuple[str, str]:
    return to_wib(moment).isoformat(), item_id


@dataclass(frozen=True)
class PayoutFilter:
    run_id: str | None = None
    artisan_id: str | None = None
    status: str | None = None


async def payouts(pool: asyncpg.Pool, where: PayoutFilter, *, after: Key | None,
                  limit: int) -> list[tuple[tuple[str, str], dict[str, Any]]]:
    """Up to `limit` payouts after the key `after`, in the order their runs were made: (cursor key, item)."""
    moment, last = after or (None, None)
    rows = await pool.fetch(
        """SELECT payout_id, run_id, artisan_id, amount_idr, status, scheduled_at FROM payouts
           WHERE ($1::timestamptz IS NULL OR (scheduled_at, payout_id) > ($1, $2::text))
             AND ($3::text IS NULL OR run_id = $3) AND ($4::text IS NULL OR artisan_id = $4)
             AND ($5::text IS NULL OR status = $5)
           ORDER BY scheduled_at, payout_id LIMIT $6""",
        moment, last, where.run_id, where.artisan_id, where.status, limit)
    return [(_cursor_key(row["scheduled_at"], row["payout_id"]), {
        "payout_id": row["payout_id"], "run_id": row["run_id"], "artisan_id": row["artisan_id"],
        "amount_idr": row["amount_idr"], "status": row["status"],
        "scheduled_at": to_wib(row["scheduled_at"]).isoformat(),
    }) for row in rows]


async def runs(pool: asyncpg.Pool, *, after: Key | None, limit: int) -> list[tuple[tuple[str, str], dict[str, Any]]]:
    """Up to `limit` payout runs after the key `after`, in the order they were made, each with how many
    payouts it scheduled, their total and how many of them are scheduled, paid and failed: (cursor key, item)."""
    moment, last = after or (None, None)
    # The page of runs first (by its index), then its payouts' sums (by `payouts_by_run`).
    rows = await pool.fetch(
        """SELECT r.run_id, r.period_end, r.started_at, count(p.payout_id) AS payouts,
                  sum(p.amount_idr) AS total_idr,
                  count(*) FILTER (WHERE p.status = 'scheduled') AS scheduled,
                  count(*) FILTER (WHERE p.status = 'paid') AS paid,
                  count(*) FILTER (WHERE p.status = 'failed') AS failed
           FROM (SELECT * FROM payout_runs
                 WHERE $1::timestamptz IS NULL OR (started_at, run_id) > ($1, $2::text)
                 ORDER BY started_at, run_id LIMIT $3) r
           LEFT JOIN payouts p ON p.run_id = r.run_id
           GROUP BY r.run_id, r.period_end, r.started_at
           ORDER BY r.started_at, r.run_id""",
        moment, last, limit)
    return [(_cursor_key(row["started_at"], row["run_id"]), {
        "run_id": row["run_id"], "period_end": to_wib(row["period_end"]).isoformat(),
        "started_at": to_wib(row["started_at"]).isoformat(), "payouts": row["payouts"],
        "total_idr": whole_rupiah(row["total_idr"]),
        "by_status": {status: row[status] for status in STATUSES},
    }) for row in rows]
