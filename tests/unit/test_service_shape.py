"""Every service has the same files, so the path answers "where does this go" (issue 28 item 4)."""

from __future__ import annotations

from pathlib import Path

import pytest

SERVICES = Path(__file__).resolve().parents[2] / "services"
SHAPE = ("domain.py", "handlers.py", "projections.py", "http.py", "messaging.py", "app.py", "__main__.py")


@pytest.mark.parametrize("service", ["enrollment", "production", "payout"])
def test_each_service_has_the_same_files_and_an_empty_concern_says_so(service):
    folder = SERVICES / service
    missing = [name for name in SHAPE if not (folder / name).is_file()]
    assert not missing, f"services/{service} lacks {missing}"
    for name in SHAPE:
        text = (folder / name).read_text()
        assert text.lstrip().startswith('"""'), f"services/{service}/{name} does not say what it holds"
