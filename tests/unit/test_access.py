"""Collaborators' bearer tokens (docs/tokens.md): stamped with when they were issued, checked offline,
and admitted by a service only when its check says the collaborator and that issue time still count."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shared.web.access import COLLABORATOR, STAFF, Access, AccessSettings, Principal, collaborator_token
from shared.web.problems import Problem

SECRET = "the-token-secret"
ISSUED = datetime(2024, 3, 21, 10, 0, 0, tzinfo=UTC)


def access(**kwargs) -> Access:
    return Access(AccessSettings(staff_token="staff-token", auditor_token="auditor-token", token_secret=SECRET),
                  **kwargs)


def who(token: str, checker: Access | None = None) -> Principal:
    return (checker or access()).authenticate(f"Bearer {token}")


def refused(token: str, checker: Access | None = None) -> bool:
    try:
        who(token, checker)
    except Problem as problem:
        assert problem.status == 401
        return True
    return False


def test_a_token_names_its_collaborator_and_when_it_was_issued():
    principal = who(collaborator_token(SECRET, "col_1", ISSUED + timedelta(microseconds=900_000)))
    assert principal == Principal(COLLABORATOR, "col_1")
    assert principal.name == "collaborator:col_1"
    assert principal.issued_at == ISSUED  # whole seconds, rounded down


def test_a_token_issued_without_a_time_is_issued_now():
    before = datetime.now(UTC).replace(microsecond=0)
    principal = who(collaborator_token(SECRET, "col_1"))
    assert before <= principal.issued_at <= datetime.now(UTC)


def test_ids_with_dots_and_colons_still_name_exactly_one_collaborator():
    for collaborator_id in ("col.a.b", "col:1", "col_1.123"):
        assert who(collaborator_token(SECRET, collaborator_id, ISSUED)).collaborator_id == collaborator_id


def test_a_token_for_another_id_or_with_an_edited_issue_time_is_refused():
    token = collaborator_token(SECRET, "col_1", ISSUED)
    prefix, collaborator_id, issued, mac = token.split(".")
    stamp = int(ISSUED.timestamp())
    for edited in (
        f"{prefix}.col_2.{issued}.{mac}",  # someone else's id under col_1's MAC
        f"{prefix}.{collaborator_id}.{stamp + 1}.{mac}",  # issued later, to outlive a revocation
        f"{prefix}.{collaborator_id}.0{issued}.{mac}",  # the same moment, spelt otherwise
        f"{prefix}.{collaborator_id}.+{issued}.{mac}",
        f"{prefix}.{collaborator_id}.{issued}.{mac[:-1]}",
        collaborator_token("another-secret", "col_1", ISSUED),
    ):
        assert refused(edited), edited
    assert not refused(token)


def test_the_documented_formula_and_worked_example_give_the_token_anyam_issues():
    """docs/tokens.md's formula, computed with the standard library alone, reproduces issued tokens."""
    document = (Path(__file__).parents[2] / "docs" / "tokens.md").read_text()
    example = document.split("<!-- token-example -->", 1)[1]
    secret, collaborator_id, issued_at, token = (
        re.search(rf"^\| {re.escape(label)} \| `([^`]+)`", example, re.M).group(1)
        for label in ("`ANYAM_TOKEN_SECRET`", "`collaborator_id`", "`issued_at`", "token"))

    def documented(secret: str, collaborator_id: str, issued_at: str) -> str:
        mac = hmac.new(secret.encode(), f"collaborator:{collaborator_id}:{issued_at}".encode(), hashlib.sha256)
        return f"col.{collaborator_id}.{issued_at}.{base64.urlsafe_b64encode(mac.digest()).decode().rstrip('=')}"

    issued = datetime.fromtimestamp(int(issued_at), UTC)
    issued_by_anyam = collaborator_token(secret, collaborator_id, issued)
    assert documented(secret, collaborator_id, issued_at) == token == issued_by_anyam
    # Not only for the example: a secret and an id with characters outside ASCII's letters, too.
    for secret, collaborator_id in ((SECRET, "col_1"), ("s3cr3t+/=_-é", "col.a:b")):
        assert documented(secret, collaborator_id, "1711000000") == collaborator_token(
            secret, collaborator_id, datetime.fromtimestamp(1711000000, UTC))


def test_an_old_format_token_without_an_issue_time_is_refused():
    # `col.<id>.<HMAC(secret, "collaborator:<id>")>`: valid until this change, never revocable on its own.
    for collaborator_id in ("col_1", "col_1.1700000000"):
        mac = hmac.new(SECRET.encode(), f"collaborator:{collaborator_id}".encode(), hashlib.sha256).digest()
        old = f"col.{collaborator_id}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"
        assert refused(old), old


def test_a_token_stamped_in_the_far_future_is_refused_until_then():
    issued = ISSUED.timestamp()
    token = collaborator_token(SECRET, "col_1", ISSUED)
    assert refused(token, access(clock=lambda: issued - 3600))  # would outlive every revocation
    assert not refused(token, access(clock=lambda: issued - 60))  # an issuer's clock a minute fast


def test_issuing_for_a_naive_time_is_an_error_not_a_guess():
    with pytest.raises(ValueError, match="time-zone"):
        collaborator_token(SECRET, "col_1", datetime(2024, 3, 21, 10, 0))


def test_the_services_check_decides_whether_a_valid_token_is_admitted_with_401_alike():
    asked: list[tuple[str, datetime]] = []

    async def check(collaborator_id: str, issued_at: datetime) -> bool:
        asked.append((collaborator_id, issued_at))
        return collaborator_id == "col_known"

    checker = access(collaborator_check=check)
    known = collaborator_token(SECRET, "col_known", ISSUED)
    unknown = collaborator_token(SECRET, "col_unknown", ISSUED)
    assert asyncio.run(checker.admit(f"Bearer {known}")).collaborator_id == "col_known"
    with pytest.raises(Problem) as refusal:
        asyncio.run(checker.admit(f"Bearer {unknown}"))
    with pytest.raises(Problem) as garbage:
        asyncio.run(checker.admit("Bearer not-a-token"))
    # Nothing tells an unknown collaborator from a bad token.
    assert refusal.value.status == garbage.value.status == 401
    assert refusal.value.body() == garbage.value.body()
    assert asked == [("col_known", ISSUED), ("col_unknown", ISSUED)]
    # Staff tokens are never put to the collaborators' check.
    assert asyncio.run(checker.admit("Bearer staff-token")) == Principal(STAFF)
    assert len(asked) == 2
