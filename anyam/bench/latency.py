"""Measurement 2: end-to-end latency, from a signed QC submission published to its ledger row committed.

The path measured is the whole pipeline of separate processes: the bench publishes a
`qc-submitted` CloudEvent onto `qc-submissions` (with the producer settings a collaborator's
client has by default, `PUBLISHER_LINGER_MS`); production's QC consumer verifies the
signature and appends `qc-passed` (its transaction, with the offset); production's relay
publishes it onto `production`; payout's ledger consumer posts it (its transaction,
with the offset). The clock stops when the ledger row is visible to another
connection, i.e. committed.

How the end is seen, exactly and cheaply: the ledger consumer stores its offsets in
the same transaction as the ledger rows, so a `qc-passed` record at offset o of a
partition of `production` is committed in the ledger once payout's stored next offset
for that partition exceeds o. The bench polls payout's `consumer_offsets` (three rows)
every few milliseconds and keeps each advance with the moment the query returned; it
tails `production` to learn each piece's offset, and stamps the piece with the first
poll that saw the stored offset pass it, whether the tail read the record before that
poll or after. Each latency is thus late by at most one poll cycle, whose mean is
reported as the resolution, and the tail can let the broker wait as long as Kafka's
default: it adds two fetches a second to the broker's load, not two hundred (fetching
every few milliseconds and stamping what it read late with the moment it read it would
both load the embedded broker and overstate those latencies).
(`recorded_at` cannot serve: it is `now()`, the *start* of the consumer's transaction,
not its commit; and asking the ledger for thousands of outstanding pieces every few
milliseconds loaded PostgreSQL enough to distort what it measured.)

The baseline, run next by the same bench (`anyam.bench.raw_chain`, its stages in processes
laid out as the services are): the same records through the same two broker hops with
nothing done between them, timed from publish to arrival. Its latency is what the broker
alone takes on this machine; the report gives Anyam's p99 as a multiple of it.

Pieces are woven first by appending `piece-woven` to production's event store with
`EventStore.append` (one stream per piece, as the service's own handler does), and
the bench waits on real positions (relay checkpoint, stored offsets) until payout has
read them all, so the timed phase starts on a quiet pipeline. Every submission passes
QC, so every one must end as exactly one ledger row: any missing at the end is lost.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import hashlib
import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

import psutil
from aiokafka import AIOKafkaConsumer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from anyam.bench.environment import BenchEnvironment
from anyam.bench.raw_chain import run_raw_chain
from anyam.bench.schedule import publish_on_schedule
from anyam.bench.services import BenchServices, bench_services
from services.payout.messaging import LEDGER_TOPICS, ledger_consumer
from shared.contracts import Envelope, Topic, service_source, topic_name
from shared.contracts.events import PieceWoven
from shared.contracts.signing import public_key_b64, signed, submission_event
from shared.eventstore import EventStore, wait_until_caught_up, wait_until_published
from shared.kafka import end_offsets, partitions_of, start_producer
from shared.timeutil import wib_now

POLL_INTERVAL = 0.005
#: How long the tail of `production` lets the broker wait before answering a fetch (Kafka's default).
TAIL_FETCH_WAIT_MS = 500
#: How long the publisher lets a submission wait for others to share its produce request: what a
#: collaborator's client does by default (librdkafka since 1.5, Kafka's Java client since 4.0;
#: aiokafka's default is 0). The wait counts: each latency starts when the bench hands the
#: submission to its producer.
PUBLISHER_LINGER_MS = 5
#: After the last publish, a submission still missing when nothing has reached the ledger for this
#: long is lost. (A pipeline that keeps making progress is waited for, up to `drain_timeout`.)
STALL_SECONDS = 30.0
PRODUCT, RATE = "piring", 15_000


@dataclass
class RawChainFigures:
    """The baseline (`anyam.bench.raw_chain`): the same records through the same two broker hops, nothing else."""

    published: int
    delivered: int
    lost: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    #: The embedded broker's CPU (% of one core) in each tenth of the publishing phase.
    broker_cpu_percent: list[float] = field(default_factory=list)


@dataclass
class LatencyFigures:
    rate_per_second: int
    seconds: float
    published: int
    achieved_rate: float
    committed: int
    lost: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    #: The mean time between two looks at the ledger: each latency is late by at most about this much.
    poll_resolution_ms: float
    #: How long after the last publish the last ledger row appeared.
    drain_seconds: float
    setup_seconds: float
    #: Pieces whose record the bench's tail read only after payout had committed past it (stamped from
    #: the poll that saw the commit, as the others are).
    late_observed: int = 0
    #: Where the time goes: from publish to production's relay sending the piece's `qc-passed`
    #: (the record's CreateTime), i.e. production's QC consumer, its commit and the relay.
    relayed_p50_ms: float = 0.0
    relayed_p99_ms: float = 0.0
    #: The embedded broker's CPU (% of one core) in each tenth of the publishing phase: tansu 0.6's
    #: in-memory fetch costs more the longer the topic, so it grows as the run goes on.
    broker_cpu_percent: list[float] = field(default_factory=list)
    timeline: list[dict[str, float]] = field(default_factory=list)
    #: The baseline run after it by the same bench: what the broker alone takes for the two hops.
    raw_chain: RawChainFigures | None = None

    @property
    def p99_to_raw_chain(self) -> float | None:
        """Anyam's p99 over the raw chain's: how many times the broker's own latency Anyam takes."""
        if self.raw_chain is None or self.raw_chain.p99_ms <= 0:
            return None
        return self.p99_ms / self.raw_chain.p99_ms

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "p99_to_raw_chain": self.p99_to_raw_chain}


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by the nearest-rank method: a latency that was actually observed."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 1))))
    return ordered[rank - 1]


