"""Money out: the bank's bulk-transfer file for a payout run, written by enrollment (issue 29).

Payout knows what to pay each artisan and nothing about where: the account an artisan is paid to is
personal data, sealed in enrollment's vault. So enrollment writes the file: it asks payout (over HTTP,
with the auditor's read-only token, as `money.PayoutLedger` does) for the run's payouts still
scheduled, opens each artisan's `payout_account` from the vault, and answers the CSV to staff only,
never cached. An account is never logged, published or stored anywhere else; a payout whose artisan has
no account on record, or whose personal data was erased, is withheld from the file and reported beside
it (response headers), so staff can settle it another way without the whole file failing.

The format (docs/money.md): UTF-8 without a byte-order mark, RFC 4180 (comma-separated, CRLF line ends,
fields quoted only when they must be), a header row, then one row per transfer:

    payout_id,account,account_name,amount_idr

- `payout_id`: the transfer's own reference; the bank's results file names each payout by it.
- `account`: the artisan's payout account as registered (bank and account number, or an e-wallet).
- `account_name`: the account holder's name as registered; banks check it against the account
  (a mismatch comes back as `name-mismatch`).
- `amount_idr`: whole rupiah in decimal digits, no separator, no decimals (e.g. `52500`).
"""

from __future__ import annotations

import csv
import io
import logging
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
from fastapi import APIRouter, Depends
from fastapi.responses import Response
from pydantic import Field

from services.enrollment.personal_data import PersonalDataVault
from shared.service import ServiceRuntime
from shared.web.access import STAFF, Access, Principal
from shared.web.inputs import CommandBody, LookupId
from shared.web.openapi import problems
from shared.web.problems import Problem

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 10.0
HEADER = ("payout_id", "account", "account_name", "amount_idr")
#: At most this many withheld payouts are named in `Anyam-Withheld` (all are counted).
MAX_WITHHELD_NAMED = 100
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class RunPayout:
    payout_id: str
    artisan_id: str
    amount_idr: int


class PayoutRuns:
    """Payout's runs as enrollment reads them: a run's payouts still scheduled (not paid, not failed)."""

    def __init__(
        self, payout_url: str | None, token: str, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._url = payout_url.rstrip("/") if payout_url else None
        self._token = token
        self._transport = transport

    async def scheduled(self, run_id: str) -> list[RunPayout]:
        """The run's scheduled payouts; a `Problem` when payout is not configured, unreachable, knows no
        such run, or answers anything else (a file must never be written from a guess)."""
        if self._url is None:
            # This deployment's state, not an outage: as erasure's `money-unknown`, a conflict to resolve.
            raise Problem(409, "payout-not-configured",
                          "Enrollment does not know where payout is (ANYAM_PAYOUT_URL); no bank file can be written.")
        try:
            async with httpx.AsyncClient(base_url=self._url, timeout=TIMEOUT_SECONDS, transport=self._transport,
                                         headers={"Authorization": f"Bearer {self._token}"}) as http:
                response = await http.get(f"/payout-runs/{quote(run_id, safe='')}")
        except httpx.HTTPError as exc:
            log.warning("payout could not be asked for a run's payouts (%s)", type(exc).__name__)
            raise Problem(503, "payout-unavailable", "Payout did not answer; try again shortly.") from None
        try:
            answer = response.json()
            if response.status_code == 404 and answer.get("code") == "run-not-found":
                raise Problem(404, "run-not-found", f"Payout knows no run {run_id}.")
            if response.status_code == 200:
                return [RunPayout(p["payout_id"], p["artisan_id"], _amount(p["amount_idr"]))
                        for p in answer["payouts"] if p["status"] == "scheduled"]
        except (ValueError, KeyError, TypeError, AttributeError):
            pass
        log.warning("payout answered %d, not a run, when asked for a run's payouts", response.status_code)
        raise Problem(503, "payout-unavailable", "Payout's answer was not a run's payouts; try again shortly.")


def _amount(value: Any) -> int:
    if type(value) is not int or value <= 0:  # noqa: E721 - bool is not money
        raise ValueError("not an amount")
    return value


@dataclass(frozen=True)
class BankFile:
    """The CSV for the bank, and the payouts left out of it with why (`no-account`, `personal-data-erased`)."""

    csv: str
    transfers: int
    total_idr: int
    withheld: tuple[tuple[str, str], ...]


async def write_bank_file(conn: Any, vault: PersonalDataVault, payouts: list[RunPayout]) -> BankFile:
    """The run's transfers, each to the account its artisan registered (opened from the vault here and
    written nowhere but the file)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(HEADER)
    withheld: list[tuple[str, str]] = []
    transfers = total = 0
    for payout in sorted(payouts, key=lambda p: p.payout_id):
        person = await vault.read(conn, payout.artisan_id)
        if person is None:
            erased = await vault.was_erased(conn, payout.artisan_id)
            withheld.append((payout.payout_id, "personal-data-erased" if erased else "no-personal-data"))
            continue
        if not person.payout_account:
            withheld.append((payout.payout_id, "no-account"))
            continue
        writer.writerow((payout.payout_id, person.payout_account, person.full_name, payout.amount_idr))
        transfers += 1
        total += payout.amount_idr
    return BankFile(out.getvalue(), transfers, total, tuple(withheld))


class ExportBankFile(CommandBody):
    run_id: LookupId = Field(description="The payout run to pay.", examples=["2024-03"])


def bank_file_router(runtime: ServiceRuntime, vault: PersonalDataVault, access: Access, runs: PayoutRuns) -> APIRouter:
    router = APIRouter(tags=["money"])
    staff = access.allow(STAFF)

    @router.post(
        "/bank-transfer-files", responses={
            200: {"description": "The bank's CSV (docs/money.md). `Anyam-Withheld-Count`: payouts left out; "
                                 "`Anyam-Withheld`: up to 100 of them as `payout_id=reason`.",
                  "content": {"text/csv": {"schema": {"type": "string"}}}},
            **problems(404, 409, 503)},
        response_class=Response,
        summary="Write the bank's bulk-transfer file for a payout run's scheduled payouts (staff only)",
    )
    async def export(body: ExportBankFile, _: Principal = Depends(staff)) -> Response:
        payouts = await runs.scheduled(body.run_id)
        async with runtime.pool.acquire() as conn:
            written = await write_bank_file(conn, vault, payouts)
        # Counts and opaque ids only: never an account, never a name.
        log.info("bank file written for a payout run: %d transfers, %d withheld", written.transfers,
                 len(written.withheld))
        filename = _SAFE_NAME.sub("_", body.run_id)[:80] or "run"
        headers = {
            "Cache-Control": "no-store",
            "Content-Disposition": f'attachment; filename="anyam-bank-{filename}.csv"',
            "X-Content-Type-Options": "nosniff",
            "Anyam-Transfers": str(written.transfers),
            "Anyam-Total-Idr": str(written.total_idr),
            "Anyam-Withheld-Count": str(len(written.withheld)),
        }
        if written.withheld:
            headers["Anyam-Withheld"] = ",".join(f"{_SAFE_NAME.sub('_', payout_id)}={reason}"
                                                 for payout_id, reason in written.withheld[:MAX_WITHHELD_NAMED])
        return Response(written.csv.encode(), media_type="text/csv; charset=utf-8", headers=headers)

    return router
