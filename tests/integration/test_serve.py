"""`anyam serve <service>` runs each built service exactly as the container image does (deploy/Dockerfile).

The image's entry point is `anyam serve`, its only configuration is `ANYAM_*`
environment variables, and the orchestrator stops it with SIGTERM. So each
built service is started here as a subprocess of the installed `anyam`
command, from a scratch working directory and an environment of the image's
own variables plus `ANYAM_*` settings (nothing inherited but PATH), against the
session's real broker and PostgreSQL. It
must answer `/health` with 200 within a deadline and, on SIGTERM, run its
lifespan shutdown (consumers cancelled, producer flushed, pool closed) and
exit 0 within a deadline: anything else makes Docker and Kubernetes report a
graceful stop as a failure.

A service not built yet is simply not parametrized (`service_is_built`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import httpx
import psutil
import pytest
from pydantic import SecretStr

from anyam.stack.processes import POLL_INTERVAL, free_port
from anyam.stack.services import SERVICES, service_is_built
from shared.contracts.provenance import signing_key_text
from shared.settings import KafkaSettings
from tests.services import SERVICE_KEYS, TRUST
from tests.unit.test_deploy import settings_classes_of

BUILT_SERVICES = [spec.name for spec in SERVICES if service_is_built(spec.name)]

#: Generous: the first start installs the schema and joins consumer groups; CI machines are slow.
START_DEADLINE_SECONDS = 60.0
#: deploy/compose.yaml allows 30 s before SIGKILL, deploy/k8s 45 s less a 5 s preStop: fit well inside both.
STOP_DEADLINE_SECONDS = 20.0


def anyam_command() -> Path:
    """The `anyam` console script installed next to this interpreter (what the image puts on PATH)."""
    script = Path(sys.executable).parent / "anyam"
    assert script.exists(), f"the `anyam` command is not installed next to {sys.executable}; run `make` first"
    return script


def setting_value(value: object) -> str:
    """How a settings value is written as an environment variable."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def kafka_environment(kafka: KafkaSettings) -> dict[str, str]:
    """Every Kafka setting of the session (bootstrap, prefix, and SASL/TLS on an explicit cluster) as `ANYAM_*`."""
    return {
        f"ANYAM_{name.upper()}": setting_value(value)
        for name, value in kafka.model_dump().items()
        if value is not None and name in KafkaSettings.model_fields
    }


#: Values for the secrets a service requires beyond the common ones, by settings field name.
#: A service that grows a new required setting fails here by name until the test learns it.
SECRET_FACTORIES = {
    "staff_token": lambda: secrets.token_urlsafe(24),
    "auditor_token": lambda: secrets.token_urlsafe(24),
    "token_secret": lambda: secrets.token_urlsafe(24),
    "personal_data_key": lambda: base64.b64encode(os.urandom(32)).decode(),
    "signing_key": lambda: signing_key_text(SERVICE_KEYS["production"]),
    "trust_anchors": TRUST.setting,
}


def image_environment(service: str, kafka: KafkaSettings, database_url: str, port: int, home: Path) -> dict[str, str]:
    """The environment the container would have: the image's own variables plus the deployment's `ANYAM_*`.

    Nothing of this process's environment leaks in (a loaded `.anyam/stack.env`
    must not make the test pass), except PATH so the interpreter's libraries resolve.
    """
    env = {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.defpath}",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        # As in deploy/Dockerfile:
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        **kafka_environment(kafka),
        "ANYAM_DATABASE_URL": database_url,
        # The image listens on 0.0.0.0; a test listens on loopback only.
        "ANYAM_HTTP_HOST": "127.0.0.1",
        "ANYAM_HTTP_PORT": str(port),
    }
    required = {
        name
        for settings in settings_classes_of(service)
        for name, field in settings.model_fields.items()
        if field.is_required()
    }
    missing = sorted(name for name in required if f"ANYAM_{name.upper()}" not in env)
    unknown = [name for name in missing if name not in SECRET_FACTORIES]
    assert not unknown, f"the {service} service requires settings this test cannot fill: {unknown}"
    env.update({f"ANYAM_{name.upper()}": SECRET_FACTORIES[name]() for name in missing})
    return env


def log_tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


