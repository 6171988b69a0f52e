"""deploy/ says only what the code can do: its topics are SPEC §4's, its settings and commands exist.

Reads deploy/compose.yaml, every manifest in deploy/k8s/, deploy/Dockerfile and the files beside them,
and compares them with the code: `shared.contracts.topics` (the topics), the settings classes of every
service (the `ANYAM_*` names), `anyam.stack.services.SERVICES` and the `anyam` typer app (the
commands). No Docker engine or cluster is needed; what only one can check is listed in
deploy/README.md.
"""

from __future__ import annotations

import base64
import importlib
import inspect
import json
import re
import shlex
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from pydantic_settings import BaseSettings

from anyam.stack.kafka_cluster import (
    AUTHORIZATION_SETTINGS,
    BROKER_PROPERTIES,
    EMBEDDED_SETTINGS,
    SECURITY,
    cluster_settings,
    read_properties,
)
from anyam.stack.kafka_dist import pinned_version
from anyam.stack.provisioning import KAFKA_EVENT_TOPIC_CONFIG
from anyam.stack.services import PRIVATE_SETTINGS, SERVICES, service_is_built
from shared.contracts.acls import (
    ADMIN,
    COLLABORATOR_GRANTS,
    GRANTS,
    LITERAL,
    PREFIX,
    SERVICE_PRINCIPALS,
    AclBinding,
    bindings_of,
    stack_bindings,
)
from shared.contracts.topics import ALL_TOPICS, EVENT_TOPICS, Topic
from shared.service import ServiceSettings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
SERVICE_NAMES = {spec.name for spec in SERVICES}
DATABASES = {spec.name: spec.database for spec in SERVICES}

#: SPEC §4 and the issue: every topic on three brokers, two of them in sync before a write counts.
REPLICATION_FACTOR = 3
MIN_INSYNC_REPLICAS = 2
PAYOUT_REPLICAS = 2
UNLIMITED = -1

ANYAM_NAME = re.compile(r"\bANYAM_[A-Z0-9_]+\b")


# ---------------------------------------------------------------------------------------------
# What the code says


def settings_classes_of(service: str) -> list[type[BaseSettings]]:
    """The settings classes a service's composition root (`services/<name>/app.py`) defines."""
    module = importlib.import_module(f"services.{service}.app")
    classes = [
        obj for _, obj in inspect.getmembers(module, inspect.isclass)
        if issubclass(obj, BaseSettings) and obj.__module__ == module.__name__
    ]
    assert classes, f"services/{service}/app.py defines no settings class"
    return classes


def env_names(settings: type[BaseSettings]) -> set[str]:
    prefix = settings.model_config.get("env_prefix", "")
    return {f"{prefix}{name}".upper() for name in settings.model_fields}


def required_env_names(settings: type[BaseSettings]) -> set[str]:
    prefix = settings.model_config.get("env_prefix", "")
    return {f"{prefix}{name}".upper() for name, field in settings.model_fields.items() if field.is_required()}


def built_services() -> list[str]:
    return sorted(name for name in SERVICE_NAMES if service_is_built(name))


@cache
def known_settings() -> frozenset[str]:
    """Every `ANYAM_*` name some process of ours reads."""
    names = env_names(ServiceSettings)
    for service in built_services():
        for settings in settings_classes_of(service):
            names |= env_names(settings)
    return frozenset(names)


def required_settings(service: str) -> set[str]:
    return set().union(*(required_env_names(s) for s in settings_classes_of(service)))


# ---------------------------------------------------------------------------------------------
# What deploy/ says


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def compose_services() -> dict[str, dict[str, Any]]:
    """The compose services that run the Anyam image, by the service they serve."""
    found = {}
    for name, service in compose()["services"].items():
        if "build" in service or str(service.get("image", "")).startswith("${SERVICE_IMAGE"):
            found[name] = service
    return found


def manifest_files() -> list[Path]:
    return sorted(K8S.glob("*.yaml"))


@cache
def manifests() -> tuple[dict[str, Any], ...]:
    documents = []
    for path in manifest_files():
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                document["__file__"] = path.name
                documents.append(document)
    return tuple(documents)


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [m for m in manifests() if m["kind"] == kind]


