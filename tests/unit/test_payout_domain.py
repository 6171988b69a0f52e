"""Payout's pure domain: posting rules, the digest, payout runs and the payout lifecycle. No I/O."""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.payout import domain
from services.payout.domain import (
    ConfirmPayment,
    FailPayout,
    Kind,
    Payout,
    RunPayouts,
    Status,
    decide_payout,
    evolve_payout,
    plan_run,
    transaction_for,
)
from shared.contracts import Envelope, decode, encode, service_source
from shared.contracts.events import Paid, PayoutFailed, PayoutScheduled, PieceWoven, QcFailed, QcPassed
from shared.domain import Conflict, NotFound, Refused, fold
from shared.timeutil import WIB

T0 = datetime(2024, 3, 1, 8, 0, tzinfo=WIB)
PRODUCTION, PAYOUT = service_source("production"), service_source("payout")


def qc_passed(artisan: str, piece: str, amount: int, *, collaborator: str = "col_1", at: datetime = T0) -> Envelope:
    return Envelope.wrap(
        QcPassed(piece_id=piece, artisan_id=artisan, collaborator_id=collaborator, product="piring",
                 amount_idr=amount, submission_id=f"sub_{piece}", inspected_at=at, signature="c2lnbmF0dXJl"),
        source=PRODUCTION, time=at,
    )


def scheduled(payout_id: str, artisan: str, amount: int, *, at: datetime = T0) -> Envelope:
    return Envelope.wrap(PayoutScheduled(payout_id=payout_id, run_id="run_1", artisan_id=artisan, amount_idr=amount,
                                         period_end=at), source=PAYOUT, time=at)


def history(*events: Envelope) -> Payout:
    return fold(evolve_payout, Payout(), events)


# --- posting rules ------------------------------------------------------------------------------


def test_a_passed_piece_moves_its_amount_from_the_collaborators_fees_to_the_artisans_payable():
    event = qc_passed("res_1", "pc_1", 15_000, collaborator="col_9")

    tx = transaction_for(event)

    assert tx is not None and tx.kind is Kind.EARNED and tx.balanced
    assert {(p.account, p.amount_idr) for p in tx.postings} == {
        ("collaborator:col_9:fees", -15_000), ("artisan:res_1:payable", 15_000)}
    assert (tx.event_id, tx.event_type, tx.event_time, tx.subject_id) == (event.id, "qc-passed", T0, "pc_1")
    assert tx.transaction_id == f"earned:{event.id}"


@pytest.mark.parametrize(
    ("data", "kind", "source", "destination"),
    [
        (PayoutScheduled(payout_id="po_1", run_id="r", artisan_id="a", amount_idr=700, period_end=T0),
         Kind.SCHEDULED, "artisan:a:payable", "artisan:a:in-transit"),
        (Paid(payout_id="po_1", artisan_id="a", amount_idr=700, method="bank", reference="TRF", paid_at=T0),
         Kind.PAID, "artisan:a:in-transit", "artisan:a:paid"),
        (PayoutFailed(payout_id="po_1", artisan_id="a", amount_idr=700, reason="account-closed"),
         Kind.FAILED, "artisan:a:in-transit", "artisan:a:payable"),
    ],
)
def test_each_payout_event_moves_its_amount_between_the_artisans_accounts(data, kind, source, destination):
    tx = transaction_for(Envelope.wrap(data, source=PAYOUT, time=T0))

    assert tx is not None and tx.kind is kind and tx.balanced
    assert {(p.account, p.amount_idr) for p in tx.postings} == {(source, -700), (destination, 700)}


def test_paid_and_failed_share_one_settlement_key_so_a_payout_ends_once():
    paid = transaction_for(Envelope.wrap(Paid(payout_id="po_1", artisan_id="a", amount_idr=1, method="m",
                                              reference="r", paid_at=T0), source=PAYOUT))
    failed = transaction_for(Envelope.wrap(PayoutFailed(payout_id="po_1", artisan_id="a", amount_idr=1, reason="other"),
                                           source=PAYOUT))
    assert paid.business_key == failed.business_key


def test_events_that_move_no_money_make_no_transaction():
    woven = Envelope.wrap(PieceWoven(piece_id="pc", artisan_id="a", collaborator_id="c", product="tas", rate_idr=9,
                                     woven_at=T0), source=PRODUCTION)
    failed = Envelope.wrap(QcFailed(piece_id="pc", artisan_id="a", collaborator_id="c", submission_id="s",
                                    defects=["loose-weave"], inspected_at=T0, signature="c2ln"), source=PRODUCTION)
    assert transaction_for(woven) is None and transaction_for(failed) is None


def test_the_same_event_redelivered_makes_the_very_same_transaction():
    event = qc_passed("res_1", "pc_1", 5_000)
    again = decode(encode(event).value)

    assert transaction_for(again) == transaction_for(event)


