"""The production service's composition root: settings, handlers, consumers, runtime, app — explicit."""

from __future__ import annotations

from datetime import datetime

from cachetools import LRUCache
from fastapi import FastAPI
from pydantic import Field

from services.production import materials, projections
from services.production.handlers import ProductionHandlers
from services.production.http import production_router
from services.production.messaging import QC_CONSUMER, qc_submission_handler
from services.production.piece_batches import piece_batch_router
from shared.contracts import Topic
from shared.eventstore import PostgresUnitOfWork
from shared.materials import DEFAULT_IDLE_WEEKS, MAX_IDLE_WEEKS, MIN_IDLE_WEEKS
from shared.service import ConsumerSpec, ServiceRuntime, ServiceSettings, service_app
from shared.web.access import Access


class ProductionSettings(ServiceSettings):
    """Every `ANYAM_*` setting the production service reads."""

    qc_rejections_per_minute: int = Field(
        default=60, ge=1, le=100_000,
        description="How many of one collaborator's QC submissions may be refused in a minute (over HTTP or "
                    "Kafka); beyond it its HTTP submissions are answered 429 with Retry-After, unread, until the "
                    "minute passes.",
    )
    materials_idle_weeks: int = Field(
        default=DEFAULT_IDLE_WEEKS, ge=MIN_IDLE_WEEKS, le=MAX_IDLE_WEEKS,
        description="After how many weeks with no piece woven and no materials issued an artisan's left-over "
                    "materials are flagged `idle-materials` by GET /materials/reconciliation (docs/materials.md).",
    )


class CollaboratorTokens:
    """Which collaborators' tokens production admits (docs/tokens.md): the collaborator's, if it is
    registered, issued at or after the moment its tokens were last revoked from.

    A collaborator once found is remembered (nobody is ever unregistered); the revocation is read
    on every request, so one takes effect on the next request, in this process and every other.
    """

    def __init__(self, runtime: ServiceRuntime, handlers: ProductionHandlers, capacity: int = 10_000) -> None:
        self._runtime = runtime
        self._handlers = handlers
        self._registered: LRUCache[str, bool] = LRUCache(maxsize=capacity)

    async def admits(self, collaborator_id: str, issued_at: datetime) -> bool:
        async with self._runtime.pool.acquire() as conn:
            if collaborator_id not in self._registered:
                if not (await self._handlers.collaborator_state(PostgresUnitOfWork(conn), collaborator_id)).exists:
                    return False
                self._registered[collaborator_id] = True
            revoked_before = await projections.tokens_revoked_before(conn, collaborator_id)
        return revoked_before is None or issued_at >= revoked_before


def create_app(settings: ProductionSettings | None = None) -> FastAPI:
    """The production service, wired from `settings` (read from `ANYAM_*` when not given)."""
    settings = settings or ProductionSettings()
    handlers = ProductionHandlers()
    runtime = ServiceRuntime(
        name="production",
        settings=settings,
        schema=[projections.install, materials.install],
        consumers=[
            ConsumerSpec(name=projections.TRAINING_CONSUMER, topics=[Topic.ENROLLMENT],
                         handler=projections.project_training),
            ConsumerSpec(name=QC_CONSUMER, topics=[Topic.QC_SUBMISSIONS], handler=qc_submission_handler(handlers)),
        ],
    )
    access = Access(settings, collaborator_check=CollaboratorTokens(runtime, handlers).admits)
    router = production_router(runtime, handlers, access, rejections_per_minute=settings.qc_rejections_per_minute,
                               idle_weeks=settings.materials_idle_weeks)
    return service_app(
        runtime, title="Anyam production", access=access,
        routers=[router, piece_batch_router(runtime, handlers, access)],
    )
