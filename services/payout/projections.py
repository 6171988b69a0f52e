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
- a transaction is one row that moves one amount from one account to another,
  so its two postings (the `ledger_postings` view) sum to zero by construction:
  no code path, however buggy, can commit an unbalanced ledger;
- ledger rows are append-only: corrections are new events, never edits;
- the digest and the `as_of` cuts order and filter by what the events say
  (event id, event time), never by arrival.

What bounds the numbers: a transaction's amount is at most Rp 1 trillion (`MAX_RUPIAH`, SPEC §5),
checked by the decoder and again by the table; nothing bounds a balance. Balances and totals are
sums over any number of transactions, so they are summed as `numeric` in PostgreSQL (what
`sum(bigint)` gives) and read into Python integers, never cast back into a `bigint`: no history,
however long or hostile, can make a read overflow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import NamedTuple

import asyncpg
from aiokafka import ConsumerRecord

from services.payout import domain
from shared.contracts import Envelope
from shared.contracts.events import MAX_RUPIAH
from shared.db import DATABASE_UNAVAILABLE, normalised
from shared.eventstore import BatchHandler, Reject, UnitOfWork
from shared.timeutil import to_wib

#: Serialises installs of these tables by several instances starting at once.
INSTALL_LOCK_KEY = 0x616E79616D01

#: The check that bounds a transaction's amount (SPEC §5), by name: installs add it to ledgers made before it.
_AMOUNT_BOUND = f"ledger_transactions_amount_idr_bounded CHECK (amount_idr <= {MAX_RUPIAH})"
#: Every kind of transaction, as SQL: what the table's kind check allows.
_KINDS = "(" + ", ".join(f"'{kind.value}'" for kind in domain.Kind) + ")"

#: The two legs of a transfer row `t`, as postings `p(account, amount_idr)`: out of one account, into
#: the other. The `ledger_postings` view and the reads below expand transfers with it.
_LEGS = "LATERAL (VALUES (t.from_account, -t.amount_idr), (t.to_account, t.amount_idr)) AS p(account, amount_idr)"
#: The same, for readers beside this module (e.g. `invoicing`).
LEGS = _LEGS

