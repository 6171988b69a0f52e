"""An Apache Kafka cluster on loopback: one to three KRaft nodes, each a broker and a controller.

The cluster-wide settings are `deploy/kafka/broker.properties`, the file the deploy manifests say
too; `EMBEDDED_SETTINGS` lists the few this cluster changes and why. Every client authenticates
(SASL/SCRAM-SHA-512 on loopback, `SECURITY`), and the authorizer allows only what shared/contracts/acls.py
grants; there is no anonymous listener. Each node has its own ports,
data directory (`<workdir>/kafka/node-<id>/data`) and log (`.../broker.log`), and runs in its own
session so a Ctrl-C meant for `anyam up` reaches the stack's shutdown first. Nodes can be killed,
stopped, frozen and started again one at a time: the cluster faults of the tests. Started `isolated`,
each node runs in a network namespace of its own (anyam/stack/netns.py), so one can be partitioned off.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from anyam.stack.broker import broker_answers, log_tail
from anyam.stack.errors import BrokerNotReady, PortInUse, StackError
from anyam.stack.kafka_admin import new_password
from anyam.stack.kafka_dist import KafkaDistribution, ensure_kafka
from anyam.stack.netns import IsolatedNodes
from anyam.stack.processes import (
    POLL_INTERVAL,
    free_port,
    pause_or_resume,
    port_in_use,
    private_log,
    terminate,
    terminate_all,
)
from shared.contracts.acls import ADMIN, MECHANISM, check_principal
from shared.settings import KafkaSettings

#: The cluster-wide settings every Anyam cluster shares (deploy/compose.yaml, deploy/k8s say the same).
BROKER_PROPERTIES = Path(__file__).resolve().parents[2] / "deploy" / "kafka" / "broker.properties"
#: What the embedded cluster sets differently from `BROKER_PROPERTIES`, and why:
EMBEDDED_SETTINGS = {
    # A consumer group forms at once instead of waiting 3 s for more members: tests and the demo
    # start one consumer per group, many times over.
    "group.initial.rebalance.delay.ms": "0",
}
#: ...and what a single node cannot keep: one copy of everything.
SINGLE_NODE_SETTINGS = {
    "default.replication.factor": "1",
    "min.insync.replicas": "1",
    "offsets.topic.replication.factor": "1",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
}
#: Who may do what: the authorizer KRaft brokers and controllers share, one super user (`admin`, which
#: provisions and which the nodes use between themselves), and nothing for anyone an ACL does not name.
#: deploy/compose.yaml says the same (tests/unit/test_deploy.py).
AUTHORIZATION_SETTINGS = {
    "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    "super.users": f"User:{ADMIN}",
    "allow.everyone.if.no.acl.found": "false",
}
#: The two listeners of every node, both authenticated. CLIENT (clients and the brokers among themselves):
#: SASL/SCRAM-SHA-512 over plain TCP. It listens on loopback only, where nothing can be sniffed, so TLS
#: would add nothing here; a cluster reached over a network uses SASL_SSL (deploy/). SCRAM passwords never
#: cross the wire anyway. CONTROLLER (the KRaft quorum): SASL/PLAIN, because SCRAM credentials live in
#: the very metadata the controllers serve; its only user, admin, is declared in the node's own config.
CLIENT_LISTENER, CONTROLLER_LISTENER = "CLIENT", "CONTROLLER"
SECURITY = {
    "listener.security.protocol.map": f"{CLIENT_LISTENER}:SASL_PLAINTEXT,{CONTROLLER_LISTENER}:SASL_PLAINTEXT",
    "inter.broker.listener.name": CLIENT_LISTENER,
    "controller.listener.names": CONTROLLER_LISTENER,
    "sasl.enabled.mechanisms": MECHANISM,
    f"listener.name.{CONTROLLER_LISTENER.lower()}.sasl.enabled.mechanisms": "PLAIN",
    "sasl.mechanism.inter.broker.protocol": MECHANISM,
    "sasl.mechanism.controller.protocol": "PLAIN",
    **AUTHORIZATION_SETTINGS,
}
#: The JVM of each node: a small heap is plenty for a test's traffic, and three fit beside the rest.
JVM_OPTIONS = (
    "-Xms128m", "-Xmx768m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
    "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
)  # fmt: skip
#: The class every node runs; `orphan_kafka_nodes` recognises leftovers by it.
MAIN_CLASS = "kafka.Kafka"
_LOG4J = """\
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
logger.kafka.name = kafka
logger.kafka.level = WARN
logger.apache.name = org.apache.kafka
logger.apache.level = WARN
logger.started.name = kafka.server.KafkaRaftServer
logger.started.level = INFO
"""


def read_properties(path: Path) -> dict[str, str]:
    """A Java `.properties` file's `key=value` lines (comments and blank lines skipped)."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "!")):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def cluster_settings(brokers: int) -> dict[str, str]:
    """The cluster-wide settings of an embedded cluster of `brokers` nodes."""
    settings = {**read_properties(BROKER_PROPERTIES), **EMBEDDED_SETTINGS}
    return settings | SINGLE_NODE_SETTINGS if brokers == 1 else settings


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes in URL-safe base64 (what `kafka-storage.sh random-uuid` prints)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):  # Kafka refuses ids that would read as a command-line flag
            return text


