"""Publishing submissions on a fixed schedule: the end-to-end measurement and its baseline publish alike."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Protocol

from aiokafka import AIOKafkaProducer

from shared.contracts import CONTENT_TYPE
from shared.contracts.codec import CONTENT_TYPE_HEADER

_HEADERS = [(CONTENT_TYPE_HEADER, CONTENT_TYPE.encode())]


class BrokerSampler(Protocol):
    """Samples the broker's CPU over the publishing phase (`latency._BrokerCpu`)."""

    def start(self) -> None: ...

    def sample(self, *, final: bool = False) -> None: ...


async def publish_on_schedule(
    producer: AIOKafkaProducer, topic: str, keys: Sequence[str], values: Sequence[bytes], *, rate: int,
    broker: BrokerSampler, sent: dict[str, float],
) -> list[asyncio.Future]:
    """Send `values[n]`, keyed `keys[n]`, n/rate seconds after the first (a late one at once).

    Each send's moment goes into `sent` as it happens (others may be counting them); the
    deliveries are returned for the caller to await.
    """
    deliveries = []
    started = time.monotonic()
    broker.start()
    for n, (key, value) in enumerate(zip(keys, values, strict=True)):
        broker.sample()
        delay = started + n / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        sent[key] = time.time()
        deliveries.append(await producer.send(topic, value, key=key.encode(), headers=_HEADERS))
    broker.sample(final=True)
    return deliveries
