"""The auditor's invariants over a history and its ledger: pure functions, no I/O.

`HistoryFacts` gathers, while a replay reads the topics, the few facts of each
event the checks need (ids, amounts, positions; never personal data: the
events carry none, and the facts keep less). Each `check_*` function turns
facts into an `InvariantResult` that names every violation with the event ids
involved, so a report can say which row of which ledger is wrong and why.

Checks run on the events whose own `time` is at or before the cut (`as_of`),
as the ledger's `as_of` reads do; what a check looks *up* (a collaborator's
keys, the submission a `qc-passed` came from, the scheduling a payment
settles) is searched in the whole history read, since those facts carry
times of their own making (a key registered today verifies a signature on a
2024 inspection, whose business time is 2024).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from services.payout import domain
from shared.contracts import Envelope
from shared.contracts.events import (
    CollaboratorRegistered,
    Paid,
    PayoutFailed,
    PayoutScheduled,
    PieceWoven,
    QcPassed,
)
from shared.timeutil import to_wib

# --- what a report says ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Violation:
    """One breach of an invariant: a sentence with ids and amounts only, and the ids it involves."""

    message: str
    event_ids: tuple[str, ...] = ()
    transaction_id: str | None = None
    artisan_id: str | None = None
    #: A machine-readable sort of the breach, e.g. `amount-differs` or `no-submission`.
    kind: str = "violation"
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The violation as a JSON object (empty fields left out)."""
        document: dict[str, Any] = {"kind": self.kind, "message": self.message, "event_ids": list(self.event_ids)}
        if self.transaction_id is not None:
            document["transaction_id"] = self.transaction_id
        if self.artisan_id is not None:
            document["artisan_id"] = self.artisan_id
        if self.details:
            document["details"] = dict(self.details)
        return document


@dataclass(frozen=True)
class InvariantResult:
    """Whether one invariant holds, how many things it looked at, and every violation found."""

    name: str
    description: str
    checked: int
    violations: tuple[Violation, ...] = ()

    @property
    def holds(self) -> bool:
        """True when nothing breaks the invariant."""
        return not self.violations

    def to_json(self) -> dict[str, Any]:
        """The result as a JSON object."""
        return {"name": self.name, "holds": self.holds, "description": self.description, "checked": self.checked,
                "violations": [v.to_json() for v in self.violations]}


# Names of the invariants, as reports and their JSON carry them.
LIVE_MATCHES_REPLAY = "live-matches-replay"
LEDGER_EVENTS_IN_HISTORY = "ledger-events-in-history"
TRANSACTIONS_BALANCE = "transactions-balance"
PIECE_EARNED_ONCE = "piece-earned-once"
EARNED_AT_PIECE_RATE = "earned-at-piece-rate"
PAID_WITHIN_EARNED = "paid-within-earned"
QC_SIGNATURE_VERIFIES = "qc-signature-verifies"
HISTORY_ATTESTED = "history-attested"

#: Why the replay refuses a record that no one with the right key vouched for (SPEC §11).
FORGERY_REASONS = frozenset({"unattested", "bad-signature"})
PAYOUT_FOLLOWS_SCHEDULE = "payout-follows-schedule"


# --- facts gathered from the history --------------------------------------------------------------


class Position(NamedTuple):
    """Where a record sits: base topic, partition, offset."""

    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


@dataclass(frozen=True)
class WovenFact:
    """A `piece-woven`: who wove the piece, for whom, at which rate."""

    event_id: str
    artisan_id: str
    collaborator_id: str
    rate_idr: int


@dataclass(frozen=True)
class PassedFact:
    """A `qc-passed`: what it earned whom, and the key its collaborator's signature rests on."""

    event_id: str
    time: datetime
    piece_id: str
    artisan_id: str
    collaborator_id: str
    amount_idr: int
    submission_id: str
    signing_key: str | None
    received_at: datetime | None


@dataclass
class KeyFact:
    """One registered key of a collaborator: from when it signs, and its earliest revocation."""

    valid_from: datetime | None
    revoked_from: datetime | None
    event_ids: list[str]


@dataclass(frozen=True)
class PayoutFact:
    """A `payout-scheduled`, `paid` or `payout-failed`: what the payout checks compare."""

    event_id: str
    event_type: str
    time: datetime
    payout_id: str
    artisan_id: str
    amount_idr: int
    position: Position


