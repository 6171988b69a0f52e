"""A field officer's CSV of woven pieces, read row by row: what `POST /piece-batches` takes (docs/http.md).

UTF-8 (a byte-order mark is allowed), comma-separated, RFC 4180 quoting, CRLF or LF line
ends. The first row is the header naming the four columns, in any order:
`artisan_id, collaborator_id, product, woven_at`. Each further row is one piece. Rows are
numbered as a spreadsheet numbers them (one record, quoted line breaks and all, is one row; the
header is row 1, if no empty row comes before it), and an empty row is skipped.

What makes the whole upload unreadable (not UTF-8, broken quoting, a wrong header, no
rows, too many rows) is a `Problem`; a row that cannot be a piece (a field missing or
invalid, too few or too many fields) is refused on its own, its problem naming the field
and never quoting what was in it.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationError

from services.production.handlers import EARLIEST_YEAR, LATEST_YEAR
from shared.timeutil import WIB, to_wib
from shared.web.inputs import NAMES_A_THING, STORABLE, Id, line
from shared.web.problems import Problem

COLUMNS = ("artisan_id", "collaborator_id", "product", "woven_at")
#: The most pieces one upload records: a week of a large programme's pieces; more is a second upload.
MAX_ROWS = 2_000
#: The longest field a row may have: the longest field a piece takes (a product label) is 50 characters.
MAX_FIELD_CHARACTERS = 1_000

#: A moment as spreadsheets and people write it: ISO 8601 with `T` or a space, seconds optional,
#: and an offset (`+07:00`, `+0700`, `Z`) or `WIB` or nothing (which means WIB).
_MOMENT = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})[T ](?P<time>\d{2}:\d{2}(?::\d{2}(?:[.,]\d{1,6})?)?)"
    r"\s*(?P<zone>Z|[+-]\d{2}:?\d{2}|WIB)?$",
    re.IGNORECASE,
)
MOMENT_FORMAT = ("an ISO 8601 date-time with an offset (2024-03-05T10:00:00+07:00) or a WIB one "
                 "(2024-03-05 10:00)")

MALFORMED_ROW = "malformed-row"
INVALID_ROW = "invalid-row"


def _moment(value: Any) -> datetime:
    if not isinstance(value, str) or not (match := _MOMENT.match(value)):
        raise ValueError(f"must be {MOMENT_FORMAT}")
    zone = (match["zone"] or "WIB").upper()
    text = f"{match['date']}T{match['time'].replace(',', '.')}"
    try:
        moment = datetime.fromisoformat(text if zone == "WIB" else text + zone)
    except ValueError:
        raise ValueError(f"is not a date and time of the calendar; it must be {MOMENT_FORMAT}") from None
    if zone == "WIB":
        moment = moment.replace(tzinfo=WIB)
    if not EARLIEST_YEAR <= moment.year <= LATEST_YEAR:
        raise ValueError(f"must lie in the years {EARLIEST_YEAR} to {LATEST_YEAR}")
    return to_wib(moment)


class PieceRow(BaseModel):
    """One row's piece, as `POST /pieces` would take it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    artisan_id: Id
    collaborator_id: Id
    product: Annotated[str, line(50), STORABLE, NAMES_A_THING]  # as `POST /pieces`' product
    woven_at: Annotated[datetime, BeforeValidator(_moment), AfterValidator(to_wib)]


@dataclass(frozen=True)
class RowProblem:
    """Why a row is refused: a code and a message naming the field, never its value."""

    code: str
    message: str


@dataclass(frozen=True)
class Row:
    """One data row: its number, its cells as written, its fields (trimmed), and its piece or why it cannot be one."""

    number: int
    cells: tuple[str, ...]
    fields: dict[str, str]
    piece: PieceRow | None
    problem: RowProblem | None


def parse_upload(body: bytes, *, max_rows: int = MAX_ROWS) -> list[Row]:
    """The rows of a CSV upload; `Problem` (422, or 413 over `max_rows`) when the upload cannot be read."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise Problem(422, "not-utf-8", f"The upload is not UTF-8 text (bad byte at offset {exc.start}); "
                                        "save the sheet as CSV UTF-8.") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[Row] = []
    header: list[str] | None = None
    try:
        for number, record in enumerate(reader, start=1):
            if not any(cell.strip() for cell in record):
                continue  # an empty row (a blank line, or a row of empty cells)
            if header is None:
                header = _header(record, number)
                continue
            if len(rows) == max_rows:
                raise Problem(413, "too-many-rows", f"The upload has more than {max_rows:,} pieces; split it "
                                                    f"into uploads of at most {max_rows:,} rows each.")
            rows.append(_row(number, header, record))
    except csv.Error as exc:
        raise Problem(422, "malformed-csv", f"The upload is not readable as CSV at line {reader.line_num} "
                                            f"({_csv_reason(exc)}).") from None
    if header is None:
        raise Problem(422, "missing-header", f"The upload is empty; its first row must name the columns "
                                             f"{', '.join(COLUMNS)}.")
    if not rows:
        raise Problem(422, "no-rows", "The upload has a header but no pieces.")
    return rows


def _header(record: list[str], number: int) -> list[str]:
    names = [cell.strip().lower() for cell in record]
    missing = [name for name in COLUMNS if name not in names]
    unknown = [f"column {i + 1}" for i, name in enumerate(names) if name not in COLUMNS]
    repeated = sorted({name for name in names if name in COLUMNS and names.count(name) > 1})
    if missing or unknown or repeated:
        # What is wrong, by column number and by the names we expect: a header cell may be anything.
        wrong = [f"missing {', '.join(missing)}"] if missing else []
        wrong += [f"{', '.join(unknown)} not one of ours"] if unknown else []
        wrong += [f"{', '.join(repeated)} more than once"] if repeated else []
        raise Problem(422, "wrong-header", f"The header (row {number}) must name exactly the columns "
                                           f"{', '.join(COLUMNS)}, in any order: {'; '.join(wrong)}.")
    return names


def _row(number: int, header: list[str], record: list[str]) -> Row:
    if len(record) != len(header):
        return Row(number, tuple(record), {}, None, RowProblem(
            MALFORMED_ROW, f"Row {number} has {len(record)} fields; the header has {len(header)}."))
    fields = {name: cell.strip() for name, cell in zip(header, record, strict=True)}
    if too_long := [name for name in COLUMNS if len(fields[name]) > MAX_FIELD_CHARACTERS]:
        return Row(number, tuple(record), {}, None, RowProblem(
            INVALID_ROW, f"`{too_long[0]}` is invalid: over {MAX_FIELD_CHARACTERS} characters."))
    try:
        piece = PieceRow.model_validate(fields)
    except ValidationError as exc:
        return Row(number, tuple(record), fields, None, _problem_of(exc))
    return Row(number, tuple(record), fields, piece, None)


def _problem_of(exc: ValidationError) -> RowProblem:
    """The first invalid field, named, with what is wrong (pydantic's message, never the input)."""
    first = exc.errors(include_url=False, include_input=False, include_context=False)[0]
    name = ".".join(str(part) for part in first["loc"]) or "row"
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "missing" or (first["type"] == "string_too_short" and name in COLUMNS):
        return RowProblem(INVALID_ROW, f"`{name}` is empty; every row needs it.")
    return RowProblem(INVALID_ROW, f"`{name}` is invalid: {message}.")


def _csv_reason(exc: csv.Error) -> str:
    """The csv module's reason, which names quotes and delimiters, never the data (kept short anyway)."""
    return str(exc)[:120]
