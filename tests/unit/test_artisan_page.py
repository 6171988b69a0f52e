"""An artisan's own page without a stack: its words, numbers and dates, its payslips' pieces, its links."""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import UTC, date, datetime
from typing import get_args

import pytest

from services.payout.artisan import links
from services.payout.artisan.queries import ArtisanPage, Payslip, Piece, Share, allocate
from services.payout.artisan.view import DEFECT_WORDS, FAILURE_WORDS, STYLE_HASH, render_not_found, render_page
from services.payout.pages import format_date, format_moment, format_short_date, language
from services.payout.projections import StatementEntry
from shared.contracts.codes import Defect, PayoutFailure
from shared.money import rupiah
from shared.timeutil import WIB

MARCH = datetime(2024, 3, 12, 9, 30, tzinfo=WIB)


# --- numbers and dates as Jakarta writes them ----------------------------------------------------------


@pytest.mark.parametrize(("amount", "text"), [
    (10_767_500, "Rp 10.767.500"), (45_000, "Rp 45.000"), (0, "Rp 0"), (999, "Rp 999"),
    (1_000_000_000_000, "Rp 1.000.000.000.000"),
])
def test_rupiah_is_written_with_dots_between_thousands(amount, text):
    assert rupiah(amount) == text


def test_dates_are_jakartas_days_with_indonesian_month_names():
    assert format_date(date(2024, 3, 12), "id") == "12 Maret 2024"
    assert format_date(date(2024, 8, 17), "id") == "17 Agustus 2024"
    assert format_date(date(2024, 8, 17), "en") == "17 August 2024"
    # 20:00 UTC on 31 March is already 1 April in Jakarta.
    late = datetime(2024, 3, 31, 20, 0, tzinfo=UTC)
    assert format_date(late, "id") == "1 April 2024"
    assert format_moment(late, "id") == "1 April 2024, 03.00 WIB"
    assert format_moment(late, "en") == "1 April 2024, 03:00 WIB"
    assert format_short_date(datetime(2024, 5, 2, 23, 0, tzinfo=UTC), "id") == "3 Mei"


def test_every_defect_and_payout_failure_code_has_words_in_both_languages():
    assert set(DEFECT_WORDS) == set(get_args(Defect))
    assert set(FAILURE_WORDS) == set(get_args(PayoutFailure))
    assert all(indonesian and english and indonesian != english
               for indonesian, english in (*DEFECT_WORDS.values(), *FAILURE_WORDS.values()))


def test_the_language_is_indonesian_unless_english_is_asked_for():
    assert [language(x) for x in (None, "id", "en", "EN", "fr", "x" * 5000)] == ["id", "id", "en", "id", "id", "id"]


# --- the page ------------------------------------------------------------------------------------------------


def a_page(**changes) -> ArtisanPage:
    pieces = [
        Piece("pc_pending", "piring", 17_500, datetime(2024, 3, 20, 10, 0, tzinfo=WIB), None, None, None, ()),
        Piece("pc_failed", "tas", 45_000, datetime(2024, 3, 13, 10, 0, tzinfo=WIB), "failed",
              datetime(2024, 3, 13, 15, 0, tzinfo=WIB), None, ("loose-weave", "stain")),
        Piece("pc_passed", "tas", 45_000, MARCH, "passed", datetime(2024, 3, 12, 15, 0, tzinfo=WIB), 45_000, ()),
    ]
    payslips = [
        Payslip("pay_transit", 10_000, "w12", datetime(2024, 3, 24, 23, 59, tzinfo=WIB),
                datetime(2024, 3, 25, 9, 0, tzinfo=WIB), None, None, None, None, None, None),
        Payslip("pay_paid", 45_000, "w11", datetime(2024, 3, 17, 23, 59, tzinfo=WIB),
                datetime(2024, 3, 18, 9, 0, tzinfo=WIB), "paid", "bank-transfer", "pref_0001",
                datetime(2024, 3, 18, 14, 30, tzinfo=WIB), None, datetime(2024, 3, 18, 14, 31, tzinfo=WIB),
                (Share("pc_passed", 45_000, False),)),
        Payslip("pay_failed", 45_000, "w11b", datetime(2024, 3, 17, 23, 59, tzinfo=WIB),
                datetime(2024, 3, 18, 8, 0, tzinfo=WIB), "failed", None, None, None, "account-closed",
                datetime(2024, 3, 18, 8, 30, tzinfo=WIB), (Share("pc_passed", 45_000, False),)),
    ]
    values = dict(artisan_id="res_01HXA", generated_at=datetime(2024, 3, 25, 10, 0, tzinfo=WIB),
                  earned_idr=10_767_500, payable_idr=700_000, in_transit_idr=10_000, paid_idr=10_057_500,
                  pieces=pieces, payslips=payslips)
    return ArtisanPage(**(values | changes))


