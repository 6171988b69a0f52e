"""The programme dashboard (`GET /dashboard`): its read model, its queries and its door.

The read model lives in the payout database and is fed by its own transactional
consumer (`payout-dashboard`) on `enrollment`, `production` and `payout`. Its
rows commit with the consumer's offsets and event ids, so each event counts
once; every write below is also an idempotent upsert, so even a replay into a
fresh database gives the same tables.

It keeps counts, never money: what artisans earned, were paid and are owed is
read from the ledger (`projections.balances`) in the same snapshot, so the
dashboard can never disagree with `/ledger/balances`. Payout runs are the
exception the ledger cannot answer (it does not know runs), and they come from
the payout events themselves.

Residents appear by their opaque id only: no event carries personal data, and
neither does this page.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import quote, unquote

import asyncpg
from aiokafka import ConsumerRecord
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.payout import domain, projections
from services.payout.dashboard_view import render_dashboard, render_refusal
from shared.contracts import Envelope, Topic
from shared.contracts.events import (
    MAX_RUPIAH,
    CohortScheduled,
    Enrolled,
    EventData,
    Paid,
    PayoutFailed,
    PayoutScheduled,
    PieceWoven,
    QcFailed,
    QcPassed,
    TrainingCompleted,
    Withdrawn,
)
from shared.eventstore import BatchHandler, Reject
from shared.eventstore.consumer import BatchItems
from shared.service import ServiceRuntime
from shared.timeutil import to_wib, wib_now
from shared.web.access import AUDITOR, STAFF, Access, Principal
from shared.web.problems import Problem

#: The consumer group of the dashboard's read model; like the ledger's, it carries the topic prefix.
DASHBOARD_CONSUMER = "payout-dashboard"
DASHBOARD_TOPICS = (Topic.ENROLLMENT, Topic.PRODUCTION, Topic.PAYOUT)

#: Serialises installs of these tables by several instances starting at once (its own key: see
#: tests/unit/test_lock_keys.py).
INSTALL_LOCK_KEY = 0x616E79616D03

COOKIE = "anyam_token"
#: A browser forgets the token after a working day, even if it is never closed.
COOKIE_MAX_AGE = 12 * 60 * 60
LANGUAGES = ("id", "en")


def dashboard_consumer(topic_prefix: str = "") -> str:
    """The dashboard's consumer group in a deployment (same prefix scheme as `ledger_consumer`)."""
    return f"{topic_prefix}{DASHBOARD_CONSUMER}"


# --- the read model -------------------------------------------------------------------------------

DDL = f"""
CREATE TABLE IF NOT EXISTS dashboard_cohorts (
    cohort_id     text    PRIMARY KEY,
    rusunawa      text    NOT NULL,
    skill         text    NOT NULL,
    product_focus text    NOT NULL,
    starts_on     date    NOT NULL,
    ends_on       date    NOT NULL,
    capacity      integer NOT NULL
);
-- One row per resident and cohort; the flags say what happened, in any order of arrival.
-- Cohort events are keyed by cohort and residents' by resident (SPEC §4), so an enrolment
-- can arrive before its cohort: the cohort's details are joined at read time.
CREATE TABLE IF NOT EXISTS dashboard_enrolments (
    cohort_id   text    NOT NULL,
    resident_id text    NOT NULL,
    enrolled    boolean NOT NULL DEFAULT false,
    completed   boolean NOT NULL DEFAULT false,
    withdrawn   boolean NOT NULL DEFAULT false,
    PRIMARY KEY (cohort_id, resident_id)
);
-- One row per piece: its product and ISO week (of woven_at, in WIB) and its final QC verdict.
CREATE TABLE IF NOT EXISTS dashboard_pieces (
    piece_id   text PRIMARY KEY,
    artisan_id text NOT NULL,
    product    text,
    week       date NOT NULL,
    qc         text CHECK (qc IN ('passed', 'failed'))
);
CREATE INDEX IF NOT EXISTS dashboard_pieces_week ON dashboard_pieces (week, product);
-- One row per payout: its run and how it ended (NULL: still in transit).
CREATE TABLE IF NOT EXISTS dashboard_payouts (
    payout_id  text        PRIMARY KEY,
    artisan_id text        NOT NULL,
    run_id     text,
    period_end timestamptz,
    amount_idr bigint      NOT NULL CHECK (amount_idr >= 0),
    outcome    text        CHECK (outcome IN ('paid', 'failed')),
    CONSTRAINT dashboard_payouts_amount_idr_bounded CHECK (amount_idr <= {MAX_RUPIAH})
);
-- Added to a table made before amounts were bounded (SPEC §5), NOT VALID: it holds for every row
-- written from now on; the decoder has refused larger amounts before they get here.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = 'dashboard_payouts'::regclass
                   AND conname = 'dashboard_payouts_amount_idr_bounded') THEN
        ALTER TABLE dashboard_payouts
            ADD CONSTRAINT dashboard_payouts_amount_idr_bounded CHECK (amount_idr <= {MAX_RUPIAH}) NOT VALID;
    END IF;
END $$;
"""


