"""The dashboard's read model: its tables, fed by its own transactional consumer (`payout-dashboard`) on
`enrollment`, `production` and `payout`. Its rows commit with the consumer's offsets and event ids, so
each event counts once; every write is also an idempotent upsert, so even a replay into a fresh
database gives the same tables. It keeps counts, never money (the ledger has that)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import asyncpg

from shared.contracts import Envelope, Topic
from shared.contracts.events import (
    MAX_RUPIAH,
    CohortScheduled,
    Enrolled,
    EventData,
    MaterialsIssued,
    MaterialUsageSet,
    Paid,
    PayoutFailed,
    PayoutScheduled,
    PieceWoven,
    QcFailed,
    QcPassed,
    ResidentRegistered,
    RusunawaRegistered,
    TrainingCompleted,
    Withdrawn,
)
from shared.db import normalised
from shared.eventstore.consumer import upserting
from shared.timeutil import to_wib

#: The consumer group of the dashboard's read model; like the ledger's, it carries the topic prefix.
DASHBOARD_CONSUMER = "payout-dashboard"
DASHBOARD_TOPICS = (Topic.ENROLLMENT, Topic.PRODUCTION, Topic.PAYOUT)

#: Serialises installs of these tables by several instances starting at once (its own key: see
#: tests/unit/test_lock_keys.py).
INSTALL_LOCK_KEY = 0x616E79616D03


def dashboard_consumer(topic_prefix: str = "") -> str:
    """The dashboard's consumer group in a deployment (same prefix scheme as `ledger_consumer`)."""
    return f"{topic_prefix}{DASHBOARD_CONSUMER}"


# --- the read model -------------------------------------------------------------------------------

DDL = f"""
-- The registry of rusunawa and their OVOP product, and where each resident lives: what the dashboard,
-- and payout runs made for one rusunawa, are scoped by. Ids and labels, never personal data.
CREATE TABLE IF NOT EXISTS dashboard_rusunawa (
    rusunawa_id   text PRIMARY KEY,
    name          text NOT NULL,
    ovop_product  text NOT NULL
);
CREATE TABLE IF NOT EXISTS dashboard_residents (
    resident_id  text PRIMARY KEY,
    rusunawa     text NOT NULL
);
CREATE INDEX IF NOT EXISTS dashboard_residents_rusunawa ON dashboard_residents ({normalised("rusunawa")});
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
-- Materials reconciliation's facts (docs/materials.md): usages, issues, and pieces by collaborator
-- and moment woven. A piece's QC verdict may be folded before its piece-woven (a batch runs one kind
-- of upsert after another), so woven_at stays NULL until that arrives.
CREATE TABLE IF NOT EXISTS dashboard_material_usages (
    collaborator_id    text        NOT NULL,
    product            text        NOT NULL,
    material           text        NOT NULL,
    effective_from     timestamptz NOT NULL,
    unit               text        NOT NULL,
    quantity_per_piece bigint      NOT NULL,
    PRIMARY KEY (collaborator_id, product, material, effective_from)
);
CREATE TABLE IF NOT EXISTS dashboard_material_issues (
    issue_id        text        PRIMARY KEY,
    artisan_id      text        NOT NULL,
    collaborator_id text        NOT NULL,
    material        text        NOT NULL,
    unit            text        NOT NULL,
    quantity        bigint      NOT NULL,
    issued_at       timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS dashboard_material_pieces (
    piece_id        text        PRIMARY KEY,
    artisan_id      text        NOT NULL,
    collaborator_id text        NOT NULL,
    product         text        NOT NULL,
    woven_at        timestamptz,
    passed          boolean     NOT NULL DEFAULT false
);
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


#: The `payout-dashboard` consumer's handler. Never refuses: events of other types are simply not
#: counted, and a second QC verdict or payout ending keeps the first (the ledger and production
#: dead-letter those). In a batch, a piece's woven week and product override the ones an inspection
#: guessed, whichever came first, so any interleaving of the upserts ends the same.
DASHBOARD_HANDLER = upserting(lambda event: (_upsert(event.data), _materials_upsert(event)))
project, project_batch = DASHBOARD_HANDLER.each, DASHBOARD_HANDLER.apply_batch


def _upsert(data: EventData) -> tuple[str, tuple[Any, ...]] | None:
    """The statement and arguments that fold `data` into the read model (None: not counted)."""
    match data:
        case RusunawaRegistered():
            return ("""INSERT INTO dashboard_rusunawa VALUES ($1, $2, $3) ON CONFLICT (rusunawa_id) DO NOTHING""",
                    (data.rusunawa_id, data.name, data.ovop_product))
        case ResidentRegistered():
            return ("""INSERT INTO dashboard_residents VALUES ($1, $2) ON CONFLICT (resident_id) DO NOTHING""",
                    (data.resident_id, data.rusunawa))
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



def _materials_upsert(event: Envelope) -> tuple[str, tuple[Any, ...]] | None:
    """The statement and arguments that fold `event` into the materials tables (None: not a fact of theirs)."""
    data = event.data
    match data:
        case MaterialUsageSet():
            return (
                """INSERT INTO dashboard_material_usages VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING""",
                (data.collaborator_id, data.product, data.material, data.effective_from, data.unit,
                 data.quantity_per_piece),
            )
        case MaterialsIssued():
            # Issued when recorded: the event's own time (production's read model reads it the same way).
            return (
                """INSERT INTO dashboard_material_issues VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING""",
                (data.issue_id, data.artisan_id, data.collaborator_id, data.material, data.unit, data.quantity,
                 event.time),
            )
        case PieceWoven():
            return (
                """INSERT INTO dashboard_material_pieces (piece_id, artisan_id, collaborator_id, product, woven_at)
                   VALUES ($1, $2, $3, $4, $5)
                   ON CONFLICT (piece_id) DO UPDATE SET product = excluded.product, woven_at = excluded.woven_at""",
                (data.piece_id, data.artisan_id, data.collaborator_id, data.product, data.woven_at),
            )
        case QcPassed():
            return (
                """INSERT INTO dashboard_material_pieces (piece_id, artisan_id, collaborator_id, product, passed)
                   VALUES ($1, $2, $3, $4, true) ON CONFLICT (piece_id) DO UPDATE SET passed = true""",
                (data.piece_id, data.artisan_id, data.collaborator_id, data.product),
            )
    return None
