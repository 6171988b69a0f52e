"""Each service's AsyncAPI 3.0 document: per topic, exactly what the service writes there and reads there.

Everything comes from the code that touches the wire: the event catalog
(`shared.contracts.EVENT_TYPES`, which topic carries each type and what keys
it), the owner of each event topic (`TOPIC_OWNERS`: whose relay writes it),
the topics a service's consumers read (a consumer decodes every type its topic
carries and dead-letters any other), and the headers the outbox relay, a
collaborator and the dead-letter publisher put on each record. Payload schemas
are the models that encode and decode, so a document cannot drift from the wire.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from shared.contracts import CONTENT_TYPE, EVENT_TYPES, Topic, topic_name
from shared.contracts.codec import CONTENT_TYPE_HEADER
from shared.contracts.provenance import ATTESTATION_HEADER, ATTESTATION_PROOF_HEADER, TOPIC_OWNERS
from shared.contracts.schema_export import typed_envelope
from shared.eventstore import deadletters

ASYNCAPI_VERSION = "3.0.0"
KAFKA_BINDING_VERSION = "0.5.0"
#: The server's address in the published documents; a running service names its own.
PUBLISHED_BOOTSTRAP = "localhost:9092"
DEAD_LETTER_MESSAGE = "dead-letter"

TOPIC_DESCRIPTIONS = {
    Topic.ENROLLMENT: "Residents, Bimtek cohorts, enrolments and completions; key: resident_id.",
    Topic.PRODUCTION: "Collaborators, piece rates, materials, woven pieces and authoritative QC results; "
    "key: artisan_id (collaborator_id for collaborator and rate events).",
    Topic.QC_SUBMISSIONS: "Signed QC results published by collaborator companies (untrusted input); key: piece_id.",
    Topic.PAYOUT: "Payouts scheduled, paid and failed; key: artisan_id.",
    Topic.DEAD_LETTERS: "Every record a consumer refused: the original bytes, with the reason in headers.",
}

_CONTENT_TYPE_SCHEMA = {"type": "string", "const": CONTENT_TYPE,
                        "description": "CloudEvents structured mode, JSON (SPEC §5)."}
_ATTESTATION_SCHEMA = {
    "type": "string", "pattern": "^[A-Za-z0-9+/]{86}==$",
    "description": "Base64 of the owner service's Ed25519 signature over its relay batch's tree head (docs/trust.md).",
}
_PROOF_SCHEMA = {
    "type": "string", "pattern": "^(0|[1-9][0-9]{0,4}):([1-9][0-9]{0,4}):([A-Za-z0-9+/]*={0,2})$",
    "description": "`<leaf index>:<tree size>:<audit path, base64>`: the record's inclusion proof (docs/trust.md).",
}

#: The headers of each kind of record, by who writes it (AsyncAPI schemas of Kafka headers, values as text).
HEADER_SCHEMAS: dict[str, dict[str, Any]] = {
    # What the outbox relay sends (shared/eventstore/relay.py): the content type and the attestation.
    "ServiceEventHeaders": {
        "type": "object",
        "properties": {CONTENT_TYPE_HEADER: _CONTENT_TYPE_SCHEMA, ATTESTATION_HEADER: _ATTESTATION_SCHEMA,
                       ATTESTATION_PROOF_HEADER: _PROOF_SCHEMA},
        "required": [CONTENT_TYPE_HEADER, ATTESTATION_HEADER, ATTESTATION_PROOF_HEADER],
        "additionalProperties": False,
    },
    # What a collaborator must send; production reads no other header of a submission.
    "SubmissionHeaders": {
        "type": "object",
        "properties": {CONTENT_TYPE_HEADER: _CONTENT_TYPE_SCHEMA},
        "required": [CONTENT_TYPE_HEADER],
        "description": "Other headers a collaborator sends are ignored.",
    },
    # What the dead-letter publisher adds (shared/eventstore/deadletters.py) to the refused record's own headers.
    "DeadLetterHeaders": {
        "type": "object",
        "properties": {
            CONTENT_TYPE_HEADER: {"type": "string", "description": "The refused record's own, if it had one."},
            ATTESTATION_HEADER: {"type": "string", "description": "The refused record's own, if it had one."},
            ATTESTATION_PROOF_HEADER: {"type": "string", "description": "The refused record's own, if it had one."},
            deadletters.REASON_HEADER: {"type": "string", "pattern": "^[a-z0-9-]+$",
                                        "description": "Why it was refused, as a code (e.g. `schema-invalid`, "
                                                       "`unattested`, `bad-signature`, `handler-error`)."},
            deadletters.DETAIL_HEADER: {"type": "string", "maxLength": 1000,
                                        "description": "What is wrong, for a person; never the record's content."},
            deadletters.CONSUMER_HEADER: {"type": "string",
                                          "description": "The consumer group that refused it (`production-http` "
                                                         "for a submission refused over HTTP)."},
            deadletters.SOURCE_TOPIC_HEADER: {"type": "string",
                                              "description": "The topic it was read from "
                                                             "(`http:POST /qc-submissions` for one sent over HTTP)."},
            deadletters.SOURCE_PARTITION_HEADER: {"type": "string", "pattern": "^-?[0-9]+$",
                                                  "description": "Its partition there (-1 for HTTP)."},
            deadletters.SOURCE_OFFSET_HEADER: {"type": "string", "pattern": "^-?[0-9]+$",
                                               "description": "Its offset there (-1 for HTTP)."},
            deadletters.TIME_HEADER: {"type": "string", "description": "When it was refused (RFC 3339, WIB)."},
        },
        "required": [deadletters.REASON_HEADER, deadletters.DETAIL_HEADER, deadletters.CONSUMER_HEADER,
                     deadletters.SOURCE_TOPIC_HEADER, deadletters.SOURCE_PARTITION_HEADER,
                     deadletters.SOURCE_OFFSET_HEADER, deadletters.TIME_HEADER],
        "description": "The refused record's own headers are kept as they were, beside these.",
    },
}


def headers_schema(topic: Topic) -> str:
    """The name of the headers schema of records on `topic`."""
    if topic == Topic.DEAD_LETTERS:
        return "DeadLetterHeaders"
    if topic == Topic.QC_SUBMISSIONS:
        return "SubmissionHeaders"
    return "ServiceEventHeaders"


def event_types_on(topic: Topic) -> list[str]:
    """The event types `topic` carries: what its owner writes, and all a reader's decoder accepts there."""
    return sorted(event_type for event_type, model in EVENT_TYPES.items() if model.topic == topic)


