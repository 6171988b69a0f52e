"""The payout service's composition root: settings, handlers, consumers, runtime, app — explicit."""

from __future__ import annotations

from fastapi import FastAPI, Request
from pydantic import Field

from services.payout import artisan, dashboard, invoicing, messaging, projections, queries
from services.payout import handlers as command_side
from services.payout.handlers import PayoutHandlers
from services.payout.http import payout_router
from services.payout.invoicing import InvoiceHandlers
from services.payout.money_http import money_router
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
    artisan_page_url: str | None = Field(
        default=None, pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$",
        description="The address artisans' phones reach payout at, e.g. https://anyam.example.org, for the links "
                    "printed on their cards (docs/artisans.md); default: the address staff's request came to.",
    )


def create_app(settings: PayoutSettings | None = None) -> FastAPI:
    """The payout service, wired from `settings` (read from `ANYAM_*` when not given)."""
    settings = settings or PayoutSettings()
    runtime = ServiceRuntime(
        name="payout", settings=settings,
        schema=[projections.install, command_side.install, invoicing.install, queries.install, dashboard.install,
                artisan.install],
        consumers=messaging.consumers(settings.topic_prefix),
    )
    handlers = PayoutHandlers()
    access = Access(settings)
    page_base = settings.artisan_page_url.rstrip("/") if settings.artisan_page_url else None

    def page_url(request: Request) -> str:
        return page_base or str(request.base_url).rstrip("/")

    return service_app(
        runtime, title="Anyam payout", access=access,
        routers=[payout_router(runtime, handlers, access),
                 money_router(runtime, handlers, InvoiceHandlers(), access),
                 dashboard.dashboard_router(runtime, access, idle_weeks=settings.materials_idle_weeks),
                 artisan.artisan_router(runtime, access, page_url=page_url)],
    )
