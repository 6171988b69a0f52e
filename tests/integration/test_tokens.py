"""A collaborator's HTTP token (docs/tokens.md, SPEC §10): refused for a collaborator that does not
exist, and revocable on its own from a moment, effective from the very next request; on the real
broker and PostgreSQL, the service served in-process over real HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from anyam.collaborator import collaborator_app
from services.production.app import ProductionSettings, create_app
from shared.contracts.signing import generate_private_key, public_key_b64
from shared.web.access import collaborator_token
from tests.integration.test_production import Production, runner
from tests.services import client, new_tokens, serve, service_settings

#: What an admitted collaborator's unsigned submission gets, and reading its own rejections.
JUDGED = (422, "bad-signature", 200)
AN_HOUR_AGO = datetime.now(UTC) - timedelta(hours=1)


@pytest.fixture
async def production(kafka_settings, database_url):
    tokens = new_tokens()
    app = create_app(ProductionSettings(**service_settings(kafka_settings, database_url, tokens, "production")))
    async with serve(app) as url, client(url, tokens.staff) as staff:
        yield Production(staff, tokens, url, app.state.runtime.pool, kafka_settings)


async def register(prod: Production, name: str) -> str:
    response = await prod.staff.post("/collaborators", json={"name": name,
                                                             "public_key": public_key_b64(generate_private_key())})
    assert response.status_code == 201, response.text
    return response.json()["collaborator_id"]


def submission(collaborator_id: str, submission_id: str = "sub_1") -> dict[str, object]:
    # Not signed: the intake refuses it on its merits (JUDGED), which only an admitted token gets to hear.
    return {"submission_id": submission_id, "piece_id": "pc_nowhere", "collaborator_id": collaborator_id,
            "result": "passed", "inspector": "QC-07", "inspected_at": "2024-03-21T10:00:00+07:00", "defects": [],
            "signature": "c2ln"}


async def admitted(prod: Production, token: str, collaborator_id: str) -> tuple[int, str, int]:
    """What a submission and reading its own rejections with `token` get: the submission's status and
    problem code, and the reading's status."""
    async with client(prod.url, token) as http:
        submitted = await http.post("/qc-submissions", json=submission(collaborator_id))
        feedback = await http.get(f"/collaborators/{collaborator_id}/rejections")
    return submitted.status_code, submitted.json()["code"], feedback.status_code


def refused_as_unauthorized(response: httpx.Response) -> bool:
    return (response.status_code == 401 and response.json()["code"] == "unauthorized"
            and response.headers["www-authenticate"] == "Bearer")


async def test_a_token_for_a_collaborator_that_does_not_exist_gets_401_like_any_bad_token(production):
    real = await register(production, "PT Nyata")
    ghost = "col_01J0NOBODY000000000000000"
    async with client(production.url, collaborator_token(production.tokens.secret, ghost)) as phantom, \
            client(production.url, "not-a-token") as garbage:
        for http in (phantom, garbage):
            submitted = await http.post("/qc-submissions", json=submission(ghost))
            reading = await http.get(f"/collaborators/{ghost}/rejections")
            staff_only = await http.post("/pieces", json={})
            assert refused_as_unauthorized(submitted), submitted.text
            assert refused_as_unauthorized(reading), reading.text
            assert refused_as_unauthorized(staff_only), staff_only.text
        # Nothing tells the forged collaborator from garbage.
        assert (await phantom.post("/qc-submissions", json=submission(ghost))).json() == \
            (await garbage.post("/qc-submissions", json=submission(ghost))).json()
    # The same secret's token for a registered collaborator is admitted: the intake judges it.
    assert await admitted(production, collaborator_token(production.tokens.secret, real), real) == JUDGED
    assert (await production.staff.get(f"/collaborators/{ghost}/rejections")).json()["rejections"] == []


