"""Bounds end to end (issue 25, item 5): the attack on the ledger, replayed against the real broker and PostgreSQL.

What the attacker did: published `qc-passed` events of 2^63-1 and 2^64+5 rupiah onto `production`.
From then on the ledger's reads, the dashboard and every payout run answered 500 (a `bigint` sum
overflowed, and the ledger is append-only), the auditor's replay died packing the amount, and the
live consumer and the replay disagreed about the 2^64+5.

Here the same records, and the first amount past the bound (10^12+1), are published raw beside an
honest history (one artisan at ordinary rates, one who earned exactly the bound twice): each is
dead-lettered as `schema-invalid` by both of payout's consumers, every read and every payout run
answers 2xx with the honest amounts, and the auditor's replay and verify name the three records and
carry on. A ledger that already holds such rows (written before the bound) reads and pays too.

Two more rules of SPEC §7 are checked at enrollment's door: training is completed on or before the
day it is recorded, and a resident is enrolled only in a cohort of her own rusunawa unless staff
override it with a published reason code, which the `enrolled` event then records.
"""

from __future__ import annotations

import json
from datetime import timedelta

import asyncpg
import pytest

from anyam.audit.replay import replay
from anyam.audit.verify import verify
from services.enrollment.app import EnrollmentSettings
from services.enrollment.app import create_app as enrollment_app
from services.enrollment.domain import today_in_wib
from services.payout import artisan, dashboard, domain, projections
from shared.contracts import Envelope, Topic, encode, service_source, topic_name
from shared.contracts.events import MAX_RUPIAH, QcPassed
from shared.eventstore import wait_until_caught_up, wait_until_published
from shared.eventstore.deadletters import DeadLetter
from shared.kafka import start_producer
from tests.integration.test_payout import (
    MARCH,
    PERIOD_END,
    account_balances,
    caught_up,
    database,
    payout_service,
    piece_events,
    publish,
)
from tests.kafka_reader import read_topic
from tests.services import TRUST, client, new_personal_data_key, new_tokens, serve, service_settings

#: What the attacker published, and the first amount past the bound.
HOSTILE = {"2^63-1": 2**63 - 1, "2^64+5": 2**64 + 5, "10^12+1": MAX_RUPIAH + 1}
#: Why a record may be refused: the bound, or (once every record on our topics must be attested by the
#: service that owns the topic, SPEC §11) the missing attestation of a record a test publishes raw.
REFUSED_AS = {"schema-invalid"}


@pytest.fixture
async def producer(kafka_settings):
    producer = await start_producer(kafka_settings, linger_ms=5)
    yield producer
    await producer.stop()


def hostile_record(amount: int, n: int) -> tuple[str, bytes]:
    """A `qc-passed` for res_evil as production writes one, but for `amount` rupiah: its event id and bytes."""
    honest = Envelope.wrap(QcPassed(piece_id=f"pc_evil_{n}", artisan_id="res_evil", collaborator_id="col_0",
                                    product="piring", amount_idr=15_000, submission_id=f"sub_evil_{n}",
                                    inspected_at=MARCH, signature="c2lnbmF0dXJl"),
                           source=service_source("production"), time=MARCH)
    document = json.loads(encode(honest).value)
    document["data"]["amount_idr"] = amount  # Python's json writes any integer, as a forger's tool would
    return honest.id, json.dumps(document).encode()


async def dead_letters(kafka_settings) -> list[DeadLetter]:
    records = await read_topic(kafka_settings.bootstrap_servers,
                               topic_name(Topic.DEAD_LETTERS, kafka_settings.topic_prefix), timeout=60)
    return [DeadLetter.from_record(r.key, r.value, r.headers) for r in records]


#: Payout's read models beside the ledger: each reads `production` and refuses what cannot be decoded.
READ_MODELS = ((dashboard.dashboard_consumer, dashboard.DASHBOARD_TOPICS),
               (artisan.artisan_consumer, artisan.ARTISAN_TOPICS))


