"""Measurement 5: how replay time grows with the history's length.

The history of measurement 1 is replayed again up to smaller cuts (each partition cut
at the same proportion, so each cut is an earlier, shorter history of the same
programme), each into a fresh database and a fresh process with the batched projection.
Linear cost means a flat time per event, and a flat peak memory means the replay holds
no more than a batch whatever the length.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from anyam.bench.environment import BenchEnvironment
from anyam.bench.replay import APPLY_EVENTS, Phase, PhaseFigures, job_for, run_in_child, stop_offsets
from shared.settings import KafkaSettings


@dataclass
class GrowthPoint:
    target_events: int
    events: int
    seconds: float
    microseconds_per_event: float
    events_per_second: float
    peak_rss_mb: float

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GrowthFigures:
    points: list[GrowthPoint]
    #: Time per event at the longest history divided by that at the shortest (1.0: perfectly linear).
    per_event_ratio: float

    def as_json(self) -> dict[str, Any]:
        return {"points": [p.as_json() for p in self.points], "per_event_ratio": self.per_event_ratio}


def point(target: int, figures: PhaseFigures) -> GrowthPoint:
    return GrowthPoint(
        target_events=target, events=figures.events, seconds=figures.seconds,
        microseconds_per_event=figures.seconds / figures.events * 1e6 if figures.events else 0.0,
        events_per_second=figures.events_per_second, peak_rss_mb=figures.peak_rss_mb,
    )


async def measure_growth(
    env: BenchEnvironment, kafka: KafkaSettings, *, total: int, sizes: list[int], batch: int,
    full: PhaseFigures | None = None,
) -> GrowthFigures:
    """Replay time at each of `sizes` (events) of the `total`-event history on `kafka`'s topics.

    `full`, the batched replay of the whole history measured already, stands for the size
    equal to `total` rather than replaying a million events twice.
    """
    points = []
    for size in sorted(set(sizes)):
        if full is not None and size >= total:
            points.append(point(total, full))
            continue
        stops = await stop_offsets(kafka, fraction=min(1.0, size / total))
        url = await env.fresh_database(f"growth_{size}")
        try:
            (figures,) = await run_in_child(job_for(kafka, stops, [Phase(APPLY_EVENTS, url)], batch))
        finally:
            await env.drop_database(url)
        points.append(point(size, figures))
    ratio = points[-1].microseconds_per_event / points[0].microseconds_per_event if len(points) > 1 else 1.0
    return GrowthFigures(points, ratio)