DDL = """
-- Keys and ids compare as "C" (byte order): each posted event puts them into index entries, and
-- under the database's default collation every comparison went through the C library's strcoll on
-- copies of both strings (a tenth of PostgreSQL's time in a replay). The order is the one the
-- digest sorts in anyway; equality is the same under any collation.
CREATE TABLE IF NOT EXISTS ledger_transactions (
    transaction_id   text COLLATE "C" PRIMARY KEY,
    kind             text        NOT NULL,
    business_key     text COLLATE "C" NOT NULL UNIQUE,
    event_id         text COLLATE "C" NOT NULL UNIQUE,
    event_type       text        NOT NULL,
    event_time       timestamptz NOT NULL,
    -- NULL for a collaborator's own transactions (invoiced, received), which touch no artisan's account.
    artisan_id       text COLLATE "C",
    subject_id       text COLLATE "C" NOT NULL,
    amount_idr       bigint      NOT NULL CHECK (amount_idr >= 0),
    -- Double entry, one row per transaction: `amount_idr` leaves `from_account` and arrives in
    -- `to_account`, so its two postings (the `ledger_postings` view) sum to zero by construction.
    from_account     text COLLATE "C" NOT NULL,
    to_account       text COLLATE "C" NOT NULL,
    -- Where the event was read from: metadata for people, never part of the ledger's meaning
    -- (a replay reads other offsets, and the digest ignores these columns).
    source_topic     text,
    source_partition integer,
    source_offset    bigint,
    -- When the event's record was appended to its topic (the broker's timestamp): recording time,
    -- the same for the live ledger and a replay, which `as_known_at` cuts by.
    logged_at        timestamptz,
    recorded_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ledger_transactions_between_two_accounts CHECK (from_account <> to_account),
    CONSTRAINT ledger_transactions_kind_known CHECK (kind IN """ + _KINDS + """),
    CONSTRAINT """ + _AMOUNT_BOUND + """
);
-- Ledgers installed before collaborators were invoiced (issue 29): their kind check knew four kinds,
-- and every transaction had an artisan. The check is replaced NOT VALID (the rows there already pass
-- it), and a collaborator's transactions have no artisan.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = 'ledger_transactions'::regclass
                   AND conname = 'ledger_transactions_kind_known') THEN
        ALTER TABLE ledger_transactions DROP CONSTRAINT IF EXISTS ledger_transactions_kind_check;
        ALTER TABLE ledger_transactions ADD CONSTRAINT ledger_transactions_kind_known
            CHECK (kind IN """ + _KINDS + """) NOT VALID;
    END IF;
    IF (SELECT attnotnull FROM pg_attribute WHERE attrelid = 'ledger_transactions'::regclass
        AND attname = 'artisan_id') THEN
        ALTER TABLE ledger_transactions ALTER COLUMN artisan_id DROP NOT NULL;
    END IF;
END $$;
-- Ledgers installed before their keys were "C" are brought over once: the rows stay as they are
-- (text is text), each index on a changed column is rebuilt.
DO $$
DECLARE
    col record;
BEGIN
    FOR col IN SELECT a.attname AS name FROM pg_attribute a
               WHERE a.attrelid = 'ledger_transactions'::regclass
                 AND a.attname IN ('transaction_id', 'business_key', 'event_id', 'artisan_id', 'subject_id')
                 AND a.attcollation <> 'pg_catalog."C"'::regcollation
    LOOP
        EXECUTE format('ALTER TABLE ledger_transactions ALTER COLUMN %I TYPE text COLLATE "C"', col.name);
    END LOOP;
END $$;
-- Ledgers installed before a transaction was one row kept its postings in a table of their own,
-- checked by statement triggers to come in balanced pairs. They are brought over once, in the
-- install's transaction: each transaction takes its two postings' accounts, the one the amount
-- left first (for a transfer of 0 rupiah either order gives the same postings). A transaction
-- that is not exactly such a pair stops the install, and the ledger stays as it was.
DO $$
DECLARE
    odd record;
BEGIN
    IF (SELECT relkind FROM pg_class WHERE oid = to_regclass('ledger_postings')) IS DISTINCT FROM 'r' THEN
        RETURN;
    END IF;
    ALTER TABLE ledger_transactions ADD COLUMN IF NOT EXISTS from_account text COLLATE "C",
                                    ADD COLUMN IF NOT EXISTS to_account text COLLATE "C";
    ALTER TABLE ledger_transactions DISABLE TRIGGER ledger_transactions_append_only;
    UPDATE ledger_transactions t SET from_account = legs.accounts[1], to_account = legs.accounts[2]
        FROM (SELECT transaction_id, count(*) AS legs, min(amount_idr) AS low, max(amount_idr) AS high,
                     array_agg(account ORDER BY amount_idr, account COLLATE "C") AS accounts
              FROM ledger_postings GROUP BY transaction_id) legs
        WHERE legs.transaction_id = t.transaction_id
          AND legs.legs = 2 AND legs.low = -t.amount_idr AND legs.high = t.amount_idr;
    ALTER TABLE ledger_transactions ENABLE TRIGGER ledger_transactions_append_only;
    SELECT t.transaction_id INTO odd FROM ledger_transactions t WHERE t.from_account IS NULL LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger transaction % is not one transfer between two accounts; the ledger was not '
                        'converted', odd.transaction_id USING ERRCODE = 'check_violation';
    END IF;
    IF (SELECT count(*) FROM ledger_postings) <> 2 * (SELECT count(*) FROM ledger_transactions) THEN
        RAISE EXCEPTION 'ledger postings without their transaction; the ledger was not converted'
            USING ERRCODE = 'check_violation';
    END IF;
    DROP TABLE ledger_postings;
    DROP TRIGGER IF EXISTS ledger_transactions_balanced ON ledger_transactions;
    DROP FUNCTION IF EXISTS ledger_transaction_balances();
    DROP FUNCTION IF EXISTS ledger_postings_belong_and_balance();
    DROP INDEX IF EXISTS ledger_transactions_earned;
    ALTER TABLE ledger_transactions ALTER COLUMN from_account SET NOT NULL, ALTER COLUMN to_account SET NOT NULL,
        ADD CONSTRAINT ledger_transactions_between_two_accounts CHECK (from_account <> to_account);
END $$;
-- Ledgers installed before amounts were bounded get the bound once, NOT VALID: it holds for every
-- row written from now on, without reading (or refusing) the rows already there: bigint bounded those,
-- and balances are summed as numeric, so even an outsized old row reads. After the conversion above,
-- whose UPDATE would otherwise check old rows against it.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = 'ledger_transactions'::regclass
                   AND conname = 'ledger_transactions_amount_idr_bounded') THEN
        ALTER TABLE ledger_transactions ADD CONSTRAINT """ + _AMOUNT_BOUND + """ NOT VALID;
    END IF;
END $$;
-- Ledgers installed before recording time was kept get the column; their older rows have none (NULL),
-- so a cut by recording time leaves them out: `anyam replay --as-known-at` reads the topics instead.
ALTER TABLE ledger_transactions ADD COLUMN IF NOT EXISTS logged_at timestamptz;
-- Statements read an artisan's transactions (every transaction that touches her accounts names her).
CREATE INDEX IF NOT EXISTS ledger_transactions_artisan ON ledger_transactions (artisan_id, event_time);

-- Each transaction's two postings, for people and for reads that think in postings.
CREATE OR REPLACE VIEW ledger_postings AS
    SELECT t.transaction_id, p.account, p.amount_idr FROM ledger_transactions t, """ + _LEGS + """;

-- Corrections are new events, never edits: the ledger refuses to be rewritten.
CREATE OR REPLACE FUNCTION ledger_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the ledger is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END $$;
DROP TRIGGER IF EXISTS ledger_transactions_append_only ON ledger_transactions;
CREATE TRIGGER ledger_transactions_append_only BEFORE UPDATE OR DELETE ON ledger_transactions
    FOR EACH ROW EXECUTE FUNCTION ledger_is_append_only();
DROP TRIGGER IF EXISTS ledger_transactions_not_truncated ON ledger_transactions;
CREATE TRIGGER ledger_transactions_not_truncated BEFORE TRUNCATE ON ledger_transactions
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_is_append_only();
"""