async def all_caught_up(db: str, kafka_settings, *, published: bool = False) -> None:
    """The ledger and the read models (dashboard, artisans' pages) have all applied everything (after the
    relay, with `published`)."""
    await caught_up(db, kafka_settings, published=published)
    async with database(db) as pool:
        for consumer, topics in READ_MODELS:
            await wait_until_caught_up(pool, consumer(kafka_settings.topic_prefix), kafka_settings, topics, timeout=90)


async def test_amounts_over_one_trillion_are_dead_lettered_and_every_read_run_and_audit_stays_honest(
    kafka_settings, database_url, producer, scratch_database
):
    tokens = new_tokens()
    honest = (piece_events("res_a", 1, 15_000, at=MARCH) + piece_events("res_a", 2, 20_000, at=MARCH)
              + piece_events("res_b", 3, MAX_RUPIAH, at=MARCH) + piece_events("res_b", 4, MAX_RUPIAH, at=MARCH))
    async with payout_service(kafka_settings, database_url, tokens) as url, client(url, tokens.staff) as staff:
        await publish(producer, kafka_settings, honest[:4])
        production = topic_name(Topic.PRODUCTION, kafka_settings.topic_prefix)
        forged: dict[str, str] = {}
        for n, (name, amount) in enumerate(HOSTILE.items()):
            event_id, value = hostile_record(amount, n)
            forged[event_id] = name
            await producer.send_and_wait(production, value, key=b"res_evil",
                                         headers=[("content-type", b"application/cloudevents+json")])
        await publish(producer, kafka_settings, honest[4:])  # the consumers carried on past the forgeries
        await all_caught_up(database_url, kafka_settings)

        # Each forgery is dead-lettered by each of payout's consumers, naming the field; nothing else is.
        letters = await dead_letters(kafka_settings)
        by_event = {(json.loads(letter.value)["id"], letter.consumer): letter for letter in letters}
        consumers = {letter.consumer for letter in letters}
        readers = 1 + len(READ_MODELS)  # the ledger, and each read model
        assert len(consumers) == readers and len(letters) == len(by_event) == readers * len(HOSTILE)
        assert {event_id for event_id, _ in by_event} == set(forged)
        for letter in letters:
            assert letter.reason in REFUSED_AS, (forged[json.loads(letter.value)["id"]], letter.reason, letter.detail)
            if letter.reason == "schema-invalid":
                assert "data.amount_idr" in letter.detail

        # Reads answer, with the honest money only.
        response = await staff.get("/ledger/balances")
        assert response.status_code == 200, response.text
        accounts = response.json()["accounts"]
        assert account_balances(accounts, "res_a") == (35_000, 0, 0)
        assert account_balances(accounts, "res_b") == (2 * MAX_RUPIAH, 0, 0)
        assert not any("res_evil" in account for account in accounts)
        assert sum(accounts.values()) == 0
        assert (await staff.get("/ledger/digest")).status_code == 200
        statement = await staff.get("/artisans/res_b/statement")
        assert statement.status_code == 200 and statement.json()["balances"]["earned_idr"] == 2 * MAX_RUPIAH
        assert (await staff.get("/artisans/res_evil/statement")).status_code == 404  # never in the ledger
        page = await staff.get("/dashboard")
        assert page.status_code == 200, page.text[-2000:]
        assert 'data-artisan="res_b" data-earned="2000000000000"' in page.text
        assert 'data-artisan="res_a" data-earned="35000"' in page.text
        assert "res_evil" not in page.text

        # A payout run pays what was earned, one payout of at most the bound per artisan and run:
        # res_b's second trillion waits for the next run, and is paid then.
        first = await staff.post("/payout-runs", json={"run_id": "bounds-1", "period_end": PERIOD_END})
        assert first.status_code == 201, first.text
        assert {p["artisan_id"]: p["amount_idr"] for p in first.json()["payouts"]} == {
            "res_a": 35_000, "res_b": MAX_RUPIAH}
        assert first.json()["total_idr"] == MAX_RUPIAH + 35_000
        second = await staff.post("/payout-runs", json={"run_id": "bounds-2", "period_end": PERIOD_END})
        assert second.status_code == 201, second.text
        assert {p["artisan_id"]: p["amount_idr"] for p in second.json()["payouts"]} == {"res_b": MAX_RUPIAH}
        await all_caught_up(database_url, kafka_settings, published=True)
        accounts = (await staff.get("/ledger/balances")).json()["accounts"]
        assert account_balances(accounts, "res_a") == (0, 35_000, 0)
        assert account_balances(accounts, "res_b") == (0, 2 * MAX_RUPIAH, 0)
        page = await staff.get("/dashboard")
        assert page.status_code == 200
        assert f'data-run="bounds-1" data-scheduled="{MAX_RUPIAH + 35_000}"' in page.text

        # The auditor's replay reads the same history without dying, names the three records (where they
        # are, why, which field) and rebuilds the live ledger.
        result = await replay(kafka_settings, database_url=await scratch_database(), workers=2, processes=1,
                              trust=TRUST)
        assert result.history.undecodable_count == len(HOSTILE)
        assert {(u.position.topic, u.reason) for u in result.history.undecodable} == {("production", "schema-invalid")}
        assert all("data.amount_idr" in u.detail for u in result.history.undecodable)
        # Named by position: exactly the offsets the consumers dead-lettered.
        assert sorted((u.position.partition, u.position.offset) for u in result.history.undecodable) == sorted(
            {(letter.source_partition, letter.source_offset) for letter in letters})
        assert result.history.refused_count == 0
        live = (await staff.get("/ledger/digest")).json()
        assert (result.digest, result.accounts) == (live["digest"], accounts)

        # verify: replays, compares, checks; the forgeries are named in its report, and the live ledger
        # equals the replay.
        report = await verify(kafka_settings, payout_url=url, auditor_token=tokens.auditor,
                              database_url=await scratch_database(), workers=1, trust=TRUST)
        holds = {r.name: r.holds for r in report.invariants}
        assert holds["live-matches-replay"] and holds["ledger-events-in-history"] and holds["transactions-balance"]
        assert holds["paid-within-earned"] and holds["piece-earned-once"]
        assert report.history.undecodable_count == len(HOSTILE)
        assert any("3 records are not acceptable events" in warning for warning in report.warnings)
        document = report.to_json()["history"]["undecodable"]
        assert document["count"] == 3 and {r["reason"] for r in document["records"]} == {"schema-invalid"}


