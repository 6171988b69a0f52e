"""Starting, inspecting and stopping the whole embedded stack of one work directory."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import enum
import os
import secrets
import shutil
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from anyam.stack import stackfile as keys
from anyam.stack.broker import EmbeddedBroker, broker_answers
from anyam.stack.errors import NoStack, PostgresFailed, StackAlreadyRunning, StackError
from anyam.stack.kafka_admin import new_password
from anyam.stack.kafka_cluster import KafkaCluster, orphan_kafka_nodes
from anyam.stack.kafka_dist import java_available
from anyam.stack.postgres import EmbeddedPostgres, discard_pgdata, postgres_pid, stop_postgres
from anyam.stack.principals import credentials_folder, secure_stack
from anyam.stack.processes import is_alive, terminate, terminate_all, wait_gone
from anyam.stack.provisioning import ensure_topics
from anyam.stack.services import SERVICES, LaunchedService, write_signing_keys
from anyam.stack.stackfile import read_stack_env, stack_file, write_stack_env
from shared.contracts.acls import ADMIN, AUDITOR, STACK_PRINCIPALS

PGDATA_DIR = "pgdata"
#: The brokers `anyam up` can run: Apache Kafka (needs Java) or tansu (pip only, one node, memory only).
ENGINES = ("kafka", "tansu")
#: The broker processes a stack runs, whichever engine.
Broker = EmbeddedBroker | KafkaCluster


def new_broker(
    engine: str, workdir: Path, *, brokers: int = 3, port: int | None = None, users: Mapping[str, str] | None = None,
    isolated: bool = False,
) -> Broker:
    """An unstarted broker of `engine` ("kafka": `brokers` nodes; "tansu": one) keeping its data under `workdir`.

    On Kafka, `users` (name → password) are SCRAM users from the start, beside `admin`; tansu has no users.
    `isolated` puts each Kafka node in a network namespace of its own, so that a test can partition one.
    """
    if engine == "kafka":
        return KafkaCluster(workdir, brokers=brokers, port=port, users=users, isolated=isolated)
    if engine == "tansu":
        return EmbeddedBroker(workdir, port=port)
    raise StackError(f"unknown broker {engine!r}: choose one of {', '.join(ENGINES)}")


#: Names the broker for every `anyam up` (and the tests' own stacks) when none is asked for.
ENGINE_VARIABLE = "ANYAM_STACK_ENGINE"


def default_engine() -> tuple[str, str | None]:
    """The broker to run when none is asked for (`ANYAM_STACK_ENGINE`, else Apache Kafka where Java
    is present, else tansu), and a note when tansu is taken for want of Java."""
    chosen = os.environ.get(ENGINE_VARIABLE, "").strip()
    if chosen:
        if chosen not in ENGINES:
            raise StackError(f"{ENGINE_VARIABLE}={chosen!r} names no broker: choose one of {', '.join(ENGINES)}")
        return chosen, None
    if java_available():
        return "kafka", None
    return "tansu", "no Java 17+ here, so the broker is tansu (one node, memory only); install a JDK for Apache Kafka"


class StackState(enum.Enum):
    """What a work directory's stack file says, checked against the processes it names."""

    ABSENT = "absent"  # no stack file
    RUNNING = "running"  # every process it names is alive
    PARTIAL = "partial"  # some are alive, some are gone
    STALE = "stale"  # none is alive


@dataclass(frozen=True)
class StackInspection:
    """A work directory's stack: its state, the stack file's values, and which processes live."""

    workdir: Path
    state: StackState
    env: dict[str, str] = field(default_factory=dict)
    alive: dict[str, int] = field(default_factory=dict)
    dead: dict[str, int] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        """The stack file."""
        return stack_file(self.workdir)


def _tracked(env: dict[str, str]) -> dict[str, int]:
    """Role → pid of every process the stack file names, in the order `down` stops them."""
    pid_keys = [
        ("supervisor", keys.SUPERVISOR_PID),
        *((spec.name, spec.pid_key) for spec in SERVICES),
    ]
    tracked: dict[str, int] = {}
    for role, key in pid_keys:
        with contextlib.suppress(KeyError, ValueError):
            tracked[role] = int(env[key])
    brokers = [pid for pid in env.get(keys.BROKER_PIDS, env.get(keys.BROKER_PID, "")).split(",") if pid.strip()]
    for number, pid in enumerate(brokers, start=1):
        with contextlib.suppress(ValueError):
            tracked["broker" if len(brokers) == 1 else f"broker-{number}"] = int(pid)
    with contextlib.suppress(KeyError, ValueError):
        tracked["postgres"] = int(env[keys.POSTGRES_PID])
    return tracked


