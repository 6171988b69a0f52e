"""Enrollment's read models: the lists of cohorts and residents (`GET /cohorts`, `GET /residents`).

Commands read residents and cohorts by folding their own streams (`handlers`); personal data lives in
the vault (`personal_data`), never in an event, and so never here either. The two list tables are kept
from the event store and caught up when read (`shared.catchup`): a page is one indexed query, in the
order the cohorts were scheduled and the residents registered (their event's position in the store).

- `cohort_list`: per cohort, what it was scheduled with and how many enrolled, completed and withdrew;
- `resident_list`: per resident, her rusunawa, when she was registered, the cohorts she enrolled in,
  whether she completed one (trained) and whether her personal data was erased. Ids and flags only.

The registry of rusunawa is listed from the event store itself: a handful of streams of one event each.

Rusunawa (and skill) filters compare as `domain.same_rusunawa` does: the tables keep each name's
`domain.rusunawa_key`, and a filter is looked up by its key.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import date

import asyncpg

from services.enrollment import domain
from services.enrollment.domain import rusunawa_key
from shared import catchup
from shared.contracts import Envelope, decode
from shared.contracts.events import (
    CohortScheduled,
    Enrolled,
    PersonalDataErased,
    ResidentRegistered,
    RusunawaRegistered,
    TrainingCompleted,
    Withdrawn,
)
from shared.timeutil import to_wib

COHORTS, RESIDENTS = "cohorts", "residents"
_COHORT_EVENTS = {CohortScheduled.event_type, Enrolled.event_type, TrainingCompleted.event_type,
                  Withdrawn.event_type}
_RESIDENT_EVENTS = {ResidentRegistered.event_type, Enrolled.event_type, TrainingCompleted.event_type,
                    PersonalDataErased.event_type}

DDL = """
CREATE TABLE IF NOT EXISTS cohort_list (
    cohort_id      text    PRIMARY KEY,
    position       bigint  NOT NULL UNIQUE,
    rusunawa       text    NOT NULL,
    rusunawa_key   text    NOT NULL,
    skill          text    NOT NULL,
    skill_key      text    NOT NULL,
    product_focus  text    NOT NULL,
    starts_on      date    NOT NULL,
    ends_on        date    NOT NULL,
    capacity       integer NOT NULL,
    enrolled       integer NOT NULL DEFAULT 0,
    completed      integer NOT NULL DEFAULT 0,
    withdrawn      integer NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS cohort_list_by_rusunawa ON cohort_list (rusunawa_key, position);

CREATE TABLE IF NOT EXISTS resident_list (
    resident_id    text        PRIMARY KEY,
    position       bigint      NOT NULL UNIQUE,
    rusunawa       text        NOT NULL,
    rusunawa_key   text        NOT NULL,
    registered_at  timestamptz NOT NULL,
    cohorts        text[]      NOT NULL DEFAULT '{}',
    trained        boolean     NOT NULL DEFAULT false,
    erased         boolean     NOT NULL DEFAULT false
);
CREATE INDEX IF NOT EXISTS resident_list_by_rusunawa ON resident_list (rusunawa_key, position);
CREATE INDEX IF NOT EXISTS resident_list_by_cohort ON resident_list USING gin (cohorts);
"""


async def install(pool: asyncpg.Pool) -> None:
    """Create the list tables and their checkpoints if they are missing (they fill on first read)."""
    async with pool.acquire() as conn:
        await catchup.install(conn)
        await conn.execute(DDL)


# --- keeping the lists ----------------------------------------------------------------------


async def _apply_to_cohorts(conn: asyncpg.Connection, events: list[tuple[int, Envelope]]) -> None:
    scheduled = [(d.cohort_id, position, d.rusunawa, rusunawa_key(d.rusunawa), d.skill, rusunawa_key(d.skill),
                  d.product_focus, d.starts_on, d.ends_on, d.capacity)
                 for position, event in events if isinstance(d := event.data, CohortScheduled)]
    # Each is decided at most once per resident and cohort (the cohort's decider), so a count is a set's size.
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for _, event in events:
        if isinstance(event.data, Enrolled | TrainingCompleted | Withdrawn):
            counts[event.data.cohort_id][event.data.event_type] += 1
    if scheduled:
        await conn.executemany(
            """INSERT INTO cohort_list (cohort_id, position, rusunawa, rusunawa_key, skill, skill_key,
                                        product_focus, starts_on, ends_on, capacity)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (cohort_id) DO NOTHING""", scheduled)
    if counts:
        await conn.executemany(
            """UPDATE cohort_list SET enrolled = enrolled + $2, completed = completed + $3, withdrawn = withdrawn + $4
               WHERE cohort_id = $1""",
            [(cohort_id, n[Enrolled.event_type], n[TrainingCompleted.event_type], n[Withdrawn.event_type])
             for cohort_id, n in counts.items()])


async def _apply_to_residents(conn: asyncpg.Connection, events: list[tuple[int, Envelope]]) -> None:
    # A resident is registered before anything else happens to her: registrations first, then the rest
    # (each kind in the events' order, so her cohorts are listed in the order she enrolled).
    data = [(position, event.data) for position, event in events]
    registered = [(d.resident_id, position, d.rusunawa, rusunawa_key(d.rusunawa), d.registered_at)
                  for position, d in data if isinstance(d, ResidentRegistered)]
    enrolled = [(d.resident_id, d.cohort_id) for _, d in data if isinstance(d, Enrolled)]
    trained = [(d.resident_id,) for _, d in data if isinstance(d, TrainingCompleted)]
    erased = [(d.resident_id,) for _, d in data if isinstance(d, PersonalDataErased)]
    if registered:
        await conn.executemany(
            """INSERT INTO resident_list (resident_id, position, rusunawa, rusunawa_key, registered_at)
               VALUES ($1, $2, $3, $4, $5) ON CONFLICT (resident_id) DO NOTHING""", registered)
    if enrolled:
        await conn.executemany(
            """UPDATE resident_list SET cohorts = array_append(cohorts, $2)
               WHERE resident_id = $1 AND NOT $2 = ANY(cohorts)""", enrolled)
    if trained:
        await conn.executemany("UPDATE resident_list SET trained = true WHERE resident_id = $1", trained)
    if erased:
        await conn.executemany("UPDATE resident_list SET erased = true WHERE resident_id = $1", erased)


# --- reading the lists ----------------------------------------------------------------------


@dataclass(frozen=True)
class CohortFilter:
    rusunawa: str | None = None
    skill: str | None = None
    starts_from: date | None = None
    starts_to: date | None = None


@dataclass(frozen=True)
class ResidentFilter:
    rusunawa: str | None = None
    cohort_id: str | None = None
    trained: bool | None = None
    erased: bool | None = None


async def cohorts(pool: asyncpg.Pool, where: CohortFilter, *, after: int, limit: int) -> list[tuple[tuple[int], dict]]:
    """Up to `limit` cohorts after position `after`, in the order they were scheduled: (cursor key, item)."""
    await catchup.catch_up(pool, COHORTS, _COHORT_EVENTS, _apply_to_cohorts)
    rows = await pool.fetch(
        """SELECT * FROM cohort_list
           WHERE position > $1 AND ($2::text IS NULL OR rusunawa_key = $2) AND ($3::text IS NULL OR skill_key = $3)
             AND ($4::date IS NULL OR starts_on >= $4) AND ($5::date IS NULL OR starts_on <= $5)
           ORDER BY position LIMIT $6""",
        after, _key(where.rusunawa), _key(where.skill), where.starts_from, where.starts_to, limit)
    return [((row["position"],), {
        "cohort_id": row["cohort_id"], "rusunawa": row["rusunawa"], "skill": row["skill"],
        "product_focus": row["product_focus"], "starts_on": row["starts_on"].isoformat(),
        "ends_on": row["ends_on"].isoformat(), "capacity": row["capacity"], "places_taken": row["enrolled"],
        "enrolled": row["enrolled"], "completed": row["completed"], "withdrawn": row["withdrawn"],
    }) for row in rows]


async def residents(
    pool: asyncpg.Pool, where: ResidentFilter, *, after: int, limit: int
) -> list[tuple[tuple[int], dict]]:
    """Up to `limit` residents after position `after`, in the order they were registered: (cursor key,
    item). No personal data: the table holds none."""
    await catchup.catch_up(pool, RESIDENTS, _RESIDENT_EVENTS, _apply_to_residents)
    rows = await pool.fetch(
        """SELECT * FROM resident_list
           WHERE position > $1 AND ($2::text IS NULL OR rusunawa_key = $2)
             AND ($3::text IS NULL OR cohorts @> ARRAY[$3::text])
             AND ($4::boolean IS NULL OR trained = $4) AND ($5::boolean IS NULL OR erased = $5)
           ORDER BY position LIMIT $6""",
        after, _key(where.rusunawa), where.cohort_id, where.trained, where.erased, limit)
    return [((row["position"],), {
        "resident_id": row["resident_id"], "rusunawa": row["rusunawa"],
        "registered_at": to_wib(row["registered_at"]).isoformat(), "cohorts": list(row["cohorts"]),
        "trained": row["trained"], "personal_data_erased": row["erased"],
    }) for row in rows]


def _key(name: str | None) -> str | None:
    return None if name is None else rusunawa_key(name)


async def registered_rusunawa(conn: asyncpg.Connection) -> list[domain.Rusunawa]:
    """Every registered rusunawa, by name."""
    rows = await conn.fetch("SELECT payload FROM event_store WHERE event_type = $1", RusunawaRegistered.event_type)
    places = []
    for row in rows:
        data = decode(row["payload"]).data
        assert isinstance(data, RusunawaRegistered)
        places.append(domain.evolve_rusunawa(domain.Rusunawa(), data))
    return sorted(places, key=lambda place: place.name.casefold())
