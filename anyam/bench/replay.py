"""Measurement 1 (and the engine of 5): replaying the ledger from the production and payout topics.

The phases of one replay job run in a child process of their own (a fresh interpreter,
`spawn`), so that its memory figure is the replay's and not what generating a million
events left behind in the bench process, and so that the baseline runs in the same
process as the replay it is compared with:

- `baseline`: raw aiokafka consumption of the same partitions up to the same offsets,
  touching each record and nothing more: the most a Python consumer gets from this broker;
- `apply_event`: the service's projection as it is: every record decoded with the
  contracts' `decode` and checked with `provenance.check` as the ledger consumer checks it,
  then `services.payout.projections.apply_event` per event, in one transaction per fetched
  batch with the batch's offsets, as the ledger consumer does;
- `apply_events`: the auditor's rebuild itself (`anyam.audit.replay.replayed_ledger`, what
  `anyam replay` runs, with its default numbers of processes and workers, and the history's trust
  anchors): the same records decoded the same way, every money event vouched for (its topic owner's
  attestation, and a QC result's collaborator signature: `provenance.check`, in the lane processes),
  posted a batch at a time by `services.payout.projections.apply_events`
  (as the ledger consumer posts them too; rows identical to apply_event's), partitions dealt
  out to processes (`anyam.audit.lanes`) and within each to connections working side by side.

A replay that refuses a record of the bench's honest history says so (`refused`, which must be 0).
Each replay writes into a fresh database; its digest (`projections.ledger_digest`) is
taken after the clock stops. Each phase also reports the CPU seconds of its own process and
of the rest of the machine: on two cores, which of them is the bound.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import asyncpg
import psutil
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from anyam.audit.replay import DEFAULT_PROCESSES, replayed_ledger
from anyam.bench.child import run_module
from anyam.bench.environment import BenchEnvironment
from anyam.bench.memory import PeakRss
from anyam.gc_tuning import collections_for_batches
from services.payout import projections
from services.payout.domain import MONEY_EVENT_TYPES
from services.payout.messaging import LEDGER_TOPICS
from services.payout.projections import Source
from shared.contracts import DecodeError, Envelope, base_topic, decode, provenance, topic_name
from shared.contracts.provenance import TrustAnchors
from shared.eventstore import Reject
from shared.eventstore.schema import DDL as EVENTSTORE_DDL
from shared.kafka import end_offsets
from shared.settings import KafkaSettings

BASELINE, APPLY_EVENT, APPLY_EVENTS = "baseline", "apply_event", "apply_events"
REPLAY_CONSUMER = "bench-ledger-replay"
#: Give up when the log yields nothing for this long before the stop offsets are reached.
STALL_SECONDS = 120.0


@dataclass(frozen=True)
class Phase:
    """One thing a replay job does: `kind` is BASELINE, APPLY_EVENT or APPLY_EVENTS."""

    kind: str
    database_url: str | None = None


@dataclass(frozen=True)
class ReplayJob:
    """What the child process runs: phases in order over the same partitions up to the same offsets."""

    kafka: dict[str, Any]
    stops: tuple[tuple[str, int, int], ...]  # (topic, partition, offset to stop before)
    phases: tuple[Phase, ...]
    batch: int = 1000
    #: The history's trust anchors (`ANYAM_TRUST_ANCHORS`'s form): every replay checks against them.
    trust_anchors: str = ""


@dataclass
class PhaseFigures:
    """What one phase measured. Seconds are wall time from the first fetch to the last commit."""

    kind: str
    events: int
    seconds: float
    events_per_second: float
    peak_rss_mb: float
    start_rss_mb: float
    #: Seconds per stage of the one-by-one replay (read, decode, database), and for every replay the
    #: CPU seconds of its own process and of the rest of the machine (`cpu_of_…`).
    stage_seconds: dict[str, float] = field(default_factory=dict)
    transactions: int | None = None
    postings: int | None = None
    digest: str | None = None
    rejected: int = 0
    undecodable: int = 0
    #: Records refused because nobody vouches for them (`provenance.check`), or, for the batched replay,
    #: every record `anyam replay` refuses (its ledger's refusals included): 0 on an honest history.
    refused: int = 0
    #: How `peak_rss_mb` was measured (`PeakRss.measure`).
    memory_measure: str = ""

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


async def stop_offsets(kafka: KafkaSettings, fraction: float = 1.0) -> dict[TopicPartition, int]:
    """Where to stop on each partition of the ledger's topics: their true ends, or a fraction of each.

    A fraction cuts every partition at the same proportion; the history is written in
    time order, so that is (about) the first `fraction` of the programme's history.
    """
    ends = await end_offsets(kafka, [topic_name(topic, kafka.topic_prefix) for topic in LEDGER_TOPICS])
    return {tp: end if fraction >= 1.0 else int(end * fraction) for tp, end in ends.items()}


def job_for(kafka: KafkaSettings, stops: Mapping[TopicPartition, int], phases: list[Phase], batch: int,
            trust: TrustAnchors | None = None) -> ReplayJob:
    """The job of replaying up to `stops`, checking against `trust` (default: the anchors of the bench's
    history, `history.trust_anchors()`)."""
    from anyam.bench.history import trust_anchors

    return ReplayJob(
        kafka=kafka.document_for_a_child(),
        stops=tuple((tp.topic, tp.partition, stop) for tp, stop in sorted(stops.items())),
        phases=tuple(phases), batch=batch, trust_anchors=(trust or trust_anchors()).setting(),
    )


async def run_in_child(job: ReplayJob) -> list[PhaseFigures]:
    """Run `job` in a fresh interpreter (`python -m anyam.bench.replay`) and return each phase's figures."""
    return [PhaseFigures(**result) for result in await run_module("anyam.bench.replay", asdict(job), what="replay")]


