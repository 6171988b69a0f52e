"""Waiting on a condition with a deadline, never on a bare sleep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


async def until(condition: Callable[[], Awaitable[bool]], *, timeout: float = 30.0,
                what: str = "the condition") -> None:
    """Return once `condition()` holds; fail the test if it does not within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, f"{what} did not hold in time"
        await asyncio.sleep(0.05)
