"""Property-based fuzzing of a running service's OpenAPI document with schemathesis.

The schemathesis command line runs in a subprocess, so the service under test
keeps serving from this test's event loop while it is being fuzzed.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


async def fuzz_openapi(base_url: str, token: str, *, max_examples: int = 25, seed: int = 20240226) -> tuple[int, str]:
    """Fuzz every operation (valid and invalid inputs); returns schemathesis's exit code and output.

    Only `not_a_server_error` is checked: bad input must get a 4xx, never a 5xx.
    """
    process = await asyncio.create_subprocess_exec(
        str(SCHEMATHESIS), "run", f"{base_url}/openapi.json",
        "--header", f"Authorization: Bearer {token}",
        "--checks", "not_a_server_error",
        "--max-examples", str(max_examples),
        "--seed", str(seed),
        "--url", base_url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_TELEMETRY": "false"},
    )
    output, _ = await process.communicate()
    return process.returncode, output.decode(errors="replace")
