"""What payout says a resident is owed: enrollment asks before it erases her personal data.

Payout owns the ledger; enrollment only asks, over payout's HTTP API with the
auditor's read-only token. Erasing her data loses the account she is paid to, so
money she is owed must be paid first, or staff override it (issue 26).
"""

from __future__ import annotations

import logging
from urllib.parse import quote

import httpx

log = logging.getLogger(__name__)

#: How long erasure waits for payout before saying it cannot tell.
TIMEOUT_SECONDS = 5.0


class PayoutLedger:
    """Payout's ledger as enrollment reads it: what one artisan is owed, payable and in transit."""

    def __init__(
        self, payout_url: str | None, token: str, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._url = payout_url.rstrip("/") if payout_url else None
        self._token = token
        self._transport = transport  # tests answer as payout would, without one

    async def owed_idr(self, resident_id: str) -> int | None:
        """Payable plus in transit, in rupiah; 0 when the ledger has nothing of hers; None when payout
        is not configured, not reachable or answers anything else (the caller must not guess)."""
        if self._url is None:
            return None
        try:
            async with httpx.AsyncClient(base_url=self._url, timeout=TIMEOUT_SECONDS, transport=self._transport,
                                         headers={"Authorization": f"Bearer {self._token}"}) as http:
                # Quoted whole: an id is one path segment, never a way to another of payout's routes.
                response = await http.get(f"/artisans/{quote(resident_id, safe='')}/statement")
        except httpx.HTTPError as exc:
            log.warning("payout could not be asked what a resident is owed (%s)", type(exc).__name__)
            return None
        try:
            answer = response.json()
            if response.status_code == 404 and answer.get("code") == "artisan-not-in-ledger":
                return 0
            if response.status_code == 200:
                amounts = [answer["balances"]["payable_idr"], answer["balances"]["in_transit_idr"]]
                if all(type(amount) is int for amount in amounts) and sum(amounts) >= 0:  # noqa: E721 - not bool
                    return sum(amounts)
        except (ValueError, KeyError, TypeError, AttributeError):
            pass  # not the answer payout gives: unknown, as below
        log.warning("payout answered %d, not a balance, when asked what a resident is owed", response.status_code)
        return None