async def install(pool: asyncpg.Pool) -> None:
    """The service's schema installer for the dashboard's tables."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", INSTALL_LOCK_KEY)
        await conn.execute(DDL)


def iso_monday(moment: datetime) -> date:
    """The Monday of `moment`'s ISO week, as the calendar in Jakarta reads it."""
    day = to_wib(moment).date()
    return day - timedelta(days=day.weekday())


async def project(conn: asyncpg.Connection, event: Envelope, record: ConsumerRecord) -> None:
    """The handler of the `payout-dashboard` consumer: fold one event into the read model.

    Never refuses: events of other types are simply not counted, and a second QC verdict
    or payout ending keeps the first (the ledger and production dead-letter those).
    """
    if (upsert := _upsert(event.data)) is not None:
        statement, arguments = upsert
        await conn.execute(statement, *arguments)


async def project_batch(conn: asyncpg.Connection, items: BatchItems) -> list[tuple[int, Reject]]:
    """`project` for a whole batch: one pipelined `executemany` per kind of upsert.

    Each kind keeps the batch's order. Across kinds order does not matter: each upsert only
    sets its own columns or fills empty ones (a piece's woven week and product override the
    ones an inspection guessed, whichever came first), so any interleaving ends the same.
    """
    batched: dict[str, list[tuple[Any, ...]]] = {}
    for event, _ in items:
        if (upsert := _upsert(event.data)) is not None:
            statement, arguments = upsert
            batched.setdefault(statement, []).append(arguments)
    for statement, rows in batched.items():
        await conn.executemany(statement, rows)
    return []


#: The `payout-dashboard` consumer's handler.
DASHBOARD_HANDLER = BatchHandler(apply_batch=project_batch, each=project)


def _upsert(data: EventData) -> tuple[str, tuple[Any, ...]] | None:
    """The statement and arguments that fold `data` into the read model (None: not counted)."""
    match data:
        case CohortScheduled():
            return (
                """INSERT INTO dashboard_cohorts VALUES ($1, $2, $3, $4, $5, $6, $7)
                   ON CONFLICT (cohort_id) DO NOTHING""",
                (data.cohort_id, data.rusunawa, data.skill, data.product_focus, data.starts_on, data.ends_on,
                data.capacity),
            )
        case Enrolled() | TrainingCompleted() | Withdrawn():
            flags: dict[type[EventData], str] = {
                Enrolled: "enrolled", TrainingCompleted: "completed", Withdrawn: "withdrawn"}
            flag = flags[type(data)]
            return (
                f"""INSERT INTO dashboard_enrolments (cohort_id, resident_id, {flag}) VALUES ($1, $2, true)
                    ON CONFLICT (cohort_id, resident_id) DO UPDATE SET {flag} = true""",
                (data.cohort_id, data.resident_id),
            )
        case PieceWoven():
            # The woven week wins over a week guessed from an inspection that arrived first.
            return (
                """INSERT INTO dashboard_pieces (piece_id, artisan_id, product, week) VALUES ($1, $2, $3, $4)
                   ON CONFLICT (piece_id) DO UPDATE SET product = excluded.product, week = excluded.week""",
                (data.piece_id, data.artisan_id, data.product, iso_monday(data.woven_at)),
            )
        case QcPassed() | QcFailed():
            # qc-failed names no product: it is the piece's own, stored from its piece-woven, which
            # sits before it on the same partition (both are keyed by the artisan).
            verdict = "passed" if isinstance(data, QcPassed) else "failed"
            product = data.product if isinstance(data, QcPassed) else None
            return (
                """INSERT INTO dashboard_pieces (piece_id, artisan_id, product, week, qc) VALUES ($1, $2, $3, $4, $5)
                   ON CONFLICT (piece_id) DO UPDATE
                   SET qc = coalesce(dashboard_pieces.qc, excluded.qc),
                       product = coalesce(dashboard_pieces.product, excluded.product)""",
                (data.piece_id, data.artisan_id, product, iso_monday(data.inspected_at), verdict),
            )
        case PayoutScheduled():
            return (
                """INSERT INTO dashboard_payouts (payout_id, artisan_id, run_id, period_end, amount_idr)
                   VALUES ($1, $2, $3, $4, $5)
                   ON CONFLICT (payout_id) DO UPDATE
                   SET run_id = excluded.run_id, period_end = excluded.period_end, amount_idr = excluded.amount_idr""",
                (data.payout_id, data.artisan_id, data.run_id, data.period_end, data.amount_idr),
            )
        case Paid() | PayoutFailed():
            outcome = "paid" if isinstance(data, Paid) else "failed"
            return (
                """INSERT INTO dashboard_payouts (payout_id, artisan_id, amount_idr, outcome) VALUES ($1, $2, $3, $4)
                   ON CONFLICT (payout_id) DO UPDATE
                   SET outcome = coalesce(dashboard_payouts.outcome, excluded.outcome)""",
                (data.payout_id, data.artisan_id, data.amount_idr, outcome),
            )
        case _:
            return None


