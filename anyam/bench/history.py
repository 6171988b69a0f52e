"""A generated history of the programme: the production and payout events a replay reads.

The mix follows how the programme runs: every week each artisan weaves a few
pieces (most pass QC, about one in ten fails), and every two weeks a payout run
schedules what each artisan earned, which is then paid (a few payouts fail and
go back to payable, to be scheduled again by the next run). Ids are of the services'
kinds and ordered in time as theirs are (UUIDv7 events, ULID pieces and payouts, at
the event's time): random ids would put every ledger index insert on a random page,
which costs PostgreSQL about 1.6 times the CPU the services' own ids cost. Everything
derives from the seed, so two runs with the same options replay the very same events.

The history is genuine, as docs/trust.md asks of a log: each QC result carries the
submission its collaborator signed (`provenance.signed_result`), and every record is
produced with the attestation headers of its topic's owner (a signed tree head per batch
of the relay's size, and the record's inclusion proof). The collaborators'
and the services' keys derive from the seed too (`collaborator_key`, `service_keys`),
so `trust_anchors(seed)` is what an auditor of the history pins. The random draws are
those of the history before it was signed (a 64-byte draw where a result's random
signature was), so its ids, and its ledger digest, are the same as before.

Events are made and encoded in a stream, never held all at once: a million of
them as pydantic models would take gigabytes and distort every memory figure.
Producing them, the signing (a collaborator's signature per QC result, a tree head per
batch) is done by a pool of processes a chunk at a time, in order, a few chunks ahead.
"""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing
import os
import random
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from itertools import islice
from typing import Any

from aiokafka import AIOKafkaProducer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.contracts import Envelope, Topic, encode, service_source, topic_name
from shared.contracts.events import EventData, Paid, PayoutFailed, PayoutScheduled, PieceWoven
from shared.contracts.provenance import SERVICES, TOPIC_OWNERS, Attester, TrustAnchors, signed_result
from shared.eventstore.relay import RELAY_BATCH_SIZE
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
#: The seed of the bench's history (and so of its keys) unless told otherwise.
SEED = 8
#: Processes that sign and encode while the history is produced: one per core, at most four.
SIGNERS = max(1, min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1), 4))


# --- keys -----------------------------------------------------------------------------------------


def _derived_key(seed: int, name: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(f"{seed}|{name}".encode()).digest())


def collaborator_key(seed: int, collaborator_id: str) -> Ed25519PrivateKey:
    """The key a generated history's collaborator signs its submissions with (from the seed)."""
    return _derived_key(seed, collaborator_id)


def service_keys(seed: int = SEED) -> dict[str, Ed25519PrivateKey]:
    """Each service's signing key in a generated history (from the seed)."""
    return {service: _derived_key(seed, f"service:{service}") for service in SERVICES}


def trust_anchors(seed: int = SEED) -> TrustAnchors:
    """What an auditor of the history generated with `seed` pins: its services' public keys."""
    return TrustAnchors.of(service_keys(seed))


@dataclass(frozen=True)
class _Keys:
    """The signers of one seed's history: the services' attesters and the collaborators' keys."""

    attesters: dict[Topic, Attester]
    collaborators: dict[str, Ed25519PrivateKey]

    @classmethod
    def of(cls, seed: int) -> _Keys:
        services = service_keys(seed)
        return cls({topic: Attester(services[owner]) for topic, owner in TOPIC_OWNERS.items()},
                   {f"col_{n:03d}": collaborator_key(seed, f"col_{n:03d}") for n in range(COLLABORATORS)})


@cache
def _keys(seed: int) -> _Keys:
    return _Keys.of(seed)


# --- the history ------------------------------------------------------------------------------------

#: What an event will be, before anything is signed: (its data's kind, the data's fields, its source,
#: time and id). Cheap to make and to hand to another process; `_event` makes the event of it.
_Plan = tuple[str, dict[str, Any], str, datetime, str]
_RESULT = "qc-result"
_DATA = {cls.__name__: cls for cls in (PieceWoven, PayoutScheduled, Paid, PayoutFailed)}


def _event(plan: _Plan, keys: _Keys) -> Envelope:
    kind, fields, source, time, event_id = plan
    data: EventData
    if kind == _RESULT:
        data = signed_result(keys.collaborators[fields["collaborator_id"]], **fields)
    else:
        data = _DATA[kind](**fields)
    return Envelope.wrap(data, source=source, time=time, event_id=event_id)


@dataclass
class HistoryStats:
    """What a generated history holds, by event type."""

    by_type: Counter[str] = field(default_factory=Counter)

    @property
    def events(self) -> int:
        return sum(self.by_type.values())


def generate_history(events: int, artisans: int, *, seed: int = SEED) -> Iterator[Envelope]:
    """Exactly `events` events of the production and payout topics, across `artisans` artisans, each QC
    result carrying its collaborator's signed submission (signed here, in this process)."""
    keys = _keys(seed)
    for plan in _plans(events, artisans, seed=seed):
        yield _event(plan, keys)


