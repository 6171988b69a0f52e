"""Where the bench runs: a fresh embedded stack of its own, or the broker and PostgreSQL of `ANYAM_*` settings.

Every measurement gets fresh topics (a prefix of its own) and fresh databases,
and everything it made is deleted afterwards: on given endpoints the bench
leaves nothing behind, and on the embedded broker (memory storage) deleting a
million-record topic gives its memory back before the next measurement.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient

from anyam.stack import EmbeddedPostgres, StackError, create_database, default_engine, ensure_topics
from anyam.stack.lifecycle import new_broker
from shared.contracts import ALL_TOPICS, topic_name
from shared.settings import KafkaSettings

log = logging.getLogger(__name__)

EMBEDDED, ENDPOINTS = "embedded", "endpoints"


@dataclass
class BenchEnvironment:
    """A broker and a PostgreSQL server the bench may create topics and databases on."""

    kafka: KafkaSettings
    postgres_url: str
    kind: str
    workdir: Path
    partitions: int = 3
    #: The embedded broker's process (Kafka: its first node; None on given endpoints), whose CPU the
    #: latency run reports.
    broker_pid: int | None = None
    #: What the broker is, in words.
    broker_description: str = ""
    _prefixes: list[str] = field(default_factory=list, repr=False)
    _databases: list[str] = field(default_factory=list, repr=False)

    async def fresh_topics(self, label: str) -> KafkaSettings:
        """The settings of a new topic prefix of this run, its topics created; deleted at `cleanup`."""
        prefix = f"bench-{label}-{uuid.uuid4().hex[:8]}-"
        settings = self.kafka.model_copy(update={"topic_prefix": prefix})
        await ensure_topics(settings, partitions=self.partitions)
        self._prefixes.append(prefix)
        return settings

    async def drop_topics(self, settings: KafkaSettings) -> None:
        """Delete a prefix's topics now (best effort): the embedded broker keeps them in memory."""
        with contextlib.suppress(Exception):
            admin = AIOKafkaAdminClient(**settings.client_options())
            await admin.start()
            try:
                await admin.delete_topics([topic_name(t, settings.topic_prefix) for t in ALL_TOPICS])
            finally:
                await admin.close()
        with contextlib.suppress(ValueError):
            self._prefixes.remove(settings.topic_prefix)

    async def fresh_database(self, label: str) -> str:
        """The URL of a new, empty database of this run; dropped at `cleanup`."""
        name = f"bench_{label}_{uuid.uuid4().hex[:8]}"
        url = await create_database(self.postgres_url, name)
        self._databases.append(name)
        return url

    async def drop_database(self, url: str) -> None:
        """Drop a database of this run now (best effort)."""
        name = url.split("?")[0].rsplit("/", 1)[-1]
        await self._drop(name)
        with contextlib.suppress(ValueError):
            self._databases.remove(name)

    async def _drop(self, name: str) -> None:
        with contextlib.suppress(Exception):
            conn = await asyncpg.connect(self.postgres_url)
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await conn.close()

    async def cleanup(self) -> None:
        """Delete every topic and database this run made."""
        for prefix in list(self._prefixes):
            await self.drop_topics(self.kafka.model_copy(update={"topic_prefix": prefix}))
        for name in list(self._databases):
            await self._drop(name)
        self._databases.clear()

    def describe(self) -> str:
        if self.kind == EMBEDDED:
            return f"embedded stack ({self.broker_description}; PostgreSQL in {self.workdir})"
        return f"given endpoints (Kafka {self.kafka.bootstrap_servers}, PostgreSQL from ANYAM_POSTGRES_URL)"


def endpoints_from_environment() -> tuple[KafkaSettings, str]:
    """The broker and PostgreSQL server named by `ANYAM_*`: the Kafka settings, and a server URL.

    The server URL is `ANYAM_POSTGRES_URL` (what `stack.env` writes) or else
    `ANYAM_DATABASE_URL`; the bench creates and drops databases of its own on it.
    """
    url = os.environ.get("ANYAM_POSTGRES_URL") or os.environ.get("ANYAM_DATABASE_URL")
    if not url:
        raise StackError("--endpoints needs ANYAM_POSTGRES_URL (or ANYAM_DATABASE_URL): a PostgreSQL server URL "
                         "whose role may create databases")
    return KafkaSettings(), url


@contextlib.asynccontextmanager
async def bench_environment(
    *, endpoints: bool = False, partitions: int = 3, engine: str | None = None, brokers: int = 3
) -> AsyncIterator[BenchEnvironment]:
    """The environment of one bench run; an embedded stack is started here and torn down afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix="anyam-bench-"))
    try:
        if endpoints:
            kafka, url = endpoints_from_environment()
            env = BenchEnvironment(kafka, url, ENDPOINTS, workdir, partitions)
            try:
                yield env
            finally:
                await env.cleanup()
            return
        # A short path of our own under /tmp: PostgreSQL's Unix socket lives in pgdata.
        broker = new_broker(engine or default_engine()[0], workdir / "broker", brokers=brokers)
        async with broker, EmbeddedPostgres(workdir / "pgdata") as postgres:
            # The bench measures the pipeline, not the ACLs: its clients sign in as the cluster's admin.
            kafka = broker.settings_for()
            env = BenchEnvironment(kafka, postgres.server_url, EMBEDDED, workdir, partitions, broker.pid,
                                   broker.describe())
            try:
                yield env
            finally:
                await env.cleanup()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
