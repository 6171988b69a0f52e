"""The auditor's invariant checks, the ledger comparison and the command's parsing: pure, no I/O."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
import typer
from aiokafka import TopicPartition

from anyam.audit import invariants as inv
from anyam.audit.cli import Connection, parse_as_of
from anyam.audit.invariants import HistoryFacts, LedgerRow, Position
from anyam.audit.lanes import balanced_shares
from anyam.audit.replay import Refused
from services.payout import domain
from shared.contracts import Envelope, Topic, decode, encode, service_source
from shared.contracts.events import (
    CollaboratorRegistered,
    Paid,
    PayoutFailed,
    PayoutScheduled,
    PieceWoven,
    QcPassed,
)
from shared.contracts.signing import generate_private_key, public_key_b64, signed, submission_event
from shared.timeutil import WIB

T0 = datetime(2024, 3, 4, 9, 0, tzinfo=WIB)
PRODUCTION, PAYOUT = service_source("production"), service_source("payout")


class History:
    """A small history built event by event, observed as a replay observes it."""

    def __init__(self) -> None:
        self.facts = HistoryFacts()
        self.offsets: dict[tuple[str, int], int] = {}
        self.events: list[Envelope] = []

    def add(self, event: Envelope, value: bytes | None = None, *, partition: int = 0) -> Envelope:
        topic = event.data.topic.value
        offset = self.offsets.get((topic, partition), 0)
        self.offsets[(topic, partition)] = offset + 1
        self.facts.observe(event, Position(topic, partition, offset), value or encode(event).value)
        self.events.append(event)
        return event

    def rows(self) -> list[LedgerRow]:
        """The ledger a projection makes of these events: one transaction per business key, first wins."""
        rows: dict[str, LedgerRow] = {}
        for event in self.events:
            tx = domain.transaction_for(event)
            if tx is not None and tx.business_key not in rows:
                rows[tx.business_key] = LedgerRow(tx.transaction_id, tx.kind.value, tx.artisan_id, tx.subject_id,
                                                  tx.amount_idr, tx.event_id, tx.event_time)
        return list(rows.values())


class Collaborator:
    def __init__(self, collaborator_id: str = "col_1") -> None:
        self.collaborator_id = collaborator_id
        self.key = generate_private_key()

    def registered(self, key=None, *, valid_from: datetime | None = T0,
                   revoked_from: datetime | None = None) -> Envelope:
        key = key or self.key
        return Envelope.wrap(CollaboratorRegistered(collaborator_id=self.collaborator_id, name="PT Contoh",
                                                    public_key=public_key_b64(key), valid_from=valid_from,
                                                    revoked_from=revoked_from), source=PRODUCTION, time=T0)

    def submission(self, piece_id: str, *, result: str = "passed", key=None, at: datetime = T0) -> tuple[dict, bytes]:
        """Signed submission data and the record value carrying it, as a collaborator publishes it."""
        data = signed(key or self.key, {
            "submission_id": f"sub_{piece_id}", "piece_id": piece_id, "collaborator_id": self.collaborator_id,
            "result": result, "inspector": "QC-01", "inspected_at": (at + timedelta(hours=1)).isoformat(),
            "defects": [],
        })
        return data, submission_event(data, time=at)


def woven(piece_id: str, artisan: str = "res_1", rate: int = 15_000, collaborator: str = "col_1") -> Envelope:
    return Envelope.wrap(PieceWoven(piece_id=piece_id, artisan_id=artisan, collaborator_id=collaborator,
                                    product="piring", rate_idr=rate, woven_at=T0), source=PRODUCTION, time=T0)


def passed(piece_id: str, data: dict, artisan: str = "res_1", amount: int = 15_000, collaborator: str = "col_1",
           at: datetime = T0 + timedelta(hours=1), *, key=None, received_at: datetime | None = None) -> Envelope:
    """A `qc-passed`; with the collaborator's `key`, carrying `data` as the submission it signed."""
    provenance = {} if key is None else {"submission": data, "signing_key": public_key_b64(key),
                                         "received_at": received_at or at}
    return Envelope.wrap(QcPassed(piece_id=piece_id, artisan_id=artisan, collaborator_id=collaborator,
                                  product="piring", amount_idr=amount, submission_id=data["submission_id"],
                                  inspected_at=at, signature=data["signature"], **provenance),
                         source=PRODUCTION, time=at)


def scheduled(payout_id: str, artisan: str, amount: int, at: datetime) -> Envelope:
    return Envelope.wrap(PayoutScheduled(payout_id=payout_id, run_id="run_1", artisan_id=artisan, amount_idr=amount,
                                         period_end=at), source=PAYOUT, time=at)


