"""The lists' pagination contract (shared/web/pages.py) and the rusunawa key the enrollment lists filter by."""

from __future__ import annotations

import base64
import json
from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import AwareDatetime, TypeAdapter

from services.enrollment.domain import rusunawa_key, same_rusunawa
from shared.timeutil import WIB
from shared.web.pages import MAX_CURSOR_LENGTH, decode_cursor, encode_cursor, page, position_after
from shared.web.problems import Problem

MOMENT_AND_ID = TypeAdapter(tuple[AwareDatetime, str])


def b64(document: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(document).encode()).decode().rstrip("=")


@given(st.integers(min_value=0, max_value=2**63 - 1))
def test_a_position_cursor_gives_back_its_position(position):
    assert position_after("pieces", encode_cursor("pieces", [position])) == position


def test_a_moment_and_id_cursor_gives_back_the_same_instant_and_id():
    moment = datetime(2024, 3, 16, 10, 0, 0, 123456, tzinfo=WIB)
    cursor = encode_cursor("payouts", [moment.isoformat(), "po_ABC"])
    assert cursor.isascii() and "=" not in cursor and len(cursor) < MAX_CURSOR_LENGTH
    assert decode_cursor("payouts", cursor, MOMENT_AND_ID) == (moment, "po_ABC")


def test_no_cursor_is_the_first_page():
    assert position_after("cohorts", None) == 0


@pytest.mark.parametrize("cursor", [
    "", "!!!!", "e30", b64([]), b64(["cohorts"]), b64(["residents", 5]), b64(["cohorts", -1]),
    b64(["cohorts", 2**63]), b64(["cohorts", 1.5]), b64(["cohorts", "7"]), b64(["cohorts", True]),
    b64(["cohorts", None]), b64(["cohorts", 1, 2]), b64({"cohorts": 1}), b64("cohorts"),
    base64.urlsafe_b64encode(b"\xff\xfe\x00").decode(), base64.urlsafe_b64encode(b"[" * 300).decode(),
    "é" * 8, "A" * (MAX_CURSOR_LENGTH + 1),
])
def test_anything_but_this_lists_own_cursor_is_a_400_invalid_cursor(cursor):
    with pytest.raises(Problem) as refused:
        position_after("cohorts", cursor)
    assert (refused.value.status, refused.value.code) == (400, "invalid-cursor")


@pytest.mark.parametrize("key", [
    ["2024-03-16T10:00:00", "po_x"],  # no offset: not a moment
    ["2024-03-16T10:00:00+07:00"],  # no id
    ["yesterday", "po_x"],
    [1710558000, "po_x"],  # a number is not a moment, in strict mode
])
def test_a_moment_and_id_cursor_refuses_what_is_not_both(key):
    with pytest.raises(Problem) as refused:
        decode_cursor("payouts", b64(["payouts", *key]), MOMENT_AND_ID)
    assert refused.value.code == "invalid-cursor"


def test_a_page_shows_limit_items_and_a_cursor_after_the_last_only_when_there_is_more():
    rows = [((n,), {"n": n}) for n in (3, 5, 8)]
    assert page(rows, 2, "pieces") == {"items": [{"n": 3}, {"n": 5}], "next_cursor": encode_cursor("pieces", [5])}
    assert page(rows, 3, "pieces") == {"items": [{"n": 3}, {"n": 5}, {"n": 8}], "next_cursor": None}
    assert page([], 3, "pieces") == {"items": [], "next_cursor": None}


names = st.text(alphabet=st.sampled_from("aAbBsSßẞ \t\u00a0\u2003İıi"), max_size=8)


@given(names, names)
def test_two_rusunawa_names_have_one_key_exactly_when_enrolment_calls_them_one_place(one, other):
    assert (rusunawa_key(one) == rusunawa_key(other)) == same_rusunawa(one, other)
