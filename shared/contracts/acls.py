"""Who may do what on Anyam's Kafka cluster (SPEC §11, defence 1): the one table of principals and ACLs.

Every client authenticates (SASL/SCRAM-SHA-512) as a principal, and the broker's authorizer allows
exactly what this table grants; anything not granted is refused (`allow.everyone.if.no.acl.found=false`):

- each service writes its own topic (its outbox relay), `dead-letters` when it has consumers that may
  refuse records, and reads what its consumers read, under its own consumer groups;
- a collaborator (`collaborator-<collaborator_id>`) writes `qc-submissions` and nothing else;
- an auditor reads the four event topics (the audit trail) and writes nothing;
- `admin` is the cluster's super user: it provisions topics, users and these ACLs, and the brokers
  use it between themselves. No service or collaborator ever holds its password.

The embedded cluster (`anyam up --broker kafka`, the tests) applies `stack_bindings(prefix)`;
deploy/compose.yaml and deploy/k8s/kafka-users.yaml declare the same, and tests/unit/test_deploy.py
compares them with this table. Producers are idempotent on Kafka: since Kafka 2.8 (KIP-679) that
needs Write on a topic, not IdempotentWrite on the cluster, so no cluster grant is made.

Resource names are templates: `{prefix}` is the deployment's topic prefix (`ANYAM_TOPIC_PREFIX`).
The payout service's consumer groups carry the prefix (services/payout/app.py), production's do not
(services/production); tests/unit/test_deploy.py checks these names against the services' apps.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from shared.contracts.topics import EVENT_TOPICS, Topic

#: The super user: provisioning only (and the brokers' own connections to each other).
ADMIN = "admin"
#: Auditors (SPEC §10): read the audit trail, never write.
AUDITOR = "auditor"
#: One principal per service, named as the service.
SERVICE_PRINCIPALS = ("enrollment", "production", "payout")
#: Every principal `anyam up` creates (collaborators are onboarded one by one later).
STACK_PRINCIPALS = (ADMIN, *SERVICE_PRINCIPALS, AUDITOR)
COLLABORATOR_PREFIX = "collaborator-"
#: The SASL mechanism every Anyam client uses on Apache Kafka.
MECHANISM = "SCRAM-SHA-512"

# Operations, resource types and pattern types as Strimzi's KafkaUser resources spell them.
READ, WRITE, DESCRIBE = "Read", "Write", "Describe"
TOPIC, GROUP = "topic", "group"
LITERAL, PREFIX = "literal", "prefix"

#: A principal name is a DNS label (Strimzi makes a Kubernetes resource of each user) of ASCII
#: lower-case letters, digits and dashes.
_PRINCIPAL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclass(frozen=True, order=True)
class Grant:
    """Operations allowed on one resource: a topic or consumer group, by literal name or name prefix."""

    resource_type: str
    name: str  # may hold `{prefix}`
    pattern: str
    operations: tuple[str, ...]


@dataclass(frozen=True, order=True)
class AclBinding:
    """One ALLOW ACL, as the broker stores it (host `*`)."""

    principal: str  # the user name, without `User:`
    resource_type: str
    name: str
    pattern: str
    operation: str


def _topic(topic: Topic, *operations: str) -> Grant:
    return Grant(TOPIC, "{prefix}" + topic.value, LITERAL, operations)


def _group(name: str, pattern: str = LITERAL) -> Grant:
    return Grant(GROUP, name, pattern, (DESCRIBE, READ))


#: What each principal of the stack may do (collaborators: `COLLABORATOR_GRANTS`; admin: everything).
GRANTS: Mapping[str, tuple[Grant, ...]] = {
    # Its outbox relay publishes its events; it consumes nothing.
    "enrollment": (_topic(Topic.ENROLLMENT, DESCRIBE, WRITE),),
    "production": (
        _topic(Topic.PRODUCTION, DESCRIBE, WRITE),
        _topic(Topic.DEAD_LETTERS, DESCRIBE, WRITE),
        # Who completed training, and collaborators' signed QC results.
        _topic(Topic.ENROLLMENT, DESCRIBE, READ),
        _topic(Topic.QC_SUBMISSIONS, DESCRIBE, READ),
        _group("production-trained-residents"),
        _group("production-qc-submissions"),
    ),
    "payout": (
        # It reads its own topic back: the ledger is a projection of the log, even of its own events.
        _topic(Topic.PAYOUT, DESCRIBE, READ, WRITE),
        _topic(Topic.DEAD_LETTERS, DESCRIBE, WRITE),
        # The ledger reads `production`; the dashboard's and the artisan pages' read models `enrollment` and
        # `production` too.
        _topic(Topic.PRODUCTION, DESCRIBE, READ),
        _topic(Topic.ENROLLMENT, DESCRIBE, READ),
        _group("{prefix}payout-ledger"),
        _group("{prefix}payout-dashboard"),
        _group("{prefix}payout-artisan-pages"),
    ),
    # The audit trail, read by assignment (anyam/audit/replay.py uses no group); an auditor's own
    # tools may use groups named `<prefix>audit-…`, which touch no service's offsets.
    AUDITOR: (
        *(_topic(topic, DESCRIBE, READ) for topic in EVENT_TOPICS),
        _group("{prefix}audit-", PREFIX),
    ),
}
#: A collaborator company publishes its signed QC results, and nothing else.
COLLABORATOR_GRANTS: tuple[Grant, ...] = (_topic(Topic.QC_SUBMISSIONS, DESCRIBE, WRITE),)


def collaborator_principal(collaborator_id: str) -> str:
    """The Kafka principal of a collaborator: `collaborator-<collaborator_id>` as a DNS label.

    Collaborator ids are ULIDs behind `col_` (`col_01J…`); ULIDs ignore case, so lower-casing and `_`→`-`
    lose nothing, and the name is valid for Strimzi's KafkaUser resources too.
    """
    principal = COLLABORATOR_PREFIX + collaborator_id.strip().lower().replace("_", "-")
    check_principal(principal)
    return principal


def check_principal(principal: str) -> str:
    """`principal` if it is a valid principal name; `ValueError` otherwise."""
    if not _PRINCIPAL.match(principal):
        raise ValueError(f"{principal!r} is not a valid principal name (a DNS label: a-z, 0-9 and '-', "
                         "at most 63 characters)")
    return principal


def bindings_of(principal: str, grants: Iterable[Grant], prefix: str = "") -> set[AclBinding]:
    """The ACLs that give `principal` `grants`, with the deployment's topic `prefix` filled in."""
    return {
        AclBinding(principal, grant.resource_type, grant.name.format(prefix=prefix), grant.pattern, operation)
        for grant in grants
        for operation in grant.operations
    }


def stack_bindings(prefix: str = "") -> set[AclBinding]:
    """Every ACL of the services' and the auditor's principals, for topics under `prefix`."""
    return set().union(*(bindings_of(principal, grants, prefix) for principal, grants in GRANTS.items()))


def collaborator_bindings(collaborator_id: str, prefix: str = "") -> set[AclBinding]:
    """The ACLs of one collaborator's principal."""
    return bindings_of(collaborator_principal(collaborator_id), COLLABORATOR_GRANTS, prefix)
