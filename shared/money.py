"""Money as people read it: integer rupiah, written the way Jakarta writes them."""

from __future__ import annotations


def rupiah(amount: int) -> str:
    """Rupiah as people in Jakarta write them: `Rp 1.250.000`."""
    sign = "-" if amount < 0 else ""
    return f"{sign}Rp {abs(amount):,}".replace(",", ".")
