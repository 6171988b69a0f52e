"""`anyam replay`: the auditor's rebuild of the ledger from the topics alone, into a scratch database.

What makes it an audit and not a second payout service:
- it reads every event topic from the beginning with a consumer that belongs
  to no group (assign and seek): it commits no offsets and moves no one's
  position; it creates no producer, so it publishes, schedules and pays nothing;
- it reads up to the end offsets taken when it starts, so what it rebuilds is a
  fixed history, whatever is published meanwhile;
- it writes with the payout service's own projection code
  (`projections.install_ledger` and `projections.apply_events`, as the ledger
  consumer does) into a database
  of its own: an embedded PostgreSQL in a temporary directory, removed
  afterwards, unless `--database-url` names an empty one;
- every record is decoded exactly as the live consumers decode it (for the
  topic it came from); what does not decode is counted and reported, never fatal;
- every event that would move money must be vouched for as the live consumers
  require (SPEC §11, `shared.contracts.provenance`): attested by the service
  that owns its topic, a QC result carrying its collaborator's valid signature.
  Others are refused and named by event id, never posted;
- the ledger is applied in full, and the `as_of` cut is made when reading it,
  by the events' own `time`, exactly as the live ledger's `as_of` reads do.
  (Cutting the events first would differ in one corner: a second `qc-passed`
  for a piece, refused live because the first one came earlier in the
  partition, would be posted by a replay that cut the first one away.)

Partitions are read one after another in a configurable order (sorted by
default); the ledger is a function of the set of events, so any order gives
the same digest, and tests prove it by reading in reverse.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from anyam.audit.invariants import LedgerRow, Position, artisan_of
from anyam.gc_tuning import collections_for_batches
from anyam.stack.errors import StackError
from services.payout import domain, projections
from shared.contracts import EVENT_TOPICS, DecodeError, Envelope, Topic, base_topic, decode, provenance, topic_name
from shared.contracts.provenance import TrustAnchors
from shared.kafka import TimeIndexUnavailable, end_offsets, offsets_at, partitions_of
from shared.settings import KafkaSettings

#: Later than any event: `projections.earned_by_artisan` needs an upper bound.
_END_OF_TIME = datetime(9999, 12, 31, tzinfo=UTC)
#: How many records one database transaction of the rebuild applies.
BATCH_SIZE = 1000
#: Processes a rebuild's lanes are spread over by default (`anyam.audit.lanes`): one per core, at
#: most four. A process's Python runs on one core, and decoding and posting a million events is
#: mostly Python (lanes in processes of their own put that Python on every core, where lanes in one
#: process share one).
DEFAULT_PROCESSES = max(1, min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else
                               (os.cpu_count() or 1), 4))
#: Connections applying partitions side by side by default: at least two, so that one lane posts while
#: another decodes (so the database's work and the Python's overlap), and one per process.
DEFAULT_WORKERS = max(2, DEFAULT_PROCESSES)
#: How many problems of each sort a report lists by id; beyond it they are only counted.
LISTED = 1000


class AuditError(StackError):
    """The audit could not be carried out (no topics, an unreachable service, a database that is not
    empty); the message says what to do. The command line prints it as one red line."""


# --- what was read ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Undecodable:
    """A record that is not an acceptable event: where it is and why (never its content)."""

    position: Position
    reason: str
    detail: str


@dataclass(frozen=True)
class Refused:
    """An event the ledger refused, as the live consumer refuses it (and dead-letters it)."""

    event_id: str
    event_type: str
    position: Position
    reason: str
    detail: str


@dataclass
class HistoryRead:
    """What a replay read: the history's bounds, its contents by type, and what it could not use."""

    #: (base topic, partition) -> first offset read and end offset (exclusive) read up to.
    starts: dict[tuple[str, int], int] = field(default_factory=dict)
    ends: dict[tuple[str, int], int] = field(default_factory=dict)
    order: list[tuple[str, int]] = field(default_factory=list)
    missing_topics: list[str] = field(default_factory=list)
    records: int = 0
    by_type: Counter[str] = field(default_factory=Counter)
    undecodable_count: int = 0
    undecodable: list[Undecodable] = field(default_factory=list)
    refused_count: int = 0
    refused: list[Refused] = field(default_factory=list)
    #: New ledger transactions the rebuild made.
    posted: int = 0
    seconds: float = 0.0
    #: The peak RSS of each process the rebuild ran in besides this one (`anyam.audit.lanes`), in MB.
    lane_peak_rss_mb: list[float] = field(default_factory=list)

    @property
    def events(self) -> int:
        """Records that decoded as events."""
        return sum(self.by_type.values())

    @property
    def truncated(self) -> dict[tuple[str, int], int]:
        """Partitions whose log no longer starts at offset 0: records before it were deleted."""
        return {tp: start for tp, start in self.starts.items() if start > 0}

    def to_json(self) -> dict[str, Any]:
        """The read as a JSON object."""
        return {
            "records": self.records,
            "events": self.events,
            "by_type": dict(sorted(self.by_type.items())),
            "posted_transactions": self.posted,
            "partitions": [
                {"topic": t, "partition": p, "start_offset": self.starts[(t, p)], "end_offset": self.ends[(t, p)]}
                for t, p in self.order
            ],
            "missing_topics": self.missing_topics,
            "undecodable": {"count": self.undecodable_count, "records": [
                {"position": str(u.position), "reason": u.reason, "detail": u.detail} for u in self.undecodable]},
            "refused": {"count": self.refused_count, "events": [
                {"event_id": r.event_id, "event_type": r.event_type, "position": str(r.position),
                 "reason": r.reason, "detail": r.detail} for r in self.refused]},
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class ReplayProgress:
    """How far a replay got: records applied of the total, and the partition being read."""

    done: int
    total: int
    partition: str


#: Puts the partitions in the order they are read (the default sorts them by topic and number).
PartitionOrder = Callable[[list[TopicPartition]], Sequence[TopicPartition]]
#: Told of each decoded event, where it was read and its raw bytes (e.g. to gather facts for checks).
Observer = Callable[[Envelope, Position, bytes | None], None]


def sorted_order(partitions: list[TopicPartition]) -> list[TopicPartition]:
    """The default reading order: by topic name, then partition number."""
    return sorted(partitions, key=lambda tp: (tp.topic, tp.partition))


# --- reading the topics --------------------------------------------------------------------------


async def history_ends(kafka: KafkaSettings, topics: Iterable[Topic] = EVENT_TOPICS) -> dict[TopicPartition, int]:
    """The end offset of every partition of `topics` now: where a replay started now would stop.

    Raises `AuditError` when the broker cannot be reached or none of the topics exists.
    """
    topics = list(topics)
    names = [topic_name(t, kafka.topic_prefix) for t in topics]
    try:
        ends = await end_offsets(kafka, names)
    except (KafkaError, OSError, TimeoutError) as exc:
        raise AuditError(f"cannot read the topics at {kafka.bootstrap_servers} ({type(exc).__name__}); "
                         "check --bootstrap-servers and the ANYAM_KAFKA_* settings") from exc
    if not ends:
        raise AuditError(f"none of the event topics ({', '.join(names)}) exists on {kafka.bootstrap_servers}; "
                         "check --bootstrap-servers and --topic-prefix")
    return ends


async def read_history(
    connections: asyncpg.Connection | Sequence[asyncpg.Connection],
    kafka: KafkaSettings,
    *,
    trust: TrustAnchors,
    topics: Iterable[Topic] = EVENT_TOPICS,
    partition_order: PartitionOrder | None = None,
    observers: Sequence[Observer] = (),
    progress: Callable[[ReplayProgress], None] | None = None,
    idle_timeout: float = 60.0,
    stop_at: Mapping[TopicPartition, int] | None = None,
) -> HistoryRead:
    """Read `topics` from the beginning up to their end offsets of now (or `stop_at`'s offsets, for
    the partitions it names) and apply every event to the ledger (installed already) with the
    payout service's projection code.

    With one connection, partitions are read one after another in `partition_order`. With
    several (all on the same database), the ordered partitions are dealt out to them in turn and
    each connection works through its share with a consumer of its own: a partition is always
    applied in its own order, and the ledger does not depend on the order between partitions.
    In each lane reading (Kafka) and applying (PostgreSQL) overlap through a small bounded
    queue, so memory stays flat however long the history is.
    """
    started = time.monotonic()
    lanes = [connections] if isinstance(connections, asyncpg.Connection) else list(connections)
    if not lanes:
        raise ValueError("read_history needs at least one connection")
    async with history_consumers(kafka, len(lanes)) as consumers:
        read, order, total = await plan_read(consumers[0], kafka, topics, partition_order, stop_at)
        with collections_for_batches():
            await read_lanes(lanes, consumers, kafka, order, read, observers, progress, total, idle_timeout, trust)
    read.seconds = time.monotonic() - started
    return read


async def plan_read(
    consumer: AIOKafkaConsumer, kafka: KafkaSettings, topics: Iterable[Topic], partition_order: PartitionOrder | None,
    stop_at: Mapping[TopicPartition, int] | None,
) -> tuple[HistoryRead, list[TopicPartition], int]:
    """What a replay will read: every partition's first and end offsets, in reading order, and how many records."""
    topics = list(topics)
    read = HistoryRead()
    ends = await history_ends(kafka, topics) if stop_at is None else dict(stop_at)
    present = {tp.topic for tp in ends}
    read.missing_topics = [t.value for t in topics if topic_name(t, kafka.topic_prefix) not in present]
    partitions = await partitions_of(consumer, sorted(present))
    starts = await consumer.beginning_offsets(partitions) if partitions else {}
    order = list((partition_order or sorted_order)(list(partitions)))
    if sorted(order, key=_tp_key) != sorted(partitions, key=_tp_key):
        raise ValueError("partition_order must return every partition exactly once")
    for tp in order:
        key = (base_topic(tp.topic, kafka.topic_prefix).value, tp.partition)
        read.order.append(key)
        read.starts[key] = starts[tp]
        # A partition the end-offset probe did not see (created meanwhile) is read up to where it starts.
        read.ends[key] = max(ends.get(tp, starts[tp]), starts[tp])
    return read, order, sum(read.ends[k] - read.starts[k] for k in read.order)


@contextlib.asynccontextmanager
async def history_consumers(kafka: KafkaSettings, count: int) -> AsyncIterator[list[AIOKafkaConsumer]]:
    """`count` started consumers of the history (`history_consumer`), stopped on exit; a Kafka error
    while they read ends the replay with an `AuditError` that says it can simply be run again."""
    consumers = [history_consumer(kafka) for _ in range(count)]
    try:
        for consumer in consumers:
            await consumer.start()
        yield consumers
    except KafkaError as exc:
        raise AuditError(f"reading the topics at {kafka.bootstrap_servers} failed ({type(exc).__name__}); "
                         "nothing was published or committed, so the replay can simply be run again") from exc
    finally:
        for consumer in consumers:
            await consumer.stop()


async def read_lanes(
    lanes: Sequence[asyncpg.Connection], consumers: Sequence[AIOKafkaConsumer], kafka: KafkaSettings,
    order: Sequence[TopicPartition], read: HistoryRead, observers: Sequence[Observer],
    progress: Callable[[ReplayProgress], None] | None, total: int, idle_timeout: float, trust: TrustAnchors,
) -> None:
    """Each lane (a connection and a consumer) reads and applies its share of `order`."""
    tasks = []
    for lane, (conn, consumer) in enumerate(zip(lanes, consumers, strict=True)):
        queue: asyncio.Queue[tuple[TopicPartition, list[ConsumerRecord]] | None] = asyncio.Queue(maxsize=4)
        share = order[lane::len(lanes)]
        tasks.append(asyncio.create_task(_fetch(consumer, kafka, share, read, queue, idle_timeout)))
        tasks.append(asyncio.create_task(_apply(conn, kafka, queue, read, observers, progress, total, trust)))
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def history_consumer(kafka: KafkaSettings) -> AIOKafkaConsumer:
    # No group: partitions are assigned by hand, no offset is ever committed, no one else's moves.
    return AIOKafkaConsumer(
        **kafka.client_options(), group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
    )


def _tp_key(tp: TopicPartition) -> tuple[str, int]:
    return tp.topic, tp.partition


async def _fetch(
    consumer: AIOKafkaConsumer, kafka: KafkaSettings, order: Sequence[TopicPartition], read: HistoryRead,
    queue: asyncio.Queue, idle_timeout: float,
) -> None:
    loop = asyncio.get_running_loop()
    for tp in order:
        key = (base_topic(tp.topic, kafka.topic_prefix).value, tp.partition)
        position, end = read.starts[key], read.ends[key]
        if position >= end:
            continue
        consumer.assign([tp])
        consumer.seek(tp, position)
        last_progress = loop.time()
        while position < end:
            fetched = await consumer.getmany(tp, timeout_ms=500, max_records=BATCH_SIZE)
            records = [r for r in fetched.get(tp, []) if r.offset < end]  # later records are outside the cut
            if records:
                position = records[-1].offset + 1
                last_progress = loop.time()
                await queue.put((tp, records))
                continue
            # Offsets may skip (compaction, transaction markers): the consumer's position says where it is.
            position = max(position, await consumer.position(tp))
            if position < end and loop.time() - last_progress > idle_timeout:
                raise AuditError(
                    f"{tp.topic}[{tp.partition}] stopped answering at offset {position} of {end} for "
                    f"{idle_timeout:g}s; is the broker up?"
                )
    await queue.put(None)


async def _apply(
    conn: asyncpg.Connection, kafka: KafkaSettings, queue: asyncio.Queue, read: HistoryRead,
    observers: Sequence[Observer], progress: Callable[[ReplayProgress], None] | None, total: int,
    trust: TrustAnchors,
) -> None:
    while (item := await queue.get()) is not None:
        tp, records = item
        topic = base_topic(tp.topic, kafka.topic_prefix)
        events: list[tuple[Envelope, projections.Source]] = []
        for record in records:
            event = _decode_record(topic, tp, record, read, observers, trust)
            if event is not None:
                events.append((event, projections.Source.of(record)))
        async with conn.transaction():
            outcome = await projections.apply_events(conn, events)
        read.posted += outcome.posted
        # What the live consumer dead-letters: refusals with their reason, failures (undone by their
        # savepoints, so the batch goes on) as `handler-error`, as it reports them after its retries.
        problems = [(index, rejection.reason, rejection.detail) for index, rejection in outcome.rejected]
        problems += [(index, "handler-error", type(exc).__name__) for index, exc in outcome.failed]
        for index, reason, detail in sorted(problems, key=lambda problem: problem[0]):
            event, source = events[index]
            _refuse(read, event, Position(topic.value, tp.partition, source.offset), reason, detail)
        if progress is not None:
            progress(ReplayProgress(read.records, total, f"{topic.value}[{tp.partition}]"))


def _decode_record(
    topic: Topic, tp: TopicPartition, record: ConsumerRecord, read: HistoryRead, observers: Sequence[Observer],
    trust: TrustAnchors,
) -> Envelope | None:
    read.records += 1
    try:
        # Decoded for the topic it came from, as the live consumers decode it: a `qc-passed`
        # forged onto `qc-submissions` is refused here as it is there.
        event = decode(record.value, topic=topic)
    except DecodeError as exc:
        _undecodable(read, topic, tp, record, exc.reason, exc.message)
        return None
    except Exception as exc:  # noqa: BLE001 - `decode` raises nothing else, by contract; should a record
        # ever break it, the audit names that record rather than dying on it (the type only: an
        # exception's text may quote the record's values).
        _undecodable(read, topic, tp, record, "schema-invalid", f"the decoder failed on it ({type(exc).__name__})")
        return None
    read.by_type[event.type] += 1
    if observers or domain.moves_money(event):
        # What the ledger would post needs a voucher (an inclusion proof, a tree head's signature
        # once per relay batch, a QC result's collaborator signature); with observers (`verify`,
        # whose checks look at every event), so does everything else.
        try:
            provenance.check(topic, record.value, record.headers, event, trust)
        except DecodeError as exc:
            _refuse(read, event, Position(topic.value, tp.partition, record.offset), exc.reason, exc.message)
            return None
    if observers:  # a position only for those who look at it: a replay reads millions of records
        position = Position(topic.value, tp.partition, record.offset)
        for observe in observers:
            observe(event, position, record.value)
    return event


def _undecodable(
    read: HistoryRead, topic: Topic, tp: TopicPartition, record: ConsumerRecord, reason: str, detail: str,
) -> None:
    read.undecodable_count += 1
    if len(read.undecodable) < LISTED:
        read.undecodable.append(Undecodable(Position(topic.value, tp.partition, record.offset), reason, detail))


def _refuse(read: HistoryRead, event: Envelope, position: Position, reason: str, detail: str) -> None:
    read.refused_count += 1
    if len(read.refused) < LISTED:
        read.refused.append(Refused(event.id, event.type, position, reason, detail))


# --- the scratch database -------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def scratch_database(database_url: str | None = None) -> AsyncIterator[str]:
    """The URL of a database to rebuild into: `database_url` as given, or a fresh embedded PostgreSQL
    in a temporary directory, stopped and removed on exit."""
    if database_url is not None:
        yield database_url
        return
    from anyam.stack import EmbeddedPostgres
    from anyam.stack.postgres import discard_pgdata

    # Short and under the system temp dir: the server's Unix socket lives in pgdata.
    root = Path(tempfile.mkdtemp(prefix="anyam-replay-"))
    server = EmbeddedPostgres(root / "pgdata")
    try:
        await server.start()
        yield await server.create_database("anyam_replay")
    finally:
        await asyncio.to_thread(server.stop)
        discard_pgdata(root / "pgdata")
        shutil.rmtree(root, ignore_errors=True)


async def _require_empty(conn: asyncpg.Connection) -> None:
    # A replay into a database that already holds a ledger would mix two histories (and a live
    # payout database is exactly such a database): refuse rather than write into it.
    if await conn.fetchval("SELECT to_regclass('ledger_transactions') IS NOT NULL"):
        if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM ledger_transactions)"):
            raise AuditError("the database given with --database-url already holds a ledger; give an empty one "
                             "(a replay never writes into a ledger it did not build)")