# --- digest -----------------------------------------------------------------------------------


def test_the_digest_ignores_input_order_but_not_content_and_cuts_by_event_time():
    events = [qc_passed(f"res_{i % 3}", f"pc_{i}", 1_000 * i, at=T0 + timedelta(hours=i)) for i in range(10)]
    rows = domain.digest_rows(transaction_for(e) for e in events)
    shuffled = rows[:]
    random.Random(7).shuffle(shuffled)

    assert domain.ledger_digest(shuffled) == domain.ledger_digest(rows)
    tampered = [r._replace(amount_idr=r.amount_idr + 1) if r is rows[3] else r for r in rows]
    assert domain.ledger_digest(tampered) != domain.ledger_digest(rows)
    first_five = domain.digest_rows(transaction_for(e) for e in events[:5])
    assert domain.ledger_digest(rows, as_of=T0 + timedelta(hours=4)) == domain.ledger_digest(first_five)


def test_the_incremental_digest_refuses_rows_out_of_order():
    rows = sorted(domain.digest_rows([transaction_for(qc_passed("a", "p", 1))]), key=domain.DigestRow.sort_key)
    digest = domain.LedgerDigest()
    digest.add(rows[1])
    with pytest.raises(ValueError, match="out of order"):
        digest.add(rows[0])


def test_the_incremental_digest_counts_transactions_and_postings_as_they_stream_by():
    transactions = [transaction_for(qc_passed(f"res_{i % 2}", f"pc_{i}", 1_000, at=T0)) for i in range(7)]
    digest = domain.LedgerDigest()
    for row in sorted(domain.digest_rows(transactions), key=domain.DigestRow.sort_key):
        digest.add(row)
    assert (digest.transactions, digest.postings) == (7, 14)
    assert digest.hexdigest() == domain.ledger_digest(domain.digest_rows(transactions))


def test_a_digest_row_writes_its_time_as_the_topics_do_whatever_offset_it_was_given_in():
    row = domain.DigestRow("ev_1", "artisan:a:payable", -1, "payout-scheduled", T0)
    assert row.canonical() == row._replace(event_time=T0.astimezone(WIB.utc)).canonical()
    assert row.canonical() == (b'{"account":"artisan:a:payable","amount_idr":-1,"event_id":"ev_1",'
                               b'"event_time":"2024-03-01T08:00:00+07:00","event_type":"payout-scheduled"}')
    fractional = row._replace(event_time=T0.replace(microsecond=120_000))
    assert b'"event_time":"2024-03-01T08:00:00.120000+07:00"' in fractional.canonical()


def test_a_transfer_of_nothing_digests_alike_whichever_way_it_was_recorded():
    # A ledger converted from an older layout may hold a 0-rupiah transfer either way round.
    tx = transaction_for(qc_passed("res_1", "pc_1", 0))
    reversed_tx = tx._replace(from_account=tx.to_account, to_account=tx.from_account)
    assert domain.ledger_digest(domain.digest_rows([reversed_tx])) == domain.ledger_digest(domain.digest_rows([tx]))


def test_an_empty_ledger_digests_as_the_empty_array():
    assert domain.ledger_digest([]) == hashlib.sha256(b"[]").hexdigest()


# --- payout runs --------------------------------------------------------------------------------


def run(run_id: str = "2024-03", period_end: datetime = T0, now: datetime = T0 + timedelta(days=1)) -> RunPayouts:
    return RunPayouts(run_id, period_end, now)


def test_a_run_pays_each_artisan_what_they_earned_minus_what_is_already_committed():
    payouts = plan_run(run(), earned={"b": 9_000, "a": 5_000, "c": 1_000}, committed={"a": 2_000, "c": 1_000})

    assert [(p.artisan_id, p.amount_idr) for p in payouts] == [("a", 3_000), ("b", 9_000)]
    assert all(p.run_id == "2024-03" and p.period_end == T0 for p in payouts)
    assert len({p.payout_id for p in payouts}) == 2


def test_a_runs_payout_ids_derive_from_the_run_and_the_artisan():
    first = plan_run(run(), earned={"a": 1}, committed={})
    again = plan_run(run(), earned={"a": 1}, committed={})
    other = plan_run(run("2024-04"), earned={"a": 1}, committed={})

    assert first[0].payout_id == again[0].payout_id != other[0].payout_id


def test_a_run_never_schedules_a_negative_or_zero_amount():
    assert plan_run(run(), earned={"a": 1_000}, committed={"a": 4_000}) == []
    assert plan_run(run(), earned={"a": 0}, committed={}) == []


