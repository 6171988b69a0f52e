"""Measurement 3: `POST /pieces` against one production service process at increasing concurrency.

Each step keeps `concurrency` requests in flight for `seconds` (each worker sends its
next request as soon as its last one is answered), every request a new piece with an
`Idempotency-Key`, as a staff client sends them. Throughput is answered requests per
second of the step; latency is per request, measured in the client, so it includes
the client's own (aiohttp) time. The client runs in the bench process, on the same two
cores as the service, PostgreSQL and the broker: on this machine the figures are those
of the whole box, not of the service alone.

Before the steps, residents are trained (`training-completed` on the enrollment topic,
waited for on production's stored offsets), a collaborator is registered and a rate set.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from typing import Any

import psutil

from anyam.bench.environment import BenchEnvironment
from anyam.bench.latency import percentile
from anyam.bench.services import bench_services
from anyam.stack.services import signing_key_path
from services.production.projections import TRAINING_CONSUMER
from shared.contracts import Envelope, Topic, encode, service_source, topic_name
from shared.contracts.events import TrainingCompleted
from shared.contracts.provenance import Attester, load_signing_key
from shared.contracts.signing import generate_private_key, public_key_b64
from shared.eventstore import wait_until_caught_up
from shared.kafka import start_producer
from shared.timeutil import WIB, wib_now

RESIDENTS = 100
PRODUCT = "piring"


@dataclass
class CommandStep:
    concurrency: int
    requests: int
    errors: int
    #: Pieces the service's event store gained during the step: one per answered request, or the
    #: step measured something else (e.g. stored answers replayed for reused idempotency keys).
    pieces_recorded: int
    #: CPU of the production process per answered request, and its share of one core over the
    #: step: the cost of a command, steadier on a shared machine than throughput is.
    service_cpu_us_per_request: float
    service_cpu_percent: float
    seconds: float
    throughput_per_second: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


async def measure_commands(
    env: BenchEnvironment, *, concurrency_steps: list[int], seconds: float
) -> list[CommandStep]:
    """Run each concurrency step for `seconds` against a fresh production service process."""
    async with bench_services(env, ["production"], "commands") as services:
        residents = [f"res_bench_{n:04d}" for n in range(RESIDENTS)]
        # As enrollment would publish them: attested with its key, or production refuses them.
        attester = Attester(load_signing_key(signing_key_path(env.workdir, "enrollment").read_text()))
        await _train(services.kafka, residents, attester)
        await wait_until_caught_up(services.pools["production"], TRAINING_CONSUMER, services.kafka,
                                   [Topic.ENROLLMENT], timeout=120)
        collaborator = await services.post("production", "/collaborators", {
            "name": "PT Bench Anyaman", "public_key": public_key_b64(generate_private_key()),
        })
        collaborator_id = collaborator["collaborator_id"]
        await services.post("production", f"/collaborators/{collaborator_id}/rates", {
            "product": PRODUCT, "rate_idr": 15_000, "effective_from": datetime(2024, 1, 1, tzinfo=WIB).isoformat(),
        })
        woven_at = (wib_now() - timedelta(hours=1)).isoformat()
        steps = []
        # A short warm-up: the first requests pay for connections and prepared statements.
        await _step(services, 4, min(1.0, seconds), residents, collaborator_id, woven_at, "warmup")
        # Each step's keys are its own, even for a concurrency given twice: a reused key would be
        # answered from its stored response, not run as a command.
        for number, concurrency in enumerate(concurrency_steps, start=1):
            steps.append(await _step(services, concurrency, seconds, residents, collaborator_id, woven_at,
                                     f"step{number}-c{concurrency}"))
        return steps


async def _train(kafka, residents: list[str], attester: Attester) -> None:
    producer = await start_producer(kafka)
    try:
        topic = topic_name(Topic.ENROLLMENT, kafka.topic_prefix)
        records = [encode(Envelope.wrap(
            TrainingCompleted(resident_id=resident, cohort_id="coh_bench", completed_on=date(2024, 2, 29)),
            source=service_source("enrollment"),
        )) for resident in residents]
        # One batch, one signed tree head, as enrollment's relay attests what it publishes together.
        attestations = attester.attest([record.value for record in records])
        deliveries = [await producer.send(topic, record.value, key=record.key, headers=[*record.headers, *attestation])
                      for record, attestation in zip(records, attestations, strict=True)]
        await asyncio.gather(*deliveries)
    finally:
        await producer.stop()


async def _step(
    services, concurrency: int, seconds: float, residents: list[str], collaborator_id: str, woven_at: str, tag: str
) -> CommandStep:
    import aiohttp  # a test extra, like the appends' peer: only the bench needs it

    latencies: list[float] = []
    errors = 0
    counter = 0
    pieces_before = await _pieces_recorded(services)
    service = psutil.Process(services.launched["production"].pid)
    service_cpu_before = _cpu_seconds(service)
    url = f"{services.url('production')}/pieces"
    headers = {"Authorization": f"Bearer {services.staff_token}", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        deadline = time.monotonic() + seconds

        async def worker() -> None:
            nonlocal errors, counter
            while time.monotonic() < deadline:
                counter += 1
                n = counter
                body = json.dumps({"artisan_id": residents[n % len(residents)], "collaborator_id": collaborator_id,
                                   "product": PRODUCT, "woven_at": woven_at}).encode()
                began = time.perf_counter()
                async with session.post(url, data=body, headers={"Idempotency-Key": f"{tag}-{n}"}) as response:
                    await response.read()
                    status = response.status
                latencies.append((time.perf_counter() - began) * 1000)
                if status != 201:
                    errors += 1

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.monotonic() - started
    service_cpu = _cpu_seconds(service) - service_cpu_before
    return CommandStep(
        concurrency=concurrency, requests=len(latencies), errors=errors,
        pieces_recorded=await _pieces_recorded(services) - pieces_before, seconds=elapsed,
        service_cpu_us_per_request=service_cpu * 1e6 / len(latencies) if latencies else 0.0,
        service_cpu_percent=100 * service_cpu / elapsed if elapsed else 0.0,
        throughput_per_second=(len(latencies) - errors) / elapsed if elapsed else 0.0,
        p50_ms=percentile(latencies, 0.5), p99_ms=percentile(latencies, 0.99), max_ms=max(latencies, default=0.0),
        mean_ms=statistics.fmean(latencies) if latencies else 0.0,
    )


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


async def _pieces_recorded(services) -> int:
    async with services.pools["production"].acquire() as conn:
        return await conn.fetchval("SELECT count(*) FROM event_store WHERE event_type = 'piece-woven'")
