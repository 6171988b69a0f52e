"""Export a JSON Schema for every event type into the checked-in `schemas/` folder.

Outside parties validate against these files (e.g. with check-jsonschema), so
they must never drift from the models: a unit test regenerates them and fails
when the folder is stale.

    python -m shared.contracts.schema_export          # rewrite the folder
    python -m shared.contracts.schema_export --check  # exit 1 if it is stale
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Literal

from pydantic import create_model

from shared.contracts.envelope import Envelope
from shared.contracts.events import EVENT_TYPES

SCHEMA_DIR = Path(__file__).with_name("schemas")


def typed_envelope(event_type: str) -> type[Envelope]:
    """The envelope model of one event type: `type` fixed, `data` that type's model (for documents)."""
    data_model = EVENT_TYPES[event_type]
    return create_model(
        f"{data_model.__name__}Event",
        __base__=Envelope,
        type=(Literal[event_type], ...),  # type: ignore[valid-type]
        dataversion=(Literal[data_model.data_version], ...),  # type: ignore[valid-type]
        data=(data_model, ...),
    )


def event_schemas() -> dict[str, str]:
    """File name → JSON Schema text (a whole CloudEvent of that type) for every event type."""
    schemas: dict[str, str] = {}
    for event_type, data_model in sorted(EVENT_TYPES.items()):
        schema = typed_envelope(event_type).model_json_schema()
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"urn:anyam:event:{event_type}:{data_model.data_version}"
        schema["x-topic"] = data_model.topic.value
        schema["x-key"] = data_model.key_field
        schemas[f"{event_type}.json"] = json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    return schemas


def stale_files(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of schema files in `directory` that are missing, different or no longer generated."""
    wanted = event_schemas()
    present = {p.name for p in directory.glob("*.json")} if directory.exists() else set()
    stale = [name for name, text in wanted.items() if name not in present or (directory / name).read_text() != text]
    stale += sorted(present - wanted.keys())
    return stale


def write(directory: Path = SCHEMA_DIR) -> None:
    """Rewrite `directory` so it holds exactly the current schemas."""
    directory.mkdir(exist_ok=True)
    wanted = event_schemas()
    for old in directory.glob("*.json"):
        if old.name not in wanted:
            old.unlink()
    for name, text in wanted.items():
        (directory / name).write_text(text)


if __name__ == "__main__":
    if "--check" in sys.argv[1:]:
        stale = stale_files()
        if stale:
            print("stale event schemas: " + ", ".join(stale) + "; run python -m shared.contracts.schema_export")
            sys.exit(1)
    else:
        write()
