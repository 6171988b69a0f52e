"""Input types every service's HTTP API shares, so one rule about what text we accept holds everywhere.

Text that reaches an event must be storable: no control characters and no lone
surrogates (PostgreSQL and UTF-8 refuse them). Refused at the door it is a 422
naming the field; let through, the event's own validation would fail inside
the command, as a 500.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Header
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StringConstraints

from shared.contracts.events import MAX_RUPIAH, storable_text

_storable = AfterValidator(storable_text)
_printable = r"^[^\x00-\x1f\x7f]+$"


def text(max_length: int) -> object:
    """A required line of free text of at most `max_length` characters, trimmed, storable."""
    return Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=max_length, pattern=_printable),
        _storable,
    ]


#: Free text of up to 200 characters (names, materials, references, reasons).
Text = text(200)
#: Short free text of up to 100 characters (rusunawa, skills, units, products).
ShortText = text(100)
#: Identifiers we accept from people: letters, digits and . _ : - (no spaces, no control characters).
Id = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")]
#: An id in a path or a body that is looked up, never trusted: what cannot be stored cannot name anything.
LookupId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100,
                                            pattern=_printable), _storable]

#: An amount of money in a request: whole rupiah, 0 to Rp 1 trillion, the bound every `*_idr` field of an
#: event holds (SPEC §5). Refused at the door it is a 422 naming the field; let through, the event the
#: command makes would fail its own validation inside the command, as a 500. A field may narrow it
#: (`Annotated[Rupiah, Field(ge=1, le=...)]`), never widen it. Strict: "1000", 1000.0 and true are refused.
Rupiah = Annotated[StrictInt, Field(ge=0, le=MAX_RUPIAH)]

#: The optional `Idempotency-Key` header every POST accepts (SPEC §9).
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)]


class CommandBody(BaseModel):
    """A command's JSON body: unknown fields are refused (a typo must not pass silently), values frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)