# --- the replayed ledger ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArtisanBalance:
    """One artisan's money as of a moment, in rupiah."""

    artisan_id: str
    earned_idr: int
    payable_idr: int
    in_transit_idr: int
    paid_idr: int

    def to_json(self) -> dict[str, Any]:
        """The balance as a JSON object."""
        return {"artisan_id": self.artisan_id, "earned_idr": self.earned_idr, "payable_idr": self.payable_idr,
                "in_transit_idr": self.in_transit_idr, "paid_idr": self.paid_idr}


@dataclass
class ReplayedLedger:
    """A ledger rebuilt from the history, open for reading; reads go through the payout projection."""

    conn: asyncpg.Connection
    history: HistoryRead

    async def digest(self, as_of: datetime | None = None) -> projections.DigestResult:
        """The ledger digest as of `as_of` (event time), exactly as `GET /ledger/digest` computes it."""
        return await projections.ledger_digest(self.conn, as_of)

    async def balances(self, as_of: datetime | None = None) -> dict[str, int]:
        """Every account's balance as of `as_of`, as `GET /ledger/balances` answers it."""
        return await projections.balances(self.conn, as_of)

    async def artisans(self, as_of: datetime | None = None) -> list[ArtisanBalance]:
        """Per artisan: earned, payable, in transit and paid as of `as_of`, by artisan id."""
        accounts = await self.balances(as_of)
        earned = await projections.earned_by_artisan(self.conn, as_of or _END_OF_TIME)
        ids = set(earned) | {a for account in accounts if (a := artisan_of(account)) is not None}
        return [
            ArtisanBalance(a, earned.get(a, 0), *(accounts.get(acc, 0) for acc in domain.artisan_accounts(a)))
            for a in sorted(ids)
        ]

    async def statement_postings(self, artisan_id: str, as_of: datetime | None = None) -> list[dict[str, Any]]:
        """The postings on the artisan's accounts as of `as_of`, as `GET /artisans/{id}/statement`
        lists them (its `entries`)."""
        statement = await projections.statement(self.conn, artisan_id, as_of)
        return [{"transaction_id": e.transaction_id, "kind": e.kind, "account": e.account,
                 "amount_idr": e.amount_idr, "event_id": e.event_id, "event_time": e.event_time}
                for e in statement.entries]

    async def rows(self) -> list[LedgerRow]:
        """Every transaction of the replayed ledger (all times), for the invariant checks."""
        records = await self.conn.fetch(
            """SELECT transaction_id, kind, artisan_id, subject_id, amount_idr, event_id, event_time
               FROM ledger_transactions ORDER BY transaction_id COLLATE "C" """)
        return [LedgerRow(**dict(r)) for r in records]

    async def transaction_legs(self, as_of: datetime | None = None) -> list[tuple[str, str, list[int]]]:
        """(transaction id, event id, posting amounts) of every transaction as of `as_of`."""
        records = await self.conn.fetch(
            """SELECT t.transaction_id, t.event_id,
                      coalesce(array_agg(p.amount_idr) FILTER (WHERE p.account IS NOT NULL), '{}') AS amounts
               FROM ledger_transactions t LEFT JOIN ledger_postings p USING (transaction_id)
               WHERE $1::timestamptz IS NULL OR t.event_time <= $1
               GROUP BY t.transaction_id, t.event_id""", as_of)
        return [(r["transaction_id"], r["event_id"], list(r["amounts"])) for r in records]


