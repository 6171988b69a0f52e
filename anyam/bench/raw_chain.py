"""The end-to-end measurement's baseline: the same two broker hops with nothing done between them.

Anyam's path crosses the broker twice: the bench publishes a submission onto
`qc-submissions`, production reads it and publishes `qc-passed` onto `production`,
payout reads that. This chain does only the Kafka part of it, on fresh topics of the
same shapes, with the same records, the same producer and consumer settings and the
same readers of `production` (two consumer groups at the services' fetch wait, as
payout's ledger and dashboard consumers, and one tail at the bench's): a consumer
group reads `qc-submissions` and hands each record on to `production` as it comes,
committing its offsets after each batch, as production's consumer does, and the first
reader stamps each record as it arrives. No signature, no database, nothing decoded.

Its processes are laid out as Anyam's are, because on two cores the layout is part of
the latency: the hand-on runs in a child process of its own, as production's QC consumer
does in the production service; the two readers of `production` share another, as
payout's two consumers share the payout service (both children on uvloop, as the
services run); the publisher and the tail stay in the bench's process, as in Anyam's
run. (With every stage on the bench's event loop the figures were the same within their
spread, the broker sets them either way; the layout matches Anyam's so that the comparison
need not be taken on trust.)

So it is the latency the broker itself sets for this path on this machine, and the
ratio of Anyam's figures to it says how much Anyam adds (as the raw-consumption
baseline does for the replay).

A child gets its job as a JSON line on stdin (the Kafka settings, secrets included: never
on a command line) and runs until stdin closes; it answers on stdout with JSON lines:
`{"ready": true}` once its consumer groups have their partitions, and, from the readers,
`{"arrived": [[key, epoch seconds], ...]}` after each fetch.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

import uvloop
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from anyam.bench.environment import BenchEnvironment
from anyam.bench.schedule import BrokerSampler, publish_on_schedule
from shared.contracts import Topic, topic_name
from shared.kafka import partitions_of, start_producer
from shared.settings import KafkaSettings

#: How long to wait for the chain's consumer groups to be given their partitions before publishing.
JOIN_TIMEOUT_SECONDS = 120.0
#: How long a stage may take to leave its groups once told to stop, before it is killed.
STOP_TIMEOUT_SECONDS = 30.0
#: The child processes: production's part of the path, and payout's.
HAND_ON, READERS = "hand-on", "readers"


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
    stages = [ChainStage({"stage": HAND_ON, "kafka": kafka.document_for_a_child()}),
              ChainStage({"stage": READERS, "kafka": kafka.document_for_a_child()}, arrived)]
    tail = AIOKafkaConsumer(**kafka.client_options(), group_id=None, enable_auto_commit=False,
                            fetch_max_wait_ms=tail_fetch_wait_ms)
    publisher = await start_producer(kafka, linger_ms=publisher_linger_ms)
    tailing: asyncio.Task[None] | None = None
    try:
        await tail.start()
        tail.assign(await partitions_of(tail, [production]))
        tailing = asyncio.create_task(_read(tail, commit=False))
        for stage in stages:
            await stage.start()
        await _joined(stages, tailing)
        await asyncio.gather(*await publish_on_schedule(publisher, submissions, keys, values, rate=rate,
                                                         broker=broker, sent=sent))
        await _drained(sent, arrived, stall_seconds, stages, tailing)
    finally:
        for stage in stages:
            await stage.stop()
        if tailing is not None:
            tailing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await tailing
        await tail.stop()
        await publisher.stop()
    return sent, arrived


class ChainStage:
    """One of the chain's child processes (`python -m anyam.bench.raw_chain`), seen from the bench."""

    def __init__(self, job: dict[str, Any], arrived: dict[str, float] | None = None) -> None:
        self.name = job["stage"]
        self.ready = False
        self._job = job
        self._arrived = arrived
        self._process: asyncio.subprocess.Process | None = None
        self._listening: asyncio.Task[None] | None = None
        self._errors: asyncio.Task[bytes] | None = None
        self._stopping = False

    async def start(self) -> None:
        # A plain child, as `anyam.bench.child` starts them (its docstring says why), but one
        # that talks while it runs instead of answering once at the end.
        self._process = process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "anyam.bench.raw_chain", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, limit=16 * 1024 * 1024,
        )
        assert process.stdin is not None and process.stdout is not None and process.stderr is not None
        process.stdin.write(json.dumps(self._job).encode() + b"\n")
        await process.stdin.drain()
        self._errors = asyncio.create_task(process.stderr.read())
        self._listening = asyncio.create_task(self._listen(process.stdout))

    async def _listen(self, stdout: asyncio.StreamReader) -> None:
        async for line in stdout:
            if not line.startswith(b"{"):
                continue  # not ours: something a library printed
            said = json.loads(line)
            self.ready = self.ready or said.get("ready", False)
            if self._arrived is not None:
                for key, at in said.get("arrived", ()):
                    self._arrived.setdefault(key, at)
        # Its output has ended: wait for its last words and its exit code too, so that an ended
        # listener means an ended child whose failure can be told in full.
        if self._errors is not None:
            await asyncio.shield(self._errors)
        if self._process is not None:
            await self._process.wait()

    async def ended(self) -> None:
        """Return once the child has ended and all it said is read (told to stop, or failed)."""
        assert self._listening is not None, "start() first"
        await asyncio.shield(self._listening)

    def raise_if_failed(self) -> None:
        """Raise with the child's last words if it ended before it was told to stop."""
        if self._stopping or self._listening is None or not self._listening.done():
            return
        if not self._listening.cancelled() and self._listening.exception() is not None:
            raise self._listening.exception()  # type: ignore[misc]
        stderr = self._errors.result().decode(errors="replace") if self._errors and self._errors.done() else ""
        code = self._process.returncode if self._process else None
        raise RuntimeError(f"the raw chain's {self.name} process ended early (exit {code}): {stderr[-2000:]}")

    async def stop(self) -> None:
        """Close its stdin (its signal to leave its groups and exit) and wait for it, killing it if it hangs."""
        self._stopping = True
        process = self._process
        if process is None:
            return
        assert process.stdin is not None
        with contextlib.suppress(ConnectionError):
            process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT_SECONDS)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        for task in (self._listening, self._errors):
            if task is not None:
                with contextlib.suppress(Exception):
                    await task


