"""A replay's lanes in processes of their own, so that its Python runs on more than one core.

Decoding and posting a million events is mostly Python, and one process's Python runs on one
core: in one process the replay's Python is the bound while PostgreSQL and the broker leave
the other cores partly idle. So `replayed_ledger(processes=n)` plans the read
here (`replay.plan_read`: the partitions, their offsets, the reading order) and deals the
partitions out to `n` shares of about equal records: this process reads the first, and a child
process (`python -m anyam.audit.lanes`) each other one, exactly as a replay in one process
reads (`replay.read_lanes`, with consumers of its own and its part of the `workers` connections
to the same database). A partition is always applied by one lane in its own order, and the
ledger does not depend on the order between partitions, so the digest is the same however the
partitions are dealt.

A child gets its job as JSON on stdin (secrets included: never on a command line) and answers
on stdout with JSON lines: how many records it has read so far, now and then, and at the end
what it read (counts by type, what it could not decode, what the ledger refused) and its peak
RSS. It publishes, commits and schedules nothing, as the replay in this process does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from aiokafka import TopicPartition

from anyam.audit.invariants import Position
from anyam.audit.replay import (
    LISTED,
    AuditError,
    HistoryRead,
    PartitionOrder,
    Refused,
    ReplayProgress,
    Undecodable,
    history_consumers,
    plan_read,
    read_lanes,
    rebuild_connection,
)
from anyam.gc_tuning import collections_for_batches
from anyam.peak_rss import peak_rss_mb
from shared.contracts import EVENT_TOPICS, Topic
from shared.contracts.provenance import TrustAnchors
from shared.settings import KafkaSettings

#: How often a child tells how far it got (seconds).
PROGRESS_EVERY = 0.5


async def read_history_in_processes(
    database_url: str,
    kafka: KafkaSettings,
    *,
    topics: Iterable[Topic] = EVENT_TOPICS,
    partition_order: PartitionOrder | None = None,
    progress: Callable[[ReplayProgress], None] | None = None,
    idle_timeout: float = 60.0,
    stop_at: Mapping[TopicPartition, int] | None = None,
    processes: int = 2,
    workers: int = 2,
    trust: TrustAnchors,
) -> HistoryRead:
    """`replay.read_history` into the (installed) ledger at `database_url` by `workers` lanes (connections)
    spread over up to `processes` processes: this one and child processes (at most one per lane)."""
    started = time.monotonic()
    async with history_consumers(kafka, 1) as (consumer,):
        read, order, total = await plan_read(consumer, kafka, topics, partition_order, stop_at)
    keys = {tp: key for tp, key in zip(order, read.order, strict=True)}
    shares = balanced_shares(order, {tp: read.ends[keys[tp]] - read.starts[keys[tp]] for tp in order},
                             min(processes, workers))
    if not shares:  # nothing to read: an empty history
        read.seconds = time.monotonic() - started
        return read
    lanes = [workers // len(shares) + (1 if i < workers % len(shares) else 0) for i in range(len(shares))]
    done = [0] * len(shares)

    def told(share: int, records: int) -> None:
        done[share] = records
        if progress is not None:
            progress(ReplayProgress(sum(done), total, f"{len(shares)} processes"))

    jobs = [{
        "kafka": kafka.document_for_a_child(), "database_url": database_url, "idle_timeout": idle_timeout,
        "total": total, "workers": lanes[i], "trust_anchors": trust.setting(),
        # Each partition: its topic's full and base names, its number, and where to start and stop.
        "partitions": [[tp.topic, keys[tp][0], tp.partition, read.starts[keys[tp]], read.ends[keys[tp]]]
                       for tp in shares[i]],
    } for i in range(1, len(shares))]
    # The first share is read here (one interpreter fewer in memory), the others by child processes; a
    # failure anywhere cancels the rest, and a cancelled child process is killed.
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(read_share(database_url, kafka, shares[0], read, lanes[0],
                                         lambda step: told(0, step.done), total, idle_timeout, trust))
            children = [group.create_task(_run_child(job, functools.partial(told, i)))
                        for i, job in enumerate(jobs, start=1)]
    except BaseExceptionGroup as failed:
        # The first failure says what went wrong (an `AuditError` the command line words in one line);
        # the other shares were cancelled, or failed the same way.
        raise failed.exceptions[0] from None
    for child in children:
        _merge(read, child.result())
    # Listed in reading order, as a replay in one process lists them.
    where = {key: index for index, key in enumerate(read.order)}
    read.undecodable = sorted(read.undecodable, key=lambda u: (where[u.position[:2]], u.position.offset))[:LISTED]
    read.refused = sorted(read.refused, key=lambda r: (where[r.position[:2]], r.position.offset))[:LISTED]
    read.seconds = time.monotonic() - started
    return read


async def read_share(
    database_url: str, kafka: KafkaSettings, order: Sequence[TopicPartition], read: HistoryRead, workers: int,
    progress: Callable[[ReplayProgress], None], total: int, idle_timeout: float, trust: TrustAnchors,
) -> None:
    """Read and apply the partitions of `order` (planned in `read`) with `workers` lanes of this process."""
    lanes = [await rebuild_connection(database_url) for _ in range(max(1, min(workers, len(order))))]
    try:
        async with history_consumers(kafka, len(lanes)) as consumers:
            with collections_for_batches():
                await read_lanes(lanes, consumers, kafka, order, read, (), progress, total, idle_timeout, trust)
    finally:
        for conn in lanes:
            await conn.close()


def balanced_shares(order: Sequence[TopicPartition], sizes: Mapping[TopicPartition, int], processes: int,
                    ) -> list[list[TopicPartition]]:
    """The partitions with records to read, dealt out to at most `processes` shares of about equal records
    (the largest partition first, each to the share with the fewest so far); each share in `order`."""
    to_read = [tp for tp in order if sizes[tp] > 0]
    count = max(1, min(processes, len(to_read)))
    shares: list[list[TopicPartition]] = [[] for _ in range(count)]
    loads = [0] * count
    for tp in sorted(to_read, key=lambda tp: -sizes[tp]):
        lightest = loads.index(min(loads))
        shares[lightest].append(tp)
        loads[lightest] += sizes[tp]
    rank = {tp: index for index, tp in enumerate(order)}
    return [sorted(share, key=rank.__getitem__) for share in shares if share]


async def _run_child(job: dict[str, Any], told: Callable[[int], None]) -> dict[str, Any]:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "anyam.audit.lanes", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, limit=16 * 1024 * 1024,
    )
    assert child.stdin is not None and child.stdout is not None and child.stderr is not None
    try:
        child.stdin.write(json.dumps(job).encode())
        await child.stdin.drain()
        child.stdin.close()
        errors = asyncio.create_task(child.stderr.read())
        answer: dict[str, Any] = {}
        async for line in child.stdout:
            if not line.startswith(b"{"):
                continue  # not ours: something a library printed
            answer = json.loads(line)
            if "records" in answer:
                told(answer["records"])
        code = await child.wait()
        stderr = (await errors).decode(errors="replace")
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            child.kill()
        await child.wait()
        raise
    if "error" in answer:
        raise AuditError(answer["error"])
    if code != 0 or "result" not in answer:
        raise RuntimeError(f"a replay lane process failed (exit {code}): {stderr[-2000:]}")
    return answer["result"]


def _merge(read: HistoryRead, part: dict[str, Any]) -> None:
    read.records += part["records"]
    read.by_type.update(part["by_type"])
    read.posted += part["posted"]
    read.undecodable_count += part["undecodable_count"]
    read.undecodable += [Undecodable(Position(*u["position"]), u["reason"], u["detail"]) for u in part["undecodable"]]
    read.refused_count += part["refused_count"]
    read.refused += [Refused(r["event_id"], r["event_type"], Position(*r["position"]), r["reason"], r["detail"])
                     for r in part["refused"]]
    read.lane_peak_rss_mb.append(part["peak_rss_mb"])


# --- the child --------------------------------------------------------------------------------------


async def _read_job(job: dict[str, Any]) -> dict[str, Any]:
    kafka = KafkaSettings(**job["kafka"])
    read = HistoryRead()
    order = []
    for topic, base, partition, start, end in job["partitions"]:
        order.append(TopicPartition(topic, partition))
        read.order.append((base, partition))
        read.starts[(base, partition)], read.ends[(base, partition)] = start, end
    last_told = 0.0

    def tell(step: ReplayProgress) -> None:
        nonlocal last_told
        if time.monotonic() - last_told >= PROGRESS_EVERY:
            last_told = time.monotonic()
            _say({"records": step.done})

    await read_share(job["database_url"], kafka, order, read, job["workers"], tell, job["total"], job["idle_timeout"],
                     TrustAnchors.parse(job["trust_anchors"]))
    return {
        "records": read.records, "by_type": dict(read.by_type), "posted": read.posted,
        "undecodable_count": read.undecodable_count, "refused_count": read.refused_count,
        "undecodable": [{"position": u.position, "reason": u.reason, "detail": u.detail} for u in read.undecodable],
        "refused": [{"event_id": r.event_id, "event_type": r.event_type, "position": r.position, "reason": r.reason,
                     "detail": r.detail} for r in read.refused],
        # A process of its own: its peak is this share's (not `ru_maxrss`, which Linux carries over
        # from the parent that started it).
        "peak_rss_mb": peak_rss_mb() or 0.0,
    }


def _say(document: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(document) + "\n")
    sys.stdout.flush()


def _main() -> int:
    try:
        result = asyncio.run(_read_job(json.load(sys.stdin)))
    except AuditError as exc:
        _say({"error": str(exc)})
        return 1
    _say({"result": result})
    return 0


if __name__ == "__main__":
    sys.exit(_main())
