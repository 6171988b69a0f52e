"""Kafka clients built from `ANYAM_*` settings, and where a topic really ends."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.settings import KafkaSettings


async def start_producer(kafka: KafkaSettings, **overrides: object) -> AIOKafkaProducer:
    """A started producer that waits for every in-sync replica (acks=all)."""
    producer = AIOKafkaProducer(**{**kafka.producer_options(), **overrides})
    await producer.start()
    return producer


async def partitions_of(consumer: AIOKafkaConsumer, topics: Iterable[str]) -> list[TopicPartition]:
    """Every partition of `topics`, refreshing metadata once if the client has none yet."""
    partitions: list[TopicPartition] = []
    for name in topics:
        ids = consumer.partitions_for_topic(name)
        if not ids:
            await consumer._client.force_metadata_update()  # noqa: SLF001 - a fresh client has no metadata
            ids = consumer.partitions_for_topic(name) or set()
        partitions += [TopicPartition(name, p) for p in sorted(ids)]
    return partitions


async def end_offsets(
    kafka: KafkaSettings, topics: Iterable[str], *, timeout: float = 30.0
) -> dict[TopicPartition, int]:
    """The offset after the last record of every partition of `topics` (full names), as of now.

    On Apache Kafka this is ListOffsets' answer. On tansu (0.6.0) ListOffsets answers
    with the base offset of the last record batch plus one, short of the real end
    whenever that batch holds several records; there a fetch from that offset returns
    the rest of the batch and the true high watermark, which is what is returned.
    """
    consumer = AIOKafkaConsumer(
        **kafka.client_options(), group_id=None, enable_auto_commit=False, fetch_max_wait_ms=50
    )
    try:
        await consumer.start()
        partitions = await partitions_of(consumer, topics)
        if not partitions:
            return {}
        ends = await consumer.end_offsets(partitions)
        if not kafka.on_tansu:
            return ends
        consumer.assign(partitions)
        for tp in partitions:
            consumer.seek(tp, ends[tp])
        # Every fetch response carries the partition's high watermark, records or not; fetch until
        # each partition has answered once (a busy broker may take several rounds).
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            fetched = await consumer.getmany(*partitions, timeout_ms=200)
            for tp, records in fetched.items():
                ends[tp] = max(ends[tp], records[-1].offset + 1)
            unanswered = [tp for tp in partitions if consumer.highwater(tp) is None]
            if not unanswered:
                break
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"no fetch response for {unanswered} within {timeout:g}s")
        return {tp: max(end, consumer.highwater(tp) or 0) for tp, end in ends.items()}
    finally:
        await consumer.stop()


class TimeIndexUnavailable(Exception):
    """The broker keeps no time index to seek by (tansu 0.6 answers no ListOffsets by time)."""


async def offsets_at(kafka: KafkaSettings, topics: Iterable[str], moment: datetime) -> dict[TopicPartition, int]:
    """Per partition of `topics`, the offset after the last record appended by `moment`: where a read of
    what was known then stops. Seeks by the broker's time index (ListOffsets by timestamp), so nothing
    before it is read; exact where the topics stamp records with their append time (LogAppendTime,
    as Anyam's event topics on Apache Kafka do), since those times never go back within a partition.
    """
    if kafka.on_tansu:
        raise TimeIndexUnavailable("the tansu broker keeps no time index: a cut by recording time needs Apache Kafka")
    consumer = AIOKafkaConsumer(**kafka.client_options(), group_id=None, enable_auto_commit=False)
    try:
        await consumer.start()
        partitions = await partitions_of(consumer, topics)
        if not partitions:
            return {}
        # The first record stamped after the moment; a partition with none ends before it.
        after = await consumer.offsets_for_times({tp: int(moment.timestamp() * 1000) + 1 for tp in partitions})
        ends = await consumer.end_offsets(partitions)
        return {tp: found.offset if found is not None else ends[tp] for tp, found in after.items()}
    finally:
        await consumer.stop()