def named(kind: str, name: str) -> dict[str, Any]:
    matches = [m for m in of_kind(kind) if m["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name!r}, found {len(matches)}"
    return matches[0]


def deployments() -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m for m in of_kind("Deployment")}


def container_of(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, deployment["metadata"]["name"]
    return containers[0]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        whole = pending + stripped
        pending = ""
        keyword, _, arguments = whole.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def secrets_example() -> dict[str, str]:
    pairs = {}
    for line in (DEPLOY / "secrets.env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value
    return pairs


# ---------------------------------------------------------------------------------------------
# Parsing


def test_compose_and_every_manifest_parse() -> None:
    assert isinstance(compose(), dict) and compose()["services"]
    assert manifest_files(), "deploy/k8s holds no manifests"
    for document in manifests():
        needed = {"apiVersion", "kind"} | ({"metadata"} if document["kind"] != "Kustomization" else set())
        assert needed <= document.keys(), document["__file__"]
    # Everything of ours lives in one namespace.
    assert {m["metadata"].get("namespace", "anyam") for m in manifests() if m["kind"] != "Kustomization"} == {
        "anyam"
    }


# ---------------------------------------------------------------------------------------------
# Topics


def compose_topic_commands() -> list[dict[str, Any]]:
    """The `kafka-topics.sh --create` calls of the provisioning container, as options."""
    provisioner = compose()["services"]["kafka-topics"]
    script = "\n".join(provisioner["command"]).replace("$$", "$")  # compose's escape for a literal $
    calls = []
    for line in script.splitlines():
        if "kafka-topics.sh" not in line or "--create" not in line:
            continue
        tokens = shlex.split(line)
        options: dict[str, Any] = {"config": {}}
        for flag, value in zip(tokens, tokens[1:], strict=False):
            if flag == "--config":
                key, _, setting = value.partition("=")
                options["config"][key] = setting
            elif flag in ("--topic", "--partitions", "--replication-factor"):
                options[flag.lstrip("-")] = value
        calls.append(options)
    return calls


def test_compose_provisions_exactly_the_spec_topics_with_their_durability() -> None:
    calls = compose_topic_commands()
    prefix = "${ANYAM_TOPIC_PREFIX}"
    assert all(call["topic"].startswith(prefix) for call in calls), "every topic name must carry the prefix"
    by_topic = {call["topic"].removeprefix(prefix): call for call in calls}
    assert len(by_topic) == len(calls), "a topic is created twice"
    assert set(by_topic) == {topic.value for topic in ALL_TOPICS}

    for name, call in by_topic.items():
        assert int(call["replication-factor"]) == REPLICATION_FACTOR, name
        assert int(call["config"]["min.insync.replicas"]) == MIN_INSYNC_REPLICAS, name
        assert int(call["partitions"]) >= 1, name
    for topic in EVENT_TOPICS:
        config = by_topic[topic.value]["config"]
        assert int(config["retention.ms"]) == UNLIMITED, topic
        assert int(config.get("retention.bytes", UNLIMITED)) == UNLIMITED, topic
        # Stamped as the embedded cluster stamps them, so a cut by recording time works the same.
        assert config["message.timestamp.type"] == KAFKA_EVENT_TOPIC_CONFIG["message.timestamp.type"], topic
    # Dead letters are the one topic that may expire; if it does, after a positive time.
    dead_letters = int(by_topic[Topic.DEAD_LETTERS.value]["config"].get("retention.ms", UNLIMITED))
    assert dead_letters == UNLIMITED or dead_letters > 0


def test_compose_runs_a_three_broker_kraft_cluster_that_keeps_everything() -> None:
    brokers = {name: s for name, s in compose()["services"].items() if name.startswith("kafka-") and name[-1].isdigit()}
    assert len(brokers) == 3
    envs = [broker["environment"] for broker in brokers.values()]
    assert all(str(broker["image"]).startswith("apache/kafka:") for broker in brokers.values())
    assert {env["CLUSTER_ID"] for env in envs} != {None} and len({env["CLUSTER_ID"] for env in envs}) == 1
    assert len({env["KAFKA_NODE_ID"] for env in envs}) == 3
    for env in envs:
        assert "controller" in env["KAFKA_PROCESS_ROLES"] and "broker" in env["KAFKA_PROCESS_ROLES"]  # KRaft
        assert len(env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")) == 3
        assert not any("ZOOKEEPER" in key for key in env)
        assert int(env["KAFKA_DEFAULT_REPLICATION_FACTOR"]) == REPLICATION_FACTOR
        assert int(env["KAFKA_MIN_INSYNC_REPLICAS"]) == MIN_INSYNC_REPLICAS
        assert int(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == REPLICATION_FACTOR
        assert int(env["KAFKA_LOG_RETENTION_MS"]) == UNLIMITED
        assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
        assert env["KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE"] == "false"
    # The services start only once the topics exist.
    for name, service in compose_services().items():
        assert service["depends_on"]["kafka-topics"]["condition"] == "service_completed_successfully", name


def test_compose_strimzi_and_the_embedded_cluster_share_one_set_of_broker_settings() -> None:
    # What the tests run on is what is deployed: one file, said three ways.
    shared = read_properties(BROKER_PROPERTIES)
    assert shared["min.insync.replicas"] == str(MIN_INSYNC_REPLICAS)
    (kafka,) = of_kind("Kafka")
    strimzi = {key: str(value).lower() for key, value in kafka["spec"]["kafka"]["config"].items()}
    assert strimzi == shared
    brokers = [s for name, s in compose()["services"].items() if name.startswith("kafka-") and name[-1].isdigit()]
    for broker in brokers:
        env = broker["environment"]
        as_properties = {key.removeprefix("KAFKA_").lower().replace("_", "."): str(value) for key, value in env.items()
                         if key.removeprefix("KAFKA_").lower().replace("_", ".") in shared}
        assert as_properties == shared
    # The embedded cluster of three takes them as they are, changing only what it says it changes.
    embedded = cluster_settings(3)
    assert {k: v for k, v in embedded.items() if k not in EMBEDDED_SETTINGS} == shared
    assert set(EMBEDDED_SETTINGS).isdisjoint(shared)


def test_the_embedded_kafka_is_the_version_compose_runs() -> None:
    image = compose()["x-kafka-image"]
    assert image == f"apache/kafka:{pinned_version()}"


def test_k8s_declares_exactly_the_spec_topics_as_strimzi_kafka_topics() -> None:
    topics = of_kind("KafkaTopic")
    clusters = {m["metadata"]["name"] for m in of_kind("Kafka")}
    assert all(t["apiVersion"] == "kafka.strimzi.io/v1beta2" for t in topics)
    assert all(t["metadata"]["labels"]["strimzi.io/cluster"] in clusters for t in topics)
    by_topic = {t["spec"].get("topicName", t["metadata"]["name"]): t["spec"] for t in topics}
    assert len(by_topic) == len(topics)
    assert set(by_topic) == {topic.value for topic in ALL_TOPICS}
    for name, spec in by_topic.items():
        assert spec["replicas"] == REPLICATION_FACTOR, name
        assert int(spec["config"]["min.insync.replicas"]) == MIN_INSYNC_REPLICAS, name
    for topic in EVENT_TOPICS:
        config = by_topic[topic.value]["config"]
        assert int(config["retention.ms"]) == UNLIMITED, topic
        assert int(config.get("retention.bytes", UNLIMITED)) == UNLIMITED, topic
    # Same partitions and settings as compose: one deployment does not drift from the other.
    compose_calls = {c["topic"].removeprefix("${ANYAM_TOPIC_PREFIX}"): c for c in compose_topic_commands()}
    for name, spec in by_topic.items():
        assert spec["partitions"] == int(compose_calls[name]["partitions"]), name
        assert {k: str(v) for k, v in spec["config"].items()} == compose_calls[name]["config"], name


def test_the_strimzi_cluster_is_kraft_with_the_same_durability() -> None:
    (kafka,) = of_kind("Kafka")
    config = kafka["spec"]["kafka"]["config"]
    assert config["default.replication.factor"] == REPLICATION_FACTOR
    assert config["min.insync.replicas"] == MIN_INSYNC_REPLICAS
    assert config["log.retention.ms"] == UNLIMITED
    assert config["auto.create.topics.enable"] is False
    assert "zookeeper" not in kafka["spec"]
    pools = of_kind("KafkaNodePool")
    assert sum(p["spec"]["replicas"] for p in pools if "broker" in p["spec"]["roles"]) >= REPLICATION_FACTOR


#: Stand-ins for the secrets a settings class requires, so an app can be built without running it.
PLACEHOLDER_SETTINGS = {
    "database_url": "postgresql://nobody@127.0.0.1:1/nothing",
    "staff_token": "staff", "auditor_token": "auditor", "token_secret": "secret",
    "personal_data_key": base64.b64encode(bytes(32)).decode(),
    "signing_key": base64.b64encode(bytes(32)).decode(), "trust_anchors": "",
}


def consumers_of(service: str) -> dict[str, set[str]]:
    """consumer group -> topics, as the service's app declares them (built, never started)."""
    module = importlib.import_module(f"services.{service}.app")
    settings_class = settings_classes_of(service)[0]
    values = {name: PLACEHOLDER_SETTINGS[name] for name in settings_class.model_fields if name in PLACEHOLDER_SETTINGS}
    app = module.create_app(settings_class(**values, topic_prefix=""))
    return {spec.name: {Topic(t).value for t in spec.topics} for spec in app.state.runtime.consumers}


def kafka_grants(user: str) -> dict[tuple[str, str, str], set[str]]:
    acls = named("KafkaUser", user)["spec"]["authorization"]["acls"]
    return {
        (a["resource"]["type"], a["resource"]["name"], a["resource"].get("patternType", "literal")):
        set(a["operations"]) for a in acls
    }


def granted(grants: dict[tuple[str, str, str], set[str]], kind: str, name: str, operation: str) -> bool:
    return any(
        operation in ops and (name == resource if pattern == "literal" else name.startswith(resource))
        for (resource_kind, resource, pattern), ops in grants.items() if resource_kind == kind
    )


@pytest.mark.parametrize("service", sorted(SERVICE_NAMES))
def test_each_service_kafka_user_may_do_exactly_what_its_code_does(service: str) -> None:
    grants = kafka_grants(service)
    topic_names = {topic.value for topic in ALL_TOPICS}
    assert all(name in topic_names and pattern == "literal"
               for (kind, name, pattern) in grants if kind == "topic"), grants
    consumers = consumers_of(service)
    # It may read every topic its consumers subscribe to, under each of their group names...
    for group, topics in consumers.items():
        assert granted(grants, "group", group, "Read"), f"{service} may not use its consumer group {group!r}"
        for topic in topics:
            assert granted(grants, "topic", topic, "Read"), f"{service} may not read {topic!r}"
    # ...and no other topic.
    read = {name for (kind, name, _), ops in grants.items() if kind == "topic" and "Read" in ops}
    assert read == set().union(*consumers.values()), service
    # It writes its own topic (its relay), and dead-letters if it has consumers that may refuse records.
    written = {name for (kind, name, _), ops in grants.items() if kind == "topic" and "Write" in ops}
    assert written == {service} | ({Topic.DEAD_LETTERS.value} if consumers else set()), service


def test_an_auditor_reads_the_event_topics_and_writes_nothing() -> None:
    grants = kafka_grants("auditor")
    assert {name for (kind, name, _) in grants if kind == "topic"} == {topic.value for topic in EVENT_TOPICS}
    assert all(ops <= {"Describe", "Read"} for ops in grants.values())
    groups = [(name, pattern) for (kind, name, pattern) in grants if kind == "group"]
    assert groups and all(pattern == "prefix" for _, pattern in groups)
    # None of the services' groups is within the auditor's reach.
    for service in SERVICE_NAMES:
        for group in consumers_of(service):
            assert not granted(grants, "group", group, "Read"), group


# ---------------------------------------------------------------------------------------------
# Who may do what on Kafka: deploy/ says what the embedded cluster applies (shared/contracts/acls.py)

#: What compose writes for the topic prefix in the ACLs' names (`$${ANYAM_TOPIC_PREFIX}`, unescaped).
COMPOSE_PREFIX = "${ANYAM_TOPIC_PREFIX}"
COLLABORATOR_TEMPLATE = "kafka-collaborator.template.yaml"


def strimzi_bindings(user: dict[str, Any]) -> set[AclBinding]:
    """The ACLs of a Strimzi KafkaUser, one binding per operation."""
    return {
        AclBinding(user["metadata"]["name"], acl["resource"]["type"], acl["resource"]["name"],
                   acl["resource"].get("patternType", LITERAL), operation)
        for acl in user["spec"]["authorization"]["acls"] for operation in acl["operations"]
    }


def k8s_bindings() -> set[AclBinding]:
    """Every ACL deploy/k8s gives the services' and the auditor's users (the collaborator template apart)."""
    users = [u for u in of_kind("KafkaUser") if u["__file__"] != COLLABORATOR_TEMPLATE]
    return set().union(*(strimzi_bindings(user) for user in users))


def compose_script(service: str) -> list[list[str]]:
    """The lines of a compose one-shot's bash script, as shell words (compose's `$$` unescaped)."""
    script = "\n".join(compose()["services"][service]["command"]).replace("$$", "$")
    return [shlex.split(line) for line in script.splitlines() if line.strip()]


def compose_bindings() -> set[AclBinding]:
    """The ACLs the `kafka-acls` job adds (`kafka-acls.sh --add`), one binding per operation."""
    found = set()
    for words in compose_script("kafka-acls"):
        if not words[0].endswith("kafka-acls.sh") or "--add" not in words:
            continue
        options: dict[str, list[str]] = {}
        for flag, value in zip(words, words[1:], strict=False):
            if flag.startswith("--"):
                options.setdefault(flag, []).append(value)
        (principal,) = options["--allow-principal"]
        ((kind, (name,)),) = [(k.lstrip("-"), v) for k, v in options.items() if k in ("--topic", "--group")]
        pattern = PREFIX if options.get("--resource-pattern-type") == ["prefixed"] else LITERAL
        found |= {AclBinding(principal.removeprefix("User:"), kind, name, pattern, operation)
                  for operation in options["--operation"]}
    return found


def compose_scram_users() -> dict[str, str]:
    """user -> the compose variable holding its password, as `kafka-acls` creates the SCRAM users."""
    users = {}
    for words in compose_script("kafka-acls"):
        if words[0].endswith("kafka-configs.sh") and "--add-config" in words:
            name = words[words.index("--entity-name") + 1]
            config = words[words.index("--add-config") + 1]
            variable = re.fullmatch(r"SCRAM-SHA-512=\[password=\$\{([A-Z_]+)\}\]", config)
            assert variable, config
            users[name] = compose()["services"]["kafka-acls"]["environment"][variable.group(1)]
    return users


def test_k8s_and_compose_grant_exactly_the_acls_the_embedded_cluster_applies() -> None:
    # The one table, said three ways: what `anyam up --broker kafka` applies, Strimzi's users, compose's job.
    assert k8s_bindings() == stack_bindings("")
    assert compose_bindings() == stack_bindings(COMPOSE_PREFIX)
    # Nothing is granted on the cluster itself (idempotent producers need Write on a topic only).
    assert not {b for b in stack_bindings("") if b.resource_type not in ("topic", "group")}


def test_a_collaborator_user_may_write_qc_submissions_only_in_deploy_as_in_the_table() -> None:
    (template,) = [u for u in of_kind("KafkaUser") if u["__file__"] == COLLABORATOR_TEMPLATE]
    principal = template["metadata"]["name"]
    assert principal.startswith("collaborator-")
    assert strimzi_bindings(template) == bindings_of(principal, COLLABORATOR_GRANTS)
    assert {(b.resource_type, b.name, b.operation) for b in strimzi_bindings(template)} == {
        ("topic", Topic.QC_SUBMISSIONS.value, "Describe"), ("topic", Topic.QC_SUBMISSIONS.value, "Write")}


def test_each_service_signs_in_as_its_own_principal_in_compose_and_k8s() -> None:
    users = compose_scram_users()
    # A SCRAM user for every principal of the table, and for admin (tools on the host listener).
    assert set(users) == set(GRANTS) | {ADMIN}
    for name, service in compose_services().items():
        env = service["environment"]
        assert env["ANYAM_KAFKA_SECURITY_PROTOCOL"].startswith("SASL_")
        assert env["ANYAM_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
        assert env["ANYAM_KAFKA_SASL_USERNAME"] == name
        assert env["ANYAM_KAFKA_SASL_PASSWORD"] == users[name], f"{name} signs in with another user's password"
    for name, deployment in deployments().items():
        env = {item["name"]: item for item in container_of(deployment).get("env", [])}
        assert env["ANYAM_KAFKA_SASL_USERNAME"]["value"] == name
        assert env["ANYAM_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == name  # Strimzi's Secret
        named("KafkaUser", name)
    assert set(SERVICE_PRINCIPALS) == SERVICE_NAMES


def test_no_kafka_listener_anywhere_lets_a_client_in_without_signing_in() -> None:
    # The embedded cluster: two listeners, both SASL, and nothing allowed that no ACL grants.
    assert set(SECURITY["listener.security.protocol.map"].replace(",", ":").split(":")[1::2]) == {"SASL_PLAINTEXT"}
    assert AUTHORIZATION_SETTINGS["allow.everyone.if.no.acl.found"] == "false"
    # compose: every listener SASL, the same authorizer settings.
    for name, broker in compose()["services"].items():
        if not (name.startswith("kafka-") and name[-1].isdigit()):
            continue
        env = broker["environment"]
        protocols = {pair.split(":")[1] for pair in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")}
        assert protocols <= {"SASL_PLAINTEXT", "SASL_SSL"}, name
        assert {key: env[f"KAFKA_{key.upper().replace('.', '_')}"] for key in AUTHORIZATION_SETTINGS} == \
            AUTHORIZATION_SETTINGS, name
    # Strimzi: every listener authenticates, and authorization is on.
    (kafka,) = of_kind("Kafka")
    listeners = kafka["spec"]["kafka"]["listeners"]
    assert all(listener["authentication"]["type"] == "scram-sha-512" and listener["tls"] for listener in listeners)
    assert any(listener["type"] != "internal" for listener in listeners), "collaborators need an external listener"
    assert kafka["spec"]["kafka"]["authorization"]["type"] == "simple"


# ---------------------------------------------------------------------------------------------
# Settings


def deploy_text_files() -> Iterator[Path]:
    for path in sorted(DEPLOY.rglob("*")):
        if path.is_file() and path.suffix not in (".py", ".pyc", ".txt") and "__pycache__" not in path.parts:
            yield path


def test_every_anyam_name_in_deploy_is_a_setting_the_code_reads() -> None:
    known = known_settings()
    unknown = {
        f"{path.relative_to(REPO)}: {name}"
        for path in [*deploy_text_files(), REPO / ".dockerignore"]
        for name in ANYAM_NAME.findall(path.read_text())
        if name not in known
    }
    assert not unknown, f"deploy/ names settings no settings class reads: {sorted(unknown)}"


def test_compose_gives_each_service_every_setting_it_requires_and_no_other_services_secret() -> None:
    services = compose_services()
    assert set(services) == SERVICE_NAMES
    for name, service in services.items():
        provided = set(service["environment"])
        missing = required_settings(name) - provided
        assert not missing, f"compose does not give {name} {sorted(missing)}"
        assert set(provided) <= known_settings(), name
        for setting, owner in PRIVATE_SETTINGS.items():
            assert (setting in provided) == (owner == name), (name, setting)
        # Each service its own database, under its own role (postgres/init-databases.sh).
        url = service["environment"]["ANYAM_DATABASE_URL"]
        assert re.fullmatch(rf"postgresql://{DATABASES[name]}:\$\{{[A-Z_]+:\?[^}}]*\}}@postgres:5432/{DATABASES[name]}",
                            url), url


def test_every_secret_compose_requires_is_documented_in_the_example_and_nothing_more() -> None:
    lines = (DEPLOY / "compose.yaml").read_text().splitlines()
    text = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", text))
    optional = set(re.findall(r"\$\{([A-Z0-9_]+):-", text))
    example = secrets_example()
    assert required <= set(example), f"secrets.env.example lacks {sorted(required - set(example))}"
    unused = set(example) - required - optional
    assert not unused, f"secrets.env.example has names compose does not use: {sorted(unused)}"
    # Required secrets ship empty, so compose refuses to start until someone chose them.
    assert all(example[name] == "" for name in required)


def test_postgres_init_creates_one_database_and_role_per_service() -> None:
    script = (DEPLOY / "postgres" / "init-databases.sh").read_text()
    loops = re.findall(r"^for service in ([a-z ]+); do$", script, flags=re.MULTILINE)
    assert set(loops[0].split()) == SERVICE_NAMES
    assert 'CREATE DATABASE :"role" OWNER :"role";' in script and 'role="anyam_${service}"' in script
    assert {f"anyam_{name}" for name in SERVICE_NAMES} == set(DATABASES.values())
    mounted = compose()["services"]["postgres"]["volumes"]
    assert any(v.startswith("./postgres/init-databases.sh:/docker-entrypoint-initdb.d/") for v in mounted)


def k8s_environment(deployment: dict[str, Any]) -> set[str]:
    """Every environment variable name a Deployment's container gets (envFrom expanded)."""
    container = container_of(deployment)
    names = {item["name"] for item in container.get("env", [])}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            names |= set(named("ConfigMap", source["configMapRef"]["name"])["data"])
        else:
            secret = named("Secret", source["secretRef"]["name"])
            names |= set(secret.get("stringData", {})) | set(secret.get("data", {}))
    return names


def test_k8s_gives_each_service_every_setting_it_requires_and_no_other_services_secret() -> None:
    assert set(deployments()) == SERVICE_NAMES
    for name, deployment in deployments().items():
        provided = k8s_environment(deployment)
        missing = required_settings(name) - provided
        assert not missing, f"the {name} Deployment lacks {sorted(missing)}"
        assert provided <= known_settings(), f"{name}: {sorted(provided - known_settings())}"
        for setting, owner in PRIVATE_SETTINGS.items():
            assert (setting in provided) == (owner == name), (name, setting)


def test_the_secret_template_is_never_applied_by_kustomize() -> None:
    (kustomization,) = [m for m in manifests() if m["kind"] == "Kustomization"]
    listed = set(kustomization["resources"])
    assert not {name for name in listed if name.endswith(".template.yaml")}
    on_disk = {path.name for path in manifest_files() if not path.name.endswith(".template.yaml")} - {
        "kustomization.yaml"}
    assert listed == on_disk
    # Placeholders only: nothing that looks like a real secret is committed.
    for secret in of_kind("Secret"):
        for key, value in secret["stringData"].items():
            assert "REPLACE-ME" in value, (secret["metadata"]["name"], key)


# ---------------------------------------------------------------------------------------------
# Commands and the image


def serve_command() -> Any:
    from anyam.cli import app

    group = typer.main.get_command(app)
    assert "serve" in group.commands, "the anyam CLI has no `serve` command"
    return group.commands["serve"]


def test_the_image_entry_point_is_the_installed_anyam_serve_command() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["anyam"] == "anyam.cli:app"
    serve = serve_command()
    assert [p.name for p in serve.params] == ["service"]

    stage = dict(final_stage())
    assert json.loads(stage["ENTRYPOINT"]) == ["anyam", "serve"]
    (default,) = json.loads(stage["CMD"])
    assert default in SERVICE_NAMES


def test_compose_and_k8s_run_only_real_services_through_the_image_entry_point() -> None:
    serve_command()
    for name, service in compose_services().items():
        assert "entrypoint" not in service, name  # the image's `anyam serve`
        assert service["command"] == [name], name
        assert service_is_built(name), f"compose runs {name}, which is not built"
    for name, deployment in deployments().items():
        container = container_of(deployment)
        assert container.get("command", ["anyam", "serve"]) == ["anyam", "serve"], name
        assert container["args"] == [name], name
        assert container["image"].split(":")[0] == "anyam", name
        assert service_is_built(name), f"k8s runs {name}, which is not built"


def test_the_image_is_multi_stage_pinned_and_runs_as_an_unprivileged_user() -> None:
    instructions = dockerfile_instructions()
    args = dict(a.split("=", 1) for keyword, a in instructions if keyword == "ARG" and "=" in a)
    froms = [a for keyword, a in instructions if keyword == "FROM"]
    assert len(froms) >= 2 and all(" AS " in f.upper() for f in froms), "a build stage and a runtime stage"
    bases = {f.split()[0] for f in froms}
    resolved = {args.get(b.strip("${}"), b) for b in bases}
    python = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert ">=3.11" in python
    for base in resolved:
        # An exact patch release of Python 3.11 on Debian bookworm, never a moving tag.
        assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base), base

    stage = final_stage()
    users = [a for keyword, a in stage if keyword == "USER"]
    assert users, "the runtime stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0") and user.isdigit(), "a numeric non-root uid (runAsNonRoot can check it)"
    k8s_uids = {d["spec"]["template"]["spec"]["securityContext"]["runAsUser"] for d in deployments().values()}
    assert k8s_uids == {int(user)}

    env = " ".join(a for keyword, a in stage if keyword == "ENV")
    assert "ANYAM_HTTP_HOST=0.0.0.0" in env
    port = re.search(r"ANYAM_HTTP_PORT=(\d+)", env)
    assert port and dict(stage)["EXPOSE"] == port.group(1)
    assert dict(stage)["STOPSIGNAL"] == "SIGTERM"
    healthcheck = dict(stage)["HEALTHCHECK"]
    assert "/health" in healthcheck and "ANYAM_HTTP_PORT" in healthcheck and "curl" not in healthcheck


def test_the_build_context_holds_what_the_dockerfile_copies_and_nothing_else() -> None:
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*", "everything is excluded unless re-included"
    included = {p.removeprefix("!").rstrip("/") for p in patterns if p.startswith("!")}
    copied = set()
    for keyword, arguments in dockerfile_instructions():
        if keyword == "COPY" and "--from" not in arguments:
            *sources, _ = arguments.split()
            copied |= {source.rstrip("/") for source in sources}
    assert copied <= included, f"COPY sources the context leaves out: {sorted(copied - included)}"
    for path in included:
        assert (REPO / path).exists(), path


def test_the_image_installs_the_dependency_versions_pyproject_pins() -> None:
    constraints = {}
    for line in (DEPLOY / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            constraints[re.sub(r"[-_.]+", "-", name).lower()] = version
    for requirement in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]:
        name, _, version = requirement.partition("==")
        name = re.sub(r"[-_.]+", "-", re.sub(r"\[.*\]", "", name)).lower()
        assert constraints.get(name) == version, f"deploy/constraints.txt has {name}=={constraints.get(name)}, " \
            f"pyproject.toml pins {version}: regenerate it (deploy/constraints.py)"


def test_other_images_are_pinned_to_a_release() -> None:
    images = {str(s["image"]) for s in compose()["services"].values() if "build" not in s}
    assert images
    for image in images:
        assert re.fullmatch(r"[a-z0-9/._-]+:\d+\.\d+(\.\d+)?(-[a-z0-9]+)?(@sha256:[0-9a-f]{64})?", image), image


# ---------------------------------------------------------------------------------------------
# Replicas, probes, pod security


def test_payout_runs_two_replicas_in_compose_and_k8s_and_keeps_one_through_disruptions() -> None:
    assert compose_services()["payout"]["deploy"]["replicas"] == PAYOUT_REPLICAS
    assert deployments()["payout"]["spec"]["replicas"] == PAYOUT_REPLICAS
    (budget,) = of_kind("PodDisruptionBudget")
    labels = deployments()["payout"]["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert budget["spec"]["minAvailable"] == 1


@pytest.mark.parametrize("service", sorted(SERVICE_NAMES))
def test_k8s_probes_ask_health_on_the_port_the_service_listens_on(service: str) -> None:
    deployment = deployments()[service]
    container = container_of(deployment)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    listening = int(named("ConfigMap", "anyam-settings")["data"]["ANYAM_HTTP_PORT"])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/health", (service, probe)
        assert ports.get(get["port"], get["port"]) == listening, (service, probe)
    (k8s_service,) = [s for s in of_kind("Service") if s["metadata"]["name"] == service]
    assert k8s_service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert {p["targetPort"] for p in k8s_service["spec"]["ports"]} <= set(ports) | {listening}


def test_compose_keeps_the_image_health_check_on_health() -> None:
    for name, service in compose_services().items():
        check = service.get("healthcheck")
        assert check is None or "/health" in " ".join(check["test"]), name


@pytest.mark.parametrize("service", sorted(SERVICE_NAMES))
def test_k8s_pods_run_unprivileged_read_only_with_resources_and_time_to_stop(service: str) -> None:
    spec = deployments()[service]["spec"]["template"]["spec"]
    container = container_of(deployments()[service])
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["terminationGracePeriodSeconds"] >= 30
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    resources = container["resources"]
    assert {"cpu", "memory"} <= resources["requests"].keys() and "memory" in resources["limits"]
    # The read-only root needs a writable /tmp.
    assert "/tmp" in {mount["mountPath"] for mount in container["volumeMounts"]}
