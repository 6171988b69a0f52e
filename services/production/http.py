"""Production's HTTP API (SPEC §9): parse → command → handler; every error a problem document."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from datetime import date, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import AfterValidator, AwareDatetime, Field, StrictInt, StringConstraints

from services.production import domain, materials, projections
from services.production.domain import WRONG_COLLABORATOR, SubmissionRejected
from services.production.handlers import EARLIEST_YEAR, LATEST_YEAR, ProductionHandlers, parse_submission
from shared.contracts.events import MAX_QUANTITY_PER_PIECE, QcPassed, QcSubmitted
from shared.eventstore import DeadLetterPublisher, PostgresUnitOfWork
from shared.ids import new_event_id
from shared.materials import Reconciliation, reconcile
from shared.service import ServiceRuntime
from shared.timeutil import to_wib, wib_now
from shared.web.access import AUDITOR, COLLABORATOR, MAX_CLOCK_SKEW_SECONDS, STAFF, Access, Principal
from shared.web.commands import Outcome, command_runner
from shared.web.inputs import NAMES_A_THING, STORABLE, CommandBody, Id, IdempotencyKey, Label, Rupiah, line
from shared.web.openapi import also_ok, problems
from shared.web.pages import DEFAULT_LIMIT, LIST_RESPONSES, Cursor, Limit, page, position_after
from shared.web.problems import Problem

log = logging.getLogger(__name__)

#: Our ids (`col_…`, `pc_…`, enrollment's `res_…`) are short and printable; anything else cannot
#: name a record, and refusing it up front keeps NULs and control characters out of every query.
Short = Annotated[str, line(50), STORABLE, NAMES_A_THING]  # a label: products and units of measure


def _ed25519_public_key(value: str) -> str:
    try:
        raw = base64.b64decode(value, validate=True)
    except binascii.Error:
        raise ValueError("public_key must be base64") from None
    if len(raw) != 32:
        raise ValueError(f"public_key must be base64 of the 32 raw bytes of an Ed25519 key, not {len(raw)} bytes")
    return value


def _business_time(value: datetime) -> datetime:
    if not EARLIEST_YEAR <= value.year <= LATEST_YEAR:
        raise ValueError(f"must lie in the years {EARLIEST_YEAR} to {LATEST_YEAR}")
    return to_wib(value)


PublicKey = Annotated[str, StringConstraints(max_length=100), AfterValidator(_ed25519_public_key)]
BusinessTime = Annotated[AwareDatetime, AfterValidator(_business_time)]


_VALID_FROM = ("From when the key signs for the collaborator, by a submission's `inspected_at` (RFC 3339 with an "
               "offset; default: now). An earlier moment is a staff decision, recorded on the event.")


class RegisterCollaborator(CommandBody):
    name: Label = Field(examples=["PT Anyaman Nusantara"])
    public_key: PublicKey = Field(description="Ed25519 public key: base64 of its 32 raw bytes.")
    valid_from: BusinessTime | None = Field(default=None, description=_VALID_FROM)


class AddKey(CommandBody):
    public_key: PublicKey = Field(description="A further Ed25519 public key (base64 of 32 bytes); older keys stay.")
    valid_from: BusinessTime | None = Field(default=None, description=_VALID_FROM)


class RevokeKey(CommandBody):
    public_key: PublicKey = Field(description="The registered key to revoke (base64 of 32 bytes).")
    revoked_from: BusinessTime | None = Field(
        default=None, description="Submissions received from this moment on are refused (default: now); results "
                                  "accepted before it stay valid, and `anyam verify` names any accepted after it.")


class RevokeTokens(CommandBody):
    revoked_before: BusinessTime | None = Field(
        default=None, description="The collaborator's HTTP tokens issued before this moment stop working, from "
                                  "the next request on (RFC 3339 with an offset; default: now). Taken to the whole "
                                  "second, as tokens are stamped; it may not lie in the future.")


class SetRate(CommandBody):
    product: Short = Field(examples=["piring"])
    # Narrower than every amount's bound (`Rupiah`: at most Rp 1 trillion, SPEC §5), never wider.
    rate_idr: Annotated[Rupiah, Field(ge=1, le=100_000_000)] = Field(
        description="Whole rupiah paid per piece that passes QC.")
    effective_from: BusinessTime = Field(description="From when the rate applies (RFC 3339 with an offset).")


class SetMaterialUsage(CommandBody):
    product: Short = Field(examples=["piring"])
    material: Label = Field(examples=["rotan sintetis"])
    unit: Short = Field(examples=["g"], description="The unit the material is counted in; issue it in the same "
                        "unit, or the issues and the usage are not compared (docs/materials.md).")
    quantity_per_piece: StrictInt = Field(
        ge=0, le=MAX_QUANTITY_PER_PIECE, description="Whole units of the material one piece needs (choose a unit "
        "small enough: grams, not kilograms); 0: the product no longer uses it.")
    effective_from: BusinessTime = Field(description="From when the usage applies, by a piece's `woven_at` "
                                                     "(RFC 3339 with an offset).")


class IssueMaterials(CommandBody):
    artisan_id: Id
    collaborator_id: Id
    material: Label = Field(examples=["rotan sintetis"])
    quantity: StrictInt = Field(ge=1, le=1_000_000)
    unit: Short = Field(examples=["kg"])


class WeavePiece(CommandBody):
    artisan_id: Id
    collaborator_id: Id
    product: Short = Field(examples=["piring"])
    woven_at: BusinessTime = Field(description="When the piece was finished (RFC 3339 with an offset).")



#: `POST /qc-submissions` reads its body itself (the signature covers the bytes as sent), so the
#: document's schema is declared here, from the same model the topic's consumer validates with.
SUBMISSION_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": QcSubmitted.model_json_schema()}},
    }
}
HTTP_SUBMISSIONS = "production-http"
DEAD_LETTER_TIMEOUT_SECONDS = 10.0


def production_router(
    runtime: ServiceRuntime, handlers: ProductionHandlers, access: Access, *, rejections_per_minute: int = 60,
    idle_weeks: int = 4,
) -> APIRouter:
    router = APIRouter(tags=["production"])
    staff = access.allow(STAFF)
    reader = access.allow(STAFF, AUDITOR)
    submitter = access.allow(STAFF, COLLABORATOR)
    feedback_reader = access.allow(STAFF, AUDITOR, COLLABORATOR)

    run = command_runner(lambda: runtime.pool)

    @router.post("/collaborators", status_code=201, summary="Register a collaborator company and its signing key")
    async def register_collaborator(
        body: RegisterCollaborator, request: Request, key: IdempotencyKey = None, who: Principal = Depends(staff)
    ) -> Response:
        async def action(uow: PostgresUnitOfWork) -> Outcome:
            collaborator_id = await handlers.register_collaborator(uow, body.name, body.public_key, body.valid_from)
            return Outcome(201, {"collaborator_id": collaborator_id})

        return await run(request, who, key, body.model_dump(mode="json"), action, one_statement=True)

    @router.post("/collaborators/{collaborator_id}/keys", status_code=201, responses={**also_ok(), **problems(404)},
                 summary="Add a signing key (rotation); results signed with older keys stay verifiable")
    async def add_key(
        collaborator_id: Id, body: AddKey, request: Request, key: IdempotencyKey = None,
        who: Principal = Depends(staff),
    ) -> Response:
        async def action(uow: PostgresUnitOfWork) -> Outcome:
            added = await handlers.add_key(uow, collaborator_id, body.public_key, body.valid_from)
            state = await handlers.collaborator_state(uow, collaborator_id)
            return Outcome(201 if added else 200, _collaborator_json(state))

        return await run(request, who, key, body.model_dump(mode="json"), action)

    @router.post("/collaborators/{collaborator_id}/key-revocations", status_code=201,
                 responses={**also_ok(), **problems(404)},
                 summary="Revoke a signing key from a moment on (a stolen or retired key)")
    async def revoke_key(
        collaborator_id: Id, body: RevokeKey, request: Request, key: IdempotencyKey = None,
        who: Principal = Depends(staff),
    ) -> Response:
        async def action(uow: PostgresUnitOfWork) -> Outcome:
            revoked = await handlers.revoke_key(uow, collaborator_id, body.public_key, body.revoked_from)
            state = await handlers.collaborator_state(uow, collaborator_id)
            return Outcome(201 if revoked else 200, _collaborator_json(state))

        return await run(request, who, key, body.model_dump(mode="json"), action)

    @router.post("/collaborators/{collaborator_id}/token-revocations", status_code=201,
                 responses={**also_ok(), **problems(404)},
                 summary="Revoke a collaborator's HTTP tokens issued before a moment (a leaked token)")
    async def revoke_tokens(
        collaborator_id: Id, request: Request, body: RevokeTokens | None = None, key: IdempotencyKey = None,
        who: Principal = Depends(staff),
    ) -> Response:
        body = body or RevokeTokens()

        async def action(uow: PostgresUnitOfWork) -> Outcome:
            # Access control, not business history: a row of production's, no event (docs/tokens.md).
            if not (await handlers.collaborator_state(uow, collaborator_id)).exists:
                raise Problem(404, "collaborator-not-found", f"There is no collaborator {collaborator_id}.")
            now = handlers.clock()
            before = body.revoked_before or now
            if before > now + timedelta(seconds=MAX_CLOCK_SKEW_SECONDS):
                # Revocations are never loosened: a moment in the future would lock the collaborator out
                # until then, with no way back.
                raise Problem(422, "revocation-in-the-future",
                              "revoked_before may not lie in the future; leave it out to revoke from now.")
            moment, moved = await projections.revoke_tokens(
                uow.connection, collaborator_id, before.replace(microsecond=0))
            return Outcome(201 if moved else 200,
                           {"collaborator_id": collaborator_id, "revoked_before": to_wib(moment).isoformat()})

        return await run(request, who, key, body.model_dump(mode="json"), action)

    @router.post("/collaborators/{collaborator_id}/rates", status_code=201, responses={**also_ok(), **problems(404)},
                 summary="Set a collaborator's piece rate for a product from a moment on")
    async def set_rate(
        collaborator_id: Id, body: SetRate, request: Request, key: IdempotencyKey = None,
        who: Principal = Depends(staff),
    ) -> Response:
        async def action(uow: PostgresUnitOfWork) -> Outcome:
            command = domain.SetRate(collaborator_id=collaborator_id, **body.model_dump())
            new = await handlers.set_rate(uow, command)
            return Outcome(201 if new else 200, {"collaborator_id": collaborator_id, **body.model_dump(mode="json")})

        return await run(request, who, key, body.model_dump(mode="json"), action)

    @router.post("/collaborators/{collaborator_id}/material-usages", status_code=201,
                 responses={**also_ok(), **problems(404, 409)},
                 summary="Set how much of a material one piece of a product needs, from a moment on")
    async def set_material_usage(
        collaborator_id: Id, body: SetMaterialUsage, request: Request, key: IdempotencyKey = None,
        who: Principal = Depends(staff),
    ) -> Response:
        async def action(uow: PostgresUnitOfWork) -> Outcome:
            command = domain.SetMaterialUsage(collaborator_id=collaborator_id, **body.model_dump())
            new = await handlers.set_material_usage(uow, command)
            return Outcome(201 if new else 200, {"collaborator_id": collaborator_id, **body.model_dump(mode="json")})

        return await run(request, who, key, body.model_dump(mode="json"), action)

    @router.get("/materials/reconciliation",
                summary="Materials issued beside what the pieces woven needed, per artisan and collaborator, "
                        "with anomalies flagged")
    async def get_reconciliation(
        collaborator_id: Annotated[Id | None, Query(description="Only this collaborator's.")] = None,
        artisan_id: Annotated[Id | None, Query(description="Only this artisan's.")] = None,
        as_of: Annotated[date | None, Query(description="Reconcile as of the end of this day (WIB; default "
                                                         "today): later facts are left out, and idleness is "
                                                         "counted back from it.")] = None,
        _: Principal = Depends(reader),
    ) -> JSONResponse:
        day = as_of or wib_now().date()
        if not EARLIEST_YEAR <= day.year <= LATEST_YEAR:
            raise Problem(422, "invalid-as-of", f"as_of must lie in the years {EARLIEST_YEAR} to {LATEST_YEAR}.")
        await materials.catch_up(runtime.pool)
        async with runtime.pool.acquire() as conn:
            usages, issues, pieces = await materials.facts(conn, collaborator_id=collaborator_id,
                                                           artisan_id=artisan_id)
        return JSONResponse(reconciliation_json(reconcile(usages, issues, pieces, as_of=day,
                                                          idle_weeks=idle_weeks)))

    @router.post("/material-issues", status_code=201, responses=problems(404),
                 summary="Issue raw materials to a trained resident")
    async def issue_materials(
        body: IssueMaterials, request: Request, key: IdempotencyKey = None, who: Principal = Depends(staff)
    ) -> Response:
        async def action(uow: PostgresUnitOfWork) -> Outcome:
            issued = await handlers.issue_materials(uow, **body.model_dump())
            return Outcome(201, issued.model_dump(mode="json"))

        return await run(request, who, key, body.model_dump(mode="json"), action, one_statement=True)

    @router.post("/pieces", status_code=201, responses=problems(404),
                 summary="Record a woven piece at the rate in force when it was woven")
    async def weave(
        body: WeavePiece, request: Request, key: IdempotencyKey = None, who: Principal = Depends(staff)
    ) -> Response:
        async def action(uow: PostgresUnitOfWork) -> Outcome:
            woven = await handlers.weave(uow, **body.model_dump())
            return Outcome(201, woven.model_dump(mode="json"))

        # Reads, then appends to a stream it just named: nothing to lock, nothing else written.
        return await run(request, who, key, body.model_dump(mode="json"), action, one_statement=True)

    @router.post("/qc-submissions", status_code=201, openapi_extra=SUBMISSION_BODY,
                 responses={**also_ok("Already recorded: the piece's result, as it stands."), **problems(404, 429)},
                 summary="Submit a signed QC result (the `data` of a `qc-submitted` event)")
    async def submit(request: Request, key: IdempotencyKey = None, who: Principal = Depends(submitter)) -> Response:
        if who.role == COLLABORATOR:
            await _refuse_while_rejected_too_often(who)
        body = await request.body()

        async def action(uow: PostgresUnitOfWork) -> Outcome:
            try:
                submission, raw = parse_submission(body)
                if who.role == COLLABORATOR and submission.collaborator_id != who.collaborator_id:
                    raise SubmissionRejected(
                        WRONG_COLLABORATOR,
                        f"This token is {who.name}'s; it may only submit results for {who.collaborator_id}.",
                    )
                outcome = await handlers.judge(uow, submission, raw)
            except SubmissionRejected as rejected:
                await _note_rejection(uow.connection, who, body, rejected)
                return Outcome(rejected.status, Problem(rejected.status, rejected.code, rejected.message).body())
            return Outcome(201 if outcome.recorded_now else 200, _result_json(outcome.result))

        return await run(request, who, key, body.decode("utf-8", "replace"), action)

    async def _refuse_while_rejected_too_often(who: Principal) -> None:
        """429 while the collaborator's submissions were refused too often lately: each refusal costs a
        row of feedback and a dead letter, so a client sending garbage in a loop must not grow them."""
        assert who.collaborator_id is not None  # a collaborator's principal names it
        async with runtime.pool.acquire() as conn:
            wait = await projections.seconds_until_rejections_allowed(
                conn, who.collaborator_id, per_minute=rejections_per_minute)
        if wait:
            raise Problem(429, "too-many-rejections",
                          f"{rejections_per_minute} of your submissions were refused in the last minute; read "
                          f"GET /collaborators/{who.collaborator_id}/rejections and retry in {wait} s.",
                          headers={"Retry-After": str(wait)})

    async def _note_rejection(conn, who: Principal, body: bytes, rejected: SubmissionRejected) -> None:
        """Feedback for the collaborator, and a dead letter like the topic's (SPEC §7: every rejection)."""
        claimed = _claimed_ids(body)
        # A collaborator is who its token says; staff act for whichever collaborator the data names.
        collaborator_id = who.collaborator_id or claimed.get("collaborator_id")
        if collaborator_id is not None:
            await projections.record_rejection(conn, projections.Rejection(
                collaborator_id=collaborator_id, submission_id=claimed.get("submission_id"),
                piece_id=claimed.get("piece_id"), reason=rejected.reason, detail=rejected.message, channel="http",
                source=f"POST /qc-submissions by {who.name}",
            ))
        dead_letters = DeadLetterPublisher(
            runtime.producer, topic_prefix=runtime.settings.topic_prefix, consumer=HTTP_SUBMISSIONS
        )
        piece_id = claimed.get("piece_id")
        value, headers = domain.refused_submission_event(
            body, reason=rejected.reason, collaborator_id=collaborator_id, event_id=new_event_id(),
            received_at=handlers.clock())
        try:
            await asyncio.wait_for(dead_letters.publish(
                reason=rejected.reason, detail=rejected.message, topic="http:POST /qc-submissions", partition=-1,
                offset=-1, key=piece_id.encode("utf-8", "replace") if piece_id else None, value=value,
                headers=headers,
            ), DEAD_LETTER_TIMEOUT_SECONDS)
        except Exception as exc:  # noqa: BLE001 - the caller has its answer and the row is kept: don't fail it
            log.warning("a rejected HTTP submission could not be dead-lettered (%s)", type(exc).__name__)

    @router.get("/collaborators/{collaborator_id}", responses=problems(404),
                summary="A collaborator: its keys and piece rates")
    async def get_collaborator(collaborator_id: Id, _: Principal = Depends(reader)) -> JSONResponse:
        async with runtime.pool.acquire() as conn:
            state = await handlers.collaborator_state(PostgresUnitOfWork(conn), collaborator_id)
        if not state.exists:
            raise Problem(404, "collaborator-not-found", f"There is no collaborator {collaborator_id}.")
        return JSONResponse({
            **_collaborator_json(state),
            "rates": {
                product: [{"effective_from": r.effective_from.isoformat(), "rate_idr": r.rate_idr} for r in rates]
                for product, rates in sorted(state.rates.items())
            },
            "material_usages": [
                {"product": product, "material": material, "unit": u.unit, "quantity_per_piece": u.quantity_per_piece,
                 "effective_from": u.effective_from.isoformat()}
                for (product, material), usages in sorted(state.usages.items()) for u in usages
            ],
        })

    @router.get("/collaborators/{collaborator_id}/rejections",
                summary="A collaborator's rejected QC submissions, newest first, with the reasons")
    async def get_rejections(
        collaborator_id: Id, limit: Annotated[int, Query(ge=1, le=500)] = 100,
        who: Principal = Depends(feedback_reader),
    ) -> JSONResponse:
        if who.role == COLLABORATOR and who.collaborator_id != collaborator_id:
            raise Problem(403, "forbidden", "A collaborator may read only its own rejected submissions.")
        async with runtime.pool.acquire() as conn:
            rejections = await projections.rejections_of(conn, collaborator_id, limit=limit)
        return JSONResponse({"collaborator_id": collaborator_id,
                             "rejections": [rejection.as_json() for rejection in rejections]})

    @router.get("/pieces", responses=LIST_RESPONSES,
                summary="Pieces, in the order recorded, with their QC verdict (a collaborator: its own only)")
    async def list_pieces(
        artisan_id: Annotated[Id | None, Query(description="Only this artisan's pieces.")] = None,
        collaborator_id: Annotated[Id | None, Query(description=(
            "Only pieces woven for this collaborator. A collaborator's token lists its own pieces only: "
            "left out, it is the token's collaborator; another's is a 403."))] = None,
        product: Annotated[Short | None, Query(description="Only pieces of this product.")] = None,
        status: Annotated[Literal["woven", "passed", "failed"] | None, Query(description=(
            "`woven`: no QC result yet; `passed` or `failed`: its final QC result."))] = None,
        woven_from: Annotated[BusinessTime | None, Query(description=(
            "Only pieces woven at or after this moment (RFC 3339 with an offset)."))] = None,
        woven_to: Annotated[BusinessTime | None, Query(description=(
            "Only pieces woven at or before this moment (RFC 3339 with an offset)."))] = None,
        limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None, who: Principal = Depends(feedback_reader),
    ) -> JSONResponse:
        if who.role == COLLABORATOR:
            if collaborator_id is not None and collaborator_id != who.collaborator_id:
                raise Problem(403, "forbidden", "A collaborator may list only its own pieces.")
            collaborator_id = who.collaborator_id
        after = position_after(projections.PIECES, cursor)
        where = projections.PieceFilter(artisan_id, collaborator_id, product, status, woven_from, woven_to)
        rows = await projections.pieces(runtime.pool, where, after=after, limit=limit + 1)
        return JSONResponse(page(rows, limit, projections.PIECES))

    @router.get("/pieces/{piece_id}", responses=problems(404),
                summary="A piece: how it was woven and its final QC result, if any")
    async def get_piece(piece_id: Id, _: Principal = Depends(reader)) -> JSONResponse:
        async with runtime.pool.acquire() as conn:
            piece = await handlers.piece_state(PostgresUnitOfWork(conn), piece_id)
        if piece.woven is None:
            raise Problem(404, "piece-not-found", f"There is no piece {piece_id}.")
        return JSONResponse({**piece.woven.model_dump(mode="json"),
                             "qc": _result_json(piece.result) if piece.result else None})

    return router