@dataclass
class HistoryFacts:
    """What the invariant checks need from the history, gathered event by event in any order."""

    #: Every event id that makes a ledger transaction: a live row must point at one of them.
    money_event_ids: set[str] = field(default_factory=set)
    woven: dict[str, list[WovenFact]] = field(default_factory=lambda: defaultdict(list))
    passed: dict[str, PassedFact] = field(default_factory=dict)  # by event id: a redelivery is one event
    #: collaborator id -> public key -> its registration (only attested registrations reach here).
    keys: dict[str, dict[str, KeyFact]] = field(default_factory=lambda: defaultdict(dict))
    scheduled: dict[str, list[PayoutFact]] = field(default_factory=lambda: defaultdict(list))
    settlements: dict[str, PayoutFact] = field(default_factory=dict)  # by event id

    def observe(self, event: Envelope, position: Position, value: bytes | None = None) -> None:
        """Note what the checks need of `event`, read at `position` (`value`, its raw bytes, is unused:
        the replay checked the collaborator's signature over the submission a result carries)."""
        data = event.data
        if _makes_a_transaction(event):
            self.money_event_ids.add(event.id)
        match data:
            case PieceWoven():
                fact = WovenFact(event.id, data.artisan_id, data.collaborator_id, data.rate_idr)
                if fact not in self.woven[data.piece_id]:
                    self.woven[data.piece_id].append(fact)
            case QcPassed():
                self.passed[event.id] = PassedFact(event.id, event.time, data.piece_id, data.artisan_id,
                                                   data.collaborator_id, data.amount_idr, data.submission_id,
                                                   data.signing_key, data.received_at)
            case CollaboratorRegistered():
                known = self.keys[data.collaborator_id].get(data.public_key)
                if known is None:
                    self.keys[data.collaborator_id][data.public_key] = KeyFact(
                        data.valid_from, data.revoked_from, [event.id])
                    return
                if event.id not in known.event_ids:
                    known.event_ids.append(event.id)
                if data.valid_from is not None and (known.valid_from is None or data.valid_from < known.valid_from):
                    known.valid_from = data.valid_from
                if data.revoked_from is not None and (known.revoked_from is None
                                                      or data.revoked_from < known.revoked_from):
                    known.revoked_from = data.revoked_from
            case PayoutScheduled():
                self.scheduled[data.payout_id].append(
                    PayoutFact(event.id, event.type, event.time, data.payout_id, data.artisan_id, data.amount_idr,
                               position))
            case Paid() | PayoutFailed():
                self.settlements.setdefault(event.id, PayoutFact(
                    event.id, event.type, event.time, data.payout_id, data.artisan_id, data.amount_idr, position))


def _makes_a_transaction(event: Envelope) -> bool:
    # An event no ledger row can hold (`domain.Unpostable`) makes none: the replay refuses it, by name.
    try:
        return domain.transaction_for(event) is not None
    except domain.Unpostable:
        return False


def _in_cut(time: datetime, as_of: datetime | None) -> bool:
    return as_of is None or time <= as_of


# --- the ledger's own rows ----------------------------------------------------------------------


@dataclass(frozen=True)
class LedgerRow:
    """One ledger transaction as an invariant sees it (read from the replayed ledger)."""

    transaction_id: str
    kind: str
    #: None for a collaborator's own transactions (invoiced, received), which touch no artisan.
    artisan_id: str | None
    subject_id: str
    amount_idr: int
    event_id: str
    event_time: datetime


def check_transactions_balance(
    legs: Iterable[tuple[str, str, Sequence[int]]], *, live_total: int | None = None,
    live_legs: Iterable[tuple[str, str, Sequence[int]]] = (),
) -> InvariantResult:
    """Double entry: each transaction has two or more postings summing to zero.

    `legs`: (transaction id, event id, posting amounts) of every replayed transaction.
    `live_total`: the sum of every live account's balance, which is zero exactly when the live
    ledger's postings balance overall. `live_legs`: live transactions whose every posting is in
    view (e.g. read from statements), checked one by one.
    """
    violations = []
    checked = 0
    for where, rows in (("replayed", legs), ("live", live_legs)):
        for transaction_id, event_id, amounts in rows:
            checked += 1
            if len(amounts) < 2 or sum(amounts) != 0:
                violations.append(Violation(
                    f"{where} transaction {transaction_id} has {len(amounts)} postings summing to "
                    f"{sum(amounts)} rupiah", (event_id,), transaction_id=transaction_id, kind=f"unbalanced-{where}",
                    details={"postings": len(amounts), "sum_idr": sum(amounts)},
                ))
    if live_total is not None:
        checked += 1
        if live_total != 0:
            violations.append(Violation(
                f"the live ledger's accounts sum to {live_total} rupiah, not 0: some posting was altered",
                kind="unbalanced-live-ledger", details={"sum_idr": live_total},
            ))
    return InvariantResult(TRANSACTIONS_BALANCE, "every transaction's postings sum to zero", checked,
                           tuple(violations))


