"""`anyam up` / `down` / `status` against the real embedded broker and PostgreSQL, in subprocesses."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import httpx
import psutil
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from anyam.stack import SERVICES, broker_answers, read_stack_env
from anyam.stack.lifecycle import orphan_services
from anyam.stack.processes import free_port, is_alive
from anyam.stack.provisioning import OWN_PARTITIONS
from anyam.stack.stackfile import principal_kafka_settings, stack_kafka_settings
from shared.contracts.provenance import TrustAnchors, load_signing_key
from shared.contracts.topics import ALL_TOPICS, Topic, topic_name

REPO = Path(__file__).resolve().parents[2]
#: The session's broker (tests/conftest.py exports it); `anyam up` below starts one of the same kind.
ENGINE = os.environ.get("ANYAM_KAFKA_ENGINE", "kafka")


def expected_partitions(topic: Topic) -> int:
    return OWN_PARTITIONS.get(topic, 3) if ENGINE == "tansu" else 3

EXPECTED_KEYS = {
    "ANYAM_KAFKA_BOOTSTRAP",
    "ANYAM_POSTGRES_URL",
    "ANYAM_ENROLLMENT_DATABASE_URL",
    "ANYAM_PRODUCTION_DATABASE_URL",
    "ANYAM_PAYOUT_DATABASE_URL",
    "ANYAM_STAFF_TOKEN",
    "ANYAM_AUDITOR_TOKEN",
    "ANYAM_KAFKA_ENGINE",
    "ANYAM_STACK_BROKER",
    "ANYAM_STACK_BROKER_PID",
    "ANYAM_STACK_BROKER_PIDS",
    "ANYAM_STACK_BROKER_LOG",
    "ANYAM_STACK_POSTGRES_PID",
    "ANYAM_STACK_POSTGRES_PGDATA",
    "ANYAM_TOKEN_SECRET",
    "ANYAM_PERSONAL_DATA_KEY",
    # Who the stack file signs in to Kafka as (the auditor; tansu: nobody), and every principal's credentials.
    "ANYAM_KAFKA_SECURITY_PROTOCOL",
    *(("ANYAM_KAFKA_SASL_MECHANISM", "ANYAM_KAFKA_SASL_USERNAME", "ANYAM_KAFKA_SASL_PASSWORD")
      if ENGINE == "kafka" else ()),
    "ANYAM_STACK_CREDENTIALS",
    # The services' public keys, for every reader; their private halves are in keys/, never here.
    "ANYAM_TRUST_ANCHORS",
    # Each service that is built runs under the stack: where it answers and what to stop.
    *(key for spec in SERVICES if spec.launcher is not None for key in (spec.url_key, spec.pid_key)),
}


@pytest.fixture
def workdir() -> Iterator[Path]:
    # A short path of our own under /tmp: PostgreSQL's Unix socket lives in the
    # work directory, and its parents must be traversable by the postgres user.
    root = Path(tempfile.mkdtemp(prefix="anyam-test-stack-"))
    yield root / ".anyam"
    # Whatever a failed test left running must not outlive it.
    if (root / ".anyam" / "stack.env").exists():
        anyam("down", workdir=root / ".anyam")
    shutil.rmtree(root, ignore_errors=True)


def _child_env() -> dict[str, str]:
    # The stack under test must not pick up the caller's stack settings.
    env = {k: v for k, v in os.environ.items() if k not in ("ANYAM_TOPIC_PREFIX", "ANYAM_WORKDIR")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["COLUMNS"] = "200"
    return env


def anyam_command(*args: str, workdir: Path) -> list[str]:
    return [sys.executable, "-m", "anyam.cli", *args, "--workdir", str(workdir)]


def anyam(*args: str, workdir: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        anyam_command(*args, workdir=workdir),
        cwd=REPO,
        env=_child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def stack_processes(workdir: Path, env: dict[str, str]) -> set[int]:
    """Every process the stack consists of: the pids it names, their children, and anything tied to workdir."""
    pids = {int(pid) for pid in env["ANYAM_STACK_BROKER_PIDS"].split(",")} | {int(env["ANYAM_STACK_POSTGRES_PID"])}
    pids.update(int(env[spec.pid_key]) for spec in SERVICES if spec.pid_key in env)
    for pid in list(pids):
        pids.update(child.pid for child in psutil.Process(pid).children(recursive=True))
    pids.update(processes_tied_to(workdir))
    return pids


def processes_tied_to(workdir: Path) -> set[int]:
    """Broker (tansu, Kafka's JVMs) and postgres processes whose command line or working directory mentions workdir."""
    found = set()
    for proc in psutil.process_iter(["name", "cmdline", "cwd"]):
        name = proc.info["name"] or ""
        if "tansu" not in name and "postgres" not in name and "kafka.Kafka" not in (proc.info["cmdline"] or []):
            continue
        mentions = " ".join(proc.info["cmdline"] or []) + " " + (proc.info["cwd"] or "")
        if str(workdir.parent) in mentions and proc.status() != psutil.STATUS_ZOMBIE:
            found.add(proc.pid)
    return found


def assert_all_gone(pids: set[int], workdir: Path) -> None:
    alive = {pid for pid in pids if is_alive(pid)}
    assert not alive, f"still running after down: {[psutil.Process(p).cmdline() for p in alive]}"
    assert not processes_tied_to(workdir)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr, result.stderr
    first = result.stderr.strip().splitlines()[0]
    assert first.startswith("error: ")
    for fragment in fragments:
        assert fragment in first, first


async def test_up_detach_starts_everything_and_down_stops_it(workdir: Path) -> None:
    port = free_port()
    result = anyam("up", "--detach", "--port", str(port), workdir=workdir)
    assert result.returncode == 0, result.stderr

    path = workdir / "stack.env"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    env = read_stack_env(path)
    assert set(env) == EXPECTED_KEYS
    assert env["ANYAM_KAFKA_BOOTSTRAP"].split(",")[0] == f"127.0.0.1:{port}"
    assert env["ANYAM_KAFKA_ENGINE"] == ENGINE
    assert env["ANYAM_STAFF_TOKEN"] != env["ANYAM_AUDITOR_TOKEN"]
    assert min(len(env["ANYAM_STAFF_TOKEN"]), len(env["ANYAM_AUDITOR_TOKEN"])) >= 43
    # Each service's signing key is its own file, the owner's alone, and matches the anchor auditors pin.
    anchors = TrustAnchors.parse(env["ANYAM_TRUST_ANCHORS"])
    for service in ("enrollment", "production", "payout"):
        key_file = workdir / "keys" / f"{service}.key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert anchors.vouches(service, b"x", load_signing_key(key_file.read_text()).sign(b"x"))
        assert key_file.read_text().strip() not in path.read_text()
    # Every log of the stack (services, brokers) is its owner's alone.
    logs = [*workdir.glob("*.log"), *workdir.glob("kafka/node-*/broker.log")]
    assert len(logs) >= 4 and {stat.S_IMODE(log.stat().st_mode) for log in logs} == {0o600}, logs

    assert await broker_answers(env["ANYAM_KAFKA_BOOTSTRAP"], kafka=stack_kafka_settings(env))
    async with httpx.AsyncClient(timeout=10) as http:
        for spec in SERVICES:
            if spec.launcher is not None:
                assert (await http.get(env[spec.url_key] + "/health")).json()["status"] == "ok"
    admin = AIOKafkaAdminClient(**principal_kafka_settings(env, "admin").client_options())
    await admin.start()
    try:
        described = await admin.describe_topics([topic_name(t) for t in ALL_TOPICS])
        assert {d["topic"]: len(d["partitions"]) for d in described} == {
            topic_name(t): expected_partitions(t) for t in ALL_TOPICS}
        assert OWN_PARTITIONS == {Topic.QC_SUBMISSIONS: 1}
        brokers = len(env["ANYAM_STACK_BROKER_PIDS"].split(","))
        # `anyam up` takes ANYAM_STACK_BROKERS (1 or 3, default 3) as the session does.
        assert brokers == (int(os.environ.get("ANYAM_STACK_BROKERS", "3")) if ENGINE == "kafka" else 1)
        # Every partition on every broker of a three-node cluster, as deploy/ declares the topics.
        assert {len(p["replicas"]) for d in described for p in d["partitions"]} == {brokers}
        configs = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic_name(t)) for t in ALL_TOPICS]
        )
        for response in configs:
            for resource in response.resources:
                entries = {entry[0]: entry[1] for entry in resource[4]}
                if resource[3] != topic_name(Topic.DEAD_LETTERS):
                    assert entries.get("retention.ms") == "-1", resource
                if ENGINE == "kafka" and brokers >= 3:  # one node keeps one copy, so one in sync
                    assert entries.get("min.insync.replicas") == "2", resource
    finally:
        await admin.close()

    for spec in SERVICES:
        conn = await asyncpg.connect(env[spec.database_url_key])
        try:
            assert await conn.fetchval("select 1") == 1
            assert await conn.fetchval("select current_database()") == spec.database
        finally:
            await conn.close()

    started = stack_processes(workdir, env)
    assert len(started) > 2  # the broker, the postmaster and its workers

    result = anyam("down", workdir=workdir)
    assert result.returncode == 0, result.stderr
    assert not path.exists()
    assert_all_gone(started, workdir)


