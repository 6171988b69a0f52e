"""Reading older versions of an event's `data` (SPEC §5: a known older `dataversion` is upcast on read).

Every event type has a current version (`EventData.data_version`) that our
services write. A record of an older version is turned into the current one,
one version at a time, by the upcasters below, before its model validates it:
consumers, the auditor's replay and `verify` all read through `decode`, so they
all see the same current-version data. A version newer than the current one, or
one nobody published, is `unsupported-dataversion`.

An upcaster takes the older `data` as a JSON object and returns the next
version's; it never reads anything else, so the ledger stays a function of the
events. Version 2 of the types below replaced free text by codes (SPEC §7):
what was already a code stays itself, anything else reads as `other`. The
words stay in the older record, which no upcaster can unwrite; no amount
changes, so the ledger of a history mixing versions is that of its current form.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from shared.contracts.codes import CODE_LISTS, OTHER

Data = dict[str, Any]
Upcaster = Callable[[Data], Data]


def _as_code(value: Any, codes: tuple[str, ...]) -> Any:
    # A value that is not even a string is left for the model to refuse as it would any other.
    return (value if value in codes else OTHER) if isinstance(value, str) else value


def _reason_as_code(list_name: str) -> Upcaster:
    def upcast(data: Data) -> Data:
        if "reason" not in data:
            return data
        return {**data, "reason": _as_code(data["reason"], CODE_LISTS[list_name])}

    return upcast


def _defects_as_codes(data: Data) -> Data:
    defects = data.get("defects")
    if not isinstance(defects, list):
        return data
    codes = CODE_LISTS["defect"]
    # Several words may read as one `other`: a defect is named once, in the order first found.
    return {**data, "defects": list(dict.fromkeys(_as_code(defect, codes) for defect in defects))}


def _unchanged(data: Data) -> Data:
    # A collaborator signed these very values: they are read as they are, and the current model
    # accepts them only if they already are codes (a signed text cannot be rewritten into one).
    return data


#: event type → {older version → the upcaster from it to the next version}.
UPCASTERS: Mapping[str, Mapping[int, Upcaster]] = {
    "withdrawn": {1: _reason_as_code("withdrawal-reason")},
    "payout-failed": {1: _reason_as_code("payout-failure")},
    "qc-failed": {1: _defects_as_codes},
    "qc-submitted": {1: _unchanged},
}


def readable_versions(event_type: str, current: int) -> tuple[int, ...]:
    """The versions of `event_type` a reader accepts: the current one and each it can upcast from."""
    older = UPCASTERS.get(event_type, {})
    return tuple(sorted({*older, current}))


def upcast(event_type: str, version: int, current: int, data: Data) -> Data:
    """`data` of `event_type` at `version`, brought to `current`; KeyError for a version with no path."""
    steps = UPCASTERS.get(event_type, {})
    while version < current:
        data = steps[version](data)
        version += 1
    return data