#: The columns a posting writes: a transaction's fields, named and ordered as `domain.LedgerTransaction`'s
#: (so a batch's rows are the transactions themselves), then where and when its event was read.
_COLUMN_NAMES = (*domain.LedgerTransaction._fields, "source_topic", "source_partition", "source_offset",
                 "logged_at")
_COLUMNS = ", ".join(_COLUMN_NAMES)

#: The source columns of an event read from nowhere in particular.
_NO_SOURCE = (None, None, None, None)


def _row(tx: domain.LedgerTransaction, source: Source | None) -> tuple:
    """The values of `_COLUMNS` for `tx`: its fields, then where its event was read."""
    return (*tx, *(source or _NO_SOURCE))


_INSERT = f"""
INSERT INTO ledger_transactions ({_COLUMNS})
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
ON CONFLICT DO NOTHING
RETURNING transaction_id
"""


class Source(NamedTuple):
    """Where an event was read, and when its record was appended there: kept beside its transaction,
    outside the digest. `logged_at` is the event's recording time (`as_known_at` reads cut by it).

    A NamedTuple, like the ledger transaction (see `domain.Posting`): a replay makes one per event."""

    topic: str
    partition: int
    offset: int
    logged_at: datetime | None = None

    @classmethod
    def of(cls, record: ConsumerRecord) -> Source:
        """Where `record` was read, with the broker's timestamp (milliseconds since the epoch)."""
        return cls(record.topic, record.partition, record.offset, logged_at(record.timestamp))


def logged_at(timestamp_ms: int | None) -> datetime | None:
    """A record's timestamp as a time in WIB; None when the record has none (-1)."""
    if timestamp_ms is None or timestamp_ms < 0:
        return None
    return to_wib(datetime.fromtimestamp(timestamp_ms / 1000, UTC))


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
    tx = _transaction_for(event)
    if tx is None:
        return False
    async with conn.transaction():  # a savepoint inside the caller's transaction, or a transaction of its own
        inserted = await conn.fetch(_INSERT, *_row(tx, source))
        if inserted:
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
    what = _SUBJECTS[tx.kind]
    raise Reject(
        # Each reason whole: the contract lists them.
        "piece-already-posted" if tx.kind is domain.Kind.EARNED
        else "invoice-already-posted" if tx.kind in (domain.Kind.INVOICED, domain.Kind.RECEIVED)
        else "payout-already-posted",
        f"{tx.event_type} {tx.event_id} is a second {tx.kind.value} for {what} {tx.subject_id}, "
        f"already posted from event {other}",
    )


