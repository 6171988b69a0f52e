"""Printing the demo's outcome for people: per rusunawa a table per artisan, rupiah as Jakarta writes them."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from anyam.demo.runner import DemoResult, ProgrammeResult
from shared.money import rupiah


def summary_table(result: ProgrammeResult) -> Table:
    """Per artisan: pieces woven and passed, earned, paid and still owed; totals in the footer.

    Residents appear by their opaque id only: a console is a log, and logs hold no personal data.
    Numbers are never cut: their columns do not wrap and are as wide as their widest figure, so on a
    narrow terminal (80 columns) it is the ids that fold onto a second line; no outer edge, to leave
    the ids as much room as there is.
    """
    table = Table(title=f"Rusunawa {result.rusunawa}: the programme so far", show_footer=True, title_justify="left",
                  show_edge=False, pad_edge=False)
    totals = result.totals
    table.add_column("artisan", footer="total", overflow="fold")
    for header, field in (("woven", "pieces_woven"), ("passed", "pieces_passed")):
        column = [str(getattr(row, field)) for row in (*result.artisans, totals)]
        table.add_column(header, justify="right", footer=column[-1], no_wrap=True,
                         min_width=max(len(header), *map(len, column)))
    for header, field in (("earned", "earned_idr"), ("paid", "paid_idr"), ("owed", "owed_idr")):
        column = [rupiah(getattr(row, field)) for row in (*result.artisans, totals)]
        table.add_column(header, justify="right", footer=column[-1], no_wrap=True,
                         min_width=max(len(header), *map(len, column)))
    for artisan in result.artisans:
        table.add_row(artisan.resident_id, str(artisan.pieces_woven), str(artisan.pieces_passed),
                      rupiah(artisan.earned_idr), rupiah(artisan.paid_idr), rupiah(artisan.owed_idr))
    return table


def print_result(console: Console, result: DemoResult) -> None:
    """A table per rusunawa, a line per rusunawa with its craft and OVOP product, then the run's facts."""
    for programme in result.programmes:
        console.print(summary_table(programme))
    for programme in result.programmes:
        part = programme.totals
        console.print(f"Rusunawa {programme.rusunawa}: {programme.skill}, OVOP product {programme.ovop_product}; "
                      f"{len(programme.artisans)} artisans, {part.pieces_passed} of {part.pieces_woven} pieces "
                      f"passed, {rupiah(part.earned_idr)} earned.")
    totals = result.totals
    console.print(
        f"{totals.pieces_passed} of {totals.pieces_woven} pieces passed QC; "
        f"{result.payouts_paid} payouts paid, {result.payouts_failed} failed and returned to payable."
    )
    over = result.materials_flagged.get("woven-beyond-materials", 0)
    idle = result.materials_flagged.get("idle-materials", 0)
    console.print(f"Bahan baku: {over} artisans wove beyond their materials, {idle} hold idle ones.")
    console.print(f"Ledger digest: {result.ledger_digest}")
    console.print(f"Demo ran in {result.seconds:.1f} s.")
