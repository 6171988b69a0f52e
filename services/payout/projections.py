"""The ledger: a double-entry projection of the `production` and `payout` topics, in the payout database.

`apply_event(conn, event)` is the whole writer; `apply_events(conn, events)` posts a
batch with one statement, row for row what `apply_event` writes one event at a time.
They need nothing but an asyncpg connection, so the payout service's transactional
consumer (`LEDGER_HANDLER`), the auditor's replay into a scratch database and the
bench run the very same code.

What keeps the ledger exact:
- each transaction's id derives from its event (`domain.transaction_id`), and is
  the primary key: a redelivered event collides with its first copy and changes
  nothing, with or without the consumer's own event-id dedupe;
- statement triggers refuse any statement that leaves a transaction it wrote
  without two postings summing to zero: no code path, however buggy, can
  commit an unbalanced ledger;
- ledger rows are append-only: corrections are new events, never edits;
- the digest and the `as_of` cuts order and filter by what the events say
  (transaction id, account, event time), never by arrival.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

import asyncpg
from aiokafka import ConsumerRecord

from services.payout import domain
from shared.contracts import Envelope
from shared.db import DATABASE_UNAVAILABLE
from shared.eventstore import BatchHandler, Reject

#: Serialises installs of these tables by several instances starting at once.
INSTALL_LOCK_KEY = 0x616E79616D01

DDL = """
-- Keys and ids compare as "C" (byte order): each posted event puts them into seven or eight
-- index entries, and under the database's default collation every comparison went through the
-- C library's strcoll on copies of both strings (a tenth of PostgreSQL's time in a replay). The
-- order is the one the digest sorts in anyway; equality is the same under any collation.
CREATE TABLE IF NOT EXISTS ledger_transactions (
    transaction_id   text COLLATE "C" PRIMARY KEY,
    kind             text        NOT NULL CHECK (kind IN ('earned', 'scheduled', 'paid', 'failed')),
    business_key     text COLLATE "C" NOT NULL UNIQUE,
    event_id         text COLLATE "C" NOT NULL UNIQUE,
    event_type       text        NOT NULL,
    event_time       timestamptz NOT NULL,
    artisan_id       text COLLATE "C" NOT NULL,
    subject_id       text COLLATE "C" NOT NULL,
    amount_idr       bigint      NOT NULL CHECK (amount_idr >= 0),
    -- Where the event was read from: metadata for people, never part of the ledger's meaning
    -- (a replay reads other offsets, and the digest ignores these columns).
    source_topic     text,
    source_partition integer,
    source_offset    bigint,
    recorded_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS ledger_transactions_earned
    ON ledger_transactions (artisan_id, event_time) WHERE kind = 'earned';

CREATE TABLE IF NOT EXISTS ledger_postings (
    -- Its transaction must exist: checked per statement by `ledger_postings_belong_and_balance`
    -- below, not by a foreign key, whose row-level checks lock the transaction's row once per
    -- posting (a third of the ledger's write cost). Ledgers installed with the key drop it.
    transaction_id text COLLATE "C" NOT NULL,
    account        text COLLATE "C" NOT NULL,
    amount_idr     bigint NOT NULL,
    PRIMARY KEY (transaction_id, account)
);
ALTER TABLE ledger_postings DROP CONSTRAINT IF EXISTS ledger_postings_transaction_id_fkey;
-- Ledgers installed before their keys were "C" are brought over once: the rows stay as they are
-- (text is text), each index on a changed column is rebuilt.
DO $$
DECLARE
    col record;
BEGIN
    FOR col IN SELECT a.attrelid::regclass AS tab, a.attname AS name FROM pg_attribute a
               WHERE a.attrelid IN (to_regclass('ledger_transactions'), to_regclass('ledger_postings'))
                 AND a.attname IN ('transaction_id', 'business_key', 'event_id', 'artisan_id', 'subject_id', 'account')
                 AND a.attcollation <> 'pg_catalog."C"'::regcollation
    LOOP
        EXECUTE format('ALTER TABLE %s ALTER COLUMN %I TYPE text COLLATE "C"', col.tab, col.name);
    END LOOP;
END $$;
CREATE INDEX IF NOT EXISTS ledger_postings_account ON ledger_postings (account);

-- Double entry, enforced by the database: every statement that writes to the ledger must leave
-- each transaction it touched with at least two postings summing to zero, so a transaction and
-- its postings are written by one statement (the projection's `INSERT … WITH`). Checked once per
-- statement over its transition tables, not once per row at commit: a batch of a thousand
-- transactions is one join instead of thousands of trigger calls (statement triggers cannot be
-- deferred, hence at the statement's end). Only inserts need checking: the ledger refuses
-- updates, deletes and truncation outright (below). Two checks, one per table:
--
-- * every new transaction has at least two postings, summing to zero;
-- * every new posting belongs to a transaction that exists, and the new postings of each
--   transaction sum to zero.
--
-- Together they keep every transaction balanced: it is balanced when it is written (the first
-- check), and postings can only be added to it later, never changed or removed, in groups that
-- sum to zero (the second), so its sum stays zero and its postings stay at least two.
CREATE OR REPLACE FUNCTION ledger_transaction_balances() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    unbalanced record;
BEGIN
    -- LATERAL: one index probe per new transaction, whatever the planner guesses of the
    -- transition table's size (a join was planned as a scan of every posting, once per batch).
    SELECT t.transaction_id, legs.legs, legs.total INTO unbalanced
        FROM new_transactions t,
        LATERAL (SELECT count(*) AS legs, coalesce(sum(p.amount_idr), 0) AS total
                 FROM ledger_postings p WHERE p.transaction_id = t.transaction_id) legs
        WHERE legs.legs < 2 OR legs.total <> 0
        LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger transaction % does not balance: % postings summing to % rupiah',
            unbalanced.transaction_id, unbalanced.legs, unbalanced.total USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION ledger_postings_belong_and_balance() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    wrong record;
BEGIN
    -- The statement's new postings summed per transaction (no probe of older postings: those
    -- already sum to zero), and one index probe per transaction for its row. LATERAL … LIMIT 1
    -- keeps it a probe: as a join, the plan PL/pgSQL cached while the ledger was small scanned
    -- the whole table on every statement (one event at a time slowed from 3,955 to 1,524/s
    -- over 30,000 events).
    SELECT added.transaction_id, added.total, existing.found IS NULL AS orphan INTO wrong
        FROM (SELECT transaction_id, sum(amount_idr) AS total FROM new_postings GROUP BY transaction_id) added
        LEFT JOIN LATERAL (SELECT true AS found FROM ledger_transactions t
                           WHERE t.transaction_id = added.transaction_id LIMIT 1) existing ON true
        WHERE existing.found IS NULL OR added.total <> 0
        LIMIT 1;
    IF NOT FOUND THEN
        RETURN NULL;
    ELSIF wrong.orphan THEN
        RAISE EXCEPTION 'ledger postings refer to transaction %, which does not exist', wrong.transaction_id
            USING ERRCODE = 'foreign_key_violation';
    ELSE
        RAISE EXCEPTION 'ledger transaction % does not balance: its new postings sum to % rupiah',
            wrong.transaction_id, wrong.total USING ERRCODE = 'check_violation';
    END IF;
END $$;
DROP TRIGGER IF EXISTS ledger_postings_balanced ON ledger_postings;
CREATE TRIGGER ledger_postings_balanced AFTER INSERT ON ledger_postings
    REFERENCING NEW TABLE AS new_postings FOR EACH STATEMENT EXECUTE FUNCTION ledger_postings_belong_and_balance();
DROP TRIGGER IF EXISTS ledger_transactions_balanced ON ledger_transactions;
CREATE TRIGGER ledger_transactions_balanced AFTER INSERT ON ledger_transactions
    REFERENCING NEW TABLE AS new_transactions FOR EACH STATEMENT EXECUTE FUNCTION ledger_transaction_balances();

-- Corrections are new events, never edits: the ledger refuses to be rewritten.
CREATE OR REPLACE FUNCTION ledger_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the ledger is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END $$;
DROP TRIGGER IF EXISTS ledger_transactions_append_only ON ledger_transactions;
CREATE TRIGGER ledger_transactions_append_only BEFORE UPDATE OR DELETE ON ledger_transactions
    FOR EACH ROW EXECUTE FUNCTION ledger_is_append_only();
DROP TRIGGER IF EXISTS ledger_postings_append_only ON ledger_postings;
CREATE TRIGGER ledger_postings_append_only BEFORE UPDATE OR DELETE ON ledger_postings
    FOR EACH ROW EXECUTE FUNCTION ledger_is_append_only();
DROP TRIGGER IF EXISTS ledger_transactions_not_truncated ON ledger_transactions;
CREATE TRIGGER ledger_transactions_not_truncated BEFORE TRUNCATE ON ledger_transactions
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_is_append_only();
DROP TRIGGER IF EXISTS ledger_postings_not_truncated ON ledger_postings;
CREATE TRIGGER ledger_postings_not_truncated BEFORE TRUNCATE ON ledger_postings
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_is_append_only();
"""

_INSERT = """
WITH tx AS (
    INSERT INTO ledger_transactions (transaction_id, kind, business_key, event_id, event_type, event_time,
                                     artisan_id, subject_id, amount_idr, source_topic, source_partition,
                                     source_offset)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
    ON CONFLICT DO NOTHING
    RETURNING transaction_id
)
INSERT INTO ledger_postings (transaction_id, account, amount_idr)
SELECT tx.transaction_id, leg.account, leg.amount_idr
FROM tx, unnest($13::text[], $14::bigint[]) AS leg(account, amount_idr)
RETURNING transaction_id
"""


class Source(NamedTuple):
    """Where an event was read: kept beside its transaction for people, outside the digest.

    A NamedTuple, like the ledger transaction (see `domain.Posting`): a replay makes one per event."""

    topic: str
    partition: int
    offset: int


async def install_ledger(conn: asyncpg.Connection) -> None:
    """Create the ledger's tables and triggers if missing; safe from several processes at once."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", INSTALL_LOCK_KEY)
        await conn.execute(DDL)


async def install(pool: asyncpg.Pool) -> None:
    """The service's schema installer for the ledger."""
    async with pool.acquire() as conn:
        await install_ledger(conn)


async def apply_event(conn: asyncpg.Connection, event: Envelope, *, source: Source | None = None) -> bool:
    """Post `event` to the ledger; True if it made a new transaction, False if it moves no money or
    was already posted. Raises `Reject` for a second, different event for the same piece or payout
    ending (the first one posted stays; the refused one is for people to look at)."""
    tx = domain.transaction_for(event)
    if tx is None:
        return False
    async with conn.transaction():  # a savepoint inside the caller's transaction, or a transaction of its own
        inserted = await conn.fetch(
            _INSERT,
            tx.transaction_id, tx.kind.value, tx.business_key, tx.event_id, tx.event_type, tx.event_time,
            tx.artisan_id, tx.subject_id, tx.amount_idr,
            source.topic if source else None, source.partition if source else None, source.offset if source else None,
            [p.account for p in tx.postings], [p.amount_idr for p in tx.postings],
        )
        if inserted:
            # Balanced: the insert's own statement checked it, so an unbalanced transaction
            # fails this one event (bounded retries, then a dead letter), never the batch's commit.
            return True
        existing = await conn.fetchrow(
            "SELECT transaction_id, event_id FROM ledger_transactions WHERE business_key = $1 OR transaction_id = $2",
            tx.business_key, tx.transaction_id,
        )
    if existing is not None and existing["transaction_id"] == tx.transaction_id:
        return False  # this very event, delivered again
    # A second event for what may happen only once. Both are keyed by the same artisan, so they
    # sit in one partition in a fixed order: "the first one wins" is the same in every replay.
    other = existing["event_id"] if existing is not None else "unknown"
    what = "piece" if tx.kind is domain.Kind.EARNED else "payout"
    raise Reject(
        f"{what}-already-posted",
        f"{tx.event_type} {tx.event_id} is a second {tx.kind.value} for {what} {tx.subject_id}, "
        f"already posted from event {other}",
    )


_INSERT_BATCH_TEMPLATE = """
WITH tx AS (
    INSERT INTO ledger_transactions (transaction_id, kind, business_key, event_id, event_type, event_time,
                                     artisan_id, subject_id, amount_idr, source_topic, source_partition,
                                     source_offset)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],
                         $7::text[], $8::text[], $9::bigint[], $10::text[], $11::int[], $12::bigint[])
    {on_conflict}
    RETURNING transaction_id
), legs AS (
    INSERT INTO ledger_postings (transaction_id, account, amount_idr)
    SELECT leg.transaction_id, leg.account, leg.amount_idr
    FROM unnest($13::text[], $14::text[], $15::bigint[]) AS leg(transaction_id, account, amount_idr)
    -- IN, not a join: the planner hashes the (small) set of new ids instead of a nested loop.
    WHERE leg.transaction_id IN (SELECT transaction_id FROM tx)
)
SELECT transaction_id FROM tx
"""
#: A batch of transactions none of which is in the ledger yet: the first try for every batch.
#: Without `ON CONFLICT` PostgreSQL inserts straight away; with it, every row is a speculative
#: insertion that first probes each of the three unique indexes (a quarter of PostgreSQL's CPU
#: per ledger transaction, measured: `README`, seventh round).
_INSERT_NEW_BATCH = _INSERT_BATCH_TEMPLATE.format(on_conflict="")
#: The same batch when some of it is there already (a redelivery, a second ending for one payout):
#: those rows are skipped and the rest inserted.
_INSERT_BATCH = _INSERT_BATCH_TEMPLATE.format(on_conflict="ON CONFLICT DO NOTHING")


@dataclass
class BatchOutcome:
    """What `apply_events` did: how many new transactions, and the events it refused or could not post
    (each with its index in the batch), in batch order."""

    posted: int = 0
    rejected: list[tuple[int, Reject]] = field(default_factory=list)
    failed: list[tuple[int, Exception]] = field(default_factory=list)


async def apply_events(conn: asyncpg.Connection, events: Sequence[tuple[Envelope, Source | None]]) -> BatchOutcome:
    """Post `events` (each with where it was read, if known) in order, exactly as `apply_event` would
    one by one, but with one round trip for the whole batch instead of four per event.

    Needs an open transaction on `conn` (the caller's batch, with its offsets). Refusals are
    returned, not raised, so that the caller can dead-letter them and commit the rest; an event
    that fails otherwise is returned in `failed`, its writes undone, the others' kept.

    Why it is `apply_event`'s ledger, row for row (`test_apply_events_writes_what_apply_event_writes`):
    - the posting rules are the same (`domain.transaction_for`);
    - rows go in in batch order (plainly; a batch that meets rows already there, again with
      `ON CONFLICT DO NOTHING`), so of two events with one business key the first one wins,
      as in a sequential replay;
    - an event whose row was not inserted (a redelivery, or a second ending for one payout) is
      handed to `apply_event` itself, which finds the first row and decides "already posted"
      (no-op) or `Reject`, with its very wording;
    - the balance check runs at the end of the batch's statement; should the batch not balance
      (or PostgreSQL refuse it otherwise), it is rolled back to its savepoint and posted event by
      event, so that only the culprit fails.
    """
    if not conn.is_in_transaction():
        raise RuntimeError("apply_events needs a connection inside the batch's transaction")
    outcome = BatchOutcome()
    planned = [(index, tx) for index, (event, _) in enumerate(events)
               if (tx := domain.transaction_for(event)) is not None]
    if not planned:
        return outcome
    columns: list[list] = [[] for _ in range(15)]
    (ids, kinds, keys, event_ids, types, times, artisans, subjects, amounts, topics, partitions, offsets,
     leg_ids, leg_accounts, leg_amounts) = columns
    # A transaction id twice in one batch (the relay's at-least-once) goes in once, its first copy:
    # the later copy's postings would otherwise ride along on the first copy's row.
    first_copies: set[int] = set()
    in_batch: set[str] = set()
    for index, tx in planned:
        if tx.transaction_id in in_batch:
            continue
        in_batch.add(tx.transaction_id)
        first_copies.add(index)
        source = events[index][1]
        ids.append(tx.transaction_id)
        kinds.append(tx.kind.value)
        keys.append(tx.business_key)
        event_ids.append(tx.event_id)
        types.append(tx.event_type)
        times.append(tx.event_time)
        artisans.append(tx.artisan_id)
        subjects.append(tx.subject_id)
        amounts.append(tx.amount_idr)
        topics.append(source.topic if source else None)
        partitions.append(source.partition if source else None)
        offsets.append(source.offset if source else None)
        for posting in tx.postings:
            leg_ids.append(tx.transaction_id)
            leg_accounts.append(posting.account)
            leg_amounts.append(posting.amount_idr)
    try:
        inserted = await _insert_batch(conn, columns)
    except DATABASE_UNAVAILABLE:  # the server, not this batch: the caller retries or gives up
        raise
    except asyncpg.PostgresError:
        # An unbalanced transaction (impossible with the posting rules) or a value PostgreSQL
        # refuses: find the culprit the way apply_event would, event by event.
        for index, _ in planned:
            await _apply_one(conn, events, index, outcome)
        return outcome
    outcome.posted += len(inserted)
    for index, tx in planned:
        if not (index in first_copies and tx.transaction_id in inserted):
            # A duplicate, or a second event for one piece or payout ending: apply_event decides
            # which, against the rows now present, exactly as it would have in a sequential replay.
            await _apply_one(conn, events, index, outcome)
    return outcome


async def _insert_batch(conn: asyncpg.Connection, columns: Sequence[list]) -> set[str]:
    """Insert the batch's rows; the ids of the transactions that were not in the ledger before.

    Each try is a savepoint, so a failed one leaves nothing behind. Nearly every batch is new
    (all of a replay's, but for redeliveries), so it is first inserted plainly; a batch that
    collides with a row already there is undone and inserted again skipping what is there,
    with the very outcome the second statement alone would have had."""
    try:
        async with conn.transaction():
            return {row[0] for row in await conn.fetch(_INSERT_NEW_BATCH, *columns)}
    except asyncpg.UniqueViolationError:
        async with conn.transaction():
            return {row[0] for row in await conn.fetch(_INSERT_BATCH, *columns)}


async def _apply_one(
    conn: asyncpg.Connection, events: Sequence[tuple[Envelope, Source | None]], index: int, outcome: BatchOutcome,
) -> None:
    event, source = events[index]
    try:
        if await apply_event(conn, event, source=source):  # its own savepoint: a failure undoes only itself
            outcome.posted += 1
    except Reject as refusal:
        outcome.rejected.append((index, refusal))
    except DATABASE_UNAVAILABLE:  # the server, not this batch: the caller retries or gives up
        raise
    except asyncpg.PostgresError as exc:
        outcome.failed.append((index, exc))


async def project(conn: asyncpg.Connection, event: Envelope, record: ConsumerRecord) -> None:
    """Post one event, with where it was read: the ledger consumer's handler for a single event."""
    await apply_event(conn, event, source=Source(record.topic, record.partition, record.offset))


async def project_batch(
    conn: asyncpg.Connection, items: Sequence[tuple[Envelope, ConsumerRecord]]
) -> list[tuple[int, Reject]]:
    """Post a consumer batch with `apply_events`; its refusals go back to be dead-lettered."""
    outcome = await apply_events(conn, [(event, Source(record.topic, record.partition, record.offset))
                                        for event, record in items])
    if outcome.failed:
        # The consumer undoes the batch and applies it event by event with `project`, so that
        # the failing event gets its bounded retries and its dead letter, as a single event would.
        raise outcome.failed[0][1]
    return outcome.rejected


#: The handler of the `payout-ledger` transactional consumer: a batch at a time, `project` as its fallback.
LEDGER_HANDLER = BatchHandler(apply_batch=project_batch, each=project)


# --- reading the ledger -------------------------------------------------------------------------


@dataclass(frozen=True)
class DigestResult:
    """The ledger digest as of a moment, and how much it covers."""

    digest: str
    transactions: int
    postings: int


async def ledger_digest(conn: asyncpg.Connection, as_of: datetime | None = None) -> DigestResult:
    """The digest of the ledger as of `as_of` (event time, inclusive; None: everything).

    Rows are streamed in (transaction id, account) order under the "C" collation, which is
    code-point order, the order `domain.ledger_digest` sorts in: a live ledger and a replay
    in any database, whatever its locale, digest alike.
    """
    digest = domain.LedgerDigest()
    query = """
        SELECT p.transaction_id, p.account, p.amount_idr, t.event_id, t.event_time
        FROM ledger_postings p JOIN ledger_transactions t USING (transaction_id)
        WHERE $1::timestamptz IS NULL OR t.event_time <= $1
        ORDER BY p.transaction_id COLLATE "C", p.account COLLATE "C"
    """
    # One snapshot for the whole read (a cursor needs a transaction); inside a caller's
    # transaction, a savepoint reads the caller's snapshot.
    snapshot = conn.transaction() if conn.is_in_transaction() else conn.transaction(
        readonly=True, isolation="repeatable_read")
    async with snapshot:
        async for row in conn.cursor(query, as_of, prefetch=2000):
            digest.add(domain.DigestRow(row["transaction_id"], row["account"], row["amount_idr"], row["event_id"],
                                        row["event_time"]))
    return DigestResult(digest.hexdigest(), digest.transactions, digest.postings)


async def balances(conn: asyncpg.Connection, as_of: datetime | None = None) -> dict[str, int]:
    """Every account's balance as of `as_of` (event time, inclusive; None: everything)."""
    rows = await conn.fetch(
        """SELECT p.account, sum(p.amount_idr)::bigint AS balance
           FROM ledger_postings p JOIN ledger_transactions t USING (transaction_id)
           WHERE $1::timestamptz IS NULL OR t.event_time <= $1
           GROUP BY p.account ORDER BY p.account COLLATE "C" """,
        as_of,
    )
    return {row["account"]: row["balance"] for row in rows}


async def earned_by_artisan(conn: asyncpg.Connection, until: datetime) -> dict[str, int]:
    """Per artisan, the earnings whose event time is at or before `until`."""
    rows = await conn.fetch(
        """SELECT artisan_id, sum(amount_idr)::bigint AS earned FROM ledger_transactions
           WHERE kind = 'earned' AND event_time <= $1 GROUP BY artisan_id""",
        until,
    )
    return {row["artisan_id"]: row["earned"] for row in rows}


@dataclass(frozen=True)
class StatementEntry:
    """One posting on an artisan's accounts, with the event it came from."""

    transaction_id: str
    kind: str
    account: str
    amount_idr: int
    event_id: str
    event_type: str
    event_time: datetime
    subject_id: str


@dataclass(frozen=True)
class Statement:
    """An artisan's entries and balances as of a moment."""

    artisan_id: str
    entries: Sequence[StatementEntry]
    earned_idr: int
    payable_idr: int
    in_transit_idr: int
    paid_idr: int


async def has_entries(conn: asyncpg.Connection, artisan_id: str) -> bool:
    """Whether the ledger ever recorded anything for `artisan_id`."""
    return bool(await conn.fetchval("SELECT true FROM ledger_transactions WHERE artisan_id = $1 LIMIT 1", artisan_id))


async def statement(conn: asyncpg.Connection, artisan_id: str, as_of: datetime | None = None) -> Statement:
    """The artisan's statement: every posting on her accounts up to `as_of`, in event-time order."""
    accounts = domain.artisan_accounts(artisan_id)
    rows = await conn.fetch(
        """SELECT p.transaction_id, t.kind, p.account, p.amount_idr, t.event_id, t.event_type, t.event_time,
                  t.subject_id
           FROM ledger_postings p JOIN ledger_transactions t USING (transaction_id)
           WHERE p.account = ANY($1::text[]) AND ($2::timestamptz IS NULL OR t.event_time <= $2)
           ORDER BY t.event_time, p.transaction_id COLLATE "C", p.account COLLATE "C" """,
        list(accounts), as_of,
    )
    entries = [StatementEntry(**dict(row)) for row in rows]
    totals = dict.fromkeys(accounts, 0)
    for entry in entries:
        totals[entry.account] += entry.amount_idr
    payable, transit, paid = accounts
    earned = sum(e.amount_idr for e in entries if e.kind == domain.Kind.EARNED)
    return Statement(artisan_id, entries, earned, totals[payable], totals[transit], totals[paid])
