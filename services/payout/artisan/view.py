"""An artisan's own page as HTML: for a phone 360 px wide, in Bahasa Indonesia (English on request).

One self-contained document: inline CSS, no script, no font, no image, nothing to fetch, so once it
has loaded it reads the same with no signal (and the CSP makes that a rule the browser enforces).
Every value written into the page goes through `_e` (HTML escaping): products, methods and
references come from events, and events come from other services.

Elements carry `data-*` attributes with raw values, so tests read figures without parsing
"Rp 1.250.000". Nothing personal is shown or known here: she is greeted by her page, not her name.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from datetime import date, timedelta

from services.payout.artisan.queries import ArtisanPage, Payslip, Piece
from services.payout.pages import (
    Words,
    format_count,
    format_date,
    format_moment,
    format_short_date,
    glossed,
)
from services.payout.pages import e as _e
from shared.money import rupiah
from shared.timeutil import to_wib

_TEXT: dict[str, tuple[str, str]] = {
    # key: (Bahasa Indonesia, English)
    "title": ("Halaman Anda", "Your page"),
    "brand": ("Program Anyam", "Anyam programme"),
    "artisan": ("Perajin", "Artisan"),
    "switch": ("English", "Bahasa Indonesia"),
    "updated": ("Diperbarui", "Updated"),
    "summary": ("Ringkasan", "Summary"),
    "earned": ("Pendapatan", "Earned"),
    "paid": ("Sudah diterima", "Received"),
    "owed": ("Belum diterima", "Still owed"),
    "owed_note": (
        "Pendapatan adalah upah semua produk Anda yang lolos QC. Belum diterima = pendapatan yang belum sampai "
        "ke Anda: {} menunggu pembayaran berikutnya dan {} sedang dikirim.",
        "Earned is the pay for all your pieces that passed QC. Still owed = what you earned and have not "
        "received yet: {} waiting for the next payment and {} being sent.",
    ),
    "counts": ("{} produk dianyam · {} lolos QC · {} gagal QC · {} menunggu QC",
               "{} pieces woven · {} passed QC · {} failed QC · {} awaiting QC"),
    "pieces": ("Produk Anda", "Your pieces"),
    "woven_on": ("Dianyam {}", "Woven {}"),
    "week_counts": ("{} produk · {} lolos · {} gagal", "{} pieces · {} passed · {} failed"),
    "unknown_week": ("Tanggal anyam belum diterima", "Date woven not received yet"),
    "rate": ("Upah", "Rate"),
    "qc_passed": ("Lolos QC", "Passed QC"),
    "qc_failed": ("Gagal QC", "Failed QC"),
    "qc_pending": ("Menunggu QC", "Awaiting QC"),
    "defects": ("Cacat: {}", "Defects: {}"),
    "no_pieces": ("Belum ada produk.", "No pieces yet."),
    "payslips": ("Slip pembayaran", "Payslips"),
    "no_payslips": ("Belum ada pembayaran.", "No payments yet."),
    "slip_paid": ("Dibayar", "Paid"),
    "slip_failed": ("Gagal dikirim", "Not delivered"),
    "slip_transit": ("Sedang dikirim", "Being sent"),
    "method": ("Cara", "Method"),
    "reference": ("Nomor referensi", "Reference"),
    "period": ("Periode", "Period"),
    "period_value": ("produk lolos QC s.d. {}", "pieces passed QC up to {}"),
    "covers": ("Untuk", "For"),
    "covers_count": ("{} produk", "{} pieces"),
    "covers_count_one": ("{} produk", "{} piece"),
    "partial": ("sebagian", "part"),
    "covers_note": ("Produk dicocokkan dengan pembayaran dari yang terlama; buku besar mencatat jumlah uang, "
                    "bukan produk.",
                    "Pieces are matched to payments oldest first; the ledger records amounts, not pieces."),
    "why": ("Alasan", "Reason"),
    "returned": ("Uangnya kembali ke saldo Anda dan dibayar pada pembayaran berikutnya.",
                 "The money went back to what you are owed and is paid with the next payment."),
    "footer_private": ("Halaman ini hanya untuk Anda: jangan bagikan tautan atau kartunya. Kartu hilang? Minta staf "
                       "program membatalkan tautan ini dan membuat yang baru.",
                       "This page is for you alone: do not share its link or card. Lost the card? Ask programme "
                       "staff to cancel this link and make you a new one."),
    "footer_offline": ("Setelah dimuat, halaman ini tetap bisa dibaca tanpa internet. Semua waktu dalam WIB.",
                       "Once loaded, this page can be read without internet. All times in WIB."),
    "gone_title": ("Tautan tidak berlaku", "This link does not work"),
    "gone_lead": ("Tautan ini tidak dikenal atau sudah dibatalkan. Minta kartu baru kepada staf program.",
                  "This link is unknown or was cancelled. Ask programme staff for a new card."),
}

#: Every defect code (shared/contracts/codes.py) in words: (Bahasa Indonesia, English).
DEFECT_WORDS: dict[str, tuple[str, str]] = {
    "loose-weave": ("anyaman longgar", "loose weave"),
    "uneven-shape": ("bentuk tidak rata", "uneven shape"),
    "wrong-size": ("ukuran tidak sesuai", "wrong size"),
    "broken-strand": ("lidi atau serat patah", "broken strand"),
    "frayed-edge": ("tepi terurai", "frayed edge"),
    "stain": ("noda", "stain"),
    "mould": ("jamur", "mould"),
    "colour-mismatch": ("warna tidak sesuai", "colour mismatch"),
    "weak-handle": ("pegangan lemah", "weak handle"),
    "wrong-material": ("bahan tidak sesuai", "wrong material"),
    "other": ("cacat lain", "other defect"),
}

#: Every payout failure code in words.
FAILURE_WORDS: dict[str, tuple[str, str]] = {
    "account-closed": ("rekening sudah ditutup", "the account is closed"),
    "account-not-found": ("rekening tidak ditemukan", "the account was not found"),
    "name-mismatch": ("nama pemilik rekening tidak cocok", "the account holder's name did not match"),
    "rejected-by-bank": ("ditolak oleh bank", "rejected by the bank"),
    "limit-exceeded": ("melebihi batas", "over the limit"),
    "wallet-inactive": ("dompet digital tidak aktif", "the e-wallet is inactive"),
    "returned": ("dana dikembalikan", "the money was returned"),
    "other": ("alasan lain", "another reason"),
}

#: Payment methods staff record (free labels): the usual ones in words, others shown as recorded.
METHOD_WORDS: dict[str, tuple[str, str]] = {
    "bank-transfer": ("Transfer bank", "Bank transfer"),
    "e-wallet": ("Dompet digital", "E-wallet"),
    "cash": ("Tunai", "Cash"),
}



class _Words(Words):
    def __init__(self, lang: str) -> None:
        super().__init__(lang, _TEXT)

    def product(self, product: str | None) -> str:
        return "–" if product is None else glossed(product, self.lang)


# --- the pages ---------------------------------------------------------------------------------------


def render_page(page: ArtisanPage, lang: str) -> str:
    """Her whole page."""
    w = _Words(lang)
    body = "\n".join((
        _header(w, page),
        _summary(w, page),
        _pieces(w, page.pieces),
        _payslips(w, page.payslips, {p.piece_id: p for p in page.pieces}),
        f'<footer><p>{_e(w("footer_private"))}</p><p>{_e(w("footer_offline"))}</p></footer>',
    ))
    return _document(w, w("title"), body)


def render_not_found(lang: str) -> str:
    """The one answer to a link that opens nothing (unknown, revoked or malformed alike)."""
    w = _Words(lang)
    body = (f'<header class="top"><div><p class="brand">{_e(w("brand"))}</p><h1>{_e(w("gone_title"))}</h1></div>'
            f"{_switch(w)}</header>"
            f'<section class="card" data-status="404"><p>{_e(w("gone_lead"))}</p></section>')
    return _document(w, w("gone_title"), body)


def _document(w: _Words, title: str, body: str) -> str:
    return (
        f'<!doctype html>\n<html lang="{w.lang}">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="robots" content="noindex, nofollow">\n<meta name="referrer" content="no-referrer">\n'
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>\n{body}\n</main>\n</body>\n"
        "</html>\n"
    )


def _switch(w: _Words) -> str:
    other = "en" if w.lang == "id" else "id"
    return (f'<nav class="lang"><a href="?lang={other}" hreflang="{other}" lang="{other}" '
            f'data-lang-switch="{other}">{_e(w("switch"))}</a></nav>')


def _header(w: _Words, page: ArtisanPage) -> str:
    return (
        f'<header class="top"><div><p class="brand">{_e(w("brand"))}</p><h1>{_e(w("title"))}</h1>'
        f'<p class="sub">{_e(w("artisan"))} <span class="id" data-artisan="{_e(page.artisan_id)}">'
        f"{_e(page.artisan_id)}</span></p></div>{_switch(w)}</header>\n"
        f'<p class="meta">{_e(w("updated"))} <time>{_e(format_moment(page.generated_at, w.lang))}</time></p>'
    )


def _money(key: str, label: str, amount: int, *, cls: str = "") -> str:
    return (f'<div class="money {cls}" data-money="{key}" data-value="{amount}"><dt>{_e(label)}</dt>'
            f"<dd>{_e(rupiah(amount))}</dd></div>")


def _summary(w: _Words, page: ArtisanPage) -> str:
    passed = sum(p.qc == "passed" for p in page.pieces)
    failed = sum(p.qc == "failed" for p in page.pieces)
    pending = len(page.pieces) - passed - failed
    counts = w("counts", *(format_count(n, w.lang) for n in (len(page.pieces), passed, failed, pending)))
    return (
        f'<section class="card" id="summary"><h2>{_e(w("summary"))}</h2><dl class="moneys">'
        + _money("earned", w("earned"), page.earned_idr, cls="big")
        + _money("paid", w("paid"), page.paid_idr)
        + _money("owed", w("owed"), page.owed_idr)
        + "</dl>"
        f'<p class="note" data-payable="{page.payable_idr}" data-in-transit="{page.in_transit_idr}">'
        + _e(w("owed_note")).format(*(f'<span class="num">{_e(rupiah(amount))}</span>'
                                      for amount in (page.payable_idr, page.in_transit_idr)))
        + f'</p><p class="counts">{_e(counts)}</p></section>'
    )


def _pieces(w: _Words, pieces: Sequence[Piece]) -> str:
    """Her pieces by the week she wove them, newest first; the newest week open, the others one tap away."""
    if not pieces:
        content = f'<p class="empty">{_e(w("no_pieces"))}</p>'
    else:
        weeks: dict[date | None, list[Piece]] = {}
        for piece in pieces:  # already newest first
            monday = None
            if piece.woven_at is not None:
                day = to_wib(piece.woven_at).date()
                monday = day - timedelta(days=day.weekday())
            weeks.setdefault(monday, []).append(piece)
        content = "".join(_week(w, monday, week, opened=i == 0) for i, (monday, week) in enumerate(weeks.items()))
    return f'<section class="card" id="pieces"><h2>{_e(w("pieces"))}</h2>{content}</section>'


def _week(w: _Words, monday: date | None, pieces: Sequence[Piece], *, opened: bool) -> str:
    if monday is None:
        span = w("unknown_week")
    else:
        sunday = monday + timedelta(days=6)
        start = format_short_date(monday, w.lang) if monday.month != sunday.month else str(monday.day)
        span = f"{start}–{format_date(sunday, w.lang)}"
    passed = sum(p.qc == "passed" for p in pieces)
    failed = sum(p.qc == "failed" for p in pieces)
    counts = w("week_counts", len(pieces), passed, failed)
    return (f'<details class="week"{" open" if opened else ""} data-week="{monday.isoformat() if monday else ""}">'
            f'<summary><span class="span">{_e(span)}</span> <span class="muted">{_e(counts)}</span></summary>'
            f'<ol class="pieces">{"".join(_piece(w, p) for p in pieces)}</ol></details>')


def _piece(w: _Words, p: Piece) -> str:
    qc = p.qc or "pending"
    badge = {"passed": ("ok", w("qc_passed")), "failed": ("bad", w("qc_failed"))}.get(qc, ("wait", w("qc_pending")))
    woven = w("woven_on", format_date(p.woven_at, w.lang)) if p.woven_at is not None else ""
    rate = rupiah(p.rate_idr) if p.rate_idr is not None else "–"
    defects = ""
    if p.defects:
        words = ", ".join(w.pick(DEFECT_WORDS, code) for code in p.defects)
        defects = f'<p class="defects" data-defects="{_e(" ".join(p.defects))}">{_e(w("defects", words))}</p>'
    return (
        f'<li class="piece {qc}" data-piece="{_e(p.piece_id)}" data-qc="{qc}" data-rate="{p.rate_idr or 0}" '
        f'data-earned="{p.earned_idr or 0}">'
        f'<div class="row"><strong class="product">{_e(w.product(p.product))}</strong>'
        f'<span class="badge {badge[0]}">{_e(badge[1])}</span></div>'
        f'<div class="row"><span class="muted">{_e(woven)}</span>'
        f'<span class="num"><small class="muted">{_e(w("rate"))}</small> {_e(rate)}</span></div>'
        f'{defects}<p class="id">{_e(p.piece_id)}</p></li>'
    )


def _payslips(w: _Words, payslips: Sequence[Payslip], pieces: dict[str, Piece]) -> str:
    if not payslips:
        content = f'<p class="empty">{_e(w("no_payslips"))}</p>'
    else:
        content = "".join(_payslip(w, slip, pieces) for slip in payslips)
        content += f'<p class="note">{_e(w("covers_note"))}</p>'
    return f'<section class="card" id="payslips"><h2>{_e(w("payslips"))}</h2>{content}</section>'


def _payslip(w: _Words, slip: Payslip, pieces: dict[str, Piece]) -> str:
    outcome = slip.outcome or "in-transit"
    if slip.outcome == "paid":
        status, when = w("slip_paid"), slip.paid_at or slip.settled_at
    elif slip.outcome == "failed":
        status, when = w("slip_failed"), slip.settled_at
    else:
        status, when = w("slip_transit"), slip.scheduled_at
    rows: list[tuple[str, str, str]] = []  # (label, html, css class)
    if slip.outcome == "failed":
        reason = w.pick(FAILURE_WORDS, slip.failure_reason or "other")
        rows.append((w("why"), _e(reason), ""))
    if slip.method is not None:
        rows.append((w("method"), _e(w.pick(METHOD_WORDS, slip.method)), ""))
    if slip.reference is not None:
        rows.append((w("reference"), _e(slip.reference), "id"))
    if slip.period_end is not None:
        period = w("period_value", format_date(slip.period_end, w.lang))
        rows.append((w("period"), _e(period), ""))
    if slip.shares:
        count_key = "covers_count_one" if len(slip.shares) == 1 and w.lang == "en" else "covers_count"
        listed = "".join(_share(w, share.piece_id, share.partial, pieces) for share in slip.shares)
        # Folded: a weekly payout may pay for a dozen pieces, and the phone's screen is small.
        rows.append((w("covers"), f'<details class="covers"><summary>{_e(w(count_key, len(slip.shares)))}</summary>'
                                  f"<ul>{listed}</ul></details>", ""))
    details = "".join(f'<dt>{_e(label)}</dt><dd class="{cls}">{value}</dd>' for label, value, cls in rows)
    returned = f'<p class="note">{_e(w("returned"))}</p>' if slip.outcome == "failed" else ""
    covered = " ".join(share.piece_id for share in slip.shares)
    return (
        f'<article class="slip {outcome}" data-payslip="{_e(slip.payout_id)}" data-outcome="{outcome}" '
        f'data-amount="{slip.amount_idr}" data-pieces="{_e(covered)}">'
        f'<div class="row"><span class="badge {outcome}">{_e(status)}</span>'
        f'<time>{_e(format_moment(when, w.lang)).replace(" WIB", "&nbsp;WIB") if when is not None else ""}</time>'
        "</div>"
        f'<p class="amount">{_e(rupiah(slip.amount_idr))}</p>'
        f"<dl>{details}</dl>{returned}<p class=\"id\">{_e(slip.payout_id)}</p></article>"
    )


def _share(w: _Words, piece_id: str, partial: bool, pieces: dict[str, Piece]) -> str:
    piece = pieces.get(piece_id)
    if piece is None:  # her read model lags the ledger: the piece by its id
        text = piece_id
    else:
        when = format_short_date(piece.woven_at, w.lang) if piece.woven_at is not None else ""
        text = f"{w.product(piece.product)} ({when})" if when else w.product(piece.product)
    if partial:
        text += f" – {w('partial')}"
    return f'<li data-covers="{_e(piece_id)}">{_e(text)}</li>'


_CSS = """
:root { --ink: #1f2a30; --muted: #5f6b73; --line: #e2ddd3; --bg: #f5f1ea; --card: #fff; --accent: #7a3e1d;
  --ok: #2e7d32; --bad: #c62828; --wait: #8a6d00; }
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body { margin: 0; background: var(--bg); color: var(--ink);
  font: 16px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "DejaVu Sans", sans-serif; }
main { max-width: 480px; margin: 0 auto; padding: 12px 12px 24px; }
.top { display: flex; justify-content: space-between; align-items: flex-start; gap: 8px;
  border-bottom: 3px solid var(--accent); padding-bottom: 8px; }
.brand { margin: 0; color: var(--muted); font-size: 13px; text-transform: uppercase; letter-spacing: .5px; }
h1 { margin: 0; font-size: 24px; color: var(--accent); }
h2 { margin: 0 0 8px; font-size: 18px; }
.sub { margin: 2px 0 0; color: var(--muted); font-size: 14px; }
.lang a { display: inline-block; padding: 6px 12px; border: 1px solid var(--accent); border-radius: 16px;
  color: var(--accent); text-decoration: none; font-weight: 600; background: #fff; font-size: 14px;
  white-space: nowrap; }
.meta { color: var(--muted); margin: 6px 0 12px; font-size: 13px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 12px;
  margin-bottom: 12px; }
.moneys { margin: 0; }
.money { display: flex; justify-content: space-between; align-items: baseline; flex-wrap: wrap; gap: 0 8px;
  border-top: 1px solid var(--line); padding: 6px 0; }
.money.big { border-top: 0; background: #faf7f2; border-radius: 8px; padding: 8px 10px; margin-bottom: 4px; }
.money dt { color: var(--muted); font-size: 14px; }
.money dd { margin: 0 0 0 auto; font-size: 19px; font-weight: 700; font-variant-numeric: tabular-nums;
  white-space: nowrap; }
.money.big dt { width: 100%; }
.money.big dd { font-size: 26px; color: var(--accent); }
.note { color: var(--muted); font-size: 13px; margin: 8px 0 0; }
.counts { margin: 8px 0 0; font-size: 14px; }
.week { border-top: 1px solid var(--line); }
.week:first-of-type { border-top: 0; }
.week summary { padding: 8px 0; cursor: pointer; font-weight: 600; }
.week summary .muted { font-weight: 400; }
.pieces { list-style: none; margin: 0 0 8px; padding: 0; }
.piece { border-top: 1px solid var(--line); padding: 8px 0; }
.piece:first-child { border-top: 0; padding-top: 0; }
.row { display: flex; justify-content: space-between; align-items: baseline; gap: 8px; }
.product { font-size: 17px; }
.num { font-variant-numeric: tabular-nums; white-space: nowrap; }
.muted { color: var(--muted); font-size: 14px; }
.badge { display: inline-block; border-radius: 10px; padding: 1px 8px; font-size: 13px; font-weight: 600;
  white-space: nowrap; }
.badge.ok, .badge.paid { background: #e3f1e4; color: var(--ok); }
.badge.bad, .badge.failed { background: #fbe4e4; color: var(--bad); }
.badge.wait, .badge.in-transit { background: #fbf3d9; color: var(--wait); }
.defects { margin: 2px 0 0; color: var(--bad); font-size: 14px; }
.id { margin: 2px 0 0; font-family: "DejaVu Sans Mono", ui-monospace, monospace; font-size: 11.5px;
  color: var(--muted); overflow-wrap: anywhere; }
.slip { border: 1px dashed #cbbfae; border-radius: 8px; padding: 10px; margin-bottom: 10px; background: #fffdf9; }
.slip time { color: var(--muted); font-size: 13px; text-align: right; }
.slip .amount { margin: 4px 0; font-size: 24px; font-weight: 700; font-variant-numeric: tabular-nums; }
.slip.failed .amount { color: var(--muted); text-decoration: line-through; }
.slip dl { margin: 0; display: grid; grid-template-columns: max-content 1fr; gap: 2px 10px; font-size: 14px; }
.slip dt { color: var(--muted); }
.slip dd { margin: 0; min-width: 0; }
.covers summary { cursor: pointer; }
.covers ul { margin: 2px 0 0; padding-left: 18px; }
.empty { color: var(--muted); font-style: italic; }
footer { color: var(--muted); font-size: 13px; }
footer p { margin: 6px 0; }
"""

#: The page's one style sheet by its hash, for a CSP that allows exactly it and no other style.
STYLE_HASH = "sha256-" + base64.b64encode(hashlib.sha256(_CSS.encode()).digest()).decode()
