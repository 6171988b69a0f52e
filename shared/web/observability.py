"""`/health` and `/metrics` (Prometheus text format) for every service."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Depends, FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.web.access import Principal

HealthCheck = Callable[[], Awaitable[dict[str, str]]]


class Metrics:
    """One registry per app, so two services in one process (tests) don't mix their figures."""

    def __init__(self, service: str) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "anyam_http_requests", "HTTP requests answered", ["service", "method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "anyam_http_request_seconds", "Time to answer an HTTP request", ["service", "method", "route"],
            registry=self.registry, buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.service = service

    def install(self, app: FastAPI) -> None:
        """Count and time every request by its route template (never by its raw path, which holds ids)."""
        app.add_middleware(_MeasureRequests, metrics=self)


class _MeasureRequests:
    """`Metrics` as a plain ASGI middleware.

    Not `@app.middleware("http")`: Starlette's BaseHTTPMiddleware runs every request in a task
    group of its own and streams the response through memory channels: work on every request
    that a plain ASGI middleware does not do.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets when the app raises before answering

        async def noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noting_status)
        finally:
            # The router put the matched route into the scope (it is shared with the app).
            template = getattr(scope.get("route"), "path", "unmatched")
            metrics = self.metrics
            metrics.requests.labels(metrics.service, scope["method"], template, str(status)).inc()
            metrics.latency.labels(metrics.service, scope["method"], template).observe(time.perf_counter() - started)


def observability_router(
    metrics: Metrics, health: HealthCheck, reader: Callable[..., Awaitable[Principal]]
) -> APIRouter:
    """`GET /health` (no token: load balancers call it) and `GET /metrics` (any reader's token)."""
    router = APIRouter(tags=["operations"])

    health_body = {"application/json": {"schema": {
        "type": "object", "required": ["status"], "additionalProperties": {"type": "string"},
        "properties": {"status": {"enum": ["ok", "degraded"]}},
        "description": "`status`, and `ok` or why not for each component (database, relay, consumers).",
    }}}

    @router.get("/health", summary="Whether the service and its database answer",
                responses={200: {"description": "Every component is ok.", "content": health_body},
                           503: {"description": "A component is not ok.", "content": health_body}})
    async def get_health() -> JSONResponse:
        checks = await health()
        healthy = all(value == "ok" for value in checks.values())
        return JSONResponse({"status": "ok" if healthy else "degraded", **checks}, status_code=200 if healthy else 503)

    @router.get("/metrics", summary="Prometheus metrics", response_class=Response,
                responses={200: {"description": "The Prometheus text format.",
                                 "content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}}})
    async def get_metrics(_: Principal = Depends(reader)) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router
