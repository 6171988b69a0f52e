"""What every service's pure domain shares: refusals and folding a history into state. No I/O."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

S = TypeVar("S")
E = TypeVar("E")


class Refused(Exception):
    """A command the rules refuse; `code` is machine-readable, the message says what to do (HTTP 422)."""

    status = 422

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class NotFound(Refused):
    """The command names something that does not exist (HTTP 404)."""

    status = 404


class Conflict(Refused):
    """The command clashes with the current state, e.g. a full cohort (HTTP 409)."""

    status = 409


def fold(evolve: Callable[[S, E], S], initial: S, events: Iterable[E]) -> S:
    """The state after `events`, applied one by one to `initial` with `evolve`."""
    state = initial
    for event in events:
        state = evolve(state, event)
    return state
