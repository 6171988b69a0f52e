"""A measurement in a fresh interpreter of its own: `python -m <module>`, a job in, figures out.

Used where the bench's own process would distort what is measured: its heap and its event
loop carry whatever the measurements before left behind. A plain child process rather than
multiprocessing: `spawn` would re-import whatever script started the bench (the `anyam`
entry point, pytest) in the child. The job goes as JSON on stdin (database URLs and Kafka
settings, secrets included: never on a command line); the child prints its answer as JSON
on its last line of stdout.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any


async def run_module(module: str, job: Any, *, what: str) -> Any:
    """Run `python -m module` with `job` on stdin; its answer. Raises with the child's stderr if it fails."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate(json.dumps(job).encode())
    if process.returncode != 0:
        raise RuntimeError(f"the {what} child failed (exit {process.returncode}): {err.decode()[-2000:]}")
    return json.loads(out.splitlines()[-1])
