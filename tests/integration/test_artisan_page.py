"""An artisan's own page after `anyam demo`, as she sees it on her phone: headless Chromium, 360 px wide.

One embedded stack runs the demo once for the module (as test_dashboard.py does). The artisan is the
one whose transfer bounced: she has pieces that passed and failed QC, payouts paid and one failed,
so her page shows every kind of row. The browser is Debian's `chromium-headless-shell`; without it
the tests fail and say how to install it.
"""

from __future__ import annotations

import asyncio
import os
import re
import struct
import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import asyncpg
import httpx
import pytest

from anyam.demo.scenario import Participant, Weaving, nagrak
from anyam.stack import read_stack_env
from anyam.stack import stackfile as keys
from services.payout import artisan, projections
from services.payout.artisan import ARTISAN_TOPICS, PAGE_PREFIX, artisan_consumer, links
from services.payout.artisan.view import DEFECT_WORDS, render_page
from shared.contracts import Envelope, service_source
from shared.contracts.events import Enrolled, Paid, PayoutFailed, PayoutScheduled, PieceWoven, QcFailed, QcPassed
from shared.eventstore import PostgresUnitOfWork, wait_until_caught_up
from shared.money import rupiah
from shared.timeutil import WIB
from shared.web.access import collaborator_token
from tests.integration.test_dashboard import PNG_SIGNATURE, browser, elements, one
from tests.integration.test_demo import ANYAM

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "docs" / "artisan-page.png"
SEED = 2024
PHONE = (360, 2400)  # a phone's width; tall enough to show her summary, pieces and the first payslips

pytestmark = pytest.mark.timeout(900)  # the first test also waits for the module's demo


def anyam(*args: str, workdir: Path) -> subprocess.CompletedProcess[str]:
    # As tests/integration/test_demo.py runs it, with the session's Kafka node count (one on a small machine).
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANYAM_")} | {"COLUMNS": "200", "NO_COLOR": "1"}
    brokers = os.environ.get("ANYAM_STACK_BROKERS", "3")
    extra = ("--brokers", brokers) if args[0] == "demo" else ()
    return subprocess.run([*ANYAM, *args, *extra, "--workdir", str(workdir)], capture_output=True, text=True,
                          timeout=600, env=env, cwd=REPO)


@dataclass(frozen=True)
class Her:
    env: dict[str, str]
    artisan_id: str
    printed_link: str
    person: Participant
    weavings: tuple[Weaving, ...]

    @property
    def url(self) -> str:
        return self.env["ANYAM_PAYOUT_URL"]

    def http(self, token: str | None = None, **options) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30, **options)

    @property
    def staff(self) -> httpx.AsyncClient:
        return self.http(self.env[keys.STAFF_TOKEN])

    @property
    def auditor(self) -> httpx.AsyncClient:
        return self.http(self.env[keys.AUDITOR_TOKEN])


@pytest.fixture(scope="module")
async def her(tmp_path_factory):
    workdir = Path(tmp_path_factory.mktemp("art", numbered=True))  # short: PostgreSQL's socket lives under it
    try:
        demo = await asyncio.to_thread(anyam, "demo", "--seed", str(SEED), workdir=workdir)
        assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
        env = read_stack_env(workdir / "stack.env")
        # The demo prints one artisan's link, on this machine's address; never a token.
        printed = re.search(rf"Artisan (\S+)'s own page .*: ({re.escape(env['ANYAM_PAYOUT_URL'])}{PAGE_PREFIX}/\S+)",
                            demo.stdout)
        assert printed, demo.stdout[-2000:]
        for secret in (env[keys.TOKEN_SECRET], env[keys.STAFF_TOKEN], env[keys.AUDITOR_TOKEN]):
            assert secret not in printed[0]
        await _caught_up(env)
        scenario = nagrak(SEED)
        index = min(i for run in scenario.runs for i in run.failing_participants)  # whom the demo picks
        yield Her(env, printed[1], printed[2], scenario.participants[index],
                  tuple(w for w in scenario.weavings if w.participant == index))
    finally:
        await asyncio.to_thread(anyam, "down", workdir=workdir)


