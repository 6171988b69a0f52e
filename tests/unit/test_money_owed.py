"""What enrollment makes of payout's answer when it asks what a resident is owed before erasing her."""

from __future__ import annotations

import json

import httpx
import pytest

from services.enrollment.money import PayoutLedger


def ledger(answer: httpx.Response | Exception, seen: list[httpx.Request] | None = None) -> PayoutLedger:
    def handle(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return PayoutLedger("http://payout.test", "auditor-token", transport=httpx.MockTransport(handle))


def balance(payable: object, in_transit: object = 0) -> httpx.Response:
    return httpx.Response(200, json={"balances": {"payable_idr": payable, "in_transit_idr": in_transit}})


async def test_she_is_owed_what_is_payable_and_in_transit():
    seen: list[httpx.Request] = []
    assert await ledger(balance(100_000, 25_000), seen).owed_idr("res_1") == 125_000
    assert seen[0].url.path == "/artisans/res_1/statement"
    assert seen[0].headers["Authorization"] == "Bearer auditor-token"


async def test_nothing_in_the_ledger_is_nothing_owed():
    answer = httpx.Response(404, json={"code": "artisan-not-in-ledger"})
    assert await ledger(answer).owed_idr("res_1") == 0


@pytest.mark.parametrize("answer", [
    httpx.Response(404, json={"code": "not-found"}),  # some other 404: not payout's word on her
    httpx.Response(503, json={"code": "database-unavailable"}),
    httpx.Response(200, content=b"<html>not json</html>"),
    httpx.Response(200, json={"balances": {}}),
    httpx.Response(200, json=[1, 2]),
    balance(-5), balance(1.5), balance(True), balance("100"),
    httpx.ConnectError("refused"), httpx.ReadTimeout("slow"),
])
async def test_an_answer_that_is_no_balance_is_not_known(answer):
    assert await ledger(answer).owed_idr("res_1") is None


async def test_without_payout_configured_it_is_not_known():
    assert await PayoutLedger(None, "auditor-token").owed_idr("res_1") is None


async def test_an_id_cannot_reach_another_of_payouts_routes():
    seen: list[httpx.Request] = []
    await ledger(balance(0), seen).owed_idr("../../ledger/balances?as_of=x")
    # One segment, escaped: payout's router sees no other route and no query.
    assert seen[0].url.raw_path == b"/artisans/..%2F..%2Fledger%2Fbalances%3Fas_of%3Dx/statement"
    assert json.dumps(seen[0].url.params.multi_items()) == "[]"
