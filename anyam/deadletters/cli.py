"""`anyam dead-letters list | show | redrive`: the operator's view of `dead-letters`, and re-drives.

Every command reads the stack `--workdir` names and signs in to Kafka as the stack's `admin`
(credentials/admin.env): only admin may read `dead-letters` and write every event topic under the
ACLs (docs/operations.md#dead-letters says why no narrower principal is made for it).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from anyam.deadletters import operations
from anyam.deadletters.records import (
    BadInput,
    Entry,
    Position,
    details,
    matches,
    parse_selector,
    parse_since,
    redrive_refusal,
    select,
    summary,
    table,
)
from anyam.stack import SERVICES, StackError, StackState, inspect_stack
from anyam.stack import stackfile as keys
from shared.contracts.acls import ADMIN
from shared.settings import KafkaSettings
from shared.timeutil import wib_now

console = Console(highlight=False, soft_wrap=True)

dead_letters_app = typer.Typer(help="Records the consumers refused: list, show, re-drive.", no_args_is_help=True)

WorkdirOption = Annotated[
    Path, typer.Option("--workdir", envvar="ANYAM_WORKDIR", help="The stack's work directory (its stack.env).",
                       file_okay=False),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
ReasonOption = Annotated[str | None, typer.Option("--reason", help="Only dead letters with this reason code.")]
TopicOption = Annotated[
    str | None, typer.Option("--topic", help="Only records refused from this topic (base or full name).")]
ConsumerOption = Annotated[str | None, typer.Option("--consumer", help="Only records this consumer refused.")]


def _stack(workdir: Path) -> tuple[dict[str, str], KafkaSettings]:
    inspection = inspect_stack(workdir)
    if inspection.state is not StackState.RUNNING:
        raise StackError(f"no stack runs in {inspection.workdir}: start one with `anyam up` first")
    return inspection.env, keys.principal_kafka_settings(inspection.env, ADMIN)


def _read(kafka: KafkaSettings) -> list[Entry]:
    return asyncio.run(operations.read_dead_letters(kafka))


def _selected(entries: list[Entry], ids: list[str]) -> list[Entry]:
    """The dead letters `ids` name, each once, in the order named; `StackError` for one that names none."""
    chosen: list[Entry] = []
    for text in ids:
        try:
            selector = parse_selector(text)
        except BadInput as err:
            raise StackError(str(err)) from None
        found = select(entries, selector)
        if not found:
            what = f"at position {selector}" if isinstance(selector, Position) else f"of event {selector}"
            raise StackError(f"there is no dead letter {what} ({len(entries)} on dead-letters; "
                             "`anyam dead-letters list` shows them)")
        chosen += [entry for entry in found if entry not in chosen]
    return chosen


@dead_letters_app.command("list")
def list_command(
    workdir: WorkdirOption = keys.DEFAULT_WORKDIR,
    reason: ReasonOption = None,
    topic: TopicOption = None,
    consumer: ConsumerOption = None,
    since: Annotated[str | None, typer.Option(
        "--since", help="Only those refused since: a moment (RFC 3339), a date (WIB) or an age (30m, 6h, 2d).")] = None,
    as_json: JsonOption = False,
) -> None:
    """One line per dead letter: position, when, which consumer refused it, the reason, where the record was,
    its event id and type. Headers and metadata only, never the record's value."""
    try:
        moment = parse_since(since, wib_now()) if since is not None else None
    except BadInput as err:
        raise StackError(str(err)) from None
    _, kafka = _stack(workdir)
    entries = [entry for entry in _read(kafka)
               if matches(entry, reason=reason, topic=topic, consumer=consumer, since=moment,
                          prefix=kafka.topic_prefix)]
    if as_json:
        print(json.dumps([summary(entry) for entry in entries], indent=2))
        return
    if not entries:
        console.print("No dead letters" + (" match" if any((reason, topic, consumer, since)) else "") + ".")
        return
    rows = [["position", "refused at (WIB)", "consumer", "reason", "record", "event id", "type"], *table(entries)]
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for number, row in enumerate(rows):
        line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        console.print(f"[bold]{escape(line)}[/]" if number == 0 else escape(line))
    console.print(f"{len(entries)} dead letter(s).")


