"""The peak resident memory of this process, as the kernel keeps it.

Linux keeps each process's peak RSS (`VmHWM` in /proc/self/status), and writing "5" to
/proc/self/clear_refs resets it to the current RSS (Linux 4.0 and later). Unlike `ru_maxrss`,
which Linux carries over `execve` (a child started from a large parent reports the parent's
size as its own peak), VmHWM belongs to the process's present image.
"""

from __future__ import annotations

import re
from pathlib import Path

_STATUS, _CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")
_HIGH_WATER_MARK = re.compile(r"^VmHWM:\s+(\d+) kB$", re.MULTILINE)
#: What `clear_refs` understands as "reset the peak RSS to the current RSS".
_RESET_PEAK = "5"


def peak_rss_mb() -> float | None:
    """This process's peak RSS in MB since it started or since `reset_peak_rss`; None where unknown."""
    try:
        found = _HIGH_WATER_MARK.search(_STATUS.read_text())
    except OSError:
        return None
    return int(found.group(1)) / 1024 if found else None


def reset_peak_rss() -> bool:
    """Make the current RSS this process's peak; False where the kernel offers no such thing."""
    try:
        _CLEAR_REFS.write_text(_RESET_PEAK)
    except OSError:
        return False
    return peak_rss_mb() is not None
