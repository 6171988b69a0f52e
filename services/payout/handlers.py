"""Payout's command handlers: payout runs, confirmations and failures, inside the caller's transaction.

Only these commands schedule or pay. The ledger projection never does (trap 4):
replaying history rebuilds the ledger and nothing else.

How a run never schedules the same earnings twice
-------------------------------------------------
A run pays, per artisan, `earned up to period_end` (from the ledger) minus
`committed` (every payout ever scheduled and not failed). `committed` is NOT
read from the ledger: the ledger learns of a payout only after the relay has
published its `payout-scheduled` and the projector has consumed it, so a second
run started in between would see the first run's money still in payable and
schedule it again. Instead, `payouts` is written in the same transaction that
appends the `payout-scheduled` events (and updated in the same transaction as
each `paid` / `payout-failed`), so it is exact the moment the run commits.

Runs are serialised by one transaction-scoped advisory lock: the next run reads
`payouts` only after the previous one committed (READ COMMITTED takes a fresh
snapshot per statement, and every read comes after the lock). The same lock
makes two concurrent starts of one `run_id` one run: the second finds the first's
row in `payout_runs` and answers its payouts. Payout ids derive from (run_id,
artisan_id), so even without the lock a run could not append a second payout
for an artisan: the stream would already exist.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

import asyncpg

from services.payout import domain, projections
from shared.contracts import Envelope, service_source
from shared.contracts.events import MAX_RUPIAH, same_label
from shared.domain import Conflict, NotFound, fold
from shared.eventstore import NO_STREAM, UnitOfWork
from shared.timeutil import to_wib, wib_now

SOURCE = service_source("payout")

#: Held by every payout run until it commits: runs happen one at a time.
RUN_LOCK_KEY = 0x616E79616D02

DDL = f"""
CREATE TABLE IF NOT EXISTS payout_runs (
    run_id      text        PRIMARY KEY,
    period_end  timestamptz NOT NULL,
    started_at  timestamptz NOT NULL
);
-- A run made for one rusunawa pays only its residents (NULL: the whole programme).
ALTER TABLE payout_runs ADD COLUMN IF NOT EXISTS rusunawa text;
-- The command side's own record of every payout, written with its events: what runs subtract.
CREATE TABLE IF NOT EXISTS payouts (
    payout_id     text        PRIMARY KEY,
    run_id        text        NOT NULL REFERENCES payout_runs,
    artisan_id    text        NOT NULL,
    amount_idr    bigint      NOT NULL CHECK (amount_idr > 0),
    status        text        NOT NULL CHECK (status IN ('scheduled', 'paid', 'failed')),
    scheduled_at  timestamptz NOT NULL,
    -- One payout is at most an amount's bound (SPEC §5; `domain.plan_run` caps it).
    CONSTRAINT payouts_amount_idr_bounded CHECK (amount_idr <= {MAX_RUPIAH})
);
-- Added to a table made before the bound, NOT VALID: it holds for every payout from now on.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = 'payouts'::regclass
                   AND conname = 'payouts_amount_idr_bounded') THEN
        ALTER TABLE payouts ADD CONSTRAINT payouts_amount_idr_bounded CHECK (amount_idr <= {MAX_RUPIAH}) NOT VALID;
    END IF;
