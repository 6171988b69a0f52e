"""Payout's pure domain: the ledger's posting rules, payout runs and the payout lifecycle. No I/O here.

The ledger is double-entry. Every transaction comes from exactly one event and
moves one amount between two accounts; an account's balance is what flowed in
minus what flowed out (Formance's convention), so the artisan's accounts read
naturally (a positive payable is money the programme owes her):

    qc-passed         collaborator:<c>:fees     → artisan:<a>:payable      (earned)
    payout-scheduled  artisan:<a>:payable       → artisan:<a>:in-transit   (scheduled)
    paid              artisan:<a>:in-transit    → artisan:<a>:paid         (paid)
    payout-failed     artisan:<a>:in-transit    → artisan:<a>:payable      (failed)
    collaborator-invoiced  collaborator:<c>:receivable → collaborator:<c>:fees        (invoiced)
    collaborator-paid      collaborator:<c>:paid       → collaborator:<c>:receivable  (received)

`collaborator:<c>:fees` runs negative: it is the source of the artisans'
earnings, the fees that collaborator owes for pieces that passed its QC and
were not invoiced yet. An invoice moves that debt to `collaborator:<c>:receivable`
(negative by what its invoices still ask for), and each payment received moves
it on to `collaborator:<c>:paid` (negative by everything it ever paid in). A
collaborator's accounts are sources, as the artisans' are destinations: once
everything invoiced is paid, its fees and receivable are 0 and its paid account
is minus everything its artisans earned.

Posting rules read nothing but the event itself (event-carried state: a
`qc-passed` carries its amount and artisan), so the ledger is a function of the
*set* of events, whatever order the partitions are consumed in. The auditor's
replay (issue 6) uses these very functions.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, NamedTuple, cast

from shared.contracts import Envelope
from shared.contracts.events import (
    MAX_RUPIAH,
    CollaboratorInvoiced,
    CollaboratorPaid,
    EventData,
    Paid,
    PayoutFailed,
    PayoutScheduled,
    QcPassed,
)
from shared.domain import Conflict, NotFound, Refused
from shared.timeutil import to_wib

#: How far a client's clock may run ahead of ours when it says when a payment was made.
CLOCK_SKEW = timedelta(minutes=5)


# --- accounts -------------------------------------------------------------------------------


def payable(artisan_id: str) -> str:
    """Earned and not yet sent: what the programme owes the artisan right now."""
    return f"artisan:{artisan_id}:payable"


def in_transit(artisan_id: str) -> str:
    """Scheduled for payment and not yet confirmed paid or failed."""
    return f"artisan:{artisan_id}:in-transit"


def paid_account(artisan_id: str) -> str:
    """Everything the artisan was paid, ever."""
    return f"artisan:{artisan_id}:paid"


def collaborator_fees(collaborator_id: str) -> str:
    """The source of earnings: runs negative by the fees the collaborator owes for passed pieces."""
    return f"collaborator:{collaborator_id}:fees"


def collaborator_receivable(collaborator_id: str) -> str:
    """Invoiced and not yet paid: negative by what the collaborator's open invoices still ask for."""
    return f"collaborator:{collaborator_id}:receivable"


def collaborator_paid(collaborator_id: str) -> str:
    """Everything the collaborator ever paid against its invoices, as a negative balance (a source)."""
    return f"collaborator:{collaborator_id}:paid"


def collaborator_accounts(collaborator_id: str) -> tuple[str, str, str]:
    """The collaborator's three accounts, in the order its debt moves through them."""
    return (collaborator_fees(collaborator_id), collaborator_receivable(collaborator_id),
            collaborator_paid(collaborator_id))


def artisan_accounts(artisan_id: str) -> tuple[str, str, str]:
    """The artisan's three accounts, in the order money moves through them."""
    return payable(artisan_id), in_transit(artisan_id), paid_account(artisan_id)


def artisan_of(account: str) -> str | None:
    """The artisan an account belongs to (`artisan:<id>:<kind>`), or None for other accounts."""
    if not account.startswith("artisan:"):
        return None
    artisan, _, kind = account.removeprefix("artisan:").rpartition(":")
    return artisan if kind in ("payable", "in-transit", "paid") and artisan else None


