"""`anyam pieces import`'s table and summary: what a field officer reads, on an 80-column terminal."""

from __future__ import annotations

from rich.console import Console

from anyam.pieces import results_table, summary, upload_key

ANSWER = {
    "rows": 3, "recorded": 1, "already_recorded": 1, "refused": 1,
    "results": [
        {"row": 2, "status": "recorded", "piece_id": "pc_01HQ5P2ZKJ8M3V6X9B0C4D7E1F", "rate_idr": 17_500},
        {"row": 3, "status": "already-recorded", "piece_id": "pc_01HQ5P31Z6R8T0W2Y4A6C8E0G2", "rate_idr": 1_250_000},
        {"row": 1999, "status": "refused", "code": "no-rate-in-force",
         "message": "Collaborator col_01HQ5P31Z6R8T0W2Y4A6C8E0G2 has no rate for 'tempat mangkuk' in force at "
                    "2024-03-05T10:00:00+07:00 (products with rates: dompet, piring, tas); set one first."},
    ],
}


def rendered(width: int) -> list[str]:
    console = Console(width=width, record=True, color_system=None)
    console.print(results_table(ANSWER))
    console.print(summary(ANSWER))
    return console.export_text().splitlines()


def test_each_row_shows_its_piece_and_rate_or_its_whole_reason_within_80_columns():
    lines = rendered(80)
    assert max(map(len, lines)) <= 80
    text = "\n".join(lines)
    assert "pc_01HQ5P2ZKJ8M3V6X9B0C4D7E1F" in text and "Rp 17.500" in text and "Rp 1.250.000" in text
    assert "already-recorded" in text and "no-rate-in-force" in text
    # The reason folds within its column; nothing of it is cut.
    reason = " ".join(line.split("│")[2].strip() for line in lines if line.count("│") == 3)
    assert ANSWER["results"][2]["message"] in reason
    assert "1 recorded now, 1 recorded before, 1 refused" in text and "new file" in text


def test_the_same_file_is_the_same_upload_and_another_file_another():
    assert upload_key(b"a,b\n") == upload_key(b"a,b\n") != upload_key(b"a,b\r\n")
    assert len(upload_key(b"x" * 10_000)) <= 200
