"""`anyam replay` and `anyam verify` (SPEC §8): thin commands over `anyam.audit`.

Where to connect is taken, for each setting, from the first that gives it: the
command-line option, the `--stack-env` file when one is named, the `ANYAM_*`
environment, the default stack file `.anyam/stack.env` when it exists; so is who
signs in to Kafka (SASL; the stack file signs in as the auditor). Other Kafka
settings (TLS) come from the `ANYAM_KAFKA_*` environment, as for every Anyam
process. The auditor's token is read from `ANYAM_AUDITOR_TOKEN` or
the stack file, never from the command line, where other users could see it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from anyam.audit.replay import DEFAULT_PROCESSES, DEFAULT_WORKERS, AuditError, ReplayProgress, replay
from anyam.audit.report import dumps, print_replay, print_verify, write_json
from anyam.audit.verify import verify
from anyam.stack import read_stack_env
from anyam.stack import stackfile as keys
from shared.contracts.provenance import TrustAnchors
from shared.settings import KafkaSettings
from shared.timeutil import to_wib

#: Where the stack file and the environment say the payout service answers (SPEC §8).
PAYOUT_URL = "ANYAM_PAYOUT_URL"

console = Console()
err_console = Console(stderr=True)

AsOfOption = Annotated[str | None, typer.Option(
    "--as-of",
    help="Cut by the events' own time (inclusive): RFC 3339 with an offset, e.g. 2024-03-15T23:59:59+07:00.")]
BootstrapOption = Annotated[str | None, typer.Option(
    "--bootstrap-servers", help="Kafka bootstrap servers (default: ANYAM_KAFKA_BOOTSTRAP or the stack file).")]
PrefixOption = Annotated[str | None, typer.Option(
    "--topic-prefix", help="Common prefix of the topics (default: ANYAM_TOPIC_PREFIX or the stack file).")]
DatabaseOption = Annotated[str | None, typer.Option(
    "--database-url", help="An empty PostgreSQL database to rebuild into (default: a temporary embedded one).")]
WorkersOption = Annotated[int, typer.Option(
    "--workers", min=1, max=16,
    help="Database connections applying partitions side by side (each partition stays in its own order).")]
ProcessesOption = Annotated[int, typer.Option(
    "--processes", min=1, max=32,
    help="Processes the --workers connections are spread over (default: one per core, at most 4).")]
TrustOption = Annotated[str | None, typer.Option(
    "--trust-anchors", help="The services' public keys, service:base64 comma-separated (default: "
                            "ANYAM_TRUST_ANCHORS or the stack file): only records they attest can move money.")]
StackEnvOption = Annotated[Path | None, typer.Option(
    "--stack-env", help="A stack file to read addresses and the auditor token from (default: .anyam/stack.env "
    "when it exists).", dir_okay=False)]


def parse_as_of(text: str | None, option: str = "--as-of") -> datetime | None:
    """The `--as-of` moment in WIB; refuses a time without an offset, whose moment would be a guess."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        example = "2024-03-15T23:59:59+07:00"
        raise typer.BadParameter(f"give an RFC 3339 time such as {example}", param_hint=option) from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise typer.BadParameter("give the time with its UTC offset, e.g. +07:00 for WIB", param_hint=option)
    if not 2000 <= moment.year <= 2999:
        raise typer.BadParameter("give a moment between the years 2000 and 2999", param_hint=option)
    return to_wib(moment)


class Connection:
    """Resolves each setting from the option, the named stack file, the environment, the default stack file."""

    def __init__(self, stack_env: Path | None) -> None:
        self._named: dict[str, str] = {}
        self._default: dict[str, str] = {}
        if stack_env is not None:
            if not stack_env.exists():
                raise AuditError(f"there is no stack file {stack_env}")
            self._named = read_stack_env(stack_env)
        elif keys.stack_file().exists():
            self._default = read_stack_env(keys.stack_file())

    def get(self, key: str, option: str | None = None) -> str | None:
        """The first of: `option`, the named stack file, the environment, the default stack file."""
        for value in (option, self._named.get(key), os.environ.get(key), self._default.get(key)):
            if value is not None:
                return value
        return None

    def kafka(self, bootstrap: str | None, prefix: str | None) -> KafkaSettings:
        """Kafka settings: bootstrap, prefix and who signs in (`ANYAM_KAFKA_SECURITY_PROTOCOL`, `…_SASL_*`:
        the stack file gives the auditor's) resolved here; other settings (TLS) from `ANYAM_KAFKA_*`."""
        overrides: dict[str, Any] = {"topic_prefix": self.get(keys.TOPIC_PREFIX, prefix) or ""}
        if (servers := self.get(keys.KAFKA_BOOTSTRAP, bootstrap)) is not None:
            overrides["kafka_bootstrap"] = servers
        if (engine := self.get(keys.KAFKA_ENGINE)) is not None:
            overrides["kafka_engine"] = engine
        for key in keys.KAFKA_SECURITY_KEYS:
            if (value := self.get(key)) is not None:
                overrides[key.removeprefix("ANYAM_").lower()] = value
        return KafkaSettings(**overrides)

    def trust(self, anchors: str | None) -> TrustAnchors:
        """The services' public keys the history must be attested with (SPEC §11)."""
        text = self.get(keys.TRUST_ANCHORS, anchors)
        if not text:
            raise AuditError("no trust anchors: give --trust-anchors or set ANYAM_TRUST_ANCHORS (the services' "
                             "public keys; `anyam up` writes them to .anyam/stack.env), or give --stack-env")
        try:
            return TrustAnchors.parse(text)
        except ValueError as exc:
            raise AuditError(f"the trust anchors are not usable: {exc}") from None


