"""Service processes for the bench: each its own `python -m services.<name>`, as `anyam up` runs them.

Separate processes, not in the bench's event loop: the latency and command figures
must not include the bench's own client work competing with the service for one GIL
(they still share the machine's cores, as on any one-box deployment; the report says so).
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import asyncpg
import httpx

from anyam.bench.environment import BenchEnvironment
from anyam.stack import SERVICES, LaunchedService, StackError
from anyam.stack import stackfile as keys
from anyam.stack.launch import launch_service_process
from anyam.stack.processes import terminate
from anyam.stack.services import write_signing_keys
from shared.settings import KafkaSettings


@dataclass
class BenchServices:
    """Running service processes on fresh topics and databases, with a staff client and database pools."""

    kafka: KafkaSettings
    staff_token: str
    token_secret: str
    launched: dict[str, LaunchedService] = field(default_factory=dict)
    database_urls: dict[str, str] = field(default_factory=dict)
    pools: dict[str, asyncpg.Pool] = field(default_factory=dict)

    def url(self, service: str) -> str:
        return self.launched[service].url

    def staff(self, service: str, *, connections: int = 16) -> httpx.AsyncClient:
        """An HTTP client of programme staff for `service` (the caller closes it)."""
        return httpx.AsyncClient(
            base_url=self.url(service), headers={"Authorization": f"Bearer {self.staff_token}"}, timeout=60,
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        )

    async def post(self, service: str, path: str, body: dict) -> dict:
        async with self.staff(service) as client:
            response = await client.post(path, json=body)
        if response.status_code >= 400:
            raise StackError(f"{service} refused {path}: {response.status_code}", detail=response.text[:500])
        return response.json()


@contextlib.asynccontextmanager
async def bench_services(env: BenchEnvironment, names: Sequence[str], label: str) -> AsyncIterator[BenchServices]:
    """Start `names` on fresh topics and databases; stop them and drop what they used afterwards."""
    kafka = await env.fresh_topics(label)
    stack_env = {
        keys.KAFKA_BOOTSTRAP: kafka.kafka_bootstrap, keys.TOPIC_PREFIX: kafka.topic_prefix,
        keys.KAFKA_ENGINE: kafka.kafka_engine,
        keys.STAFF_TOKEN: secrets.token_urlsafe(24), keys.AUDITOR_TOKEN: secrets.token_urlsafe(24),
        keys.TOKEN_SECRET: secrets.token_urlsafe(24),
        keys.TRUST_ANCHORS: write_signing_keys(env.workdir),  # each service attests what it publishes
    }
    running = BenchServices(kafka, stack_env[keys.STAFF_TOKEN], stack_env[keys.TOKEN_SECRET])
    try:
        for spec in SERVICES:
            if spec.name in names:
                url = await env.fresh_database(f"{label}_{spec.name}")
                stack_env[spec.database_url_key] = url
                running.database_urls[spec.name] = url
                running.pools[spec.name] = await asyncpg.create_pool(url, min_size=1, max_size=4)
        for spec in SERVICES:
            if spec.name in names:
                running.launched[spec.name] = await launch_service_process(spec, stack_env, env.workdir)
        yield running
    finally:
        for launched in running.launched.values():
            terminate(launched.pid)
        for pool in running.pools.values():
            await pool.close()
        for url in running.database_urls.values():
            await env.drop_database(url)
        await env.drop_topics(kafka)
