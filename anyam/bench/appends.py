"""Measurement 4: appends through our `EventStore` against the `eventsourcing` library's PostgreSQL recorder.

The same workload through both, on the same PostgreSQL server (each in a fresh
database of its own), in the same run:

- `appends` commands, each appending one event to one of `streams` streams at its next
  version (a command handler's append: optimistic concurrency, a global order);
- the payload is our own: each event is `encode()`d inside the timed loop for both
  stores, so both pay for the same serialisation;
- once by a single writer, then by `writers` concurrent writers on disjoint streams
  (ours: asyncio tasks over an asyncpg pool; the peer: threads over its psycopg pool,
  since it is synchronous);
- each store in a fresh interpreter of its own (`python -m anyam.bench.appends`), each as
  it runs in production: ours on uvloop, as the services run their event stores
  (`shared.service`), the peer in plain threads. Not in the bench's own process, whose
  loop and heap carry whatever the measurements before it left, and which stays on
  asyncio's loop (on uvloop the bench's own end-to-end run came out slower, for reasons not
  understood).

The peer is `eventsourcing.postgres.PostgresApplicationRecorder` (9.x), the recorder
behind its `Application` when persistence is PostgreSQL: like ours it gives every event
a global position in commit order (its notification id, under `LOCK TABLE … EXCLUSIVE`,
where we take an advisory lock), and it detects version conflicts by the primary key
(ours checks the stream's version first). Stream ids are text on both sides.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import timedelta
from importlib import metadata
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import uvloop

from anyam.bench.child import run_module
from anyam.bench.environment import BenchEnvironment
from shared.contracts import Envelope, decode, encode, service_source
from shared.contracts.events import PieceWoven
from shared.db import create_pool
from shared.eventstore import EventStore
from shared.eventstore.schema import DDL as EVENTSTORE_DDL
from shared.timeutil import wib_now

OURS, PEER = "anyam EventStore", "eventsourcing (PostgresApplicationRecorder)"


@dataclass
class AppendRun:
    store: str
    writers: int
    appends: int
    seconds: float
    appends_per_second: float

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class AppendFigures:
    runs: list[AppendRun]
    #: Ours divided by the peer's rate, per number of writers.
    ratios: dict[str, float]
    peer_version: str | None
    peer_error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"runs": [run.as_json() for run in self.runs], "ratios": self.ratios,
                "peer_version": self.peer_version, "peer_error": self.peer_error}


def _events(appends: int, streams: int) -> list[tuple[str, int, Envelope]]:
    """(stream, version, event) in append order: stream n % streams, at its next version."""
    source = service_source("production")
    at = wib_now() - timedelta(hours=1)
    versions: dict[str, int] = {}
    work = []
    for n in range(appends):
        stream = f"pc_append_{n % streams:06d}"
        versions[stream] = versions.get(stream, 0) + 1
        event = Envelope.wrap(PieceWoven(piece_id=stream, artisan_id=f"res_{n % 977:06d}", collaborator_id="col_001",
                                         product="piring", rate_idr=15_000, woven_at=at), source=source, time=at)
        work.append((stream, versions[stream], event))
    return work


def _split(work: list[tuple[str, int, Envelope]], writers: int) -> list[list[tuple[str, int, Envelope]]]:
    """Disjoint streams per writer, each stream's appends in version order."""
    shares: list[list[tuple[str, int, Envelope]]] = [[] for _ in range(writers)]
    for item in work:
        shares[zlib.crc32(item[0].encode()) % writers].append(item)
    return shares


async def _ours(database_url: str, work: list[tuple[str, int, Envelope]], writers: int) -> AppendRun:
    pool = await create_pool(database_url, min_size=writers, max_size=writers)  # the services' own pool settings
    try:
        async with pool.acquire() as conn:
            await conn.execute(EVENTSTORE_DDL)
        store = EventStore(pool)

        async def writer(share: list[tuple[str, int, Envelope]]) -> None:
            for stream, version, event in share:
                await store.append(stream, version - 1, [event])

        started = time.perf_counter()
        await asyncio.gather(*(writer(share) for share in _split(work, writers)))
        seconds = time.perf_counter() - started
    finally:
        await pool.close()
    return AppendRun(OURS, writers, len(work), seconds, len(work) / seconds)


