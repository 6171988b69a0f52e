"""Business time: Western Indonesia Time (WIB, UTC+07:00).

Jakarta has kept UTC+07:00 without daylight saving since 1964, so a fixed
offset is exact and needs no time-zone database on the machine.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

WIB = timezone(timedelta(hours=7), "WIB")


def wib_now() -> datetime:
    """The current moment, expressed in WIB."""
    return datetime.now(WIB)


def to_wib(moment: datetime) -> datetime:
    """`moment` expressed in WIB; refuses naive datetimes, whose meaning is a guess."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("a naive datetime has no defined moment; give a time-zone offset")
    return moment.astimezone(WIB)
