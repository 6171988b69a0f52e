"""The payout service's composition root: settings, handlers, consumers, runtime, app — explicit."""

from __future__ import annotations

from fastapi import FastAPI

from services.payout import dashboard, messaging, projections, queries
from services.payout import handlers as command_side
from services.payout.handlers import PayoutHandlers
from services.payout.http import payout_router
from shared.service import ServiceRuntime, ServiceSettings, service_app
from shared.web.access import Access


class PayoutSettings(ServiceSettings):
    """Every `ANYAM_*` setting of the payout service (it needs nothing beyond the common ones)."""


def create_app(settings: PayoutSettings | None = None) -> FastAPI:
    """The payout service, wired from `settings` (read from `ANYAM_*` when not given)."""
    settings = settings or PayoutSettings()
    runtime = ServiceRuntime(
        name="payout", settings=settings,
        schema=[projections.install, command_side.install, queries.install, dashboard.install],
        consumers=messaging.consumers(settings.topic_prefix),
    )
    handlers = PayoutHandlers()
    access = Access(settings)
    return service_app(
        runtime, title="Anyam payout", access=access,
        routers=[payout_router(runtime, handlers, access), dashboard.dashboard_router(runtime, access)],
    )
