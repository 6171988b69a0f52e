"""Tables of the event store, the outbox relay and transactional consumers, in each service's database."""

from __future__ import annotations

import asyncpg

#: Every append takes this transaction-scoped advisory lock before it assigns positions, so
#: positions are handed out in commit order (ARCHITECTURE.md trap 1, the commit-order gap):
#: no reader can ever see position 42 committed while 41 is still to come.
APPEND_LOCK_KEY = 0x616E79616D  # "anyam"

#: Held for as long as a relay runs, so that one relay per database publishes at a time.
RELAY_LOCK_KEY = 0x616E79616E

OUTBOX_CHANNEL = "anyam_outbox"

DDL = """
CREATE TABLE IF NOT EXISTS event_store (
    position     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream_id    text        NOT NULL,
    version      integer     NOT NULL CHECK (version > 0),
    event_id     text        NOT NULL UNIQUE,
    event_type   text        NOT NULL,
    topic        text        NOT NULL,
    record_key   text        NOT NULL,
    payload      bytea       NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (stream_id, version)
);

-- History is never edited: corrections are new events. The database refuses edits
-- so that no code path, however buggy, can rewrite what was published.
CREATE OR REPLACE FUNCTION event_store_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'event_store is append-only: % refused', TG_OP USING ERRCODE = 'restrict_violation';
END $$;
DROP TRIGGER IF EXISTS event_store_append_only ON event_store;
CREATE TRIGGER event_store_append_only BEFORE UPDATE OR DELETE ON event_store
    FOR EACH ROW EXECUTE FUNCTION event_store_is_append_only();

CREATE TABLE IF NOT EXISTS outbox_checkpoint (
    relay     text   PRIMARY KEY,
    position  bigint NOT NULL
);

CREATE TABLE IF NOT EXISTS consumer_offsets (
    consumer     text    NOT NULL,
    topic        text    NOT NULL,
    partition    integer NOT NULL,
    next_offset  bigint  NOT NULL,
    PRIMARY KEY (consumer, topic, partition)
);

CREATE TABLE IF NOT EXISTS consumed_events (
    consumer  text NOT NULL,
    event_id  text NOT NULL,
    PRIMARY KEY (consumer, event_id)
);
"""


async def install(pool: asyncpg.Pool) -> None:
    """Create the tables if they are missing; safe to run at every start, from several processes."""
    async with pool.acquire() as conn, conn.transaction():
        # Two processes starting at once would race on CREATE ... IF NOT EXISTS; serialise them.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", APPEND_LOCK_KEY)
        await conn.execute(DDL)
