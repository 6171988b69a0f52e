"""The personal-data vault: names, NIKs, phones and payout accounts, encrypted per person.

Each resident's data is sealed with AES-256-GCM under a key of their own; that
key is itself sealed under the service's master key (`ANYAM_PERSONAL_DATA_KEY`).
Erasure deletes the resident's sealed key and data, and her stored answers to
idempotent requests, and then *scrubs* the vault: `VACUUM FULL` rewrites its
tables into new files, so no deleted row (nor one of a registration that was
rolled back) stays readable in the database's files, where the master key, which
the service keeps, would open it. The events only ever held the opaque
resident_id and stay intact. What this does not reach (WAL, backups) docs/operations.md says.

A blind index (HMAC of the NIK under a key derived from the master key) finds a
NIK registered twice without storing the NIK itself; it is erased with the rest.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
from dataclasses import asdict, dataclass

import asyncpg
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

log = logging.getLogger(__name__)

DDL = """
CREATE TABLE IF NOT EXISTS person_keys (
    resident_id  text  PRIMARY KEY,
    sealed_key   bytea NOT NULL
);
CREATE TABLE IF NOT EXISTS personal_data (
    resident_id  text  PRIMARY KEY,
    nik_index    text  NOT NULL UNIQUE,
    sealed_data  bytea NOT NULL
);
CREATE TABLE IF NOT EXISTS erasures (
    resident_id  text        PRIMARY KEY,
    erased_at    timestamptz NOT NULL DEFAULT now()
);
"""


@dataclass(frozen=True)
class PersonalData:
    """What enrollment knows about a person beyond the opaque resident_id."""

    full_name: str
    nik: str
    unit: str
    phone: str | None = None
    payout_account: str | None = None


class PersonalDataVault:
    """Seals, opens and shreds residents' personal data in the enrollment database."""

    def __init__(self, master_key: bytes) -> None:
        if len(master_key) != 32:
            raise ValueError("the personal-data master key must be 32 bytes (base64 of 32 random bytes)")
        self._master = AESGCM(master_key)
        self._index_key = hashlib.sha256(b"anyam-nik-index:" + master_key).digest()
        self._request_key = hashlib.sha256(b"anyam-request-digest:" + master_key).digest()
        self._scrub_pending = False
        self._scrubbing: asyncio.Task[None] | None = None

    @staticmethod
    def master_key_from_setting(value: str) -> bytes:
        """Decode the `ANYAM_PERSONAL_DATA_KEY` setting (base64 of 32 bytes)."""
        return base64.b64decode(value, validate=True)

    def nik_index(self, nik: str) -> str:
        """A keyed digest of `nik`: equal NIKs match, and the NIK cannot be read back from it."""
        return hmac.new(self._index_key, nik.encode(), hashlib.sha256).hexdigest()

    def request_digest(self, payload: object) -> str:
        """A keyed digest of a request holding personal data, for its idempotency fingerprint: an
        unkeyed hash of a registration would confirm a guess of who she is, even after erasure."""
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hmac.new(self._request_key, canonical.encode(), hashlib.sha256).hexdigest()

    async def owner_of_nik(self, conn: asyncpg.Connection, nik: str) -> str | None:
        """The resident already registered with `nik`, if any."""
        return await conn.fetchval("SELECT resident_id FROM personal_data WHERE nik_index = $1", self.nik_index(nik))

    async def store(self, conn: asyncpg.Connection, resident_id: str, data: PersonalData) -> None:
        """Seal `data` under a fresh key of this resident's own."""
        person_key = AESGCM.generate_key(bit_length=256)
        await conn.execute(
            "INSERT INTO person_keys (resident_id, sealed_key) VALUES ($1, $2)",
            resident_id, _seal(self._master, person_key, resident_id),
        )
        plaintext = json.dumps(asdict(data), ensure_ascii=False).encode()
        await conn.execute(
            "INSERT INTO personal_data (resident_id, nik_index, sealed_data) VALUES ($1, $2, $3)",
            resident_id, self.nik_index(data.nik), _seal(AESGCM(person_key), plaintext, resident_id),
        )

    async def read(self, conn: asyncpg.Connection, resident_id: str) -> PersonalData | None:
        """The resident's data, or None when there is none or it was erased."""
        row = await conn.fetchrow(
            """SELECT k.sealed_key, d.sealed_data FROM person_keys k
               JOIN personal_data d USING (resident_id) WHERE resident_id = $1""",
            resident_id,
        )
        if row is None:
            return None
        person_key = _open(self._master, row["sealed_key"], resident_id)
        return PersonalData(**json.loads(_open(AESGCM(person_key), row["sealed_data"], resident_id)))

    async def erase(self, conn: asyncpg.Connection, resident_id: str) -> bool:
        """Delete the resident's key, sealed data and stored answers; False if there was nothing to erase.
        Deleted rows stay in the heap until `scrub` runs, after the transaction commits."""
        return await erase_rows(conn, resident_id)

    async def scrub(self, pool: asyncpg.Pool) -> None:
        """Rewrite the vault's tables so that nothing deleted or rolled back stays in the database files."""
        try:
            await scrub(pool)
        except Exception:
            self.scrub_soon(pool)  # the caller hears of the failure; the rewrite is still owed
            raise

    def scrub_soon(self, pool: asyncpg.Pool) -> None:
        """`scrub` in the background: one at a time, once for however many ask while one runs, and
        retried until it succeeds. For a registration that failed: its caller has its answer already,
        and a flood of failures must not become a flood of table rewrites."""
        self._scrub_pending = True
        if self._scrubbing is None or self._scrubbing.done():
            self._scrubbing = asyncio.get_running_loop().create_task(self._scrub_while_pending(pool))

    async def _scrub_while_pending(self, pool: asyncpg.Pool) -> None:
        delay = 1.0
        while self._scrub_pending:
            self._scrub_pending = False
            try:
                await scrub(pool)
                delay = 1.0
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("the personal-data vault could not be scrubbed (%s); retrying in %.0f s",
                            type(exc).__name__, delay)
                self._scrub_pending = True
                await asyncio.sleep(delay)  # the database is away: back off, as the consumers do
                delay = min(2 * delay, 60.0)

    async def was_erased(self, conn: asyncpg.Connection, resident_id: str) -> bool:
        """Whether this resident's personal data was erased."""
        return bool(await conn.fetchval("SELECT true FROM erasures WHERE resident_id = $1", resident_id))


