"""The list endpoints over real HTTP on PostgreSQL (and the broker the services start with): every item
once, in order, across pages; each filter narrows; a cursor that is not the list's own is a 400; no
personal data in `GET /residents`; collaborators see only their own pieces."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from services.enrollment.app import EnrollmentSettings
from services.enrollment.app import create_app as enrollment_app
from services.payout.app import PayoutSettings
from services.payout.app import create_app as payout_app
from services.payout.messaging import ledger_consumer
from services.production.app import ProductionSettings
from services.production.app import create_app as production_app
from shared.contracts import Envelope, Topic, encode, service_source, topic_name
from shared.contracts.events import PieceWoven
from shared.contracts.provenance import TOPIC_OWNERS, signed_result
from shared.contracts.signing import generate_private_key, public_key_b64
from shared.eventstore import NO_STREAM, EventStore, wait_until_caught_up
from shared.kafka import start_producer
from shared.timeutil import WIB
from shared.web.access import collaborator_token
from tests.services import attested_headers, client, new_personal_data_key, new_tokens, serve, service_settings

FORGED_CURSORS = [
    "not-base64!",  # not base64 at all
    "e30",  # {} : not a list
    base64.urlsafe_b64encode(json.dumps(["payouts", 3]).encode()).decode(),  # another list's
    base64.urlsafe_b64encode(json.dumps(["cohorts", -1]).encode()).decode(),  # out of range
    base64.urlsafe_b64encode(json.dumps(["cohorts", 2**63]).encode()).decode(),  # beyond bigint
    base64.urlsafe_b64encode(json.dumps(["cohorts", "1"]).encode()).decode(),  # wrong type
    base64.urlsafe_b64encode(json.dumps(["cohorts", True]).encode()).decode(),  # wrong type
    base64.urlsafe_b64encode(b"\xff\xfe").decode(),  # not text
    base64.urlsafe_b64encode(("[" * 5000).encode()).decode()[:390],  # deep nesting, cut short
    "é" * 10,  # not ASCII
]


async def every_page(http: httpx.AsyncClient, path: str, limit: int, **params: Any) -> list[list[dict]]:
    """The pages of a list, followed by `next_cursor` to the end."""
    pages: list[list[dict]] = []
    cursor = None
    while True:
        query = {**params, "limit": limit} | ({"cursor": cursor} if cursor else {})
        response = await http.get(path, params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"items", "next_cursor"}
        pages.append(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 1000, "the cursor never ends"


def flat(pages: Iterable[list[dict]]) -> list[dict]:
    return [item for items in pages for item in items]


async def assert_paged_once_in_order(http: httpx.AsyncClient, path: str, key: str, expected: list[str],
                                     **params: Any) -> list[dict]:
    """Paging with a small limit gives `expected` (ids under `key`), each once, in that order; pages full
    but the last, and the same items as one big page."""
    pages = await every_page(http, path, 3, **params)
    items = flat(pages)
    assert [item[key] for item in items] == expected
    assert all(len(p) == 3 for p in pages[:-1]) and len(pages[-1]) <= 3
    whole = await http.get(path, params={**params, "limit": 200})
    assert whole.json() == {"items": items, "next_cursor": None}
    return items


async def assert_refuses_forged_cursors(http: httpx.AsyncClient, path: str) -> None:
    for cursor in FORGED_CURSORS:
        response = await http.get(path, params={"cursor": cursor})
        assert response.status_code == 400, (cursor, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["code"] == "invalid-cursor"
    too_long = await http.get(path, params={"cursor": "A" * 5000})
    assert too_long.status_code == 400 and too_long.json()["code"] == "invalid-cursor"
    for limit in (0, 201, -1, "ten"):
        assert (await http.get(path, params={"limit": limit})).status_code == 422


# --- enrollment -------------------------------------------------------------------------------------


@pytest.fixture
async def enrollment(kafka_settings, database_url):
    tokens = new_tokens()
    settings = EnrollmentSettings(**service_settings(kafka_settings, database_url, tokens, "enrollment"),
                                  personal_data_key=new_personal_data_key())
    async with serve(enrollment_app(settings)) as url, client(url, tokens.staff) as staff, \
            client(url, tokens.auditor) as auditor, client(url, None) as anonymous:
        yield staff, auditor, anonymous


PEOPLE = [  # (name, NIK, phone, unit, account), one per resident
    (f"Siti Rahayu {chr(65 + n)}", f"31750{n:011d}", f"08129{n:07d}", f"Blok C-{n}0{n}", f"BNI-99{n:08d}")
    for n in range(8)
]


async def test_cohorts_and_residents_page_filter_and_never_show_personal_data(enrollment):
    staff, auditor, anonymous = enrollment
    homes = ["Marunda", "Nagrak"]
    for home in homes:  # cohorts belong to a registered rusunawa
        assert (await staff.post("/rusunawa", json={"name": home, "ovop_product": "piring"})).status_code == 201
    cohorts = []
    for n in range(7):
        response = await staff.post("/cohorts", json={
            "rusunawa": homes[n % 2], "skill": "menganyam" if n < 5 else "menjahit", "product_focus": "piring",
            "starts_on": f"2024-0{n % 3 + 2}-1{n}", "ends_on": "2024-05-30", "capacity": 5})
        assert response.status_code == 201, response.text
        cohorts.append(response.json()["cohort_id"])
    residents = []
    for n, (name, nik, phone, unit, account) in enumerate(PEOPLE):
        response = await staff.post("/residents", json={
            "rusunawa": homes[n % 2], "unit": unit, "full_name": name, "nik": nik, "phone": phone,
            "payout_account": account})
        assert response.status_code == 201, response.text
        residents.append(response.json()["resident_id"])
    marunda_cohort, nagrak_cohort = cohorts[0], cohorts[1]
    # Marunda's residents (even n) in Marunda's first cohort; two complete, one withdraws.
    for resident in residents[0::2]:
        assert (await staff.post(f"/cohorts/{marunda_cohort}/enrolments",
                                 json={"resident_id": resident})).status_code == 201
    for resident in residents[0:3:2]:
        assert (await staff.post(f"/cohorts/{marunda_cohort}/completions",
                                 json={"resident_id": resident, "completed_on": "2024-02-20"})).status_code == 201
    assert (await staff.post(f"/cohorts/{marunda_cohort}/withdrawals",
                             json={"resident_id": residents[4], "reason": "moved-away"})).status_code == 201
    assert (await staff.post(f"/cohorts/{nagrak_cohort}/enrolments",
                             json={"resident_id": residents[1]})).status_code == 201
    erased = await staff.delete(f"/residents/{residents[7]}/personal-data", params={"override_money_owed": "true"})
    assert erased.status_code == 204

    # The first reads fill the lists from the history at once, each event applied once however many race.
    racing = await asyncio.gather(*[http.get(path) for http in (staff, auditor) for path in ("/cohorts", "/residents")
                                    for _ in range(4)])
    assert all(response.status_code == 200 for response in racing)
    assert len({response.text for response in racing}) == 2

    # Cohorts: every one once, in the order scheduled, for staff and auditor alike.
    for http in (staff, auditor):
        items = await assert_paged_once_in_order(http, "/cohorts", "cohort_id", cohorts)
    first = items[0]
    assert first == {"cohort_id": marunda_cohort, "rusunawa": "Marunda", "skill": "menganyam",
                     "product_focus": "piring", "starts_on": "2024-02-10", "ends_on": "2024-05-30", "capacity": 5,
                     "places_taken": 4, "enrolled": 4, "completed": 2, "withdrawn": 1}
    assert items[1]["enrolled"] == 1 and items[2]["enrolled"] == 0
    # Filters: rusunawa as enrolment compares it, skill, start dates; and together.
    await assert_paged_once_in_order(staff, "/cohorts", "cohort_id", cohorts[0::2], rusunawa="  MARUNDA ")
    await assert_paged_once_in_order(staff, "/cohorts", "cohort_id", cohorts[5:], skill="Menjahit")
    february = [c["cohort_id"] for c in items if c["starts_on"].startswith("2024-02")]
    assert len(february) == 3
    await assert_paged_once_in_order(staff, "/cohorts", "cohort_id", february,
                                     starts_from="2024-02-01", starts_to="2024-02-29")
    await assert_paged_once_in_order(staff, "/cohorts", "cohort_id", [cohorts[1]],
                                     rusunawa="nagrak", starts_from="2024-03-01", skill="menganyam")
    await assert_paged_once_in_order(staff, "/cohorts", "cohort_id", [], rusunawa="Tambora")

    # Residents: every one once, in the order registered, with no personal data anywhere in the answer.
    for http in (staff, auditor):
        items = await assert_paged_once_in_order(http, "/residents", "resident_id", residents)
    assert set(items[0]) == {"resident_id", "rusunawa", "registered_at", "cohorts", "trained",
                             "personal_data_erased"}
    assert items[0]["cohorts"] == [marunda_cohort] and items[0]["trained"] is True
    assert items[7]["personal_data_erased"] is True and items[3]["cohorts"] == []
    assert datetime.fromisoformat(items[0]["registered_at"]).utcoffset() == timedelta(hours=7)
    answers = [(await staff.get("/residents", params={"limit": limit})).text for limit in (1, 5, 200)]
    for text in answers:
        for name, nik, phone, unit, account in PEOPLE:
            for secret in (name, nik, phone, phone[1:], unit, account, name.split()[0]):
                assert secret not in text
    await assert_paged_once_in_order(staff, "/residents", "resident_id", residents[1::2], rusunawa="nagrak")
    await assert_paged_once_in_order(staff, "/residents", "resident_id", residents[0::2],
                                     cohort_id=marunda_cohort)
    await assert_paged_once_in_order(staff, "/residents", "resident_id", [residents[0], residents[2]],
                                     trained="true")
    await assert_paged_once_in_order(staff, "/residents", "resident_id", [residents[4], residents[6]],
                                     trained="false", rusunawa="Marunda")
    await assert_paged_once_in_order(staff, "/residents", "resident_id", [residents[7]], erased="true")
    await assert_paged_once_in_order(staff, "/residents", "resident_id", [], cohort_id="coh_nothing")

    # A resident registered while a client pages is on a later page, never a duplicate.
    first_page = (await staff.get("/residents", params={"limit": 4})).json()
    late = (await staff.post("/residents", json={"rusunawa": "Nagrak", "unit": "D-1", "full_name": "Late Comer",
                                                  "nik": "3175099999999999"})).json()["resident_id"]
    rest = flat(await every_page(staff, "/residents", 4, cursor=first_page["next_cursor"]))
    assert [r["resident_id"] for r in first_page["items"] + rest] == [*residents, late]

    for path in ("/cohorts", "/residents"):
        await assert_refuses_forged_cursors(staff, path)
        assert (await anonymous.get(path)).status_code == 401
    bad = await staff.get("/cohorts", params={"starts_from": "2024-13-01"})
    assert bad.status_code == 422 and bad.json()["code"] == "invalid-request"
    assert (await staff.get("/residents", params={"trained": "maybe"})).status_code == 422
    assert (await staff.get("/residents", params={"cohort_id": "coh\x00x"})).status_code == 422


# --- production -------------------------------------------------------------------------------------


@pytest.fixture
async def production(kafka_settings, database_url):
    tokens = new_tokens()
    app = production_app(ProductionSettings(**service_settings(kafka_settings, database_url, tokens, "production")))
    async with serve(app) as url, client(url, tokens.staff) as staff, client(url, tokens.auditor) as auditor, \
            client(url, None) as anonymous:
        yield staff, auditor, anonymous, url, tokens, EventStore(app.state.runtime.pool)


async def test_pieces_page_filter_and_a_collaborator_lists_only_its_own(production):
    staff, auditor, anonymous, url, tokens, store = production
    key = generate_private_key()
    collaborators = []
    for name in ("PT Anyaman Marunda", "PT Anyaman Nagrak"):
        response = await staff.post("/collaborators", json={"name": name, "public_key": public_key_b64(key),
                                                            "valid_from": "2024-01-01T00:00:00+07:00"})
        assert response.status_code == 201, response.text
        collaborators.append(response.json()["collaborator_id"])
    # Twelve pieces as production records them (woven, then maybe a signed QC result), two products, two
    # artisans, a day apart: pieces 0, 3, 6, 9 pass, 1, 4, 7, 10 fail, the rest await QC.
    production_source = service_source("production")
    pieces = []
    for n in range(12):
        piece_id, artisan, collaborator = f"pc_list_{n:02d}", f"res_{n % 2}", collaborators[n % 2]
        woven_at = datetime(2024, 3, 1 + n, 9, 0, tzinfo=WIB)
        woven = PieceWoven(piece_id=piece_id, artisan_id=artisan, collaborator_id=collaborator,
                           product="piring" if n < 8 else "tas", rate_idr=10_000 + n, woven_at=woven_at)
        events = [Envelope.wrap(woven, source=production_source, time=woven_at)]
        if n % 3 != 2:
            result = signed_result(key, piece_id=piece_id, artisan_id=artisan, collaborator_id=collaborator,
                                   inspected_at=woven_at + timedelta(hours=3), product=woven.product,
                                   amount_idr=woven.rate_idr if n % 3 == 0 else None,
                                   defects=() if n % 3 == 0 else ["loose-weave"])
            events.append(Envelope.wrap(result, source=production_source, time=woven_at + timedelta(hours=3)))
        await store.append(piece_id, NO_STREAM, events)
        pieces.append(piece_id)

    for http in (staff, auditor):
        items = await assert_paged_once_in_order(http, "/pieces", "piece_id", pieces)
    assert items[0] == {"piece_id": pieces[0], "artisan_id": "res_0", "collaborator_id": collaborators[0],
                        "product": "piring", "rate_idr": 10_000, "woven_at": "2024-03-01T09:00:00+07:00",
                        "status": "passed", "defects": []}
    assert [item["status"] for item in items[:3]] == ["passed", "failed", "woven"]
    assert items[1]["defects"] == ["loose-weave"]
    await assert_paged_once_in_order(staff, "/pieces", "piece_id", pieces[1::2], artisan_id="res_1")
    await assert_paged_once_in_order(staff, "/pieces", "piece_id", pieces[0::2], collaborator_id=collaborators[0])
    await assert_paged_once_in_order(staff, "/pieces", "piece_id", pieces[8:], product="tas")
    await assert_paged_once_in_order(staff, "/pieces", "piece_id", pieces[0::3], status="passed")
    await assert_paged_once_in_order(staff, "/pieces", "piece_id", pieces[2::3], status="woven")
    await assert_paged_once_in_order(staff, "/pieces", "piece_id", pieces[3:6],
                                     woven_from="2024-03-04T09:00:00+07:00", woven_to="2024-03-06T02:00:00Z")
    await assert_paged_once_in_order(staff, "/pieces", "piece_id", [pieces[4], pieces[10]],
                                     status="failed", collaborator_id=collaborators[0], artisan_id="res_0")
    # The list follows the store: a result recorded after the first read shows on the next.
    late = signed_result(key, piece_id=pieces[2], artisan_id="res_0", collaborator_id=collaborators[0],
                         inspected_at=datetime(2024, 3, 4, 9, 0, tzinfo=WIB), amount_idr=10_002)
    await store.append(pieces[2], 1, [Envelope.wrap(late, source=production_source)])
    await assert_paged_once_in_order(staff, "/pieces", "piece_id", [pieces[0], pieces[2], *pieces[3::3]],
                                     status="passed")

    # A collaborator lists its own pieces only: by default, and refused another's.
    mine, theirs = collaborators
    async with client(url, collaborator_token(tokens.secret, mine)) as collaborator:
        await assert_paged_once_in_order(collaborator, "/pieces", "piece_id", pieces[0::2])
        await assert_paged_once_in_order(collaborator, "/pieces", "piece_id", pieces[0::2], collaborator_id=mine)
        await assert_paged_once_in_order(collaborator, "/pieces", "piece_id", pieces[8::2], product="tas")
        refused = await collaborator.get("/pieces", params={"collaborator_id": theirs})
        assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    async with client(url, collaborator_token(tokens.secret, "col_nobody")) as stranger:
        assert (await stranger.get("/pieces")).status_code == 401

    await assert_refuses_forged_cursors(staff, "/pieces")
    assert (await anonymous.get("/pieces")).status_code == 401
    for params in ({"status": "lost"}, {"woven_from": "2024-03-01T09:00:00"}, {"woven_to": "yesterday"},
                   {"woven_from": "1900-01-01T00:00:00+07:00"}, {"product": "x" * 51}, {"artisan_id": "a b"}):
        bad = await staff.get("/pieces", params=params)
        assert bad.status_code == 422, (params, bad.text)
        assert bad.json()["code"] == "invalid-request"


# --- payout -----------------------------------------------------------------------------------------


@pytest.fixture
async def payout(kafka_settings, database_url):
    tokens = new_tokens()
    app = payout_app(PayoutSettings(**service_settings(kafka_settings, database_url, tokens, "payout")))
    async with serve(app) as url, client(url, tokens.staff) as staff, client(url, tokens.auditor) as auditor, \
            client(url, None) as anonymous:
        yield staff, auditor, anonymous, app.state.runtime.pool


async def publish_passed_pieces(kafka_settings, pool, amounts: dict[str, list[tuple[int, datetime]]]) -> None:
    """Publish, as production would, a passed piece per (amount, woven_at) of each artisan; wait until the
    ledger has them."""
    key = generate_private_key()
    source = service_source("production")
    events = []
    for artisan, pieces in amounts.items():
        for n, (amount, at) in enumerate(pieces):
            piece_id = f"pc_{artisan}_{n}"
            events.append(Envelope.wrap(PieceWoven(piece_id=piece_id, artisan_id=artisan, collaborator_id="col_a",
                                                   product="piring", rate_idr=amount, woven_at=at),
                                        source=source, time=at))
            events.append(Envelope.wrap(signed_result(key, piece_id=piece_id, artisan_id=artisan,
                                                      collaborator_id="col_a", inspected_at=at + timedelta(hours=1),
                                                      amount_idr=amount), source=source, time=at))
    producer = await start_producer(kafka_settings)
    try:
        for event in events:
            record = encode(event)
            await producer.send(topic_name(record.topic, kafka_settings.topic_prefix), record.value, key=record.key,
                                headers=attested_headers(TOPIC_OWNERS[record.topic], record.value))
        await producer.flush()
    finally:
        await producer.stop()
    await wait_until_caught_up(pool, ledger_consumer(kafka_settings.topic_prefix), kafka_settings,
                               [Topic.PRODUCTION, Topic.PAYOUT], timeout=90)


async def test_payouts_and_runs_page_in_the_order_runs_were_made_and_filter(payout, kafka_settings):
    staff, auditor, anonymous, pool = payout
    artisans = [f"res_{n}" for n in range(5)]
    early, late = datetime(2024, 3, 5, 9, tzinfo=WIB), datetime(2024, 3, 20, 9, tzinfo=WIB)
    await publish_passed_pieces(kafka_settings, pool, {
        artisan: [(10_000 * (n + 1), early), (1_000 * (n + 1), late)] for n, artisan in enumerate(artisans)})
    # Three runs: the first half of March, the second, and one with nothing left to pay; made in that order.
    runs = []
    for run_id, period_end, run_at in (("2024-03-a", "2024-03-15T23:59:59+07:00", "2024-03-16T10:00:00+07:00"),
                                       ("2024-03-b", "2024-03-31T23:59:59+07:00", "2024-04-01T10:00:00+07:00"),
                                       ("2024-03-c", "2024-03-31T23:59:59+07:00", "2024-04-02T10:00:00+07:00")):
        response = await staff.post("/payout-runs", json={"run_id": run_id, "period_end": period_end,
                                                          "run_at": run_at})
        assert response.status_code == 201, response.text
        runs.append(response.json())
    assert [len(run["payouts"]) for run in runs] == [5, 5, 0]
    first = sorted(p["payout_id"] for p in runs[0]["payouts"])
    second = sorted(p["payout_id"] for p in runs[1]["payouts"])
    paid, failed = first[0], first[1]
    confirmed = await staff.post(f"/payouts/{paid}/confirmation", json={
        "method": "bank-transfer", "reference": "TRF-77", "paid_at": "2024-03-17T10:00:00+07:00"})
    assert confirmed.status_code == 201, confirmed.text
    failure = await staff.post(f"/payouts/{failed}/failure", json={"reason": "account-closed",
                                                                   "failed_at": "2024-03-17T11:00:00+07:00"})
    assert failure.status_code == 201, failure.text

    for http in (staff, auditor):
        items = await assert_paged_once_in_order(http, "/payouts", "payout_id", first + second)
    by_id = {item["payout_id"]: item for item in items}
    assert by_id[paid]["status"] == "paid" and by_id[failed]["status"] == "failed"
    assert by_id[first[2]] == {"payout_id": first[2], "run_id": "2024-03-a",
                               "artisan_id": by_id[first[2]]["artisan_id"], "amount_idr": by_id[first[2]]["amount_idr"],
                               "status": "scheduled", "scheduled_at": "2024-03-16T10:00:00+07:00"}
    assert {by_id[p]["artisan_id"]: by_id[p]["amount_idr"] for p in first} == {
        artisan: 10_000 * (n + 1) for n, artisan in enumerate(artisans)}
    await assert_paged_once_in_order(staff, "/payouts", "payout_id", second, run_id="2024-03-b")
    res_2 = [p for p in first + second if by_id[p]["artisan_id"] == "res_2"]
    assert len(res_2) == 2
    await assert_paged_once_in_order(staff, "/payouts", "payout_id", res_2, artisan_id="res_2")
    await assert_paged_once_in_order(staff, "/payouts", "payout_id", [paid], status="paid")
    await assert_paged_once_in_order(staff, "/payouts", "payout_id", [failed], status="failed", run_id="2024-03-a")
    await assert_paged_once_in_order(staff, "/payouts", "payout_id", first[2:] + second, status="scheduled")
    await assert_paged_once_in_order(staff, "/payouts", "payout_id", [], run_id="2024-03-c")

    listed = await assert_paged_once_in_order(auditor, "/payout-runs", "run_id", ["2024-03-a", "2024-03-b",
                                                                                   "2024-03-c"])
    assert listed[0] == {"run_id": "2024-03-a", "period_end": "2024-03-15T23:59:59+07:00",
                         "started_at": "2024-03-16T10:00:00+07:00", "payouts": 5, "total_idr": 150_000,
                         "by_status": {"scheduled": 3, "paid": 1, "failed": 1}}
    assert listed[1]["total_idr"] == runs[1]["total_idr"] == 15_000
    assert listed[2] | {"started_at": None} == {"run_id": "2024-03-c", "period_end": "2024-03-31T23:59:59+07:00",
                                                "started_at": None, "payouts": 0, "total_idr": 0,
                                                "by_status": {"scheduled": 0, "paid": 0, "failed": 0}}
    # One page of one run at a time: the cursor holds the run's time and id, and the next page follows it.
    pages = await every_page(staff, "/payout-runs", 1)
    assert [item["run_id"] for items in pages for item in items] == ["2024-03-a", "2024-03-b", "2024-03-c"]

    for path in ("/payouts", "/payout-runs"):
        await assert_refuses_forged_cursors(staff, path)
        assert (await anonymous.get(path)).status_code == 401
    cursor = (await staff.get("/payouts", params={"limit": 1})).json()["next_cursor"]
    assert (await staff.get("/payout-runs", params={"cursor": cursor})).json()["code"] == "invalid-cursor"
    for forged in (["payouts", "2024-03-16T10:00:00", "po_x"], ["payouts", "2024-03-16T10:00:00+07:00"],
                   ["payouts", "2024-03-16T10:00:00+07:00", "po\u0000x"], ["payouts", "not a time", "po_x"]):
        text = base64.urlsafe_b64encode(json.dumps(forged).encode()).decode()
        response = await staff.get("/payouts", params={"cursor": text})
        assert response.status_code == 400 and response.json()["code"] == "invalid-cursor", forged
    assert (await staff.get("/payouts", params={"status": "lost"})).status_code == 422
