"""The production service's composition root: settings, handlers, consumers, runtime, app — explicit."""

from __future__ import annotations

from fastapi import FastAPI

from services.production import projections
from services.production.handlers import ProductionHandlers
from services.production.http import production_router
from services.production.messaging import QC_CONSUMER, qc_submission_handler
from shared.contracts import Topic
from shared.eventstore import EventStore
from shared.service import ConsumerSpec, ServiceRuntime, ServiceSettings, service_app
from shared.web.access import Access


class ProductionSettings(ServiceSettings):
    """Every `ANYAM_*` setting the production service reads (none beyond a service's own, yet)."""


def create_app(settings: ProductionSettings | None = None) -> FastAPI:
    """The production service, wired from `settings` (read from `ANYAM_*` when not given)."""
    settings = settings or ProductionSettings()
    handlers = ProductionHandlers(store=EventStore())
    runtime = ServiceRuntime(
        name="production",
        settings=settings,
        schema=[projections.install],
        consumers=[
            ConsumerSpec(name=projections.TRAINING_CONSUMER, topics=[Topic.ENROLLMENT],
                         handler=projections.project_training),
            ConsumerSpec(name=QC_CONSUMER, topics=[Topic.QC_SUBMISSIONS], handler=qc_submission_handler(handlers)),
        ],
    )
    access = Access(settings)
    return service_app(
        runtime, title="Anyam production", access=access, routers=[production_router(runtime, handlers, access)],
        publishes=[Topic.PRODUCTION, Topic.DEAD_LETTERS], subscribes=[Topic.ENROLLMENT, Topic.QC_SUBMISSIONS],
    )