async def erase_rows(conn: asyncpg.Connection, resident_id: str) -> bool:
    """Delete what the vault holds of `resident_id` (no key needed: `anyam erasures reapply` runs it)."""
    deleted_key = await conn.execute("DELETE FROM person_keys WHERE resident_id = $1", resident_id)
    await conn.execute("DELETE FROM personal_data WHERE resident_id = $1", resident_id)
    # Her registration's stored answer names her; its fingerprint is a keyed digest of her data.
    await conn.execute("DELETE FROM idempotency_keys WHERE body ->> 'resident_id' = $1", resident_id)
    await conn.execute("INSERT INTO erasures (resident_id) VALUES ($1) ON CONFLICT DO NOTHING", resident_id)
    return deleted_key != "DELETE 0"


async def scrub(pool: asyncpg.Pool) -> None:
    """`VACUUM FULL` of the vault's tables and the stored answers: each is written anew, without its dead
    rows, and the old files are truncated at once. Plain VACUUM only marks a dead row's space free,
    leaving its bytes in the page. A few milliseconds for a programme's residents; registrations wait."""
    async with pool.acquire() as conn:
        await conn.execute("VACUUM (FULL) person_keys, personal_data, idempotency_keys")


def _seal(cipher: AESGCM, plaintext: bytes, resident_id: str) -> bytes:
    # The resident_id is bound as associated data: a sealed blob copied to another row won't open.
    nonce = os.urandom(12)
    return nonce + cipher.encrypt(nonce, plaintext, resident_id.encode())


def _open(cipher: AESGCM, sealed: bytes, resident_id: str) -> bytes:
    return cipher.decrypt(sealed[:12], sealed[12:], resident_id.encode())


async def install(pool: asyncpg.Pool) -> None:
    """Create the vault's tables if they are missing, and scrub them: a process that died in the middle
    of a registration left its rows dead in the heap."""
    async with pool.acquire() as conn:
        await conn.execute(DDL)
        await conn.execute("VACUUM (FULL) person_keys, personal_data")