async def measure_latency(
    env: BenchEnvironment, *, rate: int, seconds: float, artisans: int, drain_timeout: float | None = None
) -> LatencyFigures:
    """Publish `rate` signed submissions per second for `seconds`; time each to its committed ledger row."""
    total = max(1, int(rate * seconds))
    setup_started = time.monotonic()
    async with bench_services(env, ["production", "payout"], "e2e") as services:
        key = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"anyam-bench-collaborator").digest())
        collaborator = await services.post("production", "/collaborators",
                                           {"name": "PT Bench Anyaman", "public_key": public_key_b64(key)})
        collaborator_id = collaborator["collaborator_id"]
        pieces = await _weave(services, total, max(1, artisans), collaborator_id)
        submissions = [_submission(key, piece, collaborator_id) for piece in pieces]
        setup_seconds = time.monotonic() - setup_started
        broker = _BrokerCpu(env.broker_pid, seconds / 10)
        sent, seen, relayed, cycles, last_publish, late = await _run(services, pieces, submissions, rate,
                                                                     drain_timeout or max(900.0, 10 * seconds),
                                                                     broker)
    # The baseline runs once the services have stopped: the broker's share alone, the same records.
    raw_chain = await _measure_raw_chain(env, pieces, submissions, rate, seconds)
    latencies = [(seen[piece] - sent[piece]) * 1000 for piece in sent if piece in seen]
    to_relay = [(relayed[piece] - sent[piece]) * 1000 for piece in sent if piece in relayed]
    published_seconds = max(sent.values()) - min(sent.values()) if len(sent) > 1 else 0.0
    timeline = _timeline(sent, seen)
    return LatencyFigures(
        rate_per_second=rate, seconds=seconds, published=len(sent),
        achieved_rate=len(sent) / published_seconds if published_seconds else float(len(sent)),
        committed=len(latencies), lost=len(sent) - len(latencies),
        p50_ms=percentile(latencies, 0.50), p95_ms=percentile(latencies, 0.95), p99_ms=percentile(latencies, 0.99),
        max_ms=max(latencies, default=0.0), mean_ms=statistics.fmean(latencies) if latencies else 0.0,
        poll_resolution_ms=(statistics.fmean(cycles) * 1000) if cycles else 0.0,
        drain_seconds=max(0.0, max(seen.values(), default=last_publish) - last_publish),
        setup_seconds=setup_seconds, late_observed=late, timeline=timeline,
        relayed_p50_ms=percentile(to_relay, 0.50), relayed_p99_ms=percentile(to_relay, 0.99),
        broker_cpu_percent=broker.percentages, raw_chain=raw_chain,
    )


