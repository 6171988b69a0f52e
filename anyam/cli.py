"""The `anyam` command line (SPEC §8). Thin: every command's logic lives in `shared.*`.

Later commands join as sub-apps: `app.add_typer(collaborator_app, name="collaborator")`
or `@app.command()` in a module imported at the bottom of this file. Any
`StackError` they raise is reported as one red line and exit code 1.
"""

from __future__ import annotations

import asyncio
import runpy
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from anyam.stack import (
    SERVICES,
    NoStack,
    StackError,
    StackState,
    clean_leftovers,
    default_engine,
    inspect_stack,
    stack_status,
    start_stack,
    stop_stack,
    wait_for_shutdown,
)
from anyam.stack import stackfile as keys
from anyam.stack.services import service_is_built

console = Console()
err_console = Console(stderr=True)


class AnyamTyper(typer.Typer):
    """A Typer app that turns `StackError` into a red message and exit code 1, never a traceback."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except StackError as err:
            report_error(err)
            raise SystemExit(1) from None


def report_error(err: StackError) -> None:
    """Print a stack error: its message in red, its detail (e.g. a log tail) dimmed below."""
    # soft_wrap: the message stays one line however narrow the terminal (or a pipe) is.
    err_console.print(Text.assemble(("error: ", "bold red"), (err.message, "red")), soft_wrap=True)
    if err.detail:
        err_console.print(Text(err.detail, style="dim"), soft_wrap=True)


app = AnyamTyper(
    name="anyam",
    help="Anyam: event-sourced services for a piece-rate craft programme.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

#: The work directory option every stack-aware command shares.
WorkdirOption = Annotated[
    Path,
    typer.Option(
        "--workdir",
        envvar="ANYAM_WORKDIR",
        help="Where the embedded stack keeps its data, logs and stack.env.",
        file_okay=False,
    ),
]


#: Which broker the stack runs; the environment variable lets CI pick one for every command.
def _one_of(*allowed: object) -> Any:
    def check(value: object) -> object:
        if value is not None and value not in allowed:
            raise typer.BadParameter(f"choose one of {', '.join(map(str, allowed))}")
        return value

    return check


BrokerOption = Annotated[
    str | None,
    typer.Option(
        "--broker",
        envvar="ANYAM_STACK_ENGINE",
        help="kafka (Apache Kafka, needs Java 17+) or tansu (pip only). Default: kafka where Java is present.",
        callback=_one_of("kafka", "tansu"),
    ),
]
BrokersOption = Annotated[
    int,
    typer.Option("--brokers", envvar="ANYAM_STACK_BROKERS", help="Apache Kafka nodes: 1, or 3 (a real quorum).",
                 callback=_one_of(1, 3)),
]


def _addresses_table(env: dict[str, str]) -> Table:
    table = Table(title="Anyam embedded stack", title_justify="left")
    table.add_column("part", style="bold")
    table.add_column("address", overflow="fold")
    table.add_column("pid", justify="right")
    table.add_row("Kafka", env.get(keys.BROKER_DESCRIPTION, env[keys.KAFKA_BOOTSTRAP]),
                  env.get(keys.BROKER_PIDS, env.get(keys.BROKER_PID, "")))
    if keys.TOPIC_PREFIX in env:
        table.add_row("topic prefix", env[keys.TOPIC_PREFIX], "")
    table.add_row("PostgreSQL", env[keys.POSTGRES_URL], env.get(keys.POSTGRES_PID, ""))
    for spec in SERVICES:
        table.add_row(f"  database {spec.database}", env[spec.database_url_key], "")
    for spec in SERVICES:
        if spec.url_key in env:
            table.add_row(f"{spec.name} service", env[spec.url_key], env.get(spec.pid_key, ""))
    return table


@app.command()
def up(
    workdir: WorkdirOption = keys.DEFAULT_WORKDIR,
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="Return once the stack runs, leaving it running.")
    ] = False,
    port: Annotated[
        int | None, typer.Option("--port", min=1, max=65535, help="Broker port (default: a free one).")
    ] = None,
    partitions: Annotated[
        int, typer.Option("--partitions", min=1, help="Partitions per topic (tansu: qc-submissions has 1).")
    ] = 3,
    topic_prefix: Annotated[
        str, typer.Option("--topic-prefix", envvar="ANYAM_TOPIC_PREFIX", help="Common prefix of every topic.")
    ] = "",
    broker: BrokerOption = None,
    brokers: BrokersOption = 3,
) -> None:
    """Start the embedded stack: broker, PostgreSQL, databases and topics; write .anyam/stack.env."""
    for note in clean_leftovers(workdir):
        console.print(Text(note, style="yellow"), soft_wrap=True)
    asyncio.run(_up(workdir, detach=detach, port=port, partitions=partitions, topic_prefix=topic_prefix,
                    engine=broker, brokers=brokers))


def _engine(engine: str | None) -> str:
    if engine:
        return engine
    engine, note = default_engine()
    if note:
        console.print(Text(f"note: {note}", style="yellow"), soft_wrap=True)
    return engine


async def _up(workdir: Path, *, detach: bool, port: int | None, partitions: int, topic_prefix: str,
              engine: str | None, brokers: int) -> None:
    engine = _engine(engine)
    with console.status(f"starting the embedded stack ({engine})…"):
        stack = await start_stack(
            workdir, port=port, partitions=partitions, topic_prefix=topic_prefix, supervised=not detach,
            engine=engine, brokers=brokers,
        )
    console.print(_addresses_table(stack.env))
    console.print(f"Addresses and tokens: [bold]{stack.path}[/] (load with `set -a; . {stack.path}; set +a`)")
    console.print(_credentials_note(stack.env), soft_wrap=True)
    if detach:
        console.print("The stack runs detached; stop it with [bold]anyam down[/].")
        return
    console.print("Running in the foreground; Ctrl-C (or `anyam down`) stops it.")
    try:
        problem = await wait_for_shutdown(stack)
    finally:
        with console.status("stopping the embedded stack…"):
            await asyncio.to_thread(stack.stop)
    if problem:
        raise StackError(f"the stack stopped because {problem}")
    console.print("Stack stopped.")


def _credentials_note(env: dict[str, str]) -> str:
    folder = env.get(keys.CREDENTIALS, "")
    if env.get(keys.KAFKA_SECURITY_PROTOCOL, "PLAINTEXT") == "PLAINTEXT":
        return (f"Kafka: tansu has no authentication, so any local client may write any topic "
                f"(SPEC §11's first defence needs --broker kafka). Client settings: {folder}")
    return (f"Kafka signs every client in (SASL/SCRAM-SHA-512 on loopback) and allows only its ACLs: "
            f"each service runs as its own principal, the stack file as the auditor (read only); "
            f"credentials per principal in {folder}. Give a collaborator its own with "
            f"`anyam collaborator onboard <collaborator_id>`.")


@app.command()
def down(workdir: WorkdirOption = keys.DEFAULT_WORKDIR) -> None:
    """Stop the stack that .anyam/stack.env names and wait until its processes are gone."""
    try:
        with console.status("stopping the embedded stack…"):
            inspection = stop_stack(workdir)
    except NoStack as err:
        # No stack file, yet an `up` killed before writing it may have left processes: stop those too.
        # Nothing to stop is the state `down` is asked to reach: say so, but succeed.
        notes = clean_leftovers(workdir)
        for note in notes or [err.message]:
            console.print(Text(note, style="yellow"), soft_wrap=True)
        return
    if inspection.state is StackState.STALE:
        console.print(
            Text(f"No stack was running in {inspection.workdir}; removed its stale {inspection.path}.", "yellow")
        )
        return
    stopped = ", ".join(f"{role} (pid {pid})" for role, pid in inspection.alive.items())
    console.print(f"Stopped {stopped}; removed {inspection.path}.")


@app.command()
def status(workdir: WorkdirOption = keys.DEFAULT_WORKDIR) -> None:
    """Show whether the work directory's stack runs and where; exit 1 unless it runs fully."""
    result = asyncio.run(stack_status(workdir))
    inspection = result.inspection
    if inspection.state is StackState.ABSENT:
        console.print(Text(f"No stack in {inspection.workdir} (no {inspection.path}).", "yellow"))
        raise typer.Exit(1)
    table = Table(title=f"stack in {inspection.workdir}: {inspection.state.value}", title_justify="left")
    table.add_column("process", style="bold")
    table.add_column("pid", justify="right")
    table.add_column("state")
    for role, pid in {**inspection.alive, **inspection.dead}.items():
        state = Text("running", "green") if role in inspection.alive else Text("gone", "red")
        if role.startswith("broker") and role in inspection.alive:
            state = Text("answers", "green") if result.broker_answers else Text("not answering", "red")
        table.add_row(role, str(pid), state)
    console.print(table)
    env = inspection.env
    if keys.KAFKA_BOOTSTRAP in env:
        console.print(f"Kafka: {env.get(keys.BROKER_DESCRIPTION, env[keys.KAFKA_BOOTSTRAP])}")
        console.print(f"PostgreSQL: {env.get(keys.POSTGRES_URL, '?')}")
    if inspection.state is StackState.STALE:
        console.print(Text("None of its processes runs: `anyam down` (or `anyam up`) clears it.", "yellow"))
    if inspection.state is not StackState.RUNNING or not result.broker_answers:
        raise typer.Exit(1)


