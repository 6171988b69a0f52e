"""The end-to-end measurement's baseline: the same two broker hops with nothing done between them.

Anyam's path crosses the broker twice: the bench publishes a submission onto
`qc-submissions`, production reads it and publishes `qc-passed` onto `production`,
payout reads that. This chain does only the Kafka part of it, on fresh topics of the
same shapes, with the same records, the same producer and consumer settings and the
same readers of `production` (two consumer groups at the services' fetch wait, as
payout's ledger and dashboard consumers, and one tail at the bench's): a consumer
group reads `qc-submissions` and hands each record on to `production` as it comes,
committing its offsets after each batch, as production's consumer does, and the first
reader stamps each record as it arrives. No signature, no database, no second process.

So it is the latency the broker itself sets for this path on this machine, and the
ratio of Anyam's figures to it says how much Anyam adds (as the raw-consumption
baseline does for the replay). Its stages share the bench's process and event loop,
which can only make it slower than separate processes would be.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from shared.bench.environment import BenchEnvironment
from shared.bench.schedule import BrokerSampler, publish_on_schedule
from shared.contracts import Topic, topic_name
from shared.kafka import partitions_of, start_producer
from shared.settings import KafkaSettings

#: How long to wait for the chain's consumer groups to be given their partitions before publishing.
JOIN_TIMEOUT_SECONDS = 120.0


async def run_raw_chain(
    env: BenchEnvironment, keys: Sequence[str], values: Sequence[bytes], *, rate: int, stall_seconds: float,
    publisher_linger_ms: int, tail_fetch_wait_ms: int, broker: BrokerSampler,
) -> tuple[dict[str, float], dict[str, float]]:
    """Publish `values` (keyed by `keys`) at `rate` per second through the two hops, on fresh topics.

    Returns when each was sent and when each arrived (epoch seconds, by key); a record
    still missing when nothing has arrived for `stall_seconds` after the last publish
    is absent from the second. `broker` samples the broker's CPU while publishing.
    """
    kafka = await env.fresh_topics("e2e-raw")
    try:
        return await _run(kafka, keys, values, rate, stall_seconds, publisher_linger_ms, tail_fetch_wait_ms, broker)
    finally:
        await env.drop_topics(kafka)


async def _run(
    kafka: KafkaSettings, keys: Sequence[str], values: Sequence[bytes], rate: int, stall_seconds: float,
    publisher_linger_ms: int, tail_fetch_wait_ms: int, broker: BrokerSampler,
) -> tuple[dict[str, float], dict[str, float]]:
    submissions = topic_name(Topic.QC_SUBMISSIONS, kafka.topic_prefix)
    production = topic_name(Topic.PRODUCTION, kafka.topic_prefix)
    sent: dict[str, float] = {}
    arrived: dict[str, float] = {}

    def group_consumer(topic: str, group: str) -> AIOKafkaConsumer:
        consumer = AIOKafkaConsumer(**kafka.client_options(), group_id=f"{kafka.topic_prefix}{group}",
                                    enable_auto_commit=False, auto_offset_reset="earliest",
                                    fetch_max_wait_ms=kafka.kafka_fetch_max_wait_ms)
        consumer.subscribe([topic])
        return consumer

    relay_in = group_consumer(submissions, "relay")
    ledger = group_consumer(production, "ledger")
    dashboard = group_consumer(production, "dashboard")
    tail = AIOKafkaConsumer(**kafka.client_options(), group_id=None, enable_auto_commit=False,
                            fetch_max_wait_ms=tail_fetch_wait_ms)
    relay_out = await start_producer(kafka)
    publisher = await start_producer(kafka, linger_ms=publisher_linger_ms)
    consumers = (relay_in, ledger, dashboard, tail)
    tasks: list[asyncio.Task[None]] = []
    try:
        for consumer in consumers:
            await consumer.start()
        tail.assign(await partitions_of(tail, [production]))
        tasks = [asyncio.create_task(_relay(relay_in, relay_out, production)),
                 asyncio.create_task(_read(ledger, arrived)), asyncio.create_task(_read(dashboard, None)),
                 asyncio.create_task(_read(tail, None, commit=False))]
        await _joined([relay_in, ledger, dashboard], tasks)
        await asyncio.gather(*await publish_on_schedule(publisher, submissions, keys, values, rate=rate,
                                                         broker=broker, sent=sent))
        await _drained(sent, arrived, stall_seconds, tasks)
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for consumer in consumers:
            await consumer.stop()
        await publisher.stop()
        await relay_out.stop()
    return sent, arrived


async def _relay(source: AIOKafkaConsumer, producer: AIOKafkaProducer, destination: str) -> None:
    """Hand each record on as production's consumer and relay do, without judging or storing it."""
    while True:
        batch = await source.getmany(timeout_ms=500)
        deliveries = [await producer.send(destination, record.value, key=record.key, headers=list(record.headers))
                      for records in batch.values() for record in records]
        await asyncio.gather(*deliveries)
        if batch:
            await source.commit()


async def _read(consumer: AIOKafkaConsumer, arrived: dict[str, float] | None, *, commit: bool = True) -> None:
    while True:
        batch = await consumer.getmany(timeout_ms=500)
        now = time.time()
        if arrived is not None:
            for records in batch.values():
                for record in records:
                    arrived.setdefault(record.key.decode(), now)
        if batch and commit:
            await consumer.commit()


async def _joined(consumers: Sequence[AIOKafkaConsumer], tasks: Sequence[asyncio.Task[None]]) -> None:
    """Wait until every consumer group has its partitions, so no record waits for a join."""
    deadline = time.monotonic() + JOIN_TIMEOUT_SECONDS
    while not all(consumer.assignment() for consumer in consumers):
        _raise_if_failed(tasks)
        if time.monotonic() > deadline:
            raise TimeoutError(f"the raw chain's consumer groups were not assigned within {JOIN_TIMEOUT_SECONDS:g}s")
        await asyncio.sleep(0.05)


async def _drained(
    sent: dict[str, float], arrived: dict[str, float], stall_seconds: float, tasks: Sequence[asyncio.Task[None]]
) -> None:
    """Wait until every record arrived, or nothing has for `stall_seconds`."""
    progressed, last_progress = len(arrived), time.monotonic()
    while len(arrived) < len(sent) and time.monotonic() - last_progress < stall_seconds:
        _raise_if_failed(tasks)
        await asyncio.sleep(0.05)
        if len(arrived) > progressed:
            progressed, last_progress = len(arrived), time.monotonic()


def _raise_if_failed(tasks: Sequence[asyncio.Task[None]]) -> None:
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
