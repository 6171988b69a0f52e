"""The payout service's composition root: settings, handlers, the ledger consumer, runtime, app — explicit."""

from __future__ import annotations

from fastapi import FastAPI

from services.payout import dashboard, projections
from services.payout import handlers as command_side
from services.payout.handlers import PayoutHandlers
from services.payout.http import payout_router
from shared.contracts import Topic
from shared.eventstore import EventStore
from shared.service import ConsumerSpec, ServiceRuntime, ServiceSettings, service_app
from shared.web.access import Access

#: The consumer group of the ledger projection. Several payout instances join it and share the
#: partitions; the offsets they store with the ledger rows keep a moving partition exact.
LEDGER_CONSUMER = "payout-ledger"


def ledger_consumer(topic_prefix: str = "") -> str:
    """The ledger's consumer group (and the name its offsets are stored under) in a deployment.

    It carries the topic prefix, as the topics do: deployments that share a Kafka cluster under
    different prefixes must not share a group, or every instance that joins or leaves one of
    them rebalances (and, on a member's crash, stalls) the others too.
    """
    return f"{topic_prefix}{LEDGER_CONSUMER}"


#: What the ledger reads: earnings from `production`, the payouts' own lifecycle back from `payout`
#: (the ledger is a projection of the log, even of this service's own events).
LEDGER_TOPICS = (Topic.PRODUCTION, Topic.PAYOUT)


class PayoutSettings(ServiceSettings):
    """Every `ANYAM_*` setting of the payout service (it needs nothing beyond the common ones)."""


def create_app(settings: PayoutSettings | None = None) -> FastAPI:
    """The payout service, wired from `settings` (read from `ANYAM_*` when not given)."""
    settings = settings or PayoutSettings()
    runtime = ServiceRuntime(
        name="payout", settings=settings, schema=[projections.install, command_side.install, dashboard.install],
        consumers=[ConsumerSpec(name=ledger_consumer(settings.topic_prefix), topics=LEDGER_TOPICS,
                                handler=projections.LEDGER_HANDLER),
                   # The dashboard's read model has its own group and offsets: it can be rebuilt, lag or
                   # fail without ever holding up the ledger.
                   ConsumerSpec(name=dashboard.dashboard_consumer(settings.topic_prefix),
                                topics=dashboard.DASHBOARD_TOPICS,
                                handler=dashboard.DASHBOARD_HANDLER)],
    )
    handlers = PayoutHandlers(store=EventStore())
    access = Access(settings)
    return service_app(
        runtime, title="Anyam payout", access=access,
        routers=[payout_router(runtime, handlers, access), dashboard.dashboard_router(runtime, access)],
    )
