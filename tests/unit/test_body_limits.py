"""Request bodies over their route's limit are refused 413 before anything reads them (shared/web/limits.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI, Request
from pydantic import BaseModel

from shared.web.limits import BodyLimit
from shared.web.problems import PROBLEM_CONTENT_TYPE, install_problem_handlers

LIMIT = 1_024


class Piece(BaseModel):
    note: str


def limited_app(seen: list[str]) -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)

    @app.post("/raw")
    async def raw(request: Request) -> dict[str, int]:
        seen.append("raw")
        return {"bytes": len(await request.body())}

    @app.post("/parsed")
    async def parsed(piece: Piece) -> dict[str, int]:
        seen.append("parsed")
        return {"chars": len(piece.note)}

    @app.post("/bulk/{batch}")
    async def bulk(batch: str, request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    app.add_middleware(BodyLimit, default=LIMIT, per_route={"/bulk/{batch}": 4 * LIMIT})
    return app


async def chunks(total: int, size: int = 256) -> AsyncIterator[bytes]:
    for start in range(0, total, size):
        yield b"x" * min(size, total - start)


def assert_too_large(response: httpx.Response) -> None:
    assert response.status_code == 413, response.text
    assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
    assert response.json()["code"] == "body-too-large"


@pytest.fixture
def seen() -> list[str]:
    return []


@pytest.fixture
async def client(seen: list[str]) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=limited_app(seen))
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as http:
        yield http


@pytest.mark.parametrize("path", ["/raw", "/parsed"])
async def test_a_declared_length_over_the_limit_is_refused_before_the_route_runs(client, seen, path):
    response = await client.post(path, content=b"{" + b" " * LIMIT + b"}")
    assert_too_large(response)
    assert seen == []


@pytest.mark.parametrize("path", ["/raw", "/parsed"])
async def test_a_body_streaming_past_the_limit_is_refused_when_it_passes_it(client, path):
    # No Content-Length: only counting the stream can tell.
    response = await client.post(path, content=chunks(3 * LIMIT), headers={"Content-Type": "application/json"})
    assert_too_large(response)


async def test_a_body_within_the_limit_is_read_whole(client):
    response = await client.post("/raw", content=chunks(LIMIT))
    assert response.status_code == 200 and response.json() == {"bytes": LIMIT}
    response = await client.post("/parsed", json={"note": "n" * 100})
    assert response.status_code == 200 and response.json() == {"chars": 100}


async def test_a_route_with_a_limit_of_its_own_takes_what_the_default_refuses(client):
    body = b"x" * (2 * LIMIT)
    assert (await client.post("/bulk/b1", content=body)).json() == {"bytes": 2 * LIMIT}
    assert_too_large(await client.post("/raw", content=body))
    assert_too_large(await client.post("/bulk/b1", content=b"x" * (4 * LIMIT + 1)))