def inspect_stack(workdir: Path | str = keys.DEFAULT_WORKDIR) -> StackInspection:
    """Read the work directory's stack file and check which of its processes still run."""
    workdir = Path(workdir).resolve()
    path = stack_file(workdir)
    if not path.exists():
        return StackInspection(workdir, StackState.ABSENT)
    env = read_stack_env(path)
    # A live process created after the file was written is a stranger that reused a pid.
    written = path.stat().st_mtime
    alive: dict[str, int] = {}
    dead: dict[str, int] = {}
    for role, pid in _tracked(env).items():
        (alive if is_alive(pid, started_before=written) else dead)[role] = pid
    if not alive:
        state = StackState.STALE
    elif dead:
        state = StackState.PARTIAL
    else:
        state = StackState.RUNNING
    return StackInspection(workdir, state, env, alive, dead)


def orphan_brokers(workdir: Path | str) -> list[psutil.Process]:
    """Embedded brokers started for `workdir` (their working directory) that may have lost their stack file."""
    workdir = Path(workdir).resolve()
    found = []
    for proc in psutil.process_iter(["name", "cmdline", "cwd"]):
        info = proc.info
        cmdline = info["cmdline"] or []
        if (
            info["cwd"]
            and Path(info["cwd"]) == workdir
            and "broker" in cmdline
            and ("tansu" in (info["name"] or "") or "tansu" in Path(cmdline[0]).name)
        ):
            found.append(proc)
    return found


def orphan_services(workdir: Path | str) -> list[psutil.Process]:
    """Service processes started for `workdir` (`python -m services.<name>` writing `<workdir>/<name>.log`)
    that outlived their stack, e.g. when `anyam up` was killed before it wrote the stack file."""
    workdir = Path(workdir).resolve()
    logs = {f"services.{spec.name}": workdir / f"{spec.name}.log" for spec in SERVICES}
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        module = next((arg for arg in proc.info["cmdline"] or () if arg in logs), None)
        if module is None:
            continue
        with contextlib.suppress(OSError):
            # The log its standard output goes to names the stack it belongs to.
            if Path(os.readlink(f"/proc/{proc.pid}/fd/1")) == logs[module]:
                found.append(proc)
    return found


def clean_leftovers(workdir: Path | str) -> list[str]:
    """Remove a stale stack file and stop processes an interrupted `up` left behind; say what was done.

    Only for a work directory whose stack is not running.
    """
    workdir = Path(workdir).resolve()
    inspection = inspect_stack(workdir)
    if inspection.state in (StackState.RUNNING, StackState.PARTIAL):
        raise StackAlreadyRunning(_running_message(inspection))
    done = []
    if inspection.state is StackState.STALE:
        inspection.path.unlink(missing_ok=True)
        discard_credentials(workdir)
        done.append(f"removed the stale stack file {inspection.path} (none of its processes was running)")
    for proc in orphan_services(workdir):
        terminate(proc.pid)
        done.append(f"stopped a leftover service process (pid {proc.pid}: {' '.join(proc.info['cmdline'][-2:])})")
    for proc in orphan_brokers(workdir):
        terminate(proc.pid)
        done.append(f"stopped a leftover embedded broker (pid {proc.pid})")
    for proc in orphan_kafka_nodes(workdir):
        terminate(proc.pid, 20.0)
        done.append(f"stopped a leftover Apache Kafka node (pid {proc.pid})")
    pgdata = workdir / PGDATA_DIR
    pid = postgres_pid(pgdata)
    if pid is not None:
        stop_postgres(pgdata)
        done.append(f"stopped a leftover PostgreSQL on {pgdata} (pid {pid})")
    return done


def _running_message(inspection: StackInspection) -> str:
    pids = ", ".join(f"{role} {pid}" for role, pid in inspection.alive.items())
    partly = " partly" if inspection.state is StackState.PARTIAL else ""
    return (
        f"a stack is already{partly} running in {inspection.workdir} ({pids}); "
        f"stop it with `anyam down --workdir {inspection.workdir}` first"
    )


