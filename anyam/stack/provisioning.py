"""Creating Anyam's topics (SPEC §4) on a broker, idempotently."""

from __future__ import annotations

import asyncio
import time

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from anyam.stack.errors import TopicProvisioningFailed
from anyam.stack.processes import POLL_INTERVAL
from shared.contracts.topics import ALL_TOPICS, EVENT_TOPICS, Topic, topic_name
from shared.settings import KafkaSettings

_TOPIC_ALREADY_EXISTS = 36

#: The log is the audit trail: the event topics never expire anything.
#: (tansu 0.6 accepts this config on CreateTopics and reports it back in DescribeConfigs.)
EVENT_TOPIC_CONFIG = {"retention.ms": "-1"}
#: On Apache Kafka the broker stamps each event record with the time it was appended, so within a
#: partition the times never go back and a cut by recording time (`anyam replay --as-known-at`)
#: can seek by the time index. tansu keeps no time index.
KAFKA_EVENT_TOPIC_CONFIG = {**EVENT_TOPIC_CONFIG, "message.timestamp.type": "LogAppendTime"}
#: Copies of every partition on a cluster of three brokers or more, as deploy/ declares them: an
#: acknowledged write (acks=all) is on two brokers at least, and one broker may be down.
REPLICATION_FACTOR = 3
MIN_INSYNC_REPLICAS = 2

#: Topics with a partition count of their own on tansu, whatever the stack's. `qc-submissions` is written by
#: collaborators a submission or a few at a time (each produce request brings a record batch per
#: partition it touches) and read by one consumer group, production's; the embedded broker lists
#: every batch a partition stores for each fetch that returns records from it (docs/operations.md,
#: its known limits), so three partitions hold about three times the batches one does for the same records,
#: and the tail of the end-to-end latency grew with that cost. Order per piece holds with any
#: count; Apache Kafka has no such cost, and there every topic gets the stack's count.
OWN_PARTITIONS: dict[Topic, int] = {Topic.QC_SUBMISSIONS: 1}


async def ensure_topics(
    settings: KafkaSettings,
    partitions: int = 3,
    *,
    timeout: float = 30.0,
) -> list[str]:
    """Create every topic of `ALL_TOPICS` under the settings' prefix unless it exists; return the names.

    Each gets `partitions` partitions (on tansu, those of `OWN_PARTITIONS` theirs); event topics get
    unlimited retention. On a cluster of three brokers or more each partition has
    `REPLICATION_FACTOR` replicas and `MIN_INSYNC_REPLICAS`; on a smaller one, one copy
    per broker. Returns once the broker's metadata shows every topic with all its
    partitions led; topics that already existed keep their settings.
    Raises `TopicProvisioningFailed`.
    """
    admin = AIOKafkaAdminClient(**settings.client_options(), request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout)
        brokers = len((await admin.describe_cluster())["brokers"])
        replication_factor = min(REPLICATION_FACTOR, max(brokers, 1))
        durability = {"min.insync.replicas": str(MIN_INSYNC_REPLICAS)} if replication_factor >= 3 else {}
        event_config = EVENT_TOPIC_CONFIG if settings.on_tansu else KAFKA_EVENT_TOPIC_CONFIG
        wanted = {
            topic_name(topic, settings.topic_prefix): NewTopic(
                name=topic_name(topic, settings.topic_prefix),
                num_partitions=OWN_PARTITIONS.get(topic, partitions) if settings.on_tansu else partitions,
                replication_factor=replication_factor,
                topic_configs={**durability, **(event_config if topic in EVENT_TOPICS else {})},
            )
            for topic in ALL_TOPICS
        }
        response = await admin.create_topics(list(wanted.values()), timeout_ms=int(timeout * 1000))
        created: set[str] = set()
        for name, code, message in _topic_errors(response):
            if code == 0:
                created.add(name)
            elif code != _TOPIC_ALREADY_EXISTS:
                raise TopicProvisioningFailed(f"the broker refused to create topic {name!r}: {message or code}")
        await _wait_visible(admin, {name: (wanted[name].num_partitions if name in created else 1) for name in wanted},
                            timeout)
    except (TimeoutError, KafkaError, OSError) as err:
        raise TopicProvisioningFailed(f"could not create topics on {settings.bootstrap_servers}: {err!r}") from err
    finally:
        await admin.close()
    return [topic_name(topic, settings.topic_prefix) for topic in ALL_TOPICS]


def _topic_errors(response: object) -> list[tuple[str, int, str | None]]:
    rows = []
    for entry in response.topic_errors:  # type: ignore[attr-defined]
        # CreateTopics v0 has no error message; later versions add one.
        name, code, *rest = entry
        rows.append((name, code, rest[0] if rest else None))
    return rows


async def _wait_visible(admin: AIOKafkaAdminClient, min_partitions: dict[str, int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        described = await admin.describe_topics(list(min_partitions))
        ready = {
            d["topic"]
            for d in described
            if d["error_code"] == 0
            and len(d["partitions"]) >= min_partitions.get(d["topic"], 1)
            and all(p["error_code"] == 0 and p["leader"] >= 0 for p in d["partitions"])
        }
        missing = sorted(set(min_partitions) - ready)
        if not missing:
            return
        if time.monotonic() > deadline:
            raise TopicProvisioningFailed(
                f"topics not visible in the broker's metadata after {timeout:.0f}s: {missing}"
            )
        await asyncio.sleep(POLL_INTERVAL)
