"""Reading topics in tests with an independent client (librdkafka via confluent-kafka).

Our code uses aiokafka; checking what reached a topic with a different client
keeps the tests from confirming our client's mistakes with our client.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

from confluent_kafka import Consumer
from confluent_kafka import TopicPartition as KafkaPartition

from shared.kafka import end_offsets
from shared.settings import KafkaSettings


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    #: The record's timestamp in epoch milliseconds (its append time on Anyam's Kafka event topics).
    timestamp_ms: int = -1


def librdkafka_config(kafka: KafkaSettings) -> dict[str, str]:
    """confluent-kafka's settings for `kafka`'s brokers and sign-in (SASL on Apache Kafka, none on tansu)."""
    config = {"bootstrap.servers": kafka.bootstrap_servers, "security.protocol": kafka.kafka_security_protocol}
    if kafka.kafka_security_protocol.startswith("SASL"):
        config |= {"sasl.mechanism": kafka.kafka_sasl_mechanism or "SCRAM-SHA-512",
                   "sasl.username": kafka.kafka_sasl_username or "",
                   "sasl.password": kafka.kafka_sasl_password.get_secret_value() if kafka.kafka_sasl_password else ""}
    if kafka.kafka_ssl_cafile:
        config["ssl.ca.location"] = kafka.kafka_ssl_cafile
    return config


def _settings(broker: str | KafkaSettings) -> KafkaSettings:
    """A bootstrap list signs in as the session does (`ANYAM_KAFKA_*`); settings sign in as they say."""
    return KafkaSettings(kafka_bootstrap=broker) if isinstance(broker, str) else broker


def _read_all(kafka: KafkaSettings, topic: str, ends: dict[int, int], timeout: float) -> list[Record]:
    consumer = Consumer({
        **librdkafka_config(kafka),
        "group.id": f"test-reader-{uuid.uuid4().hex}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    })
    try:
        remaining = {p for p, end in ends.items() if end > 0}
        consumer.assign([KafkaPartition(topic, p, 0) for p in sorted(ends)])
        records: list[Record] = []
        deadline = time.monotonic() + timeout
        while remaining:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic}: partitions {sorted(remaining)} did not reach their end")
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            records.append(Record(topic, message.partition(), message.offset(), message.key(), message.value(),
                                  list(message.headers() or []), message.timestamp()[1]))
            if message.offset() + 1 >= ends[message.partition()]:
                remaining.discard(message.partition())
        return records
    finally:
        consumer.close()


async def read_topic(broker: str | KafkaSettings, topic: str, *, timeout: float = 30.0) -> list[Record]:
    """Every record on `topic` up to its current end, in partition then offset order.

    `broker`: a bootstrap list (signing in as the session's `ANYAM_KAFKA_*` say) or a client's settings.
    """
    kafka = _settings(broker)
    # The end is found with the project's own helper, which works around a watermark bug of the
    # embedded broker that librdkafka's watermark query also trips over.
    ends = await end_offsets(kafka, [topic])
    ends = {tp.partition: end for tp, end in ends.items()}
    records = await asyncio.to_thread(_read_all, kafka, topic, ends, timeout)
    return sorted(records, key=lambda r: (r.partition, r.offset))


async def wait_for_records(bootstrap: str | KafkaSettings, topic: str, predicate, *,
                           timeout: float = 30.0) -> list[Record]:
    """Re-read `topic` until `predicate(records)` holds; `TimeoutError` with the last count otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        records = await read_topic(bootstrap, topic, timeout=timeout)
        if predicate(records):
            return records
        if time.monotonic() > deadline:
            raise TimeoutError(f"{topic}: condition not met after {timeout}s ({len(records)} records)")
        await asyncio.sleep(0.2)
