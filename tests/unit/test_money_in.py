"""Money in (issue 29): invoicing a collaborator and recording its payments, in payout's pure domain.

The postings: an invoice moves the collaborator's debt from `fees` to `receivable`, each payment from
`receivable` to `paid`, so `fees` and `receivable` settle to zero once everything invoiced is paid.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.payout import domain
from services.payout.domain import (
    Invoice,
    InvoiceCollaborator,
    RecordCollaboratorPayment,
    UninvoicedPiece,
    balances,
    decide_collaborator_payment,
    digest_rows,
    evolve_invoice,
    ledger_digest,
    plan_invoice,
    transaction_for,
)
from services.payout.invoicing import accounts_of, collaborators_in
from shared.contracts import Envelope, service_source
from shared.contracts.events import MAX_RUPIAH, CollaboratorInvoiced, CollaboratorPaid, QcPassed
from shared.domain import Conflict, NotFound, Refused, fold
from shared.timeutil import WIB

T0 = datetime(2024, 3, 1, 8, 0, tzinfo=WIB)
PERIOD_END = datetime(2024, 3, 31, 23, 59, 59, tzinfo=WIB)
NOW = datetime(2024, 4, 1, 9, 0, tzinfo=WIB)
PRODUCTION, PAYOUT = service_source("production"), service_source("payout")


def passed(piece: str, amount: int, artisan: str = "res_1", at: datetime = T0) -> Envelope:
    return Envelope.wrap(
        QcPassed(piece_id=piece, artisan_id=artisan, collaborator_id="col_1", product="piring", amount_idr=amount,
                 submission_id=f"sub_{piece}", inspected_at=at, signature="c2lnbmF0dXJl"),
        source=PRODUCTION, time=at)


def invoiced(pieces: list[tuple[str, int]]) -> tuple[Envelope, tuple[str, ...]]:
    data, chosen = plan_invoice(InvoiceCollaborator("col_1", PERIOD_END, NOW),
                                [UninvoicedPiece(p, a, T0) for p, a in pieces])
    return Envelope.wrap(data, source=PAYOUT, time=NOW), chosen


def pay(state: Invoice, amount: int, reference: str, *, at: datetime = NOW,
        earlier: domain.CollaboratorPayment | None = None) -> list[Envelope]:
    decided = decide_collaborator_payment(
        state, RecordCollaboratorPayment(state.invoice_id or "inv_x", f"cpay_{reference}", amount, at, reference,
                                         NOW + timedelta(minutes=1)), earlier)
    return [Envelope.wrap(d, source=PAYOUT, time=at) for d in decided]


def test_an_invoice_paid_in_two_parts_settles_the_collaborators_fees_and_receivable_to_zero():
    earnings = [passed("pc_1", 25_000), passed("pc_2", 30_000, "res_2"), passed("pc_3", 27_500)]
    invoice, chosen = invoiced([("pc_1", 25_000), ("pc_2", 30_000), ("pc_3", 27_500)])
    assert chosen == ("pc_1", "pc_2", "pc_3")
    state = fold(evolve_invoice, Invoice(), [invoice])
    first = pay(state, 50_000, "TRF-1")
    state = fold(evolve_invoice, state, first)
    second = pay(state, 32_500, "TRF-2", at=NOW + timedelta(seconds=30))
    state = fold(evolve_invoice, state, second)

    ledger = [tx for e in (*earnings, invoice, *first, *second) if (tx := transaction_for(e)) is not None]
    accounts = balances(ledger)

    assert all(tx.balanced for tx in ledger)
    assert accounts["collaborator:col_1:fees"] == 0
    assert accounts["collaborator:col_1:receivable"] == 0
    assert accounts["collaborator:col_1:paid"] == -82_500
    assert sum(accounts.values()) == 0  # what the collaborator paid is what its artisans earned
    assert state.outstanding_idr == 0 and state.paid_idr == 82_500
    account = accounts_of("col_1", accounts)
    assert (account.invoiced_idr, account.paid_idr, account.outstanding_idr, account.not_invoiced_idr,
            account.owed_idr) == (82_500, 82_500, 0, 0, 0)


def test_halfway_the_account_says_what_is_outstanding_and_what_is_not_invoiced_yet():
    invoice, _ = invoiced([("pc_1", 25_000)])
    state = fold(evolve_invoice, Invoice(), [invoice])
    ledger = [transaction_for(e) for e in (passed("pc_1", 25_000), passed("pc_2", 10_000), invoice,
                                           *pay(state, 5_000, "TRF-1"))]
    account = accounts_of("col_1", balances(tx for tx in ledger if tx is not None))
    assert (account.invoiced_idr, account.paid_idr, account.outstanding_idr, account.not_invoiced_idr) == (
        25_000, 5_000, 20_000, 10_000)
    assert account.owed_idr == 30_000
    assert [a.collaborator_id for a in collaborators_in(balances(tx for tx in ledger if tx is not None))] == ["col_1"]


def test_invoice_and_payment_postings_touch_no_artisan_and_say_what_they_are_for():
    invoice, _ = invoiced([("pc_1", 25_000)])
    state = fold(evolve_invoice, Invoice(), [invoice])
    [payment] = pay(state, 25_000, "TRF-1")
    tx_invoice, tx_payment = transaction_for(invoice), transaction_for(payment)
    assert tx_invoice is not None and tx_payment is not None
    assert (tx_invoice.kind, tx_invoice.artisan_id, tx_invoice.from_account, tx_invoice.to_account) == (
        domain.Kind.INVOICED, None, "collaborator:col_1:receivable", "collaborator:col_1:fees")
    assert (tx_payment.kind, tx_payment.artisan_id, tx_payment.from_account, tx_payment.to_account) == (
        domain.Kind.RECEIVED, None, "collaborator:col_1:paid", "collaborator:col_1:receivable")
    assert tx_invoice.business_key == f"invoice:{invoice.data.invoice_id}"
    assert isinstance(payment.data, CollaboratorPaid) and tx_payment.subject_id == payment.data.payment_id
    # The digest covers them like any posting: two rows each, and the order of arrival does not matter.
    rows = digest_rows([tx_invoice, tx_payment])
    assert len(rows) == 4 and ledger_digest(rows) == ledger_digest(list(reversed(rows)))


def test_an_overpayment_is_refused_and_so_is_a_second_payment_once_paid_in_full():
    invoice, _ = invoiced([("pc_1", 25_000)])
    state = fold(evolve_invoice, Invoice(), [invoice])
    with pytest.raises(Conflict) as over:
        pay(state, 25_001, "TRF-1")
    assert over.value.code == "overpayment"
    state = fold(evolve_invoice, state, pay(state, 25_000, "TRF-1"))
    with pytest.raises(Conflict) as again:
        pay(state, 1, "TRF-2")
    assert again.value.code == "overpayment"


def test_the_same_payment_again_is_nothing_new_and_its_reference_cannot_name_another():
    invoice, _ = invoiced([("pc_1", 25_000)])
    state = fold(evolve_invoice, Invoice(), [invoice])
    earlier = domain.CollaboratorPayment("cpay_1", 10_000, NOW, "TRF-1")
    assert pay(state, 10_000, "TRF-1", earlier=earlier) == []
    with pytest.raises(Conflict) as reused:
        pay(state, 9_000, "TRF-1", earlier=earlier)
    assert reused.value.code == "payment-reference-reused"


@pytest.mark.parametrize(("amount", "at", "code"), [
    (0, NOW, "amount-not-positive"),
    (1_000, NOW - timedelta(days=1), "received-before-invoiced"),
    (1_000, NOW + timedelta(hours=1), "received-at-in-future"),
])
def test_a_payment_that_cannot_be_is_refused(amount, at, code):
    invoice, _ = invoiced([("pc_1", 25_000)])
    state = fold(evolve_invoice, Invoice(), [invoice])
    with pytest.raises(Refused) as refused:
        pay(state, amount, "TRF-1", at=at)
    assert refused.value.code == code


def test_a_payment_for_no_invoice_is_not_found():
    with pytest.raises(NotFound) as missing:
        pay(Invoice(), 1_000, "TRF-1")
    assert missing.value.code == "invoice-not-found"


def test_an_invoice_takes_only_pieces_of_its_period_and_names_itself_after_collaborator_and_period():
    late = UninvoicedPiece("pc_late", 9_000, PERIOD_END + timedelta(seconds=1))
    data, chosen = plan_invoice(InvoiceCollaborator("col_1", PERIOD_END, NOW),
                                [UninvoicedPiece("pc_2", 2_000, T0 + timedelta(hours=1)), late,
                                 UninvoicedPiece("pc_1", 1_000, T0)])
    assert chosen == ("pc_1", "pc_2")
    assert (data.amount_idr, data.pieces) == (3_000, 2)
    assert data.invoice_id == domain.invoice_id_for("col_1", PERIOD_END.astimezone(WIB))
    # The same period, written with another offset, is the same invoice; another period another one.
    assert domain.invoice_id_for("col_1", PERIOD_END.astimezone(UTC)) == data.invoice_id
    assert domain.invoice_id_for("col_1", PERIOD_END - timedelta(days=1)) != data.invoice_id
    assert domain.invoice_id_for("col_2", PERIOD_END) != data.invoice_id


def test_nothing_to_invoice_and_a_period_not_ended_are_refused():
    with pytest.raises(Refused) as nothing:
        plan_invoice(InvoiceCollaborator("col_1", PERIOD_END, NOW), [])
    assert nothing.value.code == "nothing-to-invoice"
    with pytest.raises(Refused) as early:
        plan_invoice(InvoiceCollaborator("col_1", NOW + timedelta(days=1), NOW), [UninvoicedPiece("pc_1", 1, T0)])
    assert early.value.code == "period-not-ended"


def test_an_invoice_stays_within_an_amounts_bound_and_leaves_the_rest_for_the_next():
    pieces = [UninvoicedPiece(f"pc_{i}", MAX_RUPIAH // 2 + 1, T0 + timedelta(minutes=i)) for i in range(3)]
    data, chosen = plan_invoice(InvoiceCollaborator("col_1", PERIOD_END, NOW), pieces)
    assert chosen == ("pc_0",) and data.amount_idr == MAX_RUPIAH // 2 + 1
    assert isinstance(data, CollaboratorInvoiced)