async def test_up_refuses_while_a_stack_runs(workdir: Path) -> None:
    assert anyam("up", "--detach", workdir=workdir).returncode == 0
    first = read_stack_env(workdir / "stack.env")

    again = anyam("up", "--detach", workdir=workdir)
    assert_one_line_error(again, "already running", first["ANYAM_STACK_BROKER_PID"])
    assert read_stack_env(workdir / "stack.env") == first

    assert anyam("down", workdir=workdir).returncode == 0


def test_up_on_a_busy_port_says_so(workdir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = anyam("up", "--detach", "--port", str(port), workdir=workdir)
    assert_one_line_error(result, f"port {port}", "already in use")
    assert not (workdir / "stack.env").exists()
    assert not processes_tied_to(workdir)


def stack_pids(env: dict[str, str]) -> list[int]:
    """The pids the stack file names: brokers, PostgreSQL and each service (a crash kills them all)."""
    named = [int(value) for key, value in env.items() if key.startswith("ANYAM_STACK_") and key.endswith("_PID")]
    return sorted(set(named) | {int(pid) for pid in env["ANYAM_STACK_BROKER_PIDS"].split(",")})


async def test_a_stale_stack_is_cleaned(workdir: Path) -> None:
    assert anyam("up", "--detach", workdir=workdir).returncode == 0
    env = read_stack_env(workdir / "stack.env")
    started = stack_processes(workdir, env)
    for pid in stack_pids(env):
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not any(is_alive(pid) for pid in started), 30, "the killed stack to be gone")

    status = anyam("status", workdir=workdir)
    assert status.returncode == 1 and "stale" in status.stdout, status

    result = anyam("up", "--detach", workdir=workdir)
    assert result.returncode == 0, result.stderr
    assert "stale stack file" in result.stdout
    fresh = read_stack_env(workdir / "stack.env")
    assert await broker_answers(fresh["ANYAM_KAFKA_BOOTSTRAP"], kafka=stack_kafka_settings(fresh))

    # Stale again, this time cleared by `down`.
    restarted = stack_processes(workdir, fresh)
    for pid in stack_pids(fresh):
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not any(is_alive(pid) for pid in restarted), 30, "the killed stack to be gone")
    result = anyam("down", workdir=workdir)
    assert result.returncode == 0, result.stderr
    assert "No stack was running" in result.stdout
    assert not (workdir / "stack.env").exists()


