"""Dead letters as an operator sees them: parsed, filtered, described, and judged re-drivable or not. No I/O.

A dead letter (shared/eventstore/deadletters.py, docs/contract.md#dead-letters) is the refused record
byte for byte plus `anyam-dead-letter-*` headers. Here each is named by its position on `dead-letters`,
`<partition>:<offset>`, and described by its headers and its envelope's `id` and `type` only: the value
is shown by `show`, and only when the record passed the contract's shape checks (see `value_shown`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from shared.contracts import EVENT_TOPICS, topic_name
from shared.eventstore.deadletters import (
    CONSUMER_HEADER,
    DETAIL_HEADER,
    REASON_HEADER,
    SOURCE_OFFSET_HEADER,
    SOURCE_PARTITION_HEADER,
    SOURCE_TOPIC_HEADER,
    TIME_HEADER,
)
from shared.timeutil import WIB

#: The header a re-driven record carries besides its own: which dead letter it was re-driven from.
REDRIVEN_FROM_HEADER = "anyam-redriven-from"
#: Reasons given before a record was decoded as an event of its topic: what it holds was never checked
#: against the contract, and may be a name or a phone number in a field meant for a code.
UNCHECKED_REASONS = frozenset({"malformed", "schema-invalid", "wrong-specversion", "unknown-type",
                               "unexpected-type", "unsupported-dataversion"})
#: The consumer name production gives submissions refused over HTTP (services/production/http.py).
HTTP_CONSUMER = "production-http"

_OURS = {REASON_HEADER, DETAIL_HEADER, CONSUMER_HEADER, SOURCE_TOPIC_HEADER, SOURCE_PARTITION_HEADER,
         SOURCE_OFFSET_HEADER, TIME_HEADER}
_POSITION = re.compile(r"^(\d{1,9}):(\d{1,18})$")
#: What an event id may look like on the command line: printable ASCII, no spaces, not too long.
_EVENT_ID = re.compile(r"^[!-~]{1,200}$")
_AGO = re.compile(r"^(\d{1,6})([mhd])$")


class BadInput(ValueError):
    """What the operator typed cannot name a dead letter or a moment; the message says why."""


@dataclass(frozen=True, order=True)
class Position:
    """Where a dead letter sits on the `dead-letters` topic."""

    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.partition}:{self.offset}"


@dataclass(frozen=True)
class Entry:
    """One dead letter read back: where it is, why it was refused, and the original record."""

    position: Position
    reason: str
    detail: str
    consumer: str
    source_topic: str
    source_partition: int
    source_offset: int
    refused_at: datetime | None
    key: bytes | None
    value: bytes | None
    #: The original record's headers, in their order (the dead letter's own removed).
    headers: tuple[tuple[str, bytes], ...]
    #: The envelope's `id` and `type`, when the value is a JSON object that has them as strings.
    event_id: str | None
    event_type: str | None

    @property
    def source(self) -> str:
        """Where the original record was: `topic[partition]@offset`, or the HTTP route."""
        if self.source_partition < 0:
            return self.source_topic
        return f"{self.source_topic}[{self.source_partition}]@{self.source_offset}"

    @property
    def redriven_from(self) -> str | None:
        """For a re-driven record refused again: the dead letter it was re-driven from."""
        return next((_text(raw) for name, raw in self.headers if name == REDRIVEN_FROM_HEADER), None)


def entry_from_record(partition: int, offset: int, timestamp_ms: int | None, key: bytes | None,
                      value: bytes | None, headers: Iterable[tuple[str, bytes | None]] | None) -> Entry:
    """Parse a record of `dead-letters`; headers that are missing or unreadable read as empty, never raise."""
    listed = [(name, raw or b"") for name, raw in headers or ()]
    ours = {name: _text(raw) for name, raw in listed if name in _OURS}
    event_id, event_type = envelope_id_and_type(value)
    refused_at = _moment(ours.get(TIME_HEADER, ""))
    if refused_at is None and timestamp_ms is not None:
        refused_at = datetime.fromtimestamp(timestamp_ms / 1000, WIB)
    return Entry(
        position=Position(partition, offset), reason=ours.get(REASON_HEADER, ""),
        detail=ours.get(DETAIL_HEADER, ""), consumer=ours.get(CONSUMER_HEADER, ""),
        source_topic=ours.get(SOURCE_TOPIC_HEADER, ""),
        source_partition=_integer(ours.get(SOURCE_PARTITION_HEADER, "")),
        source_offset=_integer(ours.get(SOURCE_OFFSET_HEADER, "")), refused_at=refused_at, key=key, value=value,
        headers=tuple((name, raw) for name, raw in listed if name not in _OURS),
        event_id=event_id, event_type=event_type,
    )


def envelope_id_and_type(value: bytes | None) -> tuple[str | None, str | None]:
    """The CloudEvent's `id` and `type` when `value` is a JSON object carrying them as strings."""
    if not value:
        return None, None
    try:
        document = json.loads(value)
    except (ValueError, RecursionError):
        return None, None
    if not isinstance(document, dict):
        return None, None
    return _token(document.get("id")), _token(document.get("type"))