@dataclass
class RunningStack:
    """A stack this process started: its parts, and the values written to its stack file."""

    workdir: Path
    broker: Broker
    postgres: EmbeddedPostgres
    env: dict[str, str]
    services: dict[str, LaunchedService] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        """The stack file."""
        return stack_file(self.workdir)

    def dead_parts(self) -> list[str]:
        """Which parts have exited on their own (empty while all is well)."""
        dead = [name for name, svc in self.services.items() if not is_alive(svc.pid)]
        if not self.broker.running:
            dead.append("broker")
        if not self.postgres.running:
            dead.append("postgres")
        return dead

    async def relaunch_service(self, name: str, *, sig: signal.Signals = signal.SIGKILL) -> LaunchedService:
        """Stop service `name` with `sig` (SIGKILL: a crash) and start it again on the same port.

        Returns once the new process answers; the stack file names its new pid.
        """
        from anyam.stack.launch import launch_service_process

        spec = next(s for s in SERVICES if s.name == name)
        old = self.services[name]
        with contextlib.suppress(ProcessLookupError):
            os.kill(old.pid, sig)
        if wait_gone([old.pid], 30):
            raise StackError(f"the {name} service (pid {old.pid}) did not stop on {sig.name}")
        port = int(old.url.rsplit(":", 1)[1])
        launched = await launch_service_process(spec, self.env, self.workdir, port=port)
        self.services[name] = launched
        self.env[spec.pid_key] = str(launched.pid)
        self._write()
        return launched

    async def restart_postgres(self) -> None:
        """Fast-shutdown PostgreSQL and start it again on the same data directory (so at the same address).

        The services are not told: their pools must reconnect by themselves.
        """
        pgdata = self.postgres.pgdata
        await asyncio.to_thread(stop_postgres, pgdata)
        for attempt in range(3):
            try:
                self.postgres = await EmbeddedPostgres(pgdata).start()
                break
            except PostgresFailed:
                # The wheel gives pg_ctl ten seconds, which a starved machine can exceed while the
                # server itself comes up fine: asking again adopts the server once it runs.
                if attempt == 2:
                    raise
        assert self.postgres.pid is not None
        self.env[keys.POSTGRES_PID] = str(self.postgres.pid)
        self._write()

    def _write(self) -> None:
        write_stack_env(
            self.path,
            self.env,
            header="Written by `anyam up`; holds secrets. Load with: set -a; . .anyam/stack.env; set +a",
        )

    def stop(self) -> None:
        """Stop the services, the broker and PostgreSQL, then remove the stack file and the credentials."""
        for svc in self.services.values():
            terminate(svc.pid)
        self.services.clear()
        self.broker.stop()
        self.postgres.stop()
        self.path.unlink(missing_ok=True)
        discard_credentials(self.workdir)


def discard_credentials(workdir: Path) -> None:
    """Remove a stack's credentials folder: its broker is gone, and the next one has users of its own."""
    shutil.rmtree(workdir / keys.CREDENTIALS_DIR, ignore_errors=True)


async def start_stack(
    workdir: Path | str = keys.DEFAULT_WORKDIR,
    *,
    port: int | None = None,
    partitions: int = 3,
    topic_prefix: str = "",
    supervised: bool = False,
    engine: str | None = None,
    brokers: int = 3,
    isolated: bool = False,
) -> RunningStack:
    """Start broker, PostgreSQL (one database per service), topics and services; write the stack file.

    `engine` is "kafka" (Apache Kafka, `brokers` KRaft nodes: 1 or 3) or "tansu" (one node);
    None takes `default_engine()`; `isolated` gives each Kafka node a network namespace (a partition
    fault needs it). Refuses (`StackAlreadyRunning`) when the work directory's stack runs;
    call `clean_leftovers` first to clear a stale one. With `supervised`, the
    stack file names this process, so `anyam down` asks it to shut down.
    On any failure, whatever was started is stopped again.
    """
    workdir = Path(workdir).resolve()
    inspection = inspect_stack(workdir)
    if inspection.state is not StackState.ABSENT:
        if inspection.state is StackState.STALE:
            raise StackError(f"a stale stack file {inspection.path} is in the way; run `anyam down` to clear it")
        raise StackAlreadyRunning(_running_message(inspection))
    workdir.mkdir(parents=True, exist_ok=True)

    # Every `up` starts a fresh log (tansu keeps topics in memory only; a Kafka cluster is formatted
    # anew). Keeping the old databases would leave event stores whose relays believe they already
    # published everything: start both halves fresh instead.
    pgdata = workdir / PGDATA_DIR
    discard_pgdata(pgdata)
    discard_credentials(workdir)

    # Apache Kafka: a SCRAM user per service and one for auditors from the start, each with its ACLs
    # (shared/contracts/acls.py); every party gets only its own credentials file (anyam/stack/principals.py).
    users = {principal: new_password() for principal in STACK_PRINCIPALS if principal != ADMIN}
    broker = new_broker(engine or default_engine()[0], workdir, brokers=brokers, port=port, users=users,
                        isolated=isolated)
    postgres = EmbeddedPostgres(pgdata)
    stack = RunningStack(workdir, broker, postgres, {})
    try:
        await broker.start()
        await postgres.start()
        admin = broker.settings_for(topic_prefix=topic_prefix)
        await ensure_topics(admin, partitions)
        principals = await secure_stack(admin, users, workdir)
        # The stack file signs in as the auditor: whoever reads it (replay, verify, the demo's checks)
        # reads the log and can write nothing.
        env: dict[str, str] = keys.kafka_environment(principals[AUDITOR])
        env[keys.CREDENTIALS] = str(credentials_folder(workdir))
        env[keys.POSTGRES_URL] = postgres.server_url
        for spec in SERVICES:
            env[spec.database_url_key] = await postgres.create_database(spec.database)
        env[keys.STAFF_TOKEN] = secrets.token_urlsafe(32)
        env[keys.AUDITOR_TOKEN] = secrets.token_urlsafe(32)
        env[keys.TOKEN_SECRET] = secrets.token_urlsafe(32)
        env[keys.PERSONAL_DATA_KEY] = base64.b64encode(secrets.token_bytes(32)).decode()
        env[keys.TRUST_ANCHORS] = write_signing_keys(workdir)
        # Payout first: enrollment asks it what a resident is owed before erasing her (ANYAM_PAYOUT_URL).
        for spec in sorted(SERVICES, key=lambda spec: spec.name != "payout"):
            if spec.launcher is not None:
                launched = await spec.launcher(spec, dict(env), workdir)
                stack.services[spec.name] = launched
                env[spec.url_key] = launched.url
        assert broker.pid is not None and postgres.pid is not None
        env[keys.BROKER_PID] = str(broker.pid)
        env[keys.BROKER_PIDS] = ",".join(map(str, broker.pids))
        env[keys.BROKER_DESCRIPTION] = broker.describe()
        env[keys.BROKER_LOG] = str(broker.log_path)
        env[keys.POSTGRES_PID] = str(postgres.pid)
        env[keys.POSTGRES_PGDATA] = str(pgdata)
        for spec in SERVICES:
            if spec.name in stack.services:
                env[spec.pid_key] = str(stack.services[spec.name].pid)
        if supervised:
            env[keys.SUPERVISOR_PID] = str(os.getpid())
        stack.env = env
        stack._write()
    except BaseException:
        await asyncio.to_thread(stack.stop)
        raise
    return stack


