"""The enrollment service over real HTTP, on the real broker and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import date

import asyncpg
import pytest

from services.enrollment.app import EnrollmentSettings, create_app
from shared.contracts import Topic, topic_name
from shared.eventstore import wait_until_published
from tests.fuzzing import fuzz_openapi
from tests.kafka_reader import read_topic
from tests.services import client, new_personal_data_key, new_tokens, serve, service_settings
from tests.waiting import until

NAMES = ["Siti Aminah", "Dewi Lestari", "Sri Wahyuni", "Nur Hayati", "Rina Marlina"]


def nik(n: int) -> str:
    return f"3175{n:012d}"


def phone(n: int) -> str:
    return f"0812{n:08d}"


@pytest.fixture
async def enrollment(kafka_settings, database_url):
    tokens = new_tokens()
    settings = EnrollmentSettings(
        **service_settings(kafka_settings, database_url, tokens, "enrollment"),
        personal_data_key=new_personal_data_key(),
    )
    async with serve(create_app(settings)) as url:
        async with client(url, tokens.staff) as staff:
            await register_nagrak(staff)
            yield staff, tokens, url, database_url


async def register_nagrak(staff) -> None:
    """Cohorts belong to a registered rusunawa."""
    response = await staff.post("/rusunawa", json={"name": "Nagrak", "ovop_product": "piring"})
    assert response.status_code in (200, 201), response.text


async def register(staff, n: int) -> str:
    response = await staff.post("/residents", json={
        "rusunawa": "Nagrak", "unit": f"A-{n}", "full_name": NAMES[n % len(NAMES)] + f" {n}", "nik": nik(n),
        "phone": phone(n), "payout_account": f"BRI-{n:010d}",
    })
    assert response.status_code == 201, response.text
    return response.json()["resident_id"]


async def schedule(staff, capacity: int = 25) -> str:
    response = await staff.post("/cohorts", json={
        "rusunawa": "Nagrak", "skill": "menganyam", "product_focus": "piring",
        "starts_on": "2024-02-26", "ends_on": "2024-02-29", "capacity": capacity,
    })
    assert response.status_code == 201, response.text
    return response.json()["cohort_id"]


async def enrollment_events(kafka_settings, url_db) -> list[dict]:
    pool = await asyncpg.create_pool(url_db, min_size=1, max_size=2)
    try:
        await wait_until_published(pool, timeout=60)
    finally:
        await pool.close()
    topic = topic_name(Topic.ENROLLMENT, kafka_settings.topic_prefix)
    records = await read_topic(kafka_settings.bootstrap_servers, topic)
    return [json.loads(r.value) | {"_key": r.key.decode(), "_raw": r.value} for r in records]


async def test_forty_concurrent_enrolments_for_twenty_five_places_admit_exactly_twenty_five(
    enrollment, kafka_settings
):
    staff, _, _, db = enrollment
    cohort = await schedule(staff, capacity=25)
    residents = [await register(staff, n) for n in range(40)]

    responses = await asyncio.gather(
        *(staff.post(f"/cohorts/{cohort}/enrolments", json={"resident_id": r}) for r in residents)
    )

    statuses = [r.status_code for r in responses]
    assert statuses.count(201) == 25
    assert statuses.count(409) == 15
    refusal = next(r for r in responses if r.status_code == 409)
    assert refusal.headers["content-type"].startswith("application/problem+json")
    assert refusal.json()["code"] == "cohort-full"
    assert "full" in refusal.json()["detail"] and "25" in refusal.json()["detail"]
    enrolled = [e for e in await enrollment_events(kafka_settings, db) if e["type"] == "enrolled"]
    assert len(enrolled) == 25
    assert len({e["data"]["resident_id"] for e in enrolled}) == 25
    cohort_view = (await staff.get(f"/cohorts/{cohort}")).json()
    assert len(cohort_view["enrolled"]) == 25


async def test_a_retry_with_the_same_idempotency_key_returns_the_first_response_and_changes_nothing(
    enrollment, kafka_settings
):
    staff, _, _, db = enrollment
    body = {"rusunawa": "Nagrak", "unit": "B-1", "full_name": "Siti Aminah", "nik": nik(900), "phone": phone(900)}

    first = await staff.post("/residents", json=body, headers={"Idempotency-Key": "reg-900"})
    retry = await staff.post("/residents", json=body, headers={"Idempotency-Key": "reg-900"})
    reused = await staff.post("/residents", json=body | {"unit": "B-2"}, headers={"Idempotency-Key": "reg-900"})

    assert first.status_code == retry.status_code == 201
    assert retry.json() == first.json()
    assert reused.status_code == 422 and reused.json()["code"] == "idempotency-key-reused"
    registered = [e for e in await enrollment_events(kafka_settings, db) if e["type"] == "resident-registered"]
    assert [e["data"]["resident_id"] for e in registered] == [first.json()["resident_id"]]


async def test_one_nik_registered_by_many_at_once_is_one_resident_and_every_other_answer_a_409(
    enrollment, kafka_settings, caplog
):
    staff, _, _, db = enrollment
    bodies = [{"rusunawa": "Nagrak", "unit": f"C-{n}", "full_name": f"Dewi Lestari {n}", "nik": nik(901 + round),
               "phone": phone(901)} for round in range(5) for n in range(4)]

    # Four desks register the same person at the same moment, five times over.
    responses = [await asyncio.gather(*(staff.post("/residents", json=body) for body in bodies[4 * r:4 * r + 4]))
                 for r in range(5)]

    for answers in responses:
        assert sorted(r.status_code for r in answers) == [201, 409, 409, 409], [r.text for r in answers]
        refusal = next(r for r in answers if r.status_code == 409)
        assert refusal.json()["code"] == "nik-already-registered"
    registered = [e for e in await enrollment_events(kafka_settings, db) if e["type"] == "resident-registered"]
    assert len(registered) == 5
    # What the database said of the clash (the index, the key's value) stays out of the service's log.
    assert "nik_index" not in caplog.text and "duplicate key" not in caplog.text


async def test_an_idempotency_key_is_forgotten_once_its_answer_expires(kafka_settings, database_url):
    tokens = new_tokens()
    settings = EnrollmentSettings(**service_settings(kafka_settings, database_url, tokens, "enrollment"),
                                  personal_data_key=new_personal_data_key(), idempotency_key_ttl_seconds=1)
    body = {"rusunawa": "Nagrak", "skill": "menganyam", "product_focus": "piring",
            "starts_on": "2024-02-26", "ends_on": "2024-02-29", "capacity": 25}
    async with serve(create_app(settings)) as url, client(url, tokens.staff) as staff:
        await register_nagrak(staff)
        first = await staff.post("/cohorts", json=body, headers={"Idempotency-Key": "cohort-1"})
        retry = await staff.post("/cohorts", json=body, headers={"Idempotency-Key": "cohort-1"})
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
        try:
            async def forgotten() -> bool:
                return not await pool.fetchval("SELECT count(*) FROM idempotency_keys")
            await until(forgotten, what="forgetting the expired answer")
        finally:
            await pool.close()
        after = await staff.post("/cohorts", json=body, headers={"Idempotency-Key": "cohort-1"})

    assert first.status_code == retry.status_code == after.status_code == 201
    assert retry.json() == first.json()
    # A day later (here a second), the key names a new request: a second cohort.
    assert after.json()["cohort_id"] != first.json()["cohort_id"]


async def test_concurrent_requests_with_one_idempotency_key_enrol_once(enrollment, kafka_settings):
    staff, _, _, db = enrollment
    cohort, resident = await schedule(staff), await register(staff, 1)

    responses = await asyncio.gather(*(
        staff.post(f"/cohorts/{cohort}/enrolments", json={"resident_id": resident}, headers={"Idempotency-Key": "k"})
        for _ in range(5)
    ))

    assert {r.status_code for r in responses} == {201}
    assert all(r.json() == responses[0].json() for r in responses)


async def test_enrolling_an_enrolled_resident_again_is_one_enrolment(enrollment, kafka_settings):
    staff, _, _, db = enrollment
    cohort, resident = await schedule(staff), await register(staff, 2)

    first = await staff.post(f"/cohorts/{cohort}/enrolments", json={"resident_id": resident})
    again = await staff.post(f"/cohorts/{cohort}/enrolments", json={"resident_id": resident})

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    enrolled = [e for e in await enrollment_events(kafka_settings, db) if e["type"] == "enrolled"]
    assert len(enrolled) == 1


async def test_no_registered_name_nik_or_phone_appears_in_any_byte_on_the_enrollment_topic(
    enrollment, kafka_settings
):
    staff, _, _, db = enrollment
    cohort = await schedule(staff)
    residents = [await register(staff, n) for n in range(5)]
    for resident in residents:
        await staff.post(f"/cohorts/{cohort}/enrolments", json={"resident_id": resident})
        await staff.post(f"/cohorts/{cohort}/completions", json={"resident_id": resident, "completed_on": "2024-02-29"})

    events = await enrollment_events(kafka_settings, db)

    assert {e["type"] for e in events} == {"rusunawa-registered", "resident-registered", "cohort-scheduled", "enrolled",
                                           "training-completed"}
    everything = b"".join(e["_raw"] + e["_key"].encode() for e in events)
    for n in range(5):
        for secret in (NAMES[n % len(NAMES)], nik(n), phone(n), f"BRI-{n:010d}", f"A-{n}"):
            assert secret.encode() not in everything


async def test_after_erasure_personal_data_cannot_be_read_back_and_history_is_intact(enrollment, kafka_settings):
    staff, _, _, db = enrollment
    cohort, resident = await schedule(staff), await register(staff, 7)
    await staff.post(f"/cohorts/{cohort}/enrolments", json={"resident_id": resident})
    before = await staff.get(f"/residents/{resident}/personal-data")
    assert before.status_code == 200 and before.json()["nik"] == nik(7)

    erased = await staff.delete(f"/residents/{resident}/personal-data", params={"override_money_owed": "true"})

    assert erased.status_code == 204
    after = await staff.get(f"/residents/{resident}/personal-data")
    assert after.status_code == 410
    assert nik(7) not in after.text
    conn = await asyncpg.connect(db)
    try:
        rows = await conn.fetch(
            "SELECT * FROM person_keys WHERE resident_id = $1 UNION ALL "
            "SELECT resident_id, sealed_data FROM personal_data WHERE resident_id = $1", resident)
        assert rows == []
        dump = b"".join(bytes(r["payload"]) for r in await conn.fetch("SELECT payload FROM event_store"))
        assert nik(7).encode() not in dump and NAMES[7 % len(NAMES)].encode() not in dump
    finally:
        await conn.close()
    record = (await staff.get(f"/residents/{resident}")).json()
    assert record == {"resident_id": resident, "rusunawa": "Nagrak", "personal_data_erased": True}
    assert resident in (await staff.get(f"/cohorts/{cohort}")).json()["enrolled"]
    # The same NIK may register again as a new person: nothing of the old one is left to match.
    assert (await register(staff, 7)) != resident


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"nik": "12345"}, "nik"),
        ({"nik": "31750000000000AB"}, "nik"),
        ({"phone": "12345"}, "phone"),
        ({"full_name": ""}, "full_name"),
    ],
)
async def test_invalid_residents_get_a_problem_naming_the_field_but_not_its_value(enrollment, body, field):
    staff, *_ = enrollment
    valid = {"rusunawa": "Nagrak", "unit": "C-1", "full_name": "Nur Hayati", "nik": nik(50), "phone": phone(50)}

    response = await staff.post("/residents", json=valid | body)

    assert response.status_code == 422
    problem = response.json()
    assert problem["code"] == "invalid-request"
    assert field in problem["detail"]
    assert str(body[field]) not in response.text or body[field] == ""


@pytest.mark.parametrize(
    ("change", "wording"),
    [
        ({"ends_on": "2024-02-25"}, "ends_on must be on or after starts_on"),
        ({"capacity": 0}, "capacity"),
        ({"capacity": 501}, "capacity"),
        ({"starts_on": "26/02/2024"}, "starts_on"),
    ],
)
async def test_invalid_cohorts_are_refused_with_what_to_fix(enrollment, change, wording):
    staff, *_ = enrollment
    body = {"rusunawa": "Nagrak", "skill": "menganyam", "product_focus": "piring",
            "starts_on": "2024-02-26", "ends_on": "2024-02-29", "capacity": 25}

    response = await staff.post("/cohorts", json=body | change)

    assert response.status_code == 422
    assert wording in response.json()["detail"]


async def test_completion_needs_an_enrolment_and_a_withdrawn_resident_cannot_complete(enrollment):
    staff, *_ = enrollment
    cohort, resident, other = await schedule(staff), await register(staff, 11), await register(staff, 12)

    not_enrolled = await staff.post(f"/cohorts/{cohort}/completions",
                                    json={"resident_id": other, "completed_on": "2024-02-29"})
    await staff.post(f"/cohorts/{cohort}/enrolments", json={"resident_id": resident})
    await staff.post(f"/cohorts/{cohort}/withdrawals", json={"resident_id": resident, "reason": "moved-away"})
    withdrawn = await staff.post(f"/cohorts/{cohort}/completions",
                                 json={"resident_id": resident, "completed_on": "2024-02-29"})

    assert (not_enrolled.status_code, not_enrolled.json()["code"]) == (409, "not-enrolled")
    assert (withdrawn.status_code, withdrawn.json()["code"]) == (409, "withdrawn")


async def test_tokens_missing_or_wrong_get_401_and_an_auditor_may_read_but_not_command(enrollment):
    staff, tokens, url, _ = enrollment
    cohort = await schedule(staff)
    body = {"rusunawa": "Nagrak", "unit": "D-1", "full_name": "Rina", "nik": nik(77)}

    async with client(url, None) as anonymous, client(url, "not-a-token") as forged, \
            client(url, tokens.auditor) as auditor:
        assert (await anonymous.post("/residents", json=body)).status_code == 401
        assert (await forged.post("/residents", json=body)).status_code == 401
        assert (await anonymous.get(f"/cohorts/{cohort}")).status_code == 401
        assert (await anonymous.get("/cohorts/does-not-exist")).status_code == 401  # reveals nothing
        assert (await auditor.post("/residents", json=body)).status_code == 403
        assert (await auditor.post(f"/cohorts/{cohort}/enrolments", json={"resident_id": "x"})).status_code == 403
        assert (await auditor.get(f"/cohorts/{cohort}")).status_code == 200
        assert (await auditor.get("/residents/res_x/personal-data")).status_code == 403
        assert (await anonymous.get("/health")).status_code == 200
        assert (await auditor.get("/metrics")).status_code == 200
        assert "anyam_http_requests" in (await auditor.get("/metrics")).text
        assert (await auditor.get("/openapi.json")).json()["info"]["title"] == "Anyam enrollment"
        assert set((await auditor.get("/asyncapi.json")).json()["channels"]) == {"enrollment"}


async def test_dates_are_validated_in_wib_and_the_events_carry_offsets(enrollment, kafka_settings):
    staff, _, _, db = enrollment
    await schedule(staff)
    resident = await register(staff, 3)
    events = await enrollment_events(kafka_settings, db)
    registered = next(e for e in events if e["type"] == "resident-registered")
    assert registered["data"]["resident_id"] == resident
    assert registered["data"]["registered_at"].endswith("+07:00")
    assert date.fromisoformat(next(e for e in events if e["type"] == "cohort-scheduled")["data"]["starts_on"])


async def test_fuzzing_the_openapi_document_never_yields_a_server_error(enrollment):
    staff, tokens, url, _ = enrollment
    await schedule(staff)

    code, output = await fuzz_openapi(url, tokens.staff, max_examples=30)

    assert code == 0, output[-4000:]
    assert re.search(r"[1-9]\d* generated, [1-9]\d* passed", output), output[-2000:]
