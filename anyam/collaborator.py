"""`anyam collaborator …`: what a collaborator's IT person needs to send QC results that are accepted.

    anyam collaborator keygen --key-file acme.key      # prints the public key to register
    anyam collaborator sign result.json --key-file acme.key
    anyam collaborator publish result.json --key-file acme.key --bootstrap-servers host:9092
    anyam collaborator token col_01J…                  # the bearer token for the HTTP API

A result file holds the `data` of a `qc-submitted` event (SPEC §6) without
its signature: `submission_id`, `piece_id`, `collaborator_id`, `result`,
`inspector`, `inspected_at`, `defects`. Every failure is one line on stderr
that says what to do, and a non-zero exit.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from aiokafka import AIOKafkaProducer
from aiokafka.errors import ClusterAuthorizationFailedError, TopicAuthorizationFailedError
from pydantic import ValidationError
from rich.console import Console
from rich.text import Text

from anyam.stack import stackfile
from anyam.stack.errors import StackError
from shared.contracts import DecodeError, Topic, topic_name
from shared.contracts.codec import CONTENT_TYPE_HEADER
from shared.contracts.envelope import CONTENT_TYPE
from shared.contracts.events import QcSubmitted
from shared.contracts.signing import (
    generate_private_key,
    load_private_key,
    private_key_pem,
    public_key_b64,
    signed,
    submission_event,
    verify,
)
from shared.settings import KafkaSettings
from shared.web.access import collaborator_token

err_console = Console(stderr=True)

#: Where `anyam up` writes the embedded stack's addresses and secrets.
DEFAULT_STACK_ENV = stackfile.stack_file()

collaborator_app = typer.Typer(
    name="collaborator",
    help="For collaborator companies: make a signing key, sign and publish QC results, get an API token.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

KeyFile = Annotated[
    Path,
    typer.Option("--key-file", "-k", envvar="ANYAM_COLLABORATOR_KEY_FILE", dir_okay=False,
                 help="The Ed25519 private key file (PEM) that `keygen` wrote."),
]
DataFile = Annotated[
    str, typer.Argument(help="JSON file with the QC result's data (without `signature`); `-` reads stdin.")
]
StackEnv = Annotated[
    Path,
    typer.Option("--stack-env", dir_okay=False, help="Stack file to read settings from when none are given."),
]


def fail(message: str) -> NoReturn:
    """Print `message` as one red line on stderr and exit with status 1."""
    err_console.print(Text.assemble(("error: ", "bold red"), (message, "red")), soft_wrap=True)
    raise typer.Exit(1)


def note(message: str) -> None:
    err_console.print(Text(message, style="dim"), soft_wrap=True)


@collaborator_app.command()
def keygen(
    key_file: KeyFile = Path("collaborator.key"),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing key file.")] = False,
) -> None:
    """Make a new Ed25519 key: the private key goes to KEY_FILE (mode 0600), the public key is printed."""
    private_key = generate_private_key()
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        # Created 0600 from the start: the key is never readable by others, not even briefly.
        fd = os.open(key_file, flags, 0o600)
    except FileExistsError:
        fail(f"{key_file} exists; keep it (its public key may be registered) or pass --force to replace it")
    except OSError as exc:
        fail(f"cannot write {key_file}: {exc.strerror}")
    with os.fdopen(fd, "wb") as out:
        out.write(private_key_pem(private_key))
    os.chmod(key_file, 0o600)  # --force on an existing file keeps its old mode otherwise
    typer.echo(public_key_b64(private_key))
    note(f"Private key written to {key_file} (keep it secret). Register the public key above with "
         "POST /collaborators {name, public_key}, or add it to an existing collaborator with "
         "POST /collaborators/<id>/keys.")


@collaborator_app.command()
def sign(data_file: DataFile, key_file: KeyFile = Path("collaborator.key")) -> None:
    """Sign a QC result and print it, with its `signature`, as JSON ready to submit."""
    typer.echo(json.dumps(_signed_submission(data_file, key_file), ensure_ascii=False, indent=2))


@collaborator_app.command()
def publish(
    data_file: DataFile,
    key_file: KeyFile = Path("collaborator.key"),
    bootstrap_servers: Annotated[
        str | None,
        typer.Option("--bootstrap-servers", envvar="ANYAM_KAFKA_BOOTSTRAP", help="Kafka bootstrap host:port list."),
    ] = None,
    topic_prefix: Annotated[
        str | None, typer.Option("--topic-prefix", envvar="ANYAM_TOPIC_PREFIX", help="Common prefix of topic names.")
    ] = None,
    stack_env: StackEnv = DEFAULT_STACK_ENV,
    timeout: Annotated[float, typer.Option("--timeout", min=1, help="Seconds to wait for the broker.")] = 30.0,
) -> None:
    """Sign a QC result and publish it to `qc-submissions` as a `qc-submitted` CloudEvent (key: piece_id)."""
    data = _signed_submission(data_file, key_file)
    engine: dict[str, Any] = {}  # raw settings, which KafkaSettings validates
    if bootstrap_servers is None:
        settings_file = _read_stack_env(stack_env)
        bootstrap_servers = settings_file.get(stackfile.KAFKA_BOOTSTRAP)
        if topic_prefix is None:
            topic_prefix = settings_file.get(stackfile.TOPIC_PREFIX)
        if stackfile.KAFKA_ENGINE in settings_file:
            engine["kafka_engine"] = settings_file[stackfile.KAFKA_ENGINE]
        # Who signs in comes with the address (a collaborator's file from `anyam collaborator onboard`).
        engine.update({key.removeprefix("ANYAM_").lower(): settings_file[key]
                       for key in stackfile.KAFKA_SECURITY_KEYS if key in settings_file})
    if not bootstrap_servers:
        fail(f"no broker given: pass --bootstrap-servers, set ANYAM_KAFKA_BOOTSTRAP, or run `anyam up` "
             f"so that {stack_env} names one")
    # Other ANYAM_KAFKA_* settings (SASL, TLS) the file does not give come from the environment, as for the services.
    kafka = KafkaSettings(kafka_bootstrap=bootstrap_servers, topic_prefix=topic_prefix or "", **engine)
    value = _event_value(data)
    topic = topic_name(Topic.QC_SUBMISSIONS, kafka.topic_prefix)
    try:
        partition, offset = asyncio.run(asyncio.wait_for(_produce(kafka, topic, data["piece_id"], value), timeout))
    except TimeoutError:
        fail(f"the broker at {kafka.bootstrap_servers} did not take the submission within {timeout:g}s; "
             "check the address and that the broker runs")
    except (TopicAuthorizationFailedError, ClusterAuthorizationFailedError):
        who = kafka.kafka_sasl_username or "an anonymous client"
        fail(f"the broker at {kafka.bootstrap_servers} does not let {who} write {topic}: publish with the "
             "collaborator's own credentials (`anyam collaborator onboard <collaborator_id>` writes them; pass "
             "that file with --stack-env)")
    except Exception as exc:  # noqa: BLE001 - any client failure is reported in one line, not a traceback
        fail(f"publishing to {topic} at {kafka.bootstrap_servers} failed: {exc or type(exc).__name__}")
    typer.echo(json.dumps({"topic": topic, "partition": partition, "offset": offset,
                           "submission_id": data["submission_id"], "piece_id": data["piece_id"]}))


@collaborator_app.command()
def token(
    collaborator_id: Annotated[str, typer.Argument(help="The collaborator_id the token is for.")],
    stack_env: StackEnv = DEFAULT_STACK_ENV,
) -> None:
    """Print the HTTP bearer token of a collaborator (from ANYAM_TOKEN_SECRET, or the stack file's)."""
    secret = os.environ.get("ANYAM_TOKEN_SECRET") or _read_stack_env(stack_env).get("ANYAM_TOKEN_SECRET")
    if not secret:
        fail(f"no token secret: set ANYAM_TOKEN_SECRET (the services' secret) or run `anyam up` so that "
             f"{stack_env} holds it")
    if not collaborator_id.strip() or collaborator_id != collaborator_id.strip():
        fail("give the collaborator_id without surrounding spaces, e.g. col_01J…")
    typer.echo(collaborator_token(secret, collaborator_id))


# --- helpers ------------------------------------------------------------------------------


def _signed_submission(data_file: str, key_file: Path) -> dict[str, Any]:
    private_key = _load_key(key_file)
    data = _read_data(data_file)
    data = signed(private_key, data)
    try:
        QcSubmitted.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        field = ".".join(str(part) for part in first["loc"]) or "data"
        problem = "is missing" if first["type"] == "missing" else f"is invalid: {first['msg']}"
        more = len(exc.errors()) - 1
        fail(f"{data_file}: `{field}` {problem}" + (f" (and {more} more)" if more else "")
             + "; fields: submission_id, piece_id, collaborator_id, result (passed|failed), inspector, "
             "inspected_at (RFC 3339 with an offset), defects (list)")
    if not verify(public_key_b64(private_key), data):
        fail(f"{data_file}: the data cannot be signed as sent (it holds text that is not valid Unicode)")
    return data


def _load_key(key_file: Path) -> Any:
    try:
        pem = key_file.read_bytes()
    except FileNotFoundError:
        fail(f"no key file {key_file}; make one with `anyam collaborator keygen --key-file {key_file}`")
    except OSError as exc:
        fail(f"cannot read {key_file}: {exc.strerror}")
    try:
        key = load_private_key(pem)
    except ValueError as exc:
        fail(f"{key_file} is not a key `anyam collaborator keygen` wrote ({exc})")
    if key_file.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        note(f"warning: {key_file} is readable by others; restrict it with `chmod 600 {key_file}`")
    return key


def _read_data(data_file: str) -> dict[str, Any]:
    try:
        text = sys.stdin.read() if data_file == "-" else Path(data_file).read_text(encoding="utf-8")
    except FileNotFoundError:
        fail(f"no data file {data_file}")
    except UnicodeDecodeError:
        fail(f"{data_file} is not UTF-8 text")
    except OSError as exc:
        fail(f"cannot read {data_file}: {exc.strerror}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"{data_file} is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
    if not isinstance(data, dict):
        fail(f"{data_file} holds a JSON {type(data).__name__}; it must be an object with the result's fields")
    return data


def _event_value(data: dict[str, Any]) -> bytes:
    try:
        return submission_event(data)
    except DecodeError as exc:
        fail(f"the submission would be refused as {exc.reason}: {exc.message}")


async def _produce(kafka: KafkaSettings, topic: str, key: str, value: bytes) -> tuple[int, int]:
    # The client's own error log would repeat, less clearly, what `publish` reports in one line.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    producer = AIOKafkaProducer(**kafka.producer_options())
    try:
        await producer.start()
        metadata = await producer.send_and_wait(
            topic, value, key=key.encode("utf-8"), headers=[(CONTENT_TYPE_HEADER, CONTENT_TYPE.encode())]
        )
    finally:
        await producer.stop()
    return metadata.partition, metadata.offset


def _read_stack_env(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    try:
        return stackfile.read_stack_env(path)
    except (StackError, OSError) as exc:
        fail(f"cannot read {path}: {getattr(exc, 'message', None) or exc}")