# --- posting rules --------------------------------------------------------------------------


class Kind(StrEnum):
    """What a ledger transaction records; one kind per event type that moves money."""

    EARNED = "earned"
    SCHEDULED = "scheduled"
    PAID = "paid"
    FAILED = "failed"
    INVOICED = "invoiced"
    RECEIVED = "received"


# Postings and transactions are NamedTuples rather than frozen dataclasses: as immutable, and
# built much faster (a frozen dataclass sets each field through `object.__setattr__`),
# which a replay, making one transaction and two postings per event, notices.
class Posting(NamedTuple):
    """One leg of a transaction: `amount_idr` flows into `account` (negative: out of it)."""

    account: str
    amount_idr: int


class LedgerTransaction(NamedTuple):
    """The ledger entry an event makes: who, how much, between which two accounts, and from which event."""

    transaction_id: str
    kind: Kind
    #: At most one transaction per business key: one earning per piece, one scheduling and one
    #: settlement (paid or failed) per payout, even if a buggy producer emitted a second event.
    business_key: str
    event_id: str
    event_type: str
    event_time: datetime
    #: The artisan whose accounts the transaction touches; None for a collaborator's own (invoiced, received).
    artisan_id: str | None
    #: The piece (earned), the payout (scheduled, paid, failed), the invoice (invoiced) or the payment
    #: (received) the money is for.
    subject_id: str
    amount_idr: int
    #: Double entry as one transfer: `amount_idr` leaves `from_account` and arrives in `to_account`.
    from_account: str
    to_account: str

    @property
    def postings(self) -> tuple[Posting, Posting]:
        """The transfer's two legs, by account (so the same transfer always lists them alike)."""
        legs = (Posting(self.from_account, -self.amount_idr), Posting(self.to_account, self.amount_idr))
        return legs if self.from_account <= self.to_account else (legs[1], legs[0])

    @property
    def balanced(self) -> bool:
        """Double entry: what leaves one account arrives in another, to the rupiah."""
        return self.from_account != self.to_account and sum(p.amount_idr for p in self.postings) == 0


def transaction_id(kind: Kind, event_id: str) -> str:
    """The id of the transaction `event_id` makes: the same event always makes the same id, so a
    redelivered event collides with its first copy instead of being posted twice."""
    return f"{kind.value}:{event_id}"


#: The posting rule of each event type that moves money (the table in this module's docstring):
#: its kind, business key and subject, and the accounts the event's `amount_idr` flows from and to.
#: Looked up by the data's exact type rather than matched class by class: the event models'
#: metaclass is an ABCMeta, whose isinstance checks were a seventh of a replay's posting work.
_POSTING_RULES: dict[type[EventData], Callable[[Any], tuple[Kind, str, str, str | None, str, str]]] = {
    QcPassed: lambda d: (Kind.EARNED, f"piece:{d.piece_id}", d.piece_id, d.artisan_id,
                         collaborator_fees(d.collaborator_id), payable(d.artisan_id)),
    PayoutScheduled: lambda d: (Kind.SCHEDULED, f"payout:{d.payout_id}:scheduled", d.payout_id, d.artisan_id,
                                payable(d.artisan_id), in_transit(d.artisan_id)),
    Paid: lambda d: (Kind.PAID, f"payout:{d.payout_id}:settled", d.payout_id, d.artisan_id,
                     in_transit(d.artisan_id), paid_account(d.artisan_id)),
    # Shares the settlement key with `paid`: a payout ends one way, once.
    PayoutFailed: lambda d: (Kind.FAILED, f"payout:{d.payout_id}:settled", d.payout_id, d.artisan_id,
                             in_transit(d.artisan_id), payable(d.artisan_id)),
    # The collaborator's debt moves on: uninvoiced fees become an open invoice, an open invoice
    # becomes money received. Neither touches an artisan's accounts.
    CollaboratorInvoiced: lambda d: (Kind.INVOICED, f"invoice:{d.invoice_id}", d.invoice_id, None,
                                     collaborator_receivable(d.collaborator_id), collaborator_fees(d.collaborator_id)),
    CollaboratorPaid: lambda d: (Kind.RECEIVED, f"collaborator-payment:{d.payment_id}", d.payment_id, None,
                                 collaborator_paid(d.collaborator_id), collaborator_receivable(d.collaborator_id)),
}