@contextlib.asynccontextmanager
async def replayed_ledger(
    kafka: KafkaSettings,
    *,
    database_url: str | None = None,
    topics: Iterable[Topic] = EVENT_TOPICS,
    partition_order: PartitionOrder | None = None,
    observers: Sequence[Observer] = (),
    progress: Callable[[ReplayProgress], None] | None = None,
    workers: int = DEFAULT_WORKERS,
    stop_at: Mapping[TopicPartition, int] | None = None,
    processes: int = 1,
    trust: TrustAnchors,
) -> AsyncIterator[ReplayedLedger]:
    """Rebuild the ledger from the topics into a scratch database and keep it open for reading.

    The scratch database (embedded, unless `database_url` names an empty one) lives as long as
    the `async with` body; an embedded one is removed afterwards. `workers` connections apply
    partitions side by side (see `read_history`), spread over up to `processes` processes
    (`anyam.audit.lanes`). Observers see every event in this process, so with observers the
    rebuild runs here, whatever `processes` says.
    """
    topics = list(topics)
    await history_ends(kafka, topics)  # an unreachable broker fails now, before a database is set up
    in_processes = min(processes, workers) > 1 and not observers
    async with scratch_database(database_url) as url:
        connections: list[asyncpg.Connection] = []
        try:
            for _ in range(1 if in_processes else max(1, workers)):
                connections.append(await rebuild_connection(url))
            conn = connections[0]
            await _require_empty(conn)
            await projections.install_ledger(conn)
            if in_processes:
                from anyam.audit.lanes import read_history_in_processes  # it runs this module's lanes

                history = await read_history_in_processes(
                    url, kafka, topics=topics, partition_order=partition_order, progress=progress,
                    stop_at=stop_at, processes=processes, workers=max(1, workers), trust=trust)
            else:
                history = await read_history(connections, kafka, topics=topics, partition_order=partition_order,
                                             observers=observers, progress=progress, stop_at=stop_at, trust=trust)
            for extra in connections[1:]:
                await extra.close()
            del connections[1:]
            yield ReplayedLedger(conn, history)
        finally:
            for each in connections:
                await each.close()


