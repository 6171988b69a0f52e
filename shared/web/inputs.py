"""Input types every service's HTTP API shares, so one rule about what text we accept holds everywhere.

Text that reaches an event must be storable: no control characters and no lone
surrogates (PostgreSQL and UTF-8 refuse them). Refused at the door it is a 422
naming the field; let through, the event's own validation would fail inside
the command, as a 500.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Header
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StringConstraints

from shared.contracts.events import LABEL_PATTERN, MAX_DIGITS_IN_A_ROW, MAX_RUPIAH, storable_text

#: Text PostgreSQL and UTF-8 can store (`storable_text`).
STORABLE = AfterValidator(storable_text)
_printable = r"^[^\x00-\x1f\x7f]+$"

# The types below are spelled out as `Annotated[...]` aliases, not made by a function, so that a type
# checker reads them as types: `Annotated[str, line(n), STORABLE]` is a line of free text, and a label
# adds `NAMES_A_THING`, in that order.


def line(max_length: int) -> StringConstraints:
    """A required line of at most `max_length` characters, trimmed, printable (with `STORABLE`: free text)."""
    return StringConstraints(strip_whitespace=True, min_length=1, max_length=max_length, pattern=_printable)


#: Free text of up to 200 characters, for what never reaches a topic (a person's name, a bank's reference).
Text = Annotated[str, line(200), STORABLE]
#: Short free text of up to 100 characters, for what never reaches a topic (a flat's unit).
ShortText = Annotated[str, line(100), STORABLE]

_LABEL = re.compile(LABEL_PATTERN)


def _names_a_thing(value: str) -> str:
    if not _LABEL.match(value):
        raise ValueError(f"must name a thing, with no more than {MAX_DIGITS_IN_A_ROW} digits in a row: "
                         "a NIK, phone or account number may not reach a topic")
    return value


#: What makes free text a label, text that reaches a topic, where it is kept for good: the name of a thing
#: (a rusunawa, product, material, company), never of a person, and no number that could be a NIK, phone
#: or account. A label of `n` characters is `Annotated[str, line(n), STORABLE, NAMES_A_THING]`.
NAMES_A_THING = AfterValidator(_names_a_thing)

#: A label of up to 200 characters (a company, a material).
Label = Annotated[str, line(200), STORABLE, NAMES_A_THING]
#: A label of up to 100 characters (a rusunawa, skill, unit of measure, product, payment method).
ShortLabel = Annotated[str, line(100), STORABLE, NAMES_A_THING]
#: Identifiers we accept from people: letters, digits and . _ : - (no spaces, no control characters).
Id = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")]
#: An id in a path or a body that is looked up, never trusted: what cannot be stored cannot name anything.
LookupId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100,
                                            pattern=_printable), STORABLE]

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