def _job_from_json(document: dict[str, Any]) -> ReplayJob:
    return ReplayJob(
        kafka=document["kafka"], stops=tuple(tuple(stop) for stop in document["stops"]),
        phases=tuple(Phase(**phase) for phase in document["phases"]), batch=document["batch"],
        trust_anchors=document["trust_anchors"],
    )


async def _run_job(job: ReplayJob) -> list[dict[str, Any]]:
    kafka = KafkaSettings(**job.kafka)
    stops = {TopicPartition(topic, partition): stop for topic, partition, stop in job.stops}
    trust = TrustAnchors.parse(job.trust_anchors)
    results = []
    for phase in job.phases:
        # Every phase collects garbage as the auditor's replay does (`read_history`).
        with collections_for_batches():
            if phase.kind == BASELINE:
                figures = await consume_raw(kafka, stops, job.batch)
            else:
                assert phase.database_url is not None
                figures = await replay_ledger(kafka, stops, phase.database_url, kind=phase.kind, batch=job.batch,
                                              trust=trust)
        results.append(figures.as_json())
    return results


# --- reading ------------------------------------------------------------------------------------


def _consumer(kafka: KafkaSettings, batch: int) -> AIOKafkaConsumer:
    # The same client settings for the baseline and the replays: only what is done with the records differs.
    return AIOKafkaConsumer(
        **kafka.client_options(), group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
        max_poll_records=batch, fetch_max_wait_ms=100, max_partition_fetch_bytes=4 * 1024 * 1024,
    )


async def _fetched(kafka: KafkaSettings, stops: Mapping[TopicPartition, int], batch: int
                   ) -> AsyncIterator[list[ConsumerRecord]]:
    """Batches of at most `batch` records, every partition read from its start up to its stop offset."""
    consumer = _consumer(kafka, batch)
    await consumer.start()
    try:
        partitions = sorted(stops)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        remaining = {tp: stop for tp, stop in stops.items() if stop > 0}
        consumer.pause(*(tp for tp in partitions if tp not in remaining))
        last_progress = time.monotonic()
        while remaining:
            fetched = await consumer.getmany(timeout_ms=500, max_records=batch)
            records: list[ConsumerRecord] = []
            for tp, got in fetched.items():
                stop = remaining.get(tp)
                if stop is None:
                    continue
                if got[-1].offset >= stop - 1:
                    got = [record for record in got if record.offset < stop]
                    del remaining[tp]
                    consumer.pause(tp)
                records += got
            if records:
                last_progress = time.monotonic()
                yield records
            elif time.monotonic() - last_progress > STALL_SECONDS:
                short = ", ".join(f"{tp.topic}[{tp.partition}] < {stop}" for tp, stop in remaining.items())
                raise TimeoutError(f"nothing to read for {STALL_SECONDS:.0f}s, short of the stop offsets: {short}")
    finally:
        await consumer.stop()


