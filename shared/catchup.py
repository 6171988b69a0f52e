"""Read models kept by reading a service's own event store, caught up when they are read.

A list (`GET /cohorts`, `GET /pieces`, ...) reads a small table of its own, indexed for its filters;
the table is brought up to the event store's last position before each read (`catch_up`), in one
transaction with the table's checkpoint, so a list shows every command committed before it was asked
for (read-your-writes), and nothing a command writes changes: no handler, and no one-statement unit
(production's weave), writes these tables. The event store's positions are handed out in commit order
(`shared.eventstore.schema.APPEND_LOCK_KEY`), so a checkpoint never skips an event committed later
with a lower position. A new table fills itself from the whole history on its first read.

Catching up takes a transaction-scoped advisory lock per read model (in a key space of its own: the
event store's stream locks use class 1, these class 2), so two readers never apply one event twice;
a reader that finds the checkpoint at the store's end takes no lock and writes nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection

import asyncpg

from shared.contracts import Envelope, decode

#: The advisory-lock class of read models' catch-ups (the event store's stream locks are class 1).
LOCK_CLASS = 2
#: Events read per statement while catching up: bounds the memory of a first fill from a long history.
BATCH = 2000

DDL = """
CREATE TABLE IF NOT EXISTS read_model_checkpoints (
    read_model  text   PRIMARY KEY,
    position    bigint NOT NULL
);
"""

#: Applies events to a read model's table, in the catch-up's transaction: (connection, [(position, event)]),
#: the events in position order. Statements by batch (`executemany`), not by event: a first fill reads
#: the whole history.
Apply = Callable[[asyncpg.Connection, list[tuple[int, Envelope]]], Awaitable[None]]


async def install(conn: asyncpg.Connection) -> None:
    await conn.execute(DDL)


async def catch_up(pool: asyncpg.Pool, read_model: str, event_types: Collection[str], apply: Apply) -> int:
    """Apply every event of `event_types` stored after `read_model`'s checkpoint, in position order;
    returns how many events it applied."""
    types = sorted(event_types)
    applied = 0
    async with pool.acquire() as conn:
        behind = await conn.fetchval(
            """SELECT coalesce((SELECT max(position) FROM event_store), 0)
                      > coalesce((SELECT position FROM read_model_checkpoints WHERE read_model = $1), 0)""",
            read_model)
        while behind:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", LOCK_CLASS, read_model)
                done = await conn.fetchval(
                    "SELECT position FROM read_model_checkpoints WHERE read_model = $1", read_model) or 0
                # Every event after the checkpoint, whatever its type, so the checkpoint moves past them
                # all; the payload only of the types applied.
                rows = await conn.fetch(
                    """SELECT position, CASE WHEN event_type = ANY($2::text[]) THEN payload END AS payload
                       FROM event_store WHERE position > $1 ORDER BY position LIMIT $3""",
                    done, types, BATCH)
                events = [(row["position"], decode(row["payload"])) for row in rows if row["payload"] is not None]
                if events:
                    await apply(conn, events)
                    applied += len(events)
                if rows:
                    await conn.execute(
                        """INSERT INTO read_model_checkpoints (read_model, position) VALUES ($1, $2)
                           ON CONFLICT (read_model) DO UPDATE SET position = EXCLUDED.position""",
                        read_model, rows[-1]["position"])
                behind = len(rows) == BATCH
    return applied