#: What a transaction of each kind is for, in a refusal's words.
_SUBJECTS = {domain.Kind.EARNED: "piece", domain.Kind.SCHEDULED: "payout", domain.Kind.PAID: "payout",
             domain.Kind.FAILED: "payout", domain.Kind.INVOICED: "invoice", domain.Kind.RECEIVED: "payment"}


#: A batch some of which is in the ledger already (a redelivery, a second ending for one payout):
#: those rows are skipped and the rest inserted, in the batch's order.
_INSERT_BATCH = f"""
INSERT INTO ledger_transactions ({_COLUMNS})
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], $7::text[],
                     $8::text[], $9::bigint[], $10::text[], $11::text[], $12::text[], $13::int[], $14::bigint[],
                     $15::timestamptz[])
ON CONFLICT DO NOTHING
RETURNING transaction_id
"""


@dataclass
class BatchOutcome:
    """What `apply_events` did: how many new transactions, and the events it refused or could not post
    (each with its index in the batch), in batch order."""

    posted: int = 0
    rejected: list[tuple[int, Reject]] = field(default_factory=list)
    failed: list[tuple[int, Exception]] = field(default_factory=list)


async def apply_events(conn: asyncpg.Connection, events: Sequence[tuple[Envelope, Source | None]]) -> BatchOutcome:
    """Post `events` (each with where it was read, if known) in order, exactly as `apply_event` would
    one by one, but with one statement for the whole batch (a `COPY`) instead of four round trips
    per event.

    Needs an open transaction on `conn` (the caller's batch, with its offsets). Refusals are
    returned, not raised, so that the caller can dead-letter them and commit the rest; an event
    that fails otherwise is returned in `failed`, its writes undone, the others' kept.

    Why it is `apply_event`'s ledger, row for row (`test_apply_events_writes_what_apply_event_writes`):
    - the posting rules are the same (`domain.transaction_for`);
    - rows go in in batch order (copied in; a batch that meets rows already there, again with
      `ON CONFLICT DO NOTHING`), so of two events with one business key the first one wins,
      as in a sequential replay;
    - an event whose row was not inserted (a redelivery, or a second ending for one payout) is
      handed to `apply_event` itself, which finds the first row and decides "already posted"
      (no-op) or `Reject`, with its very wording;
    - should PostgreSQL refuse the batch (a row its checks refuse), it is rolled back to its
      savepoint and posted event by event, so that only the culprit fails.
    """
    if not conn.is_in_transaction():
        raise RuntimeError("apply_events needs a connection inside the batch's transaction")
    outcome = BatchOutcome()
    planned: list[tuple[int, domain.LedgerTransaction]] = []
    for index, (event, _) in enumerate(events):
        try:
            tx = _transaction_for(event)
        except Reject as refusal:
            outcome.rejected.append((index, refusal))
            continue
        if tx is not None:
            planned.append((index, tx))
    if not planned:
        return outcome
    # A transaction id twice in one batch (the relay's at-least-once) goes in once, its first copy:
    # both would make the plain insert collide with itself, and be sent again.
    first_copies: set[int] = set()
    in_batch: set[str] = set()
    rows: list[tuple] = []
    for index, tx in planned:
        if tx.transaction_id in in_batch:
            continue
        in_batch.add(tx.transaction_id)
        first_copies.add(index)
        rows.append(_row(tx, events[index][1]))
    try:
        inserted = await _insert_batch(conn, rows)
    except DATABASE_UNAVAILABLE:  # the server, not this batch: the caller retries or gives up
        raise
    except (asyncpg.PostgresError, OverflowError):
        # A row PostgreSQL refuses, or a value asyncpg cannot even encode for COPY (it raises a bare
        # OverflowError for an integer beyond 64 bits, where a statement's parameter is a DataError);
        # impossible with the posting rules and the decoder's bounds. Find the culprit the way
        # apply_event would, event by event, so that it alone fails and the replay and the live
        # consumer tell it alike.
        for index, _ in planned:
            await _apply_one(conn, events, index, outcome)
        outcome.rejected.sort(key=lambda refusal: refusal[0])  # the unpostable ones came first
        return outcome
    outcome.posted += len(inserted)
    for index, tx in planned:
        if not (index in first_copies and tx.transaction_id in inserted):
            # A duplicate, or a second event for one piece or payout ending: apply_event decides
            # which, against the rows now present, exactly as it would have in a sequential replay.
            await _apply_one(conn, events, index, outcome)
    outcome.rejected.sort(key=lambda refusal: refusal[0])  # the unpostable ones came first
    return outcome


