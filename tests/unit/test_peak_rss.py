"""The bench's peak memory: a peak that is gone by the end is still reported, and each measurement
starts afresh (a replay after a larger one reports its own peak, not the larger one's)."""

from __future__ import annotations

import time

import pytest

from anyam import peak_rss
from anyam.bench import memory
from anyam.bench.memory import PeakRss

BLOCK_MB = 120


def _touched_block() -> bytearray:
    block = bytearray(BLOCK_MB * memory.MB)
    block[:: 4096] = b"x" * len(block[:: 4096])  # every page written, so it is resident, not just reserved
    return block


def _peaks() -> tuple[PeakRss, PeakRss]:
    with PeakRss() as large:
        block = _touched_block()
        del block
    with PeakRss() as small:
        pass
    return large, small


def test_the_kernel_keeps_the_peak_and_each_measurement_starts_afresh():
    large, small = _peaks()

    assert large.measure.startswith("the kernel's peak RSS")
    assert large.peak_mb - large.start_mb >= BLOCK_MB * 0.9
    assert small.peak_mb < large.peak_mb - BLOCK_MB * 0.5


def test_where_the_kernel_keeps_no_peak_rss_is_sampled(monkeypatch):
    monkeypatch.setattr(peak_rss, "_CLEAR_REFS", peak_rss.Path("/nonexistent/clear_refs"))
    with PeakRss(interval=0.001) as sampled:
        block = _touched_block()
        deadline = time.monotonic() + 5
        while sampled.peak_mb - sampled.start_mb < BLOCK_MB * 0.9 and time.monotonic() < deadline:
            time.sleep(0.001)  # the sampler thread's turn
        del block

    assert sampled.measure.startswith("RSS of the process sampled by psutil")
    assert sampled.peak_mb - sampled.start_mb >= BLOCK_MB * 0.9


@pytest.fixture(autouse=True)
def _linux_only():
    if not peak_rss._STATUS.exists():
        pytest.fail("these tests read /proc/self/status: they run on Linux, as CI does")