async def rebuild_connection(database_url: str) -> asyncpg.Connection:
    """A connection to the replay's database, set up for rebuilding into it."""
    try:
        conn = await asyncpg.connect(database_url)
    except (OSError, asyncpg.PostgresError) as exc:
        raise AuditError(f"cannot connect to the replay database ({type(exc).__name__})") from exc
    # A scratch ledger is rebuilt from the log if it is lost: no need to wait for the disk.
    await conn.execute("SET synchronous_commit = off")
    return conn


@dataclass(frozen=True)
class ReplayResult:
    """What `anyam replay` reports: the ledger as of the cut, and what was read to rebuild it."""

    as_of: datetime | None
    digest: str
    transactions: int
    postings: int
    accounts: dict[str, int]
    artisans: list[ArtisanBalance]
    history: HistoryRead

    def to_json(self) -> dict[str, Any]:
        """The machine-readable document `anyam replay --json` prints."""
        return {
            "as_of": self.as_of.isoformat() if self.as_of else None,
            "digest": {"algorithm": "sha256", "digest": self.digest, "transactions": self.transactions,
                       "postings": self.postings},
            "artisans": [a.to_json() for a in self.artisans],
            "totals": totals(self.artisans).to_json() | {"artisan_id": None},
            "accounts": self.accounts,
            "history": self.history.to_json(),
        }


