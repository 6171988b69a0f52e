"""Enrollment's pure domain: residents and Bimtek cohorts as deciders. No I/O here.

Three aggregates, each a stream in the event store:
- a rusunawa (stream = `rusunawa_id_for(name)`): registered once, with its OVOP product, so a
  name is registered once however it is spelt;
- a resident (stream = resident_id): registered once;
- a cohort (stream = cohort_id): scheduled, then enrolments, completions and
  withdrawals. Capacity is the cohort's invariant, so enrolments live in its stream.

Personal data never enters an event: the decider sees opaque ids only.

Rules of SPEC §7 decided here besides capacity: training is completed on or
before the day it is recorded (in WIB), and a resident is enrolled only in a
cohort of her own rusunawa, unless staff override that with a reason from
`RUSUNAWA_OVERRIDE_REASONS` (a code, never free text: it reaches the topic).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Literal, get_args

from shared.contracts.events import (
    CohortScheduled,
    Enrolled,
    EventData,
    PersonalDataErased,
    ResidentRegistered,
    RusunawaRegistered,
    TrainingCompleted,
    Withdrawn,
    label_key,
    same_label,
)
from shared.domain import Conflict, NotFound, Refused
from shared.timeutil import wib_now

MAX_CAPACITY = 500

#: Why staff may enrol a resident in a cohort of another rusunawa: the published list of codes that
#: an overridden `enrolled` event carries (as `rusunawa_override_reason`, beside `rusunawa_override: true`).
#: - `moved-rusunawa`: she has moved to the cohort's rusunawa since she was registered;
#: - `no-cohort-in-own-rusunawa`: her own rusunawa runs no cohort of this skill;
#: - `joint-cohort`: the cohort is run for several rusunawa together;
#: - `cohort-relocated`: the cohort's training was moved to another rusunawa's premises.
RusunawaOverrideReason = Literal["moved-rusunawa", "no-cohort-in-own-rusunawa", "joint-cohort", "cohort-relocated"]
RUSUNAWA_OVERRIDE_REASONS: tuple[str, ...] = get_args(RusunawaOverrideReason)


def today_in_wib() -> date:
    """The calendar day in Jakarta now: the day a command is recorded."""
    return wib_now().date()


# --- commands -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RegisterResident:
    resident_id: str
    rusunawa: str
    registered_at: datetime


@dataclass(frozen=True)
class ErasePersonalData:
    """Erase a resident's personal data. `money_owed_idr`: what payout says she is owed (None when it
    could not tell); `override`: staff erase her all the same, which the event records."""

    resident_id: str
    erased_at: datetime
    money_owed_idr: int | None
    override: bool


@dataclass(frozen=True)
class RegisterRusunawa:
    rusunawa_id: str
    name: str
    ovop_product: str


@dataclass(frozen=True)
class ScheduleCohort:
    cohort_id: str
    #: The registered name of the cohort's rusunawa (`Rusunawa.name`); None: it is not registered.
    rusunawa: str | None
    skill: str
    product_focus: str
    starts_on: date
    ends_on: date
    capacity: int


@dataclass(frozen=True)
class Enrol:
    cohort_id: str
    resident_id: str
    resident_registered: bool
    enrolled_at: datetime
    #: The resident's own rusunawa, as registered; None leaves the rusunawa rule unchecked (callers
    #: that know no resident, as the capacity tests); the service always gives it.
    resident_rusunawa: str | None = None
    #: Staff enrol her although the cohort is another rusunawa's, for this reason (a code of
    #: `RUSUNAWA_OVERRIDE_REASONS`); None: no override.
    rusunawa_override: str | None = None


@dataclass(frozen=True)
class RecordCompletion:
    cohort_id: str
    resident_id: str
    completed_on: date
    #: The day the completion is recorded, in WIB: `completed_on` may not be later.
    today: date = field(default_factory=today_in_wib)


@dataclass(frozen=True)
class Withdraw:
    cohort_id: str
    resident_id: str
    reason: str


# --- state --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resident:
    resident_id: str | None = None
    rusunawa: str | None = None
    erased: bool = False

    @property
    def exists(self) -> bool:
        return self.resident_id is not None


@dataclass(frozen=True)
class Cohort:
    cohort_id: str | None = None
    rusunawa: str = ""
    skill: str = ""
    product_focus: str = ""
    starts_on: date | None = None
    ends_on: date | None = None
    capacity: int = 0
    enrolled: frozenset[str] = field(default_factory=frozenset)
    completed: frozenset[str] = field(default_factory=frozenset)
    withdrawn: frozenset[str] = field(default_factory=frozenset)

    @property
    def exists(self) -> bool:
        return self.cohort_id is not None

    @property
    def places_taken(self) -> int:
        # A withdrawn resident keeps the place: a Bimtek seat is not re-filled mid-course.
        return len(self.enrolled)


@dataclass(frozen=True)
class Rusunawa:
    rusunawa_id: str | None = None
    name: str = ""
    ovop_product: str = ""

    @property
    def exists(self) -> bool:
        return self.rusunawa_id is not None


def rusunawa_id_for(name: str) -> str:
    """A rusunawa's id, derived from its name as people spell it (spacing and case aside), so that one
    place cannot be registered twice under two ids."""
    digest = hashlib.sha256(label_key(name).encode()).digest()
    return "rsw_" + base64.b32encode(digest).decode().rstrip("=")[:26]


# --- evolve -------------------------------------------------------------------------------


def evolve_resident(state: Resident, event: EventData) -> Resident:
    if isinstance(event, ResidentRegistered):
        return Resident(resident_id=event.resident_id, rusunawa=event.rusunawa)
    if isinstance(event, PersonalDataErased):
        return replace(state, erased=True)
    return state


def evolve_rusunawa(state: Rusunawa, event: EventData) -> Rusunawa:
    if isinstance(event, RusunawaRegistered):
        return Rusunawa(rusunawa_id=event.rusunawa_id, name=event.name, ovop_product=event.ovop_product)
    return state


def decide_rusunawa(state: Rusunawa, command: RegisterRusunawa) -> list[EventData]:
    if state.exists:
        if state.ovop_product.casefold() == command.ovop_product.casefold():
            return []  # registered already, as asked
        raise Conflict(
            "rusunawa-already-registered",
            f"{state.name} is registered already, with OVOP product {state.ovop_product!r}.",
        )
    return [RusunawaRegistered(rusunawa_id=command.rusunawa_id, name=" ".join(command.name.split()),
                               ovop_product=command.ovop_product)]


def evolve_cohort(state: Cohort, event: EventData) -> Cohort:
    match event:
        case CohortScheduled():
            return Cohort(
                cohort_id=event.cohort_id, rusunawa=event.rusunawa, skill=event.skill,
                product_focus=event.product_focus, starts_on=event.starts_on, ends_on=event.ends_on,
                capacity=event.capacity,
            )
        case Enrolled():
            return replace(state, enrolled=state.enrolled | {event.resident_id})
        case TrainingCompleted():
            return replace(state, completed=state.completed | {event.resident_id})
        case Withdrawn():
            return replace(state, withdrawn=state.withdrawn | {event.resident_id})
    return state


# --- decide -------------------------------------------------------------------------------


def decide_resident(state: Resident, command: RegisterResident | ErasePersonalData) -> list[EventData]:
    if isinstance(command, ErasePersonalData):
        return _erase(state, command)
    if state.exists:
        return []  # registering the same id again is a no-op
    return [ResidentRegistered(resident_id=command.resident_id, rusunawa=command.rusunawa,
                               registered_at=command.registered_at)]


def _erase(state: Resident, command: ErasePersonalData) -> list[EventData]:
    if not state.exists:
        raise NotFound("resident-not-found", f"There is no resident {command.resident_id}.")
    if state.erased:
        return []  # erased already: erasing again changes nothing
    if not command.override:
        if command.money_owed_idr is None:
            raise Conflict(
                "money-unknown",
                "Payout could not say whether she is owed money; erasing her data would lose the account "
                "she is paid to. Try again, or pass override_money_owed=true to erase all the same.",
            )
        if command.money_owed_idr > 0:
            raise Conflict(
                "money-owed",
                f"She is owed Rp {command.money_owed_idr:,} (payable or in transit); erasing her data would "
                "lose the account she is paid to. Pay her first, or pass override_money_owed=true: her money "
                "then stays payable until staff pay it another way.",
            )
    return [PersonalDataErased(resident_id=command.resident_id, erased_at=command.erased_at,
                               money_owed_idr=command.money_owed_idr, money_owed_override=command.override)]


def decide_cohort(
    state: Cohort, command: ScheduleCohort | Enrol | RecordCompletion | Withdraw
) -> list[EventData]:
    match command:
        case ScheduleCohort():
            return _schedule(state, command)
        case Enrol():
            return _enrol(_existing(state, command.cohort_id), command)
        case RecordCompletion():
            return _complete(_existing(state, command.cohort_id), command)
        case Withdraw():
            return _withdraw(_existing(state, command.cohort_id), command)
    raise TypeError(f"not a cohort command: {type(command).__name__}")


def _existing(state: Cohort, cohort_id: str) -> Cohort:
    if not state.exists:
        raise NotFound("cohort-not-found", f"There is no cohort {cohort_id}.")
    return state


def _schedule(state: Cohort, command: ScheduleCohort) -> list[EventData]:
    if state.exists:
        return []
    if command.rusunawa is None:
        raise Refused("unknown-rusunawa",
                      "A cohort belongs to a registered rusunawa: register it first (POST /rusunawa).")
    if command.ends_on < command.starts_on:
        raise Refused("invalid-dates", "A cohort must end on or after the day it starts.")
    if not 1 <= command.capacity <= MAX_CAPACITY:
        raise Refused("invalid-capacity", f"Capacity must be between 1 and {MAX_CAPACITY}.")
    return [CohortScheduled(
        cohort_id=command.cohort_id, rusunawa=command.rusunawa, skill=command.skill,
        product_focus=command.product_focus, starts_on=command.starts_on, ends_on=command.ends_on,
        capacity=command.capacity,
    )]


def _enrol(state: Cohort, command: Enrol) -> list[EventData]:
    if not command.resident_registered:
        raise NotFound("resident-not-found", f"There is no resident {command.resident_id}; register them first.")
    if command.resident_id in state.enrolled:
        return []  # enrolling an enrolled resident again is the same one enrolment
    override = _rusunawa_override(state, command)
    if state.places_taken >= state.capacity:
        raise Conflict(
            "cohort-full",
            f"Cohort {state.cohort_id} is full: all {state.capacity} places are taken.",
        )
    return [Enrolled(resident_id=command.resident_id, cohort_id=state.cohort_id, enrolled_at=command.enrolled_at,
                     **override)]


#: Whether two rusunawa names are one place: spacing and letter case are how a name was typed.
same_rusunawa = same_label


#: What `same_rusunawa` compares of a name: two names are one place exactly when their keys are equal
#: (a list's rusunawa filter looks names up by it).
rusunawa_key = label_key


def _rusunawa_override(state: Cohort, command: Enrol) -> dict[str, object]:
    """The added fields of an `enrolled` that crosses rusunawa (none when it does not); refuses a
    crossing without an override, and an override without a published reason or with nothing to override."""
    reason = command.rusunawa_override
    if reason is not None and reason not in RUSUNAWA_OVERRIDE_REASONS:
        raise Refused(
            "unknown-override-reason",
            f"An override's reason must be one of: {', '.join(RUSUNAWA_OVERRIDE_REASONS)}.",
        )
    if command.resident_rusunawa is None or same_rusunawa(command.resident_rusunawa, state.rusunawa):
        if reason is not None:
            raise Refused(
                "nothing-to-override",
                f"Resident {command.resident_id} lives in the cohort's own rusunawa; enrol her without an override.",
            )
        return {}
    if reason is None:
        raise Conflict(
            "other-rusunawa",
            f"Cohort {state.cohort_id} trains residents of {state.rusunawa}, and resident "
            f"{command.resident_id} is registered in {command.resident_rusunawa}. Enrol her in a cohort "
            "of her own rusunawa, or override with override_rusunawa: true and an override_reason.",
        )
    return {"rusunawa_override": True, "rusunawa_override_reason": reason}


def _complete(state: Cohort, command: RecordCompletion) -> list[EventData]:
    resident = command.resident_id
    if resident not in state.enrolled:
        raise Conflict("not-enrolled", f"Resident {resident} is not enrolled in cohort {state.cohort_id}.")
    if resident in state.withdrawn:
        raise Conflict(
            "withdrawn", f"Resident {resident} withdrew from cohort {state.cohort_id} and cannot complete it."
        )
    if resident in state.completed:
        return []
    if state.starts_on is not None and command.completed_on < state.starts_on:
        raise Refused(
            "completed-before-start",
            f"Training cannot be completed before the cohort starts on {state.starts_on.isoformat()}.",
        )
    if command.completed_on > command.today:
        raise Refused(
            "completed-in-the-future",
            f"completed_on ({command.completed_on.isoformat()}) is later than today in Jakarta "
            f"({command.today.isoformat()}); record a completion on or after the day it happened.",
        )
    return [TrainingCompleted(resident_id=resident, cohort_id=state.cohort_id, completed_on=command.completed_on)]


def _withdraw(state: Cohort, command: Withdraw) -> list[EventData]:
    resident = command.resident_id
    if resident not in state.enrolled:
        raise Conflict("not-enrolled", f"Resident {resident} is not enrolled in cohort {state.cohort_id}.")
    if resident in state.completed:
        raise Conflict("already-completed", f"Resident {resident} already completed cohort {state.cohort_id}.")
    if resident in state.withdrawn:
        return []
    return [Withdrawn(resident_id=resident, cohort_id=state.cohort_id, reason=command.reason)]
