"""Payout's HTTP API for money in and out (issue 29): collaborator invoices and payments, what a collaborator
owes, a payout run's payouts (what enrollment writes the bank file from) and the bank's results file."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import Field

from services.payout import domain, invoicing, results
from services.payout.handlers import PayoutHandlers
from services.payout.http import Moment
from services.payout.invoicing import InvoiceHandlers
from shared.domain import NotFound
from shared.eventstore import PostgresUnitOfWork
from shared.service import ServiceRuntime
from shared.timeutil import to_wib
from shared.web.access import AUDITOR, STAFF, Access, Principal
from shared.web.commands import Outcome, command_runner
from shared.web.inputs import CommandBody, IdempotencyKey, LookupId, Rupiah, Text
from shared.web.openapi import also_ok, problems
from shared.web.problems import Problem

AsOf = Annotated[Moment | None, Query(description="Cut by the events' own time (inclusive); default: everything.")]
#: The media type of a bank's results file.
CSV = "text/csv"


class InvoiceCollaborator(CommandBody):
    collaborator_id: LookupId = Field(examples=["col_01HQ5Z2K8J"])
    period_end: Moment = Field(description="Invoice the fees of pieces that passed QC at or before this moment and "
                                           "that no earlier invoice asked for. The same collaborator and "
                                           "period_end again answers the same invoice.",
                               examples=["2024-03-31T23:59:59+07:00"])


class RecordPayment(CommandBody):
    amount_idr: Annotated[Rupiah, Field(ge=1)] = Field(description="What was received, in whole rupiah; at most "
                                                                   "what the invoice still asks for.")
    received_at: Moment = Field(description="When the money arrived in the programme's account.")
    reference: Text = Field(description="The bank's reference for the transfer. Kept in payout's database only "
                                        "(it never reaches a topic); the same reference, amount and moment "
                                        "again is the same payment.", examples=["TRF-IN-0042"])


def money_router(runtime: ServiceRuntime, payouts: PayoutHandlers, invoices: InvoiceHandlers,
                 access: Access) -> APIRouter:
    router = APIRouter(tags=["money"])
    staff = access.allow(STAFF)
    reader = access.allow(STAFF, AUDITOR)
    run = command_runner(lambda: runtime.pool)

    @router.post("/collaborator-invoices", status_code=201, responses={**also_ok("This period was invoiced "
                 "before: its invoice."), **problems(409)},
                 summary="Invoice a collaborator for its passed pieces up to period_end not invoiced yet")
    async def invoice(
        body: InvoiceCollaborator, request: Request, key: IdempotencyKey = None, who: Principal = Depends(staff)
    ) -> Response:
        async def action(uow: PostgresUnitOfWork) -> Outcome:
            new, state = await invoices.invoice(uow, body.collaborator_id, body.period_end)
            return Outcome(201 if new else 200, _invoice_body(state))

        return await run(request, who, key, body.model_dump(mode="json"), action)

    @router.get("/collaborator-invoices/{invoice_id}", responses=problems(404),
                summary="An invoice and the payments received against it")
    async def get_invoice(invoice_id: LookupId, _: Principal = Depends(reader)) -> JSONResponse:
        async with runtime.pool.acquire() as conn:
            return JSONResponse(_invoice_body(await invoices.get(PostgresUnitOfWork(conn), invoice_id)))

    @router.post("/collaborator-invoices/{invoice_id}/payments", status_code=201,
                 responses={**also_ok("This payment (reference, amount, moment) was recorded before."),
                            **problems(404, 409)},
                 summary="Record money a collaborator paid against an invoice (in part or in full)")
    async def record_payment(
        invoice_id: LookupId, body: RecordPayment, request: Request, key: IdempotencyKey = None,
        who: Principal = Depends(staff),
    ) -> Response:
        async def action(uow: PostgresUnitOfWork) -> Outcome:
            new, state, payment_id = await invoices.record_payment(
                uow, invoice_id, body.amount_idr, body.received_at, body.reference)
            return Outcome(201 if new else 200, {"payment_id": payment_id, **_invoice_body(state)})

        return await run(request, who, key, body.model_dump(mode="json"), action)

    @router.get("/collaborators/{collaborator_id}/account", responses=problems(404),
                summary="What a collaborator was invoiced, paid, still owes and was not yet invoiced for")
    async def get_account(collaborator_id: LookupId, as_of: AsOf = None,
                          _: Principal = Depends(reader)) -> JSONResponse:
        async with runtime.pool.acquire() as conn, conn.transaction(readonly=True, isolation="repeatable_read"):
            balances = await invoicing.collaborator_balances(conn, collaborator_id, as_of)
            rows = await invoicing.invoices_of(conn, collaborator_id)
        if not balances and not rows:
            raise NotFound("collaborator-not-in-ledger",
                           f"The ledger has nothing for collaborator {collaborator_id}: no piece of its passed QC.")
        account = invoicing.accounts_of(collaborator_id, balances)
        return JSONResponse({
            "collaborator_id": collaborator_id, "as_of": _iso(as_of),
            "invoiced_idr": account.invoiced_idr, "paid_idr": account.paid_idr,
            "outstanding_idr": account.outstanding_idr, "not_invoiced_idr": account.not_invoiced_idr,
            "owed_idr": account.owed_idr,
            "invoices": [{"invoice_id": r["invoice_id"], "period_end": _iso(r["period_end"]),
                          "amount_idr": r["amount_idr"], "pieces": r["pieces"], "invoiced_at": _iso(r["invoiced_at"]),
                          "paid_idr": int(r["paid_idr"]), "outstanding_idr": r["amount_idr"] - int(r["paid_idr"]),
                          "payments": r["payments"]} for r in rows],
        })

    @router.get("/payout-runs/{run_id}", responses=problems(404),
                summary="A payout run's payouts and where each stands (what the bank file is written from)")
    async def get_run(run_id: LookupId, _: Principal = Depends(reader)) -> JSONResponse:
        async with runtime.pool.acquire() as conn, conn.transaction(readonly=True, isolation="repeatable_read"):
            period_end = await conn.fetchval("SELECT period_end FROM payout_runs WHERE run_id = $1", run_id)
            rows = await conn.fetch(
                """SELECT payout_id, artisan_id, amount_idr, status FROM payouts WHERE run_id = $1
                   ORDER BY artisan_id, payout_id""", run_id)
        if period_end is None:
            raise NotFound("run-not-found", f"There is no payout run {run_id}.")
        return JSONResponse({"run_id": run_id, "period_end": _iso(period_end),
                             "payouts": [dict(row) for row in rows],
                             "total_idr": sum(row["amount_idr"] for row in rows)})

    @router.post(
        "/payout-runs/{run_id}/results", responses=problems(404),
        summary="Import a bank's results file for a run: each row confirms or fails one payout, idempotently",
        openapi_extra={"requestBody": {"required": True, "description": (
            "UTF-8 CSV with the header `payout_id,status,bank_reference,failure_code,paid_at` "
            f"(at most {results.MAX_ROWS:,} rows; docs/money.md)."),
            "content": {CSV: {"schema": {"type": "string"}}}}},
    )
    async def import_results(
        run_id: LookupId, request: Request, key: IdempotencyKey = None, who: Principal = Depends(staff)
    ) -> Response:
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type not in (CSV, "text/plain"):
            raise Problem(422, "not-csv", "Send the results file as text/csv.")
        body = await request.body()
        rows = results.parse(body)

        async def action(uow: PostgresUnitOfWork) -> Outcome:
            if await uow.connection.fetchval("SELECT true FROM payout_runs WHERE run_id = $1", run_id) is None:
                raise NotFound("run-not-found", f"There is no payout run {run_id}.")
            outcomes = await results.apply(uow, payouts, run_id, rows)
            counts = {kind: sum(1 for o in outcomes if o.outcome == kind) for kind in ("accepted", "already",
                                                                                       "refused")}
            return Outcome(200, {"run_id": run_id, **counts, "rows": [o.to_json() for o in outcomes]})

        # The file's digest stands for it in the request's fingerprint: a key reused for another file is caught.
        return await run(request, who, key, {"sha256": hashlib.sha256(body).hexdigest()}, action)

    return router


def _iso(moment: datetime | None) -> str | None:
    return to_wib(moment).isoformat() if moment is not None else None


def _invoice_body(invoice: domain.Invoice) -> dict[str, Any]:
    return {
        "invoice_id": invoice.invoice_id, "collaborator_id": invoice.collaborator_id,
        "period_end": _iso(invoice.period_end), "amount_idr": invoice.amount_idr, "pieces": invoice.pieces,
        "invoiced_at": _iso(invoice.invoiced_at), "paid_idr": invoice.paid_idr,
        "outstanding_idr": invoice.outstanding_idr,
        "payments": [{"payment_id": p.payment_id, "amount_idr": p.amount_idr, "received_at": _iso(p.received_at),
                      "reference": p.reference} for p in invoice.payments],
    }