#: The `type` of each event that makes a ledger transaction.
MONEY_EVENT_TYPES = frozenset(data_type.event_type for data_type in _POSTING_RULES)


def moves_money(event: Envelope) -> bool:
    """Whether `event` makes a ledger transaction (and so must be vouched for before it does)."""
    return type(event.data) in _POSTING_RULES


class Unpostable(ValueError):
    """An event that moves money but that no ledger row can hold (e.g. a `time` that is no moment of
    the years 1 to 9999 in WIB): its posting consumer refuses it, as the decoder refuses a bad field."""


def transaction_for(event: Envelope) -> LedgerTransaction | None:
    """The ledger transaction `event` makes, or None for events that move no money.

    Pure and order-free: the result depends on this one event alone. Raises `Unpostable` for an
    event that moves money but cannot be a ledger row.
    """
    rule = _POSTING_RULES.get(type(event.data))
    if rule is None:
        return None
    data = cast("QcPassed | PayoutScheduled | Paid | PayoutFailed | CollaboratorInvoiced | CollaboratorPaid",
                event.data)  # the types with a rule
    kind, key, subject, artisan_id, source, destination = rule(data)
    try:
        moment = to_wib(event.time)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+14:00, a moment before the year 1 in WIB
        raise Unpostable("its `time` is not a moment of the years 1 to 9999 in WIB (UTC+07:00)") from None
    # Positionally, in the fields' order: a replay makes one per money-moving event.
    return LedgerTransaction(transaction_id(kind, event.id), kind, key, event.id, event.type, moment,
                             artisan_id, subject, data.amount_idr, source, destination)


def balances(transactions: Iterable[LedgerTransaction], as_of: datetime | None = None) -> dict[str, int]:
    """Every account's balance from `transactions` whose event time is at or before `as_of`."""
    totals: dict[str, int] = defaultdict(int)
    for tx in transactions:
        if as_of is None or tx.event_time <= as_of:
            for posting in tx.postings:
                totals[posting.account] += posting.amount_idr
    return dict(sorted(totals.items()))


# --- the ledger digest ----------------------------------------------------------------------
#
# The rule, as docs/contract/ledger.md publishes it for auditors who reimplement it: one JSON object
# per posting (two per transaction), {"account", "amount_idr", "event_id", "event_time", "event_type"},
# `amount_idr` negative out of the account, `event_time` written as the topics write `time` (RFC 3339
# in WIB, `+07:00`, a six-digit fraction only when the second has one); the objects ordered by event
# id, then account, in code-point order, as one JSON array in RFC 8785 canonical form, UTF-8; the
# digest is the SHA-256 of those bytes, in lower-case hex. Postings rather than transfers: a transfer
# of 0 rupiah has no direction, and its two postings are the same whichever way it was recorded.


class DigestRow(NamedTuple):
    """What the digest covers of one posting: the account, the money, and the event that moved it."""

    event_id: str
    account: str
    amount_idr: int
    event_type: str
    event_time: datetime

    def sort_key(self) -> tuple[str, str]:
        """Unique per posting, and never arrival order: (event id, account), by code point."""
        return self.event_id, self.account

    def canonical(self) -> bytes:
        """The row's object as RFC 8785 writes it.

        Written with `json.dumps` (keys in sorted order, no spaces, UTF-8 as is), much faster than the
        `rfc8785` library and the same bytes for what a row holds: ASCII keys, strings, and integers
        within ±(2**53 - 1) (SPEC §5 bounds amounts at 10**12); `tests/unit/test_contract_digest.py`
        checks them against the library.
        """
        fields = {
            "account": self.account,
            "amount_idr": self.amount_idr,
            "event_id": self.event_id,
            "event_time": to_wib(self.event_time).isoformat(),
            "event_type": self.event_type,
        }
        return json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode()