def data(page: str, attribute: str) -> list[str]:
    return re.findall(rf'{attribute}="([^"]*)"', page)


def test_the_page_in_bahasa_indonesia_shows_her_money_pieces_defects_and_payslips():
    page = render_page(a_page(), "id")

    assert '<html lang="id">' in page and "Halaman Anda" in page and "res_01HXA" in page
    assert "Rp 10.767.500" in page and "Rp 10.057.500" in page and "Rp 710.000" in page  # owed: 700.000 + 10.000
    assert re.search(r'data-money="owed" data-value="710000"', page)
    assert "menunggu pembayaran berikutnya" in page and "sedang dikirim" in page  # what "owed" means, said
    assert data(page, "data-piece") == ["pc_pending", "pc_failed", "pc_passed"]  # newest first
    assert data(page, "data-qc") == ["pending", "failed", "passed"]
    # By the week she wove them (Jakarta's weeks, Monday first), the newest open.
    assert data(page, "data-week") == ["2024-03-18", "2024-03-11"]
    assert "18–24 Maret 2024" in page and '<details class="week" open' in page
    assert "Cacat: anyaman longgar, noda" in page and "Dianyam 12 Maret 2024" in page
    assert "Lolos QC" in page and "Gagal QC" in page and "Menunggu QC" in page
    assert data(page, "data-payslip") == ["pay_transit", "pay_paid", "pay_failed"]
    assert data(page, "data-outcome") == ["in-transit", "paid", "failed"]
    assert "18 Maret 2024, 14.30&nbsp;WIB" in page and "Transfer bank" in page and "pref_0001" in page
    assert "produk lolos QC s.d. 17 Maret 2024" in page and "tas (12 Mar)" in page
    assert "rekening sudah ditutup" in page and "kembali ke saldo" in page
    assert data(page, "data-lang-switch") == ["en"]


def test_the_page_in_english():
    page = render_page(a_page(), "en")

    assert '<html lang="en">' in page and "Your page" in page and "Halaman Anda" not in page
    assert "Defects: loose weave, stain" in page and "tas (bag)" in page and "Bank transfer" in page
    assert "Rp 10.767.500" in page  # rupiah are written the Indonesian way in both
    assert "18 March 2024, 14:30&nbsp;WIB" in page and "the account is closed" in page


def test_the_page_is_self_contained_and_its_csp_allows_exactly_its_own_style():
    page = render_page(a_page(), "id")

    assert "<script" not in page and "<link" not in page and "<img" not in page and "url(" not in page
    assert "http://" not in page and "https://" not in page and "@import" not in page
    assert " style=" not in page  # an inline style attribute would be refused by the CSP's hash
    (style,) = re.findall(r"<style>(.*?)</style>", page, re.S)
    assert STYLE_HASH == "sha256-" + base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    assert 'name="viewport" content="width=device-width, initial-scale=1"' in page


def test_text_from_events_is_escaped():
    hostile = '<script>alert(1)</script>"'
    page = render_page(a_page(pieces=[Piece("pc_x", hostile, 1, MARCH, "failed", MARCH, None, ("other",))],
                              payslips=[]), "id")
    assert "<script>" not in page and "&lt;script&gt;" in page and "cacat lain" in page
    assert "Belum ada pembayaran." in page


def test_an_empty_page_says_so():
    page = render_page(a_page(pieces=[], payslips=[], earned_idr=0, payable_idr=0, in_transit_idr=0, paid_idr=0),
                       "id")
    assert "Belum ada produk." in page and "Belum ada pembayaran." in page and "Rp 0" in page


def test_the_not_found_page_says_nothing_about_any_link_or_artisan():
    indonesian, english = render_not_found("id"), render_not_found("en")
    assert "Tautan tidak berlaku" in indonesian and "This link does not work" in english
    assert 'data-status="404"' in indonesian and "res_" not in indonesian and "<script" not in indonesian


