"""The broker is the first defence (SPEC §11): on Apache Kafka every client signs in, and each principal may do
only what shared/contracts/acls.py grants it. An attacker's plain producer, a collaborator writing `production`, a
service writing another's topic and an auditor writing anything are refused by the broker itself.

Runs on the session's local Apache Kafka cluster (tests/conftest.py), or on a one-node cluster of its own when
the session's broker is another (tansu has no SASL at all); without Java it fails, never skips. The last test
runs `anyam up`'s whole path: principals, credentials files, services under their own principals, and a
collaborator onboarded and publishing with one file.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    KafkaConnectionError,
    KafkaError,
    TopicAuthorizationFailedError,
)

from anyam.stack import stackfile as keys
from anyam.stack.kafka_admin import as_principal, describe_acls, new_password, upsert_scram_users
from anyam.stack.kafka_cluster import KafkaCluster
from anyam.stack.kafka_dist import java_available
from anyam.stack.lifecycle import RunningStack, start_stack
from anyam.stack.principals import credentials_folder, onboard_collaborator, secure_stack
from anyam.stack.provisioning import ensure_topics
from anyam.stack.services import SERVICES
from shared.contracts.acls import ADMIN, AUDITOR, SERVICE_PRINCIPALS, collaborator_bindings, stack_bindings
from shared.contracts.topics import ALL_TOPICS, EVENT_TOPICS, Topic, topic_name
from shared.kafka import end_offsets
from shared.settings import KafkaSettings
from shared.web.access import read_collaborator_token

REPO = Path(__file__).resolve().parents[2]
#: How long a refused or an accepted write may take to be told, at most.
DEADLINE = 30.0
#: What the broker answers a principal that may not write a topic (a producer that may write no topic at
#: all is refused its idempotent producer id first, on the cluster).
REFUSED = (TopicAuthorizationFailedError, ClusterAuthorizationFailedError)


@dataclass
class Secured:
    """Topics of this module's own prefix, with the stack's principals and their ACLs on the cluster."""

    admin: KafkaSettings
    principals: dict[str, KafkaSettings]
    workdir: Path

    def topic(self, topic: Topic) -> str:
        return topic_name(topic, self.admin.topic_prefix)


@pytest.fixture(scope="module")
async def cluster(broker) -> AsyncIterator[KafkaCluster]:
    """The session's Apache Kafka cluster, or one node of this module's own."""
    if isinstance(broker.embedded, KafkaCluster):
        yield broker.embedded
        return
    if not java_available():
        pytest.fail("the broker's ACLs need Apache Kafka, so Java 17+: install a JDK (the tests never skip them)")
    own = KafkaCluster(Path(tempfile.mkdtemp(prefix="anyam-acl-")), brokers=1)
    await own.start()
    try:
        yield own
    finally:
        await asyncio.to_thread(own.stop)


@pytest.fixture(scope="module")
async def secured(cluster: KafkaCluster, tmp_path_factory) -> Secured:
    """What `anyam up` applies (anyam.stack.principals.secure_stack), on fresh topics under a prefix."""
    admin = cluster.settings_for(topic_prefix=f"acl{uuid.uuid4().hex[:8]}-")
    await ensure_topics(admin, partitions=3)
    users = {principal: new_password() for principal in (*SERVICE_PRINCIPALS, AUDITOR)}
    # The session's cluster did not start with these users (a stack's does): add them as admin.
    await upsert_scram_users(admin, users)
    workdir = tmp_path_factory.mktemp("acl-stack")
    return Secured(admin, await secure_stack(admin, users, workdir), workdir)


async def write(kafka: KafkaSettings, topic: str, value: bytes = b"probe") -> int:
    """Produce one record as `kafka`'s principal and return its offset; what the broker refuses is raised."""
    producer = AIOKafkaProducer(**kafka.producer_options(), request_timeout_ms=10_000)
    try:
        await asyncio.wait_for(producer.start(), DEADLINE)
        metadata = await asyncio.wait_for(producer.send_and_wait(topic, value, key=b"probe"), DEADLINE)
        return metadata.offset
    finally:
        await producer.stop()


async def assert_refused(kafka: KafkaSettings, topic: str) -> None:
    with pytest.raises(REFUSED):
        await write(kafka, topic)


