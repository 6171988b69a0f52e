"""Enrollment's command handlers: load → decide → append, in the caller's unit of work."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import cast

import asyncpg

from services.enrollment import domain
from services.enrollment.personal_data import PersonalData, PersonalDataVault
from shared.contracts import service_source
from shared.contracts.events import Enrolled, PersonalDataErased, ResidentRegistered
from shared.domain import Conflict, NotFound
from shared.eventstore import UnitOfWork
from shared.handling import Aggregate, handle, load_state
from shared.ids import new_id
from shared.timeutil import wib_now

SOURCE = service_source("enrollment")


def nik_taken() -> Conflict:
    # Named without the NIK itself: an error message is no place for personal data.
    return Conflict("nik-already-registered", "A resident with this NIK is already registered.")


RUSUNAWA = Aggregate(domain.Rusunawa(), domain.evolve_rusunawa, domain.decide_rusunawa)
RESIDENT = Aggregate(domain.Resident(), domain.evolve_resident, domain.decide_resident)
COHORT = Aggregate(domain.Cohort(), domain.evolve_cohort, domain.decide_cohort)


@dataclass(frozen=True)
class EnrollmentHandlers:
    """Runs enrollment's commands in a unit of work: its event streams, and the personal-data vault."""

    vault: PersonalDataVault

    async def register_resident(self, uow: UnitOfWork, rusunawa: str, person: PersonalData) -> str:
        """Register a resident; their personal data goes to the vault only, never into an event."""
        if await self.vault.owner_of_nik(uow.connection, person.nik) is not None:
            raise nik_taken()
        resident_id = new_id("res")
        try:
            # A savepoint: the transaction stays usable for the refusal when another desk won the race.
            async with uow.savepoint():
                await self.vault.store(uow.connection, resident_id, person)
        except asyncpg.UniqueViolationError:
            # Registered by another request between the check above and this insert.
            raise nik_taken() from None
        command = domain.RegisterResident(resident_id=resident_id, rusunawa=rusunawa, registered_at=wib_now())
        await handle(uow, RESIDENT, resident_id, command, source=SOURCE, time=_business_time,
                     fresh_id=True)
        return resident_id

    async def register_rusunawa(self, uow: UnitOfWork, name: str, ovop_product: str) -> tuple[bool, domain.Rusunawa]:
        """Register a rusunawa with its OVOP product; (False, it) when it was registered so already."""
        rusunawa_id = domain.rusunawa_id_for(name)
        events = await handle(uow, RUSUNAWA, rusunawa_id, domain.RegisterRusunawa(rusunawa_id, name, ovop_product),
                              source=SOURCE)
        return bool(events), await self.rusunawa(uow, rusunawa_id)

    async def rusunawa(self, uow: UnitOfWork, rusunawa_id: str) -> domain.Rusunawa:
        state, _ = await load_state(uow, RUSUNAWA, rusunawa_id)
        if not state.exists:
            raise NotFound("rusunawa-not-found", f"There is no rusunawa {rusunawa_id}.")
        return state

    async def schedule_cohort(self, uow: UnitOfWork, command: domain.ScheduleCohort) -> str:
        """Schedule a cohort in the registered rusunawa `command.rusunawa` names (in any spelling); the
        cohort carries its registered name."""
        place, _ = await load_state(uow, RUSUNAWA, domain.rusunawa_id_for(command.rusunawa or ""))
        command = replace(command, rusunawa=place.name if place.exists else None)
        await handle(uow, COHORT, command.cohort_id, command, source=SOURCE)
        return command.cohort_id

    async def enrol(
        self, uow: UnitOfWork, cohort_id: str, resident_id: str, *, rusunawa_override: str | None = None
    ) -> tuple[bool, Enrolled]:
        """Enrol; returns (whether this call enrolled them, the enrolment).

        `rusunawa_override`: a reason of `domain.RUSUNAWA_OVERRIDE_REASONS` to enrol a resident in a
        cohort of another rusunawa than hers (refused without one)."""
        resident, _ = await load_state(uow, RESIDENT, resident_id)
        command = domain.Enrol(cohort_id=cohort_id, resident_id=resident_id, resident_registered=resident.exists,
                               enrolled_at=wib_now(), resident_rusunawa=resident.rusunawa,
                               rusunawa_override=rusunawa_override)
        events = await handle(uow, COHORT, cohort_id, command, source=SOURCE, time=_business_time)
        if events:
            return True, cast(Enrolled, events[0].data)
        return False, await self._enrolment(uow, cohort_id, resident_id)

    async def record_completion(
        self, uow: UnitOfWork, cohort_id: str, resident_id: str, completed_on: date
    ) -> bool:
        """Record a completion; False when it was already recorded."""
        command = domain.RecordCompletion(cohort_id=cohort_id, resident_id=resident_id, completed_on=completed_on,
                                          today=domain.today_in_wib())
        return bool(await handle(uow, COHORT, cohort_id, command, source=SOURCE))

    async def withdraw(self, uow: UnitOfWork, cohort_id: str, resident_id: str, reason: str) -> bool:
        """Record a withdrawal; False when it was already recorded."""
        command = domain.Withdraw(cohort_id=cohort_id, resident_id=resident_id, reason=reason)
        return bool(await handle(uow, COHORT, cohort_id, command, source=SOURCE))

    async def erase_personal_data(
        self, uow: UnitOfWork, resident_id: str, *, money_owed_idr: int | None, override: bool
    ) -> None:
        """Erase the resident's personal data and record it (`personal-data-erased`); her history keeps
        the opaque id. Refused while she is owed money, unless `override`. The caller scrubs the vault
        once this transaction commits."""
        command = domain.ErasePersonalData(resident_id=resident_id, erased_at=wib_now(),
                                           money_owed_idr=money_owed_idr, override=override)
        await handle(uow, RESIDENT, resident_id, command, source=SOURCE, time=_business_time)
        # Again when erased before: a database restored from a backup may hold her rows once more.
        await self.vault.erase(uow.connection, resident_id)

    async def resident(self, uow: UnitOfWork, resident_id: str) -> domain.Resident:
        state, _ = await load_state(uow, RESIDENT, resident_id)
        if not state.exists:
            raise NotFound("resident-not-found", f"There is no resident {resident_id}.")
        return state

    async def cohort(self, uow: UnitOfWork, cohort_id: str) -> domain.Cohort:
        state, _ = await load_state(uow, COHORT, cohort_id)
        if not state.exists:
            raise NotFound("cohort-not-found", f"There is no cohort {cohort_id}.")
        return state

    async def _enrolment(self, uow: UnitOfWork, cohort_id: str, resident_id: str) -> Enrolled:
        history = await uow.load(cohort_id)
        return next(
            e.data for e in history.events if isinstance(e.data, Enrolled) and e.data.resident_id == resident_id
        )


def _business_time(data: object) -> datetime | None:
    """The CloudEvents `time` of an event: when it happened in the programme, not when it was stored."""
    if isinstance(data, ResidentRegistered):
        return data.registered_at
    if isinstance(data, Enrolled):
        return data.enrolled_at
    if isinstance(data, PersonalDataErased):
        return data.erased_at
    return None