@app.command("fetch-kafka")
def fetch_kafka(
    optional: Annotated[
        bool, typer.Option("--optional", help="Without Java 17+, say so and succeed (the stack then runs tansu).")
    ] = False,
) -> None:
    """Fetch the pinned Apache Kafka broker (deploy/kafka/pom.xml) into the cache, once; offline afterwards."""
    from anyam.stack.kafka_dist import ensure_kafka, java_available

    if optional and not java_available():
        console.print(Text("note: no Java 17+ here: Apache Kafka is not fetched, tests and `anyam up` use tansu",
                           style="yellow"), soft_wrap=True)
        return
    with console.status("fetching Apache Kafka with Maven (first time only)…"):
        distribution = ensure_kafka()
    jars = len(list(distribution.libs.glob("*.jar")))
    console.print(f"Apache Kafka {distribution.version}: {jars} jars in {distribution.libs} "
                  f"(Java: {distribution.java})")


@app.command()
def serve(
    service: Annotated[str, typer.Argument(help="enrollment, production or payout")],
) -> None:
    """Run one service in the foreground from `ANYAM_*` settings, as the container image does."""
    names = [spec.name for spec in SERVICES]
    if service not in names:
        raise StackError(f"there is no service {service!r}; choose one of {', '.join(names)}")
    if not service_is_built(service):
        raise StackError(f"the {service} service is not built yet")
    runpy.run_module(f"services.{service}", run_name="__main__", alter_sys=True)


