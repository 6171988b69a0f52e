"""The bench's verdict on `POST /pieces` shows the step it rests on."""

from __future__ import annotations

from anyam.bench.commands import CommandStep
from anyam.bench.runner import BenchConfig, BenchResults, targets


def _step(concurrency: int, per_second: float, p99_ms: float) -> CommandStep:
    requests = int(per_second * 10)
    return CommandStep(concurrency=concurrency, requests=requests, errors=0, pieces_recorded=requests,
                       service_cpu_us_per_request=700.0, service_cpu_percent=80.0, seconds=10.0,
                       throughput_per_second=per_second, p50_ms=p99_ms / 2, p99_ms=p99_ms, max_ms=p99_ms,
                       mean_ms=p99_ms / 2)


def _verdict(*steps: CommandStep):
    results = BenchResults(config=BenchConfig(), machine={}, environment="", started_at="", commands=list(steps))
    [target] = [t for t in targets(results) if t.name == "POST /pieces"]
    return target


def test_the_step_that_meets_the_target_is_shown_not_a_faster_one_that_misses_it():
    target = _verdict(_step(16, 1_059, 31.7), _step(64, 1_169, 179.6))

    assert target.met
    assert target.measured == "1,059/s (p99 32 ms at concurrency 16)"


def test_with_no_step_meeting_it_the_fastest_is_shown_as_the_best():
    target = _verdict(_step(16, 959, 28.0), _step(64, 1_169, 179.6))

    assert not target.met
    assert target.measured == "best 1,169/s (p99 180 ms at concurrency 64)"


def test_a_figure_just_short_of_its_target_never_shows_as_the_target():
    from anyam.bench.appends import AppendFigures
    from anyam.bench.replay import PhaseFigures, ReplayResults

    def phase(kind: str, per_second: float) -> PhaseFigures:
        return PhaseFigures(kind, 1_000_000, 1_000_000 / per_second, per_second, 200.0, 70.0)

    replay = ReplayResults(history={}, produce_seconds=1.0, baseline=phase("baseline", 356_311),
                           replay=phase("apply_events", 71_257), before=None, after_on_cut=None, expected_digest=None)
    appends = AppendFigures(runs=[], ratios={"1 writer": 1.9996, "8 writers": 2.0}, peer_version="9.5.6")
    results = BenchResults(config=BenchConfig(), machine={}, environment="", started_at="", replay=replay,
                           appends=appends)
    shown = {t.name: (t.measured, t.met) for t in targets(results)}

    assert shown["replay / raw consumption"] == ("0.199", False)  # 0.19999: not "0.200" beside a "no"
    assert shown["appends vs eventsourcing, 1 writer"] == ("1.99x", False)
    assert shown["appends vs eventsourcing, 8 writers"] == ("2.00x", True)


def test_a_figure_just_over_an_at_most_target_shows_over_it():
    from anyam.bench.runner import _verdict_figure

    assert _verdict_figure(100.2, 0, at_least=False) == "101"  # a p99 of 100.2 ms misses "<= 100 ms"
    assert _verdict_figure(100.0, 0, at_least=False) == "100"
    assert _verdict_figure(1.2501, 2, at_least=False) == "1.26"


def test_the_end_to_end_verdict_shows_the_raw_chain_beside_anyams_p99():
    from anyam.bench.latency import LatencyFigures, RawChainFigures

    def latency(raw: RawChainFigures | None) -> LatencyFigures:
        return LatencyFigures(rate_per_second=1_000, seconds=60.0, published=60_000, achieved_rate=1_000.0,
                              committed=60_000, lost=0, p50_ms=91.0, p95_ms=150.0, p99_ms=185.0, max_ms=506.0,
                              mean_ms=95.0, poll_resolution_ms=5.1, drain_seconds=0.3, setup_seconds=20.0,
                              raw_chain=raw)

    raw = RawChainFigures(published=60_000, delivered=60_000, lost=0, p50_ms=27.0, p95_ms=51.0, p99_ms=64.0,
                          max_ms=100.0)
    with_raw = latency(raw)
    results = BenchResults(config=BenchConfig(), machine={}, environment="", started_at="", latency=with_raw)
    shown = {t.name: (t.measured, t.met) for t in targets(results)}

    assert shown["end-to-end p99 at 1,000/s"] == ("185 ms (raw two-hop chain on the same broker: 64 ms)", False)
    assert with_raw.p99_to_raw_chain == 185.0 / 64.0
    assert with_raw.as_json()["p99_to_raw_chain"] == 185.0 / 64.0
    # Without the baseline (or with one that measured nothing) there is no ratio, and the verdict says only ours.
    assert latency(None).p99_to_raw_chain is None
    results = BenchResults(config=BenchConfig(), machine={}, environment="", started_at="", latency=latency(None))
    assert {t.name: t.measured for t in targets(results)}["end-to-end p99 at 1,000/s"] == "185 ms"