def digest_rows(transactions: Iterable[LedgerTransaction]) -> list[DigestRow]:
    """The digest rows of `transactions`, one per posting."""
    return [DigestRow(tx.event_id, p.account, p.amount_idr, tx.event_type, tx.event_time)
            for tx in transactions for p in tx.postings]


class LedgerDigest:
    """SHA-256 of the canonical JSON array of every posting's row, fed in `DigestRow.sort_key` order.

    Incremental, so a database can stream its rows in; the caller guarantees the order
    (`ledger_digest` sorts for callers that hold the rows in memory). RFC 8785 writes an array as
    `[`, its elements' canonical forms joined by `,`, and `]`, so streaming the elements gives the
    very bytes of the whole array.
    """

    def __init__(self) -> None:
        self._hash = hashlib.sha256(b"[")
        self._last: tuple[str, str] | None = None
        self.postings = 0
        #: Counted as the rows go by (a transaction's postings are adjacent in this order), so that
        #: digesting a ledger of any length holds nothing but the last row's key.
        self.transactions = 0

    def add(self, row: DigestRow) -> None:
        """Feed the next row; refuses rows out of order, which would make the digest order-dependent."""
        key = row.sort_key()
        if self._last is not None and key <= self._last:
            raise ValueError(f"digest rows out of order: {key} after {self._last}")
        if self._last is None or key[0] != self._last[0]:
            self.transactions += 1
        if self._last is not None:
            self._hash.update(b",")
        self._last = key
        self._hash.update(row.canonical())
        self.postings += 1

    def hexdigest(self) -> str:
        """The digest of everything fed so far (the array closed on a copy, so more rows may follow)."""
        closed = self._hash.copy()
        closed.update(b"]")
        return closed.hexdigest()


def ledger_digest(rows: Iterable[DigestRow], as_of: datetime | None = None) -> str:
    """The digest of the ledger made of `rows`, as of `as_of` (by event time), in any input order."""
    digest = LedgerDigest()
    for row in sorted((r for r in rows if as_of is None or r.event_time <= as_of), key=DigestRow.sort_key):
        digest.add(row)
    return digest.hexdigest()


# --- payout runs ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RunPayouts:
    """Pay every artisan what they earned up to `period_end` and was not yet scheduled."""

    run_id: str
    period_end: datetime
    #: When the run was made, in business time: its payouts are scheduled then (default: as it is recorded).
    now: datetime
    #: When it is recorded (the clock): a run may be recorded after it was made, never before.
    recorded_at: datetime | None = None


def payout_id_for(run_id: str, artisan_id: str) -> str:
    """The payout a run makes for an artisan: derived, so one run can never make two for her
    (a second attempt collides on the payout's stream instead of paying again)."""
    digest = hashlib.sha256(f"{run_id}\x00{artisan_id}".encode()).digest()
    return "po_" + base64.b32encode(digest).decode().rstrip("=")[:26]


def plan_run(command: RunPayouts, earned: Mapping[str, int], committed: Mapping[str, int]) -> list[PayoutScheduled]:
    """The payouts a run schedules: per artisan, earned up to `period_end` minus what is committed.

    `earned`: per artisan, the earnings whose event time is at or before `period_end`.
    `committed`: per artisan, every payout ever scheduled and not failed (in transit or paid),
    whatever its period. Earnings only ever grow, so scheduling at most `earned - committed`
    keeps every artisan's committed total at or below what she earned: nothing is paid twice
    and nothing is paid that was not earned, however runs and periods overlap.

    One payout is at most `MAX_RUPIAH` (an amount's bound, SPEC §5), and a run makes one payout per
    artisan: what is due beyond it stays payable, and the next runs pay it. Totals are Python
    integers here (the ledger reads them as such), so no total overflows.
    """
    if command.recorded_at is not None and command.now > command.recorded_at + CLOCK_SKEW:
        raise Refused("run-at-in-future", "run_at is in the future; give the moment the run was made, or leave it "
                                          "out for now.")
    if command.period_end > command.now:
        raise Refused(
            "period-not-ended",
            "A payout run pays a period that has ended: period_end must not be later than the run (run_at, "
            "default now).",
        )
    period_end = to_wib(command.period_end)
    payouts = []
    for artisan_id in sorted(earned):
        due = min(earned[artisan_id] - committed.get(artisan_id, 0), MAX_RUPIAH)
        if due > 0:
            payouts.append(PayoutScheduled(
                payout_id=payout_id_for(command.run_id, artisan_id), run_id=command.run_id, artisan_id=artisan_id,
                amount_idr=due, period_end=period_end,
            ))
    return payouts


