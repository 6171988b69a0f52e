"""tests/node: the JavaScript tools some tests run (a JCS signer, an attestation verifier, the AsyncAPI
parser), with the dependencies package-lock.json pins installed by `npm ci` when they are missing.

They need Node 20 and npm, as CI has: without them a test fails rather than skips, since a skipped
interoperability check proves nothing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

NODE_DIR = Path(__file__).resolve().parent / "node"


def run(command: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def _installed_as_locked() -> bool:
    lock = json.loads((NODE_DIR / "package-lock.json").read_text())
    direct = lock["packages"][""].get("dependencies", {})
    for name in direct:
        installed = NODE_DIR / "node_modules" / name / "package.json"
        wanted = lock["packages"][f"node_modules/{name}"]["version"]
        if not installed.exists() or json.loads(installed.read_text())["version"] != wanted:
            return False
    return True


def node_tools(needed_by: str) -> Path:
    """tests/node with its locked dependencies installed (`npm ci`, only when they are not)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail(f"Node.js 20 and npm must be on PATH: {needed_by}", pytrace=False)
    version = run([node, "--version"], timeout=30).stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < 20:
        pytest.fail(f"tests/node needs Node.js 20 or later; found {version}.", pytrace=False)
    if not _installed_as_locked():
        done = run([npm, "ci", "--prefix", str(NODE_DIR), "--ignore-scripts", "--no-audit", "--no-fund"], 240)
        if done.returncode != 0:
            pytest.fail(f"npm ci --prefix tests/node failed:\n{done.stdout}\n{done.stderr}", pytrace=False)
    return NODE_DIR