async def wait_healthy(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    """Poll `/health` until it answers 200; fail on exit of the process or at the deadline."""
    deadline = time.monotonic() + START_DEADLINE_SECONDS
    last = "no answer yet"
    async with httpx.AsyncClient(timeout=2) as client:
        while True:
            assert process.poll() is None, (
                f"`anyam serve` exited at start with code {process.returncode}:\n{log_tail(log)}"
            )
            try:
                response = await client.get(f"{url}/health")
                if response.status_code == 200:
                    return
                last = f"{response.status_code} {response.text}"
            except httpx.TransportError as exc:
                last = type(exc).__name__
            assert time.monotonic() < deadline, (
                f"/health did not answer 200 within {START_DEADLINE_SECONDS:.0f}s (last: {last}):\n{log_tail(log)}"
            )
            await asyncio.sleep(POLL_INTERVAL)


async def wait_exit(process: subprocess.Popen[bytes], log: Path) -> int:
    """Wait for the process to exit; fail at the deadline."""
    deadline = time.monotonic() + STOP_DEADLINE_SECONDS
    while process.poll() is None:
        assert time.monotonic() < deadline, (
            f"`anyam serve` still runs {STOP_DEADLINE_SECONDS:.0f}s after SIGTERM:\n{log_tail(log)}"
        )
        await asyncio.sleep(POLL_INTERVAL)
    return process.returncode


@pytest.mark.parametrize("service", BUILT_SERVICES)
async def test_anyam_serve_answers_health_and_stops_cleanly_on_sigterm(
    service: str, kafka_settings: KafkaSettings, postgres, tmp_path: Path
) -> None:
    database = f"serve_{service}_{uuid.uuid4().hex[:8]}"
    database_url = await postgres.create_database(database)
    port = free_port()
    env = image_environment(service, kafka_settings, database_url, port, home=tmp_path)
    log = tmp_path / f"{service}.log"
    workdir = tmp_path / "cwd"  # like the image: no source tree, no .anyam beside the process
    workdir.mkdir()
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(anyam_command()), "serve", service], env=env, cwd=workdir,
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        await wait_healthy(process, f"http://127.0.0.1:{port}", log)

        process.send_signal(signal.SIGTERM)  # what `docker stop` and Kubernetes send (STOPSIGNAL SIGTERM)
        code = await wait_exit(process, log)

        output = log.read_text(errors="replace")
        # uvicorn's lifespan shutdown ran, i.e. ServiceRuntime.stop(): consumers cancelled
        # (their open transactions rolled back), the producer flushed, the pool closed.
        assert "Application shutdown complete" in output, output
        assert code == 0, f"`anyam serve {service}` exited with {code} after SIGTERM, not 0:\n{log_tail(log)}"
        assert "Traceback" not in output, output
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        # Best effort, as conftest's `database_url` does: leave nothing behind on a shared server.
        with contextlib.suppress(Exception):
            conn = await asyncpg.connect(postgres.server_url)
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            finally:
                await conn.close()


async def _send_huge_body(port: int, head: bytes, *, chunked: bool, total: int) -> tuple[int | None, int]:
    """POST a `total`-byte body on a raw connection, reading the answer while it is being sent; return the
    answer's status (None when the server reset the connection before it could be read: a server closing
    on a body it will not read does that) and how much of the body had been sent by then."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sent = 0

    async def write_body() -> None:
        nonlocal sent
        chunk = b"x" * 65_536
        with contextlib.suppress(ConnectionError):
            while sent < total:
                writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
                await writer.drain()
                sent += len(chunk)

    writer.write(head)
    body = asyncio.create_task(write_body())
    try:
        status_line = await asyncio.wait_for(reader.readline(), 60)  # a deadline, not a measure
        return (int(status_line.split()[1]) if status_line else None), sent
    except ConnectionError:
        return None, sent
    finally:
        body.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await body
        writer.close()


def refusals_counted(metrics: str) -> int:
    """The 413s the service's own request counter holds."""
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in metrics.splitlines()
               if line.startswith("anyam_http_requests_total") and 'status="413"' in line)


async def test_four_100_mb_bodies_at_once_are_refused_before_they_are_read(
    kafka_settings: KafkaSettings, postgres, tmp_path: Path
) -> None:
    database_url = await postgres.create_database(f"limits_{uuid.uuid4().hex[:8]}")
    port = free_port()
    env = image_environment("production", kafka_settings, database_url, port, home=tmp_path)
    log = tmp_path / "production.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([str(anyam_command()), "serve", "production"], env=env, cwd=tmp_path,
                                   stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        await wait_healthy(process, url, log)
        service = psutil.Process(process.pid)
        before = service.memory_info().rss
        hundred_mb = 100 * 1_048_576
        # No token: the size is refused before anyone asks who is calling.
        declared = (b"POST /qc-submissions HTTP/1.1\r\nHost: anyam\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n" % hundred_mb)
        # With staff's token and no length given: refused once the stream passes the limit.
        streamed = (b"POST /qc-submissions HTTP/1.1\r\nHost: anyam\r\nContent-Type: application/json\r\n"
                    b"Authorization: Bearer %s\r\nTransfer-Encoding: chunked\r\n\r\n"
                    % env["ANYAM_STAFF_TOKEN"].encode())
        answers = await asyncio.gather(
            *(_send_huge_body(port, declared, chunked=False, total=hundred_mb) for _ in range(4)),
            _send_huge_body(port, streamed, chunked=True, total=hundred_mb),
        )
        grown = service.memory_info().rss - before
        async with httpx.AsyncClient(base_url=url, timeout=10,
                                     headers={"Authorization": f"Bearer {env['ANYAM_STAFF_TOKEN']}"}) as http:
            metrics = (await http.get("/metrics")).text

        # Each was answered 413 (or cut off after the answer, unread), long before its end.
        assert {status for status, _ in answers} <= {413, None} and 413 in {status for status, _ in answers}
        assert all(sent < hundred_mb // 4 for _, sent in answers), answers
        assert refusals_counted(metrics) == 5, metrics
        assert grown < 50 * 1_048_576, f"the service grew {grown / 1_048_576:.0f} MB"
        assert process.poll() is None
    finally:
        process.kill()
        process.wait(timeout=10)