def _plans(events: int, artisans: int, *, seed: int) -> Iterator[_Plan]:
    """What `generate_history` yields, planned: every random draw is made here, in order."""
    rng = random.Random(seed)
    ids = [f"res_{n:06d}" for n in range(artisans)]
    unscheduled: dict[str, int] = dict.fromkeys(ids, 0)  # earned, not yet in a payout
    produced = 0
    week = 0

    while True:
        monday = START + timedelta(weeks=week)
        for artisan in ids:
            for _ in range(rng.choice((0, 1, 1, 2, 2, 3))):
                product = rng.choice(tuple(PRODUCTS))
                rate = PRODUCTS[product]
                collaborator = f"col_{rng.randrange(COLLABORATORS):03d}"
                woven_at = monday + timedelta(minutes=rng.randrange(5 * 24 * 60))
                piece = new_id_at("pc", woven_at, rng)
                yield ("PieceWoven", {"piece_id": piece, "artisan_id": artisan, "collaborator_id": collaborator,
                                      "product": product, "rate_idr": rate, "woven_at": woven_at},
                       PRODUCTION, woven_at, event_id_at(woven_at, rng))
                produced += 1
                if produced == events:
                    return
                inspected = woven_at + timedelta(hours=rng.randrange(1, 48))
                result: dict[str, Any] = {"piece_id": piece, "artisan_id": artisan, "collaborator_id": collaborator,
                                          "inspected_at": inspected}
                if rng.random() < PASS_RATE:
                    result |= {"product": product, "amount_idr": rate}
                    unscheduled[artisan] += rate
                else:
                    result |= {"defects": ["loose-weave"]}
                # Where a random signature was drawn before the history was signed: the same draws, the same ids.
                rng.randbytes(64)
                yield _RESULT, result, PRODUCTION, inspected, event_id_at(inspected, rng)
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
            yield ("PayoutScheduled", {"payout_id": payout, "run_id": run_id, "artisan_id": artisan,
                                       "amount_idr": due, "period_end": period_end},
                   PAYOUT, scheduled_at, event_id_at(scheduled_at, rng))
            produced += 1
            if produced == events:
                return
            unscheduled[artisan] = 0
            settled = scheduled_at + timedelta(hours=rng.randrange(1, 30))
            if rng.random() < PAYOUT_FAILURE_RATE:
                ending: tuple[str, dict[str, Any]] = ("PayoutFailed", {
                    "payout_id": payout, "artisan_id": artisan, "amount_idr": due,
                    "reason": "account-closed"})
                unscheduled[artisan] = due  # back to payable: the next run schedules it again
            else:
                ending = ("Paid", {"payout_id": payout, "artisan_id": artisan, "amount_idr": due,
                                   "method": "bank-transfer", "reference": f"TRF-{payout[-12:]}", "paid_at": settled})
            yield *ending, PAYOUT, settled, event_id_at(settled, rng)
            produced += 1
            if produced == events:
                return


#: A record as produced: its (base) topic, key, value, headers (the attestation included) and event type.
_Record = tuple[Topic, bytes, bytes, list[tuple[str, bytes]], str]


def attested_records(plans: Iterable[_Plan], seed: int) -> list[_Record]:
    """The records of `plans`, encoded and attested by their topics' owners (run in the signing processes):
    each owner's records, in order, in batches of `RELAY_BATCH_SIZE`, one signed tree head per batch, as
    the owner's relay would publish them."""
    keys = _keys(seed)
    records: list[_Record] = []
    by_topic: dict[Topic, list[int]] = {}
    for plan in plans:
        event = _event(plan, keys)
        record = encode(event)
        by_topic.setdefault(record.topic, []).append(len(records))
        records.append((record.topic, record.key, record.value, list(record.headers), event.type))
    for topic, indexes in by_topic.items():
        for start in range(0, len(indexes), RELAY_BATCH_SIZE):
            batch = indexes[start:start + RELAY_BATCH_SIZE]
            attestations = keys.attesters[topic].attest([records[index][2] for index in batch])
            for index, attestation in zip(batch, attestations, strict=True):
                records[index][3].extend(attestation)
    return records


async def produce_history(
    kafka: KafkaSettings, events: int, artisans: int, *, seed: int = SEED, chunk: int = 5_000,
    signers: int = SIGNERS,
) -> HistoryStats:
    """Generate the history, `encode()` and attest each event and produce it onto `kafka`'s (prefixed) topics.

    Chunks of planned events are signed and encoded by `signers` processes (`spawn`: nothing of this
    process's event loop or clients is copied into them), at most two chunks ahead per process and
    produced in order. Sends are batched by the producer (linger, large batches) and awaited a chunk
    at a time, so memory stays flat however long the history is.
    """
    stats = HistoryStats()
    loop = asyncio.get_running_loop()
    plans = _plans(events, artisans, seed=seed)
    producer = await start_producer(kafka, linger_ms=20, max_batch_size=1_048_576, compression_type=None)
    try:
        with ProcessPoolExecutor(max(1, signers), mp_context=multiprocessing.get_context("spawn")) as pool:
            ahead: deque[asyncio.Future[list[_Record]]] = deque()
            pending: list[asyncio.Future] = []
            while True:
                while len(ahead) < 2 * max(1, signers) and (part := list(islice(plans, chunk))):
                    ahead.append(loop.run_in_executor(pool, attested_records, part, seed))
                if not ahead:
                    break
                for topic, key, value, headers, event_type in await ahead.popleft():
                    stats.by_type[event_type] += 1
                    pending.append(await _send(producer, topic_name(topic, kafka.topic_prefix), key, value,
                                               headers))
                await asyncio.gather(*pending)
                pending.clear()
    finally:
        await producer.stop()
    return stats


async def _send(producer: AIOKafkaProducer, topic: str, key: bytes, value: bytes, headers: list) -> asyncio.Future:
    return await producer.send(topic, value=value, key=key, headers=headers)
