"""docs/contract.md is the contract outside implementers build from: its generated tables must say
what the code says, every dead-letter reason the code can give must be listed, and its links must lead
somewhere."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from shared.contracts.schema_export import CONTRACT_DOC, REGENERATE, stale_document, with_tables

ROOT = Path(__file__).parents[2]
CONTRACT_PAGES = [CONTRACT_DOC, *sorted((ROOT / "docs" / "contract").glob("*.md"))]

#: The calls that refuse a record and the position of their reason argument.
REFUSALS = {"Reject": 0, "SubmissionRejected": 0, "_Refusal": 1}


def test_the_generated_tables_of_the_contract_are_up_to_date():
    assert not stale_document(), f"the generated tables of {CONTRACT_DOC} are stale: run `{REGENERATE}`"


def test_a_table_emptied_by_hand_counts_as_stale_and_is_written_back():
    document = CONTRACT_DOC.read_text()
    emptied = re.sub(r"(<!-- generated: code-lists [^\n]*-->\n).*?(<!-- end generated: code-lists -->)",
                     r"\1\2", document, flags=re.S)
    assert emptied != document
    assert with_tables(emptied) == with_tables(document)
    assert "`moved-away`" in with_tables(emptied)


def documented_reasons() -> set[str]:
    section = CONTRACT_DOC.read_text().split("### Reasons", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z-]+)` \|", section, re.M))


def module_constants(trees: list[ast.Module]) -> dict[str, str]:
    """Module-level `NAME = "text"` of every scanned module (reasons are often named constants)."""
    return {target.id: node.value.value
            for tree in trees for node in tree.body if isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
            for target in node.targets if isinstance(target, ast.Name)}


def reasons_in_code() -> set[str]:
    """Every reason the services can dead-letter a record with, read from the source: refusal classes'
    `reason = "..."`, and the reason given to each `Reject`, `SubmissionRejected` and `_Refusal`."""
    trees = [ast.parse(path.read_text()) for folder in ("shared", "services") for path in (ROOT / folder).rglob("*.py")]
    constants = module_constants(trees)
    reasons: set[str] = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                reasons |= {statement.value.value for statement in node.body
                            if isinstance(statement, ast.Assign) and isinstance(statement.value, ast.Constant)
                            and any(isinstance(t, ast.Name) and t.id == "reason" for t in statement.targets)}
            elif isinstance(node, ast.Call):
                name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
                if name in REFUSALS and len(node.args) > REFUSALS[name]:
                    argument = node.args[REFUSALS[name]]
                    assert not isinstance(argument, ast.JoinedStr), (
                        f"a {name} reason is built from pieces (line {node.lineno}); write each reason whole")
                    for part in ast.walk(argument):
                        if isinstance(part, ast.Constant) and isinstance(part.value, str):
                            reasons.add(part.value)
                        elif isinstance(part, ast.Name) and part.id in constants:
                            reasons.add(constants[part.id])
    return reasons


def test_every_reason_a_record_can_be_dead_lettered_with_is_documented():
    found = reasons_in_code()
    # The scan must see the reasons of each kind of refusal, or it proves nothing.
    assert {"malformed", "unattested", "handler-error", "revoked-key", "piece-already-posted"} <= found
    undocumented = sorted(found - documented_reasons())
    assert not undocumented, f"dead-letter reasons missing from the table under '### Reasons' in {CONTRACT_DOC}: " \
                             f"{undocumented}"


def test_every_link_of_the_contract_leads_to_a_file_of_the_repository():
    # The OpenAPI and AsyncAPI documents are checked in by their own change; only their place is ours.
    for page in CONTRACT_PAGES:
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text()):
            if target.startswith(("http:", "https:", "openapi/", "../openapi/", "asyncapi/", "../asyncapi/")):
                continue
            assert (page.parent / target).exists(), f"{page.relative_to(ROOT)} links to {target}, which is not there"
