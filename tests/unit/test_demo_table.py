"""`anyam demo`'s table fits an 80-column terminal without cutting a number (issue 28 item 8)."""

from __future__ import annotations

import random

from rich.console import Console

from anyam.demo.report import summary_table
from anyam.demo.runner import ArtisanSummary, ProgrammeResult
from shared.money import rupiah

ULID_LETTERS = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def programme(artisans: int = 25, seed: int = 2024) -> ProgrammeResult:
    """A programme as large as the demo's, with ids as enrollment makes them and amounts past ten million."""
    rng = random.Random(seed)
    rows = []
    for _ in range(artisans):
        earned = rng.randrange(50, 900) * 5_000
        paid = rng.randrange(0, earned // 5_000 + 1) * 5_000
        rows.append(ArtisanSummary(
            "res_" + "".join(rng.choice(ULID_LETTERS) for _ in range(26)),
            rng.randint(10, 40), rng.randint(5, 10), earned, paid, earned - paid))
    return ProgrammeResult("Nagrak", "menganyam", "piring", tuple(rows), "col_x", "coh_x", 20, 1)


def rendered(result: ProgrammeResult, width: int) -> str:
    console = Console(width=width, record=True, color_system=None)
    console.print(summary_table(result))
    return console.export_text()


def test_at_80_columns_every_amount_and_count_appears_whole_and_no_line_is_longer():
    result = programme()
    assert len(rupiah(result.totals.earned_idr)) >= len("Rp 10.000.000")  # the case that was cut
    text = rendered(result, 80)
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text
    cells = {token for line in text.splitlines() for token in line.split("│")}
    cells = {cell.strip() for cell in cells}
    for row in (*result.artisans, result.totals):
        for amount in (row.earned_idr, row.paid_idr, row.owed_idr):
            assert rupiah(amount) in cells, rupiah(amount)
        assert str(row.pieces_woven) in cells and str(row.pieces_passed) in cells
    footer = next(line for line in text.splitlines() if line.startswith("total"))
    assert [cell.strip() for cell in footer.split("│")] == [
        "total", str(result.totals.pieces_woven), str(result.totals.pieces_passed),
        rupiah(result.totals.earned_idr), rupiah(result.totals.paid_idr), rupiah(result.totals.owed_idr)]


def test_at_80_columns_the_ids_fold_but_every_character_is_kept():
    result = programme()
    lines = rendered(result, 80).splitlines()
    first_column = "".join(line.split("│")[0].strip() for line in lines if "│" in line)
    for artisan in result.artisans:
        assert artisan.resident_id in first_column


def test_a_wide_terminal_keeps_one_line_per_artisan():
    result = programme()
    text = rendered(result, 200)
    for artisan in result.artisans:
        line = next(line for line in text.splitlines() if artisan.resident_id in line)
        assert rupiah(artisan.earned_idr) in line and rupiah(artisan.owed_idr) in line