def check_pieces_earned_once(
    facts: HistoryFacts, ledger: Iterable[LedgerRow], as_of: datetime | None = None
) -> InvariantResult:
    """Each piece that passed QC has exactly one `qc-passed` and exactly one earning in the ledger."""
    passed_by_piece: dict[str, list[PassedFact]] = defaultdict(list)
    for fact in facts.passed.values():
        if _in_cut(fact.time, as_of):
            passed_by_piece[fact.piece_id].append(fact)
    earned: dict[str, list[LedgerRow]] = defaultdict(list)
    for row in ledger:
        if row.kind == domain.Kind.EARNED and _in_cut(row.event_time, as_of):
            earned[row.subject_id].append(row)
    violations = []
    for piece_id in sorted(passed_by_piece.keys() | earned.keys()):
        results, earnings = passed_by_piece.get(piece_id, []), earned.get(piece_id, [])
        if len(results) > 1:
            ids = tuple(sorted(f.event_id for f in results))
            violations.append(Violation(f"piece {piece_id} passed QC {len(results)} times (events {', '.join(ids)})",
                                        ids, artisan_id=results[0].artisan_id, kind="passed-twice"))
        if results and not earnings:
            ids = tuple(sorted(f.event_id for f in results))
            violations.append(Violation(f"piece {piece_id} passed QC but the ledger never earned it", ids,
                                        artisan_id=results[0].artisan_id, kind="never-earned"))
        if len(earnings) > 1:
            violations.append(Violation(
                f"piece {piece_id} was earned {len(earnings)} times", tuple(sorted(r.event_id for r in earnings)),
                artisan_id=earnings[0].artisan_id, kind="earned-twice"))
    return InvariantResult(PIECE_EARNED_ONCE, "each piece that passed QC is earned exactly once",
                           len(passed_by_piece), tuple(violations))


def check_earned_at_piece_rate(facts: HistoryFacts, as_of: datetime | None = None) -> InvariantResult:
    """Each `qc-passed` pays the rate its `piece-woven` fixed, to the artisan it was woven by, for the
    collaborator it was woven for."""
    violations = []
    passed = [f for f in facts.passed.values() if _in_cut(f.time, as_of)]
    for fact in sorted(passed, key=lambda f: (f.piece_id, f.event_id)):
        woven = facts.woven.get(fact.piece_id, [])
        if not woven:
            violations.append(Violation(f"qc-passed {fact.event_id} is for piece {fact.piece_id}, never woven",
                                        (fact.event_id,), artisan_id=fact.artisan_id, kind="piece-never-woven"))
            continue
        piece = woven[0]
        ids = (piece.event_id, fact.event_id)
        if fact.amount_idr != piece.rate_idr:
            violations.append(Violation(
                f"piece {fact.piece_id} earned {fact.amount_idr} rupiah (qc-passed {fact.event_id}) but was woven "
                f"at {piece.rate_idr} (piece-woven {piece.event_id})", ids, artisan_id=fact.artisan_id,
                kind="amount-not-rate", details={"amount_idr": fact.amount_idr, "rate_idr": piece.rate_idr}))
        if (fact.artisan_id, fact.collaborator_id) != (piece.artisan_id, piece.collaborator_id):
            violations.append(Violation(
                f"qc-passed {fact.event_id} names artisan {fact.artisan_id} and collaborator {fact.collaborator_id}; "
                f"piece {fact.piece_id} was woven by {piece.artisan_id} for {piece.collaborator_id}", ids,
                artisan_id=fact.artisan_id, kind="piece-mismatch"))
        if len(woven) > 1:
            violations.append(Violation(
                f"piece {fact.piece_id} was woven {len(woven)} times with different facts",
                tuple(w.event_id for w in woven), artisan_id=fact.artisan_id, kind="woven-twice"))
    return InvariantResult(EARNED_AT_PIECE_RATE, "each earning equals the rate its piece was woven at",
                           len(passed), tuple(violations))


