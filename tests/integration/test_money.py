"""Money in and out (issue 29) on the real broker and PostgreSQL.

In: pieces pass QC, staff invoice their collaborator and record its payment in two parts; it then owes
nothing, its fees account is 0, and the auditor's `verify` still finds the live ledger equal to a replay.
Out: enrollment writes the bank's file for a run from the vault (and no topic ever carries an account);
payout imports the bank's results, and importing them again changes nothing.

Production is not run: the tests publish its events (attested as production's relay would) themselves.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import pytest

from anyam.audit.verify import verify
from services.enrollment.app import EnrollmentSettings
from services.enrollment.app import create_app as enrollment_app
from services.payout.app import PayoutSettings
from services.payout.app import create_app as payout_app
from shared.contracts import Envelope, Topic, service_source, topic_name
from shared.contracts.events import CollaboratorRegistered
from shared.contracts.signing import public_key_b64
from shared.timeutil import WIB
from tests.integration.test_payout import COLLABORATOR_KEY, caught_up, piece_events, publish
from tests.kafka_reader import read_topic
from tests.services import TRUST, client, new_personal_data_key, new_tokens, serve, service_settings

PRODUCTION = service_source("production")
MARCH = datetime(2024, 3, 4, 9, 0, tzinfo=WIB)
PERIOD_END = "2024-03-31T23:59:59+07:00"


def registered(collaborator_id: str) -> Envelope:
    """The collaborator's key, registered as production registers it: what makes its results count for an auditor."""
    return Envelope.wrap(CollaboratorRegistered(
        collaborator_id=collaborator_id, name="PT Anyaman Nusantara", public_key=public_key_b64(COLLABORATOR_KEY),
        valid_from=MARCH - timedelta(days=30)), source=PRODUCTION, time=MARCH - timedelta(days=30))


@contextlib.asynccontextmanager
async def payout_running(kafka_settings, database_url: str, tokens) -> AsyncIterator[str]:
    async with serve(payout_app(PayoutSettings(**service_settings(kafka_settings, database_url, tokens,
                                                                  "payout")))) as url:
        yield url


@pytest.fixture
async def producer(kafka_settings):
    from shared.kafka import start_producer

    producer = await start_producer(kafka_settings, linger_ms=5)
    yield producer
    await producer.stop()


