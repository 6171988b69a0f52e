"""Starting a service as its own process against the stack: `python -m services.<name>`."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from anyam.stack.broker import log_tail
from anyam.stack.errors import StackError
from anyam.stack.processes import free_port, private_log, terminate
from anyam.stack.services import LaunchedService, ServiceSpec, service_environment, signing_key_path
from anyam.stack.stackfile import SIGNING_KEY


async def launch_service_process(
    spec: ServiceSpec, stack_env: Mapping[str, str], workdir: Path, *, timeout: float = 60.0, port: int | None = None
) -> LaunchedService:
    """Start the service on `port` (default: a free loopback port), logging to `<workdir>/<name>.log`;
    return once healthy."""
    port = port or free_port()
    env = {**os.environ, **service_environment(spec, stack_env), "ANYAM_HTTP_HOST": "127.0.0.1",
           "ANYAM_HTTP_PORT": str(port), SIGNING_KEY: signing_key_path(workdir, spec.name).read_text().strip()}
    log_path = workdir / f"{spec.name}.log"
    with private_log(log_path) as log:
        process = subprocess.Popen(
            [sys.executable, "-m", f"services.{spec.name}"], env=env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, cwd=os.getcwd(), start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as client:
        while True:
            if process.poll() is not None:
                raise StackError(f"the {spec.name} service exited at start (code {process.returncode})",
                                 detail=log_tail(log_path))
            try:
                if (await client.get(f"{url}/health")).status_code == 200:
                    return LaunchedService(url=url, pid=process.pid)
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                terminate(process.pid)
                raise StackError(f"the {spec.name} service did not become healthy in {timeout:.0f}s",
                                 detail=log_tail(log_path))
            await asyncio.sleep(0.1)
