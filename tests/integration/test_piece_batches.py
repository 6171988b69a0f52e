"""`POST /piece-batches` on the real broker and PostgreSQL: a field officer's CSV, a result per row, each row once."""

from __future__ import annotations

import time

import pytest

from services.production.app import ProductionSettings, create_app
from services.production.handlers import ProductionHandlers
from tests.integration.test_production import Production, train, workshop
from tests.services import client, new_tokens, serve, service_settings

HEADER = "artisan_id,collaborator_id,product,woven_at"
NIK = "3175099912870042"


@pytest.fixture
async def service(kafka_settings, database_url):
    tokens = new_tokens()
    app = create_app(ProductionSettings(**service_settings(kafka_settings, database_url, tokens, "production")))
    async with serve(app) as url, client(url, tokens.staff) as staff:
        yield Production(staff, tokens, url, app.state.runtime.pool, kafka_settings)


async def upload(prod: Production, body: str | bytes, *, key: str | None = "upload-1",
                 content_type: str = "text/csv; charset=utf-8"):
    headers = {"Content-Type": content_type}
    if key is not None:
        headers["Idempotency-Key"] = key
    return await prod.staff.post("/piece-batches", content=body.encode() if isinstance(body, str) else body,
                                 headers=headers)


async def pieces_woven(prod: Production) -> int:
    async with prod.pool.acquire() as conn:
        return await conn.fetchval("SELECT count(*) FROM event_store WHERE event_type = 'piece-woven'")


async def test_an_upload_records_good_rows_refuses_bad_ones_and_a_retry_records_nothing_twice(service, tmp_path):
    shop = await workshop(service, tmp_path)  # rates: Rp 10.000 from March, Rp 12.500 from April
    await train(service, "res_ani")
    col = shop.collaborator_id
    # As a spreadsheet saves it: a byte-order mark, CRLF, quotes, an empty row, columns in its own order.
    sheet = "\ufeff" + "\r\n".join([
        "woven_at, Artisan_ID ,collaborator_id,product",
        f"2024-03-05T10:00:00+07:00,res_siti,{col},piring",                    # 2: recorded, March rate
        f'2024-04-02 09:30,"res_ani",{col},"piring"',                          # 3: WIB, April rate
        f"2024-03-05 10:00,res_untrained,{col},piring",                         # 4: not trained
        "2024-03-05 10:00,res_siti,col_nobody,piring",                          # 5: no such collaborator
        f"05/03/2024 10:00,res_siti,{col},piring",                              # 6: not ISO 8601
        f'2024-03-05 10:00,res_siti,{col},"piring NIK {NIK}"',                  # 7: a NIK in a label
        "",                                                                     # 8: empty, skipped
        f"2024-03-05 10:00,res_siti,{col},piring,extra",                        # 9: a field too many
        f"2024-03-06 08:00 WIB,res_siti,{col},tas",                             # 10: no rate for tas
        f'"2024-03-07T01:00:00Z","res_siti","{col}","piring"',                  # 11: UTC, in March
    ]) + "\r\n"

    first = await upload(service, sheet)
    assert first.status_code == 200, first.text
    answer = first.json()
    by_row = {result["row"]: result for result in answer["results"]}
    assert list(by_row) == [2, 3, 4, 5, 6, 7, 9, 10, 11]
    assert (answer["rows"], answer["recorded"], answer["already_recorded"], answer["refused"]) == (9, 3, 0, 6)
    assert {n: r["status"] for n, r in by_row.items() if r["status"] != "refused"} == {
        2: "recorded", 3: "recorded", 11: "recorded"}
    assert [by_row[n]["rate_idr"] for n in (2, 3, 11)] == [10_000, 12_500, 10_000]
    assert {n: r.get("code") for n, r in by_row.items() if r["status"] == "refused"} == {
        4: "not-trained", 5: "collaborator-not-found", 6: "invalid-row", 7: "invalid-row", 9: "malformed-row",
        10: "no-rate-in-force"}
    assert "`woven_at`" in by_row[6]["message"] and "`product`" in by_row[7]["message"]
    assert NIK not in first.text and "piring NIK" not in first.text  # refused by name, never echoed
    for n, artisan, woven_at in ((2, "res_siti", "2024-03-05T10:00:00+07:00"),
                                 (3, "res_ani", "2024-04-02T09:30:00+07:00"),
                                 (11, "res_siti", "2024-03-07T08:00:00+07:00")):
        piece = (await service.staff.get(f"/pieces/{by_row[n]['piece_id']}")).json()
        assert (piece["artisan_id"], piece["collaborator_id"], piece["woven_at"]) == (artisan, col, woven_at)
    assert await pieces_woven(service) == 3

    # The client timed out and sends the very same upload again: the same answer, nothing recorded twice.
    retry = await upload(service, sheet)
    assert (retry.status_code, retry.json()) == (200, answer)
    assert await pieces_woven(service) == 3

    # The same key for another upload: refused whole, before any row.
    other = await upload(service, f"{HEADER}\nres_siti,{col},piring,2024-03-08 10:00\n")
    assert (other.status_code, other.json()["code"]) == (422, "idempotency-key-reused")
    assert await pieces_woven(service) == 3
    # Another key is another upload: its rows are new pieces.
    again = await upload(service, sheet, key="upload-2")
    assert again.json()["recorded"] == 3
    assert await pieces_woven(service) == 6