async def consume_raw(kafka: KafkaSettings, stops: Mapping[TopicPartition, int], batch: int) -> PhaseFigures:
    """The baseline: fetch every record up to the stop offsets and touch its value; nothing else."""
    events = 0
    touched = 0
    with PeakRss() as memory:
        started = time.perf_counter()
        async for records in _fetched(kafka, stops, batch):
            for record in records:
                touched += len(record.value)
            events += len(records)
        seconds = time.perf_counter() - started
    assert touched > 0 or events == 0
    return PhaseFigures(BASELINE, events, seconds, events / seconds if seconds else 0.0,
                        max(memory.peak_mb, 0.0), memory.start_mb, memory_measure=memory.measure)


# --- replaying ----------------------------------------------------------------------------------


@dataclass
class _Decoded:
    items: list[tuple[Envelope, Source]]
    next_offsets: dict[TopicPartition, int]
    undecodable: int
    refused: int


def _decode_batch(records: list[ConsumerRecord], prefix: str, trust: TrustAnchors) -> _Decoded:
    """Decode and check every record as the ledger consumer does (`EventConsumer._decode`)."""
    items: list[tuple[Envelope, Source]] = []
    next_offsets: dict[TopicPartition, int] = {}
    undecodable = refused = 0
    for record in records:
        topic = base_topic(record.topic, prefix)
        try:
            event = decode(record.value, topic=topic)
        except DecodeError:
            undecodable += 1  # the consumer would dead-letter it; a generated history has none
        else:
            try:
                provenance.check(topic, record.value, record.headers, event, trust)
            except DecodeError:
                refused += 1  # dead-lettered as unattested or bad-signature; none in an honest history
            else:
                items.append((event, Source.of(record)))
        next_offsets[TopicPartition(record.topic, record.partition)] = record.offset + 1
    return _Decoded(items, next_offsets, undecodable, refused)


async def _store_offsets(conn: asyncpg.Connection, next_offsets: Mapping[TopicPartition, int]) -> None:
    await conn.executemany(
        """INSERT INTO consumer_offsets (consumer, topic, partition, next_offset) VALUES ($1, $2, $3, $4)
           ON CONFLICT (consumer, topic, partition) DO UPDATE SET next_offset = excluded.next_offset""",
        [(REPLAY_CONSUMER, tp.topic, tp.partition, offset) for tp, offset in next_offsets.items()],
    )


async def prepare_ledger_database(database_url: str) -> None:
    """Install the ledger's tables (and the offsets table) in a fresh database."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(EVENTSTORE_DDL)
        await projections.install_ledger(conn)
    finally:
        await conn.close()


async def replay_ledger(
    kafka: KafkaSettings, stops: Mapping[TopicPartition, int], database_url: str, *, kind: str, batch: int,
    trust: TrustAnchors,
) -> PhaseFigures:
    """Replay the ledger's topics up to `stops` into the (fresh) database at `database_url`, trusting
    only what `trust`'s keys vouch for."""
    if kind == APPLY_EVENT:
        return await _replay_one_by_one(kafka, stops, database_url, batch, trust)
    if kind == APPLY_EVENTS:
        return await _replay_as_the_auditor_does(kafka, stops, database_url, trust)
    raise ValueError(f"not a replay: {kind!r}")


class _CpuSplit:
    """CPU seconds of this process (with the lane processes it ran and waited for) and of the rest of
    the machine (PostgreSQL, the broker, …) from `start` to `stop`: which side bounds a replay,
    whatever its wall time says."""

    def start(self) -> None:
        self._process, self._machine = _own_cpu_seconds(), _busy_seconds()

    def stop(self) -> None:
        self.this_process = _own_cpu_seconds() - self._process
        self.rest_of_machine = max(_busy_seconds() - self._machine - self.this_process, 0.0)

    def stages(self) -> dict[str, float]:
        return {"cpu_of_this_process": self.this_process, "cpu_of_the_rest_of_the_machine": self.rest_of_machine}