#: At one instant, money arrives before it leaves: a run scheduled at the very moment a piece
#: passed may pay it.
_KIND_ORDER = {domain.Kind.EARNED: 0, domain.Kind.FAILED: 1, domain.Kind.SCHEDULED: 2, domain.Kind.PAID: 3}


def check_paid_within_earned(ledger: Iterable[LedgerRow], as_of: datetime | None = None) -> InvariantResult:
    """Nobody is ever paid more than she earned: at every moment up to the cut, per artisan, what is
    in transit or paid never exceeds what was earned, and nothing is paid that was not scheduled."""
    by_artisan: dict[str, list[LedgerRow]] = defaultdict(list)
    for row in ledger:
        if row.artisan_id is not None and _in_cut(row.event_time, as_of):
            by_artisan[row.artisan_id].append(row)
    violations = []
    for artisan_id in sorted(by_artisan):
        earned = committed = transit = 0
        for row in sorted(by_artisan[artisan_id],
                          key=lambda r: (r.event_time, _KIND_ORDER.get(domain.Kind(r.kind), 9), r.transaction_id)):
            match row.kind:
                case domain.Kind.EARNED:
                    earned += row.amount_idr
                case domain.Kind.SCHEDULED:
                    committed += row.amount_idr
                    transit += row.amount_idr
                case domain.Kind.PAID:
                    transit -= row.amount_idr
                case domain.Kind.FAILED:
                    committed -= row.amount_idr
                    transit -= row.amount_idr
            if committed > earned:
                violations.append(Violation(
                    f"artisan {artisan_id}: after {row.kind} {row.transaction_id}, {committed} rupiah in transit or "
                    f"paid against {earned} earned", (row.event_id,), transaction_id=row.transaction_id,
                    artisan_id=artisan_id, kind="paid-over-earned",
                    details={"committed_idr": committed, "earned_idr": earned}))
                break
            if transit < 0:
                violations.append(Violation(
                    f"artisan {artisan_id}: after {row.kind} {row.transaction_id}, in-transit is {transit} rupiah: "
                    "more settled than was scheduled", (row.event_id,), transaction_id=row.transaction_id,
                    artisan_id=artisan_id, kind="settled-over-scheduled", details={"in_transit_idr": transit}))
                break
    return InvariantResult(PAID_WITHIN_EARNED, "no artisan is paid (or has in transit) more than she earned",
                           len(by_artisan), tuple(violations))


def check_qc_signatures(facts: HistoryFacts, as_of: datetime | None = None) -> InvariantResult:
    """Each `qc-passed` rests on a key its collaborator held: registered (by an attested
    `collaborator-registered`) for that collaborator, valid from a moment at or before `inspected_at`,
    and not revoked before production received the submission.

    That the signature verifies over the submission the result carries, and that the submission says
    what the result says, the replay checked already (`shared.contracts.provenance`): a result that
    fails it is refused there and named by `history-attested`.
    """
    violations = []
    passed = [f for f in facts.passed.values() if _in_cut(f.time, as_of)]
    for fact in sorted(passed, key=lambda f: (f.piece_id, f.event_id)):
        key = facts.keys.get(fact.collaborator_id, {}).get(fact.signing_key or "")
        ids = (fact.event_id, *(key.event_ids if key else ()))
        where = f"qc-passed {fact.event_id} (piece {fact.piece_id})"
        if fact.signing_key is None:
            violations.append(Violation(f"{where} carries no signed submission", ids, artisan_id=fact.artisan_id,
                                        kind="no-submission"))
        elif key is None:
            violations.append(Violation(
                f"{where}: its signing key was never registered for collaborator {fact.collaborator_id}", ids,
                artisan_id=fact.artisan_id, kind="unregistered-key"))
        elif key.valid_from is not None and fact.time < key.valid_from:
            violations.append(Violation(
                f"{where} was inspected at {fact.time.isoformat()}, before its key was valid "
                f"({key.valid_from.isoformat()})", ids, artisan_id=fact.artisan_id, kind="key-not-yet-valid"))
        elif key.revoked_from is not None and (fact.received_at is None or fact.received_at >= key.revoked_from):
            violations.append(Violation(
                f"{where} rests on a key revoked from {key.revoked_from.isoformat()}, and was received "
                f"{'at an unknown time' if fact.received_at is None else 'at ' + fact.received_at.isoformat()}",
                ids, artisan_id=fact.artisan_id, kind="revoked-key"))
    return InvariantResult(QC_SIGNATURE_VERIFIES,
                           "each qc-passed rests on a key its collaborator held when it was inspected and received",
                           len(passed), tuple(violations))