async def read(kafka: KafkaSettings, topic: str, wanted: bytes) -> bool:
    """Whether `kafka`'s principal reads a record holding `wanted` on `topic` (by assignment, as a replay does)."""
    consumer = AIOKafkaConsumer(**kafka.client_options(), group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await asyncio.wait_for(consumer.start(), DEADLINE)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        if not partitions:
            await consumer._client.force_metadata_update()  # noqa: SLF001 - a fresh client has no metadata yet
            partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            if any(record.value == wanted for records in batch.values() for record in records):
                return True
        return False
    finally:
        await consumer.stop()


async def records_on(admin: KafkaSettings, topic: str) -> int:
    return sum((await end_offsets(admin, [topic])).values())


# --- (a) a collaborator ---------------------------------------------------------------------------------


async def test_a_collaborator_writes_qc_submissions_and_is_refused_production(secured: Secured):
    env = {keys.CREDENTIALS: str(credentials_folder(secured.workdir))}
    onboarded = await onboard_collaborator(env, "col_01J0ACL0TEST")
    assert onboarded.principal == "collaborator-col-01j0acl0test"

    assert await write(onboarded.kafka, secured.topic(Topic.QC_SUBMISSIONS)) >= 0
    before = await records_on(secured.admin, secured.topic(Topic.PRODUCTION))
    # The forged `qc-passed` of issue 25, written with the collaborator's own credentials: refused.
    forged = json.dumps({"specversion": "1.0", "type": "qc-passed", "id": str(uuid.uuid4())}).encode()
    with pytest.raises(REFUSED):
        await write(onboarded.kafka, secured.topic(Topic.PRODUCTION), forged)
    for topic in (Topic.ENROLLMENT, Topic.PAYOUT, Topic.DEAD_LETTERS):
        await assert_refused(onboarded.kafka, secured.topic(topic))
    assert await records_on(secured.admin, secured.topic(Topic.PRODUCTION)) == before


# --- (b) a service --------------------------------------------------------------------------------------


async def test_the_production_service_writes_its_own_topic_and_is_refused_payout(secured: Secured):
    production = secured.principals["production"]
    assert await write(production, secured.topic(Topic.PRODUCTION)) >= 0
    assert await write(production, secured.topic(Topic.DEAD_LETTERS)) >= 0
    await assert_refused(production, secured.topic(Topic.PAYOUT))
    await assert_refused(production, secured.topic(Topic.ENROLLMENT))
    await assert_refused(production, secured.topic(Topic.QC_SUBMISSIONS))


@pytest.mark.parametrize("service", SERVICE_PRINCIPALS)
async def test_each_service_writes_only_its_own_topic_and_dead_letters(secured: Secured, service: str):
    kafka = secured.principals[service]
    allowed = {topic for topic in ALL_TOPICS
               if any(b.operation == "Write" and b.name == secured.topic(topic)
                      for b in stack_bindings(secured.admin.topic_prefix) if b.principal == service)}
    assert Topic(service) in allowed
    for topic in ALL_TOPICS:
        if topic in allowed:
            assert await write(kafka, secured.topic(topic)) >= 0, topic
        else:
            await assert_refused(kafka, secured.topic(topic))


# --- (c) anonymous and wrong passwords --------------------------------------------------------------------


async def test_an_anonymous_client_cannot_produce(secured: Secured):
    anonymous = KafkaSettings(kafka_bootstrap=secured.admin.kafka_bootstrap, kafka_security_protocol="PLAINTEXT",
                              kafka_engine="kafka")
    started = time.monotonic()
    with pytest.raises((KafkaConnectionError, KafkaError, TimeoutError)):
        await write(anonymous, secured.topic(Topic.PRODUCTION))
    assert time.monotonic() - started < DEADLINE + 5


async def test_a_wrong_password_cannot_sign_in(secured: Secured):
    impostor = as_principal(secured.admin, "production", "not-the-password")
    with pytest.raises((KafkaConnectionError, KafkaError, TimeoutError)):
        await write(impostor, secured.topic(Topic.PRODUCTION))


# --- (d) the auditor ---------------------------------------------------------------------------------------


async def test_the_auditor_reads_the_event_topics_and_writes_none(secured: Secured):
    auditor = secured.principals[AUDITOR]
    for topic in EVENT_TOPICS:
        marker = f"audit-{uuid.uuid4().hex}".encode()
        await write(secured.admin, secured.topic(topic), marker)
        assert await read(auditor, secured.topic(topic), marker), topic
    for topic in ALL_TOPICS:
        await assert_refused(auditor, secured.topic(topic))


async def test_every_broker_enforces_exactly_the_tables_acls(secured: Secured):
    # This module alone adds ACLs to the session's cluster: the services' and the auditor's, and collaborators'.
    for node, acls in (await describe_acls(secured.admin)).items():
        assert {acl for acl in acls if not acl.principal.startswith("collaborator-")} == stack_bindings(
            secured.admin.topic_prefix), node


# --- `anyam up`'s whole path ----------------------------------------------------------------------------


def anyam(*args: str, workdir: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # The session's broker and sign-in (its admin) must not reach the command: it reads the files it is given.
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ANYAM_KAFKA_", "ANYAM_TOPIC_PREFIX"))}
    return subprocess.run([sys.executable, "-m", "anyam.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=180, env={**base, "COLUMNS": "200", **(env or {}), "ANYAM_WORKDIR": str(workdir)})


@pytest.fixture(scope="module")
async def stack(tmp_path_factory) -> AsyncIterator[RunningStack]:
    if not java_available():
        pytest.fail("the broker's ACLs need Apache Kafka, so Java 17+: install a JDK (the tests never skip them)")
    running = await start_stack(Path(tempfile.mkdtemp(prefix="anyam-acl-up-")) / ".anyam", engine="kafka", brokers=1,
                                topic_prefix="up-")
    try:
        yield running
    finally:
        await asyncio.to_thread(running.stop)


async def test_anyam_up_runs_each_service_as_its_own_principal_and_onboards_a_collaborator_in_one_command(
    stack: RunningStack, tmp_path
):
    env = stack.env
    folder = Path(env[keys.CREDENTIALS])
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for principal in (ADMIN, *SERVICE_PRINCIPALS, AUDITOR):
        path = keys.credentials_file(folder, principal)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert keys.read_stack_env(path)[keys.KAFKA_SASL_USERNAME] == principal
    # The stack file signs in as the auditor: it reads, and writes nothing.
    assert (env[keys.KAFKA_SECURITY_PROTOCOL], env[keys.KAFKA_SASL_MECHANISM], env[keys.KAFKA_SASL_USERNAME]) == (
        "SASL_PLAINTEXT", "SCRAM-SHA-512", AUDITOR)
    auditor = keys.stack_kafka_settings(env)
    await assert_refused(auditor, topic_name(Topic.QC_SUBMISSIONS, "up-"))
    # Each service process signs in as itself, never as admin or the auditor.
    for spec in SERVICES:
        if spec.name in stack.services:
            seen = psutil.Process(stack.services[spec.name].pid).environ()
            assert seen[keys.KAFKA_SASL_USERNAME] == spec.name
            assert seen[keys.KAFKA_SASL_PASSWORD] == keys.read_stack_env(
                keys.credentials_file(folder, spec.name))[keys.KAFKA_SASL_PASSWORD]
    # The broker enforces the table, for the stack's prefix.
    admin = keys.principal_kafka_settings(env, ADMIN)
    for acls in (await describe_acls(admin)).values():
        assert acls == stack_bindings("up-")

    # Production registers a collaborator; one command gives it everything it needs.
    key_file = tmp_path / "acme.key"
    keygen = anyam("collaborator", "keygen", "--key-file", str(key_file), workdir=stack.workdir)
    assert keygen.returncode == 0, keygen.stderr
    async with httpx.AsyncClient(base_url=env["ANYAM_PRODUCTION_URL"], timeout=30,
                                 headers={"Authorization": f"Bearer {env[keys.STAFF_TOKEN]}"}) as staff:
        response = await staff.post("/collaborators", json={"name": "PT Uji ACL", "public_key": keygen.stdout.strip()},
                                    headers={"Idempotency-Key": uuid.uuid4().hex})
        assert response.status_code == 201, response.text
        collaborator_id = response.json()["collaborator_id"]
    unknown = anyam("collaborator", "onboard", "col_01J0NOBODY000000000000000", workdir=stack.workdir)
    assert unknown.returncode == 1 and "register it first" in unknown.stderr, unknown.stderr

    onboard = anyam("collaborator", "onboard", collaborator_id, workdir=stack.workdir)
    assert onboard.returncode == 0, onboard.stdout + onboard.stderr
    path = keys.credentials_file(folder, f"collaborator-{collaborator_id.lower().replace('_', '-')}")
    assert str(path) in onboard.stdout.replace("\n", "")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    given = keys.read_stack_env(path)
    assert given[keys.KAFKA_BOOTSTRAP] == env[keys.KAFKA_BOOTSTRAP] and given[keys.TOPIC_PREFIX] == "up-"
    assert read_collaborator_token(env[keys.TOKEN_SECRET], given["ANYAM_COLLABORATOR_TOKEN"])[0] == collaborator_id
    assert given[keys.KAFKA_SASL_PASSWORD] not in onboard.stdout + onboard.stderr
    async with httpx.AsyncClient(base_url=given["ANYAM_PRODUCTION_URL"], timeout=30, headers={
            "Authorization": f"Bearer {given['ANYAM_COLLABORATOR_TOKEN']}"}) as collaborator:
        assert (await collaborator.get(f"/collaborators/{collaborator_id}/rejections")).status_code == 200
    assert acls_of(await describe_acls(admin), given[keys.KAFKA_SASL_USERNAME]) == collaborator_bindings(
        collaborator_id, "up-")

    # With that file alone it publishes a signed result; with the stack file (the auditor's) it cannot.
    result = tmp_path / "result.json"
    result.write_text(json.dumps({
        "submission_id": "sub_acl_1", "piece_id": "pc_01J0ACL", "collaborator_id": collaborator_id,
        "result": "passed", "inspector": "QC-07", "inspected_at": "2024-03-21T10:00:00+07:00", "defects": []}))
    published = anyam("collaborator", "publish", str(result), "--key-file", str(key_file), "--stack-env", str(path),
                      workdir=stack.workdir)
    assert published.returncode == 0, published.stderr
    assert json.loads(published.stdout)["topic"] == "up-qc-submissions"
    as_auditor = anyam("collaborator", "publish", str(result), "--key-file", str(key_file),
                       "--stack-env", str(stack.path), workdir=stack.workdir)
    assert as_auditor.returncode == 1 and "does not let auditor write" in as_auditor.stderr, as_auditor.stderr


def acls_of(views: dict[int, set], principal: str) -> set:
    (view,) = {frozenset(acl for acl in acls if acl.principal == principal) for acls in views.values()}
    return set(view)