async def _caught_up(env: dict[str, str]) -> None:
    pool = await asyncpg.create_pool(env["ANYAM_PAYOUT_DATABASE_URL"], min_size=1, max_size=2)
    try:
        await wait_until_caught_up(pool, artisan_consumer(env.get(keys.TOPIC_PREFIX, "")),
                                   keys.stack_kafka_settings(env), list(ARTISAN_TOPICS), timeout=120)
    finally:
        await pool.close()


def phone(url: str, *action: str, profile: Path) -> subprocess.CompletedProcess[str]:
    """Open `url` in a fresh headless Chromium as wide as a phone, and do `action`."""
    width, height = PHONE
    args = [browser(), "--no-sandbox", "--disable-gpu", "--headless", "--hide-scrollbars",
            "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
            f"--user-data-dir={profile}", f"--window-size={width},{height}", *action, url]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def dom(url: str, profile: Path) -> str:
    page = phone(url, "--dump-dom", profile=profile).stdout
    assert "<html" in page, page[:2000]
    return page


async def new_link(her: Her, artisan_id: str | None = None) -> dict:
    async with her.staff as staff:
        response = await staff.post(f"/artisans/{artisan_id or her.artisan_id}/links")
    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    return response.json()


async def statement(her: Her, artisan_id: str) -> dict:
    async with her.auditor as auditor:
        response = await auditor.get(f"/artisans/{artisan_id}/statement")
    assert response.status_code == 200
    return response.json()


async def another_artisan(her: Her) -> str:
    async with her.auditor as auditor:
        accounts = (await auditor.get("/ledger/balances")).json()["accounts"]
    ids = sorted({a.split(":")[1] for a in accounts if a.startswith("artisan:")} - {her.artisan_id})
    assert ids
    return ids[0]


def money(page: str) -> dict[str, int]:
    return {e["data-money"]: int(e["data-value"]) for e in elements(page, "data-money")}


# --- in the browser, at a phone's width --------------------------------------------------------------------------


async def test_her_page_on_a_phone_shows_her_pieces_money_defects_and_payslips_and_nobody_elses(her, tmp_path):
    link = await new_link(her)
    assert link["url"].startswith(f"{her.url}{PAGE_PREFIX}/") and link["qr_svg"].startswith("<svg")
    assert her.artisan_id in link["card_svg"] and link["url"] not in link["card_svg"]
    page = dom(link["url"], tmp_path / "profile")

    assert '<html lang="id">' in page and "Halaman Anda" in page
    assert one(page, "data-artisan", her.artisan_id)
    # Her money is her ledger statement's, as Jakarta writes rupiah; owed is payable plus in transit.
    balances = (await statement(her, her.artisan_id))["balances"]
    assert money(page) == {"earned": balances["earned_idr"], "paid": balances["paid_idr"],
                           "owed": balances["payable_idr"] + balances["in_transit_idr"]}
    assert balances["earned_idr"] > 0 and rupiah(balances["earned_idr"]) in page
    # Her pieces, as the scenario wove and QC judged them, each with its product and rate.
    pieces = elements(page, "data-piece")
    assert len(pieces) == len(her.weavings)
    assert sum(p["data-qc"] == "passed" for p in pieces) == sum(w.passes for w in her.weavings)
    assert sum(p["data-qc"] == "failed" for p in pieces) == sum(not w.passes for w in her.weavings) > 0
    assert all(int(p["data-rate"]) > 0 for p in pieces)
    earned_pieces = {e["piece_id"] for e in (await statement(her, her.artisan_id))["entries"] if e["kind"] == "earned"}
    assert {p["data-piece"] for p in pieces if p["data-qc"] == "passed"} == earned_pieces
    # Each defect QC found, in Indonesian words.
    for code in {code for w in her.weavings for code in w.defects}:
        assert DEFECT_WORDS[code][0] in page, code
    assert "Dianyam " in page and " Maret 2024" in page
    # Her payslips: every payout paid (together what she received) and the one that bounced.
    slips = elements(page, "data-payslip")
    paid = [s for s in slips if s["data-outcome"] == "paid"]
    assert paid and sum(int(s["data-amount"]) for s in paid) == balances["paid_idr"]
    assert [s["data-outcome"] for s in slips].count("failed") == 1
    assert "Transfer bank" in page and "rekening sudah ditutup" in page
    assert all(set(s["data-pieces"].split()) <= earned_pieces for s in paid)
    assert set().union(*(s["data-pieces"].split() for s in paid)) == earned_pieces  # every piece paid, once

    # Nothing of anyone else: not another artisan's pieces, payouts or figures, nor anyone's personal data.
    other = await another_artisan(her)
    theirs = await statement(her, other)
    assert other not in page
    for entry in theirs["entries"]:
        assert entry.get("piece_id", entry.get("payout_id")) not in page
    mine = set(money(page).values()) | {int(s["data-amount"]) for s in slips}
    if theirs["balances"]["earned_idr"] not in mine:
        assert rupiah(theirs["balances"]["earned_idr"]) not in page
    for value in (her.person.full_name, her.person.nik, her.person.phone, her.person.payout_account):
        assert value not in page
    for token in (her.env[keys.STAFF_TOKEN], her.env[keys.AUDITOR_TOKEN]):
        assert token not in page


