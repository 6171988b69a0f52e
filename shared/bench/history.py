"""A generated history of the programme: the production and payout events a replay reads.

The mix follows how the programme runs: every week each artisan weaves a few
pieces (most pass QC, about one in ten fails), and every two weeks a payout run
schedules what each artisan earned, which is then paid (a few payouts fail and
go back to payable, to be scheduled again by the next run). Ids are of the services'
kinds and ordered in time as theirs are (UUIDv7 events, ULID pieces and payouts, at
the event's time): random ids would put every ledger index insert on a random page,
which costs PostgreSQL about 1.6 times the CPU the services' own ids cost. Everything
derives from the seed, so two runs with the same options replay the very same events.

Events are made and encoded in a stream, never held all at once: a million of
them as pydantic models would take gigabytes and distort every memory figure.
"""

from __future__ import annotations

import asyncio
import base64
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from aiokafka import AIOKafkaProducer

from shared.contracts import Envelope, encode, service_source, topic_name
from shared.contracts.events import Paid, PayoutFailed, PayoutScheduled, PieceWoven, QcFailed, QcPassed
from shared.ids import event_id_at, new_id_at
from shared.kafka import start_producer
from shared.settings import KafkaSettings
from shared.timeutil import WIB

PRODUCTION = service_source("production")
PAYOUT = service_source("payout")
START = datetime(2024, 1, 1, 8, 0, tzinfo=WIB)
PRODUCTS = {"piring": 15_000, "tatakan-mangkok": 8_000, "tas": 45_000, "dompet": 25_000}
COLLABORATORS = 20
PASS_RATE = 0.9
PAYOUT_FAILURE_RATE = 0.02
PAY_EVERY_WEEKS = 2


@dataclass
class HistoryStats:
    """What a generated history holds, by event type."""

    by_type: Counter[str] = field(default_factory=Counter)

    @property
    def events(self) -> int:
        return sum(self.by_type.values())


def generate_history(events: int, artisans: int, *, seed: int = 8) -> Iterator[Envelope]:
    """Exactly `events` events of the production and payout topics, across `artisans` artisans."""
    rng = random.Random(seed)
    ids = [f"res_{n:06d}" for n in range(artisans)]
    unscheduled: dict[str, int] = dict.fromkeys(ids, 0)  # earned, not yet in a payout
    produced = 0
    week = 0

    def signature() -> str:
        return base64.b64encode(rng.randbytes(64)).decode()  # the size of an Ed25519 signature

    while True:
        monday = START + timedelta(weeks=week)
        for artisan in ids:
            for _ in range(rng.choice((0, 1, 1, 2, 2, 3))):
                product = rng.choice(tuple(PRODUCTS))
                rate = PRODUCTS[product]
                collaborator = f"col_{rng.randrange(COLLABORATORS):03d}"
                woven_at = monday + timedelta(minutes=rng.randrange(5 * 24 * 60))
                piece = new_id_at("pc", woven_at, rng)
                yield Envelope.wrap(
                    PieceWoven(piece_id=piece, artisan_id=artisan, collaborator_id=collaborator, product=product,
                               rate_idr=rate, woven_at=woven_at),
                    source=PRODUCTION, time=woven_at, event_id=event_id_at(woven_at, rng),
                )
                produced += 1
                if produced == events:
                    return
                inspected = woven_at + timedelta(hours=rng.randrange(1, 48))
                if rng.random() < PASS_RATE:
                    result = QcPassed(piece_id=piece, artisan_id=artisan, collaborator_id=collaborator,
                                      product=product, amount_idr=rate, submission_id=f"sub_{piece}",
                                      inspected_at=inspected, signature=signature())
                    unscheduled[artisan] += rate
                else:
                    result = QcFailed(piece_id=piece, artisan_id=artisan, collaborator_id=collaborator,
                                      submission_id=f"sub_{piece}", defects=["anyaman longgar"],
                                      inspected_at=inspected, signature=signature())
                yield Envelope.wrap(result, source=PRODUCTION, time=inspected, event_id=event_id_at(inspected, rng))
                produced += 1
                if produced == events:
                    return
        week += 1
        if week % PAY_EVERY_WEEKS:
            continue
        run_id = f"run_{week:04d}"
        period_end = START + timedelta(weeks=week) - timedelta(seconds=1)
        for artisan in ids:
            due = unscheduled[artisan]
            if due == 0:
                continue
            scheduled_at = period_end + timedelta(hours=10)
            payout = new_id_at("po", scheduled_at, rng)
            yield Envelope.wrap(
                PayoutScheduled(payout_id=payout, run_id=run_id, artisan_id=artisan, amount_idr=due,
                                period_end=period_end),
                source=PAYOUT, time=scheduled_at, event_id=event_id_at(scheduled_at, rng),
            )
            produced += 1
            if produced == events:
                return
            unscheduled[artisan] = 0
            settled = scheduled_at + timedelta(hours=rng.randrange(1, 30))
            if rng.random() < PAYOUT_FAILURE_RATE:
                ending = PayoutFailed(payout_id=payout, artisan_id=artisan, amount_idr=due,
                                      reason="e-wallet account closed")
                unscheduled[artisan] = due  # back to payable: the next run schedules it again
            else:
                ending = Paid(payout_id=payout, artisan_id=artisan, amount_idr=due, method="bank-transfer",
                              reference=f"TRF-{payout[-12:]}", paid_at=settled)
            yield Envelope.wrap(ending, source=PAYOUT, time=settled, event_id=event_id_at(settled, rng))
            produced += 1
            if produced == events:
                return


async def produce_history(
    kafka: KafkaSettings, events: int, artisans: int, *, seed: int = 8, chunk: int = 5_000
) -> HistoryStats:
    """Generate the history, `encode()` each event and produce it onto `kafka`'s (prefixed) topics.

    Sends are batched by the producer (linger, large batches) and awaited a chunk at a
    time, so memory stays flat however long the history is.
    """
    stats = HistoryStats()
    producer = await start_producer(kafka, linger_ms=20, max_batch_size=1_048_576, compression_type=None)
    try:
        pending: list[asyncio.Future] = []
        for event in generate_history(events, artisans, seed=seed):
            record = encode(event)
            stats.by_type[event.type] += 1
            pending.append(await _send(producer, topic_name(record.topic, kafka.topic_prefix), record.key,
                                       record.value, list(record.headers)))
            if len(pending) >= chunk:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return stats


async def _send(producer: AIOKafkaProducer, topic: str, key: bytes, value: bytes, headers: list) -> asyncio.Future:
    return await producer.send(topic, value=value, key=key, headers=headers)
