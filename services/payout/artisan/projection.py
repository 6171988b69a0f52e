"""The artisan pages' read model: per piece and per payout, the facts an artisan's own page shows.

Fed by its own transactional consumer (`payout-artisan-pages`) on `enrollment` (who may be given a
link), `production` (her pieces: product, woven date, rate, QC verdict and defect codes) and
`payout` (each payout: its run's period, how it ended, the method and payout's own reference). Its
rows commit with the consumer's offsets and event ids, so each event counts once; every write is an
idempotent upsert that sets only its own columns or fills empty ones, so events of one piece or
payout give the same row in any order, and a replay into a fresh database gives the same tables.

Money balances are never kept here: the page reads them from the ledger in the same snapshot.
The links (the capabilities that open a page) live beside these tables, in `links`.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from shared.contracts import Envelope, Topic
from shared.contracts.events import Enrolled, Paid, PayoutFailed, PayoutScheduled, PieceWoven, QcFailed, QcPassed
from shared.eventstore.consumer import upserting

ARTISAN_CONSUMER = "payout-artisan-pages"
ARTISAN_TOPICS = (Topic.ENROLLMENT, Topic.PRODUCTION, Topic.PAYOUT)

#: Serialises installs of these tables by several instances starting at once (its own key: see
#: tests/unit/test_lock_keys.py).
INSTALL_LOCK_KEY = 0x616E79616D04


def artisan_consumer(topic_prefix: str = "") -> str:
    """The read model's consumer group in a deployment (same prefix scheme as `ledger_consumer`)."""
    return f"{topic_prefix}{ARTISAN_CONSUMER}"


DDL = """
-- Residents enrolled in a cohort: whom staff may make a link for before her first piece.
CREATE TABLE IF NOT EXISTS artisan_page_residents (
    artisan_id text COLLATE "C" PRIMARY KEY
);
-- One row per piece; the first QC verdict stays (production dead-letters a second one).
CREATE TABLE IF NOT EXISTS artisan_page_pieces (
    piece_id     text COLLATE "C" PRIMARY KEY,
    artisan_id   text COLLATE "C" NOT NULL,
    product      text,
    rate_idr     bigint,
    woven_at     timestamptz,
    qc           text CHECK (qc IN ('passed', 'failed')),
    inspected_at timestamptz,
    earned_idr   bigint,
    defects      text[]
);
CREATE INDEX IF NOT EXISTS artisan_page_pieces_artisan ON artisan_page_pieces (artisan_id);
-- One row per payout: its run and period, when it was scheduled, and how it ended (NULL: in transit).
CREATE TABLE IF NOT EXISTS artisan_page_payouts (
    payout_id      text COLLATE "C" PRIMARY KEY,
    artisan_id     text COLLATE "C" NOT NULL,
    amount_idr     bigint NOT NULL,
    run_id         text,
    period_end     timestamptz,
    scheduled_at   timestamptz,
    outcome        text CHECK (outcome IN ('paid', 'failed')),
    method         text,
    reference      text,
    paid_at        timestamptz,
    failure_reason text,
    settled_at     timestamptz
);
CREATE INDEX IF NOT EXISTS artisan_page_payouts_artisan ON artisan_page_payouts (artisan_id);
"""


async def install(pool: asyncpg.Pool) -> None:
    """Create the read model's tables if missing; safe from several instances at once."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", INSTALL_LOCK_KEY)
        await conn.execute(DDL)


#: The `payout-artisan-pages` consumer's handler: every write an idempotent upsert, never a refusal.
ARTISAN_HANDLER = upserting(lambda event: (_upsert(event),))
project, project_batch = ARTISAN_HANDLER.each, ARTISAN_HANDLER.apply_batch


def _upsert(event: Envelope) -> tuple[str, tuple[Any, ...]] | None:
    data = event.data
    match data:
        case Enrolled():
            return ("INSERT INTO artisan_page_residents VALUES ($1) ON CONFLICT DO NOTHING", (data.resident_id,))
        case PieceWoven():
            return (
                """INSERT INTO artisan_page_pieces (piece_id, artisan_id, product, rate_idr, woven_at)
                   VALUES ($1, $2, $3, $4, $5)
                   ON CONFLICT (piece_id) DO UPDATE
                   SET product = excluded.product, rate_idr = excluded.rate_idr, woven_at = excluded.woven_at""",
                (data.piece_id, data.artisan_id, data.product, data.rate_idr, data.woven_at),
            )
        case QcPassed() | QcFailed():
            passed = isinstance(data, QcPassed)
            return (
                """INSERT INTO artisan_page_pieces (piece_id, artisan_id, product, qc, inspected_at, earned_idr,
                                                   defects)
                   VALUES ($1, $2, $3, $4, $5, $6, $7)
                   ON CONFLICT (piece_id) DO UPDATE
                   SET product = coalesce(artisan_page_pieces.product, excluded.product),
                       qc = coalesce(artisan_page_pieces.qc, excluded.qc),
                       inspected_at = CASE WHEN artisan_page_pieces.qc IS NULL THEN excluded.inspected_at
                                           ELSE artisan_page_pieces.inspected_at END,
                       earned_idr = CASE WHEN artisan_page_pieces.qc IS NULL THEN excluded.earned_idr
                                         ELSE artisan_page_pieces.earned_idr END,
                       defects = CASE WHEN artisan_page_pieces.qc IS NULL THEN excluded.defects
                                      ELSE artisan_page_pieces.defects END""",
                (data.piece_id, data.artisan_id, data.product if isinstance(data, QcPassed) else None,
                 "passed" if passed else "failed", data.inspected_at,
                 data.amount_idr if isinstance(data, QcPassed) else None,
                 [] if isinstance(data, QcPassed) else list(data.defects)),
            )
        case PayoutScheduled():
            return (
                """INSERT INTO artisan_page_payouts (payout_id, artisan_id, amount_idr, run_id, period_end,
                                                    scheduled_at)
                   VALUES ($1, $2, $3, $4, $5, $6)
                   ON CONFLICT (payout_id) DO UPDATE
                   SET run_id = excluded.run_id, period_end = excluded.period_end,
                       scheduled_at = excluded.scheduled_at, amount_idr = excluded.amount_idr""",
                (data.payout_id, data.artisan_id, data.amount_idr, data.run_id, data.period_end, event.time),
            )
        case Paid():
            return (
                """INSERT INTO artisan_page_payouts (payout_id, artisan_id, amount_idr, outcome, method, reference,
                                                    paid_at, settled_at)
                   VALUES ($1, $2, $3, 'paid', $4, $5, $6, $7)
                   ON CONFLICT (payout_id) DO UPDATE
                   SET outcome = 'paid', method = excluded.method, reference = excluded.reference,
                       paid_at = excluded.paid_at, settled_at = excluded.settled_at
                   WHERE artisan_page_payouts.outcome IS NULL""",
                (data.payout_id, data.artisan_id, data.amount_idr, data.method, data.reference, data.paid_at,
                 event.time),
            )
        case PayoutFailed():
            return (
                """INSERT INTO artisan_page_payouts (payout_id, artisan_id, amount_idr, outcome, failure_reason,
                                                    settled_at)
                   VALUES ($1, $2, $3, 'failed', $4, $5)
                   ON CONFLICT (payout_id) DO UPDATE
                   SET outcome = 'failed', failure_reason = excluded.failure_reason, settled_at = excluded.settled_at
                   WHERE artisan_page_payouts.outcome IS NULL""",
                (data.payout_id, data.artisan_id, data.amount_idr, data.reason, event.time),
            )
        case _:
            return None