def paid(payout_id: str, artisan: str, amount: int, at: datetime) -> Envelope:
    return Envelope.wrap(Paid(payout_id=payout_id, artisan_id=artisan, amount_idr=amount, method="bank-transfer",
                              reference="TRF-1", paid_at=at), source=PAYOUT, time=at)


def failed(payout_id: str, artisan: str, amount: int, at: datetime) -> Envelope:
    return Envelope.wrap(PayoutFailed(payout_id=payout_id, artisan_id=artisan, amount_idr=amount,
                                      reason="account-closed"), source=PAYOUT, time=at)


def honest_piece(history: History, collaborator: Collaborator, piece_id: str, artisan: str = "res_1",
                 rate: int = 15_000) -> Envelope:
    """A piece woven, submitted signed by its collaborator, and passed: as production records it."""
    history.add(woven(piece_id, artisan, rate, collaborator.collaborator_id))
    data, value = collaborator.submission(piece_id)
    history.add(decode(value, topic=Topic.QC_SUBMISSIONS), value)
    return history.add(passed(piece_id, data, artisan, rate, collaborator.collaborator_id, key=collaborator.key))


@pytest.fixture
def collaborator():
    return Collaborator()


@pytest.fixture
def history(collaborator):
    history = History()
    history.add(collaborator.registered())
    return history


# --- a clean history ---------------------------------------------------------------------------------


def test_an_honest_history_breaks_no_invariant(history, collaborator):
    for n in range(3):
        honest_piece(history, collaborator, f"pc_{n}", rate=10_000 * (n + 1))
    at = T0 + timedelta(days=7)
    history.add(scheduled("po_1", "res_1", 60_000, at))
    history.add(paid("po_1", "res_1", 60_000, at))
    rows = history.rows()

    results = [
        inv.check_pieces_earned_once(history.facts, rows),
        inv.check_earned_at_piece_rate(history.facts),
        inv.check_paid_within_earned(rows),
        inv.check_qc_signatures(history.facts),
        inv.check_payouts_follow_schedule(history.facts),
    ]

    assert [r.violations for r in results] == [()] * 5
    assert [r.checked for r in results] == [3, 3, 1, 3, 1]


def test_a_redelivered_event_is_one_event_not_a_second_result(history, collaborator):
    event = honest_piece(history, collaborator, "pc_1")
    history.add(event)  # the relay published it again: same id

    assert inv.check_pieces_earned_once(history.facts, history.rows()).holds


# --- signatures -----------------------------------------------------------------------------------


def test_a_qc_passed_without_the_submission_it_rests_on_is_named(history):
    history.add(woven("pc_1"))
    event = history.add(passed("pc_1", {"submission_id": "sub_nowhere", "signature": "c2lnbmF0dXJl"}))

    [violation] = inv.check_qc_signatures(history.facts).violations

    assert violation.kind == "no-submission" and violation.event_ids == (event.id,)


def test_a_signature_made_before_a_key_rotation_still_verifies(history, collaborator):
    old_key = collaborator.key
    history.add(woven("pc_1"))
    data, _ = collaborator.submission("pc_1", key=old_key)
    history.add(passed("pc_1", data, key=old_key))
    history.add(collaborator.registered(generate_private_key()))  # a new key, registered later

    assert inv.check_qc_signatures(history.facts).holds


def test_a_key_never_registered_for_the_collaborator_is_named(history, collaborator):
    stranger = generate_private_key()
    history.add(woven("pc_1"))
    data, _ = collaborator.submission("pc_1", key=stranger)
    event = history.add(passed("pc_1", data, key=stranger))

    [violation] = inv.check_qc_signatures(history.facts).violations

    assert violation.kind == "unregistered-key" and violation.event_ids[0] == event.id


def test_a_key_registered_after_the_inspection_is_named():
    history, collaborator = History(), Collaborator()
    history.add(collaborator.registered(valid_from=T0 + timedelta(days=30)))
    history.add(woven("pc_1"))
    data, _ = collaborator.submission("pc_1")
    history.add(passed("pc_1", data, key=collaborator.key))

    [violation] = inv.check_qc_signatures(history.facts).violations

    assert violation.kind == "key-not-yet-valid"


