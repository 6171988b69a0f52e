"""Enrollment's HTTP API (SPEC §9): parse → command → handler; every error a problem document."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import Field, StrictBool, StringConstraints, model_validator

from services.enrollment import domain, projections
from services.enrollment.handlers import EnrollmentHandlers
from services.enrollment.money import PayoutLedger
from services.enrollment.personal_data import PersonalData
from shared.contracts.codes import WithdrawalReason
from shared.eventstore import EventStore, PostgresUnitOfWork
from shared.ids import NIK_NUMBER, PHONE_NUMBER, new_id
from shared.service import ServiceRuntime
from shared.web.access import AUDITOR, STAFF, Access, Principal
from shared.web.commands import Outcome, command_runner
from shared.web.inputs import CommandBody, IdempotencyKey, LookupId, ShortLabel, ShortText, Text
from shared.web.openapi import also_ok, problems
from shared.web.pages import DEFAULT_LIMIT, LIST_RESPONSES, Cursor, Limit, page, position_after

Name = Text
Short = ShortText
Id = LookupId
Nik = Annotated[str, StringConstraints(pattern=rf"^{NIK_NUMBER}$")]
Phone = Annotated[str, StringConstraints(pattern=rf"^{PHONE_NUMBER}$")]
#: A list's rusunawa filter, compared as `domain.same_rusunawa` compares names (spacing and case aside).
RusunawaFilter = Annotated[ShortText | None, Query(description=(
    "Only this rusunawa's, compared as enrolment compares names: spacing and letter case aside."))]


class RegisterResident(CommandBody):
    rusunawa: ShortLabel = Field(examples=["Nagrak"])
    unit: Short = Field(examples=["Blok A-304"])
    full_name: Name
    nik: Nik = Field(description="Nomor Induk Kependudukan: exactly 16 digits.")
    phone: Phone | None = Field(default=None, description="Indonesian mobile number, e.g. 0812... or +62812...")
    payout_account: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = None


class RegisterRusunawa(CommandBody):
    name: ShortLabel = Field(examples=["Rusunawa Nagrak"])
    ovop_product: ShortLabel = Field(description="Its OVOP product (one village, one product).",
                                     examples=["anyaman piring"])


class ScheduleCohort(CommandBody):
    rusunawa: ShortLabel = Field(description="A registered rusunawa's name (spacing and case aside).",
                                 examples=["Rusunawa Nagrak"])
    skill: ShortLabel = Field(examples=["menganyam"])
    product_focus: ShortLabel = Field(examples=["piring"])
    starts_on: date
    ends_on: date
    capacity: int = Field(ge=1, le=domain.MAX_CAPACITY)

    @model_validator(mode="after")
    def _ends_after_start(self) -> ScheduleCohort:
        if self.ends_on < self.starts_on:
            raise ValueError("ends_on must be on or after starts_on")
        return self


class EnrolResident(CommandBody):
    resident_id: Id
    override_rusunawa: StrictBool = Field(
        default=False,
        description="Enrol her although the cohort is another rusunawa's than hers (refused with 409 "
                    "`other-rusunawa` otherwise). Needs `override_reason`; recorded on the `enrolled` event.")
    override_reason: domain.RusunawaOverrideReason | None = Field(
        default=None, description="Why the override, as a code (never free text: it is recorded on the topic).")

    @model_validator(mode="after")
    def _override_has_a_reason(self) -> EnrolResident:
        if self.override_rusunawa and self.override_reason is None:
            raise ValueError("override_rusunawa needs an override_reason")
        if self.override_reason is not None and not self.override_rusunawa:
            raise ValueError("override_reason is only for override_rusunawa: true")
        return self


class RecordCompletion(CommandBody):
    resident_id: Id
    completed_on: date = Field(description="The day she completed the training: today (in Jakarta) or earlier.")


class Withdraw(CommandBody):
    resident_id: Id
    reason: WithdrawalReason = Field(description="Why, as a code (SPEC §7: no free text reaches a topic).")




def enrollment_router(
    runtime: ServiceRuntime, handlers: EnrollmentHandlers, access: Access, ledger: PayoutLedger
) -> APIRouter:
    router = APIRouter(tags=["enrollment"])
    staff = access.allow(STAFF)
    reader = access.allow(STAFF, AUDITOR)

    run = command_runner(lambda: runtime.pool)

    @router.post("/residents", status_code=201, summary="Register a resident (personal data is encrypted)")
    async def register_resident(
        body: RegisterResident, request: Request, key: IdempotencyKey = None, who: Principal = Depends(staff)
    ) -> Response:
        person = PersonalData(full_name=body.full_name, nik=body.nik, unit=body.unit, phone=body.phone,
                              payout_account=body.payout_account)

        async def action(uow: PostgresUnitOfWork) -> Outcome:
            resident_id = await handlers.register_resident(uow, body.rusunawa, person)
            return Outcome(201, {"resident_id": resident_id})

        answer: Response | None = None
        try:
            # Fingerprinted by a keyed digest: a stored plain hash of her data would confirm a guess.
            answer = await run(request, who, key, handlers.vault.request_digest(body.model_dump(mode="json")),
                               action)
            return answer
        finally:
            if answer is None or answer.status_code >= 400:
                # Whatever it stored was rolled back (a NIK race, a failure): dead rows, readable until scrubbed.
                handlers.vault.scrub_soon(runtime.pool)

    @router.post("/rusunawa", status_code=201, responses=also_ok("Registered so already: the rusunawa."),
                 summary="Register a rusunawa with its OVOP product")
    async def register_rusunawa(
        body: RegisterRusunawa, request: Request, key: IdempotencyKey = None, who: Principal = Depends(staff)
    ) -> Response:
        async def action(uow: PostgresUnitOfWork) -> Outcome:
            new, place = await handlers.register_rusunawa(uow, body.name, body.ovop_product)
            return Outcome(201 if new else 200, _rusunawa_body(place))

        return await run(request, who, key, body.model_dump(mode="json"), action)

    @router.get("/rusunawa/{rusunawa_id}", responses=problems(404), summary="A registered rusunawa")
    async def get_rusunawa(rusunawa_id: Id, _: Principal = Depends(reader)) -> JSONResponse:
        async with runtime.pool.acquire() as conn:
            return JSONResponse(_rusunawa_body(await handlers.rusunawa(PostgresUnitOfWork(conn), rusunawa_id)))

    @router.get("/rusunawa", summary="Every registered rusunawa and its OVOP product, by name")
    async def list_rusunawa(_: Principal = Depends(reader)) -> JSONResponse:
        async with runtime.pool.acquire() as conn:
            places = await projections.registered_rusunawa(conn)
        return JSONResponse({"items": [_rusunawa_body(place) for place in places]})

    @router.post("/cohorts", status_code=201, summary="Schedule a Bimtek cohort")
    async def schedule_cohort(
        body: ScheduleCohort, request: Request, key: IdempotencyKey = None, who: Principal = Depends(staff)
    ) -> Response:
        async def action(uow: PostgresUnitOfWork) -> Outcome:
            command = domain.ScheduleCohort(cohort_id=new_id("coh"), **body.model_dump())
            return Outcome(201, {"cohort_id": await handlers.schedule_cohort(uow, command)})

        return await run(request, who, key, body.model_dump(mode="json"), action)

    @router.post("/cohorts/{cohort_id}/enrolments", status_code=201, responses={**also_ok(), **problems(404)},
                 summary="Enrol a resident (409 when full, or when the cohort is another rusunawa's)")
    async def enrol(
        cohort_id: Id, body: EnrolResident, request: Request, key: IdempotencyKey = None,
        who: Principal = Depends(staff),
    ) -> Response:
        async def action(uow: PostgresUnitOfWork) -> Outcome:
            override = body.override_reason if body.override_rusunawa else None
            new, enrolment = await handlers.enrol(uow, cohort_id, body.resident_id, rusunawa_override=override)
            return Outcome(201 if new else 200, enrolment.model_dump(mode="json"))

        return await run(request, who, key, body.model_dump(mode="json"), action)

    @router.post("/cohorts/{cohort_id}/completions", status_code=201, responses={**also_ok(), **problems(404)},
                 summary="Record a completed training")
    async def complete(
        cohort_id: Id, body: RecordCompletion, request: Request, key: IdempotencyKey = None,
        who: Principal = Depends(staff),
    ) -> Response:
        async def action(uow: PostgresUnitOfWork) -> Outcome:
            new = await handlers.record_completion(uow, cohort_id, body.resident_id, body.completed_on)
            return Outcome(201 if new else 200, {"cohort_id": cohort_id, **body.model_dump(mode="json")})

        return await run(request, who, key, body.model_dump(mode="json"), action)

    @router.post("/cohorts/{cohort_id}/withdrawals", status_code=201, responses={**also_ok(), **problems(404)},
                 summary="Record a withdrawal")
    async def withdraw(
        cohort_id: Id, body: Withdraw, request: Request, key: IdempotencyKey = None,
        who: Principal = Depends(staff),
    ) -> Response:
        async def action(uow: PostgresUnitOfWork) -> Outcome:
            new = await handlers.withdraw(uow, cohort_id, body.resident_id, body.reason)
            return Outcome(201 if new else 200, {"cohort_id": cohort_id, "resident_id": body.resident_id})

        return await run(request, who, key, body.model_dump(mode="json"), action)

    @router.delete("/residents/{resident_id}/personal-data", status_code=204, responses=problems(404, 409),
                   summary="Erase a resident's personal data for good, unless she is owed money")
    async def erase(
        resident_id: Id,
        override_money_owed: Annotated[bool, Query(
            description="Erase although payout says she is owed money (payable or in transit) or cannot "
                        "tell; recorded on the `personal-data-erased` event. Her money stays payable until "
                        "staff pay it another way.")] = False,
        _: Principal = Depends(staff),
    ) -> Response:
        owed = await ledger.owed_idr(resident_id)
        async with EventStore(runtime.pool).unit() as uow:
            await handlers.erase_personal_data(uow, resident_id, money_owed_idr=owed, override=override_money_owed)
        await handlers.vault.scrub(runtime.pool)
        return Response(status_code=204)

    @router.get("/residents/{resident_id}", responses=problems(404),
                summary="A resident's programme record (no personal data)")
    async def get_resident(resident_id: Id, _: Principal = Depends(reader)) -> JSONResponse:
        async with runtime.pool.acquire() as conn:
            resident = await handlers.resident(PostgresUnitOfWork(conn), resident_id)
            erased = await handlers.vault.was_erased(conn, resident_id)
        return JSONResponse({"resident_id": resident_id, "rusunawa": resident.rusunawa,
                             "personal_data_erased": erased})

    @router.get("/residents/{resident_id}/personal-data", responses=problems(404, 410),
                summary="A resident's personal data (staff only)")
    async def get_personal_data(resident_id: Id, _: Principal = Depends(staff)) -> JSONResponse:
        async with runtime.pool.acquire() as conn:
            await handlers.resident(PostgresUnitOfWork(conn), resident_id)
            person = await handlers.vault.read(conn, resident_id)
        if person is None:
            from shared.web.problems import Problem

            raise Problem(410, "personal-data-erased", "This resident's personal data was erased and cannot be read.")
        return JSONResponse({"resident_id": resident_id, **person.__dict__})

    @router.get("/cohorts/{cohort_id}", responses=problems(404), summary="A cohort: places, enrolments and completions")
    async def get_cohort(cohort_id: Id, _: Principal = Depends(reader)) -> JSONResponse:
        async with runtime.pool.acquire() as conn:
            cohort = await handlers.cohort(PostgresUnitOfWork(conn), cohort_id)
        assert cohort.starts_on is not None and cohort.ends_on is not None  # a cohort is scheduled with both
        return JSONResponse({
            "cohort_id": cohort.cohort_id, "rusunawa": cohort.rusunawa, "skill": cohort.skill,
            "product_focus": cohort.product_focus, "starts_on": cohort.starts_on.isoformat(),
            "ends_on": cohort.ends_on.isoformat(), "capacity": cohort.capacity,
            "enrolled": sorted(cohort.enrolled), "completed": sorted(cohort.completed),
            "withdrawn": sorted(cohort.withdrawn),
        })

    @router.get("/cohorts", responses=LIST_RESPONSES,
                summary="Cohorts, in the order they were scheduled (filters and pages: docs/http.md)")
    async def list_cohorts(
        rusunawa: RusunawaFilter = None,
        skill: Annotated[ShortText | None, Query(description="Only this skill's (spacing and case aside).")] = None,
        starts_from: Annotated[date | None, Query(description="Only cohorts starting on or after this day.")] = None,
        starts_to: Annotated[date | None, Query(description="Only cohorts starting on or before this day.")] = None,
        limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None, _: Principal = Depends(reader),
    ) -> JSONResponse:
        after = position_after(projections.COHORTS, cursor)
        rows = await projections.cohorts(
            runtime.pool, projections.CohortFilter(rusunawa, skill, starts_from, starts_to), after=after,
            limit=limit + 1)
        return JSONResponse(page(rows, limit, projections.COHORTS))

    @router.get("/residents", responses=LIST_RESPONSES,
                summary="Residents, in the order they were registered: ids and programme facts, no personal data")
    async def list_residents(
        rusunawa: RusunawaFilter = None,
        cohort_id: Annotated[Id | None, Query(description="Only residents enrolled in this cohort.")] = None,
        trained: Annotated[bool | None, Query(description="Only those who completed a cohort (true) or "
                                                          "have not (false).")] = None,
        erased: Annotated[bool | None, Query(description="Only those whose personal data was erased (true) or "
                                                         "was not (false).")] = None,
        limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None, _: Principal = Depends(reader),
    ) -> JSONResponse:
        after = position_after(projections.RESIDENTS, cursor)
        rows = await projections.residents(
            runtime.pool, projections.ResidentFilter(rusunawa, cohort_id, trained, erased), after=after,
            limit=limit + 1)
        return JSONResponse(page(rows, limit, projections.RESIDENTS))

    return router


def _rusunawa_body(place: domain.Rusunawa) -> dict[str, str | None]:
    return {"rusunawa_id": place.rusunawa_id, "name": place.name, "ovop_product": place.ovop_product}
