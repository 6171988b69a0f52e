"""Enrollment's cohort handlers, one body on both event stores (`conftest.backend`).

A resident's registration writes the personal-data vault (PostgreSQL); here she is registered as
her `resident-registered` event, which is all the cohort's decisions read of her.
"""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta, timezone

import pytest

from services.enrollment.domain import ScheduleCohort
from services.enrollment.handlers import EnrollmentHandlers
from shared.contracts import Envelope, service_source
from shared.contracts.events import ResidentRegistered
from shared.domain import Conflict, NotFound, Refused
from shared.eventstore import NO_STREAM

WIB = timezone(timedelta(hours=7))
HANDLERS = EnrollmentHandlers(vault=None)  # type: ignore[arg-type]  # no command here touches the vault


async def resident(backend, resident_id: str, rusunawa: str = "Rusunawa Nagrak") -> str:
    registered = ResidentRegistered(resident_id=resident_id, rusunawa=rusunawa,
                                    registered_at=datetime(2024, 1, 5, 9, tzinfo=WIB))
    await backend.store.append(resident_id, NO_STREAM, [Envelope.wrap(registered,
                                                                      source=service_source("enrollment"))])
    return resident_id


async def cohort(backend, capacity: int = 2) -> str:
    async with backend.store.unit() as uow:
        await HANDLERS.register_rusunawa(uow, "Rusunawa Nagrak", "piring")
    async with backend.store.unit() as uow:
        return await HANDLERS.schedule_cohort(uow, ScheduleCohort(
            cohort_id="coh_1", rusunawa="rusunawa  nagrak", skill="anyaman", product_focus="piring",
            starts_on=date(2024, 2, 1), ends_on=date(2024, 2, 28), capacity=capacity))


async def enrol(backend, cohort_id: str, resident_id: str, **options):
    async with backend.store.unit() as uow:
        return await HANDLERS.enrol(uow, cohort_id, resident_id, **options)


async def test_a_cohort_belongs_to_a_registered_rusunawa_and_carries_its_registered_name(backend):
    with pytest.raises(Refused) as refused:
        async with backend.store.unit() as uow:
            await HANDLERS.schedule_cohort(uow, ScheduleCohort(
                cohort_id="coh_x", rusunawa="Rusunawa Nowhere", skill="anyaman", product_focus="piring",
                starts_on=date(2024, 2, 1), ends_on=date(2024, 2, 28), capacity=5))
    cohort_id = await cohort(backend)  # named "rusunawa  nagrak": spacing and case aside

    assert refused.value.code == "unknown-rusunawa"
    (scheduled,) = (await backend.store.load(cohort_id)).events[:1]
    assert scheduled.data.rusunawa == "Rusunawa Nagrak"


async def test_a_rusunawa_is_registered_once_however_its_name_is_spelt(backend):
    async with backend.store.unit() as uow:
        first, place = await HANDLERS.register_rusunawa(uow, "Rusunawa  Marunda", "batik")
    async with backend.store.unit() as uow:
        again, same = await HANDLERS.register_rusunawa(uow, "rusunawa marunda", "Batik")
    with pytest.raises(Conflict) as conflict:
        async with backend.store.unit() as uow:
            await HANDLERS.register_rusunawa(uow, "RUSUNAWA MARUNDA", "anyaman")

    assert (first, again) == (True, False) and same == place and place.name == "Rusunawa Marunda"
    assert conflict.value.code == "rusunawa-already-registered"


async def test_enrolling_a_resident_twice_is_one_enrolment(backend):
    cohort_id, her = await cohort(backend), await resident(backend, "res_1")

    first_new, first = await enrol(backend, cohort_id, her)
    again_new, again = await enrol(backend, cohort_id, her)

    assert (first_new, again_new) == (True, False) and again == first
    assert [e.type for e in (await backend.store.load(cohort_id)).events] == ["cohort-scheduled", "enrolled"]


async def test_a_resident_who_was_never_registered_cannot_be_enrolled(backend):
    cohort_id = await cohort(backend)
    with pytest.raises(NotFound) as refused:
        await enrol(backend, cohort_id, "res_nobody")
    assert refused.value.code == "resident-not-found"


async def test_a_resident_of_another_rusunawa_needs_a_published_override_reason(backend):
    cohort_id = await cohort(backend)
    her = await resident(backend, "res_m", rusunawa="Rusunawa Marunda")
    with pytest.raises(Conflict) as refused:
        await enrol(backend, cohort_id, her)

    new, enrolment = await enrol(backend, cohort_id, her, rusunawa_override="moved-rusunawa")

    assert refused.value.code == "other-rusunawa"
    assert new and enrolment.rusunawa_override is True


async def test_of_many_desks_racing_for_the_last_place_exactly_one_enrols(backend):
    cohort_id = await cohort(backend, capacity=1)
    residents = [await resident(backend, f"res_{n}") for n in range(6)]

    outcomes = await asyncio.gather(*(enrol(backend, cohort_id, r) for r in residents), return_exceptions=True)

    enrolled = [o for o in outcomes if not isinstance(o, Exception)]
    refused = [o for o in outcomes if isinstance(o, Exception)]
    assert len(enrolled) == 1 and all(isinstance(o, Conflict) and o.code == "cohort-full" for o in refused)
    assert [e.type for e in (await backend.store.load(cohort_id)).events] == ["cohort-scheduled", "enrolled"]


async def test_a_resident_who_completed_cannot_withdraw(backend):
    cohort_id, her = await cohort(backend), await resident(backend, "res_c")
    await enrol(backend, cohort_id, her)
    async with backend.store.unit() as uow:
        assert await HANDLERS.record_completion(uow, cohort_id, her, date(2024, 2, 28)) is True
    with pytest.raises(Conflict):
        async with backend.store.unit() as uow:
            await HANDLERS.withdraw(uow, cohort_id, her, "moved-away")

    assert [e.type for e in (await backend.store.load(cohort_id)).events][-1] == "training-completed"