def test_a_result_received_after_its_key_was_revoked_is_named_and_one_received_before_is_not(history, collaborator):
    revoked_from = T0 + timedelta(days=2)
    history.add(collaborator.registered(revoked_from=revoked_from))  # the revocation, in any order
    for piece_id, received in (("pc_1", revoked_from - timedelta(minutes=1)), ("pc_2", revoked_from)):
        history.add(woven(piece_id))
        data, _ = collaborator.submission(piece_id)
        history.add(passed(piece_id, data, key=collaborator.key, received_at=received))

    [violation] = inv.check_qc_signatures(history.facts).violations

    assert violation.kind == "revoked-key" and "pc_2" in violation.message


def test_every_record_the_replay_refused_as_forged_is_named_by_event_id():
    refused = [Refused("ev_1", "qc-passed", Position("production", 0, 7), "unattested", "no header"),
               Refused("ev_2", "paid", Position("payout", 1, 3), "bad-signature", "does not verify"),
               Refused("ev_3", "paid", Position("payout", 1, 4), "payout-already-posted", "a second ending")]

    result = inv.check_history_attested(refused, records=10)

    assert [(v.kind, v.event_ids) for v in result.violations] == [("unattested", ("ev_1",)),
                                                                 ("bad-signature", ("ev_2",))]


# --- earnings ---------------------------------------------------------------------------------------


def test_a_piece_that_passed_twice_is_named_with_both_events(history, collaborator):
    first = honest_piece(history, collaborator, "pc_1")
    data, _ = collaborator.submission("pc_1")
    second = history.add(passed("pc_1", data))  # a second, distinct qc-passed for the same piece

    result = inv.check_pieces_earned_once(history.facts, history.rows())

    [violation] = result.violations
    assert violation.kind == "passed-twice" and set(violation.event_ids) == {first.id, second.id}


def test_a_piece_earned_twice_in_a_ledger_is_named(history, collaborator):
    event = honest_piece(history, collaborator, "pc_1")
    rows = history.rows()
    duplicate = LedgerRow("earned:other", "earned", "res_1", "pc_1", 15_000, "other", event.time)

    [violation] = inv.check_pieces_earned_once(history.facts, [*rows, duplicate]).violations

    assert violation.kind == "earned-twice"


def test_an_earning_that_is_not_the_pieces_rate_is_named_with_both_events(history, collaborator):
    piece = history.add(woven("pc_1", rate=15_000))
    data, value = collaborator.submission("pc_1")
    history.add(decode(value, topic=Topic.QC_SUBMISSIONS), value)
    result = history.add(passed("pc_1", data, amount=150_000))

    [violation] = inv.check_earned_at_piece_rate(history.facts).violations

    assert violation.kind == "amount-not-rate" and violation.event_ids == (piece.id, result.id)
    assert violation.details == {"amount_idr": 150_000, "rate_idr": 15_000}


def test_an_earning_for_a_piece_never_woven_or_woven_by_someone_else_is_named(history, collaborator):
    history.add(passed("pc_ghost", {"submission_id": "s", "signature": "c2ln"}))
    history.add(woven("pc_2", artisan="res_2"))
    history.add(passed("pc_2", {"submission_id": "s2", "signature": "c2ln"}, artisan="res_1"))

    kinds = sorted(v.kind for v in inv.check_earned_at_piece_rate(history.facts).violations)

    assert kinds == ["piece-mismatch", "piece-never-woven"]


# --- payouts ----------------------------------------------------------------------------------------


def test_a_payout_over_what_was_earned_is_named_with_the_scheduling_event(history, collaborator):
    honest_piece(history, collaborator, "pc_1", rate=15_000)
    over = history.add(scheduled("po_1", "res_1", 20_000, T0 + timedelta(days=1)))

    [violation] = inv.check_paid_within_earned(history.rows()).violations

    assert violation.kind == "paid-over-earned" and violation.event_ids == (over.id,)
    assert violation.details == {"committed_idr": 20_000, "earned_idr": 15_000}


def test_paying_before_the_earning_happened_is_over_earned_at_that_moment(history, collaborator):
    history.add(scheduled("po_1", "res_1", 15_000, T0 - timedelta(days=1)))  # earlier than the earning
    honest_piece(history, collaborator, "pc_1", rate=15_000)

    assert not inv.check_paid_within_earned(history.rows()).holds
    # ...but not as of a cut before either happened.
    assert inv.check_paid_within_earned(history.rows(), as_of=T0 - timedelta(days=2)).holds


def test_a_failed_payout_returns_its_money_so_paying_it_again_is_within_earnings(history, collaborator):
    honest_piece(history, collaborator, "pc_1", rate=15_000)
    day = T0 + timedelta(days=1)
    history.add(scheduled("po_1", "res_1", 15_000, day))
    history.add(failed("po_1", "res_1", 15_000, day + timedelta(hours=1)))
    history.add(scheduled("po_2", "res_1", 15_000, day + timedelta(days=1)))
    history.add(paid("po_2", "res_1", 15_000, day + timedelta(days=1)))

    assert inv.check_paid_within_earned(history.rows()).holds
    assert inv.check_payouts_follow_schedule(history.facts).holds


