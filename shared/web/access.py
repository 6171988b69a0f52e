"""Bearer tokens and the roles of SPEC §10: staff, auditor, collaborator:<collaborator_id>.

Staff and auditor tokens are configured secrets. A collaborator's token is
derived from a shared secret (HMAC), so every service can check it without a
shared database, and `anyam collaborator token` can issue one offline.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import Request
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.web.problems import GUARD, Problem

STAFF, AUDITOR, COLLABORATOR = "staff", "auditor", "collaborator"
_COLLABORATOR_TOKEN_PREFIX = "col."


class AccessSettings(BaseSettings):
    """The tokens (`ANYAM_STAFF_TOKEN`, `ANYAM_AUDITOR_TOKEN`) and the collaborator-token secret."""

    model_config = SettingsConfigDict(env_prefix="ANYAM_", extra="ignore")

    staff_token: SecretStr = Field(description="Bearer token of programme staff.")
    auditor_token: SecretStr = Field(description="Bearer token of auditors (read-only).")
    token_secret: SecretStr = Field(description="Secret from which collaborators' tokens are derived.")


@dataclass(frozen=True)
class Principal:
    """Who is calling: a role and, for a collaborator, which one."""

    role: str
    collaborator_id: str | None = None

    @property
    def name(self) -> str:
        """The role as SPEC §10 writes it, e.g. `collaborator:col_01J...`."""
        return f"{self.role}:{self.collaborator_id}" if self.collaborator_id else self.role


def collaborator_token(secret: str, collaborator_id: str) -> str:
    """The bearer token of `collaborator_id` under `secret`."""
    mac = hmac.new(secret.encode(), f"collaborator:{collaborator_id}".encode(), hashlib.sha256).digest()
    return f"{_COLLABORATOR_TOKEN_PREFIX}{collaborator_id}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"


class Access:
    """Authenticates bearer tokens and builds FastAPI dependencies that admit given roles."""

    def __init__(self, settings: AccessSettings) -> None:
        self._staff = settings.staff_token.get_secret_value()
        self._auditor = settings.auditor_token.get_secret_value()
        self._secret = settings.token_secret.get_secret_value()

    def authenticate(self, authorization: str | None) -> Principal:
        """The principal a header's token names; `Problem(401)` for a missing or unknown token."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized("Send `Authorization: Bearer <token>`.")
        token = token.strip()
        if not token.isascii():
            # compare_digest refuses non-ASCII text; no token we issue has any.
            raise _unauthorized("The bearer token is not valid.")
        if hmac.compare_digest(token, self._staff):
            return Principal(STAFF)
        if hmac.compare_digest(token, self._auditor):
            return Principal(AUDITOR)
        if token.startswith(_COLLABORATOR_TOKEN_PREFIX):
            collaborator_id = token[len(_COLLABORATOR_TOKEN_PREFIX):].rpartition(".")[0]
            if collaborator_id and hmac.compare_digest(token, collaborator_token(self._secret, collaborator_id)):
                return Principal(COLLABORATOR, collaborator_id)
        raise _unauthorized("The bearer token is not valid.")

    def allow(self, *roles: str) -> Callable[[Request], Awaitable[Principal]]:
        """A dependency admitting only `roles`: 401 without a valid token, 403 for another role."""

        # async, though it awaits nothing: FastAPI runs a plain `def` dependency in a worker thread,
        # a thread hand-off on every request (py-spy: its lock waits were a visible share of POST /pieces).
        async def dependency(request: Request) -> Principal:
            principal = self.authenticate(request.headers.get("authorization"))
            if principal.role not in roles:
                raise Problem(403, "forbidden", f"The {principal.role} role may not do this.")
            return principal

        setattr(dependency, GUARD, True)  # so a body FastAPI cannot parse is refused by role first
        return dependency


def _unauthorized(detail: str) -> Problem:
    # Says nothing about whether the thing asked for exists (SPEC §10).
    return Problem(401, "unauthorized", detail, headers={"WWW-Authenticate": "Bearer"})
