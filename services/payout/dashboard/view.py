"""The dashboard as HTML: one self-contained page, in Bahasa Indonesia or English.

Self-contained on purpose: staff open it in a rusunawa office that may have no
internet, so there is nothing to fetch — CSS is inline, charts are SVG drawn
here on the server, there is no script and no web font. Every value written
into the page goes through `_e` (HTML escaping): ids and product names come
from events, and events come from other services.

Rows carry `data-*` attributes with raw numbers, so tests (and anyone scraping
the page) read figures without parsing "Rp 1.250.000".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from services.payout.pages import MONTHS, Words, format_count, format_date, format_moment, glossed
from services.payout.pages import e as _e
from shared.contracts.events import same_label
from shared.money import rupiah
from shared.timeutil import to_wib

if TYPE_CHECKING:
    from services.payout.dashboard.queries import CohortRow, Dashboard, RunRow, WeekProduct

# --- words ------------------------------------------------------------------------------------------

_TEXT: dict[str, tuple[str, str]] = {
    # key: (Bahasa Indonesia, English)
    "title": ("Dasbor Program Anyam", "Anyam programme dashboard"),
    "subtitle": ("Pelatihan, produksi, dan pembayaran perajin anyaman rusunawa",
                 "Training, production and pay of the rusunawa weavers"),
    "switch": ("English", "Bahasa Indonesia"),
    "updated": ("Diperbarui", "Updated"),
    "money_note": ("Angka uang dari buku besar (ledger) layanan payout; semua waktu dalam WIB.",
                   "Money figures come from the payout service's ledger; all times in WIB."),
    "kpi_enrolled": ("Peserta terdaftar", "Residents enrolled"),
    "kpi_capacity": ("dari kapasitas {}", "of {} places"),
    "kpi_completed": ("Lulus pelatihan", "Completed training"),
    "kpi_withdrawn": ("{} mengundurkan diri", "{} withdrew"),
    "kpi_woven": ("Produk dianyam", "Pieces woven"),
    "kpi_passed": ("{} lolos QC ({})", "{} passed QC ({})"),
    "kpi_earned": ("Pendapatan perajin", "Artisans' earnings"),
    "kpi_artisans": ("{} perajin", "{} artisans"),
    "kpi_artisans_one": ("{} perajin", "{} artisan"),
    "kpi_paid": ("Sudah dibayar", "Paid"),
    "kpi_runs": ("{} pembayaran, {} putaran", "{} payouts in {} runs"),
    "kpi_owed": ("Masih terutang", "Still owed"),
    "kpi_transit": ("{} sedang dikirim", "{} being sent"),
    "ovop": ("Produk unggulan tiap rusunawa (OVOP)", "Each rusunawa's product (OVOP)"),
    "ovop_note": ("One Village One Product: tiap rusunawa fokus pada satu produk — yang terdaftar untuknya "
                  "(atau fokus angkatan terakhirnya).",
                  "One Village One Product: each rusunawa focuses on one product — the one registered for it "
                  "(or its latest cohort's focus)."),
    "scope": ("Tampilkan", "Show"),
    "scope_all": ("Semua rusunawa", "Every rusunawa"),
    "ovop_cohorts": ("{} angkatan", "{} cohorts"),
    "ovop_cohorts_one": ("{} angkatan", "{} cohort"),
    "ovop_before": ("sebelumnya: {}", "before: {}"),
    "cohorts": ("Pendaftaran dan kelulusan per angkatan", "Enrolment and completion per cohort"),
    "rusunawa": ("Rusunawa", "Rusunawa"),
    "skill": ("Keterampilan", "Skill"),
    "focus": ("Produk fokus", "Product focus"),
    "starts": ("Mulai", "Starts"),
    "ends": ("Selesai", "Ends"),
    "capacity": ("Kapasitas", "Capacity"),
    "enrolled": ("Terdaftar", "Enrolled"),
    "completed": ("Lulus", "Completed"),
    "withdrawn": ("Mengundurkan diri", "Withdrawn"),
    "progress": ("Kemajuan", "Progress"),
    "unknown_cohort": ("(jadwal angkatan belum diterima)", "(cohort schedule not received yet)"),
    "production": ("Produk dianyam dan tingkat lolos QC per produk per pekan",
                   "Pieces woven and QC pass rate per product per week"),
    "production_chart": ("Tinggi batang = produk dianyam; warna penuh = lolos QC; angka = tingkat lolos QC.",
                         "Bar height = pieces woven; solid colour = passed QC; figure = QC pass rate."),
    "week": ("Pekan", "Week"),
    "product": ("Produk", "Product"),
    "woven": ("Dianyam", "Woven"),
    "passed": ("Lolos QC", "Passed QC"),
    "failed_qc": ("Gagal QC", "Failed QC"),
    "pending_qc": ("Menunggu QC", "Awaiting QC"),
    "pass_rate": ("Tingkat lolos", "Pass rate"),
    "all_weeks": ("Semua pekan", "All weeks"),
    "total": ("Jumlah", "Total"),
    "unknown_product": ("(produk tidak diketahui)", "(unknown product)"),
    "payouts": ("Pembayaran dari waktu ke waktu", "Payouts over time"),
    "payouts_chart": ("Per putaran pembayaran mingguan: dijadwalkan, dibayar, dan gagal (kembali ke saldo terutang).",
                      "Per weekly payout run: scheduled, paid, and failed (returned to what is owed)."),
    "run": ("Putaran", "Run"),
    "period_end": ("Periode s.d.", "Period end"),
    "payout_count": ("Pembayaran", "Payouts"),
    "scheduled": ("Dijadwalkan", "Scheduled"),
    "paid": ("Dibayar", "Paid"),
    "failed": ("Gagal", "Failed"),
    "in_transit": ("Sedang dikirim", "Being sent"),
    "unknown_run": ("(putaran tidak diketahui)", "(unknown run)"),
    "artisans": ("Pendapatan per perajin", "Earnings per artisan"),
    "artisans_note": ("Perajin ditampilkan dengan ID saja: data pribadi hanya ada di layanan pendaftaran.",
                      "Artisans appear by id only: personal data lives in the enrollment service alone."),
    "artisan": ("Perajin (ID)", "Artisan (id)"),
    "earned": ("Pendapatan", "Earned"),
    "owed": ("Terutang", "Owed"),
    "paid_share": ("Dibayar / terutang", "Paid / owed"),
    "collaborators": ("Tagihan kolaborator", "What collaborators owe"),
    "collaborators_note": ("Biaya produk yang lolos QC: ditagih, dibayar, belum dibayar, dan belum ditagih.",
                           "Fees for pieces that passed QC: invoiced, paid, outstanding, and not yet invoiced."),
    "collaborator": ("Kolaborator (ID)", "Collaborator (id)"),
    "invoiced": ("Ditagih", "Invoiced"),
    "outstanding": ("Belum dibayar", "Outstanding"),
    "not_invoiced": ("Belum ditagih", "Not yet invoiced"),
    "owes": ("Total terutang", "Owes"),
    "empty": ("Belum ada data.", "No data yet."),
    "materials": ("Bahan baku: diterima dan terpakai", "Materials (bahan baku): issued and used"),
    "materials_note": ("Per kolaborator: bahan yang diberikan kepada perajin dan yang seharusnya terpakai untuk "
                       "produk yang dianyam (takaran per produk). Ditandai: dianyam melebihi bahan, dan bahan "
                       "menganggur {} pekan tanpa anyaman.",
                       "Per collaborator: materials issued to artisans, and what the pieces woven should have used "
                       "(usage per piece). Flagged: woven beyond the materials, and materials idle {} weeks with "
                       "nothing woven."),
    "material": ("Bahan", "Material"),
    "issued": ("Diberikan", "Issued"),
    "expected_use": ("Seharusnya terpakai", "Expected use"),
    "remaining": ("Sisa", "Remaining"),
    "artisan_count": ("Perajin", "Artisans"),
    "flagged": ("Ditandai", "Flagged"),
    "anomalies": ("Anomali bahan baku", "Materials anomalies"),
    "no_anomalies": ("Tidak ada anomali.", "No anomalies."),
    "anomaly": ("Anomali", "Anomaly"),
    "last_activity": ("Kegiatan terakhir", "Last activity"),
    "woven-beyond-materials": ("Dianyam melebihi bahan", "Woven beyond materials"),
    "idle-materials": ("Bahan menganggur", "Idle materials"),
    "footer": ("Anyam — halaman ini bekerja tanpa internet: tanpa skrip, tanpa CDN.",
               "Anyam — this page works without internet: no scripts, no CDN."),
    # refusals
    "r401_title": ("Perlu token untuk membuka dasbor", "A token is needed to open the dashboard"),
    "r401_lead": ("Dasbor program hanya untuk staf program dan auditor, dan permintaan ini tidak membawa token "
                  "yang berlaku.",
                  "The programme dashboard is for programme staff and auditors, and this request carried no "
                  "valid token."),
    "r401_cli": ("Di mesin yang menjalankan stack lokal, <code>anyam demo</code> mencetak alamat dasbor di akhir "
                 "keluarannya: buka alamat itu di peramban.",
                 "On the machine running the local stack, <code>anyam demo</code> prints the dashboard's address "
                 "at the end of its output: open that address in a browser."),
    "r401_link": ("Atau buka <code>/dashboard?token=&lt;token&gt;</code> dengan token staf atau auditor "
                  "(<code>ANYAM_STAFF_TOKEN</code> atau <code>ANYAM_AUDITOR_TOKEN</code> di "
                  "<code>.anyam/stack.env</code>). Token dipindahkan ke cookie dan dihapus dari alamat.",
                  "Or open <code>/dashboard?token=&lt;token&gt;</code> with a staff or auditor token "
                  "(<code>ANYAM_STAFF_TOKEN</code> or <code>ANYAM_AUDITOR_TOKEN</code> in "
                  "<code>.anyam/stack.env</code>). The token moves into a cookie and out of the address."),
    "r401_api": ("Program dapat mengirim header <code>Authorization: Bearer &lt;token&gt;</code>.",
                 "Programs can send an <code>Authorization: Bearer &lt;token&gt;</code> header."),
    "r403_title": ("Token ini tidak dapat membuka dasbor", "This token cannot open the dashboard"),
    "r403_lead": ("Token ini milik perusahaan kolaborator. Dasbor program hanya untuk staf program dan auditor.",
                  "This token belongs to a collaborator company. The programme dashboard is for programme staff "
                  "and auditors only."),
}

_SHORT_MONTHS = {lang: tuple(month[:3] for month in months) for lang, months in MONTHS.items()}

#: Rattan brown for the first (usually the OVOP) product, then colours that stay apart in print too.
_PALETTE = ("#a0522d", "#2a7f62", "#3b6ea5", "#b8860b", "#8e44ad", "#c2185b", "#00838f", "#6d4c41")
_UNKNOWN_COLOUR = "#90a4ae"
_SCHEDULED, _PAID, _FAILED = "#5b7083", "#2e7d32", "#c62828"


class _Words(Words):
    """The page's language: its words, and numbers and dates as its readers write them."""

    def __init__(self, lang: str) -> None:
        super().__init__(lang, _TEXT)

    def many(self, key: str, n: int) -> str:
        """`key` with the count `n`; English says "1 cohort" but "2 cohorts", Indonesian never inflects."""
        if self.lang == "en" and n == 1 and self.has(f"{key}_one"):
            key = f"{key}_one"
        return self(key, self.count(n))

    def count(self, n: int) -> str:
        return format_count(n, self.lang)

    def percent(self, part: int, whole: int, *, digits: int = 1) -> str:
        if whole == 0:
            return "–"
        text = f"{100 * part / whole:.{digits}f}%"
        return text.replace(".", ",") if self.lang == "id" else text

    def day(self, day: date) -> str:
        return format_date(day, self.lang)

    def short_day(self, day: date) -> str:
        return f"{day.day} {_SHORT_MONTHS[self.lang][day.month - 1]}"

    def short_date(self, day: date) -> str:
        return f"{self.short_day(day)} {day.year}"

    def moment(self, moment: datetime) -> str:
        return format_moment(moment, self.lang)

    def short_moment(self, moment: datetime) -> str:
        """`10 Mar 2024, 23.59 WIB`: for table cells that share half a page."""
        local = to_wib(moment)
        return self.moment(local).replace(self.day(local.date()), self.short_date(local.date()))

    def week(self, monday: date) -> str:
        iso = monday.isocalendar()
        return f"{self('week')} {iso.week}, {iso.year}"

    def week_span(self, monday: date) -> str:
        sunday = date.fromordinal(monday.toordinal() + 6)
        if sunday.month == monday.month:
            return f"{monday.day}–{self.short_day(sunday)}"
        return f"{self.short_day(monday)} – {self.short_day(sunday)}"

    def term(self, word: str | None, unknown_key: str) -> str:
        """A product or skill as the programme names it, glossed in English: `piring (plate)`."""
        return self(unknown_key) if word is None else glossed(word, self.lang)


