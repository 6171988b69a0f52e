"""The events on the wire: SPEC §4-§6 as code. Wire types live here and nowhere else."""

from shared.contracts.codec import (
    DecodeError,
    KafkaRecord,
    MalformedRecord,
    SchemaInvalid,
    UnexpectedEventType,
    UnknownEventType,
    WrongSpecVersion,
    decode,
    encode,
)
from shared.contracts.envelope import CONTENT_TYPE, Envelope, collaborator_source, service_source
from shared.contracts.events import EVENT_TYPES, EventData
from shared.contracts.topics import ALL_TOPICS, EVENT_TOPICS, Topic, base_topic, topic_name

__all__ = [
    "ALL_TOPICS",
    "CONTENT_TYPE",
    "DecodeError",
    "EVENT_TOPICS",
    "EVENT_TYPES",
    "Envelope",
    "EventData",
    "KafkaRecord",
    "MalformedRecord",
    "SchemaInvalid",
    "Topic",
    "UnexpectedEventType",
    "UnknownEventType",
    "WrongSpecVersion",
    "base_topic",
    "collaborator_source",
    "decode",
    "encode",
    "service_source",
    "topic_name",
]
