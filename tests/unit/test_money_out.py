"""Money out (issue 29): reading a bank's results file, and writing the bank's transfer file."""

from __future__ import annotations

from datetime import datetime

import httpx
import pytest

from services.enrollment.bank_file import HEADER, PayoutRuns, RunPayout, write_bank_file
from services.enrollment.personal_data import PersonalData
from services.payout import results
from services.payout.results import ResultRow, RowOutcome
from shared.timeutil import WIB
from shared.web.problems import Problem

HEAD = "payout_id,status,bank_reference,failure_code,paid_at\r\n"


def test_a_results_file_gives_one_parsed_row_per_payout():
    rows = results.parse(("\ufeff" + HEAD + "po_A,paid,TRF-001,,2024-03-09T08:45:12+07:00\r\n"
                          "po_B,failed,,account-closed,\r\n\r\n").encode())
    assert rows == [
        ResultRow(2, "po_A", "paid", bank_reference="TRF-001", paid_at=datetime(2024, 3, 9, 8, 45, 12, tzinfo=WIB)),
        ResultRow(3, "po_B", "failed", failure_code="account-closed"),
    ]


@pytest.mark.parametrize(("line", "why"), [
    ("po_A,paid,,,2024-03-09T08:45:12+07:00", "no reference"),
    ("po_A,paid,TRF,,2024-03-09T08:45:12", "no offset"),
    ("po_A,paid,TRF,,yesterday", "not a moment"),
    ("po_A,paid,TRF,,1024-03-09T08:45:12+07:00", "implausible year"),
    ("po_A,paid,TRF,account-closed,2024-03-09T08:45:12+07:00", "both outcomes"),
    ("po_A,failed,,lost-in-the-post,", "not a failure code"),
    ("po_A,failed,TRF,other,", "a failure with a reference"),
    ("po_A,maybe,,,", "no such status"),
    ("po_A,paid,TRF", "too few cells"),
    ("po_A,failed,,other,,extra", "too many cells"),
    (",failed,,other,", "no payout id"),
    ("po_A,paid,\"TRF\x07\",,2024-03-09T08:45:12+07:00", "a control character"),
    ("po_A,paid," + "X" * 201 + ",,2024-03-09T08:45:12+07:00", "an oversized cell"),
])
def test_a_row_that_cannot_be_a_result_is_refused_on_its_own(line, why):
    rows = results.parse((HEAD + line + "\r\npo_B,failed,,other,\r\n").encode())
    assert isinstance(rows[0], RowOutcome), why
    assert (rows[0].line, rows[0].outcome, rows[0].code) == (2, "refused", "invalid-row")
    assert rows[1] == ResultRow(3, "po_B", "failed", failure_code="other")


@pytest.mark.parametrize(("body", "why"), [
    (b"\xff\xfe" + HEAD.encode("utf-16-le"), "not UTF-8"),
    (b"payout,status\r\npo_A,paid\r\n", "another header"),
    (b"", "empty"),
    (HEAD.encode(), "a header alone"),
    ((HEAD + 'po_A,paid,"TRF,,\r\n').encode(), "an unclosed quote"),
    ((HEAD + "po_A,failed,,other,\x00\r\n").encode(), "a NUL"),
    ((HEAD + "po_A,failed,,other,\r\n" * (results.MAX_ROWS + 1)).encode(), "too many rows"),
])
def test_a_file_that_is_no_results_file_is_a_422_problem(body, why):
    with pytest.raises(Problem) as refused:
        results.parse(body)
    assert (refused.value.status, refused.value.code) == (422, "invalid-results-file"), why


class Vault:
    """The vault as the bank file reads it: whose data is there, and who was erased."""

    def __init__(self, people: dict[str, PersonalData], erased: set[str]) -> None:
        self.people, self.erased = people, erased

    async def read(self, conn: object, resident_id: str) -> PersonalData | None:
        return self.people.get(resident_id)

    async def was_erased(self, conn: object, resident_id: str) -> bool:
        return resident_id in self.erased


async def test_the_bank_file_pays_each_account_its_amount_and_withholds_who_cannot_be_paid():
    vault = Vault({
        "res_ani": PersonalData(full_name="Ani, Siti", nik="3171000000000001", unit="A-1",
                                payout_account="BCA 1234567890"),
        "res_budi": PersonalData(full_name="Budi", nik="3171000000000002", unit="A-2"),
    }, erased={"res_cici"})
    payouts = [RunPayout("po_2", "res_budi", 30_000), RunPayout("po_1", "res_ani", 52_500),
               RunPayout("po_3", "res_cici", 10_000), RunPayout("po_4", "res_dewi", 5_000)]

    written = await write_bank_file(None, vault, payouts)  # type: ignore[arg-type]

    assert written.csv == (",".join(HEADER) + "\r\n" + 'po_1,BCA 1234567890,"Ani, Siti",52500\r\n')
    assert (written.transfers, written.total_idr) == (1, 52_500)
    assert written.withheld == (("po_2", "no-account"), ("po_3", "personal-data-erased"),
                                ("po_4", "no-personal-data"))


def runs(answer: httpx.Response | Exception, seen: list[httpx.Request] | None = None) -> PayoutRuns:
    def handle(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return PayoutRuns("http://payout.test", "auditor-token", transport=httpx.MockTransport(handle))


async def test_enrollment_asks_payout_for_the_runs_payouts_still_scheduled():
    seen: list[httpx.Request] = []
    answer = httpx.Response(200, json={"payouts": [
        {"payout_id": "po_1", "artisan_id": "res_1", "amount_idr": 1_000, "status": "scheduled"},
        {"payout_id": "po_2", "artisan_id": "res_2", "amount_idr": 2_000, "status": "paid"}]})
    assert await runs(answer, seen).scheduled("2024/03") == [RunPayout("po_1", "res_1", 1_000)]
    assert seen[0].url.raw_path == b"/payout-runs/2024%2F03"  # one path segment, whatever the id holds
    assert seen[0].headers["Authorization"] == "Bearer auditor-token"


@pytest.mark.parametrize(("answer", "status", "code"), [
    (httpx.Response(404, json={"code": "run-not-found"}), 404, "run-not-found"),
    (httpx.ConnectError("refused"), 503, "payout-unavailable"),
    (httpx.Response(200, json={"payouts": [{"payout_id": "po_1", "artisan_id": "res_1", "amount_idr": "1000",
                                            "status": "scheduled"}]}), 503, "payout-unavailable"),
    (httpx.Response(200, json={"payouts": [{"payout_id": "po_1", "artisan_id": "res_1", "amount_idr": True,
                                            "status": "scheduled"}]}), 503, "payout-unavailable"),
    (httpx.Response(500, text="oops"), 503, "payout-unavailable"),
])
async def test_no_file_is_written_from_an_answer_that_is_not_a_run(answer, status, code):
    with pytest.raises(Problem) as refused:
        await runs(answer).scheduled("run_1")
    assert (refused.value.status, refused.value.code) == (status, code)


async def test_without_payout_configured_there_is_no_bank_file():
    with pytest.raises(Problem) as refused:
        await PayoutRuns(None, "t").scheduled("run_1")
    assert (refused.value.status, refused.value.code) == (409, "payout-not-configured")