def check_history_attested(refused: Iterable[Any], records: int) -> InvariantResult:
    """No record on the topics tried to move money (or register a key) without a voucher (SPEC §11):
    each the replay refused as `unattested` or `bad-signature` is named by its event id and position."""
    forged = [r for r in refused if r.reason in FORGERY_REASONS]
    violations = tuple(Violation(
        f"{r.event_type} {r.event_id} at {r.position} is {r.reason}: {r.detail}; it was not credited",
        (r.event_id,), kind=r.reason, details={"position": str(r.position)}) for r in forged)
    return InvariantResult(HISTORY_ATTESTED, "every record on a service's topic is attested by that service, and "
                           "every QC result carries its collaborator's signed submission", records, violations)


def check_payouts_follow_schedule(facts: HistoryFacts, as_of: datetime | None = None) -> InvariantResult:
    """Each `paid` / `payout-failed` settles an earlier `payout-scheduled` of the same payout, artisan
    and amount, and each payout is settled once."""
    violations = []
    settlements = [s for s in facts.settlements.values() if _in_cut(s.time, as_of)]
    by_payout: dict[str, list[PayoutFact]] = defaultdict(list)
    for settlement in sorted(settlements, key=lambda s: (s.payout_id, s.time, s.event_id)):
        by_payout[settlement.payout_id].append(settlement)
        schedules = facts.scheduled.get(settlement.payout_id, [])
        ids = (settlement.event_id, *(s.event_id for s in schedules))
        if not schedules:
            violations.append(Violation(
                f"{settlement.event_type} {settlement.event_id} settles payout {settlement.payout_id}, which was "
                "never scheduled", ids, artisan_id=settlement.artisan_id, kind="never-scheduled",
                details={"amount_idr": settlement.amount_idr}))
            continue
        same = [s for s in schedules if (s.artisan_id, s.amount_idr) == (settlement.artisan_id, settlement.amount_idr)]
        if not same:
            first = schedules[0]
            violations.append(Violation(
                f"{settlement.event_type} {settlement.event_id} settles payout {settlement.payout_id} for artisan "
                f"{settlement.artisan_id}, {settlement.amount_idr} rupiah; it was scheduled for artisan "
                f"{first.artisan_id}, {first.amount_idr} rupiah", ids, artisan_id=settlement.artisan_id,
                kind="settlement-mismatch",
                details={"amount_idr": settlement.amount_idr, "scheduled_idr": first.amount_idr}))
            continue
        if not any(_before(s, settlement) for s in same):
            violations.append(Violation(
                f"{settlement.event_type} {settlement.event_id} comes before the payout-scheduled of payout "
                f"{settlement.payout_id}", ids, artisan_id=settlement.artisan_id, kind="settled-before-scheduled"))
    for payout_id, ends in sorted(by_payout.items()):
        if len(ends) > 1:
            violations.append(Violation(
                f"payout {payout_id} was settled {len(ends)} times ({', '.join(e.event_type for e in ends)})",
                tuple(e.event_id for e in ends), artisan_id=ends[0].artisan_id, kind="settled-twice"))
    return InvariantResult(PAYOUT_FOLLOWS_SCHEDULE,
                           "each paid or payout-failed settles a payout-scheduled of the same payout, artisan and "
                           "amount, once", len(settlements), tuple(violations))


def _before(scheduled: PayoutFact, settlement: PayoutFact) -> bool:
    if scheduled.time > settlement.time:
        return False
    here, there = scheduled.position, settlement.position
    if (here.topic, here.partition) == (there.topic, there.partition):
        return here.offset < there.offset  # one partition is one order: the log's word is final
    return True


# --- the live ledger against the replayed one ------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One ledger transaction as a statement shows it: its postings on the accounts in view."""

    transaction_id: str
    kind: str
    event_id: str
    event_time: datetime
    legs: Mapping[str, int]


def entries_from_postings(postings: Iterable[Mapping[str, Any]]) -> dict[str, Entry]:
    """Statement entries (one per posting: transaction_id, kind, account, amount_idr, event_id,
    event_time) folded into one `Entry` per transaction."""
    legs: dict[str, dict[str, int]] = defaultdict(dict)
    heads: dict[str, tuple[str, str, datetime]] = {}
    for posting in postings:
        transaction_id = posting["transaction_id"]
        moment = posting["event_time"]
        moment = to_wib(datetime.fromisoformat(moment) if isinstance(moment, str) else moment)
        heads.setdefault(transaction_id, (posting["kind"], posting["event_id"], moment))
        legs[transaction_id][posting["account"]] = legs[transaction_id].get(posting["account"], 0) + posting[
            "amount_idr"]
    return {tx: Entry(tx, *heads[tx], legs=legs[tx]) for tx in heads}


