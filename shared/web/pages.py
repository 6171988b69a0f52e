"""The pagination contract every list endpoint shares (docs/http.md, "Lists").

A list answers `{"items": [...], "next_cursor": str | null}` in a stable order; `next_cursor`, sent back
as `cursor`, gives the page after. Pagination is by keyset: a cursor holds the sort key of the last item
sent (urlsafe base64 of a small JSON array, opaque to clients), so a page is one index range, however
deep, and an item added meanwhile never shifts the pages after it. A cursor names its list: one list's
cursor sent to another is refused, as is anything that does not decode to that list's key, with a
400 problem `invalid-cursor`. A well-formed cursor made by hand gives no more than a page of the list
itself: it holds no filter and no permission, every filter is applied afresh to every page.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from typing import Annotated, Any, TypeVar

from fastapi import Query
from pydantic import Field, TypeAdapter, ValidationError

from shared.web.openapi import problem_response
from shared.web.problems import Problem

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
#: Far longer than any cursor we make (a position, or a moment and an id): anything longer is forged.
MAX_CURSOR_LENGTH = 400

K = TypeVar("K", bound=tuple)

#: `responses=` of a list route: a cursor it did not give is refused.
LIST_RESPONSES: dict[int | str, dict[str, Any]] = {400: problem_response(
    400, "The `cursor` is not one this list gave (code `invalid-cursor`): start again without it.")}

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"Items per page, 1 to {MAX_LIMIT}.")]
Cursor = Annotated[str | None, Query(description=(
    "The `next_cursor` of the previous page; leave it out for the first page."))]


def encode_cursor(list_name: str, key: Sequence[Any]) -> str:
    """The opaque cursor after the item whose sort key is `key`, in the list `list_name`."""
    text = json.dumps([list_name, *key], separators=(",", ":"), ensure_ascii=True)
    return base64.urlsafe_b64encode(text.encode("ascii")).decode("ascii").rstrip("=")


def decode_cursor(list_name: str, cursor: str, key: TypeAdapter[K]) -> K:
    """The sort key a cursor of `list_name` holds, validated by `key`; `Problem(400, "invalid-cursor")`
    for anything else (another list's cursor, a cursor cut short, edited or made up)."""
    try:
        if len(cursor) > MAX_CURSOR_LENGTH or not cursor.isascii():
            raise ValueError("not a cursor we make")
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        document = json.loads(raw.decode("ascii"))
        if not isinstance(document, list) or not document or document[0] != list_name:
            raise ValueError("not a cursor of this list")
        return key.validate_json(json.dumps(document[1:]), strict=True)
    except (ValueError, binascii.Error, RecursionError, ValidationError):
        raise invalid_cursor() from None


#: The key of a list in the order of the event store: a position (PostgreSQL's bigint, never negative).
_POSITION = TypeAdapter(tuple[Annotated[int, Field(ge=0, le=2**63 - 1)]])


def position_after(list_name: str, cursor: str | None) -> int:
    """The event-store position a page of `list_name` starts after: 0 for the first page (no cursor)."""
    return 0 if cursor is None else decode_cursor(list_name, cursor, _POSITION)[0]


def invalid_cursor() -> Problem:
    return Problem(400, "invalid-cursor", "The cursor is not one this list gave: start again without `cursor`.")


def page(rows: Sequence[tuple[Sequence[Any], dict[str, Any]]], limit: int, list_name: str) -> dict[str, Any]:
    """The answer for the first `limit` of `rows`, each (its sort key, the item): a query asks for
    `limit + 1`, and the one more says there is a next page, after the last item shown."""
    shown = rows[:limit]
    more = len(rows) > limit
    return {"items": [item for _, item in shown],
            "next_cursor": encode_cursor(list_name, shown[-1][0]) if more else None}