def test_a_period_that_has_not_ended_cannot_be_paid():
    with pytest.raises(Refused) as refused:
        plan_run(run(period_end=T0 + timedelta(days=2)), earned={"a": 1}, committed={})
    assert refused.value.code == "period-not-ended"


def test_a_run_may_be_recorded_after_it_was_made_but_never_before_its_period_ended_or_in_the_future():
    recorded = T0 + timedelta(days=30)
    made_then = RunPayouts("2024-03", T0, T0 + timedelta(hours=10), recorded_at=recorded)
    assert [p.amount_idr for p in plan_run(made_then, earned={"a": 1}, committed={})] == [1]

    for run_at, code in ((T0 - timedelta(seconds=1), "period-not-ended"),
                         (recorded + timedelta(minutes=6), "run-at-in-future")):
        with pytest.raises(Refused) as refused:
            plan_run(RunPayouts("2024-03", T0, run_at, recorded_at=recorded), earned={"a": 1}, committed={})
        assert refused.value.code == code


# --- the payout lifecycle -------------------------------------------------------------------------


def confirm(reference: str = "TRF-1", at: datetime = T0 + timedelta(hours=1)) -> ConfirmPayment:
    return ConfirmPayment("po_1", "bank-transfer", reference, at, now=T0 + timedelta(hours=2))


def test_a_scheduled_payout_confirmed_is_paid_its_full_amount():
    (event,) = decide_payout(history(scheduled("po_1", "a", 700)), confirm())

    assert isinstance(event, Paid)
    assert (event.payout_id, event.artisan_id, event.amount_idr) == ("po_1", "a", 700)
    # The bank's reference could hold an account number: the event carries payout's own.
    assert event.reference == "payment:po_1"


def test_a_payment_recorded_with_the_banks_reference_on_its_event_is_still_recognised_when_confirmed_again():
    recorded_before = history(scheduled("po_1", "a", 700), Envelope.wrap(Paid(
        payout_id="po_1", artisan_id="a", amount_idr=700, method="bank-transfer", reference="TRF-1",
        paid_at=T0 + timedelta(hours=1)), source=PAYOUT))

    assert decide_payout(recorded_before, confirm()) == []
    with pytest.raises(Conflict):
        decide_payout(recorded_before, confirm(reference="TRF-2"))


def test_the_same_confirmation_again_is_one_payment_and_a_different_one_is_refused():
    paid = replace(history(scheduled("po_1", "a", 700), Envelope.wrap(decide_payout(
        history(scheduled("po_1", "a", 700)), confirm())[0], source=PAYOUT)), bank_reference="TRF-1")

    assert paid.status is Status.PAID
    assert decide_payout(paid, confirm()) == []
    with pytest.raises(Conflict) as conflict:
        decide_payout(paid, confirm(reference="TRF-2"))
    assert conflict.value.code == "payout-already-paid"
    with pytest.raises(Conflict) as conflict:
        decide_payout(paid, FailPayout("po_1", "returned"))
    assert conflict.value.code == "payout-already-paid"


def test_a_failure_is_at_the_moment_the_bank_refused_never_before_scheduling_or_in_the_future():
    start = history(scheduled("po_1", "a", 700))
    now = T0 + timedelta(days=30)
    for failed_at, code in ((T0 - timedelta(seconds=1), "failed-before-scheduled"),
                            (now + timedelta(minutes=6), "failed-at-in-future")):
        with pytest.raises(Refused) as refused:
            decide_payout(start, FailPayout("po_1", "account-closed", failed_at, now))
        assert refused.value.code == code
    assert decide_payout(start, FailPayout("po_1", "account-closed", T0 + timedelta(hours=5), now))


def test_a_failed_payout_cannot_be_paid_and_failing_it_again_for_the_same_reason_is_a_no_op():
    start = scheduled("po_1", "a", 700)
    (failure,) = decide_payout(history(start), FailPayout("po_1", "account-closed"))
    failed = history(start, Envelope.wrap(failure, source=PAYOUT))

    assert isinstance(failure, PayoutFailed) and failure.amount_idr == 700
    assert decide_payout(failed, FailPayout("po_1", "account-closed")) == []
    with pytest.raises(Conflict) as conflict:
        decide_payout(failed, confirm())
    assert conflict.value.code == "payout-failed"
    with pytest.raises(Conflict) as conflict:
        decide_payout(failed, FailPayout("po_1", "another reason"))
    assert conflict.value.code == "payout-already-failed"


def test_an_unknown_payout_is_not_found():
    with pytest.raises(NotFound):
        decide_payout(Payout(), confirm())


@pytest.mark.parametrize(
    ("paid_at", "code"),
    [(T0 - timedelta(minutes=1), "paid-before-scheduled"), (T0 + timedelta(hours=3), "paid-at-in-future")],
)
def test_a_payment_time_before_scheduling_or_in_the_future_is_refused(paid_at, code):
    with pytest.raises(Refused) as refused:
        decide_payout(history(scheduled("po_1", "a", 700)), confirm(at=paid_at))
    assert refused.value.code == code