def _peer_datastore(database_url: str, pool_size: int):
    from eventsourcing.postgres import PostgresDatastore

    parts = urlsplit(database_url)
    query = parse_qs(parts.query)
    host = query.get("host", [parts.hostname or "127.0.0.1"])[0]
    return PostgresDatastore(
        dbname=parts.path.lstrip("/"), host=host, port=str(query.get("port", [parts.port or 5432])[0]),
        user=unquote(parts.username or "postgres"), password=unquote(parts.password or ""),
        pool_size=pool_size, originator_id_type="text",
    )


def _peer(database_url: str, work: list[tuple[str, int, Envelope]], writers: int) -> AppendRun:
    from eventsourcing.persistence import StoredEvent
    from eventsourcing.postgres import PostgresApplicationRecorder

    datastore = _peer_datastore(database_url, writers)
    try:
        recorder = PostgresApplicationRecorder(datastore, events_table_name="stored_events")
        recorder.create_table()

        def writer(share: list[tuple[str, int, Envelope]]) -> None:
            for stream, version, event in share:
                record = encode(event)
                recorder.insert_events([StoredEvent(originator_id=stream, originator_version=version,
                                                    topic=event.type, state=record.value)])

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=writers) as threads:
            for future in [threads.submit(writer, share) for share in _split(work, writers)]:
                future.result()
        seconds = time.perf_counter() - started
    finally:
        datastore.close()
    return AppendRun(PEER, writers, len(work), seconds, len(work) / seconds)


async def measure_appends(
    env: BenchEnvironment, *, appends: int, streams: int, writer_steps: list[int]
) -> AppendFigures:
    """The same appends through both stores, for each number of concurrent writers."""
    try:
        peer_version, peer_error = metadata.version("eventsourcing"), None
        import eventsourcing.postgres  # noqa: F401 - psycopg too: the [postgres] extra
    except (metadata.PackageNotFoundError, ImportError):
        peer_version = None
        peer_error = "eventsourcing is not installed: pip install 'eventsourcing[postgres]'"
    work = _events(appends, streams)
    runs: list[AppendRun] = []
    ratios: dict[str, float] = {}
    for writers in writer_steps:
        url = await env.fresh_database(f"appends_ours_w{writers}")
        ours = await _run_in_child(OURS, url, work, writers)
        await env.drop_database(url)
        runs.append(ours)
        if peer_error is None:
            url = await env.fresh_database(f"appends_peer_w{writers}")
            theirs = await _run_in_child(PEER, url, work, writers)
            await env.drop_database(url)
            runs.append(theirs)
            label = f"{writers} writer{'s' if writers > 1 else ''}"
            ratios[label] = ours.appends_per_second / theirs.appends_per_second
    return AppendFigures(runs, ratios, peer_version, peer_error)


async def _run_in_child(store: str, database_url: str, work: list[tuple[str, int, Envelope]], writers: int
                        ) -> AppendRun:
    """`store`'s run of `work` in a fresh interpreter; the events go to it as their records' values."""
    job = {"store": store, "database_url": database_url, "writers": writers,
           "work": [[stream, version, encode(event).value.decode()] for stream, version, event in work]}
    return AppendRun(**await run_module("anyam.bench.appends", job, what=f"{store} appends"))


def _run_job(job: dict[str, Any]) -> AppendRun:
    work = [(stream, version, decode(value.encode())) for stream, version, value in job["work"]]
    if job["store"] == OURS:
        return uvloop.run(_ours(job["database_url"], work, job["writers"]))
    return _peer(job["database_url"], work, job["writers"])


if __name__ == "__main__":
    # The child: a job as JSON on stdin (the database's URL: never on a command line), its run as JSON on stdout.
    print(json.dumps(_run_job(json.load(sys.stdin)).as_json()))
