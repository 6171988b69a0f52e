"""`.anyam/stack.env`: where a running stack is and how to stop it, as `KEY=value` lines."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

from anyam.stack.errors import StackError
from shared.settings import KafkaSettings

STACK_FILE_NAME = "stack.env"
DEFAULT_WORKDIR = Path(".anyam")

# Where to reach things: what clients and services read.
KAFKA_BOOTSTRAP = "ANYAM_KAFKA_BOOTSTRAP"
#: "kafka" (Apache Kafka) or "tansu": which broker the stack runs, so clients know its quirks.
KAFKA_ENGINE = "ANYAM_KAFKA_ENGINE"
TOPIC_PREFIX = "ANYAM_TOPIC_PREFIX"
#: How a client signs in to the broker: in the stack file, the auditor's credentials (every client of the
#: stack file reads; none writes); in `credentials/<principal>.env`, that principal's (SPEC §11).
KAFKA_SECURITY_PROTOCOL = "ANYAM_KAFKA_SECURITY_PROTOCOL"
KAFKA_SASL_MECHANISM = "ANYAM_KAFKA_SASL_MECHANISM"
KAFKA_SASL_USERNAME = "ANYAM_KAFKA_SASL_USERNAME"
KAFKA_SASL_PASSWORD = "ANYAM_KAFKA_SASL_PASSWORD"
KAFKA_SECURITY_KEYS = (KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD)
POSTGRES_URL = "ANYAM_POSTGRES_URL"
STAFF_TOKEN = "ANYAM_STAFF_TOKEN"
AUDITOR_TOKEN = "ANYAM_AUDITOR_TOKEN"
#: Secret from which collaborators' bearer tokens are derived (`anyam collaborator token`).
TOKEN_SECRET = "ANYAM_TOKEN_SECRET"
#: Enrollment's master key for residents' personal data (base64 of 32 bytes).
PERSONAL_DATA_KEY = "ANYAM_PERSONAL_DATA_KEY"
#: The services' public keys (`service:base64`, comma-separated): what readers trust (SPEC §11).
TRUST_ANCHORS = "ANYAM_TRUST_ANCHORS"
#: One service's own private key, given to that service's process only (never in the stack file).
SIGNING_KEY = "ANYAM_SIGNING_KEY"

# What `anyam up` started: what `anyam down` stops.
BROKER_PID = "ANYAM_STACK_BROKER_PID"
#: Every broker process, comma-separated (an Apache Kafka cluster has one per node).
BROKER_PIDS = "ANYAM_STACK_BROKER_PIDS"
#: What the broker is, in words (engine, version, nodes), for `anyam status` and logs.
BROKER_DESCRIPTION = "ANYAM_STACK_BROKER"
BROKER_LOG = "ANYAM_STACK_BROKER_LOG"
POSTGRES_PID = "ANYAM_STACK_POSTGRES_PID"
POSTGRES_PGDATA = "ANYAM_STACK_POSTGRES_PGDATA"
#: The foreground `anyam up` that supervises the stack (absent for a detached stack).
SUPERVISOR_PID = "ANYAM_STACK_SUPERVISOR_PID"
#: The folder of every principal's credentials file, `<principal>.env` (the folder and each file the
#: owner's alone): the services', the auditor's, admin's and each onboarded collaborator's.
CREDENTIALS = "ANYAM_STACK_CREDENTIALS"
CREDENTIALS_DIR = "credentials"

_KEY = re.compile(r"^[A-Z_][A-Z0-9_]*$")


def stack_file(workdir: Path | str = DEFAULT_WORKDIR) -> Path:
    """The stack file of a work directory."""
    return Path(workdir) / STACK_FILE_NAME


def read_stack_env(path: Path | str) -> dict[str, str]:
    """The `KEY=value` pairs of a stack file (blank lines and `#` comments skipped)."""
    values: dict[str, str] = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not _KEY.match(key.strip()):
            raise StackError(f"{path}:{number} is not a KEY=value line; remove the file if the stack is gone")
        values[key.strip()] = value.strip()
    return values


def write_stack_env(path: Path | str, values: Mapping[str, str], *, header: str | None = None) -> None:
    """Write `values` as `KEY=value` lines, atomically and readable by the owner only (it holds tokens)."""
    path = Path(path)
    lines = [f"# {line}" for line in (header or "").splitlines()]
    for key, value in values.items():
        value = str(value)
        if not _KEY.match(key) or "\n" in value or "\r" in value:
            raise ValueError(f"cannot write {key!r}={value!r} as a KEY=value line")
        lines.append(f"{key}={value}")
    path.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp creates the file 0600 before any secret is written; the rename makes
    # readers see either no file or the whole one.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            out.write("\n".join(lines) + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def stack_kafka_settings(env: Mapping[str, str]) -> KafkaSettings:
    """Kafka settings as a stack file (or a credentials file) gives them: the brokers, topic prefix,
    engine and who signs in (the stack file: the auditor).

    Every field explicit: the shell may carry another cluster's SASL/TLS settings.
    """
    return KafkaSettings(
        kafka_bootstrap=env[KAFKA_BOOTSTRAP],
        topic_prefix=env.get(TOPIC_PREFIX, ""),
        kafka_engine=env.get(KAFKA_ENGINE, "tansu"),
        kafka_security_protocol=env.get(KAFKA_SECURITY_PROTOCOL, "PLAINTEXT"),
        kafka_sasl_mechanism=env.get(KAFKA_SASL_MECHANISM),
        kafka_sasl_username=env.get(KAFKA_SASL_USERNAME),
        kafka_sasl_password=env.get(KAFKA_SASL_PASSWORD),
    )


def kafka_environment(kafka: KafkaSettings) -> dict[str, str]:
    """The `ANYAM_*` lines that give a process `kafka`'s broker, prefix, engine and sign-in."""
    env = {KAFKA_BOOTSTRAP: kafka.kafka_bootstrap, KAFKA_ENGINE: kafka.kafka_engine,
           KAFKA_SECURITY_PROTOCOL: kafka.kafka_security_protocol}
    if kafka.topic_prefix:
        env[TOPIC_PREFIX] = kafka.topic_prefix
    if kafka.kafka_security_protocol.startswith("SASL"):
        env[KAFKA_SASL_MECHANISM] = kafka.kafka_sasl_mechanism or ""
        env[KAFKA_SASL_USERNAME] = kafka.kafka_sasl_username or ""
        env[KAFKA_SASL_PASSWORD] = kafka.kafka_sasl_password.get_secret_value() if kafka.kafka_sasl_password else ""
    return env


def credentials_file(directory: Path | str, principal: str) -> Path:
    """Where a principal's credentials are kept in a stack's credentials folder."""
    return Path(directory) / f"{principal}.env"


def principal_kafka_settings(env: Mapping[str, str], principal: str) -> KafkaSettings:
    """The Kafka settings of `principal` on the stack `env` (a stack file's values) describes."""
    if CREDENTIALS not in env:
        raise StackError("this stack file names no credentials folder: start the stack again with `anyam up`")
    path = credentials_file(env[CREDENTIALS], principal)
    if not path.exists():
        raise StackError(f"the stack has no credentials for {principal!r} ({path} does not exist)")
    return stack_kafka_settings(read_stack_env(path))