def test_a_payment_without_its_scheduling_is_named(history):
    lone = history.add(paid("po_x", "res_1", 10_000, T0))

    [violation] = inv.check_payouts_follow_schedule(history.facts).violations

    assert violation.kind == "never-scheduled" and violation.event_ids == (lone.id,)


def test_a_payment_of_another_amount_or_artisan_than_scheduled_is_named(history):
    history.add(scheduled("po_1", "res_1", 10_000, T0))
    history.add(scheduled("po_2", "res_2", 10_000, T0))
    more = history.add(paid("po_1", "res_1", 12_000, T0 + timedelta(hours=1)))
    elsewhere = history.add(paid("po_2", "res_3", 10_000, T0 + timedelta(hours=1)))

    violations = inv.check_payouts_follow_schedule(history.facts).violations

    assert {(v.kind, v.event_ids[0]) for v in violations} == {("settlement-mismatch", more.id),
                                                              ("settlement-mismatch", elsewhere.id)}


def test_a_payment_before_its_scheduling_in_the_log_is_named(history):
    settle = history.add(paid("po_1", "res_1", 10_000, T0))  # same partition, earlier offset
    history.add(scheduled("po_1", "res_1", 10_000, T0))

    [violation] = inv.check_payouts_follow_schedule(history.facts).violations

    assert violation.kind == "settled-before-scheduled" and violation.event_ids[0] == settle.id


def test_a_payout_paid_twice_is_named(history):
    history.add(scheduled("po_1", "res_1", 10_000, T0))
    first = history.add(paid("po_1", "res_1", 10_000, T0 + timedelta(hours=1)))
    second = history.add(paid("po_1", "res_1", 10_000, T0 + timedelta(hours=2)))

    [violation] = inv.check_payouts_follow_schedule(history.facts).violations

    assert violation.kind == "settled-twice" and violation.event_ids == (first.id, second.id)


# --- balance, and the live ledger against the replay ---------------------------------------------------


def test_unbalanced_transactions_and_an_unbalanced_live_ledger_are_named():
    result = inv.check_transactions_balance(
        [("earned:a", "a", [-100, 100]), ("earned:b", "b", [-100, 90]), ("paid:c", "c", [50])],
        live_total=-10, live_legs=[("paid:d", "d", [-5, 5])],
    )

    assert sorted((v.kind, v.transaction_id) for v in result.violations) == [
        ("unbalanced-live-ledger", None), ("unbalanced-replayed", "earned:b"), ("unbalanced-replayed", "paid:c")]
    assert result.checked == 5


def entry(transaction_id: str, legs: dict[str, int], event_id: str | None = None, kind: str = "earned") -> inv.Entry:
    return inv.Entry(transaction_id, kind, event_id or transaction_id.split(":")[1], T0, legs)


def test_the_ledger_diff_names_each_row_that_differs_and_how():
    replayed = {e.transaction_id: e for e in (
        entry("earned:e1", {"artisan:a:payable": 100}),
        entry("earned:e2", {"artisan:a:payable": 200}),
        entry("earned:e3", {"artisan:a:payable": 300}),
        entry("scheduled:e4", {"artisan:a:payable": -100, "artisan:a:in-transit": 100}, kind="scheduled"),
        entry("earned:e5", {"artisan:a:payable": 500}),
    )}
    live = dict(replayed)
    live["earned:e1"] = entry("earned:e1", {"artisan:a:payable": 150})  # amount edited
    del live["earned:e2"]  # deleted
    live["earned:e3"] = entry("earned:e3", {"artisan:b:payable": 300})  # moved to another artisan
    live["earned:e5"] = entry("earned:e5", {"artisan:a:payable": 500}, event_id="e5-rewritten")
    live["earned:forged"] = entry("earned:forged", {"artisan:a:payable": 999})  # its event is nowhere

    differences, orphans = inv.diff_ledgers(replayed, live, history_event_ids={"e1", "e2", "e3", "e4", "e5"})

    assert {(d.kind, d.transaction_id) for d in differences} == {
        ("amount-differs", "earned:e1"), ("missing-in-live", "earned:e2"), ("account-differs", "earned:e3"),
        ("event-differs", "earned:e5"), ("extra-in-live", "earned:forged")}
    assert {(o.transaction_id, o.event_ids) for o in orphans} == {("earned:forged", ("forged",)),
                                                                  ("earned:e5", ("e5-rewritten",))}
    amount = next(d for d in differences if d.kind == "amount-differs")
    assert amount.event_ids == ("e1",) and amount.details["live"] == {"artisan:a:payable": 150}