@contextlib.contextmanager
def replay_progress() -> Iterator[Callable[[ReplayProgress], None]]:
    """A progress bar on stderr over the records of the history (hidden when stderr is not a terminal)."""
    with Progress(TextColumn("[bold]replaying[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err_console, transient=True) as bar:
        task = bar.add_task("", total=None)

        def update(step: ReplayProgress) -> None:
            bar.update(task, completed=step.done, total=step.total, description=step.partition)

        yield update


def replay_command(
    as_of: AsOfOption = None,
    as_known_at: Annotated[str | None, typer.Option(
        "--as-known-at", help="Read only what the topics held at this RFC 3339 moment (Apache Kafka's time "
                              "index; with --as-of, both cuts apply).")] = None,
    bootstrap_servers: BootstrapOption = None,
    topic_prefix: PrefixOption = None,
    database_url: DatabaseOption = None,
    stack_env: StackEnvOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a machine-readable JSON document instead.")] = False,
    workers: WorkersOption = DEFAULT_WORKERS,
    processes: ProcessesOption = DEFAULT_PROCESSES,
    trust_anchors: TrustOption = None,
) -> None:
    """Rebuild the ledger from the topics alone into a scratch database; print balances and the digest.

    Reads every event topic from the start in no consumer group; publishes, schedules and pays nothing.
    """
    moment = parse_as_of(as_of)
    known_at = parse_as_of(as_known_at, "--as-known-at")
    connection = Connection(stack_env)
    kafka = connection.kafka(bootstrap_servers, topic_prefix)
    trust = connection.trust(trust_anchors)
    with replay_progress() as progress:
        result = asyncio.run(replay(kafka, as_of=moment, database_url=database_url, progress=progress,
                                    workers=workers, processes=processes, known_at=known_at, trust=trust))
    if as_json:
        typer.echo(dumps(result.to_json()))  # plain: rich would wrap long lines
    else:
        print_replay(console, result)


def verify_command(
    as_of: AsOfOption = None,
    as_known_at: Annotated[str | None, typer.Option(
        "--as-known-at", help="Verify the ledger as it was known at this RFC 3339 moment: the replay reads only "
                              "what the topics held then, the live ledger cuts by the same records' times.")] = None,
    bootstrap_servers: BootstrapOption = None,
    topic_prefix: PrefixOption = None,
    database_url: DatabaseOption = None,
    stack_env: StackEnvOption = None,
    payout_url: Annotated[str | None, typer.Option(
        "--payout-url", help="The payout service (default: ANYAM_PAYOUT_URL or the stack file).")] = None,
    json_report: Annotated[Path | None, typer.Option(
        "--json-report", help="Also write the report as JSON to this file ('-': print it instead).",
        dir_okay=False)] = None,
    workers: WorkersOption = DEFAULT_WORKERS,
    trust_anchors: TrustOption = None,
) -> None:
    """Replay, compare with the live ledger and check every invariant; exit 1 unless all hold."""
    moment = parse_as_of(as_of)
    known_at = parse_as_of(as_known_at, "--as-known-at")
    connection = Connection(stack_env)
    kafka = connection.kafka(bootstrap_servers, topic_prefix)
    url = connection.get(PAYOUT_URL, payout_url)
    token = connection.get(keys.AUDITOR_TOKEN)
    if url is None:
        raise AuditError("no payout service to compare with: give --payout-url, ANYAM_PAYOUT_URL or --stack-env")
    if token is None:
        raise AuditError("no auditor token: set ANYAM_AUDITOR_TOKEN or give --stack-env")
    trust = connection.trust(trust_anchors)
    with replay_progress() as progress:
        report = asyncio.run(verify(kafka, payout_url=url, auditor_token=token, as_of=moment, trust=trust,
                                    database_url=database_url, progress=progress, workers=workers, known_at=known_at,
                                    status=lambda line: err_console.print(Text(line, "dim"))))
    if json_report is not None and str(json_report) == "-":
        typer.echo(dumps(report.to_json()))
    else:
        print_verify(console, report)
        if json_report is not None:
            write_json(json_report, report.to_json())
            console.print(f"JSON report: {json_report}")
    if not report.ok:
        raise typer.Exit(1)
