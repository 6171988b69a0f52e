"""Request bodies held to a size before anything reads them: authentication, parsing, the handler.

A declared `Content-Length` over the route's limit is answered `413 body-too-large` at once, the
body never read; a body that streams past the limit (chunked, or longer than declared) stops being
read the moment it does. Either way the process holds at most one chunk of it.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.web.problems import Problem

#: What a request body may weigh unless its route says otherwise (`ANYAM_HTTP_MAX_BODY_BYTES`).
DEFAULT_MAX_BODY_BYTES = 1_048_576


class BodyTooLarge(StarletteHTTPException):
    """Raised from the body's stream once it passes the limit: an HTTP exception, so that FastAPI's
    body parsing lets it through to the problem handlers instead of calling it a parse error."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The request body is over the {limit:,}-byte limit of this route.")
        self.limit = limit


class BodyLimit:
    """ASGI middleware: `default` bytes per request body, or `per_route[path template]`."""

    def __init__(self, app: ASGIApp, *, default: int = DEFAULT_MAX_BODY_BYTES,
                 per_route: Mapping[str, int] | None = None) -> None:
        self.app = app
        self.default = default
        self.per_route = dict(per_route or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit_for(scope)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _refuse(send, limit)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def noting_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, noting_send)
        except BodyTooLarge:
            # Raised where no handler answered it (a route without FastAPI's); once a response has
            # begun there is nothing to add, and the server closes the connection, the body unread.
            if not started:
                await _refuse(send, limit)

    def _limit_for(self, scope: Scope) -> int:
        if self.per_route:
            for route in scope["app"].router.routes:
                match, _ = route.matches(scope)
                if match is Match.FULL:
                    return self.per_route.get(getattr(route, "path", ""), self.default)
        return self.default


async def _refuse(send: Send, limit: int) -> None:
    response = Problem(413, "body-too-large", BodyTooLarge(limit).detail,
                       headers={"Connection": "close"}).response()
    await send({"type": "http.response.start", "status": 413, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})
