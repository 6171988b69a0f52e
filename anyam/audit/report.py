"""The auditor's reports for people (rich) and for their tools (JSON).

Artisans and collaborators appear by their opaque ids only, with amounts in
rupiah: a report is shared and archived, and holds no personal data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from anyam.audit.replay import HistoryRead, ReplayResult, totals
from anyam.audit.verify import VerifyReport
from shared.money import rupiah

#: Violations printed per invariant; the JSON report lists them all.
SHOWN = 20


def balances_table(result: ReplayResult) -> Table:
    """Per artisan: earned, payable, in transit and paid as of the cut; totals in the footer."""
    cut = f"as of {result.as_of.isoformat()}" if result.as_of else "the whole history"
    table = Table(title=f"Replayed ledger, {cut}", show_footer=True, title_justify="left")
    total = totals(result.artisans)
    # Amounts never wrap (a rupiah figure split over two lines misleads); long ids fold instead.
    table.add_column("artisan", footer="total", overflow="fold")
    for header, name in (("earned", "earned_idr"), ("payable", "payable_idr"), ("in transit", "in_transit_idr"),
                         ("paid", "paid_idr")):
        table.add_column(header, justify="right", footer=rupiah(getattr(total, name)), no_wrap=True)
    for artisan in result.artisans:
        table.add_row(artisan.artisan_id, rupiah(artisan.earned_idr), rupiah(artisan.payable_idr),
                      rupiah(artisan.in_transit_idr), rupiah(artisan.paid_idr))
    return table


def history_line(history: HistoryRead) -> str:
    """One line on what was read."""
    line = (f"Read {history.records} records ({history.events} events) from {len(history.order)} partitions "
            f"in {history.seconds:.1f} s; {history.posted} ledger transactions")
    if history.undecodable_count:
        line += f"; {history.undecodable_count} undecodable records skipped"
    if history.refused_count:
        line += f"; {history.refused_count} events refused by the ledger"
    return line + "."


def print_replay(console: Console, result: ReplayResult) -> None:
    """`anyam replay`'s human output: the balances table, the digest, what was read."""
    console.print(balances_table(result))
    console.print(f"Ledger digest: {result.digest} ({result.transactions} transactions, {result.postings} postings)",
                  soft_wrap=True)
    console.print(history_line(result.history), soft_wrap=True)
    if result.history.missing_topics:
        console.print(Text(f"Topics not found: {', '.join(result.history.missing_topics)}", "yellow"))


def print_verify(console: Console, report: VerifyReport) -> None:
    """`anyam verify`'s human report: the verdict, each invariant, each violation with its event ids."""
    cut = f"as of {report.as_of.isoformat()}" if report.as_of else "over the whole history"
    console.print(history_line(report.history), soft_wrap=True)
    console.print(f"Replayed ledger digest: {report.replayed.digest}", soft_wrap=True)
    console.print(f"Live ledger digest:     {report.live.digest}", soft_wrap=True)
    for result in report.invariants:
        mark = Text("✓ ", "green") if result.holds else Text("✗ ", "bold red")
        console.print(Text.assemble(mark, (result.name, "bold"), f": {result.description} ({result.checked} checked)"),
                      soft_wrap=True)
        for violation in result.violations[:SHOWN]:
            ids = f" [events: {', '.join(violation.event_ids)}]" if violation.event_ids else ""
            console.print(Text(f"    - {violation.kind}: {violation.message}{ids}", "red"), soft_wrap=True)
        if len(result.violations) > SHOWN:
            console.print(Text(f"    … and {len(result.violations) - SHOWN} more (all in the JSON report)", "red"))
    for warning in report.warnings:
        console.print(Text(f"note: {warning}", "yellow"), soft_wrap=True)
    if report.ok:
        console.print(Text(f"Verified {cut}: the live ledger equals the replay and every invariant holds.",
                           "bold green"), soft_wrap=True)
    else:
        names = ", ".join(result.name for result in report.broken)
        console.print(Text(f"NOT verified {cut}: broken invariants: {names}.", "bold red"), soft_wrap=True)


def dumps(document: Any) -> str:
    """A report document as indented JSON text."""
    return json.dumps(document, indent=2, ensure_ascii=False, sort_keys=False)


def write_json(path: Path, document: Any) -> None:
    """Write a report document to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps(document) + "\n")
