"""Checking a Kafka record against what a service's AsyncAPI document declares for its channel."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from jsonschema import Draft202012Validator

from shared.web.asyncapi import DEAD_LETTER_MESSAGE


def _resolve(document: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    target: Any = document
    for part in reference["$ref"].removeprefix("#/").split("/"):
        target = target[part]
    return target


def _schema_errors(document: dict[str, Any], schema: dict[str, Any], instance: Any) -> list[str]:
    # The schema's references point into the document's components: validate with them beside it.
    validator = Draft202012Validator({**schema, "components": document["components"]})
    return [f"{'.'.join(map(str, error.absolute_path)) or 'value'}: {error.message}"
            for error in validator.iter_errors(instance)]


def record_problems(document: dict[str, Any], channel: str, value: bytes | None,
                    headers: Sequence[tuple[str, bytes]]) -> list[str]:
    """What about a record read from `channel` the document does not declare: its type, value or headers."""
    if channel not in document["channels"]:
        return [f"{document['info']['title']} declares no channel {channel}"]
    declared = {message_id: _resolve(document, reference)
                for message_id, reference in document["channels"][channel]["messages"].items()}
    problems: list[str] = []
    if DEAD_LETTER_MESSAGE in declared:
        message = declared[DEAD_LETTER_MESSAGE]
    else:
        try:
            event = json.loads(value or b"")
        except ValueError:
            return ["the value is not JSON"]
        event_type = event.get("type") if isinstance(event, dict) else None
        if event_type not in declared:
            return [f"type {event_type!r} is not a message of channel {channel}"]
        message = declared[event_type]
        problems += _schema_errors(document, message["payload"], event)
    header_schema = _resolve(document, message["headers"])
    undeclared = sorted({name for name, _ in headers} - header_schema["properties"].keys())
    problems += [f"header {name!r} is not declared" for name in undeclared]
    as_text = {name: raw.decode("utf-8", "replace") for name, raw in headers}
    problems += [f"headers: {error}" for error in _schema_errors(document, header_schema, as_text)]
    return problems
