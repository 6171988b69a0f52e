"""`anyam bench --soak 10m`: a steady mixed load for a long while with a fault injected every minute.

The faults cycle through `anyam.reliability.faults.FAULTS` (broker outage,
PostgreSQL restart, each service killed). At the end the load stops, every
service settles, and the ledger, production and enrollment are reconciled
with exactly what was accepted. Needs its own embedded stack: the faults
freeze, restart and kill its processes.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from anyam.demo.runner import StackClients
from anyam.reliability.faults import FAULTS, FaultReport
from anyam.reliability.load import Reconciliation, SteadyLoad
from anyam.stack.errors import StackError
from anyam.stack.lifecycle import start_stack

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h)?\s*$")


def parse_duration(text: str) -> float:
    """Seconds in `90s`, `10m`, `1h` or a bare number of seconds."""
    match = _DURATION.match(text)
    if not match:
        raise StackError(f"--soak takes a duration such as 90s, 10m or 1h, not {text!r}")
    return float(match[1]) * {"s": 1, "m": 60, "h": 3600}[match[2] or "s"]


@dataclass
class SoakResult:
    seconds: float
    rate: float
    fault_every: float
    accepted: int = 0
    retries: int = 0
    retried_statuses: dict[int, int] = field(default_factory=dict)
    longest_wait_seconds: float = 0.0
    faults: list[FaultReport] = field(default_factory=list)
    reconciliation: Reconciliation | None = None
    finished_at: str = ""

    @property
    def exact(self) -> bool:
        return self.reconciliation is not None and self.reconciliation.exact

    def as_json(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 1), "rate_per_second": self.rate, "fault_every_seconds": self.fault_every,
            "commands_accepted": self.accepted, "retries": self.retries,
            "retried_statuses": {str(code): n for code, n in sorted(self.retried_statuses.items())},
            "longest_wait_seconds": round(self.longest_wait_seconds, 2),
            "faults": [{"fault": f.name, "lasted_seconds": round(f.ended - f.began, 1),
                        "recovery_seconds": round(f.recovery_seconds, 2)} for f in self.faults],
            "reconciliation": asdict(self.reconciliation) if self.reconciliation else None,
            "exact": self.exact, "finished_at": self.finished_at,
        }


async def run_soak(seconds: float, *, rate: float = 10.0, fault_every: float = 60.0, progress=lambda _: None
                   ) -> SoakResult:
    """Start an embedded stack, load it for `seconds` with a fault every `fault_every`, then reconcile."""
    workdir = Path(tempfile.mkdtemp(prefix="anyam-soak-"))
    result = SoakResult(seconds=seconds, rate=rate, fault_every=fault_every)
    progress("soak: starting an embedded stack of its own")
    stack = await start_stack(workdir)
    clients = StackClients(stack.env)
    await clients.open()
    load = SteadyLoad(clients, tag=f"soak-{int(time.time())}", rate=rate)
    try:
        await load.prepare()
        load.start()
        started = time.monotonic()
        progress(f"soak: {rate:g} pieces/s with QC and enrolments for {seconds:g}s, a fault every {fault_every:g}s")
        for number in range(int(seconds // fault_every)):
            due = started + (number + 1) * fault_every
            await asyncio.sleep(max(0.0, due - time.monotonic()))  # the soak's schedule, not a wait on the system
            report = await FAULTS[number % len(FAULTS)](stack)
            progress(f"soak: {report.name}; healthy again {report.recovery_seconds:.1f}s after")
            result.faults.append(report)
        await asyncio.sleep(max(0.0, started + seconds - time.monotonic()))
        progress("soak: stopping the load, settling every service, reconciling")
        await load.stop()
        result.reconciliation = await load.reconcile()
    finally:
        result.accepted = load.figures.accepted
        result.retries = load.figures.retries
        result.retried_statuses = dict(load.figures.retried_statuses)
        result.longest_wait_seconds = load.figures.longest_wait_seconds
        result.finished_at = datetime.now(UTC).isoformat(timespec="seconds")
        await load.close()
        await clients.close()
        await asyncio.to_thread(stack.stop)
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def print_soak(console, result: SoakResult) -> None:
    from rich.table import Table

    faults = Table(title="Faults injected")
    for column in ("fault", "lasted (s)", "healthy again after (s)"):
        faults.add_column(column)
    for fault in result.faults:
        faults.add_row(fault.name, f"{fault.ended - fault.began:.1f}", f"{fault.recovery_seconds:.2f}")
    console.print(faults)
    figures = Table(title=f"Soak: {result.seconds:g}s at {result.rate:g} pieces/s")
    figures.add_column("measure")
    figures.add_column("figure", justify="right")
    rec = result.reconciliation
    rows = [("commands accepted", f"{result.accepted:,}"), ("retries through faults", f"{result.retries:,}"),
            ("longest a command waited (s)", f"{result.longest_wait_seconds:.1f}"),
            ("HTTP answers retried, by status", ", ".join(f"{code}: {n:,}" for code, n in
                                                          sorted(result.retried_statuses.items())) or "none")]
    if rec is not None:
        rows += [("pieces", f"{rec.pieces:,}"), ("passed QC", f"{rec.passed:,}"),
                 ("earned in the ledger (IDR)", f"{rec.earned_idr:,}"), ("residents enrolled", f"{rec.enrolments:,}")]
    rows.append(("ledger reconciles exactly", "yes" if result.exact else "NO"))
    for row in rows:
        figures.add_row(*row)
    console.print(figures)
    for problem in (rec.problems if rec else ())[:20]:
        console.print(f"[red]{problem}[/]")
