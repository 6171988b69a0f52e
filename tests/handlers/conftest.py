"""One test body, two event stores: in memory (fast, no database) and PostgreSQL (the services' own).

Every test here takes `backend` and runs twice. The PostgreSQL run is an integration test (it starts
the session's PostgreSQL); `-m "not integration"` runs the in-memory half alone, in a second or two.
Handlers that write read models beside their events (the vault, payout's tables) have no in-memory
unit of work and are tested on PostgreSQL only, under tests/integration.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from shared.contracts import Envelope, decode
from shared.db import create_pool
from shared.eventstore import EventStore, InMemoryEventStore, install


@dataclass
class Backend:
    name: str
    store: Any  # EventStore | InMemoryEventStore: append, load and unit(), the same interface
    #: Whether some unit of work waits for a stream's lock held by another.
    someone_waits_for_a_lock: Callable[[], Awaitable[bool]]
    #: Every event stored, in the order of their positions.
    events: Callable[[], Awaitable[list[Envelope]]]


@pytest.fixture(params=["memory", pytest.param("postgres", marks=pytest.mark.integration)])
def database(request: pytest.FixtureRequest) -> str | None:
    """A fresh database's URL for the PostgreSQL run, None for the in-memory one (which starts no server)."""
    # Asked for here, in a plain fixture: an async one cannot set up another fixture on the fly.
    return request.getfixturevalue("database_url") if request.param == "postgres" else None


@pytest.fixture
async def backend(database: str | None) -> AsyncIterator[Backend]:
    if database is None:
        memory = InMemoryEventStore()

        async def memory_waits() -> bool:
            return memory.waiting_for_locks > 0

        async def memory_events() -> list[Envelope]:
            return list(memory.events)

        yield Backend("memory", memory, memory_waits, memory_events)
        return
    pool = await create_pool(database, max_size=10)
    await install(pool)

    async def postgres_waits() -> bool:
        async with pool.acquire() as conn:
            return await conn.fetchval(
                "SELECT count(*) > 0 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")

    async def postgres_events() -> list[Envelope]:
        async with pool.acquire() as conn:
            rows = await conn.fetch("SELECT payload FROM event_store ORDER BY position")
        return [decode(row["payload"]) for row in rows]

    try:
        yield Backend("postgres", EventStore(pool), postgres_waits, postgres_events)
    finally:
        await pool.close()
