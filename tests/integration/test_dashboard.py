"""The programme dashboard after `anyam demo`, as staff see it: in headless Chromium and over HTTP.

One embedded stack runs the demo once for the whole module (the demo is the slow part); every
test then reads the same programme. The browser is Debian's `chromium-headless-shell`: when it
is missing the tests fail and say how to install it, because a skipped browser test would let a
broken page through CI unnoticed.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import struct
import subprocess
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime
from html.parser import HTMLParser
from pathlib import Path

import asyncpg
import httpx
import pytest

from anyam.demo.scenario import MATERIALS, ROTAN_PER_PIECE, Scenario, nagrak, programmes
from anyam.stack import read_stack_env
from anyam.stack import stackfile as keys
from services.payout import dashboard, projections
from services.payout.dashboard import DASHBOARD_TOPICS, dashboard_consumer
from services.payout.dashboard.view import render_dashboard
from shared.contracts import Envelope, service_source
from shared.contracts.events import (
    CohortScheduled,
    Enrolled,
    Paid,
    PayoutFailed,
    PayoutScheduled,
    PieceWoven,
    QcFailed,
    QcPassed,
    TrainingCompleted,
    Withdrawn,
)
from shared.eventstore import PostgresUnitOfWork, wait_until_caught_up
from shared.money import rupiah
from shared.timeutil import WIB
from shared.web.access import collaborator_token
from tests.integration.test_demo import anyam

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
SEED = 2024
PARTICIPANTS = 25
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
WINDOW = (1400, 2200)

pytestmark = pytest.mark.timeout(900)  # the first test also waits for the module's demo


# --- the stack, once for the module -----------------------------------------------------------------


@dataclass(frozen=True)
class Programme:
    env: dict[str, str]
    #: Nagrak's, the larger programme (the materials are its alone).
    scenario: Scenario
    #: Every rusunawa's programme the demo ran: Nagrak's, then Marunda's.
    scenarios: tuple[Scenario, ...]

    @property
    def participants(self) -> list:
        return [p for scenario in self.scenarios for p in scenario.participants]

    @property
    def url(self) -> str:
        return self.env["ANYAM_PAYOUT_URL"]

    @property
    def auditor(self) -> str:
        return self.env[keys.AUDITOR_TOKEN]

    @property
    def staff(self) -> str:
        return self.env[keys.STAFF_TOKEN]

    def http(self, token: str | None = None, **options) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30, **options)


@pytest.fixture(scope="module")
async def programme(tmp_path_factory):
    workdir = Path(tmp_path_factory.mktemp("dash", numbered=True))  # short: PostgreSQL's socket lives under it
    try:
        demo = await asyncio.to_thread(anyam, "demo", "--seed", str(SEED), workdir=workdir)
        assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
        env = read_stack_env(workdir / "stack.env")
        # The demo prints the dashboard's address for this machine; it must never print another token.
        line = next((line for line in demo.stdout.splitlines() if "/dashboard?token=" in line), "")
        assert f"{env['ANYAM_PAYOUT_URL']}/dashboard?token=" in line, demo.stdout[-2000:]
        assert env[keys.TOKEN_SECRET] not in demo.stdout and env[keys.STAFF_TOKEN] not in demo.stdout
        await _dashboard_caught_up(env)
        yield Programme(env, nagrak(SEED, PARTICIPANTS), programmes(SEED))
    finally:
        await asyncio.to_thread(anyam, "down", workdir=workdir)


async def _dashboard_caught_up(env: dict[str, str]) -> None:
    """The demo waits for the ledger; the dashboard's own consumer is waited for here, on real offsets."""
    prefix = env.get(keys.TOPIC_PREFIX, "")
    kafka = keys.stack_kafka_settings(env)
    pool = await asyncpg.create_pool(env["ANYAM_PAYOUT_DATABASE_URL"], min_size=1, max_size=2)
    try:
        await wait_until_caught_up(pool, dashboard_consumer(prefix), kafka, list(DASHBOARD_TOPICS), timeout=120)
    finally:
        await pool.close()


# --- the browser ----------------------------------------------------------------------------------------


