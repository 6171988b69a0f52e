"""The three floors are a rule the build checks, not a hope: pyproject.toml's import-linter contracts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "import sys, importlinter.cli as c; sys.exit(c.lint_imports(no_cache=True))"],
        cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True, timeout=120,
        check=False,
    )


def test_the_platform_the_services_and_the_applications_keep_their_floors():
    done = lint_imports(REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "5 kept, 0 broken" in done.stdout


@pytest.mark.parametrize(("module", "line", "broken"), [
    ("shared/money.py", "import anyam.cli\n", "Three floors"),
    ("services/payout/projections.py", "import services.production.domain\n", "No service stands on another"),
    ("services/enrollment/domain.py", "import asyncpg\n", "Domain code is pure"),
    ("services/payout/dashboard/queries.py", "import services.payout.dashboard.view\n", "without a cycle"),
    ("services/payout/artisan/links.py", "import services.payout.artisan.queries\n", "artisan page without a cycle"),
])
def test_an_import_across_a_floor_breaks_the_contract(tmp_path, module, line, broken):
    copy = tmp_path / "repo"
    copy.mkdir()
    (copy / "pyproject.toml").write_text((REPO / "pyproject.toml").read_text())
    for package in ("shared", "services", "anyam"):
        shutil.copytree(REPO / package, copy / package, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / module
    target.write_text(target.read_text() + line)

    done = lint_imports(copy)

    assert done.returncode != 0
    assert f"{broken}" in done.stdout and "BROKEN" in done.stdout
