"""Running a service in the test process over real HTTP, on the session's broker and PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import uvicorn
from fastapi import FastAPI

from shared.contracts.codec import CONTENT_TYPE_HEADER
from shared.contracts.envelope import CONTENT_TYPE
from shared.contracts.provenance import Attester, TrustAnchors, new_service_keys, signing_key_text
from shared.service import KEEP_ALIVE_SECONDS
from shared.settings import KafkaSettings

#: The session's signing key of each service run in the test process, and the anchors trusting them
#: (`tests/conftest.py` exports the anchors as ANYAM_TRUST_ANCHORS, so every reader trusts them).
SERVICE_KEYS = new_service_keys()
TRUST = TrustAnchors.of(SERVICE_KEYS)


@dataclass(frozen=True)
class Tokens:
    staff: str
    auditor: str
    secret: str

    def settings(self) -> dict[str, str]:
        return {"staff_token": self.staff, "auditor_token": self.auditor, "token_secret": self.secret}


def new_tokens() -> Tokens:
    return Tokens(secrets.token_urlsafe(24), secrets.token_urlsafe(24), secrets.token_urlsafe(24))


def new_personal_data_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def service_settings(kafka: KafkaSettings, database_url: str, tokens: Tokens, service: str) -> dict[str, object]:
    """Keyword arguments common to every service's settings class, with `service`'s own signing key."""
    return {**kafka.model_dump(), "database_url": database_url, **tokens.settings(),
            "signing_key": signing_key_text(SERVICE_KEYS[service]), "trust_anchors": TRUST.setting()}


def attested_headers(service: str, value: bytes) -> list[tuple[str, bytes]]:
    """The headers `service`'s relay would send `value` with: what lets a test publish as that service."""
    return [(CONTENT_TYPE_HEADER, CONTENT_TYPE.encode()), *Attester(SERVICE_KEYS[service]).headers(value)]


@asynccontextmanager
async def serve(app: FastAPI, *, timeout: float = 60.0) -> AsyncIterator[str]:
    """Serve `app` with uvicorn on a free loopback port (lifespan included); yields its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on",
                                           timeout_keep_alive=KEEP_ALIVE_SECONDS))
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + timeout
    while not server.started:
        if task.done():
            task.result()  # raises what stopped the server
            raise RuntimeError("the server stopped before it started")
        if time.monotonic() > deadline:
            raise TimeoutError("the service did not start in time")
        await asyncio.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def client(base_url: str, token: str | None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30)