def browser() -> str:
    """The headless Chromium binary; the test fails (never skips) without it."""
    for candidate in (os.environ.get("ANYAM_BROWSER"), shutil.which("chromium-headless-shell"),
                      "/usr/lib/chromium/chromium-headless-shell"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail("headless Chromium is not installed: run scripts/install-browser.sh (as root it installs "
                "Debian's chromium-headless-shell; otherwise it prints how), or set ANYAM_BROWSER", pytrace=False)


def chromium(url: str, *action: str, profile: Path) -> subprocess.CompletedProcess[str]:
    """Open `url` in a fresh headless profile (so only this run's cookies exist) and do `action`."""
    width, height = WINDOW
    args = [browser(), "--no-sandbox", "--disable-gpu", "--headless", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
            f"--window-size={width},{height}", *action, url]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def dump_dom(url: str, profile: Path) -> str:
    dom = chromium(url, "--dump-dom", profile=profile).stdout
    assert "<html" in dom, dom[:2000]
    return dom


class _Elements(HTMLParser):
    """Every element's attributes, in document order: the page's `data-*` figures, read without regexes."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[dict[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append({"tag": tag, **{k: v or "" for k, v in attrs}})


def elements(page: str, attribute: str) -> list[dict[str, str]]:
    parser = _Elements()
    parser.feed(page)
    return [e for e in parser.elements if attribute in e]


def one(page: str, attribute: str, value: str) -> dict[str, str]:
    found = [e for e in elements(page, attribute) if e[attribute] == value]
    assert len(found) == 1, f"{attribute}={value!r}: {found}"
    return found[0]


# --- what the page must say -------------------------------------------------------------------------------


async def ledger(programme: Programme) -> dict[str, int]:
    """Earned, paid and owed over every artisan, from the ledger's own balances."""
    async with programme.http(programme.auditor) as http:
        accounts = (await http.get("/ledger/balances")).json()["accounts"]
    kind = {k: sum(v for a, v in accounts.items() if a.startswith("artisan:") and a.endswith(f":{k}"))
            for k in ("payable", "in-transit", "paid")}
    # What the collaborators' accounts gave (fees, invoiced or paid since: docs/money.md) is what was earned.
    return {"earned": -sum(v for a, v in accounts.items() if a.startswith("collaborator:")), "paid": kind["paid"],
            "owed": kind["payable"] + kind["in-transit"]}


def iso_week(moment) -> str:
    year, week, _ = moment.isocalendar()
    return f"{year}-W{week:02d}"


async def assert_shows_the_programme(page: str, programme: Programme) -> None:
    scenarios = programme.scenarios
    weavings = [w for scenario in scenarios for w in scenario.weavings]
    money = await ledger(programme)
    assert money["earned"] > 0 and money["earned"] == money["paid"] + money["owed"]

    # Earnings: the ledger's totals, as Jakarta writes rupiah, and per artisan.
    assert rupiah(money["earned"]) in page
    assert int(one(page, "data-kpi", "earned")["data-value"]) == money["earned"]
    (total,) = elements(page, "data-artisan-total")
    assert (int(total["data-earned"]), int(total["data-paid"]), int(total["data-owed"])) == (
        money["earned"], money["paid"], money["owed"])
    assert len(elements(page, "data-artisan")) == len(programme.participants)

    # Pieces made and passed, per product and per product and ISO week, as the scenarios made them (the
    # two rusunawa's products are distinct).
    woven, passed = Counter(w.product for w in weavings), Counter(w.product for w in weavings if w.passes)
    for product, count in woven.items():
        row = one(page, "data-product-total", product)
        assert (int(row["data-woven"]), int(row["data-passed"])) == (count, passed[product]), product
    weekly = Counter((iso_week(w.woven_at), w.product) for w in weavings)
    shown = {(e["data-week"], e["data-product"]): int(e["data-woven"]) for e in elements(page, "data-week")}
    assert shown == dict(weekly)
    assert int(one(page, "data-kpi", "woven")["data-value"]) == len(weavings)

    # The cohorts: Nagrak's 25 and Marunda's 6, each all enrolled and completed; each rusunawa's one product.
    cohorts = {e["data-rusunawa"]: e for e in elements(page, "data-cohort")}
    assert set(cohorts) == {scenario.programme.rusunawa for scenario in scenarios} == {"Nagrak", "Marunda"}
    for scenario in scenarios:
        cohort, size = cohorts[scenario.programme.rusunawa], str(len(scenario.participants))
        assert (cohort["data-capacity"], cohort["data-enrolled"], cohort["data-completed"],
                cohort["data-withdrawn"]) == (size, size, size, "0")
        assert one(page, "data-ovop", scenario.programme.ovop_product)["data-rusunawa"] == scenario.programme.rusunawa

    # Payouts over time: every weekly run, the bounced transfer among them.
    runs = {e["data-run"]: e for e in elements(page, "data-run")}
    every_run = sorted((run for scenario in scenarios for run in scenario.runs), key=lambda r: (r.period_end, r.run_id))
    assert list(runs) == [run.run_id for run in every_run]
    for run in every_run:
        failed = int(runs[run.run_id]["data-failed"])
        assert (failed > 0) == bool(run.failing_participants), run.run_id
    assert sum(int(r["data-paid"]) for r in runs.values()) == money["paid"]
    assert page.count("<svg") >= 2  # the charts are drawn into the page itself

    for token in (programme.auditor, programme.staff):
        assert token not in page


# --- in the browser ----------------------------------------------------------------------------------------


async def test_the_dashboard_in_headless_chromium_shows_the_demos_numbers_in_bahasa_indonesia(programme, tmp_path):
    # Exactly what a person does: open the printed link; the browser follows the redirect with its cookie.
    page = dump_dom(f"{programme.url}/dashboard?token={programme.auditor}", tmp_path / "profile")

    assert '<html lang="id">' in page
    assert "Dasbor Program Anyam" in page and "Pendapatan per perajin" in page
    assert one(page, "data-lang-switch", "en")["href"] == "?lang=en"
    await assert_shows_the_programme(page, programme)


async def test_the_dashboard_in_headless_chromium_speaks_english_with_lang_en(programme, tmp_path):
    page = dump_dom(f"{programme.url}/dashboard?token={programme.staff}&lang=en", tmp_path / "profile")

    assert '<html lang="en">' in page
    assert "Anyam programme dashboard" in page and "Earnings per artisan" in page
    assert "Pendapatan per perajin" not in page
    assert one(page, "data-lang-switch", "id")["href"] == "?lang=id"
    await assert_shows_the_programme(page, programme)


async def test_a_screenshot_of_the_dashboard_is_kept_as_a_test_artefact(programme, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    shot.unlink(missing_ok=True)

    chromium(f"{programme.url}/dashboard?token={programme.auditor}", f"--screenshot={shot}",
             profile=tmp_path / "profile")

    png = shot.read_bytes()
    assert png.startswith(PNG_SIGNATURE), png[:16]
    assert png[12:16] == b"IHDR" and struct.unpack(">II", png[16:24]) == WINDOW
    # A page of tables, charts and text compresses to well over this; a blank or error page does not.
    assert len(png) > 150_000, len(png)


# --- over HTTP ------------------------------------------------------------------------------------------------


async def test_staff_and_auditor_tokens_open_it_as_html_and_others_are_refused_with_a_page_saying_how(programme):
    for token in (programme.auditor, programme.staff):
        async with programme.http(token) as http:
            response = await http.get("/dashboard")
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        assert response.headers["cache-control"] == "no-store"

    collaborator = collaborator_token(programme.env[keys.TOKEN_SECRET], "col_someone")
    async with programme.http(collaborator) as http:
        refused = await http.get("/dashboard")
    assert refused.status_code == 403 and refused.headers["content-type"].startswith("text/html")
    assert '<html lang="id">' in refused.text and collaborator not in refused.text

    bad = "not-a-token-" + programme.auditor[::-1]
    for token, lang, words in ((bad, None, "anyam demo"), (None, None, "anyam demo"), (bad, "en", "prints the")):
        async with programme.http(token) as http:
            response = await http.get("/dashboard", params={"lang": lang} if lang else None)
        assert response.status_code == 401, (token, lang)
        assert response.headers["content-type"].startswith("text/html")
        assert response.headers["www-authenticate"] == "Bearer"
        assert words in response.text and f'<html lang="{lang or "id"}">' in response.text
        assert bad not in response.text and "set-cookie" not in response.headers

    # A token that is not even text the comparison accepts is a 401 as well, never a 500.
    async with programme.http() as http:
        response = await http.get("/dashboard", params={"token": "tökén"})
    assert response.status_code == 401


async def test_a_token_link_moves_the_token_into_a_strict_httponly_cookie_and_out_of_the_address(programme):
    async with programme.http(follow_redirects=False) as http:
        for lang, target in ((None, "/dashboard"), ("en", "/dashboard?lang=en")):
            params = {"token": programme.auditor} | ({"lang": lang} if lang else {})
            response = await http.get("/dashboard", params=params)
            assert response.status_code == 303
            assert response.headers["location"] == target
            assert programme.auditor not in response.text
            cookie = response.headers["set-cookie"]
            attributes = {part.strip().split("=")[0].lower(): part.strip() for part in cookie.split(";")}
            assert cookie.startswith("anyam_token=")
            assert {"httponly", "samesite", "path", "max-age"} <= attributes.keys(), cookie
            assert attributes["samesite"].lower() == "samesite=strict"
            assert attributes["path"] == "Path=/dashboard"

        # The cookie alone opens the page (the client kept it from the redirect).
        page = await http.get("/dashboard")
        assert page.status_code == 200 and "Dasbor Program Anyam" in page.text

    async with programme.http(follow_redirects=False) as http:
        collaborator = collaborator_token(programme.env[keys.TOKEN_SECRET], "col_someone")
        for token, status in (("wrong", 401), (collaborator, 403)):
            response = await http.get("/dashboard", params={"token": token})
            assert response.status_code == status
            assert "set-cookie" not in response.headers and token not in response.text
        # A cookie that no longer opens the page (say, the tokens were rotated) is cleared.
        response = await http.get("/dashboard", headers={"Cookie": "anyam_token=stale"})
        assert response.status_code == 401 and 'anyam_token=""' in response.headers["set-cookie"]


async def test_the_page_holds_no_personal_data_and_loads_nothing_from_anywhere(programme):
    async with programme.http(programme.auditor) as http:
        pages = [await http.get("/dashboard", params={"lang": lang}) for lang in ("id", "en")]
    for response in pages:
        page = response.text
        assert not re.search(r"(?<!\d)\d{16}(?!\d)", page), "a 16-digit number, like a NIK"
        for person in programme.participants:
            for value in (person.full_name, person.nik, person.phone, person.payout_account, person.unit):
                assert value not in page

        # Offline: no address anywhere, no resource to fetch; the only links are the language switch and,
        # with two rusunawa, the page scoped to each.
        assert "http://" not in page and "https://" not in page and "//" not in page
        assert not re.search(r"\b(src|srcset|action|data|poster)\s*=", page)
        assert "url(" not in page and "@import" not in page and "<script" not in page and "<link" not in page
        places = [scenario.programme.rusunawa for scenario in programme.scenarios]
        assert {e["href"] for e in elements(page, "href")} <= {
            "?lang=en", "?lang=id", *(f"?lang={lang}&rusunawa={place}" for lang in ("en", "id") for place in places)}
        assert "default-src 'none'" in response.headers["content-security-policy"]


async def test_each_artisans_row_is_her_ledger_statement(programme):
    async with programme.http(programme.auditor) as http:
        page = (await http.get("/dashboard")).text
        rows = elements(page, "data-artisan")
        assert len(rows) == len(programme.participants)
        for row in rows:
            balances = (await http.get(f"/artisans/{row['data-artisan']}/statement")).json()["balances"]
            assert (int(row["data-earned"]), int(row["data-paid"]), int(row["data-owed"])) == (
                balances["earned_idr"], balances["paid_idr"], balances["payable_idr"] + balances["in_transit_idr"])


def earned_by_rates(scenario: Scenario) -> int:
    """What the scenario's passed pieces earn at the rates its collaborator set (the raise included)."""
    return sum(scenario.rate_at(w.product, w.woven_at) for w in scenario.weavings if w.passes)


async def test_the_dashboard_scoped_to_each_rusunawa_shows_its_cohort_product_artisans_and_runs_only(programme):
    async with programme.http(programme.auditor) as http:
        accounts = (await http.get("/ledger/balances")).json()["accounts"]
        for scenario in programme.scenarios:
            place, others = scenario.programme, [s for s in programme.scenarios if s is not scenario]
            response = await http.get("/dashboard", params={"rusunawa": place.rusunawa})
            assert response.status_code == 200
            page = response.text

            # Its own cohort and OVOP product, none of the other rusunawa's.
            (cohort,) = elements(page, "data-cohort")
            size = str(len(scenario.participants))
            assert (cohort["data-rusunawa"], cohort["data-capacity"], cohort["data-completed"]) == (
                place.rusunawa, size, size)
            assert [(e["data-ovop"], e["data-rusunawa"]) for e in elements(page, "data-ovop")] == [
                (place.ovop_product, place.rusunawa)]

            # Its residents, its products and its runs only; its earnings are its pieces at its collaborator's rates.
            rows = elements(page, "data-artisan")
            assert len(rows) == len(scenario.participants)
            assert sum(int(row["data-earned"]) for row in rows) == earned_by_rates(scenario) > 0
            assert {e["data-product-total"] for e in elements(page, "data-product-total")} == {
                w.product for w in scenario.weavings}
            assert int(one(page, "data-kpi", "woven")["data-value"]) == len(scenario.weavings)
            assert [e["data-run"] for e in elements(page, "data-run")] == [run.run_id for run in scenario.runs]
            for other in others:
                assert not {run.run_id for run in other.runs} & {e["data-run"] for e in elements(page, "data-run")}
                assert other.programme.ovop_product not in {e["data-product-total"]
                                                            for e in elements(page, "data-product-total")}

    # The ledger holds earnings from both collaborators: each one's accounts (fees, receivable once invoiced,
    # paid once it paid) are together the source of exactly what its programme's passed pieces earned.
    by_collaborator: dict[str, int] = {}
    for account, balance in accounts.items():
        if account.startswith("collaborator:"):
            owner = account.rpartition(":")[0]
            by_collaborator[owner] = by_collaborator.get(owner, 0) - balance
    assert sorted(by_collaborator.values()) == sorted(earned_by_rates(scenario) for scenario in programme.scenarios)
    assert len(by_collaborator) == 2 and all(f > 0 for f in by_collaborator.values())


# --- the read model on its own ------------------------------------------------------------------------------


def _history() -> list[Envelope]:
    enrollment, production, payout = (service_source(s) for s in ("enrollment", "production", "payout"))
    monday = datetime(2024, 3, 4, 9, 0, tzinfo=WIB)
    # 05:00 WIB on Monday 11 March is still Sunday in UTC: the week is Jakarta's, so this is week 11.
    early = datetime(2024, 3, 11, 5, 0, tzinfo=WIB)
    period_end = datetime(2024, 3, 10, 23, 59, 59, tzinfo=WIB)
    data = [
        # An enrolment before its cohort: they are keyed differently and may arrive in either order.
        (enrollment, Enrolled(resident_id="res_a", cohort_id="coh_1", enrolled_at=monday)),
        (enrollment, CohortScheduled(cohort_id="coh_1", rusunawa="Marunda", skill="menganyam", product_focus="tas",
                                     starts_on=date(2024, 2, 1), ends_on=date(2024, 2, 3), capacity=3)),
        (enrollment, TrainingCompleted(resident_id="res_a", cohort_id="coh_1", completed_on=date(2024, 2, 3))),
        (enrollment, Enrolled(resident_id="res_b", cohort_id="coh_1", enrolled_at=monday)),
        (enrollment, Withdrawn(resident_id="res_b", cohort_id="coh_1", reason="moved-away")),
        (production, PieceWoven(piece_id="pc_1", artisan_id="res_a", collaborator_id="col_1", product="tas",
                                rate_idr=45_000, woven_at=monday)),
        # qc-failed names no product: the dashboard takes it from the piece.
        (production, QcFailed(piece_id="pc_1", artisan_id="res_a", collaborator_id="col_1", submission_id="s1",
                              defects=["loose-weave"], inspected_at=monday, signature="c2ln")),
        (production, PieceWoven(piece_id="pc_2", artisan_id="res_a", collaborator_id="col_1", product="piring",
                                rate_idr=15_000, woven_at=early)),
        (production, QcPassed(piece_id="pc_2", artisan_id="res_a", collaborator_id="col_1", product="piring",
                              amount_idr=15_000, submission_id="s2", inspected_at=early, signature="c2ln")),
        (payout, PayoutScheduled(payout_id="po_1", run_id="run-1", artisan_id="res_a", amount_idr=15_000,
                                 period_end=period_end)),
        (payout, PayoutFailed(payout_id="po_1", artisan_id="res_a", amount_idr=15_000, reason="account-closed")),
        (payout, PayoutScheduled(payout_id="po_2", run_id="run-2", artisan_id="res_a", amount_idr=15_000,
                                 period_end=period_end.replace(day=17))),
        (payout, Paid(payout_id="po_2", artisan_id="res_a", amount_idr=15_000, method="bank-transfer",
                      reference="TRF-1", paid_at=period_end.replace(day=18))),
    ]
    return [Envelope.wrap(event, source=source) for source, event in data]


@pytest.mark.parametrize("delivery", ["one by one", "in one batch", "in one batch, reversed"])
async def test_the_read_model_counts_each_fact_once_whatever_arrived_first_and_money_comes_from_the_ledger(
    database_url, delivery,
):
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        await projections.install(pool)
        await dashboard.install(pool)
        history = _history()
        async with pool.acquire() as conn:
            # The consumer dedupes event ids; the handler's upserts alone are idempotent as well.
            # It hands the handler whole batches, which group the upserts by kind: the order
            # between kinds (a verdict before its piece, a payment before its scheduling) must not matter.
            for _ in range(2):
                async with conn.transaction():
                    if delivery == "one by one":
                        for event in history:
                            await dashboard.project(PostgresUnitOfWork(conn), event, None)
                    else:
                        batch = history[::-1] if delivery.endswith("reversed") else history
                        assert await dashboard.project_batch(
                            PostgresUnitOfWork(conn), [(event, None) for event in batch]) == []
            for event in history:
                await projections.apply_event(conn, event)
            data = await dashboard.read_dashboard(conn)
    finally:
        await pool.close()

    (cohort,) = data.cohorts
    assert (cohort.rusunawa, cohort.capacity, cohort.enrolled, cohort.completed, cohort.withdrawn) == (
        "Marunda", 3, 2, 1, 1)
    assert [(o.rusunawa, o.product) for o in data.ovop] == [("Marunda", "tas")]
    assert [(r.week, r.product, r.woven, r.passed, r.failed) for r in data.weeks] == [
        (date(2024, 3, 4), "tas", 1, 0, 1), (date(2024, 3, 11), "piring", 1, 1, 0)]
    assert data.products == ["tas", "piring"]  # the OVOP product first: it keeps the first colour
    (artisan,) = data.artisans
    assert (artisan.artisan_id, artisan.woven, artisan.passed, artisan.earned_idr, artisan.paid_idr,
            artisan.owed_idr) == ("res_a", 2, 1, 15_000, 15_000, 0)
    assert [(r.run_id, r.scheduled_idr, r.paid_idr, r.failed_idr) for r in data.runs] == [
        ("run-1", 15_000, 0, 15_000), ("run-2", 15_000, 15_000, 0)]

    page = render_dashboard(data, "id")
    assert "Rp 15.000" in page and "Pekan 11, 2024" in page and "17 Mar 2024, 23.59 WIB" in page
    assert "17 Mar 2024, 23:59 WIB" in render_dashboard(data, "en")


async def test_the_bahan_baku_section_flags_whoever_needed_more_rotan_than_she_was_given(programme):
    (rotan, given, unit), needs = MATERIALS[0], Counter()
    for weaving in programme.scenario.weavings:
        needs[weaving.participant] += ROTAN_PER_PIECE[weaving.product]
    async with programme.http(programme.auditor) as http:
        page = (await http.get("/dashboard")).text

    total = next(e for e in elements(page, "data-material-total") if e["data-material"] == rotan)
    assert total["data-unit"] == unit
    assert (int(total["data-issued"]), int(total["data-expected"])) == (given * PARTICIPANTS, sum(needs.values()))
    flagged = elements(page, "data-anomaly")
    over = sorted(need for need in needs.values() if need > given)
    assert over and {e["data-anomaly"] for e in flagged} == {"woven-beyond-materials"}
    assert sorted(int(e["data-expected"]) for e in flagged) == over
    assert int(total["data-flagged"]) == len(over)