# --- properties: any history the commands can make ------------------------------------------------

ARTISANS = ["res_a", "res_b", "res_c"]
NOW = T0 + timedelta(days=30)

_earn = st.tuples(st.just("earn"), st.sampled_from(ARTISANS), st.integers(0, 250_000), st.sampled_from(["c1", "c2"]),
                 st.integers(0, 20 * 24 * 60))
# `seen`: how far the ledger projection had got when the run read it (projection lag).
_run = st.tuples(st.just("run"), st.integers(0, 20 * 24 * 60), st.sampled_from([1.0, 1.0, 0.5, 0.0]))
_settle = st.tuples(st.sampled_from(["pay", "pay", "fail"]), st.integers(0, 50))
operation = st.sampled_from(["earn", "run", "settle"]).flatmap(
    lambda kind: {"earn": _earn, "run": _run, "settle": _settle}[kind])


def simulate(operations) -> list[Envelope]:
    """Drive the pure deciders as the handlers do: runs read the (possibly lagging) ledger's earnings
    and the exact record of committed payouts."""
    events: list[Envelope] = []
    earnings: list[Envelope] = []
    payouts: dict[str, Payout] = {}
    for n, op in enumerate(operations):
        match op:
            case ("earn", artisan, amount, collaborator, minute):
                event = qc_passed(artisan, f"pc_{n}", amount, collaborator=collaborator,
                                  at=T0 + timedelta(minutes=minute))
                earnings.append(event)
                events.append(event)
            case ("run", minute, seen):
                period_end = T0 + timedelta(minutes=minute)
                earned: dict[str, int] = defaultdict(int)
                for event in earnings[: int(len(earnings) * seen)]:
                    if event.time <= period_end:
                        earned[event.data.artisan_id] += event.data.amount_idr
                committed: dict[str, int] = defaultdict(int)
                for payout in payouts.values():
                    if payout.status is not Status.FAILED:
                        committed[payout.artisan_id] += payout.amount_idr
                for data in plan_run(RunPayouts(f"run_{n}", period_end, NOW), earned, committed):
                    event = Envelope.wrap(data, source=PAYOUT, time=NOW)
                    payouts[data.payout_id] = evolve_payout(Payout(), event)
                    events.append(event)
            case (("pay" | "fail") as what, index) if payouts:
                payout_id = sorted(payouts)[index % len(payouts)]
                command = (ConfirmPayment(payout_id, "bank", f"TRF-{n}", NOW, NOW) if what == "pay"
                           else FailPayout(payout_id, "returned"))
                try:
                    decided = decide_payout(payouts[payout_id], command)
                except Conflict:
                    continue
                for data in decided:
                    event = Envelope.wrap(data, source=PAYOUT, time=NOW)
                    payouts[payout_id] = evolve_payout(payouts[payout_id], event)
                    events.append(event)
    return events


@settings(max_examples=150, deadline=None)
@given(st.lists(operation, max_size=60))
def test_any_history_balances_and_nobody_is_paid_more_than_they_earned(operations):
    transactions = [tx for e in simulate(operations) if (tx := transaction_for(e)) is not None]

    assert all(tx.balanced for tx in transactions)
    balance = domain.balances(transactions)
    assert sum(balance.values()) == 0
    for artisan in ARTISANS:
        earned = sum(tx.amount_idr for tx in transactions if tx.kind is Kind.EARNED and tx.artisan_id == artisan)
        payable, transit, paid = (balance.get(account, 0) for account in domain.artisan_accounts(artisan))
        assert payable + transit + paid == earned
        assert 0 <= paid <= earned
        assert payable >= 0 and transit >= 0
    assert -sum(v for k, v in balance.items() if k.startswith("collaborator:")) == sum(
        tx.amount_idr for tx in transactions if tx.kind is Kind.EARNED)


@settings(max_examples=100, deadline=None)
@given(st.lists(operation, max_size=40), st.randoms(use_true_random=False))
def test_the_same_events_in_any_order_make_the_same_postings_and_digest(operations, rng):
    events = simulate(operations)
    shuffled = events[:]
    rng.shuffle(shuffled)

    def ledger(sequence):
        return {tx.transaction_id: tx for e in sequence if (tx := transaction_for(e)) is not None}

    assert ledger(shuffled) == ledger(events)
    assert domain.ledger_digest(domain.digest_rows(ledger(shuffled).values())) == domain.ledger_digest(
        domain.digest_rows(ledger(events).values()))
    middle = T0 + timedelta(days=10)
    assert domain.balances(ledger(shuffled).values(), middle) == domain.balances(ledger(events).values(), middle)