@app.command()
def demo(
    workdir: WorkdirOption = keys.DEFAULT_WORKDIR,
    seed: Annotated[int, typer.Option("--seed", help="The same seed gives the same programme.")] = 2024,
    broker: BrokerOption = None,
    brokers: BrokersOption = 3,
) -> None:
    """Run the demo's programmes (Rusunawa Nagrak and Marunda) end to end on the embedded stack (starting it
    if needed) and show the result."""
    from anyam.demo.report import print_result
    from anyam.demo.runner import run_demo
    from anyam.demo.scenario import programmes

    inspection = inspect_stack(workdir)
    if inspection.state is not StackState.RUNNING:
        for note in clean_leftovers(workdir):
            console.print(Text(note, style="yellow"), soft_wrap=True)
        asyncio.run(_up(workdir, detach=True, port=None, partitions=3, topic_prefix="", engine=broker,
                        brokers=brokers))
        inspection = inspect_stack(workdir)
    with console.status("running the programme…") as spinner:
        result = asyncio.run(run_demo(inspection.env, programmes(seed), progress=lambda line: spinner.update(line)))
    print_result(console, result)
    _verify_after_demo(inspection.env)
    console.print(f"Dashboard (this machine only; the link holds the read-only auditor token): "
                  f"{inspection.env['ANYAM_PAYOUT_URL']}/dashboard?token={inspection.env[keys.AUDITOR_TOKEN]}",
                  soft_wrap=True, markup=False, highlight=False)
    if result.artisan_page is not None:
        artisan_id, url = result.artisan_page
        console.print(f"Artisan {artisan_id}'s own page (the link on her card; docs/artisans.md): {url}",
                      soft_wrap=True, markup=False, highlight=False)
    console.print(f"The stack keeps running ({inspection.path}); stop it with [bold]anyam down[/].")


def _verify_after_demo(env: dict[str, str]) -> None:
    """The auditor's check ends every demo: replay the topics, compare with the live ledger, every invariant."""
    from anyam.audit.report import print_verify
    from anyam.audit.verify import verify
    from shared.contracts.provenance import TrustAnchors

    kafka = keys.stack_kafka_settings(env)
    with console.status("verifying: replaying the history and comparing with the live ledger…"):
        report = asyncio.run(verify(kafka, payout_url=env["ANYAM_PAYOUT_URL"],
                                    auditor_token=env[keys.AUDITOR_TOKEN], workers=2,
                                    trust=TrustAnchors.parse(env[keys.TRUST_ANCHORS])))
    print_verify(console, report)
    if not report.ok:
        raise StackError("anyam verify found the ledger and the history disagree (report above)")