# --- reading it -----------------------------------------------------------------------------------


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


# --- the door ---------------------------------------------------------------------------------------


def language(lang: str | None) -> str:
    """Bahasa Indonesia unless English is asked for; anything else falls back rather than failing."""
    return lang if lang in LANGUAGES else "id"


def _plausible_token(token: str) -> bool:
    # Tokens are printable ASCII; anything else cannot match, and the constant-time
    # comparison refuses non-ASCII text outright (it would be a 500, not a 401).
    return 0 < len(token) <= 1000 and token.isascii() and token.isprintable()


def _check(access: Access, token: str | None) -> Principal | None:
    """The principal a token names, or None for a missing or unknown one."""
    if token is None or not _plausible_token(token.strip()):
        return None
    try:
        return access.authenticate(f"Bearer {token.strip()}")
    except Problem:
        return None


def _secure_headers(response: Response) -> Response:
    # The page holds programme figures: never cached, never framed, and nothing it could load
    # from anywhere (the CSP makes "works offline" a rule the browser enforces).
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'none'; "
        "frame-ancestors 'none'; base-uri 'none'"
    )
    return response


def dashboard_router(runtime: ServiceRuntime, access: Access) -> APIRouter:
    """`GET /dashboard` for staff and auditors, by bearer header, cookie or a one-time `?token=` link."""
    router = APIRouter(tags=["dashboard"])

    def refusal(status: int, lang: str, *, clear_cookie: bool) -> Response:
        response = HTMLResponse(render_refusal(status, lang), status_code=status)
        if status == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        if clear_cookie:  # a cookie that no longer opens the page is only confusing
            response.delete_cookie(COOKIE, path="/dashboard", httponly=True, samesite="strict")
        return _secure_headers(response)

    @router.get(
        "/dashboard", response_class=HTMLResponse, summary="The programme dashboard, a web page (staff and auditors)",
        responses={303: {"description": "`?token=` was valid: the cookie is set and the browser sent on"},
                   401: {"description": "No valid token (an HTML page saying how to open it)",
                         "content": {"text/html": {"schema": {"type": "string"}}}},
                   403: {"description": "A collaborator's token (an HTML page)",
                         "content": {"text/html": {"schema": {"type": "string"}}}}},
    )
    async def dashboard(
        request: Request,
        lang: str | None = Query(None, description="`id` (Bahasa Indonesia, the default) or `en`."),
        token: str | None = Query(None, description="A staff or auditor token, for a link opened in a browser: "
                                  "it is moved into an HttpOnly cookie and the browser is redirected without it."),
    ) -> Response:
        lang = language(lang)
        here = request.url.path + ("?lang=en" if lang == "en" else "")
        if token is not None:
            principal = _check(access, token)
            if principal is None:
                return refusal(401, lang, clear_cookie=False)
            if principal.role not in (STAFF, AUDITOR):
                return refusal(403, lang, clear_cookie=False)
            # Out of the address bar, the history and any log of URLs: the token lives on in a cookie
            # only this page receives, that scripts cannot read and other sites cannot make us send.
            response = RedirectResponse(here, status_code=303)
            response.set_cookie(COOKIE, quote(token.strip(), safe=""), max_age=COOKIE_MAX_AGE, path="/dashboard",
                                httponly=True, samesite="strict", secure=request.url.scheme == "https")
            return _secure_headers(response)

        header = request.headers.get("authorization")
        cookie = request.cookies.get(COOKIE)
        if header is not None:
            scheme, _, value = header.partition(" ")
            principal = _check(access, value) if scheme.lower() == "bearer" else None
        else:
            principal = _check(access, unquote(cookie)) if cookie is not None else None
        if principal is None:
            return refusal(401, lang, clear_cookie=header is None and cookie is not None)
        if principal.role not in (STAFF, AUDITOR):
            return refusal(403, lang, clear_cookie=False)

        async with runtime.pool.acquire() as conn:
            data = await read_dashboard(conn)
        return _secure_headers(HTMLResponse(render_dashboard(data, lang)))

    return router
