"""Identifiers: opaque, sortable strings for entities; UUIDv7 for events."""

from __future__ import annotations

import random
import re
import uuid
from collections.abc import Callable
from datetime import datetime

import uuid6
from ulid import ULID

#: What an Indonesian mobile number and a NIK look like: the forms enrollment accepts.
PHONE_NUMBER = r"(\+62|62|0)8\d{7,11}"
NIK_NUMBER = r"\d{16}"
#: A run of digits that reads as either. Random ids contain such runs now and then (1 UUIDv7
#: in about 6,500 has one in its last group), and personal-data scanners, `check_topics.py`
#: among them, rightly flag them on a topic.
LOOKS_LIKE_PERSONAL_DATA = re.compile(rf"(?<!\d)(?:{PHONE_NUMBER}|{NIK_NUMBER})(?!\d)")


def new_id(prefix: str) -> str:
    """A new opaque entity id such as `pc_01JBX...`: a type prefix and a ULID, sortable by creation."""
    return _unlike_personal_data(lambda: f"{prefix}_{ULID()}")


def new_event_id() -> str:
    """A new CloudEvents `id`: a UUIDv7, unique and roughly ordered by creation time."""
    return _unlike_personal_data(lambda: str(uuid6.uuid7()))


def event_id_at(moment: datetime, rng: random.Random) -> str:
    """The kind of id `new_event_id` makes at `moment`, its random bits drawn from `rng`.

    For generated histories (the bench's): the same seed gives the same ids, ordered in time
    as the services' own are, so that the ledger's indexes see the services' insert pattern."""
    millis = int(moment.timestamp() * 1000)
    return _unlike_personal_data(lambda: str(uuid.UUID(int=(
        millis << 80 | 0x7 << 76 | rng.getrandbits(12) << 64 | 0b10 << 62 | rng.getrandbits(62)))))


def new_id_at(prefix: str, moment: datetime, rng: random.Random) -> str:
    """The kind of id `new_id(prefix)` makes at `moment`, its random part drawn from `rng` (see `event_id_at`)."""
    millis = int(moment.timestamp() * 1000)
    return _unlike_personal_data(lambda: f"{prefix}_{ULID.from_bytes(millis.to_bytes(6, 'big') + rng.randbytes(10))}")


def _unlike_personal_data(make: Callable[[], str]) -> str:
    # Drawn again when it reads like a phone number or a NIK: still unique, still ordered.
    while LOOKS_LIKE_PERSONAL_DATA.search(candidate := make()):
        pass
    return candidate
