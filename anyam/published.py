"""The services' OpenAPI and AsyncAPI documents, checked in under docs/ for outside teams.

They are what each service serves at `/openapi.json` and `/asyncapi.json`, generated
from the very apps (routes, guards, consumers, event models), with the published
placeholders for what a deployment sets (the Kafka address, no topic prefix).
A unit test fails when the checked-in files are stale.

    python -m anyam.published          # rewrite docs/openapi/ and docs/asyncapi/
    python -m anyam.published --check  # exit 1, naming the stale files, if they are
"""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from shared.contracts.provenance import TrustAnchors, new_service_keys, signing_key_text
from shared.service import service_asyncapi

DOCS = Path(__file__).resolve().parents[1] / "docs"
REGENERATE = "python -m anyam.published"
SERVICES = ("enrollment", "production", "payout")


def service_apps() -> dict[str, FastAPI]:
    """Each service's app, built (not started) with throwaway secrets: no document shows a secret."""
    from services.enrollment.app import EnrollmentSettings
    from services.enrollment.app import create_app as enrollment_app
    from services.payout.app import PayoutSettings
    from services.payout.app import create_app as payout_app
    from services.production.app import ProductionSettings
    from services.production.app import create_app as production_app

    keys = new_service_keys()
    throwaway = base64.b64encode(os.urandom(24)).decode()

    def common(service: str) -> dict[str, Any]:
        return {"database_url": "postgresql://unused/unused", "kafka_bootstrap": "localhost:9092",
                "topic_prefix": "", "staff_token": throwaway, "auditor_token": throwaway + "a",
                "token_secret": throwaway, "signing_key": signing_key_text(keys[service]),
                "trust_anchors": TrustAnchors.of(keys).setting()}

    return {
        "enrollment": enrollment_app(EnrollmentSettings(
            **common("enrollment"), personal_data_key=base64.b64encode(os.urandom(32)).decode())),
        "production": production_app(ProductionSettings(**common("production"))),
        "payout": payout_app(PayoutSettings(**common("payout"))),
    }


def _text(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def documents() -> dict[Path, str]:
    """Path under docs/ → the text it must hold, for every published document."""
    wanted: dict[Path, str] = {}
    for service, app in service_apps().items():
        wanted[Path("openapi") / f"{service}.json"] = _text(app.openapi())
        wanted[Path("asyncapi") / f"{service}.json"] = _text(service_asyncapi(app.state.runtime))
    return wanted


def stale(docs: Path = DOCS) -> list[str]:
    """The published documents under `docs` that are missing, different, or no longer generated."""
    wanted = documents()
    present = {path.relative_to(docs) for folder in ("openapi", "asyncapi") for path in (docs / folder).glob("*.json")}
    found = [str(path) for path, text in wanted.items()
             if not (docs / path).exists() or (docs / path).read_text(encoding="utf-8") != text]
    return sorted(found + [str(path) for path in present - wanted.keys()])


def write(docs: Path = DOCS) -> None:
    """Rewrite docs/openapi/ and docs/asyncapi/ to hold exactly the current documents."""
    wanted = documents()
    for folder in ("openapi", "asyncapi"):
        (docs / folder).mkdir(parents=True, exist_ok=True)
        for old in (docs / folder).glob("*.json"):
            if old.relative_to(docs) not in wanted:
                old.unlink()
    for path, text in wanted.items():
        (docs / path).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    if "--check" in sys.argv[1:]:
        if found := stale():
            print(f"stale published documents: {', '.join(found)}; run {REGENERATE}")
            sys.exit(1)
    else:
        write()
