"""The dashboard's queries: the read model's counts beside the ledger's balances, in one snapshot, so
the dashboard can never disagree with `/ledger/balances`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

import asyncpg

from services.payout import domain, projections
from services.payout.invoicing import CollaboratorAccount, collaborators_in
from shared.contracts.events import same_label
from shared.db import normalised
from shared.materials import DEFAULT_IDLE_WEEKS, IssueFact, PieceFact, Reconciliation, UsageFact, reconcile
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
    product: str  # its registered OVOP product (or, unregistered, the focus of its latest cohort)
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
    #: The rusunawa the page is scoped to (None: the whole programme), and every registered one.
    rusunawa: str | None = None
    places: Sequence[str] = ()
    #: Materials issued beside what the pieces needed, as of today (docs/materials.md).
    materials: Reconciliation | None = None
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


async def read_dashboard(
    conn: asyncpg.Connection, rusunawa: str | None = None, *, idle_weeks: int = DEFAULT_IDLE_WEEKS
) -> Dashboard:
    """Everything the page shows, from one snapshot of the read model and the ledger together; with
    `rusunawa`, only that rusunawa's cohorts, and the pieces, money and runs of the residents who live there."""
    # $1: the rusunawa, or NULL for the whole programme. A resident is in it by where she registered.
    mine = f"""($1::text IS NULL OR artisan_id IN (SELECT resident_id FROM dashboard_residents
                                                  WHERE {normalised("rusunawa")} = {normalised("$1")}))"""
    async with conn.transaction(readonly=True, isolation="repeatable_read"):
        cohort_rows = await conn.fetch(
            f"""SELECT cohort_id, c.rusunawa, c.skill, c.product_focus, c.starts_on, c.ends_on, c.capacity,
                      coalesce(e.enrolled, 0) AS enrolled, coalesce(e.completed, 0) AS completed,
                      coalesce(e.withdrawn, 0) AS withdrawn
               FROM dashboard_cohorts c
               FULL JOIN (SELECT cohort_id, count(*) FILTER (WHERE enrolled)::int AS enrolled,
                                 count(*) FILTER (WHERE completed)::int AS completed,
                                 count(*) FILTER (WHERE withdrawn)::int AS withdrawn
                          FROM dashboard_enrolments GROUP BY cohort_id) e USING (cohort_id)
               WHERE $1::text IS NULL OR {normalised("c.rusunawa")} = {normalised("$1")}
               ORDER BY c.starts_on NULLS LAST, c.rusunawa, cohort_id""", rusunawa,
        )
        week_rows = await conn.fetch(
            f"""SELECT week, product, count(*)::int AS woven, count(*) FILTER (WHERE qc = 'passed')::int AS passed,
                      count(*) FILTER (WHERE qc = 'failed')::int AS failed
               FROM dashboard_pieces WHERE {mine} GROUP BY week, product ORDER BY week, product NULLS LAST""",
            rusunawa,
        )
        piece_rows = await conn.fetch(
            f"""SELECT artisan_id, count(*)::int AS woven, count(*) FILTER (WHERE qc = 'passed')::int AS passed
               FROM dashboard_pieces WHERE {mine} GROUP BY artisan_id""", rusunawa,
        )
        # A run's totals are numeric sums read as Python integers, never cast to bigint (see
        # `projections`: an amount is bounded, a total is not).
        run_rows = await conn.fetch(
            f"""SELECT run_id, min(period_end) AS period_end, count(*)::int AS payouts,
                      sum(amount_idr) AS scheduled_idr,
                      sum(amount_idr) FILTER (WHERE outcome = 'paid') AS paid_idr,
                      sum(amount_idr) FILTER (WHERE outcome = 'failed') AS failed_idr
               FROM dashboard_payouts WHERE {mine}
               GROUP BY run_id ORDER BY min(period_end) NULLS LAST, run_id""", rusunawa,
        )
        residents = None if rusunawa is None else {row["resident_id"] for row in await conn.fetch(
            f"""SELECT resident_id FROM dashboard_residents WHERE {normalised("rusunawa")} = {normalised("$1")}""",
            rusunawa)}
        registered = {row["name"]: row["ovop_product"] for row in await conn.fetch(
            "SELECT name, ovop_product FROM dashboard_rusunawa ORDER BY name")}
        accounts = await projections.balances(conn)
        materials = await _material_facts(conn)
    now = wib_now()
    cohorts = [CohortRow(**dict(row)) for row in cohort_rows]
    pieces = {row["artisan_id"]: (row["woven"], row["passed"]) for row in piece_rows}
    artisans = _artisans(accounts, pieces)
    return Dashboard(
        generated_at=now,
        cohorts=cohorts,
        ovop=_ovop(cohorts, registered, rusunawa),
        weeks=[WeekProduct(**dict(row)) for row in week_rows],
        artisans=[a for a in artisans if residents is None or a.artisan_id in residents],
        runs=[RunRow(row["run_id"], row["period_end"], row["payouts"],
                     *(projections.whole_rupiah(row[f]) for f in ("scheduled_idr", "paid_idr", "failed_idr")))
              for row in run_rows],
        rusunawa=rusunawa,
        places=sorted(registered),
        materials=reconcile(*materials, as_of=now.date(), idle_weeks=idle_weeks),
        collaborators=collaborators_in(accounts),
    )


async def _material_facts(conn: asyncpg.Connection) -> tuple[list[UsageFact], list[IssueFact], list[PieceFact]]:
    """What `shared.materials.reconcile` needs, from the dashboard's materials tables."""
    usages = await conn.fetch(
        """SELECT collaborator_id, product, material, unit, quantity_per_piece, effective_from
           FROM dashboard_material_usages""")
    issues = await conn.fetch(
        "SELECT artisan_id, collaborator_id, material, unit, quantity, issued_at FROM dashboard_material_issues")
    # A piece whose piece-woven has not arrived yet is not counted: it has no moment to be reconciled at.
    pieces = await conn.fetch(
        """SELECT artisan_id, collaborator_id, product, woven_at, count(*)::int AS woven,
                  count(*) FILTER (WHERE passed)::int AS passed
           FROM dashboard_material_pieces WHERE woven_at IS NOT NULL
           GROUP BY artisan_id, collaborator_id, product, woven_at""")
    return ([UsageFact(**dict(row)) for row in usages], [IssueFact(**dict(row)) for row in issues],
            [PieceFact(**dict(row)) for row in pieces])


def _ovop(cohorts: Sequence[CohortRow], registered: dict[str, str], rusunawa: str | None) -> list[Ovop]:
    """Each rusunawa's OVOP product: the registered one; for a rusunawa not (yet) registered, the focus of
    its latest cohort. With `rusunawa`, that one alone."""
    by_rusunawa: dict[str, list[CohortRow]] = {name: [] for name in registered
                                               if rusunawa is None or same_label(name, rusunawa)}
    for cohort in cohorts:
        if cohort.rusunawa is not None:
            by_rusunawa.setdefault(cohort.rusunawa, []).append(cohort)
    result = []
    for place, rows in sorted(by_rusunawa.items()):
        rows = sorted(rows, key=lambda c: (c.starts_on or date.min, c.cohort_id))
        current = registered.get(place) or (rows[-1].product_focus or "" if rows else "")
        others = tuple(dict.fromkeys(c.product_focus for c in reversed(rows) if c.product_focus != current))
        result.append(Ovop(place, current, tuple(o for o in others if o), len(rows)))
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

