"""The README lists every `ANYAM_*` setting the code reads, so operators are never left guessing."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings

from services.enrollment.app import EnrollmentSettings
from services.payout.app import PayoutSettings
from services.production.app import ProductionSettings
from shared.service import ServiceSettings

README = (Path(__file__).parents[2] / "README.md").read_text()


def setting_names(settings: type[BaseSettings]) -> set[str]:
    prefix = settings.model_config.get("env_prefix", "")
    return {f"{prefix}{name}".upper() for name in settings.model_fields}


def test_every_setting_of_every_service_is_in_the_readme():
    names = set().union(*(setting_names(settings) for settings in (
        ServiceSettings, EnrollmentSettings, ProductionSettings, PayoutSettings)))
    missing = sorted(name for name in names if name not in README)
    assert not missing, f"README.md does not mention {missing}"


def test_the_readme_gives_the_two_commands_and_ci_runs_the_test_one():
    assert "make demo" in README and "make test" in README
    ci = (Path(__file__).parents[2] / ".ci" / "run").read_text()
    assert "make test" in ci
