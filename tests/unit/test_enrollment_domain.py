"""Enrollment's pure deciders: the rules, and invariants no command sequence can break."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.enrollment import domain
from shared.contracts.events import CohortScheduled, Enrolled, TrainingCompleted, Withdrawn
from shared.domain import Conflict, NotFound, Refused, fold

WIB = timezone(timedelta(hours=7))
NOW = datetime(2024, 2, 20, 9, 0, tzinfo=WIB)
SCHEDULE = domain.ScheduleCohort(
    cohort_id="coh_1", rusunawa="Nagrak", skill="menganyam", product_focus="piring",
    starts_on=date(2024, 2, 26), ends_on=date(2024, 2, 29), capacity=2,
)


def run(commands, state=None):
    """Apply commands in order, keeping refusals out of the state; returns (state, events, refusals)."""
    state = state or domain.Cohort()
    events, refusals = [], []
    for command in commands:
        try:
            decided = domain.decide_cohort(state, command)
        except Refused as refusal:
            refusals.append(refusal)
            continue
        events += decided
        state = fold(domain.evolve_cohort, state, decided)
    return state, events, refusals


def enrol(resident, registered=True):
    return domain.Enrol(cohort_id="coh_1", resident_id=resident, resident_registered=registered, enrolled_at=NOW)


def test_scheduling_a_cohort_emits_cohort_scheduled_once():
    state, events, _ = run([SCHEDULE, SCHEDULE])
    assert [type(e) for e in events] == [CohortScheduled]
    assert state.capacity == 2


@pytest.mark.parametrize(
    ("change", "code"),
    [({"ends_on": date(2024, 2, 25)}, "invalid-dates"), ({"capacity": 0}, "invalid-capacity"),
     ({"capacity": 501}, "invalid-capacity")],
)
def test_a_cohort_needs_sane_dates_and_capacity(change, code):
    command = domain.ScheduleCohort(**{**SCHEDULE.__dict__, **change})
    with pytest.raises(Refused) as refused:
        domain.decide_cohort(domain.Cohort(), command)
    assert refused.value.code == code


def test_a_full_cohort_refuses_the_next_resident_with_a_conflict():
    _, events, refusals = run([SCHEDULE, enrol("a"), enrol("b"), enrol("c")])
    assert [e.resident_id for e in events if isinstance(e, Enrolled)] == ["a", "b"]
    assert [(type(r), r.code) for r in refusals] == [(Conflict, "cohort-full")]


def test_enrolling_twice_is_one_enrolment_even_when_full():
    _, events, refusals = run([SCHEDULE, enrol("a"), enrol("b"), enrol("a")])
    assert len([e for e in events if isinstance(e, Enrolled)]) == 2
    assert refusals == []


def test_an_unregistered_resident_or_an_unknown_cohort_is_not_found():
    _, _, refusals = run([SCHEDULE, enrol("ghost", registered=False)])
    assert [(type(r), r.code) for r in refusals] == [(NotFound, "resident-not-found")]
    with pytest.raises(NotFound):
        domain.decide_cohort(domain.Cohort(), enrol("a"))


def test_completion_needs_enrolment_and_no_withdrawal_and_is_recorded_once():
    complete = lambda r: domain.RecordCompletion(cohort_id="coh_1", resident_id=r, completed_on=date(2024, 2, 29))  # noqa: E731
    withdraw = lambda r: domain.Withdraw(cohort_id="coh_1", resident_id=r, reason="pindah")  # noqa: E731
    _, events, refusals = run([
        SCHEDULE, complete("a"), enrol("a"), enrol("b"), withdraw("b"), complete("b"), complete("a"), complete("a"),
    ])
    assert [type(e) for e in events[-2:]] == [Withdrawn, TrainingCompleted]
    assert [r.code for r in refusals] == ["not-enrolled", "withdrawn"]


def test_completion_before_the_cohort_starts_is_refused():
    early = domain.RecordCompletion(cohort_id="coh_1", resident_id="a", completed_on=date(2024, 2, 1))
    _, _, refusals = run([SCHEDULE, enrol("a"), early])
    assert [r.code for r in refusals] == ["completed-before-start"]


residents = st.sampled_from([f"res_{i}" for i in range(8)])
cohort_commands = st.one_of(
    residents.map(enrol),
    st.tuples(residents, st.dates(date(2024, 1, 1), date(2024, 4, 1))).map(
        lambda t: domain.RecordCompletion(cohort_id="coh_1", resident_id=t[0], completed_on=t[1])),
    residents.map(lambda r: domain.Withdraw(cohort_id="coh_1", resident_id=r, reason="x")),
)


@settings(max_examples=300, deadline=None)
@given(capacity=st.integers(1, 6), commands=st.lists(cohort_commands, max_size=40))
def test_no_command_sequence_breaks_capacity_or_the_completion_rules(capacity, commands):
    scheduled = domain.ScheduleCohort(**{**SCHEDULE.__dict__, "capacity": capacity})
    state, events, _ = run([scheduled, *commands])

    enrolments = [e.resident_id for e in events if isinstance(e, Enrolled)]
    assert len(enrolments) <= capacity
    assert len(enrolments) == len(set(enrolments))
    completions = [e.resident_id for e in events if isinstance(e, TrainingCompleted)]
    assert len(completions) == len(set(completions))
    assert set(completions) <= set(enrolments)
    assert not set(completions) & state.withdrawn
    assert fold(domain.evolve_cohort, domain.Cohort(), events) == state
