"""What payout says a resident is owed: enrollment asks before it erases her personal data.

Payout owns the ledger; enrollment only asks, over payout's HTTP API with the
auditor's read-only token. Erasing her data loses the account she is paid to, so
money she is owed must be paid first, or staff override it (issue 26).
"""

from __future__ import annotations

import logging

import httpx

log = logging.getLogger(__name__)

#: How long erasure waits for payout before saying it cannot tell.
TIMEOUT_SECONDS = 5.0


class PayoutLedger:
    """Payout's ledger as enrollment reads it: what one artisan is owed, payable and in transit."""

    def __init__(self, payout_url: str | None, token: str) -> None:
        self._url = payout_url.rstrip("/") if payout_url else None
        self._token = token

    async def owed_idr(self, resident_id: str) -> int | None:
        """Payable plus in transit, in rupiah; 0 when the ledger has nothing of hers; None when payout
        is not configured, not reachable or answers anything else (the caller must not guess)."""
        if self._url is None:
            return None
        try:
            async with httpx.AsyncClient(base_url=self._url, timeout=TIMEOUT_SECONDS,
                                         headers={"Authorization": f"Bearer {self._token}"}) as http:
                response = await http.get(f"/artisans/{resident_id}/statement")
        except httpx.HTTPError as exc:
            log.warning("payout could not be asked what a resident is owed (%s)", type(exc).__name__)
            return None
        try:
            answer = response.json()
            if response.status_code == 404 and answer.get("code") == "artisan-not-in-ledger":
                return 0
            if response.status_code == 200:
                owed = answer["balances"]["payable_idr"] + answer["balances"]["in_transit_idr"]
                if type(owed) is int and owed >= 0:  # noqa: E721 - an amount, not a bool or a float
                    return owed
        except (ValueError, KeyError, TypeError, AttributeError):
            pass  # not the answer payout gives: unknown, as below
        log.warning("payout answered %d, not a balance, when asked what a resident is owed", response.status_code)
        return None