async def test_a_screenshot_of_her_page_at_360_px_is_kept_in_docs(her, tmp_path):
    SCREENSHOT.unlink(missing_ok=True)
    phone(her.printed_link, f"--screenshot={SCREENSHOT}", profile=tmp_path / "profile")

    png = SCREENSHOT.read_bytes()
    assert png.startswith(PNG_SIGNATURE) and png[12:16] == b"IHDR"
    assert struct.unpack(">II", png[16:24]) == PHONE
    assert len(png) > 100_000, len(png)  # a page of text and cards, not a blank or an error page


async def test_her_page_speaks_english_with_lang_en(her, tmp_path):
    page = dom(her.printed_link + "?lang=en", tmp_path / "profile")

    assert '<html lang="en">' in page and "Your page" in page and "Halaman Anda" not in page
    assert "Payslips" in page and "Bank transfer" in page
    assert one(page, "data-lang-switch", "id")["href"] == "?lang=id"
    assert any(words[1] in page for words in DEFECT_WORDS.values())


async def test_the_demos_printed_link_opens_her_page(her):
    async with her.http() as http:
        response = await http.get(her.printed_link)
    assert response.status_code == 200 and f'data-artisan="{her.artisan_id}"' in response.text


# --- over HTTP: headers, revocation, forgeries, who may make links -----------------------------------------------


async def test_the_page_may_be_kept_by_her_phone_and_loads_nothing_from_anywhere(her):
    async with her.http() as http:
        response = await http.get(her.printed_link)
    headers = response.headers
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert headers["cache-control"].startswith("private, max-age=")
    assert headers["referrer-policy"] == "no-referrer" and "noindex" in headers["x-robots-tag"]
    csp = headers["content-security-policy"]
    assert "default-src 'none'" in csp and "style-src 'sha256-" in csp and "script-src" not in csp
    page = response.text
    assert "<script" not in page and "<link" not in page and "url(" not in page
    assert not re.search(r"\b(src|srcset|action|data|poster)\s*=", page)
    assert {e["href"] for e in elements(page, "href")} == {"?lang=en"}


