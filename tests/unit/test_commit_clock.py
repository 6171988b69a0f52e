"""The latency bench's clock: a piece is committed when payout's stored offset first passes its record."""

from __future__ import annotations

from anyam.bench.latency import CommitClock


def test_a_record_read_before_its_commit_is_stamped_by_the_poll_that_sees_the_commit():
    clock = CommitClock()
    clock.stored(0, 100, at=1.0)
    clock.read(0, 100, "pc_a")
    clock.read(0, 101, "pc_b")
    clock.stored(0, 101, at=1.5)  # past pc_a only
    clock.stored(0, 105, at=2.0)
    assert clock.seen == {"pc_a": 1.5, "pc_b": 2.0}
    assert clock.late == 0


def test_a_record_read_after_its_commit_is_stamped_as_if_read_in_time():
    # The tail may read long after payout committed; the stamp is the poll's, not the reading's.
    clock = CommitClock()
    clock.stored(1, 100, at=1.0)
    clock.stored(1, 103, at=1.2)
    clock.stored(1, 103, at=1.3)  # no advance
    clock.stored(1, 110, at=1.4)
    clock.read(1, 102, "pc_a")
    clock.read(1, 103, "pc_b")
    clock.read(1, 109, "pc_c")
    clock.read(1, 110, "pc_d")  # not committed yet
    assert clock.seen == {"pc_a": 1.2, "pc_b": 1.4, "pc_c": 1.4}
    assert clock.late == 3
    clock.stored(1, 111, at=1.6)
    assert clock.seen["pc_d"] == 1.6


def test_partitions_are_clocked_apart():
    clock = CommitClock()
    clock.read(0, 5, "pc_a")
    clock.read(1, 5, "pc_b")
    clock.stored(1, 6, at=3.0)
    assert clock.seen == {"pc_b": 3.0}
