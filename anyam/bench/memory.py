"""Peak memory of this process, as resident set size (RSS).

RSS, not tracemalloc: tracemalloc slows every allocation two to three times, which
would falsify the throughput measured at the same moment, and it sees only Python's
own allocations, not asyncpg's or aiokafka's buffers.

On Linux the kernel keeps the peak itself (`anyam.peak_rss`), reset when a measurement
starts: exact, and nothing runs beside the code measured. Elsewhere a sampler thread
reads RSS every 10 ms, and a peak shorter than that can slip by (and its hundred wake-ups
a second, each taking the GIL from a replay, slow what it measures).
"""

from __future__ import annotations

import threading
from types import TracebackType

import psutil

from anyam.peak_rss import peak_rss_mb, reset_peak_rss

MB = 1024 * 1024


class PeakRss:
    """`with PeakRss() as peak: …` then `peak.peak_mb`, `peak.start_mb` and `peak.measure` (how)."""

    def __init__(self, interval: float = 0.01) -> None:
        self._interval = interval
        self._process = psutil.Process()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.start_mb = 0.0
        self.peak_mb = 0.0
        self.measure = ""

    def __enter__(self) -> PeakRss:
        self.start_mb = self.peak_mb = self._rss_mb()
        if reset_peak_rss():
            self.measure = "the kernel's peak RSS of the process (VmHWM), reset at the start"
        else:
            self.measure = f"RSS of the process sampled by psutil every {self._interval * 1000:g} ms"
            self._thread = threading.Thread(target=self._run, name="peak-rss", daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._thread is None:
            self.peak_mb = max(self.peak_mb, peak_rss_mb() or 0.0)
            return
        self._stop.set()
        self._thread.join()
        self._sample()

    def _rss_mb(self) -> float:
        return self._process.memory_info().rss / MB

    def _sample(self) -> None:
        self.peak_mb = max(self.peak_mb, self._rss_mb())

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

