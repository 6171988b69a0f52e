"""`POST /piece-batches`: a field officer's CSV of woven pieces, each row recorded once, with a result per row.

Each row is a `POST /pieces` of its own: its own unit of work (one statement), its
own answer, kept under a key derived from the upload's `Idempotency-Key` and the
row's number (`shared.web.uploads`). One unit per row, not one for the upload:
a refused row must not undo the others, a retry must find exactly the rows that
were recorded, and the append lock is never held for a whole upload.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from services.production.handlers import ProductionHandlers
from services.production.piece_csv import COLUMNS, MAX_ROWS, MOMENT_FORMAT, PieceRow, Row, parse_upload
from shared.eventstore import PostgresUnitOfWork
from shared.service import ServiceRuntime
from shared.web.access import STAFF, Access, Principal
from shared.web.commands import MAX_KEY_LENGTH, Outcome
from shared.web.openapi import problem_response
from shared.web.problems import Problem
from shared.web.uploads import RowAnswer, Upload

PATH = "/piece-batches"
CSV = "text/csv"

#: How many rows of one upload are recorded at once: each holds a connection of the pool (10 by
#: default) for its statement, so an upload is quicker without crowding out every other request.
CONCURRENT_ROWS = 4

RECORDED, ALREADY_RECORDED, REFUSED = "recorded", "already-recorded", "refused"

_BODY = (
    f"UTF-8 CSV (a byte-order mark is allowed; comma-separated, RFC 4180 quotes, CRLF or LF). The first row names "
    f"the columns, in any order: {', '.join(COLUMNS)}. Each further row is one piece: `woven_at` is {MOMENT_FORMAT}. "
    f"At most {MAX_ROWS:,} rows; empty rows are skipped; rows are numbered as a spreadsheet numbers them "
    "(the header is row 1)."
)
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "description": _BODY,
        "content": {CSV: {"schema": {"type": "string"}, "example": (
            "artisan_id,collaborator_id,product,woven_at\r\n"
            "res_01HQ5P2ZKJ8M3V6X9B0C4D7E1F,col_01HQ5P31Z6R8T0W2Y4A6C8E0G2,piring,2024-03-05 10:00\r\n")}},
    }
}

#: The upload's key: required here, since a retry without one would record every row again.
UploadKey = Annotated[str, Header(alias="Idempotency-Key", min_length=1, max_length=MAX_KEY_LENGTH,
                                  description="Names the upload: a retry with the same key and the same rows "
                                              "records nothing twice and answers the same results.")]


class RowResult(BaseModel):
    """What became of one row: `recorded` now, `already-recorded` by an earlier attempt of this upload, or `refused`."""

    row: int = Field(description="The row's number as a spreadsheet shows it (the header is row 1).")
    status: Literal["recorded", "already-recorded", "refused"]
    piece_id: str | None = Field(default=None, description="The piece recorded (`recorded`, `already-recorded`).")
    rate_idr: int | None = Field(default=None, description="The rate in force when it was woven, whole rupiah.")
    code: str | None = Field(default=None, description="`refused`: the problem's code, as `POST /pieces` gives it "
                                                       "(e.g. `not-trained`), or `invalid-row` / `malformed-row`.")
    message: str | None = Field(default=None,
                                description="`refused`: what is wrong, naming the field, never its value.")


class BatchAnswer(BaseModel):
    """An upload's results: one per row, in the rows' order, and how many of each."""

    rows: int
    recorded: int
    already_recorded: int
    refused: int
    results: list[RowResult]


def piece_batch_router(runtime: ServiceRuntime, handlers: ProductionHandlers, access: Access) -> APIRouter:
    router = APIRouter(tags=["production"])
    staff = access.allow(STAFF)

    @router.post(
        PATH, response_model=BatchAnswer, openapi_extra=UPLOAD_BODY,
        responses={
            413: problem_response(413, f"Over the body limit (`body-too-large`, not read) or over {MAX_ROWS:,} "
                                       "rows (`too-many-rows`); nothing was recorded."),
            415: problem_response(415, "The body is not `text/csv` (`unsupported-media-type`)."),
            422: problem_response(422, "The upload cannot be read (`not-utf-8`, `malformed-csv`, `wrong-header`, "
                                       "`missing-header`, `no-rows`, `invalid-request` for the key), or its key was "
                                       "used for another request (`idempotency-key-reused`); nothing was recorded."),
        },
        summary="Record woven pieces from a CSV (a field officer's sheet), with a result per row",
    )
    async def upload(request: Request, key: UploadKey, who: Principal = Depends(staff)) -> JSONResponse:
        _require_csv(request.headers.get("content-type", ""))
        rows = parse_upload(await request.body())
        batch = Upload(runtime.pool, who, key, method=request.method, path=PATH,
                       payload=[[row.number, row.fields, row.cells] for row in rows])  # every cell as sent
        if (stored := await batch.start([row.number for row in rows if row.piece is not None])) is not None:
            return JSONResponse(stored)
        return JSONResponse(await batch.finish(_answer(await _record_all(batch, handlers, rows))))

    return router


async def _record_all(batch: Upload, handlers: ProductionHandlers, rows: list[Row]) -> list[RowResult]:
    """Every row's result, in the rows' order; `CONCURRENT_ROWS` rows at a time (rows are independent).

    The first failure that is not a row's answer (the database gone, `busy`) stops the rest and is
    the upload's answer: rows already done keep theirs, and the upload's retry does the others."""
    gate = asyncio.Semaphore(CONCURRENT_ROWS)

    async def one(row: Row) -> RowResult:
        async with gate:
            return await _record(batch, handlers, row)

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(row)) for row in rows]
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]


async def _record(batch: Upload, handlers: ProductionHandlers, row: Row) -> RowResult:
    if row.piece is None:
        assert row.problem is not None
        return RowResult(row=row.number, status=REFUSED, code=row.problem.code, message=row.problem.message)
    piece: PieceRow = row.piece

    async def action(uow: PostgresUnitOfWork) -> Outcome:
        woven = await handlers.weave(uow, **piece.model_dump())
        return Outcome(201, woven.model_dump(mode="json"))

    # As `POST /pieces`: reads, then appends to a stream it just named, in one statement.
    answer = await batch.run(row.number, {"row": row.number, **row.fields}, action, one_statement=True)
    return _result(row.number, answer)


def _result(number: int, answer: RowAnswer) -> RowResult:
    if answer.status >= 400:
        return RowResult(row=number, status=REFUSED, code=answer.body.get("code"), message=answer.body.get("detail"))
    return RowResult(row=number, status=ALREADY_RECORDED if answer.earlier else RECORDED,
                     piece_id=answer.body["piece_id"], rate_idr=answer.body["rate_idr"])


def _answer(results: list[RowResult]) -> dict[str, Any]:
    def count(status: str) -> int:
        return sum(result.status == status for result in results)

    return BatchAnswer(rows=len(results), recorded=count(RECORDED), already_recorded=count(ALREADY_RECORDED),
                       refused=count(REFUSED), results=results).model_dump(mode="json", exclude_none=True)


def _require_csv(content_type: str) -> None:
    media_type, _, parameters = content_type.partition(";")
    charset = next((value.strip().strip('"').lower() for name, _, value in
                    (p.partition("=") for p in parameters.split(";")) if name.strip().lower() == "charset"), "utf-8")
    if media_type.strip().lower() != CSV or charset not in ("utf-8", "utf8"):
        raise Problem(415, "unsupported-media-type", f"Send the pieces as `{CSV}` (UTF-8), a header row first.")
