"""The payout service's composition root: settings, handlers, consumers, runtime, app — explicit."""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import Field

from services.payout import dashboard, messaging, projections
from services.payout import handlers as command_side
from services.payout.handlers import PayoutHandlers
from services.payout.http import payout_router
from shared.materials import DEFAULT_IDLE_WEEKS, MAX_IDLE_WEEKS, MIN_IDLE_WEEKS
from shared.service import ServiceRuntime, ServiceSettings, service_app
from shared.web.access import Access


class PayoutSettings(ServiceSettings):
    """Every `ANYAM_*` setting of the payout service."""

    materials_idle_weeks: int = Field(
        default=DEFAULT_IDLE_WEEKS, ge=MIN_IDLE_WEEKS, le=MAX_IDLE_WEEKS,
        description="After how many weeks with no piece woven and no materials issued the dashboard flags an "
                    "artisan's left-over materials `idle-materials` (docs/materials.md); as production's.",
    )


def create_app(settings: PayoutSettings | None = None) -> FastAPI:
    """The payout service, wired from `settings` (read from `ANYAM_*` when not given)."""
    settings = settings or PayoutSettings()
    runtime = ServiceRuntime(
        name="payout", settings=settings, schema=[projections.install, command_side.install, dashboard.install],
        consumers=messaging.consumers(settings.topic_prefix),
    )
    handlers = PayoutHandlers()
    access = Access(settings)
    return service_app(
        runtime, title="Anyam payout", access=access,
        routers=[payout_router(runtime, handlers, access),
                 dashboard.dashboard_router(runtime, access, idle_weeks=settings.materials_idle_weeks)],
    )