def _week_key(monday: date) -> str:
    iso = monday.isocalendar()
    return f"{iso.year}-W{iso.week:02d}"


# --- the page ---------------------------------------------------------------------------------------


def render_dashboard(data: Dashboard, lang: str) -> str:
    """The whole dashboard page."""
    w = _Words(lang)
    colours = _product_colours(data.products)
    body = "\n".join((
        _header(w, data),
        _kpis(w, data),
        '<div class="grid programme">',
        _section("ovop", w("ovop"), _ovop(w, data), note=w("ovop_note")),
        _section("cohorts", w("cohorts"), _cohorts(w, data.cohorts)),
        "</div>",
        '<div class="grid">',
        _section("production", w("production"),
                 _production_chart(w, data.weeks, data.products, colours) + _production_table(w, data.weeks, colours),
                 note=w("production_chart")),
        _section("payouts", w("payouts"), _payouts_chart(w, data.runs) + _payouts_table(w, data.runs),
                 note=w("payouts_chart")),
        "</div>",
        _section("artisans", w("artisans"), _artisans(w, data), note=w("artisans_note")),
        _materials_section(w, data),
        _section("collaborators", w("collaborators"), _collaborators(w, data), note=w("collaborators_note")),
        f'<footer>{_e(w("footer"))}</footer>',
    ))
    return _page(w, w("title"), body)


