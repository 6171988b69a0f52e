"""Money in: invoicing collaborators for their passed pieces and recording what they pay (issue 29).

Payout owns invoicing because it holds the ledger: an invoice asks a collaborator for the fees of its
pieces that passed QC up to a period's end and that no earlier invoice asked for; each payment received
against it is recorded, in one part or several, never beyond what it asks. The events
(`collaborator-invoiced`, `collaborator-paid`) move the collaborator's debt through its accounts
(docs/contract/ledger.md); the bank's reference for a payment stays here, in `collaborator_payments`,
never on the topic, as a payout's does.

Which pieces an invoice covers is decided from the ledger's earnings and `invoiced_pieces`, written in
the same transaction as the invoice's event: like a payout run's `payouts`, it is exact the moment the
invoice commits, whereas the ledger learns of the invoice only after the relay and the projector. One
advisory lock serialises invoicing, so two invoices never claim one piece.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

import asyncpg

from services.payout import domain, projections
from shared.contracts import Envelope, service_source
from shared.contracts.events import MAX_RUPIAH
from shared.domain import NotFound, fold
from shared.eventstore import NO_STREAM, UnitOfWork
from shared.ids import new_id
from shared.timeutil import to_wib, wib_now

SOURCE = service_source("payout")

#: Held by every invoicing until it commits: invoices are made one at a time.
INVOICE_LOCK_KEY = 0x616E79616D05

DDL = f"""
CREATE TABLE IF NOT EXISTS collaborator_invoices (
    invoice_id       text        PRIMARY KEY,
    collaborator_id  text        NOT NULL,
    period_end       timestamptz NOT NULL,
    amount_idr       bigint      NOT NULL CHECK (amount_idr > 0 AND amount_idr <= {MAX_RUPIAH}),
    pieces           integer     NOT NULL CHECK (pieces > 0),
    invoiced_at      timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS collaborator_invoices_by_collaborator
    ON collaborator_invoices (collaborator_id, period_end);
-- Each piece is invoiced once: what the next invoice leaves out.
CREATE TABLE IF NOT EXISTS invoiced_pieces (
    piece_id    text PRIMARY KEY,
    invoice_id  text NOT NULL REFERENCES collaborator_invoices
);
-- What was received against an invoice, with the bank's reference (free text, which could hold an
-- account number): kept here, while `collaborator-paid` carries payout's own payment id.
CREATE TABLE IF NOT EXISTS collaborator_payments (
    payment_id   text        PRIMARY KEY,
    invoice_id   text        NOT NULL REFERENCES collaborator_invoices,
    amount_idr   bigint      NOT NULL CHECK (amount_idr > 0 AND amount_idr <= {MAX_RUPIAH}),
    received_at  timestamptz NOT NULL,
    reference    text        NOT NULL,
    UNIQUE (invoice_id, reference)
);
"""


@dataclass(frozen=True)
class InvoiceHandlers:
    """Invoicing's commands, in a unit of work: the invoices' streams and their tables."""

    async def invoice(
        self, uow: UnitOfWork, collaborator_id: str, period_end: datetime
    ) -> tuple[bool, domain.Invoice]:
        """Invoice the collaborator's passed pieces up to `period_end` not invoiced yet; (False, invoice)
        when this period was invoiced before (its invoice, unchanged)."""
        conn = uow.connection
        await conn.execute("SELECT pg_advisory_xact_lock($1)", INVOICE_LOCK_KEY)
        invoice_id = domain.invoice_id_for(collaborator_id, period_end)
        state, _ = await self._load(uow, invoice_id)
        if state.exists:
            return False, state
        rows = await conn.fetch(
            """SELECT t.subject_id AS piece_id, t.amount_idr, t.event_time AS earned_at
               FROM ledger_transactions t
               WHERE t.kind = 'earned' AND t.from_account = $1 AND t.event_time <= $2
                 AND NOT EXISTS (SELECT 1 FROM invoiced_pieces i WHERE i.piece_id = t.subject_id)""",
            domain.collaborator_fees(collaborator_id), period_end,
        )
        now = wib_now()
        data, pieces = domain.plan_invoice(
            domain.InvoiceCollaborator(collaborator_id, period_end, now),
            [domain.UninvoicedPiece(**dict(row)) for row in rows])
        await conn.execute(
            """INSERT INTO collaborator_invoices (invoice_id, collaborator_id, period_end, amount_idr, pieces,
                                                  invoiced_at) VALUES ($1, $2, $3, $4, $5, $6)""",
            data.invoice_id, collaborator_id, data.period_end, data.amount_idr, data.pieces, now)
        await conn.executemany("INSERT INTO invoiced_pieces (piece_id, invoice_id) VALUES ($1, $2)",
                               [(piece_id, data.invoice_id) for piece_id in pieces])
        event = Envelope.wrap(data, source=SOURCE, time=now)
        uow.append(data.invoice_id, NO_STREAM, [event])
        return True, fold(domain.evolve_invoice, domain.Invoice(), [event])

    async def record_payment(
        self, uow: UnitOfWork, invoice_id: str, amount_idr: int, received_at: datetime, reference: str
    ) -> tuple[bool, domain.Invoice, str]:
        """Record money received against an invoice: (whether it is new, the invoice after it, the
        payment's id). The same payment again (its reference, amount and moment) changes nothing."""
        await uow.lock_stream(invoice_id)
        state, version = await self._load(uow, invoice_id)
        earlier_row = await uow.connection.fetchrow(
            """SELECT payment_id, amount_idr, received_at, reference FROM collaborator_payments
               WHERE invoice_id = $1 AND reference = $2""", invoice_id, reference)
        earlier = domain.CollaboratorPayment(**dict(earlier_row)) if earlier_row is not None else None
        command = domain.RecordCollaboratorPayment(invoice_id, new_id("cpay"), amount_idr, received_at, reference,
                                                   wib_now())
        decided = domain.decide_collaborator_payment(state, command, earlier)
        if not decided:
            assert earlier is not None
            return False, state, earlier.payment_id
        events = [Envelope.wrap(data, source=SOURCE, time=to_wib(received_at)) for data in decided]
        await uow.connection.execute(
            """INSERT INTO collaborator_payments (payment_id, invoice_id, amount_idr, received_at, reference)
               VALUES ($1, $2, $3, $4, $5)""", command.payment_id, invoice_id, amount_idr, received_at, reference)
        uow.append(invoice_id, version, events)
        return True, await self._with_references(uow.connection, fold(domain.evolve_invoice, state, events)), \
            command.payment_id

    async def get(self, uow: UnitOfWork, invoice_id: str) -> domain.Invoice:
        state, _ = await self._load(uow, invoice_id)
        if not state.exists:
            raise NotFound("invoice-not-found", f"There is no invoice {invoice_id}.")
        return state

    async def _load(self, uow: UnitOfWork, invoice_id: str) -> tuple[domain.Invoice, int]:
        history = await uow.load(invoice_id)
        state = fold(domain.evolve_invoice, domain.Invoice(), history.events)
        if state.payments:
            state = await self._with_references(uow.connection, state)
        return state, history.version

    @staticmethod
    async def _with_references(conn: asyncpg.Connection, state: domain.Invoice) -> domain.Invoice:
        """The invoice with each payment's bank reference, which only this database holds."""
        rows = await conn.fetch("SELECT payment_id, reference FROM collaborator_payments WHERE invoice_id = $1",
                                state.invoice_id)
        references = {row["payment_id"]: row["reference"] for row in rows}
        return replace(state, payments=tuple(replace(p, reference=references.get(p.payment_id))
                                             for p in state.payments))


# --- reading a collaborator's account -----------------------------------------------------------


@dataclass(frozen=True)
class CollaboratorAccount:
    """What a collaborator owes, from the ledger's balances of its three accounts (as positive amounts)."""

    collaborator_id: str
    not_invoiced_idr: int  # passed pieces' fees no invoice asked for yet: minus `fees`
    outstanding_idr: int  # invoiced and not yet paid: minus `receivable`
    paid_idr: int  # received against its invoices, ever: minus `paid`

    @property
    def invoiced_idr(self) -> int:
        return self.outstanding_idr + self.paid_idr

    @property
    def owed_idr(self) -> int:
        """Everything it owes: invoiced and unpaid, and not yet invoiced."""
        return self.outstanding_idr + self.not_invoiced_idr


def accounts_of(collaborator_id: str, balances: dict[str, int]) -> CollaboratorAccount:
    """The collaborator's account from every account's balance (see `projections.balances`)."""
    fees, receivable, paid = (balances.get(a, 0) for a in domain.collaborator_accounts(collaborator_id))
    return CollaboratorAccount(collaborator_id, -fees, -receivable, -paid)


def collaborators_in(balances: dict[str, int]) -> list[CollaboratorAccount]:
    """Every collaborator the ledger knows of (by its accounts), by what it owes, most first."""
    ids = set()
    for account in balances:
        prefix, _, rest = account.partition(":")
        collaborator_id, _, kind = rest.rpartition(":")  # ids are opaque and may hold colons; kinds never do
        if prefix == "collaborator" and collaborator_id and kind in ("fees", "receivable", "paid"):
            ids.add(collaborator_id)
    return sorted((accounts_of(c, balances) for c in ids), key=lambda a: (-a.owed_idr, a.collaborator_id))


async def collaborator_balances(conn: asyncpg.Connection, collaborator_id: str,
                                as_of: datetime | None = None) -> dict[str, int]:
    """The balances of the collaborator's three accounts as of `as_of` (event time, inclusive)."""
    rows = await conn.fetch(
        f"""SELECT p.account, sum(p.amount_idr) AS balance
            FROM ledger_transactions t, {projections.LEGS}
            WHERE (t.from_account = ANY($1::text[]) OR t.to_account = ANY($1::text[]))
              AND p.account = ANY($1::text[]) AND ($2::timestamptz IS NULL OR t.event_time <= $2)
            GROUP BY p.account""",
        list(domain.collaborator_accounts(collaborator_id)), as_of)
    return {row["account"]: projections.whole_rupiah(row["balance"]) for row in rows}


async def invoices_of(conn: asyncpg.Connection, collaborator_id: str) -> list[asyncpg.Record]:
    """The collaborator's invoices with what was received against each, oldest period first."""
    return await conn.fetch(
        """SELECT i.invoice_id, i.period_end, i.amount_idr, i.pieces, i.invoiced_at,
                  coalesce(sum(p.amount_idr), 0) AS paid_idr, count(p.payment_id)::int AS payments
           FROM collaborator_invoices i LEFT JOIN collaborator_payments p USING (invoice_id)
           WHERE i.collaborator_id = $1
           GROUP BY i.invoice_id ORDER BY i.period_end, i.invoice_id""", collaborator_id)


async def install(pool: asyncpg.Pool) -> None:
    """Create invoicing's tables if they are missing (after the ledger's, which invoices read)."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", projections.INSTALL_LOCK_KEY)
        await conn.execute(DDL)
