"""The bench's report: rich tables on the terminal, and the same figures as JSON."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from anyam.bench.runner import BenchResults


def write_json(results: BenchResults, path: Path) -> None:
    path.write_text(json.dumps(results.as_json(), indent=2, ensure_ascii=False) + "\n")


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left")
    for n, column in enumerate(columns):
        table.add_column(column, justify="left" if n == 0 else "right")
    return table


def print_results(console: Console, results: BenchResults) -> None:
    m = results.machine
    console.print(f"[bold]anyam bench[/] on {m['cpus']} × {m['cpu_model']}, {m['memory_gib']} GiB, "
                  f"Python {m['python']}, PostgreSQL {m.get('postgres', '?')}; {results.environment}")
    if results.replay is not None:
        replay = results.replay
        table = _table("1. Ledger replay (events from production + payout topics)", "run", "events", "seconds",
                       "events/s", "peak RSS MB", "ratio", "digest")
        table.add_row("raw aiokafka consumption (baseline)", f"{replay.baseline.events:,}",
                      f"{replay.baseline.seconds:.2f}", f"{replay.baseline.events_per_second:,.0f}",
                      f"{replay.baseline.peak_rss_mb:.0f}", "1.000", "")
        table.add_row("apply_events, batched (after)", f"{replay.replay.events:,}", f"{replay.replay.seconds:.2f}",
                      f"{replay.replay.events_per_second:,.0f}", f"{replay.replay.peak_rss_mb:.0f}",
                      f"{replay.ratio_to_baseline:.3f}", (replay.replay.digest or "")[:12])
        if replay.before is not None and replay.after_on_cut is not None:
            table.add_row("apply_event, one by one (before)", f"{replay.before.events:,}",
                          f"{replay.before.seconds:.2f}", f"{replay.before.events_per_second:,.0f}",
                          f"{replay.before.peak_rss_mb:.0f}", "", (replay.before.digest or "")[:12])
            table.add_row("apply_events on the same events", f"{replay.after_on_cut.events:,}",
                          f"{replay.after_on_cut.seconds:.2f}", f"{replay.after_on_cut.events_per_second:,.0f}",
                          f"{replay.after_on_cut.peak_rss_mb:.0f}", "", (replay.after_on_cut.digest or "")[:12])
        console.print(table)
        per_event = ", ".join(f"{name.removeprefix('cpu_of_').replace('_', ' ')} "
                              f"{value / max(replay.replay.events, 1) * 1e6:.1f} µs"
                              for name, value in replay.replay.stage_seconds.items() if name.startswith("cpu_of_"))
        console.print(f"   provenance checked as `anyam replay` checks it: {replay.attestations_checked:,} "
                      f"attestations (a tree head signed per relay batch) and "
                      f"{replay.collaborator_signatures_checked:,} collaborators' Ed25519 signatures "
                      f"({replay.collaborator_signatures_checked / max(replay.replay.events, 1):.2f} per event); "
                      f"refused {replay.replay.refused:,}"
                      + (f" (one by one: {replay.before.refused:,})" if replay.before is not None else ""))
        console.print(f"   CPU per event of the batched replay: {per_event}; "
                      f"same ledger as apply_event: {replay.identical}; "
                      f"in-memory digest matches: "
                      f"{None if replay.expected_digest is None else replay.expected_digest == replay.replay.digest}")
    if results.growth is not None:
        table = _table("5. Growth of replay cost", "history", "events", "seconds", "µs/event", "events/s",
                       "peak RSS MB")
        for point in results.growth.points:
            table.add_row(f"{point.target_events:,}", f"{point.events:,}", f"{point.seconds:.2f}",
                          f"{point.microseconds_per_event:.1f}", f"{point.events_per_second:,.0f}",
                          f"{point.peak_rss_mb:.0f}")
        console.print(table)
    if results.latency is not None:
        lat = results.latency
        table = _table(f"2. End to end: signed QC submission → ledger row committed "
                       f"({lat.rate_per_second:,}/s for {lat.seconds:g}s)",
                       "run", "published", "rate/s", "arrived", "lost", "p50 ms", "p95 ms", "p99 ms", "max ms")
        if (raw := lat.raw_chain) is not None:
            table.add_row("raw two-hop chain", f"{raw.published:,}", "", f"{raw.delivered:,}",
                          str(raw.lost), f"{raw.p50_ms:,.0f}", f"{raw.p95_ms:,.0f}", f"{raw.p99_ms:,.0f}",
                          f"{raw.max_ms:,.0f}")
        table.add_row("Anyam", f"{lat.published:,}", f"{lat.achieved_rate:,.0f}",
                      f"{lat.committed:,}", str(lat.lost), f"{lat.p50_ms:,.0f}", f"{lat.p95_ms:,.0f}",
                      f"{lat.p99_ms:,.0f}", f"{lat.max_ms:,.0f}")
        console.print(table)
        if lat.p99_to_raw_chain is not None:
            console.print(f"   Anyam's p99 is {lat.p99_to_raw_chain:.2f}× the raw chain's (the baseline: the same "
                          "records through the same two broker hops, nothing between them)")
        console.print(f"   poll resolution {lat.poll_resolution_ms:.1f} ms; last row {lat.drain_seconds:.1f}s after "
                      f"the last publish; to production's relay: p50 {lat.relayed_p50_ms:,.0f} ms, "
                      f"p99 {lat.relayed_p99_ms:,.0f} ms")
        if lat.broker_cpu_percent:
            console.print("   embedded broker's CPU over the run, % of a core per tenth: "
                          + " ".join(f"{share:.0f}" for share in lat.broker_cpu_percent))
        if lat.raw_chain is not None and lat.raw_chain.broker_cpu_percent:
            console.print("   the same over the raw chain: "
                          + " ".join(f"{share:.0f}" for share in lat.raw_chain.broker_cpu_percent))
    if results.commands is not None:
        table = _table("3. POST /pieces, one production process", "concurrency", "requests", "errors",
                       "pieces recorded", "per s", "p50 ms", "p99 ms", "max ms", "service CPU µs/req",
                       "service % of a core")
        for step in results.commands:
            table.add_row(str(step.concurrency), f"{step.requests:,}", str(step.errors), f"{step.pieces_recorded:,}",
                          f"{step.throughput_per_second:,.0f}", f"{step.p50_ms:.1f}", f"{step.p99_ms:.1f}",
                          f"{step.max_ms:.1f}", f"{step.service_cpu_us_per_request:,.0f}",
                          f"{step.service_cpu_percent:.0f}")
        console.print(table)
    if results.appends is not None:
        table = _table("4. Event store appends (1 event per append, same PostgreSQL)", "store", "writers",
                       "appends", "seconds", "appends/s")
        for run in results.appends.runs:
            table.add_row(run.store, str(run.writers), f"{run.appends:,}", f"{run.seconds:.2f}",
                          f"{run.appends_per_second:,.0f}")
        console.print(table)
        if results.appends.peer_error:
            console.print(Text(results.appends.peer_error, style="yellow"))
    if results.targets:
        table = _table("Targets", "target", "wanted", "measured", "met")
        for target in results.targets:
            table.add_row(target.name, target.wanted, target.measured,
                          Text("yes", "green") if target.met else Text("no", "red"))
        console.print(table)
    console.print(f"{results.seconds:.0f}s in all.")