async def wait_for_shutdown(stack: RunningStack, check_every: float = 1.0) -> str | None:
    """Block until SIGINT/SIGTERM arrives (→ None) or a part of the stack dies (→ a description)."""
    loop = asyncio.get_running_loop()
    requested = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, requested.set)
    try:
        while not requested.is_set():
            dead = stack.dead_parts()
            if dead:
                return f"{', '.join(dead)} exited unexpectedly"
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(requested.wait(), check_every)
        return None
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def stop_stack(workdir: Path | str = keys.DEFAULT_WORKDIR, timeout: float = 30.0) -> StackInspection:
    """Stop every process the work directory's stack file names, wait until they are gone, remove the file.

    Returns the inspection made before stopping (state STALE: nothing was
    running, the file was just removed). Raises `NoStack` without a stack file.
    """
    inspection = inspect_stack(workdir)
    if inspection.state is StackState.ABSENT:
        raise NoStack(f"no stack in {inspection.workdir}: there is no {inspection.path}")
    alive = dict(inspection.alive)
    supervisor = alive.pop("supervisor", None)
    if supervisor is not None:
        # A foreground `anyam up` stops its own stack in order when asked to.
        os.kill(supervisor, signal.SIGTERM)
        wait_gone([supervisor], timeout)
    brokers = [pid for role, pid in alive.items() if role.startswith("broker")]
    for role, pid in alive.items():
        if role.startswith("broker"):
            continue
        if role == "postgres":
            terminate_all(brokers, min(timeout, 15.0))
            stop_postgres(inspection.env.get(keys.POSTGRES_PGDATA) or inspection.workdir / PGDATA_DIR, timeout)
        terminate(pid, timeout)
    terminate_all(brokers, min(timeout, 15.0))
    survivors = wait_gone(list(inspection.alive.values()), timeout)
    if survivors:
        raise StackError(f"processes of the stack in {inspection.workdir} are still running: {survivors}")
    inspection.path.unlink(missing_ok=True)
    discard_credentials(inspection.workdir)
    return inspection


@dataclass(frozen=True)
class StackStatus:
    """`inspect_stack` plus whether the broker answers metadata requests."""

    inspection: StackInspection
    broker_answers: bool


async def stack_status(workdir: Path | str = keys.DEFAULT_WORKDIR) -> StackStatus:
    """Inspect the work directory's stack and probe its broker."""
    inspection = inspect_stack(workdir)
    bootstrap = inspection.env.get(keys.KAFKA_BOOTSTRAP)
    broker_alive = any(role.startswith("broker") for role in inspection.alive)
    answers = bool(bootstrap and broker_alive and await broker_answers(
        bootstrap, timeout=3.0, kafka=keys.stack_kafka_settings(inspection.env)))
    return StackStatus(inspection, answers)
