"""Production's read models, each written in the transaction that stores its consumer's offsets.

- `trained_residents`: who completed training, from the `enrollment` topic.
  Only they may receive materials or weave (SPEC §7). A later withdrawal does
  not matter: enrollment refuses to withdraw a resident who completed.
- `qc_rejections`: feedback for collaborators on their refused submissions,
  written by the QC consumer with the dead letter's offset (and by the HTTP
  path with its idempotency record). It holds ids, the reason and its detail,
  never the submission's content.
- `collaborator_token_revocations`: per collaborator, the moment before which
  its HTTP tokens were issued in vain (docs/tokens.md). Access control, not
  business history: written by `POST /collaborators/{id}/token-revocations`,
  published on no topic.
- `piece_list`: the list of pieces (`GET /pieces`), kept from production's own event store and caught
  up when read (`shared.catchup`), not by a consumer: see the section at the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

import asyncpg
from aiokafka import ConsumerRecord
from cachetools import LRUCache

from shared import catchup
from shared.contracts import Envelope
from shared.contracts.events import PieceWoven, QcFailed, QcPassed, TrainingCompleted
from shared.eventstore import UnitOfWork
from shared.timeutil import to_wib

TRAINING_CONSUMER = "production-trained-residents"

DDL = """
CREATE TABLE IF NOT EXISTS trained_residents (
    resident_id   text        PRIMARY KEY,
    cohort_id     text        NOT NULL,
    completed_on  date        NOT NULL,
    event_id      text        NOT NULL
);