def totals(artisans: Iterable[ArtisanBalance]) -> ArtisanBalance:
    """The sums over `artisans`."""
    artisans = list(artisans)
    return ArtisanBalance("total", *(sum(getattr(a, f) for a in artisans)
                                     for f in ("earned_idr", "payable_idr", "in_transit_idr", "paid_idr")))


async def stop_offsets(kafka: KafkaSettings, known_at: datetime) -> dict[TopicPartition, int]:
    """Where a read of what the event topics held at `known_at` stops, per partition (`shared.kafka.offsets_at`)."""
    try:
        return await offsets_at(kafka, [topic_name(t, kafka.topic_prefix) for t in EVENT_TOPICS], known_at)
    except TimeIndexUnavailable as exc:
        raise AuditError(str(exc)) from exc
    except (KafkaError, OSError) as exc:
        raise AuditError(f"cannot read the time index at {kafka.bootstrap_servers} ({type(exc).__name__})") from exc


async def replay(
    kafka: KafkaSettings,
    *,
    as_of: datetime | None = None,
    database_url: str | None = None,
    partition_order: PartitionOrder | None = None,
    progress: Callable[[ReplayProgress], None] | None = None,
    workers: int = DEFAULT_WORKERS,
    processes: int = DEFAULT_PROCESSES,
    known_at: datetime | None = None,
    trust: TrustAnchors,
) -> ReplayResult:
    """Rebuild the ledger from the topics alone and read it as of `as_of` (event time; None: all).

    With `known_at`, only what had been recorded on the topics by then is read: each partition up
    to the offset the broker's time index gives for that moment (Apache Kafka only).
    """
    stop_at = None if known_at is None else await stop_offsets(kafka, known_at)
    async with replayed_ledger(kafka, database_url=database_url, partition_order=partition_order,
                               progress=progress, workers=workers, processes=processes, stop_at=stop_at,
                               trust=trust) as ledger:
        digest = await ledger.digest(as_of)
        return ReplayResult(as_of, digest.digest, digest.transactions, digest.postings,
                            await ledger.balances(as_of), await ledger.artisans(as_of), ledger.history)