def test_down_and_status_without_a_stack_say_so(workdir: Path) -> None:
    down = anyam("down", workdir=workdir)
    assert down.returncode == 0 and "no stack" in down.stdout.lower(), down
    status = anyam("status", workdir=workdir)
    assert status.returncode == 1 and "no stack" in status.stdout.lower(), status


@pytest.mark.parametrize("stop_with", ["SIGINT", "anyam down"])
def test_foreground_up_stops_everything_when_asked(workdir: Path, stop_with: str) -> None:
    proc = subprocess.Popen(
        anyam_command("up", workdir=workdir),
        cwd=REPO,
        env=_child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        path = workdir / "stack.env"
        # A deadline, not a measure: three Kafka nodes with SASL users, ACLs and keys take a while on two busy cores.
        wait_until(lambda: path.exists() or proc.poll() is not None, 180, "the foreground stack to start")
        assert proc.poll() is None, proc.communicate()
        env = read_stack_env(path)
        assert int(env["ANYAM_STACK_SUPERVISOR_PID"]) == proc.pid
        started = stack_processes(workdir, env)

        if stop_with == "SIGINT":
            proc.send_signal(signal.SIGINT)
        else:
            down = anyam("down", workdir=workdir)
            assert down.returncode == 0, down.stderr
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "Stack stopped." in out
        assert not path.exists()
        assert_all_gone(started, workdir)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_down_after_up_was_killed_before_writing_the_stack_file_stops_what_it_had_started(workdir: Path) -> None:
    proc = subprocess.Popen(anyam_command("up", workdir=workdir), cwd=REPO, env=_child_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # The services start one after another, and the stack file is written after the last: killed once
        # the first runs, `up` leaves brokers, PostgreSQL and a service behind with no file naming them.
        wait_until(lambda: bool(orphan_services(workdir)) or proc.poll() is not None, 180, "a service to start")
        assert proc.poll() is None, "up ended before any service started"
        proc.kill()
        proc.wait()
        left = {p.pid for p in orphan_services(workdir)} | processes_tied_to(workdir)
        assert not (workdir / "stack.env").exists() and left

        down = anyam("down", workdir=workdir)
        assert down.returncode == 0, down.stderr
        assert "leftover service process" in down.stdout, down.stdout
        assert_all_gone(left, workdir)
        assert not orphan_services(workdir)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# The shared harness of tests/conftest.py, which every integration test builds on.


async def test_kafka_settings_come_with_fresh_topics_of_their_own(broker, kafka_settings) -> None:
    assert kafka_settings.bootstrap_servers == broker.bootstrap
    assert kafka_settings.topic_prefix.startswith("t") and kafka_settings.topic_prefix.endswith("-")
    admin = AIOKafkaAdminClient(**kafka_settings.client_options())
    await admin.start()
    try:
        names = {topic_name(t, kafka_settings.topic_prefix): expected_partitions(t) for t in ALL_TOPICS}
        described = await admin.describe_topics(list(names))
        assert {d["topic"]: (d["error_code"], len(d["partitions"])) for d in described} == {
            name: (0, count) for name, count in names.items()}
    finally:
        await admin.close()


async def test_database_url_is_a_fresh_empty_database(postgres, database_url: str) -> None:
    assert database_url != postgres.server_url
    conn = await asyncpg.connect(database_url)
    try:
        tables = await conn.fetchval("select count(*) from pg_tables where schemaname = 'public'")
        assert tables == 0
        await conn.execute("create table t (x int)")
    finally:
        await conn.close()


async def test_a_frozen_broker_keeps_its_data(broker, kafka_settings) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from aiokafka.errors import KafkaError

    if broker.embedded is None:
        with pytest.raises(RuntimeError, match="local broker"):
            broker.frozen()
        return
    topic = topic_name("payout", kafka_settings.topic_prefix)
    producer = AIOKafkaProducer(**kafka_settings.producer_options(), request_timeout_ms=1000)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"before", partition=0)
        with broker.frozen():
            assert {psutil.Process(pid).status() for pid in broker.embedded.pids} == {psutil.STATUS_STOPPED}
            # Never acknowledged while frozen: tansu times the request out, Kafka's idempotent producer
            # keeps retrying it (it may land after the thaw, before "after").
            with pytest.raises((KafkaError, TimeoutError)):
                await asyncio.wait_for(producer.send_and_wait(topic, b"during", partition=0), 5)
        # A thawed cluster elects its leaders again first; a client retries meanwhile, as the relay does.
        deadline = time.monotonic() + 60
        while True:
            try:
                await producer.send_and_wait(topic, b"after", partition=0)
                break
            except KafkaError:
                assert time.monotonic() < deadline, "the broker took no write within 60 s of the outage"
                await asyncio.sleep(0.5)
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(**kafka_settings.client_options(), enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        seen: list[bytes] = []
        while len(seen) < end:
            batch = await consumer.getmany(tp, timeout_ms=5000)
            assert batch, "no records within 5s"
            seen.extend(record.value for record in batch[tp])
        assert seen[0] == b"before" and seen[-1] == b"after"
    finally:
        await consumer.stop()