async def test_a_revoked_link_and_a_forged_one_get_the_same_404_page(her):
    link = await new_link(her)
    async with her.http() as http:
        assert (await http.get(link["url"])).status_code == 200
        async with her.staff as staff:
            revoked = await staff.delete(f"/artisans/{her.artisan_id}/links/{link['link_id']}")
            assert revoked.status_code == 200 and revoked.json()["active"] is False
            again = await staff.delete(f"/artisans/{her.artisan_id}/links/{link['link_id']}")
            assert again.json()["revoked_at"] == revoked.json()["revoked_at"]  # revoking again changes nothing
            listed = (await staff.get(f"/artisans/{her.artisan_id}/links")).json()["links"]
        assert {row["link_id"]: row["active"] for row in listed}[link["link_id"]] is False
        assert all("url" not in row and "secret" not in str(row) for row in listed)

        gone = await http.get(link["url"])
        forged = await http.get(f"{PAGE_PREFIX}/{links.new_secret()}")
        assert gone.status_code == forged.status_code == 404
        assert gone.text == forged.text and "Tautan tidak berlaku" in gone.text
        assert gone.headers["cache-control"] == "no-store" and "text/html" in gone.headers["content-type"]
        assert her.artisan_id not in gone.text

        # Hostile paths get the same page, never a 5xx: too long, odd characters, traversal, NUL, non-ASCII.
        for path in ("x", "a" * 20_000, "%00" * 43, "..%2F..%2Fetc%2Fpasswd", "%C3%A9" * 43, link["url"][-43:] + "/x",
                     link["url"][-43:].upper(), "'; DROP TABLE artisan_links; --"):
            hostile = await http.get(f"{PAGE_PREFIX}/{path}")
            assert hostile.status_code == 404 and hostile.text == forged.text, path
        # The live demo link still works: revoking one link leaves her others alone.
        assert (await http.get(her.printed_link)).status_code == 200


async def test_only_staff_make_and_revoke_links_for_artisans_payout_knows(her):
    path = f"/artisans/{her.artisan_id}/links"
    collaborator = collaborator_token(her.env[keys.TOKEN_SECRET], "col_someone")
    async with her.auditor as auditor:
        assert (await auditor.post(path)).status_code == 403
        assert (await auditor.get(path)).status_code == 200  # auditors see when links were made and revoked
        assert (await auditor.delete(f"{path}/lnk_x")).status_code == 403
    async with her.http(collaborator) as http:
        assert (await http.post(path)).status_code == 403
    async with her.http() as http:
        assert (await http.post(path)).status_code == 401
    async with her.staff as staff:
        unknown = await staff.post("/artisans/res_nobody/links")
        assert unknown.status_code == 404 and unknown.json()["code"] == "artisan-unknown"
        assert unknown.headers["content-type"] == "application/problem+json"
        missing = await staff.delete(f"{path}/lnk_nothing")
        assert missing.status_code == 404 and missing.json()["code"] == "link-not-found"
        # Another artisan's link id cannot be revoked through her path.
        other = await another_artisan(her)
        theirs = await new_link(her, other)
        assert (await staff.delete(f"{path}/{theirs['link_id']}")).status_code == 404
    async with her.http() as http:
        page = await http.get(theirs["url"])
    assert page.status_code == 200 and f'data-artisan="{other}"' in page.text and her.artisan_id not in page.text


# --- the read model on its own (PostgreSQL only) ---------------------------------------------------------------


