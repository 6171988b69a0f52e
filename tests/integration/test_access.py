"""SPEC §10 on every endpoint of every service: a table of endpoint × role × expected status.

The table is built from each app's own routes, so an endpoint added later is
checked too; the few endpoints whose rule differs from the default are listed
by name. Only the status classes access decides are asserted: 401 and 403
must appear exactly where the rules say, and nowhere else.
"""

from __future__ import annotations

import re

import pytest

from services.enrollment.app import EnrollmentSettings
from services.enrollment.app import create_app as enrollment_app
from services.payout.app import PayoutSettings
from services.payout.app import create_app as payout_app
from services.production.app import ProductionSettings
from services.production.app import create_app as production_app
from shared.contracts.signing import generate_private_key, public_key_b64
from shared.web.access import collaborator_token
from tests.services import client, new_personal_data_key, new_tokens, serve, service_settings

#: (method, path template) → roles allowed beyond the default; default: staff everything, auditor every GET.
EXTRA = {
    ("POST", "/qc-submissions"): {"collaborator"},
    ("GET", "/collaborators/{collaborator_id}/rejections"): {"collaborator"},
    ("GET", "/pieces"): {"collaborator"},  # its own pieces only (the filter is forced)
}
#: Narrower than the default. Personal data is not in SPEC §9's catalogue of reads: it is ours to
#: add, and auditors audit money, so reading someone's NIK and phone is for staff alone.
STAFF_ONLY = {("GET", "/residents/{resident_id}/personal-data")}
#: Bodies other than `{}`: staff's revocation of the collaborator's tokens must not refuse the token
#: this table goes on to use, so it revokes only tokens issued before any of this test's.
BODIES = {("POST", "/collaborators/{collaborator_id}/token-revocations"): {"revoked_before": "2024-01-01T00:00:00Z"}}
#: Open to anyone, token or not (SPEC §10); an artisan's page takes no token: its link is the key.
OPEN = {("GET", "/health"), ("GET", "/saya/{secret}")}


def allowed(method: str, path: str, role: str) -> bool:
    if (method, path) in OPEN or role == "staff":
        return True
    if (method, path) in STAFF_ONLY:
        return False
    if role == "auditor" and method == "GET":
        return True
    return role in EXTRA.get((method, path), set())


def concrete(path: str, collaborator_id: str) -> str:
    # The collaborator's own id where a path names a collaborator; anything else is a placeholder.
    path = path.replace("{collaborator_id}", collaborator_id)
    return re.sub(r"\{[^}]+\}", "x_1", path)


def routes(app) -> list[tuple[str, str]]:
    # From the app's own OpenAPI document: every route it serves, included routers too.
    return sorted(
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations if method.upper() in {"GET", "POST", "DELETE", "PUT", "PATCH"}
    )


@pytest.fixture
async def services(kafka_settings, postgres):
    tokens = new_tokens()
    apps = {}
    for name, settings_class, factory, extra in (
        ("enrollment", EnrollmentSettings, enrollment_app, {"personal_data_key": new_personal_data_key()}),
        ("production", ProductionSettings, production_app, {}),
        ("payout", PayoutSettings, payout_app, {}),
    ):
        database = await postgres.create_database(f"access_{name}_{kafka_settings.topic_prefix.strip('-')}")
        apps[name] = factory(settings_class(**service_settings(kafka_settings, database, tokens, name), **extra))
    async with serve(apps["enrollment"]) as enrollment, serve(apps["production"]) as production, \
            serve(apps["payout"]) as payout:
        yield tokens, {"enrollment": (apps["enrollment"], enrollment), "production": (apps["production"], production),
                       "payout": (apps["payout"], payout)}


async def test_every_endpoint_admits_exactly_the_roles_spec_section_10_gives_it(services):
    tokens, running = services
    # Production admits only a registered collaborator's token (docs/tokens.md).
    async with client(running["production"][1], tokens.staff) as staff:
        registered = await staff.post("/collaborators", json={"name": "PT Uji Akses",
                                                              "public_key": public_key_b64(generate_private_key())})
    collaborator_id = registered.json()["collaborator_id"]
    role_tokens = {
        "none": None, "bad": "not-a-token", "staff": tokens.staff, "auditor": tokens.auditor,
        "collaborator": collaborator_token(tokens.secret, collaborator_id),
    }
    table: list[tuple[str, str, str, str, int]] = []
    for service, (app, url) in running.items():
        for method, path in routes(app):
            for role, token in role_tokens.items():
                body = BODIES.get((method, path), {}) if method != "GET" else None
                async with client(url, token) as http:
                    response = await http.request(method, concrete(path, collaborator_id), json=body)
                table.append((service, method, path, role, response.status_code))

    wrong = []
    for service, method, path, role, status in table:
        if (method, path) in OPEN:
            expected_ok = True
        elif role in ("none", "bad"):
            expected_ok = False
            if status != 401:
                wrong.append(f"{service} {method} {path} as {role}: {status}, want 401")
            continue
        else:
            expected_ok = allowed(method, path, role)
        if expected_ok and status in (401, 403):
            wrong.append(f"{service} {method} {path} as {role}: {status}, want access")
        if not expected_ok and status != 403:
            wrong.append(f"{service} {method} {path} as {role}: {status}, want 403")
    assert not wrong, "\n".join(wrong)
    # The table really covered the contract: every service, every role, the commands of SPEC §9.
    covered = {(service, method, path) for service, method, path, _, _ in table}
    for expected in [
        ("enrollment", "POST", "/residents"), ("production", "POST", "/pieces"),
        ("production", "POST", "/qc-submissions"), ("payout", "POST", "/payout-runs"),
        ("payout", "GET", "/ledger/digest"), ("enrollment", "DELETE", "/residents/{resident_id}/personal-data"),
        ("payout", "GET", "/metrics"), ("production", "GET", "/openapi.json"),
    ]:
        assert expected in covered
    assert len(table) == len(covered) * len(role_tokens)


async def test_a_401_or_403_never_reveals_whether_the_thing_exists(services):
    tokens, running = services
    _, url = running["enrollment"]
    async with client(url, tokens.staff) as staff:
        resident = (await staff.post("/residents", json={
            "rusunawa": "Nagrak", "unit": "A-1", "full_name": "Sri Wahyuni", "nik": "3175000000000123"})).json()
    async with client(url, None) as anonymous, client(url, tokens.auditor) as auditor:
        known = await anonymous.get(f"/residents/{resident['resident_id']}/personal-data")
        unknown = await anonymous.get("/residents/res_NOBODY/personal-data")
        assert (known.status_code, known.json()) == (unknown.status_code, unknown.json())
        known = await auditor.get(f"/residents/{resident['resident_id']}/personal-data")
        unknown = await auditor.get("/residents/res_NOBODY/personal-data")
        assert (known.status_code, known.json()) == (unknown.status_code, unknown.json()) == (403, known.json())
