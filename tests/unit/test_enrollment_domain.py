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
    withdraw = lambda r: domain.Withdraw(cohort_id="coh_1", resident_id=r, reason="moved-away")  # noqa: E731
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
    residents.map(lambda r: domain.Withdraw(cohort_id="coh_1", resident_id=r, reason="other")),
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


# --- SPEC §7: training is completed on or before the day it is recorded --------------------------


def complete_on(day, *, today=date(2024, 3, 1), resident="a"):
    return domain.RecordCompletion(cohort_id="coh_1", resident_id=resident, completed_on=day, today=today)


def test_a_completion_dated_after_the_day_it_is_recorded_is_refused():
    state, events, refusals = run([SCHEDULE, enrol("a"), complete_on(date(2024, 3, 2))])

    assert [(type(r), r.code) for r in refusals] == [(Refused, "completed-in-the-future")]
    assert "2024-03-02" in refusals[0].message and "2024-03-01" in refusals[0].message
    assert not any(isinstance(e, TrainingCompleted) for e in events) and state.completed == frozenset()


def test_a_completion_dated_the_day_it_is_recorded_or_earlier_is_taken():
    _, events, refusals = run([SCHEDULE, enrol("a"), enrol("b"), complete_on(date(2024, 3, 1)),
                               complete_on(date(2024, 2, 29), resident="b")])

    assert refusals == []
    assert [(e.resident_id, e.completed_on) for e in events if isinstance(e, TrainingCompleted)] == [
        ("a", date(2024, 3, 1)), ("b", date(2024, 2, 29))]


def test_a_completion_without_a_recording_day_is_judged_against_today_in_jakarta():
    tomorrow = domain.today_in_wib() + timedelta(days=1)
    _, _, refusals = run([SCHEDULE, enrol("a"),
                          domain.RecordCompletion(cohort_id="coh_1", resident_id="a", completed_on=tomorrow)])
    assert [r.code for r in refusals] == ["completed-in-the-future"]


# --- SPEC §7: enrolment only in a cohort of the resident's own rusunawa ------------------------------


def enrol_from(resident, rusunawa, override=None):
    return domain.Enrol(cohort_id="coh_1", resident_id=resident, resident_registered=True, enrolled_at=NOW,
                        resident_rusunawa=rusunawa, rusunawa_override=override)


def test_a_resident_of_another_rusunawa_is_refused_with_a_conflict_naming_both():
    state, events, refusals = run([SCHEDULE, enrol_from("a", "Marunda")])

    assert [(type(r), r.code) for r in refusals] == [(Conflict, "other-rusunawa")]
    assert "Nagrak" in refusals[0].message and "Marunda" in refusals[0].message
    assert state.enrolled == frozenset() and [type(e) for e in events] == [CohortScheduled]


def test_a_resident_of_the_cohorts_rusunawa_is_enrolled_however_its_name_was_typed():
    _, events, refusals = run([SCHEDULE, enrol_from("a", "Nagrak"), enrol_from("b", "  nagrak ")])

    assert refusals == []
    enrolled = [e for e in events if isinstance(e, Enrolled)]
    assert [e.resident_id for e in enrolled] == ["a", "b"]
    assert all(e.model_extra == {} for e in enrolled)  # no override recorded where none was needed


@pytest.mark.parametrize("reason", domain.RUSUNAWA_OVERRIDE_REASONS)
def test_staff_may_override_with_a_published_reason_which_the_enrolled_event_records(reason):
    _, events, refusals = run([SCHEDULE, enrol_from("a", "Marunda", reason)])

    assert refusals == []
    (enrolled,) = [e for e in events if isinstance(e, Enrolled)]
    assert enrolled.model_dump(mode="json") == {
        "resident_id": "a", "cohort_id": "coh_1", "enrolled_at": NOW.isoformat(),
        "rusunawa_override": True, "rusunawa_override_reason": reason}
    # The added fields travel: a reader of the topic gets them back (SPEC §6 allows added fields).
    from shared.contracts import Envelope, Topic, decode, encode

    read = decode(encode(Envelope.wrap(enrolled, source="/services/enrollment")).value, topic=Topic.ENROLLMENT)
    assert read.data == enrolled


@pytest.mark.parametrize("reason", ["she asked", "Pindah ke Marunda, Blok C-417", ""])
def test_an_override_whose_reason_is_not_a_published_code_is_refused(reason):
    _, events, refusals = run([SCHEDULE, enrol_from("a", "Marunda", reason)])

    assert [r.code for r in refusals] == ["unknown-override-reason"]
    assert reason not in refusals[0].message or not reason  # the words sent are not echoed back
    assert not any(isinstance(e, Enrolled) for e in events)


def test_an_override_with_nothing_to_override_is_refused():
    _, _, refusals = run([SCHEDULE, enrol_from("a", "Nagrak", "joint-cohort")])
    assert [r.code for r in refusals] == ["nothing-to-override"]


def test_the_rusunawa_rule_does_not_bypass_capacity_or_the_one_enrolment_rule():
    _, events, refusals = run([
        SCHEDULE, enrol_from("a", "Nagrak"), enrol_from("b", "Marunda", "moved-rusunawa"),
        enrol_from("c", "Marunda", "moved-rusunawa"), enrol_from("b", "Marunda"),
    ])

    assert [e.resident_id for e in events if isinstance(e, Enrolled)] == ["a", "b"]
    # c: the cohort is full; b again: already enrolled, one enrolment (no override needed to say so).
    assert [r.code for r in refusals] == ["cohort-full"]
