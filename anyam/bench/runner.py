"""Runs the bench's measurements in order on one environment and gathers their figures and targets.

The order matters on a small machine: the replay (the most CPU-bound) runs first, on a
quiet box, and everything each measurement made is deleted before the next starts.
"""

from __future__ import annotations

import asyncio
import math
import os
import platform
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import asyncpg
import psutil

from anyam.bench.appends import AppendFigures, measure_appends
from anyam.bench.commands import CommandStep, measure_commands
from anyam.bench.environment import BenchEnvironment, bench_environment
from anyam.bench.growth import GrowthFigures, measure_growth
from anyam.bench.latency import LatencyFigures, measure_latency
from anyam.bench.replay import ReplayResults, measure_replay

MEASUREMENTS = ("replay", "latency", "commands", "appends", "growth")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class BenchConfig:
    """Sizes of every measurement; the defaults are the issue's, `quick()` a small version of each."""

    events: int = 1_000_000
    artisans: int = 10_000
    batch: int = 1000
    #: apply_event (one event at a time, as the service has it) runs on this many events only.
    before_events: int = 50_000
    growth_sizes: tuple[int, ...] = ()  # empty: 10%, 30% and 100% of `events`
    e2e_rate: int = 1000
    e2e_seconds: float = 60.0
    e2e_artisans: int = 1000
    command_concurrency: tuple[int, ...] = (1, 4, 16, 64)
    command_seconds: float = 10.0
    appends: int = 5000
    append_streams: int = 1000
    append_writers: tuple[int, ...] = (1, 8)
    partitions: int = 3
    #: The broker of a stack the bench starts itself: "kafka" (Apache Kafka, `brokers` nodes) or "tansu";
    #: empty: the stack's default (`anyam up`'s).
    broker: str = ""
    brokers: int = 3
    only: tuple[str, ...] = MEASUREMENTS
    quick: bool = False

    @classmethod
    def quick_config(cls) -> BenchConfig:
        """Everything, small: a couple of minutes on a 2-core machine."""
        return cls(events=20_000, artisans=200, before_events=5_000, e2e_rate=200, e2e_seconds=5.0,
                   e2e_artisans=50, command_seconds=2.0, appends=400, append_streams=100, quick=True)

    @property
    def sizes(self) -> tuple[int, ...]:
        if self.growth_sizes:
            return tuple(sorted(size for size in self.growth_sizes if 0 < size <= self.events))
        return tuple(sorted({max(1, self.events // 10), max(1, self.events * 3 // 10), self.events}))


@dataclass
class Target:
    name: str
    wanted: str
    measured: str
    met: bool


@dataclass
class BenchResults:
    config: BenchConfig
    machine: dict[str, Any]
    environment: str
    started_at: str
    seconds: float = 0.0
    replay: ReplayResults | None = None
    latency: LatencyFigures | None = None
    commands: list[CommandStep] | None = None
    appends: AppendFigures | None = None
    growth: GrowthFigures | None = None
    targets: list[Target] = field(default_factory=list)
    command: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "command": self.command, "started_at": self.started_at, "seconds": self.seconds,
            "environment": self.environment, "machine": self.machine, "config": asdict(self.config),
            "replay": self.replay.as_json() if self.replay else None,
            "latency": self.latency.as_json() if self.latency else None,
            "commands": [step.as_json() for step in self.commands] if self.commands is not None else None,
            "appends": self.appends.as_json() if self.appends else None,
            "growth": self.growth.as_json() if self.growth else None,
            "targets": [asdict(target) for target in self.targets],
        }


def machine() -> dict[str, Any]:
    """What the figures came from: cores, CPU model, memory, Python."""
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), model)
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model, "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "platform": platform.platform()}


async def run_bench(
    config: BenchConfig, *, env: BenchEnvironment | None = None, endpoints: bool = False,
    progress: Progress = lambda _: None, command: str = "",
) -> BenchResults:
    """Run the configured measurements on `env`, or on an environment of their own (embedded or `endpoints`)."""
    if env is None:
        async with bench_environment(endpoints=endpoints, partitions=config.partitions, engine=config.broker or None,
                                     brokers=config.brokers) as own:
            return await run_bench(config, env=own, progress=progress, command=command)
    started = time.monotonic()
    info = machine()
    info["postgres"] = await _postgres_version(env.postgres_url)
    results = BenchResults(config, info, env.describe(), datetime.now(UTC).isoformat(timespec="seconds"),
                           command=command)
    replay_kafka = None
    try:
        if "replay" in config.only or "growth" in config.only:
            replay_kafka = await env.fresh_topics("replay")
            progress(f"replay: producing {config.events:,} events, then the baseline and the replays")
            results.replay = await measure_replay(env, replay_kafka, events=config.events, artisans=config.artisans,
                                                  batch=config.batch, before_events=config.before_events)
        if "growth" in config.only:
            assert replay_kafka is not None and results.replay is not None
            progress(f"growth: replaying {', '.join(f'{size:,}' for size in config.sizes)} events")
            results.growth = await measure_growth(env, replay_kafka, total=config.events, sizes=list(config.sizes),
                                                  batch=config.batch, full=results.replay.replay)
    finally:
        if replay_kafka is not None:
            await env.drop_topics(replay_kafka)
    if "latency" in config.only:
        progress(f"latency: {config.e2e_rate:,} signed submissions/s for {config.e2e_seconds:g}s")
        results.latency = await measure_latency(env, rate=config.e2e_rate, seconds=config.e2e_seconds,
                                                artisans=config.e2e_artisans)
    if "commands" in config.only:
        progress(f"commands: POST /pieces at concurrency {', '.join(map(str, config.command_concurrency))}")
        results.commands = await measure_commands(env, concurrency_steps=list(config.command_concurrency),
                                                  seconds=config.command_seconds)
    if "appends" in config.only:
        progress(f"appends: {config.appends:,} appends through our store and the peer's")
        results.appends = await measure_appends(env, appends=config.appends, streams=config.append_streams,
                                                writer_steps=list(config.append_writers))
    results.seconds = time.monotonic() - started
    results.targets = targets(results)
    return results


async def _postgres_version(url: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()


def _verdict_figure(value: float, places: int, *, at_least: bool) -> str:
    """`value` to `places` decimals, rounded away from the target's side: a miss never prints as the
    wanted figure (a ratio of 0.19999 shows as 0.199, not 0.200; a p99 of 100.2 ms as 101, not 100)."""
    scale = 10**places
    shown = (math.floor if at_least else math.ceil)(round(value * scale, 6)) / scale
    return f"{shown:,.{places}f}"


def _raw_chain_note(latency: LatencyFigures) -> str:
    """What the broker alone took for the same two hops, beside Anyam's p99 (nothing without the baseline)."""
    if latency.raw_chain is None:
        return ""
    return f" (raw two-hop chain on the same broker: {latency.raw_chain.p99_ms:,.0f} ms)"


def targets(results: BenchResults) -> list[Target]:
    """The issue's targets, each with what was measured and whether it was met."""
    found: list[Target] = []
    if (replay := results.replay) is not None:
        figures = replay.replay
        found += [
            Target("replay throughput", ">= 50,000 events/s", f"{figures.events_per_second:,.0f} events/s",
                   figures.events_per_second >= 50_000),
            Target("replay / raw consumption", ">= 0.20", _verdict_figure(replay.ratio_to_baseline, 3, at_least=True),
                   replay.ratio_to_baseline >= 0.2),
            Target("replay peak memory", "< 300 MB", f"{figures.peak_rss_mb:,.0f} MB RSS", figures.peak_rss_mb < 300),
            # The history is honest: a replay that refused any of it checked against the wrong keys, or wrongly.
            Target("replay refused of an honest history", "0", f"{figures.refused:,}", figures.refused == 0),
        ]
    if (growth := results.growth) is not None:
        peak = max(point.peak_rss_mb for point in growth.points)
        found.append(Target("replay cost grows linearly", "time/event at longest <= 1.25x shortest",
                            f"{_verdict_figure(growth.per_event_ratio, 2, at_least=False)}x "
                            f"(peak RSS at most {peak:,.0f} MB)",
                            growth.per_event_ratio <= 1.25))
    if (latency := results.latency) is not None:
        found += [
            Target(f"end-to-end p99 at {latency.rate_per_second:,}/s", "<= 100 ms",
                   f"{_verdict_figure(latency.p99_ms, 0, at_least=False)} ms" + _raw_chain_note(latency),
                   latency.p99_ms <= 100),
            Target("end-to-end lost", "0", str(latency.lost), latency.lost == 0),
        ]
    if results.commands:
        good = [step for step in results.commands if step.throughput_per_second >= 1000 and step.p99_ms <= 50]
        # The step that meets the target, if one does (the fastest such), else the fastest: what is shown
        # is what the verdict rests on.
        shown = max(good or results.commands, key=lambda step: step.throughput_per_second)
        found.append(Target("POST /pieces", ">= 1,000/s with p99 <= 50 ms",
                            f"{'' if good else 'best '}{shown.throughput_per_second:,.0f}/s (p99 "
                            f"{shown.p99_ms:,.0f} ms at concurrency {shown.concurrency})", bool(good)))
    if (appends := results.appends) is not None:
        if appends.peer_error:
            found.append(Target("appends vs eventsourcing", ">= 2x", appends.peer_error, False))
        for label, ratio in appends.ratios.items():
            found.append(Target(f"appends vs eventsourcing, {label}", ">= 2x",
                                f"{_verdict_figure(ratio, 2, at_least=True)}x", ratio >= 2))
    return found


def run(config: BenchConfig, *, endpoints: bool = False, progress: Progress = lambda _: None,
        command: str = "") -> BenchResults:
    """Synchronous entry point for the command line."""

    async def main() -> BenchResults:
        # SIGTERM cancels like Ctrl-C does, so the embedded stack, the service processes and the
        # topics and databases of the run are still torn down (SIGTERM's default would orphan them).
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await run_bench(config, endpoints=endpoints, progress=progress, command=command)

    return asyncio.run(main())


def with_overrides(config: BenchConfig, **overrides: Any) -> BenchConfig:
    """`config` with every override that is not None."""
    return replace(config, **{name: value for name, value in overrides.items() if value is not None})