# --- the payout lifecycle: scheduled, then paid or failed, once ----------------------------


class Status(StrEnum):
    NONE = "none"
    SCHEDULED = "scheduled"
    PAID = "paid"
    FAILED = "failed"


@dataclass(frozen=True)
class Payout:
    """One payout's state, folded from its own stream."""

    payout_id: str | None = None
    run_id: str | None = None
    artisan_id: str | None = None
    amount_idr: int = 0
    scheduled_at: datetime | None = None
    status: Status = Status.NONE
    payment: Paid | None = None
    failure: PayoutFailed | None = None
    #: The bank's reference the payment was confirmed with: payout's database keeps it, not the event.
    bank_reference: str | None = None

    @property
    def exists(self) -> bool:
        return self.status is not Status.NONE


@dataclass(frozen=True)
class ConfirmPayment:
    payout_id: str
    method: str
    #: The bank's or e-wallet's reference, as staff give it; never put on a topic (see `payment_reference`).
    reference: str
    paid_at: datetime
    now: datetime


@dataclass(frozen=True)
class FailPayout:
    payout_id: str
    reason: str
    #: When the bank refused it (business time; None: as it is recorded, `now`).
    failed_at: datetime | None = None
    now: datetime | None = None


def evolve_payout(state: Payout, event: Envelope) -> Payout:
    """The payout after `event` (the envelope, for the time the payout was scheduled)."""
    data: EventData = event.data
    match data:
        case PayoutScheduled():
            return Payout(payout_id=data.payout_id, run_id=data.run_id, artisan_id=data.artisan_id,
                          amount_idr=data.amount_idr, scheduled_at=to_wib(event.time), status=Status.SCHEDULED)
        case Paid():
            return replace(state, status=Status.PAID, payment=data)
        case PayoutFailed():
            return replace(state, status=Status.FAILED, failure=data)
    return state


def decide_payout(state: Payout, command: ConfirmPayment | FailPayout) -> list[EventData]:
    """Confirm or fail a scheduled payout: it ends one way, once; a repeat of the same ending is a no-op."""
    if not state.exists:
        raise NotFound("payout-not-found", f"There is no payout {command.payout_id}.")
    match command:
        case ConfirmPayment():
            return _confirm(state, command)
        case FailPayout():
            return _fail(state, command)
    raise TypeError(f"not a payout command: {type(command).__name__}")


def _confirm(state: Payout, command: ConfirmPayment) -> list[EventData]:
    if state.status is Status.PAID:
        first = state.payment
        assert first is not None
        # Payments recorded before references became opaque carry the bank's on the event.
        reference = state.bank_reference or first.reference
        if (first.method, reference, first.paid_at) == (command.method, command.reference, command.paid_at):
            return []  # the same confirmation again: one payment
        raise Conflict(
            "payout-already-paid",
            f"Payout {state.payout_id} was already confirmed paid (reference {reference}); a payout is paid once.",
        )
    if state.status is Status.FAILED:
        raise Conflict(
            "payout-failed",
            f"Payout {state.payout_id} failed and its money went back to payable; the next payout run "
            "schedules it again. Confirm that new payout instead.",
        )
    assert state.payout_id is not None and state.scheduled_at is not None
    if command.paid_at < state.scheduled_at:
        raise Refused(
            "paid-before-scheduled",
            f"paid_at is earlier than when payout {state.payout_id} was scheduled "
            f"({state.scheduled_at.isoformat()}); give the moment the money was actually sent.",
        )
    if command.paid_at > command.now + CLOCK_SKEW:
        raise Refused("paid-at-in-future", "paid_at is in the future; give the moment the money was actually sent.")
    return [Paid(payout_id=state.payout_id, artisan_id=state.artisan_id, amount_idr=state.amount_idr,
                 method=command.method, reference=payment_reference(state.payout_id), paid_at=command.paid_at)]


