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