def written_topics(service: str, *, dead_letters: bool) -> list[Topic]:
    """The topics `service` writes: the event topic it owns (its relay's), and `dead-letters` if it refuses records."""
    owned = [topic for topic, owner in TOPIC_OWNERS.items() if owner == service]
    return [*owned, Topic.DEAD_LETTERS] if dead_letters else owned


def messages_on(topic: Topic) -> list[str]:
    """The message ids of `topic`'s channel."""
    return [DEAD_LETTER_MESSAGE] if topic == Topic.DEAD_LETTERS else event_types_on(topic)


class _Schemas:
    """components.schemas, gathered from pydantic models: one name, one schema."""

    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}

    def add(self, name: str, schema: dict[str, Any]) -> dict[str, str]:
        if self.schemas.setdefault(name, schema) != schema:
            raise ValueError(f"two different schemas are both called {name}")
        return {"$ref": f"#/components/schemas/{name}"}

    def model(self, model: Any) -> dict[str, str]:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, definition in schema.pop("$defs", {}).items():
            self.add(name, definition)
        return self.add(schema.get("title", model.__name__), schema)


def _event_message(event_type: str, schemas: _Schemas) -> dict[str, Any]:
    model = EVENT_TYPES[event_type]
    return {
        "name": event_type,
        "title": event_type,
        "summary": (model.__doc__ or "").strip().splitlines()[0] if model.__doc__ else event_type,
        "contentType": CONTENT_TYPE,
        "headers": {"$ref": f"#/components/schemas/{headers_schema(model.topic)}"},
        "payload": schemas.model(typed_envelope(event_type)),
        "bindings": {"kafka": {"bindingVersion": KAFKA_BINDING_VERSION,
                               "key": {"type": "string", "description": f"The event's `{model.key_field}`."}}},
    }


def _dead_letter_message() -> dict[str, Any]:
    return {
        "name": DEAD_LETTER_MESSAGE,
        "title": "A refused record",
        "summary": "The refused record's value, byte for byte (usually a CloudEvent, but whatever was sent), "
                   "keyed by its original key; why it was refused is in the headers.",
        "contentType": "application/octet-stream",
        "headers": {"$ref": "#/components/schemas/DeadLetterHeaders"},
        "payload": {"description": "The refused record's value as it was; possibly not JSON at all."},
        "bindings": {"kafka": {"bindingVersion": KAFKA_BINDING_VERSION,
                               "key": {"type": "string", "description": "The refused record's key, as it was."}}},
    }


def asyncapi_document(
    service: str,
    *,
    writes: Iterable[Topic],
    reads: Iterable[Topic],
    bootstrap: str = PUBLISHED_BOOTSTRAP,
    prefix: str = "",
) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of `service`, which writes `writes` and reads `reads`."""
    writes, reads = sorted(set(writes)), sorted(set(reads))
    schemas = _Schemas()
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for topic in sorted({*writes, *reads}):
        ids = messages_on(topic)
        for message_id in ids:
            if message_id not in messages:
                messages[message_id] = (_dead_letter_message() if message_id == DEAD_LETTER_MESSAGE
                                        else _event_message(message_id, schemas))
        channels[topic.value] = {
            "address": topic_name(topic, prefix),
            "title": topic.value,
            "description": TOPIC_DESCRIPTIONS[topic],
            "messages": {message_id: {"$ref": f"#/components/messages/{message_id}"} for message_id in ids},
        }
        for action, topics, verb in (("send", writes, "writes"), ("receive", reads, "reads")):
            if topic in topics:
                operations[f"{action}-{topic.value}"] = {
                    "action": action,
                    "channel": {"$ref": f"#/channels/{topic.value}"},
                    "summary": f"The {service} service {verb} `{topic.value}`.",
                    "messages": [{"$ref": f"#/channels/{topic.value}/messages/{message_id}"} for message_id in ids],
                }
    for name, schema in HEADER_SCHEMAS.items():
        if any(headers_schema(Topic(channel)) == name for channel in channels):
            schemas.add(name, schema)
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": f"Anyam {service}",
            "version": "1.0.0",
            "description": f"What the {service} service writes to and reads from Kafka: CloudEvents 1.0 in "
                           "structured JSON mode (SPEC §5). Topic names may carry the deployment's common prefix "
                           "(`ANYAM_TOPIC_PREFIX`).",
        },
        "defaultContentType": CONTENT_TYPE,
        "servers": {"kafka": {"host": bootstrap, "protocol": "kafka",
                              "description": "The Kafka cluster (`ANYAM_KAFKA_BOOTSTRAP`)."}},
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": dict(sorted(schemas.schemas.items()))},
    }