async def _insert_batch(conn: asyncpg.Connection, rows: list[tuple]) -> set[str]:
    """Insert the batch's rows (the values of `_COLUMNS`); the ids of the transactions that were not
    in the ledger before.

    Each try is a savepoint, so a failed one leaves nothing behind. Nearly every batch is new (all
    of a replay's, but for redeliveries), so it is first copied in (`COPY`): every row inserted as
    it comes, with no speculative insertion probing the three unique indexes first (what makes
    `ON CONFLICT` dear for PostgreSQL), and rows that asyncpg encodes
    field by field in its binary COPY format, where array parameters cost it two abstract-class
    checks per element. A batch that collides
    with a row already there is undone and inserted again skipping what is there, with the very
    outcome that second statement alone would have had."""
    try:
        async with conn.transaction():
            await conn.copy_records_to_table("ledger_transactions", records=rows, columns=_COLUMN_NAMES)
        return {row[0] for row in rows}  # each row starts with its transaction id
    except asyncpg.UniqueViolationError:
        columns = [list(column) for column in zip(*rows, strict=True)]  # one array parameter per column
        async with conn.transaction():
            return {row[0] for row in await conn.fetch(_INSERT_BATCH, *columns)}


def _transaction_for(event: Envelope) -> domain.LedgerTransaction | None:
    """`domain.transaction_for`, an event it cannot post refused as the decoder would refuse it."""
    try:
        return domain.transaction_for(event)
    except domain.Unpostable as exc:
        raise Reject("schema-invalid", f"{event.type} {event.id}: {exc}") from None


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


async def project(uow: UnitOfWork, event: Envelope, record: ConsumerRecord) -> None:
    """Post one event, with where it was read: the ledger consumer's handler for a single event."""
    await apply_event(uow.connection, event, source=Source.of(record))


async def project_batch(
    uow: UnitOfWork, items: Sequence[tuple[Envelope, ConsumerRecord]]
) -> list[tuple[int, Reject]]:
    """Post a consumer batch with `apply_events`; its refusals go back to be dead-lettered."""
    outcome = await apply_events(uow.connection, [(event, Source.of(record)) for event, record in items])
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


def _cut(as_of: str, known_at: str) -> str:
    """The condition of a read as of business time `as_of` and recording time `known_at` (both inclusive,
    each None for no cut), the parameters' placeholders: a transaction counts if its event happened by
    `as_of` and its record was on its topic by `known_at`."""
    return (f"({as_of}::timestamptz IS NULL OR t.event_time <= {as_of}) "
            f"AND ({known_at}::timestamptz IS NULL OR t.logged_at <= {known_at})")


async def ledger_digest(
    conn: asyncpg.Connection, as_of: datetime | None = None, as_known_at: datetime | None = None
) -> DigestResult:
    """The digest of the ledger as of `as_of` (event time, inclusive; None: everything), as it was known
    at `as_known_at` (recording time, inclusive; None: everything recorded).

    Rows are streamed in (event id, account) order under the "C" collation, which is code-point
    order, the order `domain.ledger_digest` sorts in: a live ledger and a replay in any database,
    whatever its locale, digest alike.
    """
    digest = domain.LedgerDigest()
    # The order of the unique index on `event_id`, then each transaction's two legs by account (an
    # incremental sort).
    query = f"""
        SELECT t.event_id, p.account, p.amount_idr, t.event_type, t.event_time
        FROM ledger_transactions t, {_LEGS}
        WHERE {_cut("$1", "$2")}
        ORDER BY t.event_id COLLATE "C", p.account COLLATE "C"
    """
    # One snapshot for the whole read (a cursor needs a transaction); inside a caller's
    # transaction, a savepoint reads the caller's snapshot.
    snapshot = conn.transaction() if conn.is_in_transaction() else conn.transaction(
        readonly=True, isolation="repeatable_read")
    async with snapshot:
        async for row in conn.cursor(query, as_of, as_known_at, prefetch=2000):
            digest.add(domain.DigestRow(*row))
    return DigestResult(digest.hexdigest(), digest.transactions, digest.postings)