def _own_cpu_seconds() -> float:
    times = os.times()  # children's times count once they have ended and been waited for
    return times.user + times.system + times.children_user + times.children_system


def _busy_seconds() -> float:
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


async def _replay_as_the_auditor_does(
    kafka: KafkaSettings, stops: Mapping[TopicPartition, int], database_url: str, trust: TrustAnchors,
) -> PhaseFigures:
    """`anyam replay`'s own rebuild (`replayed_ledger`: its processes, connections, lanes and batches, with
    `anyam replay`'s defaults, its provenance checks against `trust`), up to `stops`. Its memory is this
    process's peak plus each lane process's."""
    cpu = _CpuSplit()
    with PeakRss() as memory:
        started = time.perf_counter()
        cpu.start()
        async with replayed_ledger(kafka, database_url=database_url, topics=LEDGER_TOPICS, stop_at=stops,
                                   processes=DEFAULT_PROCESSES, trust=trust) as ledger:
            seconds = time.perf_counter() - started
            cpu.stop()
            history = ledger.history
            digest = await ledger.digest()
    lanes = history.lane_peak_rss_mb
    return PhaseFigures(
        APPLY_EVENTS, history.records, seconds, history.records / seconds if seconds else 0.0,
        memory.peak_mb + sum(lanes), memory.start_mb,
        stage_seconds={name: round(value, 3) for name, value in cpu.stages().items()},
        transactions=digest.transactions, postings=digest.postings, digest=digest.digest,
        undecodable=history.undecodable_count, refused=history.refused_count,
        memory_measure=memory.measure + (f", plus the peak RSS of each of its {len(lanes)} lane processes "
                                         "(VmHWM), summed" if lanes else ""),
    )


async def _replay_one_by_one(
    kafka: KafkaSettings, stops: Mapping[TopicPartition, int], database_url: str, batch: int, trust: TrustAnchors,
) -> PhaseFigures:
    """As the ledger consumer works event by event: fetch, decode and check (against `trust`), then
    apply_event per event in the batch's transaction, with the batch's offsets."""
    await prepare_ledger_database(database_url)
    conn = await asyncpg.connect(database_url)
    stages = {"read": 0.0, "decode": 0.0, "database": 0.0}
    counts = {"events": 0, "rejected": 0, "undecodable": 0, "refused": 0}
    try:
        cpu = _CpuSplit()
        with PeakRss() as memory:
            started = mark = time.perf_counter()
            cpu.start()
            async for records in _fetched(kafka, stops, batch):
                now = time.perf_counter()
                stages["read"] += now - mark
                decoded = _decode_batch(records, kafka.topic_prefix, trust)
                mark = time.perf_counter()
                stages["decode"] += mark - now
                async with conn.transaction():
                    for event, source in decoded.items:
                        try:
                            await projections.apply_event(conn, event, source=source)
                        except Reject:
                            counts["rejected"] += 1
                    await _store_offsets(conn, decoded.next_offsets)
                now = time.perf_counter()
                stages["database"] += now - mark
                mark = now
                counts["events"] += len(records)
                counts["undecodable"] += decoded.undecodable
                counts["refused"] += decoded.refused
            seconds = time.perf_counter() - started
            cpu.stop()
        digest = await projections.ledger_digest(conn)
    finally:
        await conn.close()
    events = counts["events"]
    return PhaseFigures(
        APPLY_EVENT, events, seconds, events / seconds if seconds else 0.0, memory.peak_mb, memory.start_mb,
        stage_seconds={name: round(value, 3) for name, value in (stages | cpu.stages()).items()},
        transactions=digest.transactions, postings=digest.postings, digest=digest.digest,
        rejected=counts["rejected"], undecodable=counts["undecodable"], refused=counts["refused"],
        memory_measure=memory.measure,
    )


if __name__ == "__main__":
    # The child: a job as JSON on stdin, the phases' figures as JSON on stdout.
    print(json.dumps(asyncio.run(_run_job(_job_from_json(json.load(sys.stdin))))))


# --- measurement 1 ------------------------------------------------------------------------------