def diff_ledgers(
    replayed: Mapping[str, Entry], live: Mapping[str, Entry], history_event_ids: set[str] | None = None
) -> tuple[list[Violation], list[Violation]]:
    """Compare the live ledger's transactions with the replayed ones, transaction by transaction.

    Returns (differences, live rows whose event is not in the history). Each difference names
    the transaction and its event: `missing-in-live`, `extra-in-live`, `amount-differs`,
    `account-differs` or `event-differs`.
    """
    differences: list[Violation] = []
    orphans: list[Violation] = []
    for transaction_id in sorted(replayed.keys() | live.keys()):
        mine, theirs = replayed.get(transaction_id), live.get(transaction_id)
        if theirs is None:
            assert mine is not None
            differences.append(Violation(
                f"transaction {transaction_id} (event {mine.event_id}) is missing from the live ledger",
                (mine.event_id,), transaction_id=transaction_id, kind="missing-in-live",
                details={"postings": dict(mine.legs)}))
            continue
        if mine is None:
            differences.append(Violation(
                f"the live ledger has transaction {transaction_id} (event {theirs.event_id}), which the history "
                "does not make", (theirs.event_id,), transaction_id=transaction_id, kind="extra-in-live",
                details={"postings": dict(theirs.legs)}))
            if history_event_ids is not None and theirs.event_id not in history_event_ids:
                orphans.append(Violation(
                    f"live transaction {transaction_id} cites event {theirs.event_id}, which is not in the history",
                    (theirs.event_id,), transaction_id=transaction_id, kind="event-not-in-history"))
            continue
        ids = tuple(dict.fromkeys((mine.event_id, theirs.event_id)))
        if (mine.kind, mine.event_id, mine.event_time) != (theirs.kind, theirs.event_id, theirs.event_time):
            differences.append(Violation(
                f"transaction {transaction_id}: live says {theirs.kind} from event {theirs.event_id} at "
                f"{theirs.event_time.isoformat()}, the history {mine.kind} from event {mine.event_id} at "
                f"{mine.event_time.isoformat()}", ids, transaction_id=transaction_id, kind="event-differs"))
            if history_event_ids is not None and theirs.event_id not in history_event_ids:
                orphans.append(Violation(
                    f"live transaction {transaction_id} cites event {theirs.event_id}, which is not in the history",
                    (theirs.event_id,), transaction_id=transaction_id, kind="event-not-in-history"))
        if mine.legs.keys() != theirs.legs.keys():
            differences.append(Violation(
                f"transaction {transaction_id} (event {mine.event_id}) posts to {sorted(theirs.legs)} in the live "
                f"ledger, to {sorted(mine.legs)} in the history", ids, transaction_id=transaction_id,
                kind="account-differs", details={"live": dict(theirs.legs), "replayed": dict(mine.legs)}))
        elif mine.legs != theirs.legs:
            changed = sorted(a for a in mine.legs if mine.legs[a] != theirs.legs[a])
            differences.append(Violation(
                f"transaction {transaction_id} (event {mine.event_id}): "
                + "; ".join(f"{a} is {theirs.legs[a]} live, {mine.legs[a]} in the history" for a in changed),
                ids, transaction_id=transaction_id, kind="amount-differs",
                details={"live": dict(theirs.legs), "replayed": dict(mine.legs)}))
    return differences, orphans


def diff_balances(replayed: Mapping[str, int], live: Mapping[str, int]) -> list[Violation]:
    """Every account whose live balance differs from the replayed one (a missing account counts as 0)."""
    violations = []
    for account in sorted(replayed.keys() | live.keys()):
        mine, theirs = replayed.get(account, 0), live.get(account, 0)
        if mine != theirs:
            violations.append(Violation(
                f"account {account} is {theirs} rupiah live, {mine} in the replay", kind="balance-differs",
                artisan_id=artisan_of(account), details={"account": account, "live_idr": theirs, "replayed_idr": mine}))
    return violations


#: The artisan an account belongs to (`artisan:<id>:<kind>`), or None for other accounts.
artisan_of = domain.artisan_of
