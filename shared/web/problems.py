"""RFC 9457 problem details: every error a person or program gets back says what is wrong.

Bad input is always a 4xx. Messages name fields and rules, never the values
sent, because those may be personal data (a NIK, a phone number).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.db import DATABASE_UNAVAILABLE
from shared.domain import Refused

log = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"


class Problem(Exception):
    """An error answered as problem details; `code` is the machine-readable reason."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.headers = headers
        self.status = status
        self.code = code
        self.title = title or code.replace("-", " ").capitalize()
        self.detail = detail
        self.extra = extra

    @classmethod
    def from_refusal(cls, refusal: Refused) -> Problem:
        """The problem that answers a domain refusal: its status, code and message."""
        return cls(refusal.status, refusal.code, refusal.message)

    def body(self) -> dict[str, Any]:
        """The problem-details document."""
        return {
            "type": f"urn:anyam:problem:{self.code}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
            **self.extra,
        }

    def response(self) -> JSONResponse:
        """The HTTP response carrying this problem."""
        return problem_response(self.body(), headers=self.headers)


def problem_response(body: dict[str, Any], *, headers: dict[str, str] | None = None) -> JSONResponse:
    """A JSON response with the problem+json media type and the status the body names."""
    return JSONResponse(body, status_code=body["status"], media_type=PROBLEM_CONTENT_TYPE, headers=headers)


def _validation_problem(errors: list[Any]) -> Problem:
    named = []
    for error in errors:
        location = [str(part) for part in error.get("loc", ()) if part != "body"]
        named.append({"field": ".".join(location) or "body", "problem": error.get("msg", "invalid")})
    summary = "; ".join(f"`{e['field']}`: {e['problem']}" for e in named[:5])
    return Problem(422, "invalid-request", f"The request is not valid: {summary}", errors=named)


#: Marks a FastAPI dependency that decides who may call a route (`shared.web.access.Access.allow` sets it).
GUARD = "anyam_guard"


async def _refusal_of_caller(request: Request) -> Problem | None:
    """The 401/403 the matched route's guard gives this caller, if it refuses them.

    FastAPI reads a JSON body before it runs any dependency, so a body it cannot parse would
    otherwise be answered (400/422) before the token is even looked at (SPEC §10).
    """
    dependant = getattr(request.scope.get("route"), "dependant", None)
    pending = [dependant] if dependant is not None else []
    while pending:
        current = pending.pop()
        if getattr(current.call, GUARD, False):
            try:
                await current.call(request)
            except Problem as refusal:
                return refusal
        pending.extend(current.dependencies)
    return None


def install_problem_handlers(app: FastAPI) -> None:
    """Answer every error of `app` as problem details; an unexpected one as a 500 that leaks nothing."""

    @app.exception_handler(Problem)
    async def _problem(_: Request, exc: Problem) -> JSONResponse:
        return exc.response()

    @app.exception_handler(Refused)
    async def _refused(_: Request, exc: Refused) -> JSONResponse:
        return Problem.from_refusal(exc).response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        refusal = await _refusal_of_caller(request)
        return (refusal or _validation_problem(list(exc.errors()))).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and (refusal := await _refusal_of_caller(request)) is not None:
            return refusal.response()  # a body FastAPI could not even read, from a caller refused anyway
        codes = {404: "not-found", 405: "method-not-allowed", 401: "unauthorized", 403: "forbidden",
                 413: "body-too-large"}
        code = codes.get(exc.status_code, "http-error")
        detail = exc.detail if isinstance(exc.detail, str) else code
        return Problem(exc.status_code, code, detail, headers=getattr(exc, "headers", None)).response()

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, DATABASE_UNAVAILABLE):
            # The database restarting or unreachable: nothing was committed, and the same request
            # (with its Idempotency-Key) will succeed once the pool has reconnected.
            log.warning("database unavailable (%s) while serving a request", type(exc).__name__)
            return Problem(
                503, "database-unavailable", "The service's database is unavailable; nothing was changed. "
                "Retry the same request shortly.", headers={"Retry-After": "1"},
            ).response()
        # The type only: an exception's text may quote personal data.
        log.error("unexpected %s while serving a request", type(exc).__name__)
        return Problem(500, "internal-error", "Something went wrong on our side; nothing was changed.").response()
