"""An artisan's link: a revocable capability that opens her own page, and nothing else.

The link carries a secret of 256 random bits (`secrets.token_urlsafe(32)`: 43 URL-safe characters).
Payout keeps only its SHA-256, with the artisan it was made for and when it was made and revoked:
someone who reads the database cannot rebuild a link, and a link is found by an index lookup on the
hash of what was presented, never by comparing secrets character by character. The page takes the
artisan from the link's row alone, so the link cannot be pointed at anyone else.

Text that is not shaped like a secret is refused before the database is asked, with the very
answer an unknown or revoked link gets (see `http`).
"""

from __future__ import annotations

import hashlib
import html
import io
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import segno

from shared.ids import new_id

#: Random bytes per secret: 256 bits, far beyond guessing, in 43 URL-safe characters.
SECRET_BYTES = 32
_SECRET = re.compile(r"[A-Za-z0-9_-]{43}")

DDL = """
CREATE TABLE IF NOT EXISTS artisan_links (
    link_id       text COLLATE "C" PRIMARY KEY,
    artisan_id    text COLLATE "C" NOT NULL,
    -- The SHA-256 of the secret, never the secret itself.
    secret_sha256 bytea NOT NULL UNIQUE CHECK (length(secret_sha256) = 32),
    created_at    timestamptz NOT NULL,
    revoked_at    timestamptz
);
CREATE INDEX IF NOT EXISTS artisan_links_artisan ON artisan_links (artisan_id, created_at);
"""


@dataclass(frozen=True)
class Link:
    """A link as staff see it afterwards: which artisan, when made, when revoked (never its secret)."""

    link_id: str
    artisan_id: str
    created_at: datetime
    revoked_at: datetime | None


def new_secret() -> str:
    return secrets.token_urlsafe(SECRET_BYTES)


def plausible_secret(text: str) -> bool:
    """Whether `text` is shaped like a secret of ours (43 URL-safe characters, nothing else)."""
    return _SECRET.fullmatch(text) is not None


def secret_hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("ascii")).digest()


def qr_svg(url: str) -> str:
    """`url` as a QR code, an SVG document to print on her card (medium error correction: a card gets worn)."""
    out = io.BytesIO()
    # A whole SVG document (namespace, no XML declaration), so it can be saved as a .svg file and printed.
    segno.make_qr(url, error="m").save(out, kind="svg", scale=4, border=4, title="Anyam", xmldecl=False, nl=False)
    return out.getvalue().decode()


def card_svg(url: str, artisan_id: str) -> str:
    """A card to print for her (85.6 × 54 mm, a bank card's size): the QR code of `url`, what it is, her id.

    The link itself is not written on it: the QR code is the only copy a person could read off the card."""
    qr = segno.make_qr(url, error="m")
    width, _ = qr.symbol_size(scale=1, border=4)
    scale = max(1, 440 // width)
    side = width * scale
    top = (540 - side) // 2
    lines = [
        (480, 120, 34, "bold", "Halaman Anda"),
        (480, 160, 22, "normal", "Program Anyam"),
        (480, 240, 22, "normal", "Pindai dengan kamera"),
        (480, 270, 22, "normal", "ponsel untuk melihat"),
        (480, 300, 22, "normal", "produk, upah, dan"),
        (480, 330, 22, "normal", "slip pembayaran Anda."),
        (480, 420, 18, "normal", "Jangan bagikan kartu ini."),
        (480, 446, 18, "normal", "Hilang? Lapor ke staf."),
        (480, 500, 14, "normal", f"Perajin {artisan_id}"),
    ]
    text = "".join(
        f'<text x="{x}" y="{y}" font-size="{size}" font-weight="{weight}">{html.escape(words)}</text>'
        for x, y, size, weight, words in lines
    )
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" width="85.6mm" height="54mm" viewBox="0 0 856 540">'
        "<title>Anyam: Halaman Anda</title>"
        '<rect x="1" y="1" width="854" height="538" rx="28" fill="#fff" stroke="#7a3e1d" stroke-width="2"/>'
        f'<g transform="translate(24 {top})">{qr.svg_inline(scale=scale, border=4)}</g>'
        f'<g font-family="DejaVu Sans, Noto Sans, Arial, sans-serif" fill="#1f2a30">{text}</g></svg>'
    )


async def install(pool: asyncpg.Pool) -> None:
    """Create the links' table if missing."""
    from services.payout.artisan.projection import INSTALL_LOCK_KEY

    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", INSTALL_LOCK_KEY)
        await conn.execute(DDL)


async def is_known(conn: asyncpg.Connection, artisan_id: str) -> bool:
    """Whether payout has heard of `artisan_id`: enrolled, a piece of hers, a payout, or in the ledger."""
    return bool(await conn.fetchval(
        """SELECT EXISTS (SELECT 1 FROM artisan_page_residents WHERE artisan_id = $1)
               OR EXISTS (SELECT 1 FROM artisan_page_pieces WHERE artisan_id = $1)
               OR EXISTS (SELECT 1 FROM artisan_page_payouts WHERE artisan_id = $1)
               OR EXISTS (SELECT 1 FROM ledger_transactions WHERE artisan_id = $1)""",
        artisan_id,
    ))


async def create(conn: asyncpg.Connection, artisan_id: str, now: datetime) -> tuple[Link, str]:
    """A new link for `artisan_id` and its secret (which is not kept: this is the only time it is seen)."""
    secret = new_secret()
    link = Link(new_id("lnk"), artisan_id, now, None)
    await conn.execute(
        "INSERT INTO artisan_links (link_id, artisan_id, secret_sha256, created_at) VALUES ($1, $2, $3, $4)",
        link.link_id, artisan_id, secret_hash(secret), now,
    )
    return link, secret


async def revoke(conn: asyncpg.Connection, artisan_id: str, link_id: str, now: datetime) -> Link | None:
    """Revoke one of `artisan_id`'s links (revoking it again changes nothing); None if she has no such link."""
    row = await conn.fetchrow(
        """UPDATE artisan_links SET revoked_at = coalesce(revoked_at, $3)
           WHERE link_id = $1 AND artisan_id = $2
           RETURNING link_id, artisan_id, created_at, revoked_at""",
        link_id, artisan_id, now,
    )
    return Link(**dict(row)) if row is not None else None


async def links_of(conn: asyncpg.Connection, artisan_id: str) -> list[Link]:
    rows = await conn.fetch(
        """SELECT link_id, artisan_id, created_at, revoked_at FROM artisan_links
           WHERE artisan_id = $1 ORDER BY created_at, link_id""",
        artisan_id,
    )
    return [Link(**dict(row)) for row in rows]


async def artisan_of(conn: asyncpg.Connection, secret: str) -> str | None:
    """The artisan a live link's secret opens the page of; None for anything else (unknown, revoked, malformed)."""
    if not plausible_secret(secret):
        return None
    return await conn.fetchval(
        "SELECT artisan_id FROM artisan_links WHERE secret_sha256 = $1 AND revoked_at IS NULL", secret_hash(secret),
    )