@dataclass
class ReplayResults:
    """Measurement 1: the history, the baseline, the replay before and after batching, and the checks."""

    history: dict[str, int]
    produce_seconds: float
    baseline: PhaseFigures
    replay: PhaseFigures
    #: apply_event as the service has it, on the first `before.events` events (it is too slow for all).
    before: PhaseFigures | None
    #: apply_events on the same cut, for the identity check and the like-for-like speed-up.
    after_on_cut: PhaseFigures | None
    #: The digest computed in memory from the generated events (`domain.ledger_digest`), for small histories.
    expected_digest: str | None

    @property
    def ratio_to_baseline(self) -> float:
        return self.replay.events_per_second / self.baseline.events_per_second if self.baseline.seconds else 0.0

    @property
    def attestations_checked(self) -> int:
        """The records whose attestation the batched replay checked (`anyam replay` checks what moves money):
        an inclusion proof each, and a signature per tree head (relay batch) and lane process."""
        return sum(self.history.get(event_type, 0) for event_type in MONEY_EVENT_TYPES)

    @property
    def collaborator_signatures_checked(self) -> int:
        """The collaborators' Ed25519 signatures it verified besides: one per `qc-passed`."""
        return self.history.get("qc-passed", 0)

    @property
    def identical(self) -> bool | None:
        """Whether apply_events wrote the ledger apply_event wrote (same digest on the same events)."""
        if self.before is None or self.after_on_cut is None:
            return None
        return self.before.digest == self.after_on_cut.digest

    def as_json(self) -> dict[str, Any]:
        return {
            "history": self.history, "produce_seconds": self.produce_seconds, "baseline": self.baseline.as_json(),
            "replay": self.replay.as_json(), "ratio_to_baseline": self.ratio_to_baseline,
            "refused": self.replay.refused, "attestations_checked": self.attestations_checked,
            "collaborator_signatures_checked": self.collaborator_signatures_checked,
            "before": self.before.as_json() if self.before else None,
            "after_on_cut": self.after_on_cut.as_json() if self.after_on_cut else None,
            "identical_to_apply_event": self.identical, "expected_digest": self.expected_digest,
            "memory_measure": f"peak RSS of the replay's own process: {self.replay.memory_measure}",
        }


#: Up to this many events, the expected digest is also computed in memory, independently of Kafka and SQL.
IN_MEMORY_DIGEST_LIMIT = 200_000


async def measure_replay(
    env: BenchEnvironment, kafka: KafkaSettings, *, events: int, artisans: int, batch: int, before_events: int,
    seed: int | None = None,
) -> ReplayResults:
    """Produce the (signed, attested) history onto `kafka`'s fresh topics, then run the baseline and the
    replays, which trust the history's anchors."""
    from anyam.bench.history import SEED, generate_history, produce_history, trust_anchors

    seed = SEED if seed is None else seed
    trust = trust_anchors(seed)

    started = time.perf_counter()
    stats = await produce_history(kafka, events, artisans, seed=seed)
    produce_seconds = time.perf_counter() - started
    expected = None
    if events <= IN_MEMORY_DIGEST_LIMIT:
        from services.payout import domain

        transactions = [tx for event in generate_history(events, artisans, seed=seed)
                        if (tx := domain.transaction_for(event)) is not None]
        expected = domain.ledger_digest(domain.digest_rows(transactions))
    stops = await stop_offsets(kafka)
    url = await env.fresh_database("replay")
    try:
        baseline, replay = await run_in_child(job_for(kafka, stops, [Phase(BASELINE), Phase(APPLY_EVENTS, url)],
                                                      batch, trust))
    finally:
        await env.drop_database(url)
    before = after_on_cut = None
    if before_events > 0:
        cut = await stop_offsets(kafka, fraction=min(1.0, before_events / events))
        one, many = await env.fresh_database("before"), await env.fresh_database("after")
        try:
            before, after_on_cut = await run_in_child(job_for(kafka, cut, [Phase(APPLY_EVENT, one),
                                                                           Phase(APPLY_EVENTS, many)], batch, trust))
        finally:
            await env.drop_database(one)
            await env.drop_database(many)
    return ReplayResults(dict(stats.by_type), produce_seconds, baseline, replay, before, after_on_cut, expected)
