"""Reading a field officer's CSV of pieces (`services.production.piece_csv`): what is a row, what refuses the upload."""

from __future__ import annotations

from datetime import datetime

import pytest

from services.production.piece_csv import INVALID_ROW, MALFORMED_ROW, MOMENT_FORMAT, parse_upload
from shared.timeutil import WIB
from shared.web.problems import Problem

HEADER = "artisan_id,collaborator_id,product,woven_at"
NIK = "3175099912870042"


def rows(text: str | bytes, **limits):
    return parse_upload(text.encode() if isinstance(text, str) else text, **limits)


def refusal(text: str | bytes, **limits) -> tuple[int, str, str]:
    with pytest.raises(Problem) as refused:
        rows(text, **limits)
    return refused.value.status, refused.value.code, refused.value.detail


def test_a_spreadsheets_csv_with_bom_crlf_quotes_and_empty_rows_is_read_row_by_row_numbered_as_it_shows_them():
    sheet = ("\ufeff\r\n" + " Product ,WOVEN_AT,artisan_id,collaborator_id\r\n"
             '"tempat, mangkuk",2024-03-05 10:00,res_1,col_1\r\n'
             ",,,\r\n"
             '"piring","2024-03-05T10:00:00+07:00", res_2 ,col_1\r\n')
    read = rows(sheet)
    assert [row.number for row in read] == [3, 5]  # row 1 empty, row 2 the header, row 4 empty
    assert [row.problem for row in read] == [None, None]
    first, second = (row.piece for row in read)
    assert (first.product, first.artisan_id, first.collaborator_id) == ("tempat, mangkuk", "res_1", "col_1")
    assert second.artisan_id == "res_2"  # trimmed
    assert first.woven_at == second.woven_at == datetime(2024, 3, 5, 10, 0, tzinfo=WIB)


def test_a_quoted_line_break_keeps_a_record_one_row():
    read = rows(f'{HEADER}\n"res_1",col_1,"pir\ning",2024-03-05 10:00\nres_2,col_1,piring,2024-03-05 10:00\n')
    assert [row.number for row in read] == [2, 3]
    assert read[0].problem is not None and "`product`" in read[0].problem.message  # not one line of text
    assert read[1].problem is None


@pytest.mark.parametrize(("written", "moment"), [
    ("2024-03-05T10:00:00+07:00", datetime(2024, 3, 5, 10, 0, tzinfo=WIB)),
    ("2024-03-05T03:00:00Z", datetime(2024, 3, 5, 10, 0, tzinfo=WIB)),
    ("2024-03-05T03:00:00z", datetime(2024, 3, 5, 10, 0, tzinfo=WIB)),
    ("2024-03-05 11:00+0800", datetime(2024, 3, 5, 10, 0, tzinfo=WIB)),
    ("2024-03-05 10:00", datetime(2024, 3, 5, 10, 0, tzinfo=WIB)),
    ("2024-03-05 10:00:30 WIB", datetime(2024, 3, 5, 10, 0, 30, tzinfo=WIB)),
    ("2024-03-05T10:00:30,5", datetime(2024, 3, 5, 10, 0, 30, 500_000, tzinfo=WIB)),
])
def test_woven_at_takes_an_offset_or_is_wib(written, moment):
    (row,) = rows(f'{HEADER}\nres_1,col_1,piring,"{written}"\n')
    assert row.problem is None, row.problem
    assert row.piece.woven_at == moment and row.piece.woven_at.utcoffset() == WIB.utcoffset(None)


@pytest.mark.parametrize("written", [
    "05/03/2024 10:00", "2024-03-05", "10:00", "2024-02-30 10:00", "2024-03-05 25:00", "1999-12-31 23:00",
    "2100-01-01 00:00", "2024-03-05 10:00 WITA", "2024-03-05 10:00+07", "", "now", "=NOW()",
])
def test_a_woven_at_that_is_not_a_moment_in_range_refuses_its_row_naming_the_field(written):
    (row,) = rows(f"{HEADER}\nres_1,col_1,piring,{written}\n")
    assert row.piece is None and row.problem.code == INVALID_ROW
    assert "`woven_at`" in row.problem.message
    if written and written not in MOMENT_FORMAT:  # the examples of the format are quoted, nothing else
        assert written not in row.problem.message