# --- which pieces a payout paid for ------------------------------------------------------------------------


def entry(kind: str, subject: str, amount: int, at: datetime, tx: str | None = None) -> list[StatementEntry]:
    tx = tx or f"{kind}:{subject}"
    account = {"earned": "payable", "scheduled": "in-transit", "paid": "paid", "failed": "payable"}[kind]
    return [StatementEntry(tx, kind, f"artisan:a:{account}", amount, f"ev-{tx}", kind, at, subject)]


def day(n: int, hour: int = 12) -> datetime:
    return datetime(2024, 3, n, hour, tzinfo=WIB)


def test_a_payout_takes_the_oldest_earnings_up_to_its_periods_end():
    entries = (entry("earned", "pc_b", 20, day(5)) + entry("earned", "pc_a", 10, day(4))
               + entry("earned", "pc_late", 30, day(12)) + entry("scheduled", "pay_1", 30, day(11)))
    shares = allocate(entries, {"pay_1": day(10)})
    assert shares == {"pay_1": [Share("pc_a", 10, False), Share("pc_b", 20, False)]}


def test_a_failed_payouts_pieces_go_to_the_next_payout():
    entries = (entry("earned", "pc_a", 10, day(4)) + entry("scheduled", "pay_1", 10, day(10, 9))
               + entry("failed", "pay_1", 10, day(10, 10)) + entry("earned", "pc_b", 5, day(12))
               + entry("scheduled", "pay_2", 15, day(17, 9)))
    shares = allocate(entries, {"pay_1": day(9), "pay_2": day(16)})
    assert shares["pay_1"] == [Share("pc_a", 10, False)]
    assert shares["pay_2"] == [Share("pc_a", 10, False), Share("pc_b", 5, False)]


def test_a_piece_split_between_payouts_is_partial_in_each():
    entries = (entry("earned", "pc_big", 100, day(4)) + entry("scheduled", "pay_1", 60, day(10))
               + entry("scheduled", "pay_2", 40, day(11)))
    # Her two postings of one scheduling (out of payable, into in-transit) are one transaction.
    entries += [StatementEntry("scheduled:pay_2", "scheduled", "artisan:a:payable", -40, "ev", "scheduled", day(11),
                               "pay_2")]
    shares = allocate(entries, {"pay_1": day(9), "pay_2": day(9)})
    assert shares == {"pay_1": [Share("pc_big", 60, True)], "pay_2": [Share("pc_big", 40, True)]}


# --- the links --------------------------------------------------------------------------------------------------


def test_a_secret_is_256_random_bits_in_url_safe_text_and_only_its_hash_is_kept():
    secrets = {links.new_secret() for _ in range(200)}
    assert len(secrets) == 200
    assert all(links.plausible_secret(s) and re.fullmatch(r"[A-Za-z0-9_-]{43}", s) for s in secrets)
    secret = secrets.pop()
    assert links.secret_hash(secret) == hashlib.sha256(secret.encode()).digest()


@pytest.mark.parametrize("text", [
    "", "a" * 42, "a" * 44, "a" * 42 + "=", "a" * 42 + "/", "a" * 42 + "é", "a" * 42 + "\x00", "../" * 15,
    "a" * 10_000, "a" * 42 + " ",
])
def test_text_not_shaped_like_a_secret_is_refused_before_the_database(text):
    assert not links.plausible_secret(text)


def test_the_qr_code_is_an_svg_document_to_print():
    svg = links.qr_svg("https://anyam.example.org/saya/" + "a" * 43)
    assert svg.startswith('<svg xmlns="http://www.w3.org/2000/svg"') and svg.endswith("</svg>")
    assert "<path" in svg and "<script" not in svg


def test_the_card_holds_the_qr_code_and_her_id_but_never_the_link_in_writing():
    url = "https://anyam.example.org/saya/" + links.new_secret()
    card = links.card_svg(url, "res_<01>")
    assert card.startswith('<svg xmlns="http://www.w3.org/2000/svg" width="85.6mm" height="54mm"')
    assert "Halaman Anda" in card and "Perajin res_&lt;01&gt;" in card and "<path" in card
    assert url not in card and url.rsplit("/", 1)[1] not in card