async def _joined(stages: Sequence[ChainStage], tailing: asyncio.Task[None]) -> None:
    """Wait until every consumer group has its partitions, so no record waits for a join."""
    deadline = time.monotonic() + JOIN_TIMEOUT_SECONDS
    while not all(stage.ready for stage in stages):
        _raise_if_failed(stages, tailing)
        if time.monotonic() > deadline:
            raise TimeoutError(f"the raw chain's consumer groups were not assigned within {JOIN_TIMEOUT_SECONDS:g}s")
        await asyncio.sleep(0.05)


async def _drained(
    sent: dict[str, float], arrived: dict[str, float], stall_seconds: float, stages: Sequence[ChainStage],
    tailing: asyncio.Task[None],
) -> None:
    """Wait until every record arrived, or nothing has for `stall_seconds`."""
    progressed, last_progress = len(arrived), time.monotonic()
    while len(arrived) < len(sent) and time.monotonic() - last_progress < stall_seconds:
        _raise_if_failed(stages, tailing)
        await asyncio.sleep(0.05)
        if len(arrived) > progressed:
            progressed, last_progress = len(arrived), time.monotonic()


def _raise_if_failed(stages: Sequence[ChainStage], tailing: asyncio.Task[None]) -> None:
    for stage in stages:
        stage.raise_if_failed()
    if tailing.done() and not tailing.cancelled() and tailing.exception() is not None:
        raise tailing.exception()  # type: ignore[misc]


async def _read(consumer: AIOKafkaConsumer, *, commit: bool = True, stamp: bool = False) -> None:
    """Follow `consumer`; with `stamp`, say which records each fetch brought, and when."""
    while True:
        batch = await consumer.getmany(timeout_ms=500)
        now = time.time()
        if stamp and batch:
            _say({"arrived": [[record.key.decode(), now] for records in batch.values() for record in records]})
        if batch and commit:
            await consumer.commit()


# --- the children -----------------------------------------------------------------------------------


async def _hand_on(source: AIOKafkaConsumer, producer: AIOKafkaProducer, destination: str) -> None:
    """Hand each record on as production's consumer and relay do, without judging or storing it."""
    while True:
        batch = await source.getmany(timeout_ms=500)
        deliveries = [await producer.send(destination, record.value, key=record.key, headers=list(record.headers))
                      for records in batch.values() for record in records]
        await asyncio.gather(*deliveries)
        if batch:
            await source.commit()


async def _run_stage() -> None:
    stdin = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    job = json.loads(await stdin.readline())
    kafka = KafkaSettings(**job["kafka"])
    submissions = topic_name(Topic.QC_SUBMISSIONS, kafka.topic_prefix)
    production = topic_name(Topic.PRODUCTION, kafka.topic_prefix)

    def group_consumer(topic: str, group: str) -> AIOKafkaConsumer:
        consumer = AIOKafkaConsumer(**kafka.client_options(), group_id=f"{kafka.topic_prefix}{group}",
                                    enable_auto_commit=False, auto_offset_reset="earliest",
                                    fetch_max_wait_ms=kafka.fetch_max_wait_ms)
        consumer.subscribe([topic])
        return consumer

    producer: AIOKafkaProducer | None = None
    if job["stage"] == HAND_ON:
        consumers = [group_consumer(submissions, "relay")]
        producer = await start_producer(kafka)
        work = [_hand_on(consumers[0], producer, production)]
    elif job["stage"] == READERS:
        consumers = [group_consumer(production, "ledger"), group_consumer(production, "dashboard")]
        work = [_read(consumers[0], stamp=True), _read(consumers[1])]
    else:
        raise ValueError(f"no such stage of the raw chain: {job['stage']!r}")
    tasks: list[asyncio.Task[Any]] = []
    try:
        for consumer in consumers:
            await consumer.start()
        working = [asyncio.create_task(coroutine) for coroutine in work]
        stopped = asyncio.create_task(stdin.read())  # end of file: the bench's word to stop
        tasks = [*working, stopped, asyncio.create_task(_say_when_ready(consumers))]
        done, _ = await asyncio.wait([stopped, *working], return_when=asyncio.FIRST_COMPLETED)
        for task in working:
            if task in done:
                task.result()  # what ended it, raised
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # what ended a task is raised above
        for consumer in consumers:
            await consumer.stop()
        if producer is not None:
            await producer.stop()


async def _say_when_ready(consumers: Sequence[AIOKafkaConsumer]) -> None:
    while not all(consumer.assignment() for consumer in consumers):
        await asyncio.sleep(0.05)
    _say({"ready": True})


def _say(document: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(document) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    uvloop.run(_run_stage())  # as the services run (`shared.service`)