def render_refusal(status: int, lang: str) -> str:
    """The small page a browser gets without a usable token: what to do, in the page's language."""
    w = _Words(lang)
    if status == 403:
        title, lines = w("r403_title"), [f"<p>{_e(w('r403_lead'))}</p>"]
    else:
        title = w("r401_title")
        lines = [f"<p>{_e(w('r401_lead'))}</p>",
                 f"<ul><li>{w('r401_cli')}</li><li>{w('r401_link')}</li><li>{w('r401_api')}</li></ul>"]
    body = (f'<header class="top"><div><h1>{_e(title)}</h1><p class="sub">{_e(w("title"))}</p></div>'
            f"{_switch(w)}</header>"
            f'<section class="card refusal" data-status="{status}">{"".join(lines)}</section>')
    return _page(w, title, body)


def _page(w: _Words, title: str, body: str) -> str:
    return (
        f'<!doctype html>\n<html lang="{w.lang}">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="robots" content="noindex">\n'
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def _switch(w: _Words, rusunawa: str | None = None) -> str:
    other = "en" if w.lang == "id" else "id"
    return (f'<nav class="lang"><a href="{_e(_query(other, rusunawa))}" hreflang="{other}" lang="{other}" '
            f'data-lang-switch="{other}">{_e(w("switch"))}</a></nav>')


def _query(lang: str, rusunawa: str | None) -> str:
    """The page's own address for a language and a scope (None: the whole programme)."""
    return "?" + urlencode({"lang": lang} | ({"rusunawa": rusunawa} if rusunawa is not None else {}))


def _scope(w: _Words, data: Dashboard) -> str:
    """Links to the page for the whole programme and for each registered rusunawa; the current one marked."""
    links = []
    for place in (None, *data.places):
        here = place == data.rusunawa or (place is not None and data.rusunawa is not None
                                          and same_label(place, data.rusunawa))
        label = w("scope_all") if place is None else place
        current = ' aria-current="page"' if here else ""
        links.append(f'<a href="{_e(_query(w.lang, place))}"{current} data-scope="{_e(place or "")}">{_e(label)}</a>')
    return f'<nav class="scope">{_e(w("scope"))}: {" · ".join(links)}</nav>'



def _header(w: _Words, data: Dashboard) -> str:
    return (
        f'<header class="top"><div><h1>{_e(w("title"))}</h1><p class="sub">{_e(w("subtitle"))}</p></div>'
        f"{_switch(w, data.rusunawa)}</header>\n{_scope(w, data)}\n"
        f'<p class="meta">{_e(w("updated"))} <time>{_e(w.moment(data.generated_at))}</time> · '
        f'{_e(w("money_note"))}</p>'
    )


def _section(ident: str, title: str, content: str, *, note: str | None = None) -> str:
    note_html = f'<p class="note">{_e(note)}</p>' if note else ""
    return f'<section class="card" id="{ident}"><h2>{_e(title)}</h2>{note_html}{content}</section>'


def _empty(w: _Words) -> str:
    return f'<p class="empty">{_e(w("empty"))}</p>'


def _kpis(w: _Words, data: Dashboard) -> str:
    enrolled = sum(c.enrolled for c in data.cohorts)
    capacity = sum(c.capacity or 0 for c in data.cohorts)
    completed = sum(c.completed for c in data.cohorts)
    withdrawn = sum(c.withdrawn for c in data.cohorts)
    woven = sum(r.woven for r in data.weeks)
    passed = sum(r.passed for r in data.weeks)
    inspected = sum(r.inspected for r in data.weeks)
    earned = sum(a.earned_idr for a in data.artisans)
    paid = sum(a.paid_idr for a in data.artisans)
    owed = sum(a.owed_idr for a in data.artisans)
    in_transit = sum(a.in_transit_idr for a in data.artisans)
    payouts = sum(r.payouts for r in data.runs)
    cards = (
        ("enrolled", w("kpi_enrolled"), w.count(enrolled), w("kpi_capacity", w.count(capacity)), enrolled),
        ("completed", w("kpi_completed"), w.count(completed), w("kpi_withdrawn", w.count(withdrawn)), completed),
        ("woven", w("kpi_woven"), w.count(woven), w("kpi_passed", w.count(passed), w.percent(passed, inspected)),
         woven),
        ("earned", w("kpi_earned"), rupiah(earned), w.many("kpi_artisans", len(data.artisans)), earned),
        ("paid", w("kpi_paid"), rupiah(paid), w("kpi_runs", w.count(payouts), w.count(len(data.runs))), paid),
        ("owed", w("kpi_owed"), rupiah(owed), w("kpi_transit", rupiah(in_transit)), owed),
    )
    items = "".join(
        f'<div class="kpi" data-kpi="{key}" data-value="{raw}"><div class="label">{_e(label)}</div>'
        f'<div class="value">{_e(value)}</div><div class="hint">{_e(hint)}</div></div>'
        for key, label, value, hint, raw in cards
    )
    return f'<section class="kpis">{items}</section>'


def _ovop(w: _Words, data: Dashboard) -> str:
    if not data.ovop:
        return _empty(w)
    items = []
    for o in data.ovop:
        before = f'<div class="hint">{_e(w("ovop_before", ", ".join(o.others)))}</div>' if o.others else ""
        items.append(
            f'<li data-rusunawa="{_e(o.rusunawa)}" data-ovop="{_e(o.product)}">'
            f'<div class="label">Rusunawa {_e(o.rusunawa)}</div>'
            f'<div class="value">{_e(w.term(o.product, "unknown_product"))}</div>'
            f'<div class="hint">{_e(w.many("ovop_cohorts", o.cohorts))}</div>{before}</li>'
        )
    return f'<ul class="ovop">{"".join(items)}</ul>'


def _cohorts(w: _Words, cohorts: Sequence[CohortRow]) -> str:
    if not cohorts:
        return _empty(w)
    head = "".join(f"<th{' class=num' if k in _NUMERIC else ''}>{_e(w(k))}</th>" for k in (
        "rusunawa", "skill", "focus", "starts", "ends", "capacity", "enrolled", "completed", "withdrawn", "progress"))
    rows = []
    for c in cohorts:
        where = (f"{_e(c.rusunawa)}<div class=\"id\">{_e(c.cohort_id)}</div>" if c.rusunawa is not None
                 else f"<span class=\"id\">{_e(c.cohort_id)}</span><div class=\"hint\">{_e(w('unknown_cohort'))}</div>")
        cells = (
            f"<td>{where}</td>",
            f"<td>{_e(w.term(c.skill, 'unknown_cohort')) if c.skill else ''}</td>",
            f"<td>{_e(w.term(c.product_focus, 'unknown_product')) if c.product_focus else ''}</td>",
            f"<td class=nowrap>{_e(w.short_date(c.starts_on)) if c.starts_on else ''}</td>",
            f"<td class=nowrap>{_e(w.short_date(c.ends_on)) if c.ends_on else ''}</td>",
            f'<td class="num">{_e(w.count(c.capacity)) if c.capacity is not None else ""}</td>',
            f'<td class="num">{_e(w.count(c.enrolled))}</td>',
            f'<td class="num">{_e(w.count(c.completed))}</td>',
            f'<td class="num">{_e(w.count(c.withdrawn))}</td>',
            f"<td>{_cohort_bar(w, c)}</td>",
        )
        rows.append(
            f'<tr data-cohort="{_e(c.cohort_id)}" data-rusunawa="{_e(c.rusunawa or "")}" '
            f'data-capacity="{c.capacity or 0}" data-enrolled="{c.enrolled}" data-completed="{c.completed}" '
            f'data-withdrawn="{c.withdrawn}">{"".join(cells)}</tr>'
        )
    return f'<table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


_NUMERIC = {"capacity", "enrolled", "completed", "withdrawn", "woven", "passed", "failed_qc", "pending_qc",
            "pass_rate", "payout_count", "scheduled", "paid", "failed", "in_transit", "earned", "owed"}


def _cohort_bar(w: _Words, c: CohortRow) -> str:
    """Capacity as the track, enrolled over it, completed over that."""
    whole = max(c.capacity or 0, c.enrolled, 1)
    width = 120

    def part(n: int) -> float:
        return round(width * n / whole, 1)

    label = f"{w('enrolled')} {c.enrolled}, {w('completed')} {c.completed}, {w('capacity')} {c.capacity or '–'}"
    return (f'<svg class="bar" width="{width}" height="14" viewBox="0 0 {width} 14" role="img">'
            f"<title>{_e(label)}</title>"
            f'<rect width="{width}" height="14" rx="3" fill="#e8eef2"/>'
            f'<rect width="{part(c.enrolled)}" height="14" rx="3" fill="#9fc3b7"/>'
            f'<rect width="{part(c.completed)}" height="14" rx="3" fill="#2a7f62"/></svg>')


def _product_colours(products: Sequence[str | None]) -> dict[str | None, str]:
    colours: dict[str | None, str] = {}
    named = [p for p in products if p is not None]
    for i, product in enumerate(named):
        colours[product] = _PALETTE[i % len(_PALETTE)]
    colours[None] = _UNKNOWN_COLOUR
    return colours


def _production_table(w: _Words, weeks: Sequence[WeekProduct], colours: dict[str | None, str]) -> str:
    if not weeks:
        return ""
    # "Awaiting QC" only while some piece is: the table stays narrow enough for half the page.
    pending = any(r.pending for r in weeks)
    columns = ("week", "product", "woven", "passed", "failed_qc") + (("pending_qc",) if pending else ()) + (
        "pass_rate",)
    head = "".join(f"<th{' class=num' if k in _NUMERIC else ''}>{_e(w(k))}</th>" for k in columns)

    def cells(label: str, product: str | None, woven: int, passed: int, failed: int) -> str:
        swatch = f'<span class="swatch" style="background:{colours.get(product, _UNKNOWN_COLOUR)}"></span>'
        waiting = f'<td class="num">{_e(w.count(woven - passed - failed))}</td>' if pending else ""
        return (f"{label}<td>{swatch}{_e(w.term(product, 'unknown_product'))}</td>"
                f'<td class="num">{_e(w.count(woven))}</td><td class="num">{_e(w.count(passed))}</td>'
                f'<td class="num">{_e(w.count(failed))}</td>{waiting}'
                f'<td class="num">{_e(w.percent(passed, passed + failed))}</td>')

    rank = {product: i for i, product in enumerate(colours)}
    weeks = sorted(weeks, key=lambda r: (r.week, rank.get(r.product, len(rank))))
    rows = []
    previous: date | None = None
    for r in weeks:
        span = sum(1 for x in weeks if x.week == r.week)
        label = (f'<td rowspan="{span}" class="nowrap">{_e(w.week(r.week))}'
                 f'<div class="hint">{_e(w.week_span(r.week))}</div></td>' if r.week != previous else "")
        previous = r.week
        rows.append(f'<tr data-week="{_week_key(r.week)}" data-product="{_e(r.product or "")}" '
                    f'data-woven="{r.woven}" data-passed="{r.passed}" data-failed="{r.failed}">'
                    f"{cells(label, r.product, r.woven, r.passed, r.failed)}</tr>")
    totals: dict[str | None, list[int]] = {}
    for r in weeks:
        t = totals.setdefault(r.product, [0, 0, 0])
        t[0], t[1], t[2] = t[0] + r.woven, t[1] + r.passed, t[2] + r.failed
    order = [p for p in colours if p in totals]
    foot = []
    for i, product in enumerate(order):
        woven, passed, failed = totals[product]
        label = f'<th rowspan="{len(order)}" scope="rowgroup">{_e(w("all_weeks"))}</th>' if i == 0 else ""
        foot.append(f'<tr data-product-total="{_e(product or "")}" data-woven="{woven}" data-passed="{passed}" '
                    f'data-failed="{failed}">{cells(label, product, woven, passed, failed)}</tr>')
    return (f'<table class="compact"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody>'
            f'<tfoot>{"".join(foot)}</tfoot></table>')


def _payouts_table(w: _Words, runs: Sequence[RunRow]) -> str:
    if not runs:
        return ""
    # "Being sent" only while some payout is: the table stays narrow enough for half the page.
    transit = any(r.in_transit_idr for r in runs)
    columns = ("payout_count", "scheduled", "paid", "failed") + (("in_transit",) if transit else ())
    head = f"<th>{_e(w('run'))} · {_e(w('period_end'))}</th>" + "".join(
        f"<th class=num>{_e(w(k))}</th>" for k in columns)

    def money(scheduled: int, paid: int, failed: int, in_transit: int) -> str:
        amounts = (scheduled, paid, failed, in_transit) if transit else (scheduled, paid, failed)
        return "".join(f'<td class="num">{_e(rupiah(a))}</td>' for a in amounts)

    rows = [
        f'<tr data-run="{_e(r.run_id or "")}" data-scheduled="{r.scheduled_idr}" data-paid="{r.paid_idr}" '
        f'data-failed="{r.failed_idr}"><td><span class="id nowrap">{_e(r.run_id or w("unknown_run"))}</span>'
        f'<div class="hint nowrap">{_e(w.short_moment(r.period_end)) if r.period_end else ""}</div></td>'
        f'<td class="num">{_e(w.count(r.payouts))}</td>'
        f"{money(r.scheduled_idr, r.paid_idr, r.failed_idr, r.in_transit_idr)}</tr>"
        for r in runs
    ]
    total = (f'<tr data-run-total><th>{_e(w("total"))}</th>'
             f'<td class="num">{_e(w.count(sum(r.payouts for r in runs)))}</td>'
             + money(*(sum(getattr(r, f) for r in runs)
                       for f in ("scheduled_idr", "paid_idr", "failed_idr", "in_transit_idr"))) + "</tr>")
    return (f'<table class="compact"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody>'
            f"<tfoot>{total}</tfoot></table>")


def _artisans(w: _Words, data: Dashboard) -> str:
    artisans = data.artisans
    if not artisans:
        return _empty(w)
    head = "<th>#</th>" + "".join(f"<th{' class=num' if k in _NUMERIC else ''}>{_e(w(k))}</th>" for k in (
        "artisan", "woven", "passed", "earned", "paid", "owed", "paid_share"))
    rows = []
    for i, a in enumerate(artisans, start=1):
        rows.append(
            f'<tr data-artisan="{_e(a.artisan_id)}" data-earned="{a.earned_idr}" data-paid="{a.paid_idr}" '
            f'data-owed="{a.owed_idr}" data-woven="{a.woven}" data-passed="{a.passed}">'
            f'<td class="num muted">{i}</td><td class="id">{_e(a.artisan_id)}</td>'
            f'<td class="num">{_e(w.count(a.woven))}</td><td class="num">{_e(w.count(a.passed))}</td>'
            f'<td class="num">{_e(rupiah(a.earned_idr))}</td><td class="num">{_e(rupiah(a.paid_idr))}</td>'
            f'<td class="num">{_e(rupiah(a.owed_idr))}</td><td>{_paid_bar(w, a.paid_idr, a.owed_idr)}</td></tr>'
        )
    sums = [sum(getattr(a, f) for a in artisans) for f in ("woven", "passed", "earned_idr", "paid_idr", "owed_idr")]
    foot = (f'<tr data-artisan-total data-earned="{sums[2]}" data-paid="{sums[3]}" data-owed="{sums[4]}">'
            f'<th colspan="2">{_e(w("total"))}</th>'
            f'<td class="num">{_e(w.count(sums[0]))}</td><td class="num">{_e(w.count(sums[1]))}</td>'
            f'<td class="num">{_e(rupiah(sums[2]))}</td><td class="num">{_e(rupiah(sums[3]))}</td>'
            f'<td class="num">{_e(rupiah(sums[4]))}</td><td>{_paid_bar(w, sums[3], sums[4])}</td></tr>')
    return (f'<table class="compact"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody>'
            f"<tfoot>{foot}</tfoot></table>")


def _materials_section(w: _Words, data: Dashboard) -> str:
    """"Bahan baku": per collaborator and material, issued beside expected use; then every anomaly."""
    result = data.materials
    if result is None:
        return ""
    totals = result.totals()
    if not totals:
        return _section("materials", w("materials"), _empty(w), note=w("materials_note", result.idle_weeks))

    def amount(n: int, unit: str) -> str:
        return f"{w.count(n)} {unit}"

    head = "".join(f"<th{' class=num' if k not in ('collaborator', 'material') else ''}>{_e(w(k))}</th>" for k in (
        "collaborator", "material", "issued", "expected_use", "remaining", "artisan_count", "flagged"))
    rows = "".join(
        f'<tr data-material-total data-collaborator="{_e(t.collaborator_id)}" data-material="{_e(t.material)}" '
        f'data-unit="{_e(t.unit)}" data-issued="{t.issued}" data-expected="{t.expected}" data-flagged="{t.flagged}">'
        f'<td class="id">{_e(t.collaborator_id)}</td><td>{_e(t.material)}</td>'
        f'<td class="num">{_e(amount(t.issued, t.unit))}</td><td class="num">{_e(amount(t.expected, t.unit))}</td>'
        f'<td class="num">{_e(amount(t.issued - t.expected, t.unit))}</td>'
        f'<td class="num">{_e(w.count(t.artisans))}</td><td class="num">{_e(w.count(t.flagged))}</td></tr>'
        for t in totals)
    table = f'<table class="compact"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'

    anomalies = result.anomalies
    if anomalies:
        a_head = "".join(f"<th{' class=num' if k in ('issued', 'expected_use') else ''}>{_e(w(k))}</th>" for k in (
            "anomaly", "artisan", "collaborator", "material", "issued", "expected_use", "last_activity"))
        a_rows = "".join(
            f'<tr data-anomaly="{_e(a.kind)}" data-flagged-artisan="{_e(a.artisan_id)}" '
            f'data-collaborator="{_e(a.collaborator_id)}" data-material="{_e(a.material)}" '
            f'data-issued="{a.issued}" data-expected="{a.expected}">'
            f'<td>{_e(w(a.kind))}</td><td class="id">{_e(a.artisan_id)}</td><td class="id">{_e(a.collaborator_id)}</td>'
            f'<td>{_e(a.material)}</td><td class="num">{_e(amount(a.issued, a.unit))}</td>'
            f'<td class="num">{_e(amount(a.expected, a.unit))}</td>'
            f'<td class="nowrap">{_e(w.short_date(a.last_activity_on)) if a.last_activity_on else ""}</td></tr>'
            for a in anomalies)
        flagged = (f'<h3>{_e(w("anomalies"))}</h3><table class="compact anomalies"><thead><tr>{a_head}</tr></thead>'
                   f"<tbody>{a_rows}</tbody></table>")
    else:
        flagged = f'<p class="empty" data-no-anomalies>{_e(w("no_anomalies"))}</p>'
    return _section("materials", w("materials"), table + flagged, note=w("materials_note", result.idle_weeks))


def _collaborators(w: _Words, data: Dashboard) -> str:
    """Per collaborator, money in: what it was invoiced and paid, and what it still owes."""
    if not data.collaborators:
        return _empty(w)
    keys = ("collaborator", "invoiced", "paid", "outstanding", "not_invoiced", "owes")
    head = "".join(f"<th{'' if k == 'collaborator' else ' class=num'}>{_e(w(k))}</th>" for k in keys)
    rows = "".join(
        f'<tr data-collaborator="{_e(c.collaborator_id)}" data-invoiced="{c.invoiced_idr}" data-paid="{c.paid_idr}" '
        f'data-owed="{c.owed_idr}"><td class="id">{_e(c.collaborator_id)}</td>'
        + "".join(f'<td class="num">{_e(rupiah(v))}</td>' for v in (
            c.invoiced_idr, c.paid_idr, c.outstanding_idr, c.not_invoiced_idr, c.owed_idr))
        + "</tr>" for c in data.collaborators)
    return f'<table class="compact"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'


def _paid_bar(w: _Words, paid: int, owed: int) -> str:
    width, whole = 120, max(paid + owed, 1)
    done = round(width * paid / whole, 1)
    label = f"{w('paid')} {rupiah(paid)}, {w('owed')} {rupiah(owed)}"
    return (f'<svg class="bar" width="{width}" height="12" viewBox="0 0 {width} 12" role="img">'
            f"<title>{_e(label)}</title>"
            f'<rect width="{width}" height="12" rx="3" fill="{"#f3d9b1" if owed else "#e8eef2"}"/>'
            f'<rect width="{done}" height="12" rx="3" fill="{_PAID}"/></svg>')


# --- charts (server-drawn SVG) ------------------------------------------------------------------------

_CHART_W, _CHART_H = 640, 300


def _nice_scale(top: float, ticks: int = 5) -> tuple[float, float]:
    """An axis maximum and step on 1-2-5 numbers, so gridlines fall on round figures."""
    if top <= 0:
        return 1.0, 1.0
    raw = top / ticks
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return step * math.ceil(top / step), step


def _axis(top: float, step: float, *, left: int, right: int, plot_top: int, plot_bottom: int,
          label: Callable[[float], str]) -> list[str]:
    parts = []
    value = 0.0
    while value <= top + step / 2:
        y = plot_bottom - (plot_bottom - plot_top) * value / top
        parts.append(f'<line x1="{left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">{_e(label(value))}</text>')
        value += step
    return parts


def _x_labels(n: int) -> int:
    """Label every k-th group so labels never overlap, however many weeks or runs there are."""
    return max(1, math.ceil(n / 12))


def _production_chart(w: _Words, weeks: Sequence[WeekProduct], products: Sequence[str | None],
                      colours: dict[str | None, str]) -> str:
    if not weeks:
        return _empty(w)
    mondays = sorted({r.week for r in weeks})
    cell = {(r.week, r.product): r for r in weeks}
    left, right, top_pad, bottom_pad, legend_h = 44, 10, 34, 46, 22
    plot_top, plot_bottom = top_pad, _CHART_H - bottom_pad
    top, step = _nice_scale(max(r.woven for r in weeks) * 1.08)
    parts = _axis(top, step, left=left, right=_CHART_W - right, plot_top=plot_top, plot_bottom=plot_bottom,
                  label=lambda v: w.count(int(v)))
    group = (_CHART_W - left - right) / len(mondays)
    bar = min(42.0, group * 0.84 / max(len(products), 1))
    every = _x_labels(len(mondays))
    for gi, monday in enumerate(mondays):
        x0 = left + gi * group + (group - bar * len(products)) / 2
        for pi, product in enumerate(products):
            r = cell.get((monday, product))
            if r is None:
                continue
            x = x0 + pi * bar
            h = (plot_bottom - plot_top) * r.woven / top
            hp = (plot_bottom - plot_top) * r.passed / top
            colour = colours.get(product, _UNKNOWN_COLOUR)
            tip = (f"{w.term(product, 'unknown_product')} · {w.week(monday)}: {w.count(r.woven)} "
                   f"{w('woven').lower()}, {w.count(r.passed)} {w('passed')} ({w.percent(r.passed, r.inspected)})")
            parts.append(
                f'<g><title>{_e(tip)}</title>'
                f'<rect x="{x + 1:.1f}" y="{plot_bottom - h:.1f}" width="{bar - 2:.1f}" height="{h:.1f}" '
                f'fill="{colour}" fill-opacity="0.3"/>'
                f'<rect x="{x + 1:.1f}" y="{plot_bottom - hp:.1f}" width="{bar - 2:.1f}" height="{hp:.1f}" '
                f'fill="{colour}"/>'
            )
            if bar >= 18:
                parts.append(f'<text x="{x + bar / 2:.1f}" y="{plot_bottom - h - 4:.1f}" class="val" '
                             f'text-anchor="middle">{_e(w.percent(r.passed, r.inspected, digits=0))}</text>')
            parts.append("</g>")
        if gi % every == 0:
            cx = left + gi * group + group / 2
            parts.append(f'<text x="{cx:.1f}" y="{plot_bottom + 17}" class="xl" text-anchor="middle">'
                         f'{_e(w.week(monday))}</text>'
                         f'<text x="{cx:.1f}" y="{plot_bottom + 32}" class="tick" text-anchor="middle">'
                         f'{_e(w.week_span(monday))}</text>')
    legend = _legend([(w.term(p, "unknown_product"), colours.get(p, _UNKNOWN_COLOUR)) for p in products],
                     y=legend_h - 8, left=left)
    title = w("production")
    return _svg(title, legend + "".join(parts), cls="chart production")


def _payouts_chart(w: _Words, runs: Sequence[RunRow]) -> str:
    if not runs:
        return _empty(w)
    left, right, top_pad, bottom_pad, legend_h = 96, 10, 34, 46, 22
    plot_top, plot_bottom = top_pad, _CHART_H - bottom_pad
    top, step = _nice_scale(max(r.scheduled_idr for r in runs) * 1.05 or 1)
    parts = _axis(top, step, left=left, right=_CHART_W - right, plot_top=plot_top, plot_bottom=plot_bottom,
                  label=lambda v: rupiah(int(v)))
    group = (_CHART_W - left - right) / len(runs)
    bar = min(38.0, group * 0.8 / 3)
    every = _x_labels(len(runs))
    series = (("scheduled", "scheduled_idr", _SCHEDULED), ("paid", "paid_idr", _PAID),
              ("failed", "failed_idr", _FAILED))
    for gi, run in enumerate(runs):
        x0 = left + gi * group + (group - bar * 3) / 2
        for si, (key, field, colour) in enumerate(series):
            amount = getattr(run, field)
            h = (plot_bottom - plot_top) * amount / top
            x = x0 + si * bar
            tip = f"{run.run_id or w('unknown_run')} · {w(key)}: {rupiah(amount)}"
            parts.append(f'<rect x="{x + 1:.1f}" y="{plot_bottom - h:.1f}" width="{bar - 2:.1f}" height="{h:.1f}" '
                         f'fill="{colour}"><title>{_e(tip)}</title></rect>')
        if gi % every == 0:
            cx = left + gi * group + group / 2
            when = w.short_day(to_wib(run.period_end).date()) if run.period_end else "?"
            parts.append(f'<text x="{cx:.1f}" y="{plot_bottom + 17}" class="xl" text-anchor="middle">'
                         f"{_e(when)}</text>"
                         f'<text x="{cx:.1f}" y="{plot_bottom + 32}" class="tick" text-anchor="middle">'
                         f"{_e(run.run_id or '?')}</text>")
    legend = _legend([(w(key), colour) for key, _, colour in series], y=legend_h - 8, left=left)
    return _svg(w("payouts"), legend + "".join(parts), cls="chart payouts")


def _legend(items: Sequence[tuple[str, str]], *, y: int, left: int) -> str:
    parts, x = [], float(left)
    for label, colour in items:
        parts.append(f'<rect x="{x:.1f}" y="{y - 9}" width="11" height="11" rx="2" fill="{colour}"/>'
                     f'<text x="{x + 16:.1f}" y="{y}" class="legend">{_e(label)}</text>')
        x += 16 + 7.2 * len(label) + 18  # a generous estimate of the label's width: no overlap
    return "".join(parts)


def _svg(title: str, content: str, *, cls: str) -> str:
    return (f'<svg class="{cls}" viewBox="0 0 {_CHART_W} {_CHART_H}" role="img" '
            f'preserveAspectRatio="xMidYMid meet"><title>{_e(title)}</title>{content}</svg>')


_CSS = """
:root { --ink: #1f2a30; --muted: #5f6b73; --line: #dde4e8; --bg: #f5f1ea; --card: #fff; --accent: #7a3e1d; }
* { box-sizing: border-box; }
body { margin: 0; padding: 20px 28px 32px; background: var(--bg); color: var(--ink);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "DejaVu Sans", sans-serif; }
.top { display: flex; justify-content: space-between; align-items: flex-start; gap: 16px;
  border-bottom: 3px solid var(--accent); padding-bottom: 10px; }
h1 { margin: 0; font-size: 24px; color: var(--accent); letter-spacing: .2px; }
h2 { margin: 0 0 6px; font-size: 16px; }
h3 { margin: 12px 0 4px; font-size: 14px; }
.sub { margin: 2px 0 0; color: var(--muted); }
.lang a { display: inline-block; padding: 5px 12px; border: 1px solid var(--accent); border-radius: 14px;
  color: var(--accent); text-decoration: none; font-weight: 600; background: #fff; }
.lang a:hover, .lang a:focus { background: var(--accent); color: #fff; }
.scope { margin: 0 0 12px; font-size: 13px; color: var(--muted); }
.scope a { color: var(--accent); }
.scope a[aria-current] { font-weight: 600; color: inherit; text-decoration: none; }
.meta { color: var(--muted); margin: 8px 0 14px; font-size: 13px; }
.kpis { display: grid; grid-template-columns: repeat(6, minmax(0, 1fr)); gap: 12px; margin-bottom: 14px; }
.kpi, .card, .ovop li { background: var(--card); border: 1px solid var(--line); border-radius: 8px; }
.kpi { padding: 10px 14px; }
.kpi .label, .ovop .label { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .4px; }
.kpi .value { font-size: 22px; font-weight: 700; font-variant-numeric: tabular-nums; white-space: nowrap; }
.hint { color: var(--muted); font-size: 12px; }
.card { padding: 14px 16px; margin-bottom: 14px; overflow-x: auto; }
.note { margin: 0 0 8px; color: var(--muted); font-size: 12.5px; }
.grid { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 14px; }
.grid.programme { grid-template-columns: minmax(220px, 0.26fr) minmax(0, 1fr); margin-bottom: 14px; }
.grid > .card { margin-bottom: 0; }
.grid + .card { margin-top: 14px; }
.ovop { list-style: none; display: flex; flex-wrap: wrap; gap: 12px; margin: 0; padding: 0; }
.ovop li { padding: 10px 16px; min-width: 180px; border-left: 5px solid #a0522d; }
.ovop .value { font-size: 20px; font-weight: 700; color: var(--accent); }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
thead th { font-size: 12px; color: var(--muted); font-weight: 600; border-bottom: 2px solid var(--line); }
tfoot th, tfoot td { font-weight: 700; border-top: 2px solid var(--line); }
table.compact { font-size: 13px; }
table.compact td, table.compact th { padding: 3px 6px; }
.num, .nowrap { white-space: nowrap; }
.num { text-align: right; }
.muted { color: var(--muted); }
.id { font-family: "DejaVu Sans Mono", ui-monospace, monospace; font-size: 12px; color: var(--muted);
  overflow-wrap: anywhere; }
.id.nowrap { overflow-wrap: normal; }
td.id { color: var(--ink); }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px; }
svg.chart { width: 100%; height: auto; display: block; margin-bottom: 8px; }
svg.bar { vertical-align: middle; }
svg .grid { stroke: #e6ebee; stroke-width: 1; }
svg text { fill: var(--ink); font-size: 11px; }
svg .tick { fill: var(--muted); font-size: 10.5px; }
svg .xl { font-size: 11.5px; font-weight: 600; }
svg .val { font-size: 10px; fill: var(--muted); }
svg .legend { font-size: 11.5px; }
.empty { color: var(--muted); font-style: italic; }
.refusal { max-width: 760px; margin-top: 16px; font-size: 15px; }
.refusal li { margin: 6px 0; }
code { background: #f0ece4; padding: 1px 5px; border-radius: 4px; font-size: 13px; }
footer { color: var(--muted); font-size: 12px; margin-top: 10px; }
@media (max-width: 1000px) { .kpis { grid-template-columns: repeat(2, minmax(0, 1fr)); }
  .grid, .grid.programme { grid-template-columns: 1fr; } body { padding: 12px; } }
"""
