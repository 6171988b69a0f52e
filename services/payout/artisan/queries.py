"""What one artisan's page shows, read in one snapshot: her pieces and payouts from the read model,
her money from the ledger (so the page never disagrees with her statement), and which pieces each
payout paid for, as far as the ledger can tell (`allocate`)."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import asyncpg

from services.payout import domain, projections
from shared.timeutil import wib_now

#: Sorts what has no date of its own last.
_NO_DATE = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Piece:
    piece_id: str
    product: str | None
    rate_idr: int | None
    woven_at: datetime | None
    qc: str | None  # 'passed', 'failed', or None: not inspected yet
    inspected_at: datetime | None
    earned_idr: int | None
    defects: tuple[str, ...]


@dataclass(frozen=True)
class Share:
    """Part of a payout: what it paid for one piece (all of the piece's earning, unless `partial`)."""

    piece_id: str
    amount_idr: int
    partial: bool


@dataclass(frozen=True)
class Payslip:
    payout_id: str
    amount_idr: int
    run_id: str | None
    period_end: datetime | None
    scheduled_at: datetime | None
    outcome: str | None  # 'paid', 'failed', or None: being sent
    method: str | None
    reference: str | None
    paid_at: datetime | None
    failure_reason: str | None
    settled_at: datetime | None
    shares: tuple[Share, ...] = ()


@dataclass(frozen=True)
class ArtisanPage:
    artisan_id: str
    generated_at: datetime
    earned_idr: int
    payable_idr: int
    in_transit_idr: int
    paid_idr: int
    pieces: Sequence[Piece]  # newest first
    payslips: Sequence[Payslip]  # newest first

    @property
    def owed_idr(self) -> int:
        """Earned and not yet received: waiting for the next payout run, or sent and not yet confirmed."""
        return self.payable_idr + self.in_transit_idr


async def read_page(conn: asyncpg.Connection, artisan_id: str) -> ArtisanPage:
    """Everything `artisan_id`'s page shows, from one snapshot of the read model and the ledger."""
    async with conn.transaction(readonly=True, isolation="repeatable_read"):
        piece_rows = await conn.fetch(
            """SELECT piece_id, product, rate_idr, woven_at, qc, inspected_at, earned_idr, defects
               FROM artisan_page_pieces WHERE artisan_id = $1""",
            artisan_id,
        )
        payout_rows = await conn.fetch(
            """SELECT payout_id, amount_idr, run_id, period_end, scheduled_at, outcome, method, reference, paid_at,
                      failure_reason, settled_at
               FROM artisan_page_payouts WHERE artisan_id = $1""",
            artisan_id,
        )
        statement = await projections.statement(conn, artisan_id)
    pieces = [Piece(**{**dict(row), "defects": tuple(row["defects"] or ())}) for row in piece_rows]
    pieces.sort(key=lambda p: (p.woven_at or p.inspected_at or _NO_DATE, p.piece_id), reverse=True)
    payouts = {row["payout_id"]: Payslip(**dict(row)) for row in payout_rows}
    shares = allocate(statement.entries, {p.payout_id: p.period_end for p in payouts.values()})
    payslips = [replace(p, shares=tuple(shares.get(p.payout_id, ()))) for p in payouts.values()]
    payslips.sort(key=lambda p: (p.scheduled_at or p.settled_at or _NO_DATE, p.payout_id), reverse=True)
    return ArtisanPage(artisan_id, wib_now(), statement.earned_idr, statement.payable_idr, statement.in_transit_idr,
                       statement.paid_idr, pieces, payslips)


def allocate(entries: Iterable[projections.StatementEntry],
             period_ends: Mapping[str, datetime | None]) -> dict[str, list[Share]]:
    """Which pieces each payout paid for, replaying her ledger entries in event-time order.

    The ledger moves totals, not pieces: a run schedules what she earned up to its period's end
    minus what was already scheduled. So the pieces are matched oldest first: each payout takes the
    earliest earnings (by QC time, up to its period's end) that no earlier payout took, and a failed
    payout hands its pieces back for a later one. A piece is `partial` where one payout could not
    hold all of it (a payout is capped at the amount bound).
    """
    transactions: dict[str, projections.StatementEntry] = {}
    for entry in entries:  # two postings per scheduling on her accounts; one transaction
        transactions.setdefault(entry.transaction_id, entry)
    pool: list[list] = []  # [event_time, piece_id, amount left, whole amount], oldest first
    taken: dict[str, list[tuple[list, int]]] = {}
    result: dict[str, list[Share]] = {}
    for tx in sorted(transactions.values(), key=lambda t: (t.event_time, t.transaction_id)):
        amount = abs(tx.amount_idr)
        if tx.kind == domain.Kind.EARNED:
            bisect.insort(pool, [tx.event_time, tx.subject_id, amount, amount], key=lambda item: (item[0], item[1]))
        elif tx.kind == domain.Kind.SCHEDULED:
            cut = period_ends.get(tx.subject_id) or tx.event_time
            need, takes = amount, []
            for item in pool:
                if need == 0:
                    break
                if item[0] > cut or item[2] == 0:
                    continue
                part = min(need, item[2])
                item[2] -= part
                need -= part
                takes.append((item, part))
            taken[tx.subject_id] = takes
            result[tx.subject_id] = [Share(item[1], part, part != item[3]) for item, part in takes]
        elif tx.kind == domain.Kind.FAILED:
            for item, part in taken.pop(tx.subject_id, []):
                item[2] += part  # back to what she is owed, for a later payout to take
    return result
