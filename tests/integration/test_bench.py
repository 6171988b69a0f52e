"""`anyam bench` in quick mode with tiny sizes, on the session's broker and PostgreSQL.

Structure and correctness only, never speed (no timed assertions): every measurement
is present and sane, nothing is lost, and the batched projection writes the very ledger
`apply_event` writes.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import timedelta

import asyncpg

from services.payout import domain, projections
from services.payout.projections import Source
from shared.bench.environment import BenchEnvironment
from shared.bench.history import generate_history
from shared.bench.ledger_batch import apply_events
from shared.bench.report import write_json
from shared.bench.runner import BenchConfig, run_bench
from shared.contracts import Envelope
from shared.contracts.events import Paid, PayoutFailed, QcPassed
from shared.eventstore import Reject
from shared.settings import KafkaSettings

TINY = replace(
    BenchConfig.quick_config(), events=3000, artisans=30, before_events=1000, e2e_rate=50, e2e_seconds=2.0,
    e2e_artisans=10, command_concurrency=(1, 4), command_seconds=0.5, appends=60, append_streams=20,
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
    assert replay.replay.transactions > 0 and replay.replay.postings == 2 * replay.replay.transactions
    # The replayed ledger is the one the posting rules make, computed in memory without Kafka or SQL...
    assert replay.replay.digest == replay.expected_digest
    # ...and apply_events wrote exactly what apply_event writes, on the same events.
    assert replay.before is not None and replay.after_on_cut is not None
    assert replay.before.events == replay.after_on_cut.events > 0
    assert replay.identical is True
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

    assert results.commands is not None
    assert [step.concurrency for step in results.commands] == list(TINY.command_concurrency)
    assert all(step.requests > 0 and step.errors == 0 and step.throughput_per_second > 0 for step in results.commands)
    assert all(step.p50_ms <= step.p99_ms for step in results.commands)

    appends = results.appends
    assert appends is not None and appends.peer_error is None
    assert {(run.store.split()[0], run.writers) for run in appends.runs} == {
        (store, writers) for store in ("anyam", "eventsourcing") for writers in TINY.append_writers}
    assert all(run.appends == TINY.appends and run.appends_per_second > 0 for run in appends.runs)
    assert len(appends.ratios) == len(TINY.append_writers) and all(r > 0 for r in appends.ratios.values())

    assert {target.name for target in results.targets} >= {"replay throughput", "end-to-end lost", "POST /pieces"}
    path = tmp_path / "bench.json"
    write_json(results, path)
    document = json.loads(path.read_text())
    assert {"machine", "config", "replay", "latency", "commands", "appends", "growth", "targets"} <= set(document)
    assert document["machine"]["cpus"] >= 1


def _with_trouble(events: list[Envelope]) -> list[Envelope]:
    """The history with what a replay must survive: redeliveries, and second events for one piece or payout."""
    troubled = list(events)
    passed = [e for e in events if isinstance(e.data, QcPassed)]
    paid = [e for e in events if isinstance(e.data, Paid)]
    for event in passed[:5] + paid[:3]:
        troubled.insert(events.index(event) + 2, event)  # the relay's at-least-once: the same event again
    for event in passed[5:9]:
        # A second, different qc-passed for one piece: the first one posted wins, the second is refused.
        second = Envelope.wrap(event.data.model_copy(update={"amount_idr": 1}), source=event.source,
                               time=event.time + timedelta(minutes=5))
        troubled.insert(troubled.index(event) + 1, second)
    for event in paid[3:6]:
        # A payout that ends twice: failed after it was paid.
        failed = Envelope.wrap(PayoutFailed(payout_id=event.data.payout_id, artisan_id=event.data.artisan_id,
                                            amount_idr=event.data.amount_idr, reason="late bounce"),
                               source=event.source, time=event.time)
        troubled.insert(troubled.index(event) + 3, failed)
    return troubled


async def test_apply_events_writes_what_apply_event_writes(postgres):
    events = _with_trouble(list(generate_history(1500, 12, seed=3)))
    sources = [Source("bench-production", n % 3, n) for n in range(len(events))]
    tag = uuid.uuid4().hex[:8]
    one_by_one = await postgres.create_database(f"t_bench_one_{tag}")
    batched = await postgres.create_database(f"t_bench_batched_{tag}")
    digests, refusals = {}, {}
    for url in (one_by_one, batched):
        conn = await asyncpg.connect(url)
        try:
            await projections.install_ledger(conn)
            refused: list[tuple[int, str, str]] = []
            if url == one_by_one:
                async with conn.transaction():
                    for n, (event, source) in enumerate(zip(events, sources, strict=True)):
                        try:
                            await projections.apply_event(conn, event, source=source)
                        except Reject as refusal:
                            refused.append((n, refusal.reason, refusal.detail))
            else:
                # Batches of 7: redeliveries and second events land both inside a batch and across batches.
                for start in range(0, len(events), 7):
                    async with conn.transaction():
                        outcome = await apply_events(conn, list(zip(events[start:start + 7],
                                                                    sources[start:start + 7], strict=True)))
                    assert not outcome.failed
                    refused += [(start + i, r.reason, r.detail) for i, r in outcome.rejected]
            digests[url] = (await projections.ledger_digest(conn)).digest
            rows = await conn.fetch("""SELECT transaction_id, kind, business_key, event_id, event_type, event_time,
                                              artisan_id, subject_id, amount_idr, source_topic, source_partition,
                                              source_offset FROM ledger_transactions ORDER BY transaction_id""")
            refusals[url] = (refused, [tuple(row) for row in rows])
        finally:
            await conn.close()
            admin = await asyncpg.connect(postgres.server_url)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{url.split("?")[0].rsplit("/", 1)[-1]}" WITH (FORCE)')
            finally:
                await admin.close()
    assert digests[one_by_one] == digests[batched]
    assert refusals[one_by_one] == refusals[batched]  # the same refusals, word for word, and the same rows
    refused = refusals[batched][0]
    assert {reason for _, reason, _ in refused} == {"piece-already-posted", "payout-already-posted"}
    assert len(refused) == 4 + 3
    expected = domain.ledger_digest(domain.digest_rows(
        {tx.business_key: tx for tx in reversed([domain.transaction_for(e) for e in events])
         if tx is not None}.values()))
    assert digests[batched] == expected
