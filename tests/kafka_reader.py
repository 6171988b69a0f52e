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


def _read_all(bootstrap: str, topic: str, ends: dict[int, int], timeout: float) -> list[Record]:
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
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


async def read_topic(bootstrap: str, topic: str, *, timeout: float = 30.0) -> list[Record]:
    """Every record on `topic` up to its current end, in partition then offset order."""
    # The end is found with the project's own helper, which works around a watermark bug of the
    # embedded broker that librdkafka's watermark query also trips over.
    ends = await end_offsets(KafkaSettings(kafka_bootstrap=bootstrap), [topic])
    ends = {tp.partition: end for tp, end in ends.items()}
    records = await asyncio.to_thread(_read_all, bootstrap, topic, ends, timeout)
    return sorted(records, key=lambda r: (r.partition, r.offset))


async def wait_for_records(bootstrap: str, topic: str, predicate, *, timeout: float = 30.0) -> list[Record]:
    """Re-read `topic` until `predicate(records)` holds; `TimeoutError` with the last count otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        records = await read_topic(bootstrap, topic, timeout=timeout)
        if predicate(records):
            return records
        if time.monotonic() > deadline:
            raise TimeoutError(f"{topic}: condition not met after {timeout}s ({len(records)} records)")
        await asyncio.sleep(0.2)