async def test_a_ledger_that_already_holds_outsized_rows_still_reads_and_pays(kafka_settings, database_url):
    """The attack before the bound: its rows are in the append-only ledger for good. Installing again (as
    every start does) bounds new rows without refusing those, and reads sum them as numeric, exactly."""
    conn = await asyncpg.connect(database_url)
    try:
        await projections.install_ledger(conn)
        # A ledger installed before the bound existed, into which the attacker's events were posted.
        await conn.execute("ALTER TABLE ledger_transactions DROP CONSTRAINT ledger_transactions_amount_idr_bounded")
        for n in range(2):
            await conn.execute(
                """INSERT INTO ledger_transactions (transaction_id, kind, business_key, event_id, event_type,
                       event_time, artisan_id, subject_id, amount_idr, from_account, to_account)
                   VALUES ($1, 'earned', $2, $3, 'qc-passed', $4, 'res_evil', $5, $6, 'collaborator:col_0:fees',
                           'artisan:res_evil:payable')""",
                f"earned:evil-{n}", f"piece:pc_evil_{n}", f"evil-{n}", MARCH, f"pc_evil_{n}", 2**63 - 1)
    finally:
        await conn.close()

    tokens = new_tokens()
    async with payout_service(kafka_settings, database_url, tokens) as url, client(url, tokens.staff) as staff:
        response = await staff.get("/ledger/balances")
        assert response.status_code == 200, response.text
        assert response.json()["accounts"] == {"artisan:res_evil:payable": 2 * (2**63 - 1),
                                               "collaborator:col_0:fees": -2 * (2**63 - 1)}
        statement = await staff.get("/artisans/res_evil/statement")
        assert statement.status_code == 200 and statement.json()["balances"]["earned_idr"] == 2 * (2**63 - 1)
        assert (await staff.get("/ledger/digest")).status_code == 200
        page = await staff.get("/dashboard")
        assert page.status_code == 200 and f'data-earned="{2 * (2**63 - 1)}"' in page.text
        run = await staff.post("/payout-runs", json={"run_id": "after-the-attack", "period_end": PERIOD_END})
        assert run.status_code == 201, run.text
        assert [(p["artisan_id"], p["amount_idr"]) for p in run.json()["payouts"]] == [("res_evil", MAX_RUPIAH)]

    conn = await asyncpg.connect(database_url)
    try:
        # The bound is back on the table, not validated against the old rows, and holds for new ones.
        assert await conn.fetchval(
            """SELECT convalidated FROM pg_constraint WHERE conrelid = 'ledger_transactions'::regclass
               AND conname = 'ledger_transactions_amount_idr_bounded'""") is False
        with pytest.raises(asyncpg.CheckViolationError, match="ledger_transactions_amount_idr_bounded"):
            await conn.execute(
                """INSERT INTO ledger_transactions (transaction_id, kind, business_key, event_id, event_type,
                       event_time, artisan_id, subject_id, amount_idr, from_account, to_account)
                   VALUES ('earned:x', 'earned', 'piece:x', 'x', 'qc-passed', now(), 'res_x', 'x', $1,
                           'collaborator:col_0:fees', 'artisan:res_x:payable')""", MAX_RUPIAH + 1)
        for table, constraint in (("payouts", "payouts_amount_idr_bounded"),
                                  ("dashboard_payouts", "dashboard_payouts_amount_idr_bounded")):
            assert await conn.fetchval("SELECT count(*) FROM pg_constraint WHERE conrelid = $1::regclass "
                                       "AND conname = $2", table, constraint) == 1
        await projections.install_ledger(conn)  # and installing again changes nothing
    finally:
        await conn.close()