def whole_rupiah(total: Decimal | int | None) -> int:
    """A sum PostgreSQL computed as `numeric` (exact, unbounded), as a Python integer; None (no rows) is 0."""
    return 0 if total is None else int(total)


async def balances(
    conn: asyncpg.Connection, as_of: datetime | None = None, as_known_at: datetime | None = None
) -> dict[str, int]:
    """Every account's balance as of `as_of` (event time), as known at `as_known_at` (recording time; see
    `ledger_digest`).

    Summed as `numeric` and read as Python integers: a balance has no bound (see the module's docstring)."""
    rows = await conn.fetch(
        f"""SELECT p.account, sum(p.amount_idr) AS balance
           FROM ledger_transactions t, {_LEGS}
           WHERE {_cut("$1", "$2")}
           GROUP BY p.account ORDER BY p.account COLLATE "C" """,
        as_of, as_known_at,
    )
    return {row["account"]: whole_rupiah(row["balance"]) for row in rows}


async def earned_by_artisan(conn: asyncpg.Connection, until: datetime) -> dict[str, int]:
    """Per artisan, the earnings whose event time is at or before `until` (unbounded: see `balances`)."""
    rows = await conn.fetch(
        """SELECT artisan_id, sum(amount_idr) AS earned FROM ledger_transactions
           WHERE kind = 'earned' AND event_time <= $1 GROUP BY artisan_id""",
        until,
    )
    return {row["artisan_id"]: whole_rupiah(row["earned"]) for row in rows}


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


async def residents_of(conn: asyncpg.Connection, rusunawa: str) -> set[str]:
    """The residents registered in `rusunawa` (spacing and case aside), as the enrollment topic said so far
    (the dashboard's consumer keeps them: `dashboard.projection`)."""
    rows = await conn.fetch(
        f"""SELECT resident_id FROM dashboard_residents
            WHERE {normalised("rusunawa")} = {normalised("$1")}""", rusunawa)
    return {row["resident_id"] for row in rows}


async def has_entries(conn: asyncpg.Connection, artisan_id: str) -> bool:
    """Whether the ledger ever recorded anything for `artisan_id`."""
    return bool(await conn.fetchval("SELECT true FROM ledger_transactions WHERE artisan_id = $1 LIMIT 1", artisan_id))


async def statement(
    conn: asyncpg.Connection, artisan_id: str, as_of: datetime | None = None, as_known_at: datetime | None = None
) -> Statement:
    """The artisan's statement: every posting on her accounts up to `as_of` (event time) as known at
    `as_known_at` (recording time; see `ledger_digest`), in event-time order."""
    accounts = domain.artisan_accounts(artisan_id)
    rows = await conn.fetch(
        # Her transactions by the artisan index: every posting rule that touches an artisan's
        # account names her as the transaction's artisan.
        f"""SELECT t.transaction_id, t.kind, p.account, p.amount_idr, t.event_id, t.event_type, t.event_time,
                  t.subject_id
           FROM ledger_transactions t, {_LEGS}
           WHERE t.artisan_id = $1 AND p.account = ANY($2::text[]) AND {_cut("$3", "$4")}
           ORDER BY t.event_time, t.transaction_id COLLATE "C", p.account COLLATE "C" """,
        artisan_id, list(accounts), as_of, as_known_at,
    )
    entries = [StatementEntry(**dict(row)) for row in rows]
    totals = dict.fromkeys(accounts, 0)
    for entry in entries:
        totals[entry.account] += entry.amount_idr
    payable, transit, paid = accounts
    earned = sum(e.amount_idr for e in entries if e.kind == domain.Kind.EARNED)
    return Statement(artisan_id, entries, earned, totals[payable], totals[transit], totals[paid])
