"""How far things got, read from real offsets and positions, never guessed from time (trap 5)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import asyncpg
from aiokafka import TopicPartition

from shared.contracts import Topic, topic_name
from shared.kafka import end_offsets
from shared.settings import KafkaSettings


async def stored_offsets(pool: asyncpg.Pool, consumer: str) -> dict[TopicPartition, int]:
    """The next offset `consumer` will apply per partition, as stored with its effects."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT topic, partition, next_offset FROM consumer_offsets WHERE consumer = $1", consumer
        )
    return {TopicPartition(row["topic"], row["partition"]): row["next_offset"] for row in rows}


async def wait_until_caught_up(
    pool: asyncpg.Pool, consumer: str, kafka: KafkaSettings, topics: Sequence[Topic], *, timeout: float = 30.0
) -> None:
    """Return once `consumer` has applied everything on `topics` as of the call; `TimeoutError` otherwise."""
    targets = await end_offsets(kafka, [topic_name(topic, kafka.topic_prefix) for topic in topics])
    deadline = time.monotonic() + timeout
    while True:
        stored = await stored_offsets(pool, consumer)
        behind = {tp: end for tp, end in targets.items() if end > 0 and stored.get(tp, 0) < end}
        if not behind:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{consumer} still behind after {timeout}s: " + ", ".join(
                f"{tp.topic}[{tp.partition}] at {stored.get(tp, 0)} of {end}" for tp, end in behind.items()))
        await asyncio.sleep(0.05)


async def wait_until_published(pool: asyncpg.Pool, *, relay: str = "kafka", timeout: float = 30.0) -> None:
    """Return once the relay's checkpoint has reached the event store's last position as of the call."""
    async with pool.acquire() as conn:
        target = await conn.fetchval("SELECT coalesce(max(position), 0) FROM event_store")
    deadline = time.monotonic() + timeout
    while True:
        async with pool.acquire() as conn:
            done = await conn.fetchval(
                "SELECT coalesce((SELECT position FROM outbox_checkpoint WHERE relay = $1), 0)", relay
            )
        if done >= target:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"relay {relay!r} at position {done} of {target} after {timeout}s")
        await asyncio.sleep(0.05)