def test_equal_ledgers_have_no_differences():
    replayed = {"earned:e1": entry("earned:e1", {"artisan:a:payable": 100})}

    assert inv.diff_ledgers(replayed, dict(replayed), {"e1"}) == ([], [])


def test_statement_postings_fold_into_one_entry_per_transaction():
    postings = [
        {"transaction_id": "paid:p", "kind": "paid", "account": "artisan:a:in-transit", "amount_idr": -10,
         "event_id": "p", "event_time": "2024-03-04T09:00:00+07:00"},
        {"transaction_id": "paid:p", "kind": "paid", "account": "artisan:a:paid", "amount_idr": 10,
         "event_id": "p", "event_time": "2024-03-04T09:00:00+07:00"},
    ]

    [(transaction_id, folded)] = inv.entries_from_postings(postings).items()

    assert folded.legs == {"artisan:a:in-transit": -10, "artisan:a:paid": 10} and folded.event_time == T0


def test_balance_differences_name_the_account_and_its_artisan():
    [violation] = inv.diff_balances({"artisan:r:1:payable": 10, "collaborator:c:fees": -10},
                                    {"artisan:r:1:payable": 15, "collaborator:c:fees": -10})

    assert violation.artisan_id == "r:1" and violation.details == {
        "account": "artisan:r:1:payable", "live_idr": 15, "replayed_idr": 10}


def test_artisan_of_reads_artisan_accounts_only():
    assert inv.artisan_of("artisan:res_1:in-transit") == "res_1"
    assert inv.artisan_of("collaborator:col_1:fees") is None
    assert inv.artisan_of("artisan:res_1:other") is None


def test_a_violation_and_a_result_are_json():
    result = inv.InvariantResult("x", "y", 1, (inv.Violation("m", ("e",), transaction_id="t", kind="k"),))

    document = json.loads(json.dumps(result.to_json()))

    assert document == {"name": "x", "holds": False, "description": "y", "checked": 1, "violations": [
        {"kind": "k", "message": "m", "event_ids": ["e"], "transaction_id": "t"}]}


# --- the command line's parsing --------------------------------------------------------------------


def test_as_of_is_a_moment_with_an_offset_kept_in_wib():
    assert parse_as_of("2024-03-15T16:59:59Z") == datetime(2024, 3, 15, 23, 59, 59, tzinfo=WIB)
    assert parse_as_of(None) is None
    for bad in ("2024-03-15T23:59:59", "yesterday", "1999-01-01T00:00:00+07:00"):
        with pytest.raises(typer.BadParameter):
            parse_as_of(bad)


def test_settings_come_from_the_option_then_a_named_stack_file_then_the_environment(tmp_path, monkeypatch):
    stack = tmp_path / "stack.env"
    stack.write_text("ANYAM_KAFKA_BOOTSTRAP=file:9092\nANYAM_TOPIC_PREFIX=p-\n")
    monkeypatch.setenv("ANYAM_KAFKA_BOOTSTRAP", "env:9092")
    monkeypatch.setenv("ANYAM_PAYOUT_URL", "http://env")
    monkeypatch.chdir(tmp_path)  # no .anyam/stack.env here

    named = Connection(stack)
    assert named.kafka(None, None).kafka_bootstrap == "file:9092"
    assert named.kafka("flag:9092", None).kafka_bootstrap == "flag:9092"
    assert named.kafka(None, None).topic_prefix == "p-"
    assert named.get("ANYAM_PAYOUT_URL") == "http://env"
    assert Connection(None).kafka(None, None).kafka_bootstrap == "env:9092"


def test_partitions_are_dealt_to_processes_by_their_records_each_share_in_reading_order():
    a, b, c, empty, e = (TopicPartition("production", n) for n in range(5))
    order = [a, b, c, empty, e]
    sizes = {a: 100, b: 60, c: 50, empty: 0, e: 10}

    # The largest first, each to the share with the fewest records so far: 110 and 110.
    assert balanced_shares(order, sizes, 2) == [[a, e], [b, c]]
    # Never more shares than partitions with records to read; nothing to read, nothing dealt.
    assert balanced_shares(order, sizes, 8) == [[a], [b], [c], [e]]
    assert balanced_shares(order, sizes, 1) == [[a, b, c, e]]
    assert balanced_shares([empty], {empty: 0}, 2) == []
