"""Erasure that can be proven (issue 26): nothing of her stays in the database files, erasure waits for
her money unless overridden, and a database restored from a backup is erased again from the log."""

from __future__ import annotations

import asyncio
import json
import struct
from pathlib import Path

import asyncpg
import pytest

from anyam.stack.erasures import reapply_erasures
from services.enrollment.app import EnrollmentSettings
from services.enrollment.app import create_app as enrollment_app
from shared.contracts import Envelope, Topic, encode, service_source, topic_name
from shared.contracts.events import PersonalDataErased
from shared.eventstore import wait_until_published
from shared.kafka import start_producer
from shared.timeutil import wib_now
from tests.integration.test_enrollment import NAMES, nik, phone, register
from tests.integration.test_payout import payout_service, piece_events, publish
from tests.kafka_reader import read_topic
from tests.services import TRUST, client, new_personal_data_key, new_tokens, serve, service_settings
from tests.waiting import until


def enrollment_settings(kafka_settings, database_url, tokens, **more) -> EnrollmentSettings:
    return EnrollmentSettings(**service_settings(kafka_settings, database_url, tokens, "enrollment"),
                              personal_data_key=new_personal_data_key(), **more)


@pytest.fixture
async def enrollment(kafka_settings, database_url):
    """Enrollment alone: no payout to ask, so erasing needs the override."""
    tokens = new_tokens()
    async with serve(enrollment_app(enrollment_settings(kafka_settings, database_url, tokens))) as url:
        async with client(url, tokens.staff) as staff:
            yield staff, database_url


async def superuser(database_url: str) -> asyncpg.Connection:
    return await asyncpg.connect(database_url)


async def database_files(conn: asyncpg.Connection) -> bytes:
    """Every byte of this database's files on disk, after a checkpoint wrote out what was in memory."""
    await conn.execute("CHECKPOINT")
    data_directory = Path(await conn.fetchval("SHOW data_directory"))
    oid = await conn.fetchval("SELECT oid FROM pg_database WHERE datname = current_database()")
    return b"".join(path.read_bytes() for path in sorted((data_directory / "base" / str(oid)).iterdir())
                    if path.is_file())


async def vault_rows(conn: asyncpg.Connection, resident_id: str) -> list[bytes]:
    """Her sealed key, sealed data and NIK index, as the vault stores them."""
    row = await conn.fetchrow("""SELECT k.sealed_key, d.sealed_data, d.nik_index FROM person_keys k
                                 JOIN personal_data d USING (resident_id) WHERE resident_id = $1""", resident_id)
    return [bytes(row["sealed_key"]), bytes(row["sealed_data"]), row["nik_index"].encode()]


async def test_after_erasure_nothing_of_her_is_left_in_the_database_files(enrollment):
    staff, database_url = enrollment
    resident, other = await register(staff, 41), await register(staff, 42)
    conn = await superuser(database_url)
    try:
        hers = await vault_rows(conn, resident)
        fingerprint = await conn.fetchval(
            "SELECT fingerprint FROM idempotency_keys WHERE body ->> 'resident_id' = $1", resident)
        files = await database_files(conn)
        # The files do hold her before: the scan below can fail.
        assert all(secret in files for secret in hers)

        erased = await staff.delete(f"/residents/{resident}/personal-data", params={"override_money_owed": "true"})
        assert erased.status_code == 204, erased.text

        files = await database_files(conn)
        for secret in [*hers, nik(41).encode(), NAMES[41 % len(NAMES)].encode(), phone(41).encode()]:
            assert secret not in files
        if fingerprint is not None:
            assert fingerprint.encode() not in files
        assert all(secret in files for secret in await vault_rows(conn, other))  # the others' stay
    finally:
        await conn.close()
    assert (await staff.get(f"/residents/{other}/personal-data")).json()["nik"] == nik(42)


async def test_registrations_that_lost_a_nik_race_leave_nothing_readable_in_the_heap(enrollment):
    staff, database_url = enrollment
    body = {"rusunawa": "Nagrak", "unit": "A-9", "full_name": "Siti Race", "nik": nik(77), "phone": phone(77)}

    answers = await asyncio.gather(*(staff.post("/residents", json=body) for _ in range(20)))

    assert sorted({a.status_code for a in answers}) == [201, 409]
    conn = await superuser(database_url)
    try:
        async def only_live_rows_stored() -> bool:
            # Every tuple with storage in the table's pages, live or dead: a registration that lost the race
            # and rolled back would still lie there, sealed under the master key, until the table is rewritten
            # (in the background, once the refusals are answered).
            return all([await stored_tuples(conn, table) == await conn.fetchval(f"SELECT count(*) FROM {table}")  # noqa: S608
                        for table in ("person_keys", "personal_data")])

        await until(only_live_rows_stored, timeout=30, what="the vault rewritten after the race")
        assert await conn.fetchval("SELECT count(*) FROM personal_data") == 1
    finally:
        await conn.close()


async def stored_tuples(conn: asyncpg.Connection, table: str) -> int:
    """Line pointers in use (LP_NORMAL, with a length) across the table's heap file, read from disk."""
    await conn.execute("CHECKPOINT")
    data_directory = Path(await conn.fetchval("SHOW data_directory"))
    heap = (data_directory / await conn.fetchval("SELECT pg_relation_filepath($1::regclass)", table)).read_bytes()
    count = 0
    for start in range(0, len(heap), PAGE):
        page = heap[start:start + PAGE]
        (pd_lower,) = struct.unpack_from("<H", page, 12)
        for offset in range(24, pd_lower, 4):
            (item,) = struct.unpack_from("<I", page, offset)
            count += (item >> 15) & 3 == 1 and item >> 17 > 0
    return count


PAGE = 8192


