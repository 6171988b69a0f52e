"""Payout's Kafka entrypoints: the consumer groups it runs, the topics each reads and its handler.

Payout writes only `payout` (through the event store's relay) and reads through two transactional
consumers: the ledger's, the dashboard's read model's and the artisan pages', each with its own group and offsets.
"""

from __future__ import annotations

from services.payout import artisan, dashboard, projections
from shared.contracts import Topic
from shared.service import ConsumerSpec

#: The consumer group of the ledger projection. Several payout instances join it and share the
#: partitions; the offsets they store with the ledger rows keep a moving partition exact.
LEDGER_CONSUMER = "payout-ledger"

#: What the ledger reads: earnings from `production`, the payouts' own lifecycle back from `payout`
#: (the ledger is a projection of the log, even of this service's own events).
LEDGER_TOPICS = (Topic.PRODUCTION, Topic.PAYOUT)


def ledger_consumer(topic_prefix: str = "") -> str:
    """The ledger's consumer group (and the name its offsets are stored under) in a deployment.

    It carries the topic prefix, as the topics do: deployments that share a Kafka cluster under
    different prefixes must not share a group, or every instance that joins or leaves one of
    them rebalances (and, on a member's crash, stalls) the others too.
    """
    return f"{topic_prefix}{LEDGER_CONSUMER}"


def consumers(topic_prefix: str) -> list[ConsumerSpec]:
    """Payout's consumers in a deployment under `topic_prefix`."""
    return [
        ConsumerSpec(name=ledger_consumer(topic_prefix), topics=LEDGER_TOPICS, handler=projections.LEDGER_HANDLER),
        # The dashboard's read model has its own group and offsets: it can be rebuilt, lag or fail
        # without ever holding up the ledger.
        ConsumerSpec(name=dashboard.dashboard_consumer(topic_prefix), topics=dashboard.DASHBOARD_TOPICS,
                     handler=dashboard.DASHBOARD_HANDLER),
        # So has the artisan pages' read model (docs/artisans.md).
        ConsumerSpec(name=artisan.artisan_consumer(topic_prefix), topics=artisan.ARTISAN_TOPICS,
                     handler=artisan.ARTISAN_HANDLER),
    ]
