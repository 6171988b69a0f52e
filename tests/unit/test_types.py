"""mypy finds no type error: the whole code base as [tool.mypy] in pyproject.toml configures it (strict for the
contracts and the domain). The configuration is the one a developer's `mypy` run reads too."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_mypy_finds_no_type_errors():
    # The cache lives outside the checkout, one per checkout: a warm run takes seconds, a cold one about 30.
    cache = Path(tempfile.gettempdir()) / f"anyam-mypy-{hashlib.sha256(str(REPO).encode()).hexdigest()[:12]}"
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml"), "--cache-dir", str(cache)],
        cwd=REPO, capture_output=True, text=True, timeout=240, check=False,
    )
    report = done.stdout + done.stderr
    print(report)
    assert done.returncode == 0, report[-6000:]
    assert report.startswith("Success: no issues found"), report[-6000:]