def _token(found: object) -> str | None:
    return found if isinstance(found, str) and _EVENT_ID.match(found) else None


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _integer(text: str) -> int:
    return int(text) if re.fullmatch(r"-?\d{1,18}", text) else -1


def _moment(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment.astimezone(WIB) if moment.tzinfo else None


# --- what the operator types -----------------------------------------------------------------------


def parse_selector(text: str) -> Position | str:
    """A dead letter's position (`<partition>:<offset>`) or an event id; `BadInput` for anything else."""
    text = text.strip()
    if match := _POSITION.match(text):
        return Position(int(match[1]), int(match[2]))
    if re.fullmatch(r"[-+\d:]*:[-+\d:]*", text):  # meant as a position, but not one
        raise BadInput(f"{text!r} is not a position: write <partition>:<offset>, e.g. 0:17")
    if not _EVENT_ID.match(text):
        raise BadInput("an id is a position <partition>:<offset> (e.g. 0:17) or an event id (printable "
                       "characters, no spaces, at most 200)")
    return text


def parse_since(text: str, now: datetime) -> datetime:
    """`--since`: an RFC 3339 moment, a date (its start, WIB), or an age such as `30m`, `6h`, `2d`."""
    text = text.strip()
    if match := _AGO.match(text):
        unit = {"m": "minutes", "h": "hours", "d": "days"}[match[2]]
        return now - timedelta(**{unit: int(match[1])})
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), WIB)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadInput(f"--since {text!r} is neither a moment (2024-03-21T10:00:00+07:00), a date (2024-03-21) "
                       "nor an age (30m, 6h, 2d)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=WIB)


def select(entries: Sequence[Entry], selector: Position | str) -> list[Entry]:
    """The dead letters at a position (at most one), or those of an event id (one per refusal)."""
    if isinstance(selector, Position):
        return [entry for entry in entries if entry.position == selector]
    return [entry for entry in entries if entry.event_id == selector]


def matches(entry: Entry, *, reason: str | None = None, topic: str | None = None, consumer: str | None = None,
            since: datetime | None = None, prefix: str = "") -> bool:
    """Whether `entry` passes `list`'s filters; a topic may be given by its base or full name."""
    if reason is not None and entry.reason != reason:
        return False
    if topic is not None and entry.source_topic not in {topic, prefix + topic}:
        return False
    if consumer is not None and entry.consumer not in {consumer, prefix + consumer}:
        return False
    return since is None or (entry.refused_at is not None and entry.refused_at >= since)


# --- what is shown -----------------------------------------------------------------------------------


def summary(entry: Entry) -> dict[str, Any]:
    """`list`'s fields for one dead letter: headers and envelope metadata, never the value."""
    return {
        "position": str(entry.position),
        "refused_at": entry.refused_at.isoformat() if entry.refused_at else None,
        "consumer": entry.consumer,
        "reason": entry.reason,
        "topic": entry.source_topic,
        "partition": entry.source_partition,
        "offset": entry.source_offset,
        "event_id": entry.event_id,
        "event_type": entry.event_type,
        "redriven_from": entry.redriven_from,
    }


def value_shown(entry: Entry) -> bool:
    """Whether `show` prints the value: only a record that decoded as an event of its topic, whose every
    field the contract checked (codes, ids, amounts, times: no personal data). A record refused before that
    (`UNCHECKED_REASONS`), or refused over HTTP for its shape (its data withheld), is described, not shown."""
    return entry.value is not None and entry.reason not in UNCHECKED_REASONS and bool(entry.reason)


def details(entry: Entry, *, redrive_refusal: str | None, raw: bool = False) -> dict[str, Any]:
    """`show`'s fields: the summary, the detail, the original key and headers, and the value when it may be
    shown (or `raw` is asked for)."""
    shown: dict[str, Any] = {
        **summary(entry),
        "detail": entry.detail,
        "source": entry.source,
        "key": _printable(entry.key),
        "headers": [{"name": name, "value": _printable(raw_value)} for name, raw_value in entry.headers],
        "value_bytes": None if entry.value is None else len(entry.value),
        "redrivable": redrive_refusal is None,
        "not_redrivable_because": redrive_refusal,
    }
    if entry.value is not None and (raw or value_shown(entry)):
        shown["value"] = _printable(entry.value)
    elif entry.value is not None:
        shown["value_withheld"] = (f"refused as {entry.reason or 'unknown'} before its fields were checked: it may "
                                   "hold personal data in a field meant for a code (`--raw` prints it)")
    return shown


def _printable(raw: bytes | None) -> str | None:
    """Bytes as text when they are UTF-8, else `base64:` and their base64."""
    if raw is None:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        import base64

        return "base64:" + base64.b64encode(raw).decode()


# --- re-drivable or not ------------------------------------------------------------------------------


def redrive_refusal(entry: Entry, *, prefix: str, consumers: Mapping[str, str]) -> str | None:
    """Why `entry` cannot be re-driven (None if it can). `consumers` maps each consumer this stack runs to
    the service whose database keeps its bookkeeping."""
    if entry.consumer == HTTP_CONSUMER or entry.source_topic.startswith("http:"):
        why = "it was refused over HTTP: the collaborator got the refusal as the answer and submits again; " \
              "it was never on a topic"
        return why + (" (and its body was withheld)" if entry.reason in UNCHECKED_REASONS else "")
    if entry.value is None:
        return "the dead letter carries no value to publish"
    if entry.event_id is None:
        return ("the record is no event with an id (not a JSON object with a string `id`): nothing could make "
                "a re-drive idempotent, and no fix makes it acceptable; its sender must publish a corrected one")
    if entry.source_topic not in {topic_name(topic, prefix) for topic in EVENT_TOPICS} or entry.source_partition < 0:
        return f"{entry.source_topic!r} is not one of this stack's event topics"
    if entry.consumer not in consumers:
        return f"it was refused by {entry.consumer!r}, which is not a consumer this stack runs"
    return None


def redrive_headers(entry: Entry, dead_letters_topic: str) -> list[tuple[str, bytes]]:
    """The headers the re-driven record carries: the original's, in order, and where it was re-driven from
    (replacing an earlier such header, for a record re-driven again)."""
    kept = [(name, raw) for name, raw in entry.headers if name != REDRIVEN_FROM_HEADER]
    return [*kept, (REDRIVEN_FROM_HEADER, f"{dead_letters_topic}:{entry.position}".encode())]


def table(entries: Iterable[Entry]) -> list[list[str]]:
    """`list`'s rows as text columns: position, when, consumer, reason, where from, event id and type."""
    return [[str(e.position), e.refused_at.isoformat(timespec="seconds") if e.refused_at else "?", e.consumer,
             e.reason or "?", e.source, e.event_id or "-", e.event_type or "-"] for e in entries]
