"""Payout's HTTP API (SPEC §9): parse → command → handler; every error a problem document."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import AfterValidator, AwareDatetime, Field

from services.payout import domain, projections, queries
from services.payout.handlers import PayoutHandlers, RunResult
from shared.contracts.codes import PayoutFailure
from shared.domain import NotFound
from shared.eventstore import PostgresUnitOfWork
from shared.service import ServiceRuntime
from shared.timeutil import to_wib
from shared.web.access import AUDITOR, STAFF, Access, Principal
from shared.web.commands import Outcome, command_runner
from shared.web.inputs import CommandBody, Id, IdempotencyKey, LookupId, ShortLabel, Text
from shared.web.openapi import also_ok, problems
from shared.web.pages import DEFAULT_LIMIT, LIST_RESPONSES, Cursor, Limit, page


def _plausible(moment: datetime) -> datetime:
    # Years far outside the programme's life are typos, and the extremes overflow on conversion.
    if not 2000 <= moment.year <= 2999:
        raise ValueError("must be a moment between the years 2000 and 2999")
    return to_wib(moment)


#: A moment with its UTC offset, e.g. 2024-03-31T23:59:59+07:00; kept in WIB.
Moment = Annotated[AwareDatetime, AfterValidator(_plausible)]
PathId = LookupId


class StartRun(CommandBody):
    run_id: Id = Field(description="Your id for this run; starting it again answers the same payouts.",
                       examples=["2024-03"])
    period_end: Moment = Field(description="Pay earnings whose QC passed at or before this moment.",
                               examples=["2024-03-31T23:59:59+07:00"])
    rusunawa: ShortLabel | None = Field(
        default=None, description="Pay only the residents registered in this rusunawa (default: everyone).",
        examples=["Rusunawa Nagrak"])
    run_at: Moment | None = Field(
        default=None, description="When the run was made (business time): its payouts are scheduled then. "
                                  "At or after period_end, not in the future; default: now.",
        examples=["2024-04-01T10:00:00+07:00"])


class ConfirmPayment(CommandBody):
    method: ShortLabel = Field(examples=["bank-transfer"])
    reference: Text = Field(description="The bank's or e-wallet's transfer reference. Kept in payout's database "
                                        "only: the `paid` event carries an opaque reference of payout's own.",
                            examples=["TRF-0001"])
    paid_at: Moment = Field(description="When the money was sent.")


class FailPayout(CommandBody):
    reason: PayoutFailure = Field(description="Why, as a code (SPEC §7: no free text reaches a topic).",
                                  examples=["account-closed"])
    failed_at: Moment | None = Field(
        default=None, description="When the transfer was refused (business time): at or after the payout was "
                                  "scheduled, not in the future; default: now.",
        examples=["2024-04-01T15:00:00+07:00"])


AsOf = Annotated[Moment | None, Query(description="Cut by the events' own time (inclusive); default: everything.")]
AsKnownAt = Annotated[Moment | None, Query(description=(
    "Cut by recording time (inclusive): only what was on the topics by this moment, as the ledger knew it "
    "then; `anyam replay --as-known-at` gives the same from the topics alone. Default: everything recorded."))]


def payout_router(runtime: ServiceRuntime, handlers: PayoutHandlers, access: Access) -> APIRouter:
    router = APIRouter(tags=["payout"])
    staff = access.allow(STAFF)
    reader = access.allow(STAFF, AUDITOR)

    run = command_runner(lambda: runtime.pool)

    @router.post("/payout-runs", status_code=201,
                 responses=also_ok("A run with this run_id was already started: its payouts."),
                 summary="Schedule what each artisan earned up to period_end and was not yet scheduled")
    async def start_run(
        body: StartRun, request: Request, key: IdempotencyKey = None, who: Principal = Depends(staff)
    ) -> Response:
        async def action(uow: PostgresUnitOfWork) -> Outcome:
            new, result = await handlers.run_payouts(uow, body.run_id, body.period_end, body.run_at, body.rusunawa)
            return Outcome(201 if new else 200, _run_body(result))

        return await run(request, who, key, body.model_dump(mode="json"), action)

    @router.post("/payouts/{payout_id}/confirmation", status_code=201, responses={**also_ok(), **problems(404)},
                 summary="Record a payout as paid")
    async def confirm(
        payout_id: PathId, body: ConfirmPayment, request: Request, key: IdempotencyKey = None,
        who: Principal = Depends(staff),
    ) -> Response:
        async def action(uow: PostgresUnitOfWork) -> Outcome:
            new, payout = await handlers.confirm(uow, payout_id, body.method, body.reference, body.paid_at)
            return Outcome(201 if new else 200, _payout_body(payout))

        return await run(request, who, key, body.model_dump(mode="json"), action)

    @router.post("/payouts/{payout_id}/failure", status_code=201, responses={**also_ok(), **problems(404)},
                 summary="Record a payout as failed; its money returns to payable")
    async def fail(
        payout_id: PathId, body: FailPayout, request: Request, key: IdempotencyKey = None,
        who: Principal = Depends(staff),
    ) -> Response:
        async def action(uow: PostgresUnitOfWork) -> Outcome:
            new, payout = await handlers.fail(uow, payout_id, body.reason, body.failed_at)
            return Outcome(201 if new else 200, _payout_body(payout))

        return await run(request, who, key, body.model_dump(mode="json"), action)

    @router.get("/payouts/{payout_id}", responses=problems(404), summary="A payout and how it ended")
    async def get_payout(payout_id: PathId, _: Principal = Depends(reader)) -> JSONResponse:
        async with runtime.pool.acquire() as conn:
            return JSONResponse(_payout_body(await handlers.payout(PostgresUnitOfWork(conn), payout_id)))

    @router.get("/payouts", responses=LIST_RESPONSES,
                summary="Payouts, in the order their runs were made (filters and pages: docs/http.md)")
    async def list_payouts(
        run_id: Annotated[Id | None, Query(description="Only this run's payouts.")] = None,
        artisan_id: Annotated[Id | None, Query(description="Only this artisan's payouts.")] = None,
        status: Annotated[Literal["scheduled", "paid", "failed"] | None, Query(description=(
            "Only payouts that are `scheduled` (in transit), `paid` or `failed`."))] = None,
        limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None, _: Principal = Depends(reader),
    ) -> JSONResponse:
        after = queries.key_after(queries.PAYOUTS, cursor)
        rows = await queries.payouts(runtime.pool, queries.PayoutFilter(run_id, artisan_id, status), after=after,
                                     limit=limit + 1)
        return JSONResponse(page(rows, limit, queries.PAYOUTS))

    @router.get("/payout-runs", responses=LIST_RESPONSES,
                summary="Payout runs, in the order they were made, with their payouts' count and total")
    async def list_runs(limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None,
                        _: Principal = Depends(reader)) -> JSONResponse:
        after = queries.key_after(queries.RUNS, cursor)
        rows = await queries.runs(runtime.pool, after=after, limit=limit + 1)
        return JSONResponse(page(rows, limit, queries.RUNS))

    @router.get("/artisans/{artisan_id}/statement", responses=problems(404),
                summary="An artisan's ledger entries and balances")
    async def get_statement(artisan_id: PathId, as_of: AsOf = None, as_known_at: AsKnownAt = None,
                            _: Principal = Depends(reader)) -> JSONResponse:
        async with runtime.pool.acquire() as conn, conn.transaction(readonly=True, isolation="repeatable_read"):
            if not await projections.has_entries(conn, artisan_id):
                raise NotFound("artisan-not-in-ledger",
                               f"The ledger has no entries for artisan {artisan_id}: no piece of theirs passed QC.")
            statement = await projections.statement(conn, artisan_id, as_of, as_known_at)
        return JSONResponse({
            "artisan_id": artisan_id,
            "as_of": _iso(as_of),
            "as_known_at": _iso(as_known_at),
            "balances": {
                "earned_idr": statement.earned_idr, "payable_idr": statement.payable_idr,
                "in_transit_idr": statement.in_transit_idr, "paid_idr": statement.paid_idr,
            },
            "entries": [
                {
                    "transaction_id": e.transaction_id, "kind": e.kind, "account": e.account,
                    "amount_idr": e.amount_idr, "event_id": e.event_id, "event_type": e.event_type,
                    "event_time": _iso(e.event_time),
                    ("piece_id" if e.kind == domain.Kind.EARNED else "payout_id"): e.subject_id,
                }
                for e in statement.entries
            ],
        })

    @router.get("/ledger/balances", summary="Every account's balance as of a moment (or one rusunawa's artisans')")
    async def get_balances(
        as_of: AsOf = None, as_known_at: AsKnownAt = None,
        rusunawa: Annotated[ShortLabel | None, Query(
            description="Only the accounts of the artisans registered in this rusunawa (default: every account).",
        )] = None,
        _: Principal = Depends(reader),
    ) -> JSONResponse:
        async with runtime.pool.acquire() as conn, conn.transaction(readonly=True, isolation="repeatable_read"):
            accounts = await projections.balances(conn, as_of, as_known_at)
            if rusunawa is not None:
                residents = await projections.residents_of(conn, rusunawa)
                accounts = {account: balance for account, balance in accounts.items()
                            if domain.artisan_of(account) in residents}
        return JSONResponse({"as_of": _iso(as_of), "as_known_at": _iso(as_known_at), "rusunawa": rusunawa,
                             "accounts": accounts})

    @router.get("/ledger/digest", summary="The ledger's SHA-256 digest as of a moment")
    async def get_digest(as_of: AsOf = None, as_known_at: AsKnownAt = None,
                         _: Principal = Depends(reader)) -> JSONResponse:
        async with runtime.pool.acquire() as conn:
            result = await projections.ledger_digest(conn, as_of, as_known_at)
        return JSONResponse({"as_of": _iso(as_of), "as_known_at": _iso(as_known_at), "algorithm": "sha256",
                             "digest": result.digest,
                             "transactions": result.transactions, "postings": result.postings})

    return router


def _iso(moment: datetime | None) -> str | None:
    return to_wib(moment).isoformat() if moment is not None else None


def _run_body(result: RunResult) -> dict[str, Any]:
    return {
        "run_id": result.run_id,
        "period_end": _iso(result.period_end),
        "payouts": [{"payout_id": p.payout_id, "artisan_id": p.artisan_id, "amount_idr": p.amount_idr}
                    for p in result.payouts],
        "total_idr": result.total_idr,
    }


def _payout_body(payout: domain.Payout) -> dict[str, Any]:
    body: dict[str, Any] = {
        "payout_id": payout.payout_id, "run_id": payout.run_id, "artisan_id": payout.artisan_id,
        "amount_idr": payout.amount_idr, "status": payout.status.value, "scheduled_at": _iso(payout.scheduled_at),
    }
    if payout.payment is not None:
        body["payment"] = {"method": payout.payment.method,
                           "reference": payout.bank_reference or payout.payment.reference,
                           "payment_reference": payout.payment.reference, "paid_at": _iso(payout.payment.paid_at)}
    if payout.failure is not None:
        body["failure_reason"] = payout.failure.reason
    return body