def payment_reference(payout_id: str) -> str:
    """The reference a `paid` event carries: payout's own, naming the payment and nothing about the
    account it went to (a payout is paid once, so its id names its payment)."""
    return f"payment:{payout_id}"


def _fail(state: Payout, command: FailPayout) -> list[EventData]:
    if state.status is Status.PAID:
        raise Conflict(
            "payout-already-paid",
            f"Payout {state.payout_id} was confirmed paid and cannot fail afterwards; record a correction instead.",
        )
    if state.status is Status.FAILED:
        assert state.failure is not None
        if state.failure.reason == command.reason:
            return []
        raise Conflict("payout-already-failed", f"Payout {state.payout_id} already failed ({state.failure.reason}).")
    if command.failed_at is not None:
        assert state.scheduled_at is not None
        if command.failed_at < state.scheduled_at:
            raise Refused("failed-before-scheduled",
                          f"failed_at is earlier than when payout {state.payout_id} was scheduled "
                          f"({state.scheduled_at.isoformat()}); give the moment the transfer was refused.")
        if command.now is not None and command.failed_at > command.now + CLOCK_SKEW:
            raise Refused("failed-at-in-future", "failed_at is in the future; give the moment the transfer was "
                                                 "refused, or leave it out for now.")
    return [PayoutFailed(payout_id=state.payout_id, artisan_id=state.artisan_id, amount_idr=state.amount_idr,
                         reason=command.reason)]


# --- collaborator invoices: money in ---------------------------------------------------------
#
# Each period staff invoice a collaborator for the fees of its pieces that passed QC up to the period's
# end and were never invoiced; the collaborator pays an invoice in one or more parts, never more than
# it asks. docs/money.md tells the story; the postings are in docs/contract/ledger.md.


@dataclass(frozen=True)
class UninvoicedPiece:
    """A passed piece whose fee no invoice asked for yet: its id, fee and the time it was earned."""

    piece_id: str
    amount_idr: int
    earned_at: datetime


@dataclass(frozen=True)
class InvoiceCollaborator:
    collaborator_id: str
    period_end: datetime
    now: datetime


def invoice_id_for(collaborator_id: str, period_end: datetime) -> str:
    """The invoice a period makes for a collaborator: derived, so that invoicing the same period again
    answers the same invoice (as a payout's id derives from its run and artisan)."""
    moment = to_wib(period_end).isoformat()
    digest = hashlib.sha256(f"{collaborator_id}\x00{moment}".encode()).digest()
    return "inv_" + base64.b32encode(digest).decode().rstrip("=")[:26]


def plan_invoice(
    command: InvoiceCollaborator, uninvoiced: Iterable[UninvoicedPiece]
) -> tuple[CollaboratorInvoiced, tuple[str, ...]]:
    """The invoice for the collaborator's pieces earned up to `period_end` and not yet invoiced, and the
    pieces it covers.

    Pieces are taken in the order they were earned while the total stays within `MAX_RUPIAH` (an amount's
    bound, SPEC §5); any beyond wait for the next invoice. Refuses a period that has not ended and a
    period with nothing to invoice (an invoice of 0 rupiah asks for nothing).
    """
    if command.period_end > command.now:
        raise Refused("period-not-ended",
                      "An invoice covers a period that has ended: period_end must not be later than now.")
    period_end = to_wib(command.period_end)
    chosen: list[str] = []
    total = 0
    for piece in sorted(uninvoiced, key=lambda p: (p.earned_at, p.piece_id)):
        if piece.earned_at > period_end or piece.amount_idr <= 0:
            continue  # after the period, or a fee of nothing (nothing to ask for)
        if total + piece.amount_idr > MAX_RUPIAH:
            break
        chosen.append(piece.piece_id)
        total += piece.amount_idr
    if not chosen:
        raise Refused("nothing-to-invoice",
                      f"Collaborator {command.collaborator_id} has no passed piece up to "
                      f"{period_end.isoformat()} that was not invoiced already.")
    invoice = CollaboratorInvoiced(
        invoice_id=invoice_id_for(command.collaborator_id, period_end), collaborator_id=command.collaborator_id,
        period_end=period_end, amount_idr=total, pieces=len(chosen))
    return invoice, tuple(chosen)