END $$;
CREATE INDEX IF NOT EXISTS payouts_by_run ON payouts (run_id);
CREATE INDEX IF NOT EXISTS payouts_committed ON payouts (artisan_id) WHERE status <> 'failed';
-- The bank's or e-wallet's reference for a payment, which could hold an account number: kept here,
-- while the `paid` event carries payout's own opaque reference (SPEC §7).
CREATE TABLE IF NOT EXISTS bank_references (
    payout_id       text PRIMARY KEY REFERENCES payouts,
    bank_reference  text NOT NULL
);
"""


@dataclass(frozen=True)
class ScheduledPayout:
    payout_id: str
    artisan_id: str
    amount_idr: int


@dataclass(frozen=True)
class RunResult:
    run_id: str
    period_end: datetime
    payouts: tuple[ScheduledPayout, ...]

    @property
    def total_idr(self) -> int:
        return sum(p.amount_idr for p in self.payouts)


@dataclass(frozen=True)
class PayoutHandlers:
    """Runs payout's commands in a unit of work: its event streams and its `payouts` record."""

    async def run_payouts(
        self, uow: UnitOfWork, run_id: str, period_end: datetime, run_at: datetime | None = None,
        rusunawa: str | None = None,
    ) -> tuple[bool, RunResult]:
        """Schedule what each artisan earned up to `period_end` and is not yet committed, as a run made at
        `run_at` (business time; default now), when its payouts are scheduled. With `rusunawa`, only for
        the residents registered there (as the enrollment topic says, read by the dashboard's consumer).

        Returns (whether this call ran it, the run); a `run_id` already run answers its payouts.
        """
        conn = uow.connection
        await conn.execute("SELECT pg_advisory_xact_lock($1)", RUN_LOCK_KEY)
        row = await conn.fetchrow("SELECT period_end, rusunawa FROM payout_runs WHERE run_id = $1", run_id)
        if row is not None:
            earlier, scope = row["period_end"], row["rusunawa"]
            if earlier != period_end or (scope is None) != (rusunawa is None) or (
                    scope is not None and rusunawa is not None and not same_label(scope, rusunawa)):
                raise Conflict(
                    "run-id-reused",
                    f"Payout run {run_id} already ran for the period ending {to_wib(earlier).isoformat()}"
                    f"{f' in {scope}' if scope else ''}; use a new run_id for another period or rusunawa.",
                )
            return False, await self._run(conn, run_id, earlier)
        recorded_at = wib_now()
        now = run_at or recorded_at
        earned = await projections.earned_by_artisan(conn, period_end)
        if rusunawa is not None:
            residents = await projections.residents_of(conn, rusunawa)
            earned = {artisan: amount for artisan, amount in earned.items() if artisan in residents}
        # Summed as numeric into Python integers, as the ledger's totals are: a total has no bound.
        committed = {
            row["artisan_id"]: projections.whole_rupiah(row["committed"])
            for row in await conn.fetch(
                """SELECT artisan_id, sum(amount_idr) AS committed FROM payouts
                   WHERE status <> 'failed' GROUP BY artisan_id"""
            )
        }
        decided = domain.plan_run(domain.RunPayouts(run_id, period_end, now, recorded_at), earned, committed)
        await conn.execute(
            "INSERT INTO payout_runs (run_id, period_end, started_at, rusunawa) VALUES ($1, $2, $3, $4)",
            run_id, period_end, now, rusunawa
        )
        await conn.executemany(
            """INSERT INTO payouts (payout_id, run_id, artisan_id, amount_idr, status, scheduled_at)
               VALUES ($1, $2, $3, $4, 'scheduled', $5)""",
            [(p.payout_id, run_id, p.artisan_id, p.amount_idr, now) for p in decided],
        )
        for data in decided:
            uow.append(data.payout_id, NO_STREAM, [Envelope.wrap(data, source=SOURCE, time=now)])
        return True, RunResult(run_id, period_end, tuple(
            ScheduledPayout(p.payout_id, p.artisan_id, p.amount_idr) for p in decided))

    async def confirm(
        self, uow: UnitOfWork, payout_id: str, method: str, reference: str, paid_at: datetime
    ) -> tuple[bool, domain.Payout]:
        """Record that a payout was paid; (False, payout) when this same confirmation was recorded before."""
        command = domain.ConfirmPayment(payout_id, method, reference, paid_at, wib_now())
        return await self._decide(uow, payout_id, command)

    async def fail(
        self, uow: UnitOfWork, payout_id: str, reason: str, failed_at: datetime | None = None
    ) -> tuple[bool, domain.Payout]:
        """Record that a payout failed at `failed_at` (business time; default now), returning its money to
        payable for the next run."""
        return await self._decide(uow, payout_id, domain.FailPayout(payout_id, reason, failed_at, wib_now()))

    async def payout(self, uow: UnitOfWork, payout_id: str) -> domain.Payout:
        state, _ = await self._load(uow, payout_id)
        if not state.exists:
            raise NotFound("payout-not-found", f"There is no payout {payout_id}.")
        return state

    async def _decide(
        self, uow: UnitOfWork, payout_id: str, command: domain.ConfirmPayment | domain.FailPayout
    ) -> tuple[bool, domain.Payout]:
        await uow.lock_stream(payout_id)
        state, version = await self._load(uow, payout_id)
        decided = domain.decide_payout(state, command)
        if not decided:
            return False, state
        events = [Envelope.wrap(data, source=SOURCE, time=_business_time(command)) for data in decided]
        state = fold(domain.evolve_payout, state, events)
        # In the same transaction as the event: a failed payout stops counting as committed
        # exactly when its `payout-failed` exists, so the next run pays it again, once.
        await uow.connection.execute("UPDATE payouts SET status = $2 WHERE payout_id = $1", payout_id,
                                     state.status.value)
        if isinstance(command, domain.ConfirmPayment):
            await uow.connection.execute("INSERT INTO bank_references (payout_id, bank_reference) VALUES ($1, $2)",
                               payout_id, command.reference)
            state = replace(state, bank_reference=command.reference)
        uow.append(payout_id, version, events)
        return True, state

    async def _load(self, uow: UnitOfWork, payout_id: str) -> tuple[domain.Payout, int]:
        history = await uow.load(payout_id)
        state = fold(domain.evolve_payout, domain.Payout(), history.events)
        if state.status is domain.Status.PAID:
            bank_reference = await uow.connection.fetchval(
                "SELECT bank_reference FROM bank_references WHERE payout_id = $1", payout_id)
            state = replace(state, bank_reference=bank_reference)
        return state, history.version

    async def _run(self, conn: asyncpg.Connection, run_id: str, period_end: datetime) -> RunResult:
        rows = await conn.fetch(
            "SELECT payout_id, artisan_id, amount_idr FROM payouts WHERE run_id = $1 ORDER BY artisan_id", run_id
        )
        return RunResult(run_id, period_end, tuple(ScheduledPayout(**dict(row)) for row in rows))


def _business_time(command: domain.ConfirmPayment | domain.FailPayout) -> datetime | None:
    """The CloudEvents `time` of a payout's ending: a payment happened when the money was sent, a failure
    when the transfer was refused (now when staff do not say)."""
    if isinstance(command, domain.ConfirmPayment):
        return command.paid_at
    return command.failed_at


async def install(pool: asyncpg.Pool) -> None:
    """Create the command side's tables if they are missing."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", projections.INSTALL_LOCK_KEY)
        await conn.execute(DDL)