async def _measure_raw_chain(
    env: BenchEnvironment, pieces: list[str], submissions: list[bytes], rate: int, seconds: float
) -> RawChainFigures:
    broker = _BrokerCpu(env.broker_pid, seconds / 10)
    sent, arrived = await run_raw_chain(env, pieces, submissions, rate=rate, stall_seconds=STALL_SECONDS,
                                        publisher_linger_ms=PUBLISHER_LINGER_MS,
                                        tail_fetch_wait_ms=TAIL_FETCH_WAIT_MS, broker=broker)
    latencies = [(arrived[piece] - sent[piece]) * 1000 for piece in sent if piece in arrived]
    return RawChainFigures(
        published=len(sent), delivered=len(latencies), lost=len(sent) - len(latencies),
        p50_ms=percentile(latencies, 0.50), p95_ms=percentile(latencies, 0.95), p99_ms=percentile(latencies, 0.99),
        max_ms=max(latencies, default=0.0), broker_cpu_percent=broker.percentages,
    )


async def _weave(services: BenchServices, total: int, artisans: int, collaborator_id: str) -> list[str]:
    """`total` pieces woven (appended to production's store), published and read by payout."""
    source = service_source("production")
    woven_at = wib_now() - timedelta(hours=1)
    pieces = []
    pool = services.pools["production"]
    store = EventStore(pool)
    for start in range(0, total, 1000):
        async with store.unit() as uow:
            for n in range(start, min(total, start + 1000)):
                piece = f"pc_bench_{n:07d}"
                event = Envelope.wrap(PieceWoven(piece_id=piece, artisan_id=f"res_{n % artisans:06d}",
                                                 collaborator_id=collaborator_id, product=PRODUCT, rate_idr=RATE,
                                                 woven_at=woven_at), source=source, time=woven_at)
                uow.append(piece, 0, [event])
                pieces.append(piece)
    await wait_until_published(pool, timeout=600)
    await wait_until_caught_up(services.pools["payout"], ledger_consumer(services.kafka.topic_prefix),
                               services.kafka, list(LEDGER_TOPICS), timeout=600)
    return pieces


def _submission(key: Ed25519PrivateKey, piece: str, collaborator_id: str) -> bytes:
    data = signed(key, {
        "submission_id": f"qc-{piece}", "piece_id": piece, "collaborator_id": collaborator_id, "result": "passed",
        "inspector": "qc-bench-01", "inspected_at": wib_now().isoformat(timespec="milliseconds"), "defects": [],
    })
    return submission_event(data)


class CommitClock:
    """When each piece's `qc-passed` was committed in the ledger, from two sources in any order: where
    the record sits on `production` (the tail) and payout's stored offsets (the polls)."""

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}
        #: Pieces whose record the tail read only after a poll had seen the ledger commit past it.
        self.late = 0
        self._committed: dict[int, int] = {}  # payout's stored next offset per partition
        # Per partition: every advance of the stored offset (moment seen, next offset), and the
        # records read but not yet committed (offset, piece), both in offset order.
        self._advances: dict[int, list[tuple[float, int]]] = collections.defaultdict(list)
        self._pending: dict[int, collections.deque[tuple[int, str]]] = collections.defaultdict(collections.deque)

    def stored(self, partition: int, next_offset: int, at: float) -> None:
        """A poll at `at` found payout's stored next offset for `partition`."""
        if next_offset <= self._committed.get(partition, 0):
            return
        self._committed[partition] = next_offset
        self._advances[partition].append((at, next_offset))
        waiting = self._pending[partition]
        while waiting and waiting[0][0] < next_offset:
            self.seen[waiting.popleft()[1]] = at

    def read(self, partition: int, offset: int, piece: str) -> None:
        """The tail read `piece`'s record at `offset` of `partition`."""
        if offset < self._committed.get(partition, 0):
            # Committed before the tail read it: stamped with the poll that first saw the stored
            # offset pass it, exactly as if the tail had been there in time.
            advances = self._advances[partition]
            self.seen[piece] = advances[bisect.bisect_right(advances, offset, key=lambda advance: advance[1])][0]
            self.late += 1
        else:
            self._pending[partition].append((offset, piece))