@dataclass(frozen=True)
class CollaboratorPayment:
    """A payment received against an invoice; `reference` is the bank's, kept in payout's database only."""

    payment_id: str
    amount_idr: int
    received_at: datetime
    reference: str | None = None


@dataclass(frozen=True)
class Invoice:
    """One invoice's state, folded from its own stream."""

    invoice_id: str | None = None
    collaborator_id: str | None = None
    period_end: datetime | None = None
    amount_idr: int = 0
    pieces: int = 0
    invoiced_at: datetime | None = None
    payments: tuple[CollaboratorPayment, ...] = ()

    @property
    def exists(self) -> bool:
        return self.invoice_id is not None

    @property
    def paid_idr(self) -> int:
        return sum(p.amount_idr for p in self.payments)

    @property
    def outstanding_idr(self) -> int:
        return self.amount_idr - self.paid_idr


@dataclass(frozen=True)
class RecordCollaboratorPayment:
    invoice_id: str
    #: A new payment's id (the handler draws it; a repeat of an earlier payment keeps that one's).
    payment_id: str
    amount_idr: int
    received_at: datetime
    #: The bank's reference for the transfer: what makes a repeat of the same payment recognisable.
    reference: str
    now: datetime


def evolve_invoice(state: Invoice, event: Envelope) -> Invoice:
    """The invoice after `event` (the envelope, for the time it was invoiced)."""
    data: EventData = event.data
    match data:
        case CollaboratorInvoiced():
            return Invoice(invoice_id=data.invoice_id, collaborator_id=data.collaborator_id,
                           period_end=data.period_end, amount_idr=data.amount_idr, pieces=data.pieces,
                           invoiced_at=to_wib(event.time))
        case CollaboratorPaid():
            payment = CollaboratorPayment(data.payment_id, data.amount_idr, data.received_at)
            return replace(state, payments=(*state.payments, payment))
    return state


def decide_collaborator_payment(
    state: Invoice, command: RecordCollaboratorPayment, earlier: CollaboratorPayment | None = None
) -> list[EventData]:
    """Record money received against an invoice. `earlier`: the payment already recorded with this bank
    reference, if any: the same payment again is a no-op, another with its reference a conflict."""
    if not state.exists:
        raise NotFound("invoice-not-found", f"There is no invoice {command.invoice_id}.")
    if earlier is not None:
        if (earlier.amount_idr, earlier.received_at) == (command.amount_idr, command.received_at):
            return []
        raise Conflict("payment-reference-reused",
                       f"A payment with this reference was already recorded on invoice {state.invoice_id} "
                       f"({earlier.amount_idr} rupiah received {to_wib(earlier.received_at).isoformat()}); "
                       "a bank reference names one transfer.")
    if command.amount_idr <= 0:
        raise Refused("amount-not-positive", "A payment received is at least 1 rupiah.")
    if command.amount_idr > state.outstanding_idr:
        raise Conflict("overpayment",
                       f"Invoice {state.invoice_id} has {state.outstanding_idr} rupiah outstanding of "
                       f"{state.amount_idr}; a payment of {command.amount_idr} would pay it more than it asks. "
                       "Record what belongs to this invoice; any surplus is returned or kept outside the ledger.")
    assert state.invoiced_at is not None and state.collaborator_id is not None
    if command.received_at < state.invoiced_at:
        raise Refused("received-before-invoiced",
                      f"received_at is earlier than invoice {state.invoice_id} was made "
                      f"({state.invoiced_at.isoformat()}); a payment pays an invoice that exists.")
    if command.received_at > command.now + CLOCK_SKEW:
        raise Refused("received-at-in-future", "received_at is in the future; give the moment the money arrived.")
    return [CollaboratorPaid(payment_id=command.payment_id, invoice_id=state.invoice_id,
                             collaborator_id=state.collaborator_id, amount_idr=command.amount_idr,
                             received_at=to_wib(command.received_at))]
