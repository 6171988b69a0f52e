"""`apply_events`: the ledger projection of a whole batch in one statement, row for row what `apply_event` writes.

Why it exists: profiling the replay (see the README's performance section) showed
`services.payout.projections.apply_event` spending nearly all its time waiting on
PostgreSQL round trips: a savepoint, the insert, `SET CONSTRAINTS` and the savepoint's
release for every event, at about 0.2 ms per round trip on a 2-core VM. Here a batch is
posted with one `INSERT … SELECT FROM unnest(…)` for its transactions and postings and one
`SET CONSTRAINTS` for its balance checks, whatever its length.

It is a proposal for `services/payout/projections.py` (the bench may not edit the
service); until it moves there, it stays exactly equivalent to `apply_event` applied to
the same events in the same order, which `tests/integration/test_bench.py` checks by
ledger digest:

- the posting rules are the service's own (`domain.transaction_for`);
- rows go in in batch order with `ON CONFLICT DO NOTHING`, so of two events with one
  business key the first one wins, as in a sequential replay;
- an event whose row was not inserted (a duplicate, or a second ending for one payout)
  is handed to `apply_event` itself, which finds the first row and decides "already
  posted" (no-op) or `Reject`, with its very wording;
- the balance triggers fire once per batch (`SET CONSTRAINTS … IMMEDIATE`); should a batch
  not balance, it is rolled back to its savepoint and posted event by event, so only the
  culprit fails, as with `apply_event`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncpg

from services.payout import domain, projections
from services.payout.projections import Source
from shared.contracts import Envelope
from shared.eventstore import Reject

_INSERT_BATCH = """
WITH tx AS (
    INSERT INTO ledger_transactions (transaction_id, kind, business_key, event_id, event_type, event_time,
                                     artisan_id, subject_id, amount_idr, source_topic, source_partition,
                                     source_offset)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],
                         $7::text[], $8::text[], $9::bigint[], $10::text[], $11::int[], $12::bigint[])
    ON CONFLICT DO NOTHING
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

_CHECK_BALANCES = (
    "SET CONSTRAINTS ledger_postings_balanced, ledger_transactions_balanced IMMEDIATE;"
    "SET CONSTRAINTS ledger_postings_balanced, ledger_transactions_balanced DEFERRED"
)


@dataclass
class BatchOutcome:
    """What one batch did: new transactions, events that moved no money or were already posted, refusals."""

    posted: int = 0
    unposted: int = 0
    rejected: list[tuple[int, Reject]] = field(default_factory=list)
    failed: list[tuple[int, Exception]] = field(default_factory=list)


async def apply_events(conn: asyncpg.Connection, events: Sequence[tuple[Envelope, Source | None]]) -> BatchOutcome:
    """Post `events` (each with where it was read) to the ledger, in order, as `apply_event` would one by one.

    Needs an open transaction on `conn` (the batch's, with its offsets). Refusals are
    returned (index into `events`, the `Reject`), not raised, so that the caller can
    dead-letter them and commit the rest; errors of one event (after the per-event
    fallback) are returned in `failed` likewise.
    """
    if not conn.is_in_transaction():
        raise RuntimeError("apply_events needs a connection inside the batch's transaction")
    outcome = BatchOutcome()
    planned: list[tuple[int, domain.LedgerTransaction]] = []
    for index, (event, _) in enumerate(events):
        tx = domain.transaction_for(event)
        if tx is None:
            outcome.unposted += 1
        else:
            planned.append((index, tx))
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
        async with conn.transaction():  # a savepoint: an unbalanced batch leaves nothing behind
            inserted = {row[0] for row in await conn.fetch(_INSERT_BATCH, *columns)}
            await conn.execute(_CHECK_BALANCES)
    except asyncpg.CheckViolationError:
        # Cannot happen with the service's posting rules (every transfer balances); if it
        # ever does, find the culprit the way apply_event would, event by event.
        return await _one_by_one(conn, events, planned, outcome)
    outcome.posted += len(inserted)
    for index, tx in planned:
        if index in first_copies and tx.transaction_id in inserted:
            continue
        # A duplicate, or a second event for one piece or payout ending: apply_event decides which,
        # against the rows now present, exactly as it would have in a sequential replay.
        try:
            await projections.apply_event(conn, events[index][0], source=events[index][1])
            outcome.unposted += 1
        except Reject as refusal:
            outcome.rejected.append((index, refusal))
    return outcome


async def _one_by_one(
    conn: asyncpg.Connection, events: Sequence[tuple[Envelope, Source | None]],
    planned: list[tuple[int, domain.LedgerTransaction]], outcome: BatchOutcome,
) -> BatchOutcome:
    for index, _ in planned:
        event, source = events[index]
        try:
            async with conn.transaction():
                if await projections.apply_event(conn, event, source=source):
                    outcome.posted += 1
                else:
                    outcome.unposted += 1
        except Reject as refusal:
            outcome.rejected.append((index, refusal))
        except asyncpg.PostgresError as exc:
            outcome.failed.append((index, exc))
    return outcome
