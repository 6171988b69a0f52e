"""`anyam erasures reapply`: after enrollment's database is restored from a backup, erase again every
resident whose personal data was erased since (issue 26).

A backup taken before an erasure holds her sealed rows, which the master key opens. The log keeps
every `personal-data-erased` event for good (ids only), so the topic says whom to erase again: this
reads it from the beginning to its end of now, deletes what the restored vault holds of each of them
and rewrites the vault's tables, as an erasure does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import asyncpg
from aiokafka import AIOKafkaConsumer

from services.enrollment.personal_data import erase_rows, scrub
from shared.contracts import Topic, topic_name
from shared.contracts.codec import DecodeError, decode
from shared.contracts.events import PersonalDataErased
from shared.kafka import KafkaSettings, partitions_of


@dataclass(frozen=True)
class Reapplied:
    """What `reapply_erasures` did: residents the log says were erased, and those whose rows were back."""

    erased_in_log: int
    erased_again: tuple[str, ...]


async def erased_residents(kafka: KafkaSettings) -> list[str]:
    """Every resident the enrollment topic records as erased, in the order they were, once each."""
    topic = topic_name(Topic.ENROLLMENT, kafka.topic_prefix)
    consumer = AIOKafkaConsumer(**kafka.client_options(), group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest")
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
                        _note(erased, record.value)
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        return list(erased)
    finally:
        await consumer.stop()


def _note(erased: dict[str, None], value: bytes | None) -> None:
    try:
        event = decode(value, topic=Topic.ENROLLMENT)
    except DecodeError:
        return  # what cannot be read erased nobody; the consumers dead-lettered it
    if isinstance(event.data, PersonalDataErased):
        erased.setdefault(event.data.resident_id)


async def reapply_erasures(kafka: KafkaSettings, enrollment_database_url: str) -> Reapplied:
    """Erase again, in enrollment's database, everyone the log says was erased; then scrub the vault."""
    residents = await erased_residents(kafka)
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
