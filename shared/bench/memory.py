"""Peak memory of this process, as resident set size (RSS).

RSS, not tracemalloc: tracemalloc slows every allocation two to three times, which
would falsify the throughput measured at the same moment, and it sees only Python's
own allocations, not asyncpg's or aiokafka's buffers.

On Linux the kernel keeps the peak itself (`VmHWM` in /proc/self/status), and writing
"5" to /proc/self/clear_refs resets it to the current RSS: exact, and nothing runs
beside the code measured. Elsewhere a sampler thread reads RSS every 10 ms, and a
peak shorter than that can slip by. (The sampler was all there was until 2026-11-29:
in a replay its hundred wake-ups a second, each taking the GIL from the replay, were
2–6 % of the replay process's samples.)
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from types import TracebackType

import psutil

MB = 1024 * 1024
_STATUS, _CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")
_HIGH_WATER_MARK = re.compile(r"^VmHWM:\s+(\d+) kB$", re.MULTILINE)
#: What `clear_refs` understands as "reset the peak RSS to the current RSS" (Linux 4.0 and later).
_RESET_PEAK = "5"


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
        if _reset_kernel_peak():
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
            self.peak_mb = max(self.peak_mb, _kernel_peak_mb() or 0.0)
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


def _reset_kernel_peak() -> bool:
    """Reset this process's kernel-kept peak RSS; False where there is no such thing to reset."""
    try:
        _CLEAR_REFS.write_text(_RESET_PEAK)
    except OSError:
        return False
    return _kernel_peak_mb() is not None


def _kernel_peak_mb() -> float | None:
    try:
        found = _HIGH_WATER_MARK.search(_STATUS.read_text())
    except OSError:
        return None
    return int(found.group(1)) / 1024 if found else None

