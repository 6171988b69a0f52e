"""`anyam erasures reapply`: after enrollment's database is restored from a backup, erase again every
resident whose personal data was erased since (issue 26).

A backup taken before an erasure holds her sealed rows, which the master key opens. The log keeps
every `personal-data-erased` event for good (ids only), so the topic says whom to erase again: this
reads it from the beginning to its end of now, deletes what the restored vault holds of each of them
and rewrites the vault's tables, as an erasure does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import asyncpg

from anyam.audit.replay import history_consumer
from services.enrollment.personal_data import erase_rows, scrub
from shared.contracts import Topic, provenance, topic_name
from shared.contracts.codec import DecodeError, decode
from shared.contracts.events import PersonalDataErased
from shared.contracts.provenance import TrustAnchors
from shared.kafka import KafkaSettings, partitions_of


@dataclass(frozen=True)
class Reapplied:
    """What `reapply_erasures` did: residents the log says were erased, and those whose rows were back."""

    erased_in_log: int
    erased_again: tuple[str, ...]


async def erased_residents(kafka: KafkaSettings, trust: TrustAnchors) -> list[str]:
    """Every resident the enrollment topic records as erased, in the order they were, once each.
    Only erasures enrollment attested count: a forged one must not delete anyone's data."""
    topic = topic_name(Topic.ENROLLMENT, kafka.topic_prefix)
    consumer = history_consumer(kafka)
    await consumer.start()
    try:
        partitions = await partitions_of(consumer, [topic])
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await consumer.seek_to_beginning(*partitions)
        erased: dict[str, None] = {}
        remaining = {tp for tp in partitions if ends[tp] > 0}
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, records in batches.items():
                for record in records:
                    if record.offset < ends[tp]:
                        _note(erased, record.value, record.headers, trust)
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        return list(erased)
    finally:
        await consumer.stop()


def _note(erased: dict[str, None], value: bytes | None, headers: Sequence[tuple[str, bytes | None]],
          trust: TrustAnchors) -> None:
    try:
        event = decode(value, topic=Topic.ENROLLMENT)
        if isinstance(event.data, PersonalDataErased):
            assert value is not None  # decoded, so there was one
            provenance.check(Topic.ENROLLMENT, value, headers, event, trust)
            erased.setdefault(event.data.resident_id)
    except DecodeError:
        return  # unreadable or unattested: it erased nobody (the auditor's `verify` names it)


async def reapply_erasures(kafka: KafkaSettings, trust: TrustAnchors, enrollment_database_url: str) -> Reapplied:
    """Erase again, in enrollment's database, everyone the log says was erased; then scrub the vault."""
    residents = await erased_residents(kafka, trust)
    pool = await asyncpg.create_pool(enrollment_database_url, min_size=1, max_size=2)
    try:
        again: list[str] = []
        async with pool.acquire() as conn, conn.transaction():
            for resident_id in residents:
                if await erase_rows(conn, resident_id):
                    again.append(resident_id)
        await scrub(pool)
    finally:
        await pool.close()
    return Reapplied(erased_in_log=len(residents), erased_again=tuple(again))


def enrollment_database_url(env: Mapping[str, str]) -> str:
    """Enrollment's database as the stack file names it."""
    return env["ANYAM_ENROLLMENT_DATABASE_URL"]