async def _run(
    services: BenchServices, pieces: list[str], submissions: list[bytes], rate: int, drain_timeout: float,
    broker: _BrokerCpu,
) -> tuple[dict[str, float], dict[str, float], dict[str, float], list[float], float, int]:
    sent: dict[str, float] = {}
    clock = CommitClock()
    seen = clock.seen
    relayed: dict[str, float] = {}
    cycles: list[float] = []
    publishing_done = asyncio.Event()
    prefix = services.kafka.topic_prefix
    submissions_topic = topic_name(Topic.QC_SUBMISSIONS, prefix)
    production_topic = topic_name(Topic.PRODUCTION, prefix)
    consumer_name = ledger_consumer(prefix)

    # Positioned before the first publish, so that no qc-passed can land before the tail looks. Kafka's
    # default wait: the tail needs no hurry (`CommitClock` stamps a record read late exactly), and
    # every fetch it makes is work for the broker that the pipeline under measurement shares.
    tailer = AIOKafkaConsumer(**services.kafka.client_options(), group_id=None, enable_auto_commit=False,
                              fetch_max_wait_ms=TAIL_FETCH_WAIT_MS)
    await tailer.start()
    partitions = await partitions_of(tailer, [production_topic])
    tailer.assign(partitions)
    ends = await end_offsets(services.kafka, [production_topic])
    for tp in partitions:
        tailer.seek(tp, ends[tp])  # after the woven pieces: only what the submissions cause

    async def tail() -> None:
        """Learn at which offset of `production` each piece's qc-passed landed."""
        while True:
            for tp, records in (await tailer.getmany(timeout_ms=100)).items():
                for record in records:
                    document = json.loads(record.value)
                    if document.get("type") != "qc-passed":
                        continue
                    piece = document["data"]["piece_id"]
                    relayed[piece] = record.timestamp / 1000
                    clock.read(tp.partition, record.offset, piece)

    async def poll() -> None:
        """Stamp each piece when payout's stored offset (committed with its ledger row) passes its record."""
        pool = services.pools["payout"]
        deadline: float | None = None
        progressed, last_progress = 0, time.monotonic()
        async with pool.acquire() as conn:
            statement = await conn.prepare(
                "SELECT partition, next_offset FROM consumer_offsets WHERE consumer = $1 AND topic = $2")
            while True:
                began = time.monotonic()
                rows = await statement.fetch(consumer_name, production_topic)
                now = time.time()
                for row in rows:
                    clock.stored(row["partition"], row["next_offset"], now)
                if len(seen) > progressed:
                    progressed, last_progress = len(seen), time.monotonic()
                if publishing_done.is_set():
                    deadline = deadline or time.monotonic() + drain_timeout
                    stalled = time.monotonic() - last_progress > STALL_SECONDS
                    if len(seen) >= len(sent) or stalled or time.monotonic() > deadline:
                        return
                await asyncio.sleep(max(0.0, POLL_INTERVAL - (time.monotonic() - began)))
                cycles.append(time.monotonic() - began)

    producer = await start_producer(services.kafka, linger_ms=PUBLISHER_LINGER_MS)
    tailing = asyncio.create_task(tail())
    poller = asyncio.create_task(poll())
    try:
        deliveries = await publish_on_schedule(producer, submissions_topic, pieces, submissions, rate=rate,
                                               broker=broker, sent=sent)
        last_publish = time.time()
        await asyncio.gather(*deliveries)
        publishing_done.set()
        await poller
    finally:
        for task in (poller, tailing):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await tailer.stop()
        await producer.stop()
    return sent, seen, relayed, cycles, last_publish, clock.late


class _BrokerCpu:
    """The broker process's CPU over consecutive windows of `window` seconds (nothing without a pid)."""

    def __init__(self, pid: int | None, window: float) -> None:
        self._process = psutil.Process(pid) if pid is not None else None
        self._window = max(window, 0.5)
        self.percentages: list[float] = []
        self._since = 0.0

    def start(self) -> None:
        if self._process is not None:
            self._process.cpu_percent()  # psutil measures each call from the one before
            self._since = time.monotonic()

    def sample(self, *, final: bool = False) -> None:
        if self._process is None:
            return
        elapsed = time.monotonic() - self._since
        if elapsed >= self._window or (final and elapsed > 0.1):
            self.percentages.append(round(self._process.cpu_percent(), 1))
            self._since = time.monotonic()


def _timeline(sent: dict[str, float], seen: dict[str, float]) -> list[dict[str, float]]:
    """Per second of publishing: p50 and max latency of what was sent in it (shows a growing backlog)."""
    if not sent:
        return []
    start = min(sent.values())
    buckets: dict[int, list[float]] = {}
    for piece, at in sent.items():
        if piece in seen:
            buckets.setdefault(int(at - start), []).append((seen[piece] - at) * 1000)
    return [{"second": second, "p50_ms": round(percentile(values, 0.5), 1), "max_ms": round(max(values), 1)}
            for second, values in sorted(buckets.items())]