async def test_an_upload_cut_off_half_way_is_finished_by_its_retry_without_recording_a_row_twice(
    service, tmp_path, monkeypatch,
):
    shop = await workshop(service, tmp_path)
    sheet = HEADER + "\n" + "".join(f"{shop.artisan},{shop.collaborator_id},piring,2024-03-{day:02d} 10:00\n"
                                    for day in range(4, 12))  # rows 2 to 9
    weave = ProductionHandlers.weave
    calls = 0

    async def database_lost_at_the_sixth_row(self, uow, **piece):
        nonlocal calls
        calls += 1
        if calls == 6:
            raise ConnectionResetError("the database went away")
        return await weave(self, uow, **piece)

    monkeypatch.setattr(ProductionHandlers, "weave", database_lost_at_the_sixth_row)
    cut_off = await upload(service, sheet, key="week-10")
    assert (cut_off.status_code, cut_off.json()["code"]) == (503, "database-unavailable")
    # Rows are recorded four at a time, so the sixth began after two had finished; those in flight
    # when it failed were stopped, recorded or not, each row all or nothing in its own unit of work.
    kept = await pieces_woven(service)
    assert 2 <= kept <= 5

    monkeypatch.setattr(ProductionHandlers, "weave", weave)
    retry = await upload(service, sheet, key="week-10")
    assert retry.status_code == 200, retry.text
    assert (retry.json()["already_recorded"], retry.json()["recorded"]) == (kept, 8 - kept)
    assert await pieces_woven(service) == 8
    assert (await upload(service, sheet, key="week-10")).json() == retry.json()  # that answer now stands
    assert await pieces_woven(service) == 8


async def test_an_upload_that_cannot_be_read_whole_is_refused_and_records_nothing(service, tmp_path):
    shop = await workshop(service, tmp_path)
    good = f"{shop.artisan},{shop.collaborator_id},piring,2024-03-05 10:00"
    cases = {
        "json, not csv": (f'{{"artisan_id": "{shop.artisan}"}}', "application/json", 415, "unsupported-media-type"),
        "latin-1 declared": (f"{HEADER}\n{good}\n", "text/csv; charset=latin-1", 415, "unsupported-media-type"),
        "json sent as csv": (f'{{"artisan_id": "{shop.artisan}"}}', "text/csv", 422, "wrong-header"),
        "no header": (f"{good}\n", "text/csv", 422, "wrong-header"),
        "a column missing": ("artisan_id,collaborator_id,product\nres_siti,col_1,piring\n", "text/csv", 422,
                             "wrong-header"),
        "a column extra": (f"{HEADER},nik\n{good},{NIK}\n", "text/csv", 422, "wrong-header"),
        "a column twice": (f"{HEADER},product\n{good},piring\n", "text/csv", 422, "wrong-header"),
        "empty": ("", "text/csv", 422, "missing-header"),
        "header only": (f"{HEADER}\r\n\r\n", "text/csv", 422, "no-rows"),
        "not utf-8": (f"{HEADER}\n{good}\n".encode() + b"\xff\xfe\n", "text/csv", 422, "not-utf-8"),
        "broken quotes": (f'{HEADER}\n{good}\n"res_siti,"col"x,piring,2024-03-05 10:00\n', "text/csv", 422,
                          "malformed-csv"),
        "too many rows": (HEADER + "\n" + f"{good}\n" * 2_001, "text/csv", 413, "too-many-rows"),
        "over the body limit": (HEADER + "\n" + f"{good}\n" * 20_000, "text/csv", 413, "body-too-large"),
    }
    for name, (body, content_type, status, code) in cases.items():
        response = await upload(service, body, key=f"bad-{name}", content_type=content_type)
        assert (response.status_code, response.json()["code"]) == (status, code), name
        assert response.headers["content-type"] == "application/problem+json", name
        assert NIK not in response.text, name
    # A key is required (without one a retry would record every row again); only staff may upload.
    unkeyed = await upload(service, f"{HEADER}\n{good}\n", key=None)
    assert (unkeyed.status_code, unkeyed.json()["code"]) == (422, "invalid-request")
    assert "Idempotency-Key" in unkeyed.text
    async with client(service.url, None) as anonymous, \
            client(service.url, service.tokens.auditor) as auditor, \
            service.collaborator(shop.collaborator_id) as acme:
        for caller, status in ((anonymous, 401), (auditor, 403), (acme, 403)):
            refused = await caller.post("/piece-batches", content=f"{HEADER}\n{good}\n",
                                        headers={"Content-Type": "text/csv", "Idempotency-Key": "x"})
            assert refused.status_code == status
    assert await pieces_woven(service) == 0


@pytest.mark.parametrize("rows", [2_000])
async def test_the_largest_upload_records_every_row_once(service, tmp_path, rows):
    shop = await workshop(service, tmp_path)
    sheet = HEADER + "\n" + "".join(
        f"{shop.artisan},{shop.collaborator_id},piring,2024-03-{1 + i % 28:02d} {8 + i % 9:02d}:{i % 60:02d}\n"
        for i in range(rows))
    started = time.monotonic()
    async with client(service.url, service.tokens.staff) as staff:
        response = await staff.post("/piece-batches", content=sheet.encode(), timeout=300,
                                    headers={"Content-Type": "text/csv", "Idempotency-Key": "week-10"})
    elapsed = time.monotonic() - started
    answer = response.json()
    assert (answer["rows"], answer["recorded"], answer["refused"]) == (rows, rows, 0), answer["results"][:3]
    assert len({r["piece_id"] for r in answer["results"]}) == rows
    assert await pieces_woven(service) == rows
    print(f"{rows} rows recorded in {elapsed:.1f} s")  # noqa: T201 - the figure docs/http.md quotes
