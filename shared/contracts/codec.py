"""Events to Kafka records and back.

`encode` is the only way an event becomes bytes and `decode` the only way
bytes become an event. `decode` raises nothing but `DecodeError`, whose
`reason` is machine-readable (it is what a dead letter carries) and whose
message names what is wrong, with the field's path, but never a field's value:
values may be personal data.

`decode` reads a record in one of two ways. First in one pass: pydantic-core
parses the bytes and validates the whole envelope, typed by its `type`, at once
(about two thirds of the time of the step-by-step way; decoding is the largest
part of a replay). Whatever that pass does not accept, the step-by-step way reads
again: it alone decides what is refused and words why. The one pass only ever
accepts what the step-by-step way accepts, as the same event
(`test_what_one_pass_accepts_the_step_by_step_way_reads_as_the_same_event`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from pydantic import ConfigDict, Field, Strict, TypeAdapter, ValidationError, create_model
from pydantic_core import from_json

from shared.contracts.envelope import CONTENT_TYPE, SPEC_VERSION, Envelope
from shared.contracts.events import EVENT_TYPES, PATTERN_RULES, EventData
from shared.contracts.topics import Topic
from shared.contracts.versions import readable_versions, upcast

#: Larger values are refused before parsing; Kafka's own default limit is 1 MiB.
MAX_VALUE_BYTES = 1_048_576

CONTENT_TYPE_HEADER = "content-type"


@dataclass(frozen=True)
class KafkaRecord:
    """What goes onto a topic: the base topic (prefix added by the publisher), key, value, headers."""

    topic: Topic
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...]


class DecodeError(Exception):
    """A record that is not an acceptable event; `reason` says which way, machine-readably."""

    reason = "malformed"

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path


class MalformedRecord(DecodeError):
    """Not UTF-8, not JSON, not a JSON object, or too large to consider."""

    reason = "malformed"


class WrongSpecVersion(DecodeError):
    """A CloudEvents `specversion` other than 1.0."""

    reason = "wrong-specversion"


class UnknownEventType(DecodeError):
    """A `type` that is not in the catalog of SPEC §6."""

    reason = "unknown-type"


class UnexpectedEventType(DecodeError):
    """A known `type` on a topic that does not carry it (e.g. a forged `qc-passed` on `qc-submissions`)."""

    reason = "unexpected-type"


class SchemaInvalid(DecodeError):
    """A missing or invalid envelope attribute or data field; `path` names it, e.g. `data.rate_idr`."""

    reason = "schema-invalid"


class UnsupportedDataVersion(DecodeError):
    """A `dataversion` of the event type that no reader knows: newer than ours, or never published."""

    reason = "unsupported-dataversion"


def encode(event: Envelope) -> KafkaRecord:
    """The Kafka record for `event`: its topic, key per SPEC §4, structured-mode JSON value."""
    value = event.model_dump_json(exclude_none=True).encode("utf-8")
    return KafkaRecord(
        topic=event.data.topic,
        key=event.key.encode("utf-8"),
        value=value,
        headers=((CONTENT_TYPE_HEADER, CONTENT_TYPE.encode()),),
    )


def decode(value: bytes | None, *, topic: Topic | None = None) -> Envelope:
    """The event in a record's `value`; with `topic`, also checks the type belongs on that topic.

    Raises `DecodeError` (one of its subclasses) and nothing else.
    """
    event = _decoded_in_one_pass(value, topic)
    return event if event is not None else _decode_step_by_step(value, topic)


def _decode_step_by_step(value: bytes | None, topic: Topic | None) -> Envelope:
    """`decode`, one check after another, each refusal worded for what it found."""
    document = _parse_json_object(value)
    specversion = document.get("specversion")
    if specversion != SPEC_VERSION:
        raise WrongSpecVersion(
            f"specversion must be {SPEC_VERSION!r}" + ("" if "specversion" in document else ", and it is missing"),
            path="specversion",
        )
    event_type = document.get("type")
    if not isinstance(event_type, str):
        raise SchemaInvalid("the envelope lacks a string `type`", path="type")
    model = EVENT_TYPES.get(event_type)
    if model is None:
        raise UnknownEventType(f"event type {event_type[:80]!r} is not in the catalog", path="type")
    if topic is not None and model.topic != topic:
        raise UnexpectedEventType(
            f"event type {event_type!r} belongs on topic {model.topic.value!r}, not {topic.value!r}", path="type"
        )
    version = document.get("dataversion")
    if "dataversion" not in document:
        raise SchemaInvalid("`dataversion` is missing", path="dataversion")
    if type(version) is not int:  # noqa: E721 - true and 2.0 are not versions
        raise SchemaInvalid("`dataversion` must be an integer", path="dataversion")
    readable = readable_versions(event_type, model.data_version)
    if version not in readable:
        raise UnsupportedDataVersion(
            f"dataversion {version} of {event_type!r} is not one this reader knows "
            f"({', '.join(map(str, readable))})", path="dataversion",
        )
    raw_data = document.get("data")
    if not isinstance(raw_data, dict):
        raise SchemaInvalid("`data` must be a JSON object", path="data")
    raw_data = upcast(event_type, version, model.data_version, raw_data)
    try:
        data = model.model_validate(raw_data)
    except ValidationError as exc:
        raise _schema_invalid(exc, under="data") from None
    try:
        return Envelope.model_validate({**document, "data": data, "dataversion": model.data_version})
    except ValidationError as exc:
        raise _schema_invalid(exc, under=None) from None


def _typed_envelope(model: type[EventData]) -> type[Envelope]:
    """The envelope of one event type at its current version: `type` is that type's name, `data` its
    model. An older version is left to the step-by-step way, which upcasts it."""
    # Types made from run-time values, which a static checker cannot read: the fields are typed `Any`.
    fields: dict[str, Any] = {
        "specversion": (Literal[SPEC_VERSION], ...), "type": (Literal[model.event_type], ...), "data": (model, ...),
        "dataversion": (Annotated[int, Strict(), Field(ge=model.data_version, le=model.data_version)], ...),
    }
    return create_model(f"{model.__name__}Envelope", __base__=Envelope, **fields)


#: Any event of the catalog, validated straight from the record's bytes, its `type` choosing its model.
#: Only the keys' strings are cached by the parser: values are mostly ids seen once, and caching
#: them costs more than it saves.
_ANY_TYPED_ENVELOPE: Any = Annotated[  # a union built at run time: `Any` to a static checker
    Union[tuple(_typed_envelope(model) for model in EVENT_TYPES.values())],  # noqa: UP007 - built at run time
    Field(discriminator="type"),
]
_ONE_PASS: TypeAdapter[Envelope] = TypeAdapter(_ANY_TYPED_ENVELOPE, config=ConfigDict(cache_strings="keys"))


def _decoded_in_one_pass(value: bytes | None, topic: Topic | None) -> Envelope | None:
    """The event in `value` if it is a valid event (for `topic`); None for the step-by-step way to judge."""
    if value is None or len(value) > MAX_VALUE_BYTES:
        return None
    try:
        # Its validator itself: the adapter's wrapper only adds work.
        typed: Envelope = _ONE_PASS.validator.validate_json(value)
    except ValidationError:
        return None
    if topic is not None and typed.data.topic != topic:
        return None
    # A plain `Envelope` holding the validated fields, as `Envelope.model_validate` makes it (and
    # equal to it: pydantic models are equal only to their own class). The typed envelope is a
    # subclass that adds no slots, so it becomes one in place: cheaper than copying its
    # state into a new instance, and `model_construct` would work out the defaults and the fields
    # set again, which costs more than the whole pass saves.
    object.__setattr__(typed, "__class__", Envelope)
    return typed


def _parse_json_object(value: bytes | None) -> dict[str, Any]:
    if value is None:
        raise MalformedRecord("the record has no value (a tombstone), not an event")
    if len(value) > MAX_VALUE_BYTES:
        raise MalformedRecord(f"the value is {len(value)} bytes, over the {MAX_VALUE_BYTES}-byte limit")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedRecord(f"the value is not UTF-8 (bad byte at offset {exc.start})") from None
    try:
        # pydantic-core's parser, faster than `json`'s, and parsing is a large part of decoding.
        document = from_json(text)
    except ValueError:
        # It refuses what `json` refuses, and more (a lone surrogate escape, deep nesting), so
        # `json` has the last word: the same documents pass, fail and are worded as before.
        document = _parse_with_json(text)
    if not isinstance(document, dict):
        raise MalformedRecord(f"the value is a JSON {type(document).__name__}, not an object")
    return document


def _parse_with_json(text: str) -> Any:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        where = f" at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise MalformedRecord(f"the value is not JSON{where}") from None


def _schema_invalid(exc: ValidationError, *, under: str | None) -> SchemaInvalid:
    # Only the first problem is named in full; the input is left out because it may be personal data.
    first = exc.errors(include_url=False, include_input=False)[0]
    path = ".".join([*([under] if under else []), *(str(part) for part in first["loc"])])
    if first["type"] == "missing":
        problem = "is missing"
    else:
        # A pattern is worded as the rule it stands for, not as the regular expression.
        pattern = first.get("ctx", {}).get("pattern") if first["type"] == "string_pattern_mismatch" else None
        rule = PATTERN_RULES.get(pattern) if pattern is not None else None
        problem = f"is invalid: {rule or first['msg']}"
    more = len(exc.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return SchemaInvalid(f"`{path}` {problem}{suffix}", path=path)