async def test_a_revocation_refuses_the_old_token_on_the_next_request_and_a_token_issued_after_it_works(
    production,
):
    acme = await register(production, "PT Acme")
    beta = await register(production, "PT Beta")
    secret = production.tokens.secret
    acme_old = collaborator_token(secret, acme, AN_HOUR_AGO)
    beta_old = collaborator_token(secret, beta, AN_HOUR_AGO)
    # Admitted, and so remembered by this process, before the revocation.
    assert await admitted(production, acme_old, acme) == JUDGED
    assert await admitted(production, beta_old, beta) == JUDGED

    revoked = await production.staff.post(f"/collaborators/{acme}/token-revocations", json={},
                                           headers={"Idempotency-Key": "revoke-acme-1"})
    assert revoked.status_code == 201, revoked.text
    moment = datetime.fromisoformat(revoked.json()["revoked_before"])
    assert revoked.json()["collaborator_id"] == acme
    assert moment.utcoffset() == timedelta(hours=7) and moment.microsecond == 0
    assert AN_HOUR_AGO < moment <= datetime.now(UTC)

    # The very next request with the old token, on the same process: refused, on every route.
    async with client(production.url, acme_old) as old:
        assert refused_as_unauthorized(await old.post("/qc-submissions", json=submission(acme, "sub_2")))
        assert refused_as_unauthorized(await old.get(f"/collaborators/{acme}/rejections"))
        assert refused_as_unauthorized(await old.post("/pieces", json={}))
    # A token issued after it, as `anyam collaborator token` issues one, works; B's old one is untouched.
    issued = runner.invoke(collaborator_app, ["token", acme], env={"ANYAM_TOKEN_SECRET": secret})
    assert issued.exit_code == 0, issued.output
    assert await admitted(production, issued.stdout.strip(), acme) == JUDGED
    assert await admitted(production, beta_old, beta) == JUDGED

    # A retry with the key answers the same; without a key, an earlier moment loosens nothing (200).
    retry = await production.staff.post(f"/collaborators/{acme}/token-revocations", json={},
                                         headers={"Idempotency-Key": "revoke-acme-1"})
    assert (retry.status_code, retry.json()) == (201, revoked.json())
    earlier = await production.staff.post(f"/collaborators/{acme}/token-revocations",
                                          json={"revoked_before": "2024-01-01T00:00:00+07:00"})
    assert (earlier.status_code, earlier.json()) == (200, revoked.json())
    async with client(production.url, acme_old) as old:
        assert refused_as_unauthorized(await old.get(f"/collaborators/{acme}/rejections"))


async def test_a_given_moment_revokes_exactly_the_tokens_issued_before_it(production):
    acme = await register(production, "PT Acme")
    secret = production.tokens.secret
    cut = (datetime.now(UTC) - timedelta(minutes=10)).replace(microsecond=0)
    response = await production.staff.post(f"/collaborators/{acme}/token-revocations",
                                           json={"revoked_before": cut.isoformat()})
    assert response.status_code == 201, response.text
    assert datetime.fromisoformat(response.json()["revoked_before"]) == cut

    assert await admitted(production, collaborator_token(secret, acme, cut), acme) == JUDGED
    assert await admitted(production, collaborator_token(secret, acme, cut + timedelta(minutes=5)), acme) == JUDGED
    async with client(production.url, collaborator_token(secret, acme, cut - timedelta(seconds=1))) as stale:
        assert refused_as_unauthorized(await stale.get(f"/collaborators/{acme}/rejections"))

    # Never a moment in the future: it would lock the collaborator out with no way back.
    future = await production.staff.post(f"/collaborators/{acme}/token-revocations",
                                         json={"revoked_before": (datetime.now(UTC) + timedelta(days=1)).isoformat()})
    assert (future.status_code, future.json()["code"]) == (422, "revocation-in-the-future")
    naive = await production.staff.post(f"/collaborators/{acme}/token-revocations",
                                        json={"revoked_before": "2024-01-01T00:00:00"})
    assert naive.status_code == 422


async def test_revoking_tokens_is_for_staff_only_and_needs_a_registered_collaborator(production):
    acme = await register(production, "PT Acme")
    collaborator = collaborator_token(production.tokens.secret, acme)
    async with client(production.url, collaborator) as own, \
            client(production.url, production.tokens.auditor) as auditor, client(production.url, None) as nobody:
        assert (await own.post(f"/collaborators/{acme}/token-revocations", json={})).status_code == 403
        assert (await auditor.post(f"/collaborators/{acme}/token-revocations", json={})).status_code == 403
        assert (await nobody.post(f"/collaborators/{acme}/token-revocations", json={})).status_code == 401
        # Nothing was revoked by the refused calls: the collaborator's token still works.
        assert (await own.get(f"/collaborators/{acme}/rejections")).status_code == 200

    missing = await production.staff.post("/collaborators/col_nobody/token-revocations", json={})
    assert (missing.status_code, missing.json()["code"]) == (404, "collaborator-not-found")
    no_body = await production.staff.post(f"/collaborators/{acme}/token-revocations")
    assert no_body.status_code == 201, no_body.text