@dataclass
class KafkaNode:
    """One node of the cluster: a broker and a controller in one JVM."""

    node_id: int
    host: str
    broker_port: int
    controller_port: int
    directory: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.broker_port}"

    @property
    def config_path(self) -> Path:
        return self.directory / "server.properties"

    @property
    def log_path(self) -> Path:
        return self.directory / "broker.log"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class KafkaCluster:
    """`brokers` Apache Kafka nodes on `host` (1 or 3; 3 is a real quorum), data under `<workdir>/kafka`."""

    kind = "kafka"

    def __init__(
        self,
        workdir: Path | str,
        *,
        brokers: int = 3,
        host: str = "127.0.0.1",
        port: int | None = None,
        ready_timeout: float = 120.0,
        users: Mapping[str, str] | None = None,
        isolated: bool = False,
    ) -> None:
        if brokers not in (1, 3):
            raise StackError(f"an embedded Kafka cluster has 1 or 3 brokers, not {brokers}")
        #: The super user's password (fresh for every cluster) and the SCRAM users (name → password)
        #: the cluster starts with: created as its storage is formatted, so they exist before any
        #: client connects. More can be added later as admin (`anyam.stack.kafka_admin`).
        self.admin_password = new_password()
        self.users = {ADMIN: self.admin_password, **{check_principal(n): pw for n, pw in (users or {}).items()}}
        self.workdir = Path(workdir)
        self.root = self.workdir / "kafka"
        self.brokers = brokers
        self.host = host
        self.port = port
        self.ready_timeout = ready_timeout
        self.nodes: list[KafkaNode] = []
        self.distribution: KafkaDistribution | None = None
        self.cluster_id: str | None = None
        #: With `isolated`, each node runs in a network namespace of its own (anyam/stack/netns.py), so
        #: a partition can cut one off from the others: the cluster faults of the tests, never `anyam up`.
        self.network = IsolatedNodes(brokers) if isolated else None

    # --- what clients and the stack file need ------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        """Every node's `host:port`, comma-separated, as Kafka clients take it."""
        if not self.nodes:
            raise StackError("the Kafka cluster has no nodes yet: start it first")
        return ",".join(node.bootstrap for node in self.nodes)

    @property
    def pid(self) -> int | None:
        """The first node's process id (`pids` has them all)."""
        return self.nodes[0].pid if self.nodes else None

    @property
    def pids(self) -> list[int]:
        return [node.pid for node in self.nodes if node.pid is not None]

    @property
    def log_path(self) -> Path:
        return self.nodes[0].log_path if self.nodes else self.root / "node-1" / "broker.log"

    @property
    def running(self) -> bool:
        """Whether every node runs (a node stopped on purpose counts as not running)."""
        return bool(self.nodes) and all(node.running for node in self.nodes)

    @property
    def version(self) -> str:
        return self.distribution.version if self.distribution else "?"

    def describe(self) -> str:
        """One line: what this cluster is, for logs and test headers."""
        return f"Apache Kafka {self.version}, {self.brokers} KRaft node(s) at {self.bootstrap} (SASL/SCRAM, ACLs)"

    def settings_for(self, principal: str = ADMIN, *, bootstrap: str | None = None, **fields: Any) -> KafkaSettings:
        """Client settings of one of the cluster's starting users (default: admin), every field explicit:
        whatever `ANYAM_KAFKA_*` the environment holds is not for this cluster."""
        return KafkaSettings(
            kafka_bootstrap=bootstrap or self.bootstrap, kafka_engine="kafka",
            kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism=MECHANISM,
            kafka_sasl_username=principal, kafka_sasl_password=self.users[principal],
            **fields,
        )

    def node(self, node_id: int) -> KafkaNode:
        return next(n for n in self.nodes if n.node_id == node_id)

    # --- starting and stopping -------------------------------------------------------------------

    async def start(self) -> KafkaCluster:
        """Fetch Kafka if needed, format fresh storage for every node, start them, return once all serve.

        Raises `KafkaUnavailable`, `PortInUse` or `BrokerNotReady` (with the failing node's log tail).
        """
        if self.running:
            return self
        self.distribution = await asyncio.to_thread(ensure_kafka)
        shutil.rmtree(self.root, ignore_errors=True)
        # Each node's config holds the admin password: the folder is the owner's alone.
        self.root.mkdir(parents=True, mode=0o700)
        (self.root / "log4j2.properties").write_text(_LOG4J)
        self.cluster_id = new_cluster_id()
        try:
            if self.network is not None:
                await asyncio.to_thread(self.network.create)
            self.nodes = [self._new_node(node_id) for node_id in range(1, self.brokers + 1)]
            self._write_configs()
            await asyncio.gather(*(self._format(node) for node in self.nodes))
            for node in self.nodes:
                self._launch(node)
            await self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _new_node(self, node_id: int) -> KafkaNode:
        directory = self.root / f"node-{node_id}"
        directory.mkdir(parents=True)
        if self.network is not None:  # a namespace of its own: Kafka's own ports are free there
            return KafkaNode(node_id, self.network.address(node_id), 9092, 9093, directory)
        broker_port = self.port if (self.port is not None and node_id == 1) else free_port(self.host)
        if node_id == 1 and self.port is not None and port_in_use(self.host, self.port):
            raise PortInUse(
                f"port {self.port} on {self.host} is already in use: stop whatever listens there "
                "or choose another with --port"
            )
        controller_port = free_port(self.host)
        return KafkaNode(node_id, self.host, broker_port, controller_port, directory)

    def _write_configs(self) -> None:
        voters = ",".join(f"{n.node_id}@{n.host}:{n.controller_port}" for n in self.nodes)
        shared = cluster_settings(self.brokers)
        password = self.admin_password
        # How each node signs in to the others (SCRAM on CLIENT) and to the quorum (PLAIN on CONTROLLER),
        # and the quorum's one PLAIN user. The password is URL-safe base64: nothing to escape.
        jaas = {
            f"listener.name.{CLIENT_LISTENER.lower()}.{MECHANISM.lower()}.sasl.jaas.config":
                f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{ADMIN}" '
                f'password="{password}";',
            f"listener.name.{CONTROLLER_LISTENER.lower()}.plain.sasl.jaas.config":
                f'org.apache.kafka.common.security.plain.PlainLoginModule required username="{ADMIN}" '
                f'password="{password}" user_{ADMIN}="{password}";',
        }
        for node in self.nodes:
            own = {
                "process.roles": "broker,controller",
                "node.id": str(node.node_id),
                "controller.quorum.voters": voters,
                "listeners": f"{CLIENT_LISTENER}://{node.host}:{node.broker_port},"
                             f"{CONTROLLER_LISTENER}://{node.host}:{node.controller_port}",
                "advertised.listeners": f"{CLIENT_LISTENER}://{node.bootstrap}",
                "log.dirs": str(node.directory / "data"),
            }
            lines = [f"{key}={value}" for key, value in {**shared, **SECURITY, **own, **jaas}.items()]
            _write_private(node.config_path, "\n".join(lines) + "\n")

    def _java(self, *args: str) -> list[str]:
        assert self.distribution is not None
        return [
            self.distribution.java, *JVM_OPTIONS,
            f"-Dlog4j2.configurationFile={self.root / 'log4j2.properties'}",
            "-cp", self.distribution.classpath, *args,
        ]  # fmt: skip

    async def _format(self, node: KafkaNode) -> None:
        """Format the node's storage with the cluster id and the starting SCRAM users (KIP-900: the
        metadata holds them from the first moment, so the brokers can sign in to each other at once)."""
        assert self.cluster_id is not None
        scram = [f"--add-scram={MECHANISM}=[name={name},password={password}]" for name, password in self.users.items()]
        command = self._java("kafka.tools.StorageTool", "format", "-t", self.cluster_id, "-c", str(node.config_path),
                             *scram)
        # The passwords go to the JVM in an argument file (`java @file`), never on a command line
        # that every local user can read in the process list.
        arguments = node.directory / "format.args"
        _write_private(arguments, "\n".join(_java_argument(arg) for arg in command[1:]) + "\n")
        try:
            proc = await asyncio.create_subprocess_exec(
                command[0], f"@{arguments}",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
            output, _ = await proc.communicate()
        finally:
            arguments.unlink(missing_ok=True)
        if proc.returncode != 0:
            raise BrokerNotReady(
                f"formatting the storage of Kafka node {node.node_id} failed (exit {proc.returncode})",
                detail=output.decode(errors="replace")[-2000:],
            )

    def _launch(self, node: KafkaNode) -> None:
        with private_log(node.log_path) as log:
            command = self._java(MAIN_CLASS, str(node.config_path))
            node.proc = subprocess.Popen(
                self.network.command(node.node_id, command) if self.network is not None else command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # The node's directory as cwd marks the JVM as this stack's (`orphan_kafka_nodes`).
                cwd=node.directory,
                start_new_session=True,
            )

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Return once every running node answers and the cluster's metadata lists them all."""
        deadline = time.monotonic() + (timeout or self.ready_timeout)
        wanted = {n.node_id for n in self.nodes if n.running}
        while True:
            for node in self.nodes:
                code = node.proc.poll() if node.proc is not None else None
                if code is not None and node.node_id in wanted:
                    tail = log_tail(node.log_path, 30)
                    if "Address already in use" in tail:
                        raise PortInUse(f"a port of Kafka node {node.node_id} is already in use", detail=tail)
                    raise BrokerNotReady(
                        f"Kafka node {node.node_id} exited with code {code} before it was ready "
                        f"(log: {node.log_path})",
                        detail=tail,
                    )
            if await self._registered(wanted):
                return
            if time.monotonic() > deadline:
                raise BrokerNotReady(
                    f"the Kafka cluster did not list brokers {sorted(wanted)} within "
                    f"{timeout or self.ready_timeout:g}s (logs: {self.root}/node-*/broker.log)",
                    detail=log_tail(self.log_path, 30),
                )
            await asyncio.sleep(POLL_INTERVAL * 4)

    async def _registered(self, wanted: set[int]) -> bool:
        live = [n for n in self.nodes if n.node_id in wanted]
        if not all([await broker_answers(n.bootstrap, timeout=3.0, kafka=self.settings_for(bootstrap=n.bootstrap))
                    for n in live]):
            return False
        return wanted <= set(await self.broker_ids(live[0].bootstrap))

    async def broker_ids(self, bootstrap: str | None = None) -> list[int]:
        """The ids of the brokers the cluster's metadata lists now."""
        admin = AIOKafkaAdminClient(**self.settings_for(bootstrap=bootstrap).client_options(), request_timeout_ms=5000)
        try:
            await asyncio.wait_for(admin.start(), 10)
            cluster = await asyncio.wait_for(admin.describe_cluster(), 10)
            return sorted(b["node_id"] for b in cluster["brokers"])
        except (TimeoutError, KafkaError, OSError):
            return []
        finally:
            with contextlib.suppress(Exception):
                await admin.close()

    def stop(self, timeout: float = 15.0) -> None:
        """Stop every node (SIGTERM together, SIGKILL after `timeout` seconds); return once every JVM is gone.

        Together: stopped one after another, the last nodes would wait for a quorum already gone.
        """
        terminate_all([node.pid for node in self.nodes if node.running and node.pid is not None], timeout)
        self._reap()
        if self.network is not None:
            self.network.remove()

    def _reap(self) -> None:
        for node in self.nodes:
            if node.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    node.proc.wait(5.0)

    # --- faults, one node at a time ----------------------------------------------------------------

    def kill_node(self, node_id: int) -> None:
        """SIGKILL one node: a crash, its data directory kept."""
        node = self.node(node_id)
        if node.proc is not None and node.running:
            node.proc.kill()
            node.proc.wait(10.0)

    def stop_node(self, node_id: int, timeout: float = 30.0) -> None:
        """Shut one node down in order (SIGTERM: it hands its leaderships over first; SIGKILL after `timeout`)."""
        node = self.node(node_id)
        if node.pid is not None and node.running:
            terminate(node.pid, timeout)
        self._reap()

    async def start_node(self, node_id: int, timeout: float = 120.0) -> None:
        """Start a stopped or killed node again on its ports and data; return once the cluster lists it."""
        self.start_node_process(node_id)
        await self.wait_ready(timeout)

    def start_node_process(self, node_id: int) -> None:
        """Launch a stopped or killed node again (on its ports and data) without waiting for it."""
        node = self.node(node_id)
        if not node.running:
            self._launch(node)

    async def group_coordinator(self, group: str) -> int:
        """The node id coordinating consumer group `group` now."""
        admin = AIOKafkaAdminClient(**self.settings_for(bootstrap=self._live_bootstrap()).client_options(),
                                    request_timeout_ms=10000)
        try:
            await admin.start()
            return await admin.find_coordinator(group)
        finally:
            await admin.close()

    def freeze_node(self, node_id: int) -> None:
        """SIGSTOP one node: its connections hang, as behind a network partition."""
        self._signal_nodes([self.node(node_id)], pause=True)

    def thaw_node(self, node_id: int) -> None:
        self._signal_nodes([self.node(node_id)], pause=False)

    def partition_node(self, node_id: int) -> None:
        """Cut one node off from the others (it runs on, reachable by clients); `heal_node` undoes it."""
        if self.network is None:
            raise StackError("a partition needs a cluster started with isolated nodes")
        self.network.partition(node_id)

    def heal_node(self, node_id: int) -> None:
        if self.network is not None:
            self.network.heal(node_id)

    def freeze(self) -> None:
        """SIGSTOP every node: clients time out as in an outage, and every node keeps its data."""
        self._signal_nodes(self.nodes, pause=True)

    def thaw(self) -> None:
        self._signal_nodes(self.nodes, pause=False)

    @contextlib.contextmanager
    def frozen(self) -> Iterator[KafkaCluster]:
        """Keep the whole cluster frozen for the body of a `with` block, thawing it however the block ends."""
        self.freeze()
        try:
            yield self
        finally:
            self.thaw()

    def _signal_nodes(self, nodes: list[KafkaNode], *, pause: bool) -> None:
        for node in nodes:
            if not node.running:
                raise StackError(f"Kafka node {node.node_id} is not running")
        for node in nodes:
            assert node.proc is not None
            pause_or_resume(node.proc.pid, pause=pause, what=f"Kafka node {node.node_id}")

    async def leaders(self, topics: list[str]) -> dict[tuple[str, int], int]:
        """(topic, partition) → the node id leading it now (-1 while none does)."""
        admin = AIOKafkaAdminClient(**self.settings_for(bootstrap=self._live_bootstrap()).client_options(),
                                    request_timeout_ms=10000)
        try:
            await admin.start()
            described = await admin.describe_topics(topics)
            return {(d["topic"], p["partition"]): p["leader"] for d in described for p in d["partitions"]}
        finally:
            await admin.close()

    def _live_bootstrap(self) -> str:
        return ",".join(n.bootstrap for n in self.nodes if n.running) or self.bootstrap

    async def __aenter__(self) -> KafkaCluster:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (it holds passwords)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chmod(path, 0o600)


def _java_argument(argument: str) -> str:
    """One argument of a `java @file` argument file, quoted (spaces and backslashes kept as they are)."""
    return '"' + argument.replace("\\", "\\\\").replace('"', '\\"') + '"'


def orphan_kafka_nodes(workdir: Path | str) -> list[psutil.Process]:
    """Kafka JVMs started for `workdir` (their cwd is one of its node folders) that outlived their stack."""
    root = Path(workdir).resolve() / "kafka"
    found = []
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        cwd, cmdline = proc.info["cwd"], proc.info["cmdline"] or []
        if cwd and Path(cwd).parent == root and MAIN_CLASS in cmdline:
            found.append(proc)
    return found