def _history() -> list[Envelope]:
    """res_a wove a tas that failed QC and a piring that passed; paid on the second try; res_b only enrolled.

    Each event's time is its business time, as the services write it: a run pays earnings up to its
    period's end by the ledger's event time, and so does the matching of pieces to payslips."""
    enrollment, production, payout = (service_source(s) for s in ("enrollment", "production", "payout"))
    monday = datetime(2024, 3, 4, 9, 0, tzinfo=WIB)
    week_end = datetime(2024, 3, 10, 23, 59, 59, tzinfo=WIB)
    ran, bounced, ran_again = (datetime(2024, 3, 11, h, 0, tzinfo=WIB) for h in (9, 12, 15))
    events = [
        (enrollment, Enrolled(resident_id="res_b", cohort_id="coh_1", enrolled_at=monday), monday),
        (enrollment, Enrolled(resident_id="res_a", cohort_id="coh_1", enrolled_at=monday), monday),
        (production, PieceWoven(piece_id="pc_1", artisan_id="res_a", collaborator_id="col_1", product="tas",
                                rate_idr=45_000, woven_at=monday), monday),
        (production, QcFailed(piece_id="pc_1", artisan_id="res_a", collaborator_id="col_1", submission_id="s1",
                              defects=["loose-weave"], inspected_at=monday, signature="c2ln"), monday),
        (production, PieceWoven(piece_id="pc_2", artisan_id="res_a", collaborator_id="col_1", product="piring",
                                rate_idr=15_000, woven_at=monday), monday),
        (production, QcPassed(piece_id="pc_2", artisan_id="res_a", collaborator_id="col_1", product="piring",
                              amount_idr=15_000, submission_id="s2", inspected_at=monday, signature="c2ln"), monday),
        (payout, PayoutScheduled(payout_id="po_1", run_id="run-1", artisan_id="res_a", amount_idr=15_000,
                                 period_end=week_end), ran),
        (payout, PayoutFailed(payout_id="po_1", artisan_id="res_a", amount_idr=15_000, reason="account-closed"),
         bounced),
        (payout, PayoutScheduled(payout_id="po_2", run_id="run-1b", artisan_id="res_a", amount_idr=15_000,
                                 period_end=week_end), ran_again),
        (payout, Paid(payout_id="po_2", artisan_id="res_a", amount_idr=15_000, method="bank-transfer",
                      reference="TRF-1", paid_at=ran_again), ran_again),
    ]
    return [Envelope.wrap(event, source=source, time=time) for source, event, time in events]


@pytest.mark.parametrize("delivery", ["one by one", "in one batch", "in one batch, reversed"])
async def test_the_read_model_keeps_each_fact_once_whatever_arrived_first(database_url, delivery):
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        await projections.install(pool)
        await artisan.install(pool)
        await artisan.install(pool)  # installing again changes nothing
        history = _history()
        async with pool.acquire() as conn:
            for _ in range(2):  # the upserts alone are idempotent, besides the consumer's event-id dedupe
                async with conn.transaction():
                    if delivery == "one by one":
                        for event in history:
                            await artisan.project(PostgresUnitOfWork(conn), event, None)
                    else:
                        batch = history[::-1] if delivery.endswith("reversed") else history
                        assert await artisan.project_batch(
                            PostgresUnitOfWork(conn), [(event, None) for event in batch]) == []
            for event in history:
                await projections.apply_event(conn, event)
            page = await artisan.read_page(conn, "res_a")
            known = [await links.is_known(conn, who) for who in ("res_a", "res_b", "res_nobody")]
    finally:
        await pool.close()

    assert known == [True, True, False]  # res_b enrolled and never wove: staff may still make her a card
    assert [(p.piece_id, p.product, p.rate_idr, p.qc, p.defects) for p in page.pieces] == [
        ("pc_2", "piring", 15_000, "passed", ()), ("pc_1", "tas", 45_000, "failed", ("loose-weave",))]
    assert (page.earned_idr, page.paid_idr, page.owed_idr) == (15_000, 15_000, 0)
    slips = {slip.payout_id: slip for slip in page.payslips}
    assert (slips["po_1"].outcome, slips["po_1"].failure_reason) == ("failed", "account-closed")
    assert (slips["po_2"].outcome, slips["po_2"].method, slips["po_2"].reference) == ("paid", "bank-transfer", "TRF-1")
    # The bounced payout's piece went back and was paid with the next one.
    assert [s.piece_id for s in slips["po_1"].shares] == [s.piece_id for s in slips["po_2"].shares] == ["pc_2"]
    html = render_page(page, "id")
    assert "anyaman longgar" in html and "rekening sudah ditutup" in html and "Rp 15.000" in html
