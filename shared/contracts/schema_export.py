"""Export the generated parts of the contract: a JSON Schema for every event type into the
checked-in `schemas/` folder, and the tables of docs/contract.md that code defines (event types,
code lists, Kafka ACLs).

Outside parties validate against these files (e.g. with check-jsonschema) and build from the
document, so they must never drift from the code: unit tests regenerate them and fail when they
are stale.

    python -m shared.contracts.schema_export          # rewrite the folder and the document's tables
    python -m shared.contracts.schema_export --check  # exit 1 if either is stale
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import create_model

from shared.contracts.codes import CODE_LISTS
from shared.contracts.envelope import Envelope
from shared.contracts.events import EVENT_TYPES
from shared.contracts.topics import Topic

SCHEMA_DIR = Path(__file__).with_name("schemas")
CONTRACT_DOC = Path(__file__).parents[2] / "docs" / "contract.md"
REGENERATE = "python -m shared.contracts.schema_export"


def typed_envelope(event_type: str) -> type[Envelope]:
    """The envelope model of one event type: `type` fixed, `data` that type's model (for documents)."""
    data_model = EVENT_TYPES[event_type]
    # Types made from run-time values, which a static checker cannot read: the fields are typed `Any`.
    fields: dict[str, Any] = {
        "type": (Literal[event_type], ...),
        "dataversion": (Literal[data_model.data_version], ...),
        "data": (data_model, ...),
    }
    return create_model(f"{data_model.__name__}Event", __base__=Envelope, **fields)


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


# --- the generated tables of docs/contract.md ----------------------------------------------------
#
# Each lives between `<!-- generated: <name> ... -->` and `<!-- end generated: <name> -->`; the text
# around them is written by hand.

#: Who writes each topic (SPEC §4).
_WRITERS = {
    Topic.ENROLLMENT: "enrollment",
    Topic.PRODUCTION: "production",
    Topic.QC_SUBMISSIONS: "a collaborator",
    Topic.PAYOUT: "payout",
}


def _event_types_table() -> str:
    """Every event type with its topic, key, dataversion and schema file, read back from the schemas."""
    rows = ["| `type` | `dataversion` | topic | written by | record key | JSON Schema |", "|---|---|---|---|---|---|"]
    for name, text in event_schemas().items():
        schema = json.loads(text)
        event_type, version = schema["$id"].removeprefix("urn:anyam:event:").rsplit(":", 1)
        rows.append(f"| `{event_type}` | {version} | `{schema['x-topic']}` | {_WRITERS[Topic(schema['x-topic'])]} "
                    f"| `{schema['x-key']}` | [{name}](../shared/contracts/schemas/{name}) |")
    return "\n".join(rows)


def _code_lists_table() -> str:
    """Every published code list and its codes, in the order the list gives them."""
    rows = ["| code list | codes |", "|---|---|"]
    rows += [f"| `{name}` | {', '.join(f'`{code}`' for code in codes)} |" for name, codes in CODE_LISTS.items()]
    return "\n".join(rows)


def _acls_table() -> str:
    """What each Kafka principal may do, from the one table the brokers and deploy/ apply."""
    from shared.contracts.acls import COLLABORATOR_GRANTS, COLLABORATOR_PREFIX, GRANTS, GROUP, PREFIX

    rows = ["| principal | topics | consumer groups |", "|---|---|---|"]
    for principal, grants in [*GRANTS.items(), (f"{COLLABORATOR_PREFIX}<collaborator_id>", COLLABORATOR_GRANTS)]:
        topics = [f"`{g.name.format(prefix='<prefix>')}` ({', '.join(o.lower() for o in g.operations)})"
                  for g in grants if g.resource_type != GROUP]
        groups = [f"`{g.name.format(prefix='<prefix>')}{'*' if g.pattern == PREFIX else ''}`"
                  for g in grants if g.resource_type == GROUP]
        rows.append(f"| `{principal}` | {'; '.join(topics)} | {', '.join(groups) or '—'} |")
    return "\n".join(rows)


def generated_tables() -> dict[str, str]:
    """Name → the text of each generated table of docs/contract.md."""
    return {"event-types": _event_types_table(), "code-lists": _code_lists_table(), "acls": _acls_table()}


def _block(name: str) -> re.Pattern[str]:
    name = re.escape(name)
    return re.compile(rf"(<!-- generated: {name} [^\n]*-->\n)(.*?)(<!-- end generated: {name} -->)", re.S)


def with_tables(document: str) -> str:
    """`document` with every generated table rewritten; `ValueError` if one has no place in it."""
    for name, table in generated_tables().items():
        def with_table(m: re.Match[str], table: str = table) -> str:
            return m.group(1) + table + "\n" + m.group(3)

        document, found = _block(name).subn(with_table, document)
        if found != 1:
            raise ValueError(f"{CONTRACT_DOC.name} has {found} places for the generated table {name!r}, not one")
    return document


def stale_document(path: Path = CONTRACT_DOC) -> bool:
    """Whether the generated tables of the contract document differ from what the code says."""
    document = path.read_text()
    return with_tables(document) != document


def write_document(path: Path = CONTRACT_DOC) -> None:
    """Rewrite the generated tables of the contract document in place."""
    path.write_text(with_tables(path.read_text()))


if __name__ == "__main__":
    if "--check" in sys.argv[1:]:
        stale = stale_files() + ([str(CONTRACT_DOC.relative_to(CONTRACT_DOC.parents[1]))] if stale_document() else [])
        if stale:
            print("stale generated contract files: " + ", ".join(stale) + f"; run {REGENERATE}")
            sys.exit(1)
    else:
        write()
        write_document()
