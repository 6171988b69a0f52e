"""`anyam bench`: the command; the measuring is in `anyam.bench.runner`."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.status import Status

from anyam.stack import StackError

console = Console()


def _ints(text: str | None, option: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise StackError(f"{option} takes comma-separated whole numbers, e.g. 1,4,16,64") from None
    if not values or min(values) < 1:
        raise StackError(f"{option} takes positive whole numbers")
    return values


def _shown(console: Console, spinner: Status) -> Callable[[str], None]:
    """A progress line: on the spinner, and logged above it."""
    def show(line: str) -> None:
        spinner.update(line)
        console.log(line)
    return show


def bench(
    events: Annotated[int | None, typer.Option("--events", min=10, help="Events replayed (default 1,000,000).")] = None,
    artisans: Annotated[int | None, typer.Option("--artisans", min=1, help="Artisans in the history (10,000).")] = None,
    e2e_rate: Annotated[int | None, typer.Option("--e2e-rate", min=1, help="QC submissions/s (1,000).")] = None,
    e2e_seconds: Annotated[float | None, typer.Option("--e2e-seconds", min=0.1, help="Seconds of publishing (60).")
                           ] = None,
    quick: Annotated[bool, typer.Option("--quick", help="A small version of everything (about 2 minutes).")] = False,
    json_path: Annotated[Path, typer.Option("--json", help="Where to write the figures as JSON.", dir_okay=False)
                         ] = Path("bench-results.json"),
    endpoints: Annotated[bool, typer.Option(
        "--endpoints", help="Use the broker and PostgreSQL of ANYAM_KAFKA_* / ANYAM_POSTGRES_URL instead of "
                            "starting an embedded stack.")] = False,
    only: Annotated[str | None, typer.Option(
        "--only", help="Comma-separated subset of replay,growth,latency,commands,appends.")] = None,
    growth: Annotated[str | None, typer.Option("--growth", help="Replay sizes, e.g. 100000,300000,1000000.")] = None,
    before_events: Annotated[int | None, typer.Option(
        "--before-events", min=0, help="Events replayed with apply_event one by one (50,000; 0: skip).")] = None,
    concurrency: Annotated[str | None, typer.Option("--concurrency", help="POST /pieces steps (1,4,16,64).")] = None,
    command_seconds: Annotated[float | None, typer.Option("--command-seconds", min=0.1, help="Seconds per step (10).")
                               ] = None,
    appends: Annotated[int | None, typer.Option("--appends", min=1, help="Appends per store and step (5,000).")
                       ] = None,
    partitions: Annotated[int | None, typer.Option(
        "--partitions", min=1, help="Partitions per topic (3; qc-submissions: 1).")] = None,
    soak: Annotated[str | None, typer.Option(
        "--soak", help="Instead: a steady mixed load for this long (e.g. 10m) with a fault every minute, then "
                       "reconcile the ledger with what was accepted (own embedded stack).")] = None,
    soak_rate: Annotated[float, typer.Option("--soak-rate", min=0.1, help="Pieces per second in the soak.")] = 10.0,
    broker: Annotated[str | None, typer.Option(
        "--broker", envvar="ANYAM_STACK_ENGINE",
        help="The bench's own stack: kafka (Apache Kafka) or tansu. Default: kafka where Java is present.")] = None,
    brokers: Annotated[int | None, typer.Option("--brokers", min=1, max=3, help="Apache Kafka nodes: 1 or 3 (3).")
                       ] = None,
) -> None:
    """Measure replay, end-to-end latency, commands, appends against a peer, and growth; print and write JSON."""
    if soak is not None:
        _soak(soak, soak_rate, json_path, endpoints)
        return
    from anyam.bench.report import print_results, write_json
    from anyam.bench.runner import MEASUREMENTS, BenchConfig, run, with_overrides

    chosen = None
    if only is not None:
        chosen = tuple(part.strip() for part in only.split(",") if part.strip())
        unknown = sorted(set(chosen) - set(MEASUREMENTS))
        if unknown:
            raise StackError(f"--only: no measurement {', '.join(unknown)}; choose from {', '.join(MEASUREMENTS)}")
    config = with_overrides(
        BenchConfig.quick_config() if quick else BenchConfig(),
        events=events, artisans=artisans, e2e_rate=e2e_rate, e2e_seconds=e2e_seconds, only=chosen,
        growth_sizes=_ints(growth, "--growth"), before_events=before_events,
        command_concurrency=_ints(concurrency, "--concurrency"), command_seconds=command_seconds,
        appends=appends, partitions=partitions, broker=broker, brokers=brokers,
    )
    if config.broker not in ("", "kafka", "tansu") or config.brokers not in (1, 3):
        raise StackError("--broker is kafka or tansu, --brokers 1 or 3")
    command = "anyam " + " ".join(shlex.quote(arg) for arg in sys.argv[1:])
    with console.status("benchmarking…") as spinner:
        results = run(config, endpoints=endpoints, progress=_shown(console, spinner), command=command)
    print_results(console, results)
    write_json(results, json_path)
    console.print(f"Figures written to [bold]{json_path}[/].")


def _soak(duration: str, rate: float, json_path: Path, endpoints: bool) -> None:
    import asyncio
    import json
    import logging

    from anyam.bench.soak import parse_duration, print_soak, run_soak

    # The faults are deliberate: clients' reconnection complaints would bury the soak's own lines.
    for noisy in ("asyncpg.pool", "aiokafka"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    if endpoints:
        raise StackError("--soak injects faults into processes it starts itself; it cannot run on --endpoints")
    with console.status("soaking…") as spinner:
        result = asyncio.run(run_soak(parse_duration(duration), rate=rate,
                                      progress=_shown(console, spinner)))
    print_soak(console, result)
    json_path.write_text(json.dumps({"soak": result.as_json()}, indent=2) + "\n")
    console.print(f"Figures written to [bold]{json_path}[/].")
    if not result.exact:
        raise typer.Exit(1)
