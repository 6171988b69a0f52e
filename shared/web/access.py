"""Bearer tokens and the roles of SPEC §10: staff, auditor, collaborator:<collaborator_id>.

Staff and auditor tokens are configured secrets. A collaborator's token is
derived from a shared secret (HMAC) and stamped with when it was issued,
`col.<collaborator_id>.<issued_at, unix seconds>.<mac>`, the mac the unpadded base64url of
HMAC-SHA256(secret, "collaborator:<id>:<issued_at>"), so every service can check it without a
shared database and `anyam collaborator token` can issue one offline. Whether that collaborator
exists and whether its tokens issued then were revoked is for the service that admits
collaborators to say (`Access(collaborator_check=...)`: production); see docs/tokens.md.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from fastapi import Request
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.web.problems import GUARD, Problem

STAFF, AUDITOR, COLLABORATOR = "staff", "auditor", "collaborator"
_COLLABORATOR_TOKEN_PREFIX = "col."
#: A token stamped further ahead of the checking clock than this is refused (until then): issuers'
#: clocks drift a little, but a token from the far future would outlive every revocation.
MAX_CLOCK_SKEW_SECONDS = 300
#: Unix seconds, as written in a token: at most 11 digits (beyond the year 5000), no sign, no leading zero.
_MAX_ISSUED_DIGITS = 11

#: Whether a service admits a collaborator's token: `(collaborator_id, issued_at) -> bool`.
CollaboratorCheck = Callable[[str, datetime], Awaitable[bool]]


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
    #: When a collaborator's token was issued (whole seconds, UTC); not part of who is calling.
    issued_at: datetime | None = field(default=None, compare=False)

    @property
    def name(self) -> str:
        """The role as SPEC §10 writes it, e.g. `collaborator:col_01J...`."""
        return f"{self.role}:{self.collaborator_id}" if self.collaborator_id else self.role


def collaborator_token(secret: str, collaborator_id: str, issued_at: datetime | None = None) -> str:
    """The bearer token of `collaborator_id` under `secret`, issued at `issued_at` (default: now).

    The issue time is kept to the whole second (rounded down); it must carry a time zone.
    """
    if issued_at is None:
        issued = int(time.time())
    elif issued_at.tzinfo is None or issued_at.utcoffset() is None:
        raise ValueError("issued_at must carry a time-zone offset")
    else:
        issued = int(issued_at.timestamp() // 1)
    if issued < 0:
        raise ValueError("issued_at must not be before 1970")
    return f"{_COLLABORATOR_TOKEN_PREFIX}{collaborator_id}.{issued}.{_mac(secret, collaborator_id, str(issued))}"


def read_collaborator_token(secret: str, token: str) -> tuple[str, datetime] | None:
    """The collaborator and issue time a token of ours names; None for anything else (old two-part
    tokens included: their MAC covers no issue time, so one could never be revoked on its own)."""
    if not token.startswith(_COLLABORATOR_TOKEN_PREFIX) or not token.isascii():
        return None
    rest, _, mac = token[len(_COLLABORATOR_TOKEN_PREFIX):].rpartition(".")
    collaborator_id, _, issued = rest.rpartition(".")
    if not collaborator_id or not _canonical_seconds(issued):
        return None
    if not hmac.compare_digest(mac, _mac(secret, collaborator_id, issued)):
        return None
    return collaborator_id, datetime.fromtimestamp(int(issued), UTC)


def _canonical_seconds(text: str) -> bool:
    # One spelling per moment: "0123" or "+123" would name the moment of "123" under another MAC.
    return (0 < len(text) <= _MAX_ISSUED_DIGITS and text.isascii() and text.isdigit()
            and (text == "0" or not text.startswith("0")))


def _mac(secret: str, collaborator_id: str, issued: str) -> str:
    message = f"collaborator:{collaborator_id}:{issued}".encode()
    return base64.urlsafe_b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode().rstrip("=")


class Access:
    """Authenticates bearer tokens and builds FastAPI dependencies that admit given roles."""

    def __init__(self, settings: AccessSettings, *, collaborator_check: CollaboratorCheck | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        """`collaborator_check`: asked, on every request with a collaborator's token that `allow` sees,
        whether that collaborator exists and its token issued then still counts; no means 401. Without
        it (services that admit no collaborator), a well-formed token only ever meets a 403."""
        self._staff = settings.staff_token.get_secret_value()
        self._auditor = settings.auditor_token.get_secret_value()
        self._secret = settings.token_secret.get_secret_value()
        self._collaborator_check = collaborator_check
        self._clock = clock

    @property
    def reads_database(self) -> bool:
        """Whether admitting a caller may ask the database (a collaborator's token is checked there)."""
        return self._collaborator_check is not None

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
        named = read_collaborator_token(self._secret, token)
        if named is not None:
            collaborator_id, issued_at = named
            if issued_at.timestamp() <= self._clock() + MAX_CLOCK_SKEW_SECONDS:
                return Principal(COLLABORATOR, collaborator_id, issued_at)
        raise _unauthorized("The bearer token is not valid.")

    async def admit(self, authorization: str | None) -> Principal:
        """`authenticate`, then, for a collaborator, the service's check: `Problem(401)` when it says no,
        worded as for any bad token, so that nobody learns whether the collaborator exists."""
        principal = self.authenticate(authorization)
        if principal.role == COLLABORATOR and self._collaborator_check is not None:
            assert principal.collaborator_id is not None and principal.issued_at is not None
            if not await self._collaborator_check(principal.collaborator_id, principal.issued_at):
                raise _unauthorized("The bearer token is not valid.")
        return principal

    def allow(self, *roles: str) -> Callable[[Request], Awaitable[Principal]]:
        """A dependency admitting only `roles`: 401 without a valid token, 403 for another role."""

        # async (staff and auditor tokens await nothing): FastAPI runs a plain `def` dependency in a worker
        # thread, a thread hand-off (and its lock waits) on every request.
        # A revoked or unknown collaborator is refused (401) before its role is: on every route alike.
        async def dependency(request: Request) -> Principal:
            principal = await self.admit(request.headers.get("authorization"))
            if principal.role not in roles:
                raise Problem(403, "forbidden", f"The {principal.role} role may not do this.")
            return principal

        setattr(dependency, GUARD, True)  # so a body FastAPI cannot parse is refused by role first
        return dependency


def _unauthorized(detail: str) -> Problem:
    # Says nothing about whether the thing asked for exists (SPEC §10).
    return Problem(401, "unauthorized", detail, headers={"WWW-Authenticate": "Bearer"})
