"""Peak memory of this process, as resident set size (RSS) sampled by psutil.

RSS, not tracemalloc: tracemalloc slows every allocation two to three times, which
would falsify the throughput measured at the same moment, and it sees only Python's
own allocations, not asyncpg's or aiokafka's buffers. A sampler thread reads RSS every
10 ms; a peak shorter than that can slip by, so `ru_maxrss` (exact, but over the whole
process life) is reported beside it.
"""

from __future__ import annotations

import resource
import threading
from types import TracebackType

import psutil

MB = 1024 * 1024


class PeakRss:
    """`with PeakRss() as peak: …` then `peak.peak_mb`, `peak.start_mb`."""

    def __init__(self, interval: float = 0.01) -> None:
        self._interval = interval
        self._process = psutil.Process()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.start_mb = 0.0
        self.peak_mb = 0.0

    def _sample(self) -> None:
        rss = self._process.memory_info().rss / MB
        self.peak_mb = max(self.peak_mb, rss)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def __enter__(self) -> PeakRss:
        self.start_mb = self._process.memory_info().rss / MB
        self.peak_mb = self.start_mb
        self._thread = threading.Thread(target=self._run, name="peak-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()


def max_rss_mb() -> float:
    """The highest RSS this process ever had (Linux reports `ru_maxrss` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
