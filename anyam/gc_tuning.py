"""Garbage collection for batch jobs that churn through short-lived objects (replays of the ledger)."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

#: Allocations between young-generation collections while a batch job runs (CPython's default: 700).
BATCH_GEN0_THRESHOLD = 50_000
#: How many `collections_for_batches` are open, and the thresholds to restore when none is.
_users = 0
_restore: tuple[int, int, int] = gc.get_threshold()


@contextlib.contextmanager
def collections_for_batches() -> Iterator[None]:
    """Collect garbage less often while a replay decodes and posts events by the million.

    Each event leaves a dozen short-lived objects (pydantic models, dicts, datetimes) and no
    cycles; with CPython's defaults the collector ran every 700 allocations and, every so often,
    walked every object alive, a large share of a replay's Python time. Objects alive on
    entry (modules, settings, the client) are frozen out of the walks; the young generation is
    collected every 50,000 allocations, which bounds what cyclic garbage can pile up. Restored on
    exit, so that a process running a replay in passing (a test, `anyam verify`) keeps its settings.
    Nested or overlapping uses (the bench's replay process around the auditor's replay) share one
    setting, taken by the first to enter and restored by the last to leave.
    """
    global _users, _restore
    if _users == 0:
        _restore = gc.get_threshold()
        gc.freeze()
        gc.set_threshold(BATCH_GEN0_THRESHOLD, _restore[1], _restore[2])
    _users += 1
    try:
        yield
    finally:
        _users -= 1
        if _users == 0:
            gc.set_threshold(*_restore)
            gc.unfreeze()
