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

DDL = f"""
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

-- An append in one round trip: the global append lock (positions in commit order), the
-- stream's version check, the rows and the relay's wake-up (delivered at commit, and only if
-- it commits). The lock is held until the appending transaction ends, so every round trip
-- saved between taking it and committing is time every other writer no longer waits.
-- Returns the stream's version before the append; anything but `expected` means nothing was
-- appended (a concurrency conflict).
CREATE OR REPLACE FUNCTION event_store_append(
    stream text, expected integer, event_ids text[], event_types text[], topics text[], record_keys text[],
    payloads bytea[]
) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    actual integer;
BEGIN
    PERFORM pg_advisory_xact_lock({APPEND_LOCK_KEY});
    SELECT coalesce(max(version), 0) INTO actual FROM event_store WHERE stream_id = stream;
    IF actual <> expected OR cardinality(event_ids) = 0 THEN
        RETURN actual;
    END IF;
    INSERT INTO event_store (stream_id, version, event_id, event_type, topic, record_key, payload)
        SELECT stream, expected + e.n, e.event_id, e.event_type, e.topic, e.record_key, e.payload
        FROM unnest(event_ids, event_types, topics, record_keys, payloads) WITH ORDINALITY
            AS e(event_id, event_type, topic, record_key, payload, n)
        ORDER BY e.n;
    PERFORM pg_notify('{OUTBOX_CHANNEL}', '');
    RETURN actual;
END $$;

-- Appends to several streams in one round trip (a consumer deciding a whole batch): the same
-- lock, every stream's version checked first, then the rows in the order given, each stream's
-- versions following on from its `expected` one. Returns the streams not at their expected
-- version; when there is any, nothing was appended.
CREATE OR REPLACE FUNCTION event_store_append_streams(
    streams text[], expected integer[], event_streams text[], event_ids text[], event_types text[],
    topics text[], record_keys text[], payloads bytea[]
) RETURNS text[] LANGUAGE plpgsql AS $$
DECLARE
    conflicts text[];
BEGIN
    PERFORM pg_advisory_xact_lock({APPEND_LOCK_KEY});
    SELECT coalesce(array_agg(s.stream ORDER BY s.stream), '{{}}') INTO conflicts
        FROM unnest(streams, expected) AS s(stream, expected)
        WHERE (SELECT coalesce(max(e.version), 0) FROM event_store e WHERE e.stream_id = s.stream) <> s.expected;
    IF cardinality(conflicts) > 0 OR cardinality(event_ids) = 0 THEN
        RETURN conflicts;
    END IF;
    INSERT INTO event_store (stream_id, version, event_id, event_type, topic, record_key, payload)
        SELECT e.stream, s.expected + row_number() OVER (PARTITION BY e.stream ORDER BY e.n), e.event_id,
               e.event_type, e.topic, e.record_key, e.payload
        FROM unnest(event_streams, event_ids, event_types, topics, record_keys, payloads) WITH ORDINALITY
            AS e(stream, event_id, event_type, topic, record_key, payload, n)
        JOIN unnest(streams, expected) AS s(stream, expected) ON s.stream = e.stream
        ORDER BY e.n;
    PERFORM pg_notify('{OUTBOX_CHANNEL}', '');
    RETURN conflicts;
END $$;

-- The per-stream lock of deciders (`EventStore.lock_stream`): waits for whichever transaction
-- holds it. Two keys, so its space is disjoint from the one-key append lock's.
CREATE OR REPLACE FUNCTION event_store_lock_stream(stream text) RETURNS void LANGUAGE sql AS $$
    SELECT pg_advisory_xact_lock(1, hashtext(stream));
$$;

-- A stream's events once its lock is held, in one round trip. The read is a statement of its
-- own in a VOLATILE function, so its snapshot is taken after the lock was granted: it sees
-- whatever the previous holder committed (one statement doing both would read as of before).
CREATE OR REPLACE FUNCTION event_store_load_locked(stream text)
    RETURNS TABLE (version integer, payload bytea, topic text) LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM event_store_lock_stream(stream);
    RETURN QUERY SELECT e.version, e.payload, e.topic FROM event_store e WHERE e.stream_id = stream
        ORDER BY e.version;
END $$;

-- Several streams' events once all their locks are held, in one round trip. The locks are taken
-- in the order of their keys, so two transactions locking overlapping sets cannot deadlock.
CREATE OR REPLACE FUNCTION event_store_load_locked_streams(streams text[])
    RETURNS TABLE (stream_id text, version integer, payload bytea, topic text) LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    key integer;
BEGIN
    FOR key IN SELECT DISTINCT hashtext(s) FROM unnest(streams) AS s ORDER BY 1 LOOP
        PERFORM pg_advisory_xact_lock(1, key);
    END LOOP;
    RETURN QUERY SELECT e.stream_id, e.version, e.payload, e.topic FROM event_store e
        WHERE e.stream_id = ANY(streams) ORDER BY e.stream_id, e.version;
END $$;

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
