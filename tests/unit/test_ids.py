"""Fresh ids never read as personal data on a topic."""

from __future__ import annotations

import re

from shared import ids

# The patterns of ../shared/tools/check_topics.py, which reads every topic for personal data.
PHONE = re.compile(r"(?<![\d])(?:\+62|62|0)8\d{8,11}(?!\d)")
NIK = re.compile(r"(?<!\d)\d{16}(?!\d)")


def test_fresh_event_ids_never_read_as_a_phone_number_or_a_nik():
    # About 1 UUIDv7 in 6,500 holds such a run: 30 of these would be expected by chance.
    fresh = [ids.new_event_id() for _ in range(200_000)]
    assert not [i for i in fresh if PHONE.search(i) or NIK.search(i)]
    assert len(set(fresh)) == len(fresh)


def test_an_id_that_reads_as_a_phone_number_is_drawn_again(monkeypatch):
    drawn = iter(["01a22639-91b6-7b53-97ad-0828171925e9", "01a22639-91b6-7b53-97ad-7f2a9c1e5d30"])
    monkeypatch.setattr(ids.uuid6, "uuid7", lambda: next(drawn))
    assert ids.new_event_id() == "01a22639-91b6-7b53-97ad-7f2a9c1e5d30"


def test_entity_ids_keep_their_prefix():
    assert re.fullmatch(r"pc_[0-9A-HJKMNP-TV-Z]{26}", ids.new_id("pc"))


def test_ids_made_at_a_moment_are_the_services_kinds_ordered_by_that_moment_and_seeded():
    import random
    import uuid
    from datetime import datetime, timedelta

    from ulid import ULID

    from shared.timeutil import WIB

    moments = [datetime(2024, 1, 1, 8, 0, tzinfo=WIB) + timedelta(minutes=n) for n in range(500)]
    rng = random.Random(8)
    events = [ids.event_id_at(moment, rng) for moment in moments]
    pieces = [ids.new_id_at("pc", moment, rng) for moment in moments]
    assert all(uuid.UUID(e).version == 7 for e in events)
    assert [uuid.UUID(e).int >> 80 for e in events] == [int(m.timestamp() * 1000) for m in moments]
    assert events == sorted(events) and pieces == sorted(pieces)  # a later moment, a later id
    assert all(re.fullmatch(r"pc_[0-9A-HJKMNP-TV-Z]{26}", p) for p in pieces)
    assert [ULID.from_str(p[3:]).datetime for p in pieces] == moments
    again = random.Random(8)
    assert [ids.event_id_at(m, again) for m in moments] == events  # the same seed, the same ids
    assert len(set(events)) == len(events)