def reconciliation_json(result: Reconciliation) -> dict[str, Any]:
    """`GET /materials/reconciliation`'s answer (docs/materials.md)."""
    def day(value: date | None) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "as_of": result.as_of.isoformat(), "idle_weeks": result.idle_weeks,
        "holdings": [
            {"artisan_id": h.artisan_id, "collaborator_id": h.collaborator_id, "pieces_woven": h.woven,
             "pieces_passed": h.passed, "last_woven_on": day(h.last_woven_on),
             "materials": [{"material": m.material, "unit": m.unit, "issued": m.issued, "expected_use": m.expected,
                            "remaining": m.remaining, "last_issued_on": day(m.last_issued_on), "flags": list(m.flags)}
                           for m in h.materials]}
            for h in result.holdings
        ],
        "collaborators": [
            {"collaborator_id": t.collaborator_id, "material": t.material, "unit": t.unit, "issued": t.issued,
             "expected_use": t.expected, "artisans": t.artisans, "artisans_flagged": t.flagged}
            for t in result.totals()
        ],
        "anomalies": [
            {"kind": a.kind, "artisan_id": a.artisan_id, "collaborator_id": a.collaborator_id,
             "material": a.material, "unit": a.unit, "issued": a.issued, "expected_use": a.expected,
             "last_activity_on": day(a.last_activity_on)}
            for a in result.anomalies
        ],
    }


def _collaborator_json(state: domain.Collaborator) -> dict[str, Any]:
    """A collaborator's keys and when each signs for it."""
    def moment(value: datetime | None) -> str | None:
        return to_wib(value).isoformat() if value is not None else None

    return {"collaborator_id": state.collaborator_id, "name": state.name, "public_keys": list(state.public_keys),
            "keys": [{"public_key": key.public_key, "valid_from": moment(key.valid_from),
                      "revoked_from": moment(key.revoked_from)} for key in state.keys]}


def _result_json(result: Any) -> dict[str, Any]:
    verdict = "passed" if isinstance(result, QcPassed) else "failed"
    return {"result": verdict, "event": "qc-passed" if verdict == "passed" else "qc-failed",
            **result.model_dump(mode="json")}


def _claimed_ids(body: bytes) -> dict[str, str]:
    """The ids a refused body names, where it names them as strings; untrusted, for feedback only."""
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return {}
    if not isinstance(document, dict):
        return {}
    return {name: value[:200] for name in ("collaborator_id", "submission_id", "piece_id")
            if isinstance(value := document.get(name), str) and value}
