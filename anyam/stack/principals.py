"""The embedded stack's principals: their ACLs on the broker, and a credentials file for each.

`anyam up` on Apache Kafka starts the cluster with a SCRAM user per service and one for auditors
(`anyam.stack.kafka_cluster`), then `secure_stack` applies the ACLs of shared/contracts/acls.py and writes
`<workdir>/credentials/<principal>.env` (folder 0700, files 0600) for admin, each service and the
auditor. Each service process is started with its own file's settings (`anyam.stack.services`); the
stack file carries the auditor's. `onboard_collaborator` adds one collaborator: a SCRAM user, its ACLs,
and one file with everything it needs (bootstrap, user, password, its HTTP token).

tansu has no SASL and no ACLs: there the files carry the address only, and every client may do anything.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from anyam.stack import stackfile as keys
from anyam.stack.kafka_admin import as_principal, create_acls, new_password, upsert_scram_users, wait_until_applied
from shared.contracts.acls import ADMIN, STACK_PRINCIPALS, collaborator_bindings, collaborator_principal, stack_bindings
from shared.settings import KafkaSettings
from shared.web.access import collaborator_token

#: What an onboarded collaborator's file adds to its Kafka settings: who it is, its bearer token for
#: production's HTTP API (SPEC §10) and where that API answers.
COLLABORATOR_ID = "ANYAM_COLLABORATOR_ID"
COLLABORATOR_TOKEN = "ANYAM_COLLABORATOR_TOKEN"


def credentials_folder(workdir: Path | str) -> Path:
    """The stack's credentials folder, created readable by its owner only."""
    folder = Path(workdir) / keys.CREDENTIALS_DIR
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    return folder


def write_credentials(folder: Path, principal: str, values: Mapping[str, str]) -> Path:
    """Write one principal's `KEY=value` file (0600, atomically)."""
    path = keys.credentials_file(folder, principal)
    keys.write_stack_env(path, values, header=f"Kafka credentials of {principal!r}, written by anyam; keep secret.\n"
                                              f"Load with: set -a; . {path}; set +a")
    return path


async def secure_stack(admin: KafkaSettings, users: Mapping[str, str], workdir: Path | str) -> dict[str, KafkaSettings]:
    """Apply the stack's ACLs as `admin` (settings with the stack's topic prefix) and write a credentials
    file for each principal of `STACK_PRINCIPALS` (`users`: their passwords; unused on tansu).

    Returns each principal's settings. Returns once every broker enforces the ACLs.
    """
    folder = credentials_folder(workdir)
    if admin.on_tansu:
        principals = {principal: admin for principal in STACK_PRINCIPALS}
    else:
        bindings = stack_bindings(admin.topic_prefix)
        await create_acls(admin, bindings)
        await wait_until_applied(admin, bindings)
        principals = {ADMIN: admin} | {p: as_principal(admin, p, users[p]) for p in STACK_PRINCIPALS if p != ADMIN}
    for principal, settings in principals.items():
        write_credentials(folder, principal, keys.kafka_environment(settings))
    return principals


@dataclass(frozen=True)
class Onboarded:
    """A collaborator given access: its principal, Kafka settings and the file that holds everything."""

    principal: str
    kafka: KafkaSettings
    path: Path


async def onboard_collaborator(env: Mapping[str, str], collaborator_id: str) -> Onboarded:
    """Give `collaborator_id` a Kafka principal of its own on the stack `env` (a stack file's values)
    describes: a SCRAM user with a new password and Write on `qc-submissions` only, then write
    `credentials/collaborator-<id>.env` with the bootstrap address, the user, its password and the
    collaborator's HTTP token. Again for the same collaborator: a new password (the old one stops working).

    Returns once every broker lets the collaborator sign in and enforces its ACLs.
    """
    principal = collaborator_principal(collaborator_id)
    admin = keys.principal_kafka_settings(env, ADMIN)
    if admin.on_tansu:
        kafka = admin
    else:
        kafka = as_principal(admin, principal, new_password())
        assert kafka.kafka_sasl_password is not None
        bindings = collaborator_bindings(collaborator_id, admin.topic_prefix)
        await upsert_scram_users(admin, {principal: kafka.kafka_sasl_password.get_secret_value()})
        await create_acls(admin, bindings)
        await wait_until_applied(admin, bindings, {principal: kafka})
    values = {**keys.kafka_environment(kafka), COLLABORATOR_ID: collaborator_id}
    if keys.TOKEN_SECRET in env:
        values[COLLABORATOR_TOKEN] = collaborator_token(env[keys.TOKEN_SECRET], collaborator_id)
    if "ANYAM_PRODUCTION_URL" in env:
        values["ANYAM_PRODUCTION_URL"] = env["ANYAM_PRODUCTION_URL"]
    path = write_credentials(Path(env[keys.CREDENTIALS]), principal, values)
    return Onboarded(principal, kafka, path)
