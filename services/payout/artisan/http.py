"""The artisan page's doors: staff make, list and revoke links (JSON); the link opens her page (HTML).

`GET /saya/{secret}` takes no token and no artisan id: the artisan is the one the link's row names,
so the link opens her page and nothing else. Unknown, revoked and malformed links all get the same
404 page, and text not shaped like a secret never reaches the database.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from services.payout.artisan import links
from services.payout.artisan.queries import read_page
from services.payout.artisan.view import STYLE_HASH, render_not_found, render_page
from services.payout.pages import language
from shared.domain import NotFound
from shared.service import ServiceRuntime
from shared.timeutil import to_wib, wib_now
from shared.web.access import AUDITOR, STAFF, Access, Principal
from shared.web.inputs import LookupId
from shared.web.openapi import problems

#: Where an artisan's page lives; the rest of the path is the link's secret.
PAGE_PREFIX = "/saya"
#: Her phone may keep the page for an hour (and show it with no signal); a reload online asks again.
PAGE_CACHE = "private, max-age=3600"

_HTML = {"text/html": {"schema": {"type": "string"}}}


def _page_headers(response: Response, cache: str) -> Response:
    response.headers["Cache-Control"] = cache
    # The link is the key to her page: no other site learns it from a Referer, no search engine lists it.
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Robots-Tag"] = "noindex, nofollow"
    response.headers["X-Content-Type-Options"] = "nosniff"
    # Nothing to load from anywhere, no script, only the page's own style sheet, never framed.
    response.headers["Content-Security-Policy"] = (
        f"default-src 'none'; style-src '{STYLE_HASH}'; img-src data:; form-action 'none'; "
        "frame-ancestors 'none'; base-uri 'none'"
    )
    return response


def _iso(moment: datetime | None) -> str | None:
    return to_wib(moment).isoformat() if moment is not None else None


def _link_body(link: links.Link) -> dict[str, Any]:
    return {"link_id": link.link_id, "artisan_id": link.artisan_id, "created_at": _iso(link.created_at),
            "revoked_at": _iso(link.revoked_at), "active": link.revoked_at is None}


def artisan_router(runtime: ServiceRuntime, access: Access, *, page_url: Callable[[Request], str]) -> APIRouter:
    """The routes; `page_url(request)` is the address phones reach payout at (no trailing slash)."""
    router = APIRouter(tags=["artisan page"])
    staff = access.allow(STAFF)
    reader = access.allow(STAFF, AUDITOR)

    @router.post(
        "/artisans/{artisan_id}/links", status_code=201, responses=problems(404),
        summary="Make a link that opens this artisan's own page (its only copy, and a QR code to print)",
    )
    async def create_link(artisan_id: LookupId, request: Request, _: Principal = Depends(staff)) -> JSONResponse:
        async with runtime.pool.acquire() as conn, conn.transaction():
            if not await links.is_known(conn, artisan_id):
                raise NotFound("artisan-unknown",
                               f"Payout has not heard of artisan {artisan_id}: no enrolment, piece or payout.")
            link, secret = await links.create(conn, artisan_id, wib_now())
        url = f"{page_url(request)}{PAGE_PREFIX}/{secret}"
        # The secret is not kept: this answer is the only place the link exists. It is never logged.
        answer = {"url": url, "qr_svg": links.qr_svg(url), "card_svg": links.card_svg(url, artisan_id)}
        return JSONResponse(_link_body(link) | answer, status_code=201,
                            headers={"Cache-Control": "no-store"})

    @router.get("/artisans/{artisan_id}/links", summary="An artisan's links: when each was made and revoked")
    async def list_links(artisan_id: LookupId, _: Principal = Depends(reader)) -> JSONResponse:
        async with runtime.pool.acquire() as conn:
            found = await links.links_of(conn, artisan_id)
        return JSONResponse({"artisan_id": artisan_id, "links": [_link_body(link) for link in found]})

    @router.delete("/artisans/{artisan_id}/links/{link_id}", responses=problems(404),
                   summary="Revoke a link: it opens nothing from now on (revoking again changes nothing)")
    async def revoke_link(artisan_id: LookupId, link_id: LookupId, _: Principal = Depends(staff)) -> JSONResponse:
        async with runtime.pool.acquire() as conn:
            link = await links.revoke(conn, artisan_id, link_id, wib_now())
        if link is None:
            raise NotFound("link-not-found", f"Artisan {artisan_id} has no link {link_id}.")
        return JSONResponse(_link_body(link))

    @router.get(
        PAGE_PREFIX + "/{secret:path}", response_class=HTMLResponse,
        summary="An artisan's own page, opened by her link (no token: the link is the key)",
        responses={200: {"description": "Her page, in Bahasa Indonesia (`?lang=en`: English)", "content": _HTML},
                   404: {"description": "The link is unknown, revoked or malformed (one page for all three)",
                         "content": _HTML}},
    )
    async def artisan_page(
        secret: str, lang: str | None = Query(None, description="`id` (Bahasa Indonesia, the default) or `en`."),
    ) -> Response:
        lang = language(lang)
        page = None
        if links.plausible_secret(secret):  # anything else is answered without asking the database
            async with runtime.pool.acquire() as conn:
                artisan_id = await links.artisan_of(conn, secret)
                page = await read_page(conn, artisan_id) if artisan_id is not None else None
        if page is None:
            return _page_headers(HTMLResponse(render_not_found(lang), status_code=404), "no-store")
        return _page_headers(HTMLResponse(render_page(page, lang)), PAGE_CACHE)

    return router
