"""Creating SCRAM users and ACLs on Apache Kafka from Python, as the cluster's `admin`.

aiokafka (the runtime's Kafka client) carries the CreateAcls and DescribeAcls requests but no admin
call for them, and nothing for AlterUserScramCredentials; the few lines of wire protocol are here, on
aiokafka's own request framing. A SCRAM credential is computed client-side (RFC 5802: the password
salted with PBKDF2-HMAC-SHA-512), so the password itself never crosses the wire.

Writes go to the controller quorum and reach each broker with its metadata a moment later:
`wait_until_applied` returns once every broker enforces them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import time
from collections.abc import Iterable, Mapping

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.protocol.admin import CreateAclsRequest_v1, DescribeAclsRequest_v1
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import CompactArray, CompactBytes, CompactString, Int8, Int16, Int32, Schema, TaggedFields
from pydantic import SecretStr

from anyam.stack.errors import StackError
from anyam.stack.processes import POLL_INTERVAL
from shared.contracts.acls import LITERAL, MECHANISM, PREFIX, AclBinding
from shared.settings import KafkaSettings

#: Kafka's codes (org.apache.kafka.common.resource / acl) for what the table names.
_RESOURCE_TYPES = {"topic": 2, "group": 3, "cluster": 4}
_PATTERN_TYPES = {LITERAL: 3, PREFIX: 4}
_OPERATIONS = {"Read": 3, "Write": 4, "Describe": 8, "IdempotentWrite": 12}
_ANY, _ALLOW = 1, 3
#: SCRAM-SHA-512 in AlterUserScramCredentials; its smallest iteration count is Kafka's default.
_SCRAM_SHA_512, SCRAM_ITERATIONS = 2, 4096


class KafkaAdminFailed(StackError):
    """The cluster refused or did not apply a user or an ACL."""


# --- AlterUserScramCredentials v0 (API key 51, flexible) -------------------------------------------


class _AlterUserScramCredentialsResponse_v0(Response):
    API_KEY = 51
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("results", CompactArray(
            ("user", CompactString("utf-8")), ("error_code", Int16), ("error_message", CompactString("utf-8")),
            ("tags", TaggedFields))),
        ("tags", TaggedFields),
    )


class _AlterUserScramCredentialsRequest_v0(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 51
    API_VERSION = 0
    RESPONSE_TYPE = _AlterUserScramCredentialsResponse_v0
    SCHEMA = Schema(
        ("deletions", CompactArray(("name", CompactString("utf-8")), ("mechanism", Int8), ("tags", TaggedFields))),
        ("upsertions", CompactArray(
            ("name", CompactString("utf-8")), ("mechanism", Int8), ("iterations", Int32),
            ("salt", CompactBytes), ("salted_password", CompactBytes), ("tags", TaggedFields))),
        ("tags", TaggedFields),
    )


class _AlterUserScramCredentials(Request[_AlterUserScramCredentialsRequest_v0]):
    API_KEY = 51

    def __init__(self, upsertions: list[tuple]) -> None:
        self._upsertions = upsertions

    def build(self, request_struct_class: type[_AlterUserScramCredentialsRequest_v0]):
        return request_struct_class([], self._upsertions, {})


class _CreateAcls(Request[CreateAclsRequest_v1]):
    API_KEY = 30

    def __init__(self, creations: list[tuple]) -> None:
        self._creations = creations

    def build(self, request_struct_class: type[CreateAclsRequest_v1]) -> CreateAclsRequest_v1:
        return request_struct_class(self._creations)


class _DescribeAllAcls(Request[DescribeAclsRequest_v1]):
    API_KEY = 29

    def build(self, request_struct_class: type[DescribeAclsRequest_v1]) -> DescribeAclsRequest_v1:
        return request_struct_class(_ANY, None, _ANY, None, None, _ANY, _ANY)


def salted_password(password: str, salt: bytes, iterations: int = SCRAM_ITERATIONS) -> bytes:
    """SCRAM's SaltedPassword = Hi(password, salt, i) for SHA-512 (RFC 5802 §2.2: PBKDF2 with HMAC)."""
    return hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)


def as_principal(kafka: KafkaSettings, principal: str, password: str) -> KafkaSettings:
    """`kafka` (same cluster, prefix and engine) signed in as another SCRAM-SHA-512 user."""
    return kafka.model_copy(update={
        "kafka_security_protocol": "SASL_PLAINTEXT" if kafka.kafka_security_protocol in ("PLAINTEXT", "SASL_PLAINTEXT")
        else "SASL_SSL",
        "kafka_sasl_mechanism": MECHANISM, "kafka_sasl_username": principal,
        "kafka_sasl_password": SecretStr(password),
    })


def new_password() -> str:
    """A random password (256 bits, URL-safe: fits in properties files, JAAS strings and env files)."""
    return secrets.token_urlsafe(32)


