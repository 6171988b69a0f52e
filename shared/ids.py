"""Identifiers: opaque, sortable strings for entities; UUIDv7 for events."""

from __future__ import annotations

import uuid6
from ulid import ULID


def new_id(prefix: str) -> str:
    """A new opaque entity id such as `pc_01JBX...`: a type prefix and a ULID, sortable by creation."""
    return f"{prefix}_{ULID()}"


def new_event_id() -> str:
    """A new CloudEvents `id`: a UUIDv7, unique and roughly ordered by creation time."""
    return str(uuid6.uuid7())
