"""What a unit of work written in one statement hands to `command_commit`: `PostgresUnitOfWork.take()`.

Its appends merged per stream, and every stream it only read, with no events, so that the
statement checks that stream's version too (a remembered state must still be current).
"""

from __future__ import annotations

import pytest

from shared.contracts import Envelope, service_source
from shared.contracts.events import Enrolled
from shared.eventstore import NO_STREAM, ConcurrencyConflict, PostgresUnitOfWork
from shared.timeutil import wib_now


def enrolled(cohort: str) -> Envelope:
    return Envelope.wrap(Enrolled(resident_id="res_1", cohort_id=cohort, enrolled_at=wib_now()),
                         source=service_source("enrollment"))


def held() -> PostgresUnitOfWork:
    return PostgresUnitOfWork(connection=None, one_statement=True)  # take() never touches the connection


def test_streams_only_read_are_handed_over_with_their_version_and_no_events():
    appends = held()
    first, second = enrolled("a"), enrolled("b")
    appends.read_at("col_1", 7)
    appends.append("pc_1", NO_STREAM, [first])
    appends.append("pc_1", 1, [second])

    assert appends.take() == {"pc_1": (NO_STREAM, [first, second]), "col_1": (7, [])}
    assert appends.take() == {} and appends.pending == 0


def test_a_stream_read_then_appended_to_is_checked_once_at_the_version_read():
    appends = held()
    event = enrolled("a")
    appends.read_at("col_1", 3)
    appends.read_at("col_1", 4)  # read again later: the first read is what the command decided on
    appends.append("col_1", 3, [event])

    assert appends.take() == {"col_1": (3, [event])}


def test_an_append_that_does_not_follow_the_version_read_is_a_bug_not_a_silent_write():
    appends = held()
    appends.read_at("col_1", 3)
    appends.append("col_1", 5, [enrolled("a")])

    with pytest.raises(RuntimeError, match="read at version 3"):
        appends.take()


def test_only_a_command_written_in_one_statement_checks_what_it_read():
    with pytest.raises(RuntimeError, match="one statement"):
        PostgresUnitOfWork(connection=None).read_at("col_1", 1)


def test_two_appends_to_one_stream_decided_on_the_same_state_are_a_conflict_not_a_merge():
    appends = held()
    appends.append("pc_1", NO_STREAM, [enrolled("a")])
    appends.append("pc_1", NO_STREAM, [enrolled("b")])

    with pytest.raises(ConcurrencyConflict):
        appends.take()
