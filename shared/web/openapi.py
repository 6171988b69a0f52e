"""Each service's OpenAPI document, exact about who may call and how every refusal looks.

FastAPI documents the happy path and a `422 HTTPValidationError` that no
client ever receives. Our answers are different: every refusal is an RFC 9457
problem document (`shared.web.problems.Problem`) with a `code`, every route but
`/health` wants a bearer token (SPEC §10), and each refusal a route can give
comes from a mechanism we can name: the route's guard (401/403), parsing
(422), the body limit (413), the command runner (400/409/422 for its
`Idempotency-Key`), the database (503), or the route's own domain refusals,
which a route declares with `responses=problems(...)`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel, ConfigDict, Field

from shared.web.problems import GUARD, PROBLEM_CONTENT_TYPE

BEARER = "bearer"
PROBLEM_SCHEMA = "Problem"
_PROBLEM_REF = {"$ref": f"#/components/schemas/{PROBLEM_SCHEMA}"}

#: What each refusal means, for the documents' readers.
REFUSALS = {
    400: "The request cannot be read as sent (e.g. an empty `Idempotency-Key`, or a body that is not JSON).",
    401: "No valid bearer token (`WWW-Authenticate: Bearer`); says nothing about whether the thing exists.",
    403: "The token's role may not do this.",
    404: "The record named does not exist.",
    409: "The request conflicts with the record's state (or, for a command, it was changed by many requests at "
         "once: code `busy`, try again).",
    410: "Gone for good.",
    413: "The request body is over the route's size limit; it was not read.",
    422: "The request is not valid: `code` says why (`invalid-request` names each field in `errors`; "
         "`idempotency-key-reused` when the key was used for a different request).",
    429: "Too many of the caller's requests were refused lately: wait `Retry-After` seconds.",
    503: "The service's database is unavailable; nothing was changed: retry the same request after `Retry-After`.",
}
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}}
_CHALLENGE = {"WWW-Authenticate": {"description": "`Bearer`.", "schema": {"type": "string"}}}
_HEADERS = {401: _CHALLENGE, 429: _RETRY_AFTER, 503: _RETRY_AFTER}

#: Routes that answer without reading the database: unless the guard itself reads it (it does where
#: collaborators' tokens are checked against the registry), they never answer 503.
_NO_DATABASE = {("GET", "/metrics"), ("GET", "/openapi.json"), ("GET", "/asyncapi.json"), ("GET", "/health")}


class FieldProblem(BaseModel):
    """One field of an invalid request: which, and what is wrong (never the value sent)."""

    field: str = Field(description="The field's path, dot-separated, e.g. `query.limit` or `capacity`.")
    problem: str


class ProblemDocument(BaseModel):
    """An RFC 9457 problem document, as `shared.web.problems.Problem.body()` makes it."""

    model_config = ConfigDict(title=PROBLEM_SCHEMA, extra="allow")

    type: str = Field(description="`urn:anyam:problem:<code>`.", pattern=r"^urn:anyam:problem:[a-z0-9-]+$")
    title: str
    status: int = Field(ge=400, le=599, description="The HTTP status, as sent.")
    detail: str = Field(description="What is wrong and what to do, for a person; never quotes values sent.")
    code: str = Field(description="The machine-readable reason.", pattern=r"^[a-z0-9-]+$")
    errors: list[FieldProblem] | None = Field(
        default=None, description="With code `invalid-request` only: each invalid field.")


def problem_response(status: int, description: str | None = None) -> dict[str, Any]:
    """The OpenAPI response object of a refusal with `status`."""
    response: dict[str, Any] = {
        "description": description or REFUSALS[status],
        "content": {PROBLEM_CONTENT_TYPE: {"schema": _PROBLEM_REF}},
    }
    if status in _HEADERS:
        response["headers"] = _HEADERS[status]
    return response


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: the refusals its own logic gives (beyond what every route of its kind gives)."""
    return {status: problem_response(status) for status in statuses}


def also_ok(description: str = "Already done: the record as it stands (nothing new happened).") -> dict[int | str, Any]:
    """`responses=` for a command that answers 200 when it changes nothing (its first time is 201)."""
    return {200: {"description": description, "content": {"application/json": {"schema": {"type": "object"}}}}}


def _guarded(route: APIRoute) -> bool:
    pending = [route.dependant]
    while pending:
        current = pending.pop()
        if getattr(current.call, GUARD, False):
            return True
        pending.extend(current.dependencies)
    return False


_ANY_TEXT = ({"type": "string"}, {"anyOf": [{"type": "string"}, {"type": "null"}]})


def _can_be_invalid(parameter: dict[str, Any]) -> bool:
    """Whether a value of `parameter` can fail validation: it is required, or more than any text."""
    schema = {key: value for key, value in parameter.get("schema", {}).items()
              if key not in ("title", "description", "default")}
    return parameter.get("required", False) or schema not in _ANY_TEXT


def _refusals_of(
    route: APIRoute, path: str, method: str, operation: dict[str, Any], *, guard_reads_database: bool
) -> set[int]:
    """The refusals every route like this one can give, by the mechanisms that give them."""
    refusals: set[int] = set()
    guarded = _guarded(route)
    if guarded:
        refusals |= {401, 403}
    parameters = operation.get("parameters", [])
    if any(_can_be_invalid(p) for p in parameters) or "requestBody" in operation:
        refusals.add(422)
    if "requestBody" in operation:
        refusals |= {400, 413}  # a body that cannot be parsed as sent; one over the limit
    if any(p["in"] == "header" and p["name"] == "Idempotency-Key" for p in parameters):
        refusals |= {400, 409, 422}  # an empty key; `busy`; a key reused for another request
    if (method, path) not in _NO_DATABASE or (guarded and guard_reads_database):
        refusals.add(503)
    return refusals


def exact_openapi(app: FastAPI, *, guard_reads_database: bool) -> dict[str, Any]:
    """`app`'s OpenAPI 3.1 document, with its security and every refusal as a problem document.

    `guard_reads_database`: whether the routes' guard asks the database (about collaborators' tokens),
    so that every guarded route may answer 503."""
    document = get_openapi(title=app.title, version=app.version, routes=app.routes, description=app.description)
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    problem_schema = ProblemDocument.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(problem_schema.pop("$defs", {}))
    schemas[PROBLEM_SCHEMA] = problem_schema
    document["components"]["securitySchemes"] = {
        BEARER: {"type": "http", "scheme": "bearer",
                 "description": "A staff, auditor or collaborator token (SPEC §10, docs/tokens.md)."},
    }
    for path, route in _routes(app.routes):
        for method in sorted(route.methods or ()):  # an APIRoute's are never None (GET when not given)
            operation = document["paths"][path][method.lower()]
            responses = operation["responses"]
            declared = {int(status) for status in route.responses if str(status).isdigit()}
            if 422 not in declared:
                responses.pop("422", None)  # FastAPI's HTTPValidationError: never what we send
            for status in _refusals_of(route, path, method, operation, guard_reads_database=guard_reads_database):
                if status not in declared:
                    responses[str(status)] = problem_response(status)
            if _guarded(route) or 401 in declared:
                operation["security"] = [{BEARER: []}]
    return document


def _routes(routes: Iterable[Any]) -> list[tuple[str, APIRoute]]:
    """Every documented route with its path, those of included routers too."""
    found = []
    for context in iter_route_contexts(list(routes)):
        route, path = context.original_route, context.path_format
        if isinstance(route, APIRoute) and route.include_in_schema and path is not None:
            found.append((path, route))
    return found