async def test_an_invoice_paid_in_two_parts_leaves_nothing_owed_and_the_ledger_still_verifies(
    kafka_settings, database_url, scratch_database, producer
):
    tokens = new_tokens()
    # Three pieces for col_0 (piece_events gives even pieces to col_0), one of them after the period.
    history = [registered("col_0"), registered("col_1")]
    history += piece_events("res_ani", 0, 25_000, at=MARCH) + piece_events("res_budi", 2, 30_000, at=MARCH)
    history += piece_events("res_ani", 4, 27_500, at=MARCH + timedelta(days=1))
    history += piece_events("res_ani", 6, 9_000, at=datetime(2024, 4, 2, 9, 0, tzinfo=WIB))
    await publish(producer, kafka_settings, history)
    async with payout_running(kafka_settings, database_url, tokens) as url, client(url, tokens.staff) as staff:
        await caught_up(database_url, kafka_settings)
        before = (await staff.get("/collaborators/col_0/account")).json()
        assert (before["not_invoiced_idr"], before["invoiced_idr"], before["owed_idr"]) == (91_500, 0, 91_500)

        invoice = await staff.post("/collaborator-invoices", json={"collaborator_id": "col_0",
                                                                   "period_end": PERIOD_END})
        assert invoice.status_code == 201, invoice.text
        assert (invoice.json()["amount_idr"], invoice.json()["pieces"]) == (82_500, 3)
        invoice_id = invoice.json()["invoice_id"]
        again = await staff.post("/collaborator-invoices", json={"collaborator_id": "col_0",
                                                                 "period_end": PERIOD_END})
        assert (again.status_code, again.json()["invoice_id"]) == (200, invoice_id)
        # A later period invoices only what is new; nothing new in an earlier one.
        earlier = await staff.post("/collaborator-invoices", json={"collaborator_id": "col_0",
                                                                   "period_end": "2024-03-20T00:00:00+07:00"})
        assert (earlier.status_code, earlier.json()["code"]) == (422, "nothing-to-invoice")

        received = datetime.now(WIB)
        payments = f"/collaborator-invoices/{invoice_id}/payments"
        first = await staff.post(payments, json={"amount_idr": 50_000, "received_at": received.isoformat(),
                                                 "reference": "TRF-IN-0001"})
        assert first.status_code == 201, first.text
        over = await staff.post(payments, json={"amount_idr": 32_501, "received_at": received.isoformat(),
                                                "reference": "TRF-IN-0002"})
        assert (over.status_code, over.json()["code"]) == (409, "overpayment")
        second = await staff.post(payments, json={"amount_idr": 32_500, "received_at": received.isoformat(),
                                                  "reference": "TRF-IN-0002"})
        repeat = await staff.post(payments, json={"amount_idr": 32_500, "received_at": received.isoformat(),
                                                  "reference": "TRF-IN-0002"})
        assert (second.status_code, repeat.status_code) == (201, 200)
        assert repeat.json()["payment_id"] == second.json()["payment_id"]
        assert second.json()["outstanding_idr"] == 0
        await caught_up(database_url, kafka_settings, published=True)

        account = (await staff.get("/collaborators/col_0/account")).json()
        assert (account["invoiced_idr"], account["paid_idr"], account["outstanding_idr"]) == (82_500, 82_500, 0)
        assert account["not_invoiced_idr"] == 9_000  # April's piece waits for April's invoice
        april = await staff.post("/collaborator-invoices", json={"collaborator_id": "col_0",
                                                                 "period_end": datetime.now(WIB).isoformat()})
        assert (april.status_code, april.json()["amount_idr"], april.json()["pieces"]) == (201, 9_000, 1)
        await staff.post(f"/collaborator-invoices/{april.json()['invoice_id']}/payments", json={
            "amount_idr": 9_000, "received_at": datetime.now(WIB).isoformat(), "reference": "TRF-IN-0003"})
        await caught_up(database_url, kafka_settings, published=True)

        account = (await staff.get("/collaborators/col_0/account")).json()
        assert account["owed_idr"] == 0 and account["paid_idr"] == 91_500
        balances = (await staff.get("/ledger/balances")).json()["accounts"]
        assert balances["collaborator:col_0:fees"] == 0 and balances["collaborator:col_0:receivable"] == 0
        assert sum(balances.values()) == 0
        page = (await staff.get("/dashboard", params={"lang": "en"})).text
        assert 'data-collaborator="col_0" data-invoiced="91500" data-paid="91500" data-owed="0"' in page

        # The bank's reference for money in stays in payout's database: no record on the topic carries it.
        records = await read_topic(kafka_settings.bootstrap_servers, topic_name(Topic.PAYOUT,
                                                                                kafka_settings.topic_prefix))
        assert records and not any(b"TRF-IN-" in r.value for r in records)

        report = await verify(kafka_settings, payout_url=url, auditor_token=tokens.auditor,
                              database_url=await scratch_database(), trust=TRUST)
        assert report.ok, [v.message for r in report.broken for v in r.violations]


PEOPLE = (
    {"full_name": "Siti Aminah, S.Pd", "nik": "3175061203850001", "unit": "Blok C-417",
     "payout_account": "BRI 004512398761234"},
    {"full_name": "Dewi Lestari", "nik": "3175062807910003", "unit": "Blok D-508"},  # no account
    {"full_name": "Endang Sulastri", "nik": "3175061901680004", "unit": "Blok B-210",
     "payout_account": "DANA 0877-1234-5566"},
    {"full_name": "Rina Wati", "nik": "3175061901680005", "unit": "Blok B-211",
     "payout_account": "BCA 5271092288"},
)


