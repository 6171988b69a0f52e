"""Materials reconciliation's read model in production's database, and its reading (docs/materials.md).

Production wrote every fact the reconciliation needs (usages, issues, pieces, QC results) into its
own event store, so the read model follows the store, not a topic: `catch_up` folds the events
appended since it last looked, as every read model kept from the event store does (`shared.catchup`:
by position, with its checkpoint, under its lock). It runs before every read, so a read sees every
command already answered (read your writes); every write is an idempotent upsert besides.

The rules live in `shared.materials.reconcile`; this module only gathers its facts.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from shared import catchup
from shared.contracts import Envelope
from shared.contracts.events import MaterialsIssued, MaterialUsageSet, PieceWoven, QcPassed
from shared.materials import IssueFact, PieceFact, UsageFact

#: The read model's name for its checkpoint and lock (`shared.catchup`).
MATERIALS = "materials"
_TYPES = [model.event_type for model in (MaterialUsageSet, MaterialsIssued, PieceWoven, QcPassed)]

DDL = """
CREATE TABLE IF NOT EXISTS material_usages (
    collaborator_id    text        NOT NULL,
    product            text        NOT NULL,
    material           text        NOT NULL,
    effective_from     timestamptz NOT NULL,
    unit               text        NOT NULL,
    quantity_per_piece bigint      NOT NULL,
    PRIMARY KEY (collaborator_id, product, material, effective_from)
);
CREATE TABLE IF NOT EXISTS material_issues (
    issue_id        text        PRIMARY KEY,
    artisan_id      text        NOT NULL,
    collaborator_id text        NOT NULL,
    material        text        NOT NULL,
    unit            text        NOT NULL,
    quantity        bigint      NOT NULL,
    issued_at       timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS material_issues_by_collaborator ON material_issues (collaborator_id, artisan_id);
CREATE TABLE IF NOT EXISTS material_pieces (
    piece_id        text        PRIMARY KEY,
    artisan_id      text        NOT NULL,
    collaborator_id text        NOT NULL,
    product         text        NOT NULL,
    woven_at        timestamptz NOT NULL,
    passed          boolean     NOT NULL DEFAULT false
);
CREATE INDEX IF NOT EXISTS material_pieces_by_collaborator ON material_pieces (collaborator_id, artisan_id);
"""

_UPSERTS = {
    MaterialUsageSet: """INSERT INTO material_usages VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING""",
    MaterialsIssued: """INSERT INTO material_issues VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING""",
    PieceWoven: """INSERT INTO material_pieces (piece_id, artisan_id, collaborator_id, product, woven_at)
                   VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING""",
    QcPassed: """UPDATE material_pieces SET passed = true WHERE piece_id = $1""",
}


async def install(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await catchup.install(conn)
        await conn.execute(DDL)


def _arguments(data: Any, time: datetime) -> tuple[Any, ...]:
    match data:
        case MaterialUsageSet():
            return (data.collaborator_id, data.product, data.material, data.effective_from, data.unit,
                    data.quantity_per_piece)
        case MaterialsIssued():
            # An issue has no business time of its own: it is issued when it is recorded, the event's time.
            return (data.issue_id, data.artisan_id, data.collaborator_id, data.material, data.unit, data.quantity,
                    time)
        case PieceWoven():
            return (data.piece_id, data.artisan_id, data.collaborator_id, data.product, data.woven_at)
        case QcPassed():
            return (data.piece_id,)
    raise TypeError(type(data).__name__)


async def catch_up(pool: asyncpg.Pool) -> int:
    """Fold the events appended since the last catch-up; returns how many were folded."""
    return await catchup.catch_up(pool, MATERIALS, _TYPES, _fold)


async def _fold(conn: asyncpg.Connection, events: list[tuple[int, Envelope]]) -> None:
    batched: dict[str, list[tuple[Any, ...]]] = {}
    for _, event in events:
        statement = _UPSERTS[type(event.data)]
        batched.setdefault(statement, []).append(_arguments(event.data, event.time))
    # Kinds in the order of `_UPSERTS`: a piece is in its table before its QC result marks it.
    for statement in _UPSERTS.values():
        if statement in batched:
            await conn.executemany(statement, batched[statement])


async def facts(
    conn: asyncpg.Connection, *, collaborator_id: str | None = None, artisan_id: str | None = None,
) -> tuple[list[UsageFact], list[IssueFact], list[PieceFact]]:
    """The facts `reconcile` needs, for one collaborator and/or artisan when given (else all).

    Pieces come tallied per artisan, collaborator, product and moment woven: what the rules need of them.
    """
    usages = await conn.fetch(
        """SELECT collaborator_id, product, material, unit, quantity_per_piece, effective_from FROM material_usages
           WHERE $1::text IS NULL OR collaborator_id = $1""", collaborator_id)
    issues = await conn.fetch(
        """SELECT artisan_id, collaborator_id, material, unit, quantity, issued_at FROM material_issues
           WHERE ($1::text IS NULL OR collaborator_id = $1) AND ($2::text IS NULL OR artisan_id = $2)""",
        collaborator_id, artisan_id)
    pieces = await conn.fetch(
        """SELECT artisan_id, collaborator_id, product, woven_at, count(*)::int AS woven,
                  count(*) FILTER (WHERE passed)::int AS passed
           FROM material_pieces
           WHERE ($1::text IS NULL OR collaborator_id = $1) AND ($2::text IS NULL OR artisan_id = $2)
           GROUP BY artisan_id, collaborator_id, product, woven_at""",
        collaborator_id, artisan_id)
    return ([UsageFact(**dict(row)) for row in usages], [IssueFact(**dict(row)) for row in issues],
            [PieceFact(**dict(row)) for row in pieces])
