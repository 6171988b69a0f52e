"""What every service process runs: its pool, event store, outbox relay, consumers and HTTP app.

Each service's `app.py` (its composition root) builds a `ServiceRuntime` and
hands it to `service_app`; nothing here knows any one service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import JSONResponse
from pydantic import Field

from shared import eventstore
from shared.contracts import Topic
from shared.contracts.provenance import ProvenanceSettings
from shared.db import DatabaseSettings, create_pool
from shared.eventstore import DeadLetterPublisher, OutboxRelay, TransactionalConsumer
from shared.eventstore.consumer import Handler
from shared.kafka import start_producer
from shared.settings import KafkaSettings
from shared.web import commands
from shared.web.access import AUDITOR, STAFF, Access, AccessSettings, Principal
from shared.web.asyncapi import asyncapi_document, written_topics
from shared.web.limits import DEFAULT_MAX_BODY_BYTES, BodyLimit
from shared.web.observability import Metrics, observability_router
from shared.web.openapi import exact_openapi
from shared.web.problems import install_problem_handlers

#: How long an idle HTTP connection stays open. Longer than clients keep theirs (httpx and most pools: 5 s),
#: so the client always closes an idle connection first; were the server first, a request sent on the
#: connection just as the server closed it would fail with a reset the client cannot tell from a crash.
KEEP_ALIVE_SECONDS = 75

log = logging.getLogger(__name__)

SchemaInstaller = Callable[[asyncpg.Pool], Awaitable[None]]


class ServiceSettings(KafkaSettings, DatabaseSettings, AccessSettings, ProvenanceSettings):
    """Every `ANYAM_*` setting one service process reads."""

    http_host: str = Field(default="127.0.0.1", description="Address the HTTP API listens on.")
    http_port: int = Field(default=8000, ge=0, le=65535, description="Port the HTTP API listens on.")
    idempotency_key_ttl_seconds: int = Field(
        default=int(commands.IDEMPOTENCY_KEY_TTL.total_seconds()), ge=1, le=30 * 86_400,
        description="How long a command's answer is kept for its Idempotency-Key: a retry within it gets the "
                    "first answer; after it the key is forgotten (within a minute) and a request with it is new.",
    )
    http_max_body_bytes: int = Field(
        default=DEFAULT_MAX_BODY_BYTES, ge=1_024, le=64 * 1_048_576,
        description="The largest request body a route takes unless it sets its own limit; a larger one is "
                    "answered 413 before anything reads it.",
    )


@dataclass(frozen=True)
class ConsumerSpec:
    """A transactional consumer the service runs: its group name, topics and handler."""

    name: str
    topics: Sequence[Topic]
    handler: Handler


@dataclass
class ServiceRuntime:
    """The live resources of one service process, started and stopped by the app's lifespan."""

    name: str
    settings: ServiceSettings
    schema: Sequence[SchemaInstaller] = ()
    consumers: Sequence[ConsumerSpec] = ()
    pool: asyncpg.Pool = field(init=False)
    producer: AIOKafkaProducer = field(init=False)
    _tasks: dict[str, asyncio.Task[Any]] = field(init=False, default_factory=dict)

    async def start(self) -> None:
        """Open the pool, install the tables, start the producer, the relay and the consumers."""
        # Before anything opens: a service that cannot attest, or trusts nothing, must not start.
        attester, anchors = self.settings.attester(), self.settings.anchors()
        self.pool = await create_pool(self.settings.database_url, max_size=self.settings.database_pool_size)
        await eventstore.install(self.pool)
        await commands.install(self.pool)
        for install in self.schema:
            await install(self.pool)
        self.producer = await start_producer(self.settings)
        relay = OutboxRelay(self.pool, self.producer, self.settings, attester=attester)
        self._tasks["relay"] = asyncio.create_task(relay.run(), name=f"{self.name}-relay")
        self._tasks["idempotency-keys"] = asyncio.create_task(commands.keep_forgetting_expired_answers(
            self.pool, timedelta(seconds=self.settings.idempotency_key_ttl_seconds)), name=f"{self.name}-keys")
        for spec in self.consumers:
            consumer = TransactionalConsumer(
                name=spec.name, topics=spec.topics, pool=self.pool, kafka=self.settings, handler=spec.handler,
                trust=anchors,
                dead_letters=DeadLetterPublisher(self.producer, topic_prefix=self.settings.topic_prefix,
                                                 consumer=spec.name),
            )
            self._tasks[spec.name] = asyncio.create_task(consumer.run(), name=spec.name)
        for task in self._tasks.values():
            task.add_done_callback(self._report_stopped)

    async def stop(self) -> None:
        """Stop consumers and relay (their open transactions roll back), then the producer and pool."""
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        await self.producer.stop()
        await self.pool.close()

    async def health(self) -> dict[str, str]:
        """`ok` per component, or why not."""
        checks: dict[str, str] = {}
        try:
            async with self.pool.acquire(timeout=2) as conn:
                await conn.fetchval("SELECT 1")
            checks["database"] = "ok"
        except Exception as exc:  # noqa: BLE001 - any failure to answer is "not ok"
            checks["database"] = f"unavailable ({type(exc).__name__})"
        for name, task in self._tasks.items():
            if not task.done():
                checks[name] = "ok"
            else:
                failure = None if task.cancelled() else task.exception()
                checks[name] = f"stopped ({failure})" if failure else "stopped"
        return checks

    def _report_stopped(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: %s stopped: %s", self.name, task.get_name(), task.exception())


def service_app(
    runtime: ServiceRuntime,
    *,
    title: str,
    routers: Sequence[APIRouter],
    access: Access,
    body_limits: Mapping[str, int] | None = None,
) -> FastAPI:
    """The FastAPI app of a service: its routers plus health, metrics, OpenAPI and AsyncAPI documents.

    The AsyncAPI document says what the runtime really touches: the topic the service owns (its relay
    writes it), `dead-letters` when it runs consumers (each refuses records there), and what they read.
    Every request body is held to `ANYAM_HTTP_MAX_BODY_BYTES`, or to `body_limits[path template]`."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    # The built-in document routes are replaced by ones behind a token (SPEC §10: only /health is open),
    # and the interactive docs pages are off because they load scripts from a CDN.
    app = FastAPI(title=title, version="1.0.0", lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)
    install_problem_handlers(app)
    metrics = Metrics(runtime.name)
    # Before anything else reads the request (no guard, parser or handler sees a body over the limit);
    # only the metrics, added after so they run around it, count its refusals.
    app.add_middleware(BodyLimit, default=runtime.settings.http_max_body_bytes, per_route=body_limits)
    metrics.install(app)
    reader = access.allow(STAFF, AUDITOR)
    app.include_router(observability_router(metrics, runtime.health, reader))
    for router in routers:
        app.include_router(router)

    @app.get("/openapi.json", tags=["documents"], summary="This service's OpenAPI document")
    async def openapi_document(_: Principal = Depends(reader)) -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/asyncapi.json", tags=["documents"], summary="This service's AsyncAPI document")
    async def asyncapi(_: Principal = Depends(reader)) -> JSONResponse:
        return JSONResponse(service_asyncapi(runtime, bootstrap=runtime.settings.bootstrap_servers,
                                             prefix=runtime.settings.topic_prefix))

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = exact_openapi(app, guard_reads_database=access.reads_database)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    app.state.runtime = runtime
    return app


def service_asyncapi(runtime: ServiceRuntime, *, bootstrap: str | None = None, prefix: str = "") -> dict[str, Any]:
    """The AsyncAPI document of the service `runtime` runs (`bootstrap`: the published placeholder if None)."""
    reads = {topic for consumer in runtime.consumers for topic in consumer.topics}
    writes = written_topics(runtime.name, dead_letters=bool(runtime.consumers))
    where = {"bootstrap": bootstrap} if bootstrap is not None else {}
    return asyncapi_document(runtime.name, writes=writes, reads=reads, prefix=prefix, **where)


def run_service(app: FastAPI, settings: ServiceSettings) -> None:
    """Serve `app` until SIGTERM/SIGINT; uvicorn then drains requests and runs the lifespan's shutdown,
    which cancels consumers mid-batch (their transactions roll back, offsets stay where they were)."""
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # uvicorn stops gracefully on SIGTERM/SIGINT, then restores the handlers it found and raises the
    # signal again; under the default handler that kills the process (exit 143), so a finished
    # graceful stop would look like a crash to Docker and Kubernetes. The handler it finds exits 0.
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, _exit_after_graceful_stop)
    # uvloop: the process is CPU-bound under load, and asyncio's own transport and selector code
    # was a large share of it; on uvloop the service takes more commands a second, and the
    # pipeline's end-to-end latency is no worse (docs/performance.md).
    uvicorn.run(app, host=settings.http_host, port=settings.http_port, log_level="info", access_log=False,
                loop="uvloop", timeout_keep_alive=KEEP_ALIVE_SECONDS)


def _exit_after_graceful_stop(signum: int, _frame: object) -> None:
    raise SystemExit(0)