@pytest.mark.parametrize(("line", "field"), [
    (f"res_1,col_1,piring NIK {NIK},2024-03-05 10:00", "product"),
    ("res_1,col_1,hubungi 0813-4455-6677,2024-03-05 10:00", "product"),
    ("res 1,col_1,piring,2024-03-05 10:00", "artisan_id"),
    ("=cmd|' /C calc'!A0,col_1,piring,2024-03-05 10:00", "artisan_id"),
    ("res_1,,piring,2024-03-05 10:00", "collaborator_id"),
    (f"res_1,col_1,{'p' * 51},2024-03-05 10:00", "product"),
    (f"res_1,col_1,{'p' * 5000},2024-03-05 10:00", "product"),
    ("res_1,col_1,pir\x00ing,2024-03-05 10:00", "product"),
])
def test_a_row_with_a_bad_field_is_refused_alone_naming_the_field_never_its_value(line, field):
    read = rows(f"{HEADER}\n{line}\nres_2,col_1,piring,2024-03-05 10:00\n")
    assert read[0].piece is None and read[0].problem.code == INVALID_ROW
    assert f"`{field}`" in read[0].problem.message
    for value in line.split(","):
        if len(value) > 3:
            assert value not in read[0].problem.message
    assert read[1].problem is None  # the next row stands on its own


@pytest.mark.parametrize("line", ["res_1,col_1,piring", "res_1,col_1,piring,2024-03-05 10:00,extra", "res_1"])
def test_a_row_with_too_few_or_too_many_fields_is_refused_alone(line):
    read = rows(f"{HEADER}\n{line}\nres_2,col_1,piring,2024-03-05 10:00\n")
    assert (read[0].problem.code, read[1].problem) == (MALFORMED_ROW, None)


@pytest.mark.parametrize(("text", "status", "code"), [
    ("", 422, "missing-header"),
    ("\ufeff\r\n\r\n", 422, "missing-header"),
    (f"{HEADER}\n", 422, "no-rows"),
    ("res_1,col_1,piring,2024-03-05 10:00\n", 422, "wrong-header"),
    ("artisan_id,collaborator_id,product\nres_1,col_1,piring\n", 422, "wrong-header"),
    (f"{HEADER},nik\nres_1,col_1,piring,2024-03-05 10:00,{NIK}\n", 422, "wrong-header"),
    (f"{HEADER},product\nres_1,col_1,piring,2024-03-05 10:00,piring\n", 422, "wrong-header"),
    ('{"artisan_id": "res_1", "collaborator_id": "col_1"}', 422, "wrong-header"),
    (f'{HEADER}\n"res_1"x,col_1,piring,2024-03-05 10:00\n', 422, "malformed-csv"),
    (f'{HEADER}\n"res_1,col_1,piring,2024-03-05 10:00\n', 422, "malformed-csv"),
    (HEADER.encode() + b"\nres_1,col_1,pi\xe7ing,2024-03-05 10:00\n", 422, "not-utf-8"),
    (HEADER.encode("utf-16"), 422, "not-utf-8"),
])
def test_an_upload_that_cannot_be_read_is_refused_whole(text, status, code):
    assert refusal(text)[:2] == (status, code)


def test_a_wrong_header_is_described_by_column_number_and_our_names_never_by_what_it_says():
    status, code, detail = refusal(f"artisan_id,{NIK},product,woven_at,woven_at\n")
    assert (status, code) == (422, "wrong-header")
    assert NIK not in detail
    assert "missing collaborator_id" in detail and "column 2" in detail and "woven_at more than once" in detail


def test_more_rows_than_the_bound_refuse_the_upload_before_any_is_read_further():
    line = "res_1,col_1,piring,2024-03-05 10:00\n"
    assert len(rows(HEADER + "\n" + line * 3, max_rows=3)) == 3
    assert refusal(HEADER + "\n" + line * 4, max_rows=3)[:2] == (413, "too-many-rows")
    # Empty rows are not pieces: they do not count.
    assert len(rows(HEADER + "\n" + (line + "\n,,,\n") * 3, max_rows=3)) == 3