async def test_the_bank_file_pays_each_account_and_its_results_come_back_once(
    kafka_settings, database_url, scratch_database, producer
):
    tokens = new_tokens()
    async with payout_running(kafka_settings, database_url, tokens) as payout_url, \
            client(payout_url, tokens.staff) as payout:
        settings = EnrollmentSettings(**service_settings(kafka_settings, await scratch_database(), tokens,
                                                         "enrollment"),
                                      personal_data_key=new_personal_data_key(), payout_url=payout_url)
        async with serve(enrollment_app(settings)) as enrollment_url, client(enrollment_url, tokens.staff) as staff:
            residents = []
            for person in PEOPLE:
                answer = await staff.post("/residents", json={"rusunawa": "Nagrak", **person})
                assert answer.status_code == 201, answer.status_code
                residents.append(answer.json()["resident_id"])
            history = [registered("col_0")]
            for n, (resident, amount) in enumerate(zip(residents, (52_500, 30_000, 10_000, 20_000), strict=True)):
                history += piece_events(resident, 2 * n, amount, at=MARCH)
            await publish(producer, kafka_settings, history)
            await caught_up(database_url, kafka_settings)
            run = await payout.post("/payout-runs", json={"run_id": "2024-03", "period_end": PERIOD_END})
            by_artisan = {p["artisan_id"]: p["payout_id"] for p in run.json()["payouts"]}
            # One of them erased (staff override: she is owed money): her payout cannot be in the file.
            erased = await staff.delete(f"/residents/{residents[2]}/personal-data",
                                        params={"override_money_owed": "true"})
            assert erased.status_code == 204

            exported = await staff.post("/bank-transfer-files", json={"run_id": "2024-03"})
            assert exported.status_code == 200, exported.text
            assert exported.headers["content-type"].startswith("text/csv")
            assert exported.headers["cache-control"] == "no-store"
            assert exported.content.decode().split("\r\n") == [
                "payout_id,account,account_name,amount_idr",
                *sorted([f'{by_artisan[residents[0]]},BRI 004512398761234,"Siti Aminah, S.Pd",52500',
                         f"{by_artisan[residents[3]]},BCA 5271092288,Rina Wati,20000"]),
                ""]
            assert exported.headers["anyam-withheld-count"] == "2"
            assert set(exported.headers["anyam-withheld"].split(",")) == {
                f"{by_artisan[residents[1]]}=no-account", f"{by_artisan[residents[2]]}=personal-data-erased"}
            assert (exported.headers["anyam-transfers"], exported.headers["anyam-total-idr"]) == ("2", "72500")
            unknown = await staff.post("/bank-transfer-files", json={"run_id": "no-such-run"})
            assert (unknown.status_code, unknown.json()["code"]) == (404, "run-not-found")
            async with client(enrollment_url, tokens.auditor) as auditor:
                assert (await auditor.post("/bank-transfer-files", json={"run_id": "2024-03"})).status_code == 403

            paid_at = datetime.now(WIB).isoformat()
            results = ("payout_id,status,bank_reference,failure_code,paid_at\r\n"
                       f"{by_artisan[residents[0]]},paid,BRI-REF-778899,,{paid_at}\r\n"
                       f"{by_artisan[residents[3]]},failed,,name-mismatch,\r\n"
                       "po_NOSUCHPAYOUT,failed,,other,\r\n").encode()
            path = "/payout-runs/2024-03/results"
            imported = await payout.post(path, content=results, headers={"Content-Type": "text/csv"})
            assert imported.status_code == 200, imported.text
            assert [(r["outcome"], r.get("code")) for r in imported.json()["rows"]] == [
                ("accepted", None), ("accepted", None), ("refused", "payout-not-found")]
            statuses = {p["payout_id"]: p["status"] for p in (await payout.get("/payout-runs/2024-03")).json()[
                "payouts"]}
            assert statuses[by_artisan[residents[0]]] == "paid" and statuses[by_artisan[residents[3]]] == "failed"
            assert statuses[by_artisan[residents[1]]] == "scheduled"

            again = await payout.post(path, content=results, headers={"Content-Type": "text/csv"})
            assert [(r["outcome"], r.get("code")) for r in again.json()["rows"]] == [
                ("already", None), ("already", None), ("refused", "payout-not-found")]
            assert (again.json()["accepted"], again.json()["already"]) == (0, 2)
            garbage = await payout.post(path, content=b"\xff\xfe\x00garbage", headers={"Content-Type": "text/csv"})
            assert (garbage.status_code, garbage.json()["code"]) == (422, "invalid-results-file")
            other_run = await payout.post("/payout-runs/2024-04/results", content=results,
                                          headers={"Content-Type": "text/csv"})
            assert (other_run.status_code, other_run.json()["code"]) == (404, "run-not-found")
            # What is left to pay: the payouts still scheduled; the paid one is no longer in the file.
            left = (await staff.post("/bank-transfer-files", json={"run_id": "2024-03"})).content.decode()
            assert by_artisan[residents[0]] not in left and "BRI 004512398761234" not in left
            await caught_up(database_url, kafka_settings, published=True)
            balances = (await payout.get("/ledger/balances")).json()["accounts"]
            assert balances[f"artisan:{residents[0]}:paid"] == 52_500
            assert balances[f"artisan:{residents[3]}:payable"] == 20_000

    # No topic carries an account, a name or the bank's reference: they stayed in the vault and databases.
    secrets_ = [p.get("payout_account") for p in PEOPLE if p.get("payout_account")]
    secrets_ += [p["full_name"] for p in PEOPLE] + ["BRI-REF-778899", "004512398761234", "5271092288"]
    for topic in Topic:
        for record in await read_topic(kafka_settings.bootstrap_servers, topic_name(topic,
                                                                                    kafka_settings.topic_prefix)):
            text = record.value.decode("utf-8", "replace")
            assert not [s for s in secrets_ if s in text], f"a record on {topic.value} carries personal data"
