"""`anyam bench --soak DURATION`: how the duration is read."""

import pytest

from anyam.bench.soak import parse_duration
from anyam.stack.errors import StackError


@pytest.mark.parametrize(("text", "seconds"), [("10m", 600), ("90s", 90), ("1h", 3600), ("2.5m", 150), ("45", 45)])
def test_a_soak_duration_is_read_in_seconds_minutes_or_hours(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "ten minutes", "10 min", "-5m", "5d"])
def test_anything_else_is_refused_with_an_example_of_what_is_accepted(text):
    with pytest.raises(StackError, match="such as 90s, 10m or 1h"):
        parse_duration(text)
