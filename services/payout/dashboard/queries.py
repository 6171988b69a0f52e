"""The dashboard's queries: the read model's counts beside the ledger's balances, in one snapshot, so
the dashboard can never disagree with `/ledger/balances`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

import asyncpg

from services.payout import domain, projections
from services.payout.invoicing import CollaboratorAccount, collaborators_in
from shared.timeutil import wib_now


@dataclass(frozen=True)
class CohortRow:
    cohort_id: str
    rusunawa: str | None  # None: enrolments arrived, the cohort's own event not yet
    skill: str | None
    product_focus: str | None
    starts_on: date | None
    ends_on: date | None
    capacity: int | None
    enrolled: int
    completed: int
    withdrawn: int


@dataclass(frozen=True)
class WeekProduct:
    week: date  # the Monday of the ISO week
    product: str | None
    woven: int
    passed: int
    failed: int

    @property
    def inspected(self) -> int:
        return self.passed + self.failed

    @property
    def pending(self) -> int:
        return self.woven - self.inspected


@dataclass(frozen=True)
class ArtisanRow:
    artisan_id: str
    woven: int
    passed: int
    earned_idr: int
    paid_idr: int
    owed_idr: int  # payable + in transit
    in_transit_idr: int  # of which scheduled and not yet confirmed paid or failed


@dataclass(frozen=True)
class RunRow:
    run_id: str | None
    period_end: datetime | None
    payouts: int
    scheduled_idr: int
    paid_idr: int
    failed_idr: int

    @property
    def in_transit_idr(self) -> int:
        return self.scheduled_idr - self.paid_idr - self.failed_idr


@dataclass(frozen=True)
class Ovop:
    rusunawa: str
    product: str  # the focus of its latest cohort
    others: tuple[str, ...]  # earlier cohorts' different focus, if any
    cohorts: int


@dataclass(frozen=True)
class Dashboard:
    generated_at: datetime
    cohorts: Sequence[CohortRow]
    ovop: Sequence[Ovop]
    weeks: Sequence[WeekProduct]
    artisans: Sequence[ArtisanRow]
    runs: Sequence[RunRow]
    #: What each collaborator was invoiced, paid and owes, from the ledger (issue 29).
    collaborators: Sequence[CollaboratorAccount] = ()

    @property
    def products(self) -> list[str | None]:
        """Every product seen: the rusunawa's OVOP products first, then by pieces woven, then by name.

        It is the order of the charts' colours and of the tables' rows, so each product keeps its
        colour from one week to the next.
        """
        focus = {o.product for o in self.ovop}
        totals: dict[str | None, int] = {}
        for row in self.weeks:
            totals[row.product] = totals.get(row.product, 0) + row.woven
        return sorted(totals, key=lambda p: (p not in focus, p is None, -totals[p], p or ""))


async def read_dashboard(conn: asyncpg.Connection) -> Dashboard:
    """Everything the page shows, from one snapshot of the read model and the ledger together."""
    async with conn.transaction(readonly=True, isolation="repeatable_read"):
        cohort_rows = await conn.fetch(
            """SELECT cohort_id, c.rusunawa, c.skill, c.product_focus, c.starts_on, c.ends_on, c.capacity,
                      coalesce(e.enrolled, 0) AS enrolled, coalesce(e.completed, 0) AS completed,
                      coalesce(e.withdrawn, 0) AS withdrawn
               FROM dashboard_cohorts c
               FULL JOIN (SELECT cohort_id, count(*) FILTER (WHERE enrolled)::int AS enrolled,
                                 count(*) FILTER (WHERE completed)::int AS completed,
                                 count(*) FILTER (WHERE withdrawn)::int AS withdrawn
                          FROM dashboard_enrolments GROUP BY cohort_id) e USING (cohort_id)
               ORDER BY c.starts_on NULLS LAST, c.rusunawa, cohort_id"""
        )
        week_rows = await conn.fetch(
            """SELECT week, product, count(*)::int AS woven, count(*) FILTER (WHERE qc = 'passed')::int AS passed,
                      count(*) FILTER (WHERE qc = 'failed')::int AS failed
               FROM dashboard_pieces GROUP BY week, product ORDER BY week, product NULLS LAST"""
        )
        piece_rows = await conn.fetch(
            """SELECT artisan_id, count(*)::int AS woven, count(*) FILTER (WHERE qc = 'passed')::int AS passed
               FROM dashboard_pieces GROUP BY artisan_id"""
        )
        # A run's totals are numeric sums read as Python integers, never cast to bigint (see
        # `projections`: an amount is bounded, a total is not).
        run_rows = await conn.fetch(
            """SELECT run_id, min(period_end) AS period_end, count(*)::int AS payouts,
                      sum(amount_idr) AS scheduled_idr,
                      sum(amount_idr) FILTER (WHERE outcome = 'paid') AS paid_idr,
                      sum(amount_idr) FILTER (WHERE outcome = 'failed') AS failed_idr
               FROM dashboard_payouts GROUP BY run_id ORDER BY min(period_end) NULLS LAST, run_id"""
        )
        accounts = await projections.balances(conn)
    cohorts = [CohortRow(**dict(row)) for row in cohort_rows]
    return Dashboard(
        generated_at=wib_now(),
        cohorts=cohorts,
        ovop=_ovop(cohorts),
        weeks=[WeekProduct(**dict(row)) for row in week_rows],
        artisans=_artisans(accounts, {row["artisan_id"]: (row["woven"], row["passed"]) for row in piece_rows}),
        runs=[RunRow(row["run_id"], row["period_end"], row["payouts"],
                     *(projections.whole_rupiah(row[f]) for f in ("scheduled_idr", "paid_idr", "failed_idr")))
              for row in run_rows],
        collaborators=collaborators_in(accounts),
    )


def _ovop(cohorts: Sequence[CohortRow]) -> list[Ovop]:
    by_rusunawa: dict[str, list[CohortRow]] = {}
    for cohort in cohorts:
        if cohort.rusunawa is not None:
            by_rusunawa.setdefault(cohort.rusunawa, []).append(cohort)
    result = []
    for rusunawa, rows in sorted(by_rusunawa.items()):
        # One village, one product: the latest cohort's focus is the rusunawa's product now.
        rows = sorted(rows, key=lambda c: (c.starts_on or date.min, c.cohort_id))
        current = rows[-1].product_focus or ""
        others = tuple(dict.fromkeys(c.product_focus for c in reversed(rows) if c.product_focus != current))
        result.append(Ovop(rusunawa, current, tuple(o for o in others if o), len(rows)))
    return result


def _artisans(accounts: dict[str, int], pieces: dict[str, tuple[int, int]]) -> list[ArtisanRow]:
    """Per artisan, the ledger's balances: what flowed into her accounts is what she earned."""
    in_ledger = set()
    for account in accounts:
        # `artisan:<id>:<kind>`; ids are opaque and may hold colons, kinds never do.
        prefix, _, rest = account.partition(":")
        artisan_id = rest.rpartition(":")[0]
        if prefix == "artisan" and artisan_id:
            in_ledger.add(artisan_id)
    rows = []
    for artisan_id in in_ledger | pieces.keys():
        payable, in_transit, paid = (accounts.get(a, 0) for a in domain.artisan_accounts(artisan_id))
        woven, passed = pieces.get(artisan_id, (0, 0))
        # Money moves only between her three accounts once earned, so their sum is what she earned.
        rows.append(ArtisanRow(artisan_id, woven, passed, payable + in_transit + paid, paid, payable + in_transit,
                               in_transit))
    return sorted(rows, key=lambda r: (-r.earned_idr, r.artisan_id))