async def test_erasure_waits_for_her_money_unless_staff_override_it_and_the_override_is_recorded(
    kafka_settings, database_url, scratch_database
):
    producer = await start_producer(kafka_settings, linger_ms=5)
    tokens = new_tokens()  # one stack's tokens: enrollment asks payout with the auditor's
    try:
        async with payout_service(kafka_settings, await scratch_database(), tokens) as payout_url:
            settings = enrollment_settings(kafka_settings, database_url, tokens, payout_url=payout_url)
            async with serve(enrollment_app(settings)) as url, client(url, tokens.staff) as staff, \
                    client(payout_url, tokens.auditor) as auditor:
                resident, paid_up = await register(staff, 51), await register(staff, 52)
                await publish(producer, kafka_settings, piece_events(resident, 1, 125_000, at=_march()))

                async def owed() -> bool:
                    statement = await auditor.get(f"/artisans/{resident}/statement")
                    return statement.status_code == 200 and statement.json()["balances"]["payable_idr"] == 125_000

                await until(owed, timeout=60, what="payout to credit her piece")
                refused = await staff.delete(f"/residents/{resident}/personal-data")
                assert refused.status_code == 409 and refused.json()["code"] == "money-owed"
                assert (await staff.get(f"/residents/{resident}/personal-data")).status_code == 200

                nothing_owed = await staff.delete(f"/residents/{paid_up}/personal-data")
                assert nothing_owed.status_code == 204
                overridden = await staff.delete(f"/residents/{resident}/personal-data",
                                                params={"override_money_owed": "true"})
                assert overridden.status_code == 204
                assert (await staff.get(f"/residents/{resident}/personal-data")).status_code == 410
                # Her money is untouched: still payable, for staff to pay another way.
                statement = (await auditor.get(f"/artisans/{resident}/statement")).json()
                assert statement["balances"]["payable_idr"] == 125_000
    finally:
        await producer.stop()

    erasures = {e["data"]["resident_id"]: e["data"] for e in await enrollment_events(kafka_settings, database_url)
                if e["type"] == "personal-data-erased"}
    assert erasures[resident] | {"erased_at": None} == {
        "resident_id": resident, "erased_at": None, "money_owed_idr": 125_000, "money_owed_override": True}
    assert erasures[paid_up]["money_owed_idr"] == 0 and erasures[paid_up]["money_owed_override"] is False


async def test_without_payout_to_ask_erasure_is_refused_as_unknown_until_overridden(enrollment):
    staff, _ = enrollment
    resident = await register(staff, 61)

    refused = await staff.delete(f"/residents/{resident}/personal-data")
    assert refused.status_code == 409 and refused.json()["code"] == "money-unknown"
    assert (await staff.get(f"/residents/{resident}/personal-data")).status_code == 200
    assert (await staff.delete(f"/residents/{resident}/personal-data",
                               params={"override_money_owed": "true"})).status_code == 204


async def test_a_restored_backup_is_erased_again_from_the_log(enrollment, kafka_settings):
    staff, database_url = enrollment
    erased_later, kept = await register(staff, 71), await register(staff, 72)
    conn = await superuser(database_url)
    try:
        backup = {table: await conn.fetch(f"SELECT * FROM {table} WHERE resident_id = $1", erased_later)  # noqa: S608
                  for table in ("person_keys", "personal_data")}
        assert (await staff.delete(f"/residents/{erased_later}/personal-data",
                                   params={"override_money_owed": "true"})).status_code == 204
        await published(database_url)
        # The backup, taken before the erasure, is restored: her rows are back and open again.
        async with conn.transaction():
            await conn.execute("DELETE FROM erasures WHERE resident_id = $1", erased_later)
            for table, rows in backup.items():
                for row in rows:
                    columns = list(row.keys())
                    await conn.execute(
                        f"INSERT INTO {table} ({', '.join(columns)}) VALUES "  # noqa: S608
                        f"({', '.join(f'${n + 1}' for n in range(len(columns)))})", *row.values())
        assert (await staff.get(f"/residents/{erased_later}/personal-data")).json()["nik"] == nik(71)
        # Someone able to write the topic forges her neighbour's erasure: enrollment never attested it.
        forged = encode(Envelope.wrap(PersonalDataErased(resident_id=kept, erased_at=wib_now()),
                                      source=service_source("enrollment")))
        producer = await start_producer(kafka_settings)
        try:
            await producer.send_and_wait(topic_name(Topic.ENROLLMENT, kafka_settings.topic_prefix), forged.value,
                                         key=forged.key, headers=list(forged.headers))
        finally:
            await producer.stop()

        done = await reapply_erasures(kafka_settings, TRUST, database_url)

        assert erased_later in done.erased_again and kept not in done.erased_again
        assert (await staff.get(f"/residents/{erased_later}/personal-data")).status_code == 410
        assert (await staff.get(f"/residents/{kept}/personal-data")).json()["nik"] == nik(72)
        files = await database_files(conn)
        assert bytes(backup["person_keys"][0]["sealed_key"]) not in files
        assert bytes(backup["personal_data"][0]["sealed_data"]) not in files
        again = await reapply_erasures(kafka_settings, TRUST, database_url)
        assert again.erased_again == ()  # nothing was back a second time
    finally:
        await conn.close()


async def published(database_url: str) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        await wait_until_published(pool, timeout=60)
    finally:
        await pool.close()


async def enrollment_events(kafka_settings, database_url) -> list[dict]:
    await published(database_url)
    records = await read_topic(kafka_settings.bootstrap_servers, topic_name(Topic.ENROLLMENT,
                                                                            kafka_settings.topic_prefix))
    return [json.loads(r.value) for r in records]


def _march():
    from tests.integration.test_payout import MARCH

    return MARCH