async def test_an_amount_past_64_bits_that_reaches_the_ledger_anyway_fails_alone_never_the_batch(database_url):
    """Behind the decoder: an event built without validation (as a bug might) holding 2^64+5. Copying it
    in raises a bare OverflowError in asyncpg; the batch is posted event by event instead, and the
    culprit alone fails, as the live consumer then dead-letters it and the replay names it."""
    outsized = Envelope.wrap(QcPassed.model_construct(
        piece_id="pc_big", artisan_id="res_evil", collaborator_id="col_0", product="piring", amount_idr=2**64 + 5,
        submission_id="sub_big", inspected_at=MARCH, signature="c2lnbmF0dXJl"), source=service_source("production"),
        time=MARCH)
    (_, fine) = piece_events("res_a", 1, 15_000, at=MARCH)
    conn = await asyncpg.connect(database_url)
    try:
        await projections.install_ledger(conn)
        async with conn.transaction():
            outcome = await projections.apply_events(conn, [(outsized, None), (fine, None)])

        assert outcome.posted == 1 and outcome.rejected == []
        assert [index for index, _ in outcome.failed] == [0]
        assert await projections.balances(conn) == {"artisan:res_a:payable": 15_000,
                                                    "collaborator:col_1:fees": -15_000}
        assert domain.transaction_for(fine).transaction_id in {
            r["transaction_id"] for r in await conn.fetch("SELECT transaction_id FROM ledger_transactions")}
    finally:
        await conn.close()


# --- SPEC §7 at enrollment's door: plausible times, one's own rusunawa ------------------------------------


@pytest.fixture
async def enrollment(kafka_settings, database_url):
    tokens = new_tokens()
    settings = EnrollmentSettings(**service_settings(kafka_settings, database_url, tokens, "enrollment"),
                                  personal_data_key=new_personal_data_key())
    async with serve(enrollment_app(settings)) as url, client(url, tokens.staff) as staff:
        # Cohorts belong to a registered rusunawa.
        assert (await staff.post("/rusunawa", json={"name": "Nagrak", "ovop_product": "piring"})).status_code == 201
        yield staff, database_url


async def created(response, key: str) -> str:
    assert response.status_code == 201, response.text
    return response.json()[key]