@dead_letters_app.command("show")
def show_command(
    ident: Annotated[str, typer.Argument(metavar="ID", help="A position <partition>:<offset>, or an event id.")],
    workdir: WorkdirOption = keys.DEFAULT_WORKDIR,
    raw: Annotated[bool, typer.Option(
        "--raw", help="Print the value even of a record refused before its fields were checked.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Everything about one dead letter (or each of an event's): headers, reason, detail, the original key and
    headers, whether it can be re-driven, and the value when the contract checked it."""
    _, kafka = _stack(workdir)
    consumers = operations.stack_consumers(kafka.topic_prefix)
    shown = [details(entry, raw=raw, redrive_refusal=redrive_refusal(entry, prefix=kafka.topic_prefix,
                                                                      consumers=consumers))
             for entry in _selected(_read(kafka), [ident])]
    if as_json:
        print(json.dumps(shown if len(shown) > 1 else shown[0], indent=2))
        return
    for number, one in enumerate(shown):
        if number:
            console.print()
        _print_details(one)


def _print_details(one: dict[str, Any]) -> None:
    console.print(f"[bold]dead letter {escape(one['position'])}[/]")
    for label, name in (("refused at", "refused_at"), ("consumer", "consumer"), ("reason", "reason"),
                        ("detail", "detail"), ("record", "source"), ("event id", "event_id"),
                        ("event type", "event_type"), ("re-driven from", "redriven_from"), ("key", "key")):
        if one.get(name) is not None:
            console.print(f"  {label + ':':<16}{escape(str(one[name]))}")
    for header in one["headers"]:
        console.print(f"  {'header:':<16}{escape(header['name'])}: {escape(str(header['value']))}")
    redrivable = "yes" if one["redrivable"] else f"no: {one['not_redrivable_because']}"
    console.print(f"  {'re-drivable:':<16}{escape(redrivable)}")
    if "value" in one:
        console.print(f"  {'value:':<16}({one['value_bytes']} bytes)")
        console.print(escape(one["value"]))
    elif "value_withheld" in one:
        console.print(f"  {'value:':<16}({one['value_bytes']} bytes) withheld: {escape(one['value_withheld'])}")
    else:
        console.print(f"  {'value:':<16}none")


@dead_letters_app.command("redrive")
def redrive_command(
    ids: Annotated[list[str] | None, typer.Argument(
        metavar="[ID]...", help="Positions <partition>:<offset> or event ids of the dead letters to re-drive.")] = None,
    workdir: WorkdirOption = keys.DEFAULT_WORKDIR,
    reason: ReasonOption = None,
    topic: TopicOption = None,
    consumer: ConsumerOption = None,
    as_json: JsonOption = False,
) -> None:
    """Republish the original record of each dead letter named (or, with --reason, of every dead letter with
    that reason) to its topic, after the cause was fixed; safe to repeat: nothing is applied twice.
    Exits 1 if any of them cannot be re-driven (each is reported with why)."""
    if not ids and reason is None:
        raise StackError("name the dead letters to re-drive (positions or event ids), or give --reason")
    env, kafka = _stack(workdir)
    entries = _read(kafka)
    chosen = _selected(entries, ids or [])
    if reason is not None:
        chosen += [entry for entry in entries if entry not in chosen and matches(
            entry, reason=reason, topic=topic, consumer=consumer, prefix=kafka.topic_prefix)]
        if not chosen:
            raise StackError(f"no dead letter has reason {reason!r}" + (" with those filters" if topic or consumer
                                                                         else ""))
    databases = {spec.name: env[spec.database_url_key] for spec in SERVICES if spec.database_url_key in env}
    results = asyncio.run(operations.redrive(kafka, databases, entries, chosen))
    if as_json:
        print(json.dumps([result.to_json() for result in results], indent=2))
    else:
        styles = {"redriven": "green", "published-again": "yellow", "already": "dim", "not-redrivable": "red"}
        for result in results:
            console.print(f"[{styles[result.outcome]}]{result.outcome}[/]: {escape(result.message)}")
    if any(result.outcome == "not-redrivable" for result in results):
        raise typer.Exit(1)