# --- the calls ---------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _admin(kafka: KafkaSettings, timeout: float):
    admin = AIOKafkaAdminClient(**kafka.client_options(), request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout)
        yield admin
    except (TimeoutError, KafkaError, OSError) as err:
        raise KafkaAdminFailed(f"the Kafka admin request to {kafka.bootstrap_servers} failed: {err!r}") from err
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


async def upsert_scram_users(kafka: KafkaSettings, users: Mapping[str, str], *, timeout: float = 30.0) -> None:
    """Create (or give a new password to) each SCRAM-SHA-512 user of `users` (name → password)."""
    upsertions: list[tuple[str, int, int, bytes, bytes, dict[int, bytes]]] = []  # the last: tagged fields
    for name, password in users.items():
        salt = secrets.token_bytes(32)
        upsertions.append((name, _SCRAM_SHA_512, SCRAM_ITERATIONS, salt, salted_password(password, salt), {}))
    async with _admin(kafka, timeout) as admin:
        response = await admin._send_request(_AlterUserScramCredentials(upsertions))  # noqa: SLF001
    failed = [f"{user}: {message or code}" for user, code, message, _ in response.results if code != 0]
    if failed:
        raise KafkaAdminFailed(f"the cluster refused SCRAM users: {'; '.join(failed)}")


async def create_acls(kafka: KafkaSettings, bindings: Iterable[AclBinding], *, timeout: float = 30.0) -> None:
    """Add an ALLOW ACL for each binding (adding one that exists is harmless)."""
    creations = [
        (_RESOURCE_TYPES[b.resource_type], b.name, _PATTERN_TYPES[b.pattern], f"User:{b.principal}", "*",
         _OPERATIONS[b.operation], _ALLOW)
        for b in sorted(bindings)
    ]
    if not creations:
        return
    async with _admin(kafka, timeout) as admin:
        response = await admin._send_request(_CreateAcls(creations))  # noqa: SLF001
    failed = [f"{message or code}" for code, message in response.creation_responses if code != 0]
    if failed:
        raise KafkaAdminFailed(f"the cluster refused {len(failed)} ACL(s): {failed[0]}")


def _bindings_of(response: Response) -> set[AclBinding]:
    resource_types = {code: name for name, code in _RESOURCE_TYPES.items()}
    patterns = {code: name for name, code in _PATTERN_TYPES.items()}
    operations = {code: name for name, code in _OPERATIONS.items()}
    found = set()
    for resource_type, name, pattern, acls in response.resources:
        for principal, _host, operation, permission in acls:
            if permission == _ALLOW and resource_type in resource_types and operation in operations:
                found.add(AclBinding(principal.removeprefix("User:"), resource_types[resource_type], name,
                                     patterns.get(pattern, str(pattern)), operations[operation]))
    return found


async def describe_acls(kafka: KafkaSettings, *, timeout: float = 30.0) -> dict[int, set[AclBinding]]:
    """Every broker's view of the ALLOW ACLs it enforces, by node id."""
    async with _admin(kafka, timeout) as admin:
        nodes = [broker.nodeId for broker in admin._client.cluster.brokers()]  # noqa: SLF001
        views = {}
        for node in nodes:
            response = await admin._send_request_to_node(node, _DescribeAllAcls())  # noqa: SLF001
            if response.error_code:
                raise KafkaAdminFailed(f"node {node} could not list its ACLs: {response.error_message}")
            views[node] = _bindings_of(response)
        return views


async def authenticates(kafka: KafkaSettings, *, timeout: float = 5.0) -> bool:
    """Whether `kafka`'s principal can sign in to every broker of the cluster now."""
    try:
        async with _admin(kafka, timeout) as admin:
            brokers = [f"{b.host}:{b.port}" for b in admin._client.cluster.brokers()]  # noqa: SLF001
    except KafkaAdminFailed:
        return False
    for address in brokers:
        try:
            async with _admin(kafka.model_copy(update={"kafka_bootstrap": address}), timeout):
                pass
        except KafkaAdminFailed:
            return False
    return True


async def wait_until_applied(
    admin: KafkaSettings,
    bindings: Iterable[AclBinding] = (),
    users: Mapping[str, KafkaSettings] | None = None,
    *,
    timeout: float = 60.0,
) -> None:
    """Return once every broker enforces `bindings` and lets each of `users` (name → its settings) sign in."""
    wanted = set(bindings)
    pending_users = dict(users or {})
    deadline = time.monotonic() + timeout
    while True:
        missing: set[AclBinding] = set()
        if wanted:
            for view in (await describe_acls(admin)).values():
                missing |= wanted - view
        for name, settings in list(pending_users.items()):
            if await authenticates(settings):
                del pending_users[name]
        if not missing and not pending_users:
            return
        if time.monotonic() > deadline:
            raise KafkaAdminFailed(
                f"the cluster did not apply {len(missing)} ACL(s) and user(s) {sorted(pending_users)} "
                f"within {timeout:g}s"
            )
        await asyncio.sleep(POLL_INTERVAL)
