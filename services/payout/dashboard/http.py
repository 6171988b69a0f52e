"""The dashboard's door: `GET /dashboard`, for staff and auditors, by bearer token or a cookie set from it."""

from __future__ import annotations

from urllib.parse import quote, unquote, urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import TypeAdapter, ValidationError

from services.payout.dashboard.queries import read_dashboard
from services.payout.dashboard.view import render_dashboard, render_refusal
from services.payout.pages import language
from shared.materials import DEFAULT_IDLE_WEEKS
from shared.service import ServiceRuntime
from shared.web.access import AUDITOR, STAFF, Access, Principal
from shared.web.inputs import ShortLabel
from shared.web.openapi import problems
from shared.web.problems import Problem

COOKIE = "anyam_token"
#: A browser forgets the token after a working day, even if it is never closed.
COOKIE_MAX_AGE = 12 * 60 * 60


_LABEL = TypeAdapter(ShortLabel)


def _scope(rusunawa: str | None) -> str | None:
    """The rusunawa the page is asked for, as a label; 422 when it cannot name one."""
    if rusunawa is None:
        return None
    try:
        return _LABEL.validate_python(rusunawa)
    except ValidationError:
        raise Problem(422, "invalid-request", "`rusunawa` must be a rusunawa's name (a short label).") from None


def _plausible_token(token: str) -> bool:
    # Tokens are printable ASCII; anything else cannot match, and the constant-time
    # comparison refuses non-ASCII text outright (it would be a 500, not a 401).
    return 0 < len(token) <= 1000 and token.isascii() and token.isprintable()


def _check(access: Access, token: str | None) -> Principal | None:
    """The principal a token names, or None for a missing or unknown one."""
    if token is None or not _plausible_token(token.strip()):
        return None
    try:
        return access.authenticate(f"Bearer {token.strip()}")
    except Problem:
        return None


def _secure_headers(response: Response) -> Response:
    # The page holds programme figures: never cached, never framed, and nothing it could load
    # from anywhere (the CSP makes "works offline" a rule the browser enforces).
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'none'; "
        "frame-ancestors 'none'; base-uri 'none'"
    )
    return response


def dashboard_router(runtime: ServiceRuntime, access: Access, *, idle_weeks: int = DEFAULT_IDLE_WEEKS) -> APIRouter:
    """`GET /dashboard` for staff and auditors, by bearer header, cookie or a one-time `?token=` link."""
    router = APIRouter(tags=["dashboard"])

    def refusal(status: int, lang: str, *, clear_cookie: bool) -> Response:
        response = HTMLResponse(render_refusal(status, lang), status_code=status)
        if status == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        if clear_cookie:  # a cookie that no longer opens the page is only confusing
            response.delete_cookie(COOKIE, path="/dashboard", httponly=True, samesite="strict")
        return _secure_headers(response)

    @router.get(
        "/dashboard", response_class=HTMLResponse, summary="The programme dashboard, a web page (staff and auditors)",
        responses={303: {"description": "`?token=` was valid: the cookie is set and the browser sent on"},
                   401: {"description": "No valid token (an HTML page saying how to open it)",
                         "content": {"text/html": {"schema": {"type": "string"}}}},
                   403: {"description": "A collaborator's token (an HTML page)",
                         "content": {"text/html": {"schema": {"type": "string"}}}},
                   **problems(422)},
    )
    async def dashboard(
        request: Request,
        lang: str | None = Query(None, description="`id` (Bahasa Indonesia, the default) or `en`."),
        # Checked after the token (`_scope`): who may not see the page learns nothing of what it would refuse.
        rusunawa: str | None = Query(None, description="Only this rusunawa (a registered name): its cohorts, and "
                                     "the pieces, money and runs of the residents who live there (default: all)."),
        token: str | None = Query(None, description="A staff or auditor token, for a link opened in a browser: "
                                  "it is moved into an HttpOnly cookie and the browser is redirected without it."),
    ) -> Response:
        lang = language(lang)
        scope = {"lang": lang} if lang == "en" else {}
        scope |= {"rusunawa": rusunawa} if rusunawa is not None else {}
        here = request.url.path + (f"?{urlencode(scope)}" if scope else "")
        if token is not None:
            principal = _check(access, token)
            if principal is None:
                return refusal(401, lang, clear_cookie=False)
            if principal.role not in (STAFF, AUDITOR):
                return refusal(403, lang, clear_cookie=False)
            # Out of the address bar, the history and any log of URLs: the token lives on in a cookie
            # only this page receives, that scripts cannot read and other sites cannot make us send.
            response = RedirectResponse(here, status_code=303)
            response.set_cookie(COOKIE, quote(token.strip(), safe=""), max_age=COOKIE_MAX_AGE, path="/dashboard",
                                httponly=True, samesite="strict", secure=request.url.scheme == "https")
            return _secure_headers(response)

        header = request.headers.get("authorization")
        cookie = request.cookies.get(COOKIE)
        if header is not None:
            scheme, _, value = header.partition(" ")
            principal = _check(access, value) if scheme.lower() == "bearer" else None
        else:
            principal = _check(access, unquote(cookie)) if cookie is not None else None
        if principal is None:
            return refusal(401, lang, clear_cookie=header is None and cookie is not None)
        if principal.role not in (STAFF, AUDITOR):
            return refusal(403, lang, clear_cookie=False)

        async with runtime.pool.acquire() as conn:
            data = await read_dashboard(conn, _scope(rusunawa), idle_weeks=idle_weeks)
        return _secure_headers(HTMLResponse(render_dashboard(data, lang)))

    return router

