"""Money out, the way back: a bank's results file for a payout run, imported row by row (issue 29).

The bank (or staff, from the bank's report) says of each payout of a run whether it was paid, with the
bank's reference and when, or failed, with a code of the `payout-failure` list. Each row goes through
the very commands staff would type (`PayoutHandlers.confirm` / `fail`), so a row recorded before is
recognised as such: importing one file twice changes nothing the second time, and says so row by row.

The format (docs/money.md): UTF-8 CSV (a byte-order mark is allowed), comma-separated, a header row
`payout_id,status,bank_reference,failure_code,paid_at`, then one row per payout:
- `status` `paid`: `bank_reference` (the bank's transfer reference, kept in payout's database only)
  and `paid_at` (RFC 3339 with its offset, e.g. `2024-03-09T08:45:12+07:00`) are required,
  `failure_code` empty;
- `status` `failed`: `failure_code` is required (`account-closed`, `name-mismatch`, …), the others empty.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, get_args

from services.payout.handlers import PayoutHandlers
from shared.contracts.codes import PayoutFailure
from shared.domain import Refused
from shared.eventstore import UnitOfWork
from shared.timeutil import to_wib
from shared.web.problems import Problem

HEADER = ("payout_id", "status", "bank_reference", "failure_code", "paid_at")
#: How many rows one file may hold: a run pays one payout per artisan, and a bigger file is split.
MAX_ROWS = 10_000
#: The longest value a cell may hold (an id, a bank's reference, a moment).
MAX_CELL = 200
#: The method a payment confirmed from a bank's file is recorded with.
METHOD = "bank-transfer"
FAILURES = frozenset(get_args(PayoutFailure))


@dataclass(frozen=True)
class ResultRow:
    line: int
    payout_id: str
    status: Literal["paid", "failed"]
    bank_reference: str | None = None
    failure_code: str | None = None
    paid_at: datetime | None = None


@dataclass(frozen=True)
class RowOutcome:
    """What became of one row: `accepted` (recorded now), `already` (recorded before: nothing changed) or
    `refused` (with a code and what to do)."""

    line: int
    payout_id: str | None
    outcome: Literal["accepted", "already", "refused"]
    code: str | None = None
    detail: str | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"line": self.line, "payout_id": self.payout_id, "outcome": self.outcome}
        if self.code is not None:
            body |= {"code": self.code, "detail": self.detail}
        return body


def parse(body: bytes) -> list[ResultRow | RowOutcome]:
    """The file's rows, each parsed or refused on its own; a `Problem` (422) for a file that is no results
    file at all (not UTF-8 text, not CSV, not this header, too many rows)."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _bad_file("The results file is not UTF-8 text.") from None
    if "\x00" in text:
        raise _bad_file("The results file holds a NUL character; it is not CSV text.")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None or tuple(cell.strip().lower() for cell in header) != HEADER:
            raise _bad_file(f"The results file's first row must be the header {','.join(HEADER)}.")
        rows: list[ResultRow | RowOutcome] = []
        for cells in reader:
            if not any(cell.strip() for cell in cells):
                continue  # blank lines (a trailing one, most often) say nothing
            if len(rows) == MAX_ROWS:
                raise _bad_file(f"The results file holds more than {MAX_ROWS:,} rows; split it.")
            rows.append(_row(reader.line_num, cells))
    except csv.Error as exc:
        raise _bad_file(f"The results file is not valid CSV at line {reader.line_num} ({exc}).") from None
    if not rows:
        raise _bad_file("The results file has no rows after its header.")
    return rows


def _bad_file(detail: str) -> Problem:
    return Problem(422, "invalid-results-file", detail)


def _row(line: int, cells: Sequence[str]) -> ResultRow | RowOutcome:
    def refused(detail: str) -> RowOutcome:
        return RowOutcome(line, payout_id or None, "refused", "invalid-row", detail)

    payout_id = cells[0].strip() if cells else ""
    if len(cells) != len(HEADER):
        return refused(f"A row has {len(HEADER)} cells ({','.join(HEADER)}); this one has {len(cells)}.")
    if any(len(cell) > MAX_CELL or not cell.isprintable() for cell in cells):
        return refused(f"A cell holds at most {MAX_CELL} printable characters.")
    _, status, reference, failure, paid_at = (cell.strip() for cell in cells)
    if not payout_id:
        return refused("payout_id is empty.")
    if status == "paid":
        if not reference or not paid_at or failure:
            return refused("A paid row gives bank_reference and paid_at, and no failure_code.")
        try:
            moment = datetime.fromisoformat(paid_at)
        except ValueError:
            return refused("paid_at is not an RFC 3339 moment (e.g. 2024-03-09T08:45:12+07:00).")
        if moment.tzinfo is None or not 2000 <= moment.year <= 2999:
            return refused("paid_at needs its UTC offset (e.g. +07:00) and a year between 2000 and 2999.")
        return ResultRow(line, payout_id, "paid", bank_reference=reference, paid_at=to_wib(moment))
    if status == "failed":
        if failure not in FAILURES or reference or paid_at:
            return refused(f"A failed row gives a failure_code ({', '.join(sorted(FAILURES))}) and no "
                           "bank_reference or paid_at.")
        return ResultRow(line, payout_id, "failed", failure_code=failure)
    return refused("status is `paid` or `failed`.")


async def apply(
    uow: UnitOfWork, handlers: PayoutHandlers, run_id: str, rows: Sequence[ResultRow | RowOutcome]
) -> list[RowOutcome]:
    """Record each parsed row through payout's commands, each in a savepoint of its own: a refused row
    leaves nothing, the others stand. Rows for a payout of another run are refused."""
    outcomes = []
    for row in rows:
        if isinstance(row, RowOutcome):
            outcomes.append(row)
            continue
        try:
            async with uow.savepoint():
                payout = await handlers.payout(uow, row.payout_id)
                if payout.run_id != run_id:
                    raise Refused("payout-of-another-run",
                                  f"Payout {row.payout_id} belongs to run {payout.run_id}, not {run_id}.")
                if row.status == "paid":
                    assert row.bank_reference is not None and row.paid_at is not None
                    new, _ = await handlers.confirm(uow, row.payout_id, METHOD, row.bank_reference, row.paid_at)
                else:
                    assert row.failure_code is not None
                    new, _ = await handlers.fail(uow, row.payout_id, row.failure_code)
        except Refused as refusal:
            outcomes.append(RowOutcome(row.line, row.payout_id, "refused", refusal.code, refusal.message))
            continue
        outcomes.append(RowOutcome(row.line, row.payout_id, "accepted" if new else "already"))
    return outcomes
