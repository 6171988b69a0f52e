"""Enrollment's read models: none beyond its aggregates. Residents, cohorts and rusunawa are read by folding
their own streams (`handlers`); personal data lives in the vault (`personal_data`), never in an event.
The registry of rusunawa is listed from the event store itself: a handful of streams of one event each."""

from __future__ import annotations

import asyncpg

from services.enrollment import domain
from shared.contracts import decode
from shared.contracts.events import RusunawaRegistered


async def registered_rusunawa(conn: asyncpg.Connection) -> list[domain.Rusunawa]:
    """Every registered rusunawa, by name."""
    rows = await conn.fetch("SELECT payload FROM event_store WHERE event_type = $1", RusunawaRegistered.event_type)
    places = []
    for row in rows:
        data = decode(row["payload"]).data
        assert isinstance(data, RusunawaRegistered)
        places.append(domain.evolve_rusunawa(domain.Rusunawa(), data))
    return sorted(places, key=lambda place: place.name.casefold())
