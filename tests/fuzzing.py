"""Property-based fuzzing of a running service's OpenAPI document with schemathesis.

The schemathesis command line runs in a subprocess, so the service under test
keeps serving from this test's event loop while it is being fuzzed.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
#: Every answer is documented: its status for the operation, its content type and its body's schema.
CONFORMANCE_CHECKS = ("status_code_conformance", "content_type_conformance", "response_schema_conformance")


async def fuzz_openapi(base_url: str, token: str, *, max_examples: int = 25, seed: int = 20240226) -> tuple[int, str]:
    """Fuzz every operation (valid and invalid inputs); returns schemathesis's exit code and output.

    Checked: bad input gets a 4xx, never a 5xx; and every answer is one the document declares for the
    operation, with its declared content type and schema (`CONFORMANCE_CHECKS`).
    """
    process = await asyncio.create_subprocess_exec(
        str(SCHEMATHESIS), "run", f"{base_url}/openapi.json",
        "--header", f"Authorization: Bearer {token}",
        "--checks", ",".join(("not_a_server_error", *CONFORMANCE_CHECKS)),
        "--max-examples", str(max_examples),
        "--seed", str(seed),
        "--url", base_url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_TELEMETRY": "false"},
    )
    output, _ = await process.communicate()
    return process.returncode, output.decode(errors="replace")


HOOKS = Path(__file__).with_name("schemathesis_checks.py")
#: The checks of `tests/schemathesis_checks.py`, run with schemathesis's own `not_a_server_error` and conformance.
HOSTILE_CHECKS = ("not_a_server_error", "no_leaked_data", "refused_as_spec_says", *CONFORMANCE_CHECKS)


@dataclass
class HostileRun:
    """What a hostile fuzzing run found: schemathesis's exit code and output, and one row per response."""

    code: int
    output: str
    tally: list[dict[str, Any]] = field(default_factory=list)

    def kinds(self) -> dict[str, int]:
        """How many responses each kind of token got."""
        counts: dict[str, int] = {}
        for row in self.tally:
            counts[row["kind"]] = counts.get(row["kind"], 0) + 1
        return counts


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string of printable text is a TOML basic string


async def fuzz_hostile(
    base_url: str,
    openapi: dict[str, Any],
    workdir: Path,
    *,
    tokens: dict[str, str | None],
    roles: dict[str, str],
    forbidden: dict[str, str],
    personal_data_readers: tuple[str, ...] = (),
    known_values: dict[str, list[str]] | None = None,
    max_examples: int = 10,
    seed: int = 20240226,
    phases: str = "examples,coverage,fuzzing",
) -> HostileRun:
    """Fuzz every operation of `openapi`, each case sent with one of `tokens` (see `tests/schemathesis_checks.py`).

    Checked on every response: no 5xx; no `forbidden` value anywhere in it (personal data may reach only
    `personal_data_readers` from the personal-data endpoint); a 401/403 problem wherever the caller's role
    may not act. `known_values` maps a parameter (`path.piece_id`, `body.collaborator_id`) to real ids the
    generator uses half of the time, so cases reach seeded records, not only random ones.

    The forbidden values travel in a 0600 file in `workdir`, never on a command line or in the environment.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    schema_path, config_path, toml_path = workdir / "openapi.json", workdir / "hooks.json", workdir / "fuzz.toml"
    tally_path = workdir / "tally.jsonl"
    tally_path.unlink(missing_ok=True)
    schema_path.write_text(json.dumps(openapi))
    config_path.touch(mode=0o600)
    config_path.write_text(json.dumps({
        "tokens": tokens, "roles": roles, "forbidden": forbidden,
        "personal_data_readers": list(personal_data_readers), "tally": str(tally_path),
    }))
    lines, bindings = [], []
    for index, (parameter, values) in enumerate(sorted((known_values or {}).items())):
        lines += [f"[dictionaries.known{index}]", f"values = [{', '.join(map(_toml_string, values))}]", ""]
        bindings.append(f"{_toml_string(parameter)} = {{ dictionary = \"known{index}\", probability = 0.5 }}")
    toml_path.write_text("\n".join([*lines, "[parameters]", *bindings, ""]))

    process = await asyncio.create_subprocess_exec(
        str(SCHEMATHESIS), "--config-file", str(toml_path), "run", str(schema_path),
        "--url", base_url,
        "--checks", ",".join(HOSTILE_CHECKS),
        "--phases", phases,
        "--max-examples", str(max_examples),
        "--seed", str(seed),
        "--workers", "1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_TELEMETRY": "false",
             "SCHEMATHESIS_HOOKS": str(HOOKS), "ANYAM_FUZZ_CONFIG": str(config_path)},
    )
    output, _ = await process.communicate()
    tally = [json.loads(line) for line in tally_path.read_text().splitlines()] if tally_path.exists() else []
    return HostileRun(process.returncode, output.decode(errors="replace"), tally)