# Sub-apps of the services join here; imported last, so they may use what this module defines.
from anyam.collaborator import collaborator_app  # noqa: E402

app.add_typer(collaborator_app, name="collaborator", help="A collaborator's keys, signed QC submissions and token.")


@collaborator_app.command()
def onboard(
    collaborator_id: Annotated[str, typer.Argument(help="The collaborator_id production registered.")],
    workdir: WorkdirOption = keys.DEFAULT_WORKDIR,
) -> None:
    """Give a registered collaborator its own Kafka principal on the running stack (write `qc-submissions`,
    nothing else) and write ONE file with what it needs: bootstrap, SASL user and password, HTTP token."""
    from anyam.stack.principals import onboard_collaborator

    inspection = inspect_stack(workdir)
    if inspection.state is not StackState.RUNNING:
        raise StackError(f"no stack runs in {inspection.workdir}: start one with `anyam up` first")
    collaborator_id = collaborator_id.strip()
    asyncio.run(_check_registered(inspection.env, collaborator_id))
    with console.status(f"onboarding collaborator {collaborator_id}…"):
        try:
            onboarded = asyncio.run(onboard_collaborator(inspection.env, collaborator_id))
        except ValueError as err:
            raise StackError(str(err)) from None
    console.print(f"Collaborator {collaborator_id}: Kafka principal [bold]{onboarded.principal}[/] "
                  f"({onboarded.kafka.kafka_security_protocol}) at {onboarded.kafka.bootstrap_servers}")
    console.print(f"Everything it needs (bootstrap, user, password, HTTP token) is in [bold]{onboarded.path}[/] "
                  "(readable by you only): hand it over securely. With it, the collaborator publishes by "
                  f"`anyam collaborator publish result.json --key-file <its key> --stack-env {onboarded.path}`.",
                  soft_wrap=True)


async def _check_registered(env: dict[str, str], collaborator_id: str) -> None:
    """Refuse to onboard a collaborator production does not know (a typo would get a working principal)."""
    import httpx

    url = env.get("ANYAM_PRODUCTION_URL")
    if url is None:
        return
    async with httpx.AsyncClient(base_url=url, timeout=30,
                                 headers={"Authorization": f"Bearer {env[keys.STAFF_TOKEN]}"}) as http:
        response = await http.get(f"/collaborators/{collaborator_id}")
    if response.status_code == 404:
        raise StackError(f"production knows no collaborator {collaborator_id!r}: register it first "
                         "(POST /collaborators)")
    if response.status_code >= 400:
        raise StackError(f"production answered {response.status_code} for collaborator {collaborator_id!r}")

erasures_app = AnyamTyper(help="Erasures of personal data.", no_args_is_help=True)
app.add_typer(erasures_app, name="erasures", help="Erasures of personal data (after restoring a backup).")


@erasures_app.command("reapply")
def reapply_erasures(workdir: WorkdirOption = keys.DEFAULT_WORKDIR) -> None:
    """After restoring enrollment's database from a backup: erase again everyone the enrollment topic
    records as erased (`personal-data-erased`), and rewrite the vault's tables."""
    from anyam.stack.erasures import enrollment_database_url, reapply_erasures
    from shared.contracts.provenance import TrustAnchors

    inspection = inspect_stack(workdir)
    if inspection.state is not StackState.RUNNING:
        raise StackError(f"no stack runs in {inspection.workdir}: start one with `anyam up` first")
    env = inspection.env
    trust = TrustAnchors.parse(env[keys.TRUST_ANCHORS])
    done = asyncio.run(reapply_erasures(keys.stack_kafka_settings(env), trust, enrollment_database_url(env)))
    console.print(f"{done.erased_in_log} erasure(s) in the log; {len(done.erased_again)} resident(s) whose "
                  "personal data was back in the database erased again.")


from anyam.deadletters.cli import dead_letters_app  # noqa: E402

app.add_typer(dead_letters_app, name="dead-letters", help="Records the consumers refused: list, show, re-drive.")

from anyam.pieces import pieces_app  # noqa: E402

app.add_typer(pieces_app, name="pieces", help="Woven pieces: import a field officer's CSV, a result per row.")

from anyam.audit.cli import replay_command, verify_command  # noqa: E402

app.command("replay")(replay_command)
app.command("verify")(verify_command)

from anyam.bench.cli import bench  # noqa: E402

app.command(help="Measure replay, end-to-end latency, commands, appends vs a peer and growth (--quick: small).")(bench)

if __name__ == "__main__":
    app()