async def test_a_resident_of_another_rusunawa_is_enrolled_only_by_an_override_with_a_published_reason(
    enrollment, kafka_settings
):
    staff, db = enrollment
    resident = await created(await staff.post("/residents", json={
        "rusunawa": "Marunda", "unit": "B-2", "full_name": "Sri Rahayu", "nik": "3175000000000321"}), "resident_id")
    cohort = await created(await staff.post("/cohorts", json={
        "rusunawa": "Nagrak", "skill": "menganyam", "product_focus": "piring", "starts_on": "2024-02-26",
        "ends_on": "2024-02-29", "capacity": 25}), "cohort_id")
    enrolments = f"/cohorts/{cohort}/enrolments"

    refused = await staff.post(enrolments, json={"resident_id": resident})
    assert refused.status_code == 409 and refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["code"] == "other-rusunawa"
    assert "Nagrak" in refused.json()["detail"] and "Marunda" in refused.json()["detail"]
    # Free text is no reason: the list is published (the OpenAPI document's enum), and the words sent
    # never reach the topic.
    free_text = await staff.post(enrolments, json={"resident_id": resident, "override_rusunawa": True,
                                                   "override_reason": "pindah ke Blok C-417"})
    assert free_text.status_code == 422
    assert [e["field"] for e in free_text.json()["errors"]] == ["override_reason"]
    no_reason = await staff.post(enrolments, json={"resident_id": resident, "override_rusunawa": True})
    assert no_reason.status_code == 422
    assert "moved-rusunawa" in json.dumps((await staff.get("/openapi.json")).json())

    overridden = await staff.post(enrolments, json={"resident_id": resident, "override_rusunawa": True,
                                                    "override_reason": "moved-rusunawa"})
    assert overridden.status_code == 201, overridden.text
    assert (overridden.json()["rusunawa_override"], overridden.json()["rusunawa_override_reason"]) == (
        True, "moved-rusunawa")
    assert (await staff.get(f"/cohorts/{cohort}")).json()["enrolled"] == [resident]

    async with database(db) as pool:
        await wait_until_published(pool, timeout=60)
    records = await read_topic(kafka_settings.bootstrap_servers,
                               topic_name(Topic.ENROLLMENT, kafka_settings.topic_prefix), timeout=60)
    (enrolled,) = [json.loads(r.value) for r in records if json.loads(r.value)["type"] == "enrolled"]
    assert enrolled["data"] | {"enrolled_at": None} == {
        "resident_id": resident, "cohort_id": cohort, "enrolled_at": None,
        "rusunawa_override": True, "rusunawa_override_reason": "moved-rusunawa"}


async def test_a_completion_dated_after_today_in_jakarta_is_refused_and_today_is_taken(enrollment):
    staff, _ = enrollment
    resident = await created(await staff.post("/residents", json={
        "rusunawa": "Nagrak", "unit": "A-1", "full_name": "Nur Aini", "nik": "3175000000000654"}), "resident_id")
    today = today_in_wib()
    cohort = await created(await staff.post("/cohorts", json={
        "rusunawa": "Nagrak", "skill": "menganyam", "product_focus": "piring",
        "starts_on": (today - timedelta(days=3)).isoformat(), "ends_on": (today + timedelta(days=3)).isoformat(),
        "capacity": 5}), "cohort_id")
    assert (await staff.post(f"/cohorts/{cohort}/enrolments", json={"resident_id": resident})).status_code == 201
    completions = f"/cohorts/{cohort}/completions"

    tomorrow = await staff.post(completions, json={"resident_id": resident,
                                                   "completed_on": (today + timedelta(days=1)).isoformat()})
    assert tomorrow.status_code == 422 and tomorrow.json()["code"] == "completed-in-the-future"
    assert (await staff.get(f"/cohorts/{cohort}")).json()["completed"] == []

    done = await staff.post(completions, json={"resident_id": resident, "completed_on": today.isoformat()})
    assert done.status_code == 201, done.text
    assert (await staff.get(f"/cohorts/{cohort}")).json()["completed"] == [resident]