CREATE TABLE IF NOT EXISTS qc_rejections (
    rejection_id     bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    collaborator_id  text        NOT NULL,
    submission_id    text,
    piece_id         text,
    reason           text        NOT NULL,
    detail           text        NOT NULL,
    channel          text        NOT NULL CHECK (channel IN ('kafka', 'http')),
    source           text        NOT NULL,
    rejected_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS qc_rejections_by_collaborator ON qc_rejections (collaborator_id, rejection_id);

CREATE TABLE IF NOT EXISTS collaborator_token_revocations (
    collaborator_id  text        PRIMARY KEY,
    revoked_before   timestamptz NOT NULL,
    recorded_at      timestamptz NOT NULL DEFAULT now()
);
"""


async def install(pool: asyncpg.Pool) -> None:
    """Create the read models' tables if they are missing."""
    async with pool.acquire() as conn:
        await conn.execute(DDL)
        await catchup.install(conn)
        await conn.execute(PIECE_LIST_DDL)


# --- trained residents --------------------------------------------------------------------


async def project_training(uow: UnitOfWork, event: Envelope, record: ConsumerRecord) -> None:
    """The `enrollment` consumer's handler: remember each resident who completed training."""
    data = event.data
    if isinstance(data, TrainingCompleted):
        # The first completion is kept: a second cohort completed later changes nothing here.
        await uow.connection.execute(
            """INSERT INTO trained_residents (resident_id, cohort_id, completed_on, event_id)
               VALUES ($1, $2, $3, $4) ON CONFLICT (resident_id) DO NOTHING""",
            data.resident_id, data.cohort_id, data.completed_on, event.id,
        )


async def completed_on(conn: asyncpg.Connection, resident_id: str) -> date | None:
    """The day `resident_id` completed training, as far as the `enrollment` topic has been read."""
    if not storable(resident_id):
        return None
    return await conn.fetchval("SELECT completed_on FROM trained_residents WHERE resident_id = $1", resident_id)


class TrainedResidents:
    """`completed_on`, remembering every completion in this process: a round trip fewer for most commands.

    Sound because training is never undone: `trained_residents` is only ever inserted into, by
    the enrollment consumer's committed transactions, so a resident once found trained stays
    trained (the table refuses nothing else, but nothing else writes to it either). A no is
    asked again every time: training may complete meanwhile.
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self._known: LRUCache[str, date] = LRUCache(maxsize=capacity)

    async def completed_on(self, uow: UnitOfWork, resident_id: str) -> date | None:
        """The day the resident completed training, or None if not (yet) known to have."""
        known = self._known.get(resident_id)
        if known is not None:
            return known
        completed = await completed_on(uow.connection, resident_id)
        if completed is not None:
            self._known[resident_id] = completed
        return completed

    async def is_trained(self, uow: UnitOfWork, resident_id: str) -> bool:
        return await self.completed_on(uow, resident_id) is not None


# --- collaborators' token revocations ------------------------------------------------------


async def tokens_revoked_before(conn: asyncpg.Connection, collaborator_id: str) -> datetime | None:
    """The moment before which `collaborator_id`'s tokens were issued in vain; None if never revoked."""
    if not storable(collaborator_id):
        return None
    return await conn.fetchval(
        "SELECT revoked_before FROM collaborator_token_revocations WHERE collaborator_id = $1", collaborator_id)


async def revoke_tokens(conn: asyncpg.Connection, collaborator_id: str, before: datetime) -> tuple[datetime, bool]:
    """Refuse `collaborator_id`'s tokens issued before `before`: the moment now in force, and whether
    it moved. A revocation is never loosened: an earlier moment than the one in force changes nothing."""
    moved = await conn.fetchval(
        """INSERT INTO collaborator_token_revocations AS r (collaborator_id, revoked_before) VALUES ($1, $2)
           ON CONFLICT (collaborator_id) DO UPDATE SET revoked_before = EXCLUDED.revoked_before, recorded_at = now()
               WHERE r.revoked_before < EXCLUDED.revoked_before
           RETURNING revoked_before""",
        collaborator_id, before,
    )
    if moved is not None:
        return moved, True
    in_force = await tokens_revoked_before(conn, collaborator_id)
    assert in_force is not None  # the row that kept the INSERT from moving it (rows are never deleted)
    return in_force, False


# --- QC rejections ------------------------------------------------------------------------


@dataclass(frozen=True)
class Rejection:
    """One refused submission as its collaborator may read it back."""

    collaborator_id: str
    submission_id: str | None
    piece_id: str | None
    reason: str
    detail: str
    channel: str
    source: str
    rejected_at: datetime | None = None

    def as_json(self) -> dict[str, object]:
        return {
            "submission_id": self.submission_id, "piece_id": self.piece_id, "reason": self.reason,
            "detail": self.detail, "channel": self.channel, "source": self.source,
            "rejected_at": to_wib(self.rejected_at).isoformat() if self.rejected_at else None,
        }


async def record_rejection(conn: asyncpg.Connection, rejection: Rejection) -> None:
    """Store a rejection for its collaborator to read (text made storable: the input is untrusted)."""
    await conn.execute(
        """INSERT INTO qc_rejections (collaborator_id, submission_id, piece_id, reason, detail, channel, source)
           VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        _clean(rejection.collaborator_id), _clean(rejection.submission_id), _clean(rejection.piece_id),
        _clean(rejection.reason), _clean(rejection.detail), rejection.channel, _clean(rejection.source),
    )


async def seconds_until_rejections_allowed(conn: asyncpg.Connection, collaborator_id: str, *, per_minute: int) -> int:
    """0 while `collaborator_id` had fewer than `per_minute` submissions refused (either way) in the last
    minute; otherwise how many whole seconds until the oldest of those is a minute old. Reads at most
    `per_minute` rows, newest first, by the collaborator's index."""
    wait = await conn.fetchval(
        """SELECT greatest(1, ceil(60 - extract(epoch FROM now() - min(rejected_at))))::integer FROM (
               SELECT rejected_at FROM qc_rejections WHERE collaborator_id = $1
               ORDER BY rejection_id DESC LIMIT $2) recent
           HAVING count(*) >= $2 AND min(rejected_at) > now() - interval '1 minute'""",
        collaborator_id, per_minute,
    )
    return wait or 0


async def rejections_of(conn: asyncpg.Connection, collaborator_id: str, *, limit: int) -> list[Rejection]:
    """The newest `limit` rejections of `collaborator_id`, newest first."""
    if not storable(collaborator_id):
        return []
    rows = await conn.fetch(
        """SELECT collaborator_id, submission_id, piece_id, reason, detail, channel, source, rejected_at
           FROM qc_rejections WHERE collaborator_id = $1 ORDER BY rejection_id DESC LIMIT $2""",
        collaborator_id, limit,
    )
    return [Rejection(**dict(row)) for row in rows]


def storable(text: str) -> bool:
    """Whether PostgreSQL can hold `text`: no NUL, no lone surrogates. Untrusted ids may be neither,
    and such an id cannot name anything we stored, so a lookup can answer "not found" without asking."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _clean(text: str | None) -> str | None:
    if text is None:
        return None
    return text.replace("\x00", "\N{REPLACEMENT CHARACTER}").encode("utf-8", "replace").decode("utf-8")[:1000]


# --- the list of pieces -------------------------------------------------------------------

#: `GET /pieces`: per piece, how it was woven and its QC verdict, kept from the event store and caught up
#: when read (`shared.catchup`); listed in the order the pieces were recorded (their `piece-woven`'s
#: position in the store), which is the cursor's key.
PIECES = "pieces"
_PIECE_EVENTS = {PieceWoven.event_type, QcPassed.event_type, QcFailed.event_type}

PIECE_LIST_DDL = """
CREATE TABLE IF NOT EXISTS piece_list (
    piece_id         text        PRIMARY KEY,
    position         bigint      NOT NULL UNIQUE,
    artisan_id       text        NOT NULL,
    collaborator_id  text        NOT NULL,
    product          text        NOT NULL,
    rate_idr         bigint      NOT NULL,
    woven_at         timestamptz NOT NULL,
    status           text        NOT NULL DEFAULT 'woven' CHECK (status IN ('woven', 'passed', 'failed')),
    defects          text[]      NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS piece_list_by_collaborator ON piece_list (collaborator_id, position);
CREATE INDEX IF NOT EXISTS piece_list_by_artisan ON piece_list (artisan_id, position);
"""


async def _apply_to_pieces(conn: asyncpg.Connection, events: list[tuple[int, Envelope]]) -> None:
    # A piece's result comes after its weaving (one stream), and it has one: the weavings first, then
    # the results, is the events' own order.
    woven = [(d.piece_id, position, d.artisan_id, d.collaborator_id, d.product, d.rate_idr, d.woven_at)
             for position, event in events if isinstance(d := event.data, PieceWoven)]
    results = [(d.piece_id, "passed" if isinstance(d, QcPassed) else "failed",
                list(d.defects) if isinstance(d, QcFailed) else [])
               for _, event in events if isinstance(d := event.data, QcPassed | QcFailed)]
    if woven:
        await conn.executemany(
            """INSERT INTO piece_list (piece_id, position, artisan_id, collaborator_id, product, rate_idr, woven_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (piece_id) DO NOTHING""", woven)
    if results:
        await conn.executemany("UPDATE piece_list SET status = $2, defects = $3 WHERE piece_id = $1", results)


@dataclass(frozen=True)
class PieceFilter:
    artisan_id: str | None = None
    collaborator_id: str | None = None
    product: str | None = None
    status: str | None = None
    woven_from: datetime | None = None
    woven_to: datetime | None = None


async def pieces(pool: asyncpg.Pool, where: PieceFilter, *, after: int, limit: int) -> list[tuple[tuple[int], dict]]:
    """Up to `limit` pieces after position `after`, in the order recorded: (cursor key, item)."""
    await catchup.catch_up(pool, PIECES, _PIECE_EVENTS, _apply_to_pieces)
    rows = await pool.fetch(
        """SELECT * FROM piece_list
           WHERE position > $1 AND ($2::text IS NULL OR artisan_id = $2)
             AND ($3::text IS NULL OR collaborator_id = $3) AND ($4::text IS NULL OR product = $4)
             AND ($5::text IS NULL OR status = $5)
             AND ($6::timestamptz IS NULL OR woven_at >= $6) AND ($7::timestamptz IS NULL OR woven_at <= $7)
           ORDER BY position LIMIT $8""",
        after, where.artisan_id, where.collaborator_id, where.product, where.status, where.woven_from,
        where.woven_to, limit)
    return [((row["position"],), {
        "piece_id": row["piece_id"], "artisan_id": row["artisan_id"], "collaborator_id": row["collaborator_id"],
        "product": row["product"], "rate_idr": row["rate_idr"], "woven_at": to_wib(row["woven_at"]).isoformat(),
        "status": row["status"], "defects": list(row["defects"]),
    }) for row in rows]
