"""Materials reconciliation end to end (docs/materials.md): production and payout on the real broker and
PostgreSQL. Staff set a usage, issue materials and record pieces; production's endpoint and payout's
dashboard flag the artisan who wove more than her materials allow, and the one whose materials lie idle."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from html import unescape

import pytest

from services.payout.app import PayoutSettings
from services.payout.app import create_app as create_payout
from services.payout.dashboard import DASHBOARD_TOPICS, dashboard_consumer
from services.production.app import ProductionSettings
from services.production.app import create_app as create_production
from shared.eventstore import wait_until_caught_up, wait_until_published
from shared.timeutil import wib_now
from shared.web.access import collaborator_token
from tests.integration.test_production import Key, Production, cli_sign, keygen, register, result_data, set_rate, train
from tests.services import client, new_tokens, serve, service_settings

pytestmark = pytest.mark.integration

ROTAN = "rotan sintetis"


@pytest.fixture
async def stack(kafka_settings, database_url, scratch_database):
    """Production and payout, one broker, their own databases, the same tokens."""
    tokens = new_tokens()
    payout_database = await scratch_database()
    production_app = create_production(ProductionSettings(
        **service_settings(kafka_settings, database_url, tokens, "production")))
    payout_app = create_payout(PayoutSettings(
        **service_settings(kafka_settings, payout_database, tokens, "payout")))
    async with (serve(production_app) as production_url, serve(payout_app) as payout_url,
                client(production_url, tokens.staff) as staff, client(production_url, tokens.auditor) as auditor,
                client(payout_url, tokens.staff) as dashboard):
        production = Production(staff, tokens, production_url, production_app.state.runtime.pool, kafka_settings)
        yield production, auditor, dashboard, payout_app.state.runtime.pool


async def workshop(production: Production, tmp_path) -> tuple[str, Key]:
    """A collaborator paying for piring, whose piring takes 250 g of rotan each; two trained artisans."""
    key = keygen(tmp_path, "acme")
    collaborator = await register(production, key)
    await set_rate(production, collaborator, 10_000, "2024-03-01T00:00:00+07:00")
    usage = await production.staff.post(f"/collaborators/{collaborator}/material-usages", json={
        "product": "piring", "material": ROTAN, "unit": "g", "quantity_per_piece": 250,
        "effective_from": "2024-03-01T00:00:00+07:00"})
    assert usage.status_code == 201, usage.text
    await train(production, "res_siti", "res_rina")
    return collaborator, key


async def issue(production: Production, artisan: str, collaborator: str, grams: int) -> None:
    response = await production.staff.post("/material-issues", json={
        "artisan_id": artisan, "collaborator_id": collaborator, "material": ROTAN, "quantity": grams, "unit": "g"})
    assert response.status_code == 201, response.text


async def weave(production: Production, artisan: str, collaborator: str, day: int) -> str:
    response = await production.staff.post("/pieces", json={
        "artisan_id": artisan, "collaborator_id": collaborator, "product": "piring",
        "woven_at": f"2024-03-{day:02d}T09:00:00+07:00"})
    assert response.status_code == 201, response.text
    return response.json()["piece_id"]


def anomalies(body: dict) -> set[tuple[str, str, str]]:
    return {(a["kind"], a["artisan_id"], a["material"]) for a in body["anomalies"]}


async def test_the_endpoint_and_the_dashboard_flag_weaving_beyond_materials_and_idle_materials(stack, tmp_path):
    production, auditor, dashboard, payout_pool = stack
    collaborator, key = await workshop(production, tmp_path)
    await issue(production, "res_siti", collaborator, 1000)  # four piring's worth
    await issue(production, "res_rina", collaborator, 500)
    pieces = [await weave(production, "res_siti", collaborator, day) for day in range(10, 15)]  # five
    signed = cli_sign(tmp_path, key, result_data("sub_1", pieces[0], collaborator))
    assert (await production.staff.post("/qc-submissions", json=signed)).status_code == 201

    today = wib_now().date()
    now = await auditor.get("/materials/reconciliation")
    later = await auditor.get("/materials/reconciliation", params={"as_of": (today + timedelta(weeks=4)).isoformat()})
    a_day_short = await auditor.get("/materials/reconciliation",
                                    params={"as_of": (today + timedelta(weeks=4, days=-1)).isoformat()})
    only_rina = await auditor.get("/materials/reconciliation", params={"artisan_id": "res_rina"})
    another_collaborator = await auditor.get("/materials/reconciliation", params={"collaborator_id": "col_nobody"})

    assert now.status_code == 200, now.text
    body = now.json()
    assert (body["as_of"], body["idle_weeks"]) == (today.isoformat(), 4)
    assert anomalies(body) == {("woven-beyond-materials", "res_siti", ROTAN)}
    siti = next(h for h in body["holdings"] if h["artisan_id"] == "res_siti")
    assert (siti["collaborator_id"], siti["pieces_woven"], siti["pieces_passed"]) == (collaborator, 5, 1)
    assert siti["materials"] == [{"material": ROTAN, "unit": "g", "issued": 1000, "expected_use": 1250,
                                  "remaining": -250, "last_issued_on": today.isoformat(),
                                  "flags": ["woven-beyond-materials"]}]
    assert body["collaborators"] == [{"collaborator_id": collaborator, "material": ROTAN, "unit": "g",
                                      "issued": 1500, "expected_use": 1250, "artisans": 2, "artisans_flagged": 1}]
    # Rina wove nothing: four weeks after her issue to the day her materials are idle, a day before not yet.
    assert anomalies(later.json()) == {("woven-beyond-materials", "res_siti", ROTAN),
                                       ("idle-materials", "res_rina", ROTAN)}
    assert anomalies(a_day_short.json()) == {("woven-beyond-materials", "res_siti", ROTAN)}
    assert [h["artisan_id"] for h in only_rina.json()["holdings"]] == ["res_rina"]
    assert another_collaborator.json()["holdings"] == []

    # The dashboard, fed by the production topic, flags the same artisan by the same rules.
    await wait_until_published(production.pool, timeout=60)
    await wait_until_caught_up(payout_pool, dashboard_consumer(production.kafka.topic_prefix), production.kafka,
                               list(DASHBOARD_TOPICS), timeout=60)
    page = await dashboard.get("/dashboard", params={"lang": "en"})
    assert page.status_code == 200
    section = unescape(page.text[page.text.index('id="materials"'):])
    assert "Materials (bahan baku)" in section
    flagged = re.findall(r'data-anomaly="([^"]+)" data-flagged-artisan="([^"]+)"', section)
    assert flagged == [("woven-beyond-materials", "res_siti")]
    total = re.search(r'data-material-total data-collaborator="([^"]+)" data-material="([^"]+)" data-unit="g" '
                      r'data-issued="(\d+)" data-expected="(\d+)" data-flagged="(\d+)"', section)
    assert total is not None and total.groups() == (collaborator, ROTAN, "1500", "1250", "1")


async def test_a_usage_changed_later_applies_to_pieces_woven_from_then_and_shows_on_the_collaborator(
        stack, tmp_path):
    production, auditor, _, _ = stack
    collaborator, _ = await workshop(production, tmp_path)
    change = {"product": "piring", "material": ROTAN, "unit": "g", "quantity_per_piece": 200,
              "effective_from": "2024-03-12T00:00:00+07:00"}
    first = await production.staff.post(f"/collaborators/{collaborator}/material-usages", json=change)
    again = await production.staff.post(f"/collaborators/{collaborator}/material-usages", json=change)
    other_quantity = await production.staff.post(f"/collaborators/{collaborator}/material-usages",
                                                 json=change | {"quantity_per_piece": 210})
    other_unit = await production.staff.post(f"/collaborators/{collaborator}/material-usages",
                                             json=change | {"unit": "kg", "effective_from": "2024-04-01T00:00:00Z"})
    await issue(production, "res_siti", collaborator, 250 + 200)
    await weave(production, "res_siti", collaborator, 11)  # 250 g
    await weave(production, "res_siti", collaborator, 12)  # 200 g

    assert [first.status_code, again.status_code] == [201, 200]
    assert (other_quantity.status_code, other_quantity.json()["code"]) == (409, "usage-already-set")
    assert (other_unit.status_code, other_unit.json()["code"]) == (409, "usage-unit-changed")
    body = (await auditor.get("/materials/reconciliation", params={"collaborator_id": collaborator})).json()
    assert body["anomalies"] == []
    assert body["holdings"][0]["materials"][0]["expected_use"] == 450
    shown = (await auditor.get(f"/collaborators/{collaborator}")).json()["material_usages"]
    assert [(u["quantity_per_piece"], u["effective_from"]) for u in shown] == [
        (250, "2024-03-01T00:00:00+07:00"), (200, "2024-03-12T00:00:00+07:00")]


async def test_hostile_input_to_the_materials_endpoints_is_a_4xx_problem(stack, tmp_path):
    production, auditor, _, _ = stack
    collaborator, _ = await workshop(production, tmp_path)
    usages = f"/collaborators/{collaborator}/material-usages"
    good = {"product": "piring", "material": ROTAN, "unit": "g", "quantity_per_piece": 250,
            "effective_from": "2024-05-01T00:00:00+07:00"}
    bodies = [
        good | {"quantity_per_piece": -1}, good | {"quantity_per_piece": 1_000_001},
        good | {"quantity_per_piece": 2**64},
        good | {"quantity_per_piece": "250"}, good | {"quantity_per_piece": 2.5}, good | {"quantity_per_piece": True},
        good | {"material": "0812 9988 7721"},  # a phone number may not ride on a topic as a label
        good | {"material": "rotan\x00"}, good | {"unit": "g" * 51}, good | {"material": "x" * 201},
        good | {"effective_from": "2024-05-01T00:00:00"},  # no offset
        good | {"effective_from": "9999-12-31T23:59:59-12:00"}, good | {"surprise": 1},
        {k: v for k, v in good.items() if k != "unit"}, [good], "not json",
    ]
    answers = [await production.staff.post(usages, json=body) if not isinstance(body, str)
               else await production.staff.post(usages, content=body, headers={"content-type": "application/json"})
               for body in bodies]
    unknown = await production.staff.post("/collaborators/col_nobody/material-usages", json=good)
    as_auditor = await auditor.post(usages, json=good)
    queries = [{"as_of": "yesterday"}, {"as_of": "1900-01-01"}, {"as_of": "2024-02-30"}, {"as_of": "9999-12-31"},
               {"collaborator_id": "col 1"}, {"collaborator_id": "c" * 1000}, {"artisan_id": "res\x00"},
               {"artisan_id": ""}]
    read = [await auditor.get("/materials/reconciliation", params=q) for q in queries]
    async with client(production.url, collaborator_token(production.tokens.secret, collaborator)) as company:
        as_collaborator = await company.get("/materials/reconciliation")
    async with client(production.url, None) as anonymous:
        without_token = await anonymous.get("/materials/reconciliation")

    for response in [*answers, *read]:
        assert 400 <= response.status_code < 500, (response.status_code, response.text)
        assert response.headers["content-type"].startswith("application/problem+json"), response.text
    assert {r.status_code for r in answers} == {422}
    assert "0812" not in answers[6].text  # a refusal names the field, never the value
    assert (unknown.status_code, unknown.json()["code"]) == (404, "collaborator-not-found")
    assert [as_auditor.status_code, as_collaborator.status_code, without_token.status_code] == [403, 403, 401]
    # Nothing refused reached the collaborator's history.
    assert (await auditor.get(f"/collaborators/{collaborator}")).json()["material_usages"] == [
        {"product": "piring", "material": ROTAN, "unit": "g", "quantity_per_piece": 250,
         "effective_from": "2024-03-01T00:00:00+07:00"}]

    # Readers at once each catch the read model up under one lock, and all read the same.
    together = await asyncio.gather(*[auditor.get("/materials/reconciliation") for _ in range(4)])
    assert {r.status_code for r in together} == {200}
    assert len({r.text for r in together}) == 1
