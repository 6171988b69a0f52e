"""`anyam bench` in quick mode with tiny sizes, on the session's broker and PostgreSQL.

Structure and correctness only, never speed (no timed assertions): every measurement
is present and sane, nothing is lost, and the batched replay writes the very ledger
`apply_event` writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import replace

import psutil
import pytest

from anyam.bench.environment import BenchEnvironment
from anyam.bench.history import produce_history, trust_anchors
from anyam.bench.raw_chain import ChainStage
from anyam.bench.replay import APPLY_EVENT, APPLY_EVENTS, Phase, job_for, run_in_child, stop_offsets
from anyam.bench.report import write_json
from anyam.bench.runner import BenchConfig, run_bench
from shared.contracts.provenance import TrustAnchors, new_service_keys
from shared.settings import KafkaSettings

TINY = replace(
    BenchConfig.quick_config(), events=3000, artisans=30, before_events=1000, e2e_rate=50, e2e_seconds=2.0,
    e2e_artisans=10, command_concurrency=(1, 4, 4), command_seconds=0.5, appends=60, append_streams=20,
    append_writers=(1, 2),
)


async def test_quick_bench_measures_everything_and_loses_nothing(broker, postgres, tmp_path):
    env = BenchEnvironment(KafkaSettings(kafka_bootstrap=broker.bootstrap), postgres.server_url, "test", tmp_path)
    try:
        results = await run_bench(TINY, env=env)
    finally:
        await env.cleanup()

    replay = results.replay
    assert replay is not None
    assert sum(replay.history.values()) == TINY.events
    assert replay.baseline.events == replay.replay.events == TINY.events
    assert replay.replay.rejected == replay.replay.undecodable == 0
    # The history is genuine, and the replays checked it: every money event vouched for by its topic's
    # owner and each QC result by its collaborator (`anyam replay`), every record by its owner (one by
    # one, as the ledger consumer), and not one of them refused.
    assert replay.replay.refused == 0
    assert replay.attestations_checked > replay.collaborator_signatures_checked == replay.history["qc-passed"] > 0
    assert replay.replay.transactions > 0 and replay.replay.postings == 2 * replay.replay.transactions
    # The replayed ledger is the one the posting rules make, computed in memory without Kafka or SQL...
    assert replay.replay.digest == replay.expected_digest
    # ...and apply_events wrote exactly what apply_event writes, on the same events.
    assert replay.before is not None and replay.after_on_cut is not None
    assert replay.before.events == replay.after_on_cut.events > 0
    assert replay.identical is True
    assert replay.before.refused == replay.after_on_cut.refused == 0
    for figures in (replay.baseline, replay.replay, replay.before, replay.after_on_cut):
        assert figures.seconds > 0 and figures.events_per_second > 0 and figures.peak_rss_mb > 0
    assert replay.ratio_to_baseline > 0

    growth = results.growth
    assert growth is not None and len(growth.points) == 3
    assert [p.events for p in growth.points] == sorted(p.events for p in growth.points)
    assert growth.points[-1].events == TINY.events
    assert all(p.microseconds_per_event > 0 and p.peak_rss_mb > 0 for p in growth.points)

    latency = results.latency
    assert latency is not None
    assert latency.published == int(TINY.e2e_rate * TINY.e2e_seconds)
    assert latency.lost == 0 and latency.committed == latency.published
    assert 0 < latency.p50_ms <= latency.p95_ms <= latency.p99_ms <= latency.max_ms
    # Its baseline carried the same records through the same two broker hops, and lost none either.
    raw = latency.raw_chain
    assert raw is not None
    assert raw.published == raw.delivered == latency.published and raw.lost == 0
    assert 0 < raw.p50_ms <= raw.p95_ms <= raw.p99_ms <= raw.max_ms
    assert latency.p99_to_raw_chain == latency.p99_ms / raw.p99_ms
    # Its stages ran in processes of their own, as the services do, and none is left running.
    assert not _running_children("anyam.bench.raw_chain")

    assert results.commands is not None
    assert [step.concurrency for step in results.commands] == list(TINY.command_concurrency)
    assert all(step.requests > 0 and step.errors == 0 and step.throughput_per_second > 0 for step in results.commands)
    assert all(step.p50_ms <= step.p99_ms for step in results.commands)
    assert all(step.service_cpu_us_per_request > 0 and step.service_cpu_percent > 0 for step in results.commands)
    # Every answered request recorded its own piece, in the repeated step too: none was an answer
    # replayed for an idempotency key an earlier step had used.
    assert [step.pieces_recorded for step in results.commands] == [step.requests for step in results.commands]

    appends = results.appends
    assert appends is not None and appends.peer_error is None
    assert {(run.store.split()[0], run.writers) for run in appends.runs} == {
        (store, writers) for store in ("anyam", "eventsourcing") for writers in TINY.append_writers}
    assert all(run.appends == TINY.appends and run.appends_per_second > 0 for run in appends.runs)
    assert len(appends.ratios) == len(TINY.append_writers) and all(r > 0 for r in appends.ratios.values())

    assert {target.name for target in results.targets} >= {"replay throughput", "end-to-end lost", "POST /pieces"}
    assert [t.met for t in results.targets if t.name == "replay refused of an honest history"] == [True]
    path = tmp_path / "bench.json"
    write_json(results, path)
    document = json.loads(path.read_text())
    assert {"machine", "config", "replay", "latency", "commands", "appends", "growth", "targets"} <= set(document)
    assert document["latency"]["raw_chain"]["delivered"] == latency.published
    assert document["latency"]["p99_to_raw_chain"] == latency.p99_to_raw_chain
    assert document["machine"]["cpus"] >= 1


async def test_the_bench_replays_check_the_history_against_the_anchors_they_are_given(broker, postgres, tmp_path):
    # The bench's honest history, replayed by the bench's own phases with anchors that are not its
    # services' keys: the checks run, so the auditor's replay refuses every event that would move
    # money, and the consumer's checks every record (all of them are on a service's topic).
    env = BenchEnvironment(KafkaSettings(kafka_bootstrap=broker.bootstrap), postgres.server_url, "test", tmp_path)
    try:
        kafka = await env.fresh_topics("trust")
        stats = await produce_history(kafka, 400, 8)
        money = sum(stats.by_type[t] for t in ("qc-passed", "payout-scheduled", "paid", "payout-failed"))
        assert 0 < money < stats.events
        stops = await stop_offsets(kafka)
        one, many = await env.fresh_database("trust_one"), await env.fresh_database("trust_many")
        phases = [Phase(APPLY_EVENT, one), Phase(APPLY_EVENTS, many)]
        honest = await run_in_child(job_for(kafka, stops, phases, 100, trust_anchors()))
        one, many = await env.fresh_database("stranger_one"), await env.fresh_database("stranger_many")
        phases = [Phase(APPLY_EVENT, one), Phase(APPLY_EVENTS, many)]
        stranger = await run_in_child(job_for(kafka, stops, phases, 100, TrustAnchors.of(new_service_keys())))
    finally:
        await env.cleanup()

    assert [(f.events, f.refused) for f in honest] == [(stats.events, 0), (stats.events, 0)]
    assert honest[0].digest == honest[1].digest and honest[1].transactions == money
    one_by_one, batched = stranger
    assert (one_by_one.events, one_by_one.refused) == (stats.events, stats.events)
    assert (batched.events, batched.refused) == (stats.events, money)
    assert one_by_one.transactions == batched.transactions == 0


def _running_children(module: str) -> list[psutil.Process]:
    running = []
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.ZombieProcess, psutil.NoSuchProcess):  # it has ended
            if module in " ".join(child.cmdline()):
                running.append(child)
    return running


async def test_a_raw_chain_stage_that_fails_says_why_instead_of_hanging():
    kafka = KafkaSettings(kafka_bootstrap="127.0.0.1:1").document_for_a_child()
    stage = ChainStage({"stage": "relay-everything", "kafka": kafka})
    await stage.start()
    try:
        await asyncio.wait_for(stage.ended(), timeout=60)  # a child that hung instead would fail the test here
        with pytest.raises(RuntimeError) as failure:
            stage.raise_if_failed()
        assert "no such stage of the raw chain: 'relay-everything'" in str(failure.value)
        assert "exit 1" in str(failure.value)
    finally:
        await stage.stop()
