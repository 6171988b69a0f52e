"""`/health` and `/metrics` (Prometheus text format) for every service."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

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

        @app.middleware("http")
        async def _measure(request: Request, call_next):  # type: ignore[no-untyped-def]
            started = time.perf_counter()
            response = await call_next(request)
            route = request.scope.get("route")
            template = getattr(route, "path", "unmatched")
            self.requests.labels(self.service, request.method, template, str(response.status_code)).inc()
            self.latency.labels(self.service, request.method, template).observe(time.perf_counter() - started)
            return response


def observability_router(
    metrics: Metrics, health: HealthCheck, reader: Callable[..., Principal]
) -> APIRouter:
    """`GET /health` (no token: load balancers call it) and `GET /metrics` (any reader's token)."""
    router = APIRouter(tags=["operations"])

    @router.get("/health", summary="Whether the service and its database answer")
    async def get_health() -> JSONResponse:
        checks = await health()
        healthy = all(value == "ok" for value in checks.values())
        return JSONResponse({"status": "ok" if healthy else "degraded", **checks}, status_code=200 if healthy else 503)

    @router.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def get_metrics(_: Principal = Depends(reader)) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router
