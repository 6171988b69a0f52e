"""Reading `dead-letters` and re-driving dead letters to their original topic, exactly once in effect.

Re-driving republishes the original record (value, key and headers as they were, plus
`anyam-redriven-from`) to the topic it was read from, so that once the cause is fixed (a key
registered, a new code version, trust anchors corrected) the consumer applies it. What makes it
safe to run again and again (docs/operations.md#dead-letters):

- Every consumer records the id of every event it decoded in `consumed_events` before its handler
  runs, refused or not (shared/eventstore/consumer.py), so a copy of a refused event would be
  skipped as a duplicate. Re-driving therefore removes that one row, of the consumer that refused
  the event and only it, in the same transaction as it records the re-drive in
  `dead_letter_redrives`, in that consumer's service database; every other consumer of the topic
  keeps its row and skips the copy.
- A dead letter recorded as re-driven is never re-opened: a second `redrive` finds it recorded and,
  once the copy was consumed (the row is back), changes nothing. If the copy was not consumed yet
  (the consumer lags, or the command stopped before publishing), it is published once more: the
  consumer applies the first copy it meets and skips any other.
- All the dead letters of one event from one topic (several consumers may each have refused it) are
  re-driven together by one copy, since every consumer of the topic reads it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import asyncpg
from aiokafka import TopicPartition

from anyam.deadletters.records import Entry, entry_from_record, redrive_headers, redrive_refusal
from services.payout.dashboard.projection import dashboard_consumer
from services.payout.messaging import ledger_consumer
from services.production.messaging import QC_CONSUMER
from services.production.projections import TRAINING_CONSUMER
from shared.contracts import Topic, topic_name
from shared.kafka import partitions_of, start_producer
from shared.settings import KafkaSettings

#: Where re-drives are recorded: in the database of the service whose consumer refused the record,
#: beside that consumer's `consumed_events`, so both change in one transaction.
REDRIVES_DDL = """
CREATE TABLE IF NOT EXISTS dead_letter_redrives (
    dead_letter  text        PRIMARY KEY,  -- '<dead-letters topic>:<partition>:<offset>'
    consumer     text        NOT NULL,
    event_id     text        NOT NULL,
    redriven_at  timestamptz NOT NULL DEFAULT now()
)
"""


def stack_consumers(prefix: str) -> dict[str, str]:
    """Each consumer the services run, under the deployment's prefix, with the service that runs it."""
    return {TRAINING_CONSUMER: "production", QC_CONSUMER: "production",
            ledger_consumer(prefix): "payout", dashboard_consumer(prefix): "payout"}


async def read_dead_letters(kafka: KafkaSettings) -> list[Entry]:
    """Every record on `dead-letters` up to its end as of now, by partition and offset."""
    from anyam.audit.replay import history_consumer

    topic = topic_name(Topic.DEAD_LETTERS, kafka.topic_prefix)
    consumer = history_consumer(kafka)
    await consumer.start()
    try:
        partitions = await partitions_of(consumer, [topic])
        if not partitions:
            return []
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await consumer.seek_to_beginning(*partitions)
        entries: list[Entry] = []
        remaining: set[TopicPartition] = {tp for tp in partitions if ends[tp] > 0}
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, records in batches.items():
                entries += [entry_from_record(tp.partition, r.offset, r.timestamp, r.key, r.value, r.headers)
                            for r in records if r.offset < ends[tp]]
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        return sorted(entries, key=lambda entry: entry.position)
    finally:
        await consumer.stop()


@dataclass
class Redriven:
    """What `redrive` did for one event: the dead letters it covers and what became of them."""

    event_id: str | None
    positions: list[str]
    #: `redriven` (published now), `published-again` (re-driven before, not consumed yet), `already`
    #: (re-driven before and consumed: nothing done) or `not-redrivable`.
    outcome: str
    message: str
    topic: str | None = None
    consumers: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {"event_id": self.event_id, "dead_letters": self.positions, "outcome": self.outcome,
                "topic": self.topic, "consumers": self.consumers, "message": self.message}


async def redrive(kafka: KafkaSettings, database_urls: Mapping[str, str], entries: Sequence[Entry],
                  selected: Iterable[Entry]) -> list[Redriven]:
    """Re-drive `selected` (dead letters among `entries`, all of `dead-letters` as read): one outcome per
    event, in the order they were selected. Signs in to Kafka as `kafka` says; writes the services'
    databases at `database_urls` (service name -> URL)."""
    prefix = kafka.topic_prefix
    consumers = stack_consumers(prefix)
    dead_letters_topic = topic_name(Topic.DEAD_LETTERS, prefix)
    results: list[Redriven] = []
    groups: dict[tuple[str, str], list[Entry]] = {}
    chosen: dict[tuple[str, str], Entry] = {}
    for entry in selected:
        refusal = redrive_refusal(entry, prefix=prefix, consumers=consumers)
        if refusal is not None:
            results.append(Redriven(entry.event_id, [str(entry.position)], "not-redrivable",
                                    f"{entry.position} cannot be re-driven: {refusal}"))
            continue
        assert entry.event_id is not None  # re-drivable, so it has one
        group = (entry.source_topic, entry.event_id)
        if group in chosen:
            continue
        chosen[group] = entry
        groups[group] = [other for other in entries if (other.source_topic, other.event_id) == group
                         and redrive_refusal(other, prefix=prefix, consumers=consumers) is None]
    if not groups:
        return results
    connections: dict[str, asyncpg.Connection] = {}
    producer = await start_producer(kafka)
    try:
        for service in sorted({consumers[e.consumer] for group in groups.values() for e in group}):
            if service not in database_urls:
                raise KeyError(f"no database URL for the {service} service")
            connections[service] = await asyncpg.connect(database_urls[service])
            await connections[service].execute(REDRIVES_DDL)
        for group, members in groups.items():
            results.append(await _redrive_event(producer, connections, consumers, dead_letters_topic,
                                                chosen[group], members))
    finally:
        await producer.stop()
        for conn in connections.values():
            await conn.close()
    return results


async def _redrive_event(producer, connections: Mapping[str, asyncpg.Connection], consumers: Mapping[str, str],
                         dead_letters_topic: str, entry: Entry, members: list[Entry]) -> Redriven:
    event_id = entry.event_id
    assert event_id is not None
    topic = entry.source_topic
    by_service: dict[str, list[Entry]] = {}
    for member in members:
        by_service.setdefault(consumers[member.consumer], []).append(member)
    recorded: set[str] = set()
    for service, group in by_service.items():
        rows = await connections[service].fetch(
            "SELECT dead_letter FROM dead_letter_redrives WHERE dead_letter = ANY($1::text[])",
            [_key(dead_letters_topic, member) for member in group])
        recorded |= {row["dead_letter"] for row in rows}
    pending = [member for member in members if _key(dead_letters_topic, member) not in recorded]
    refusers = sorted({member.consumer for member in members})
    result = Redriven(event_id, [str(member.position) for member in members], "", "", topic, refusers)
    if pending:
        for service, group in by_service.items():
            waiting = [member for member in group if member in pending]
            if not waiting:
                continue
            conn = connections[service]
            async with conn.transaction():
                await conn.executemany(
                    "INSERT INTO dead_letter_redrives (dead_letter, consumer, event_id) VALUES ($1, $2, $3) "
                    "ON CONFLICT DO NOTHING",
                    [(_key(dead_letters_topic, member), member.consumer, event_id) for member in waiting])
                await conn.execute("DELETE FROM consumed_events WHERE consumer = ANY($1::text[]) AND event_id = $2",
                                   sorted({member.consumer for member in waiting}), event_id)
        await _publish(producer, dead_letters_topic, entry)
        result.outcome = "redriven"
        result.message = (f"event {event_id} re-driven to {topic} (from {', '.join(result.positions)}): "
                          f"{', '.join(refusers)} will apply it once")
        return result
    unconsumed: list[str] = []
    for service, group in by_service.items():
        names = sorted({member.consumer for member in group})
        rows = await connections[service].fetch(
            "SELECT consumer FROM consumed_events WHERE consumer = ANY($1::text[]) AND event_id = $2", names, event_id)
        unconsumed += sorted(set(names) - {row["consumer"] for row in rows})
    if unconsumed:
        await _publish(producer, dead_letters_topic, entry)
        result.outcome = "published-again"
        result.message = (f"event {event_id} was re-driven before but {', '.join(unconsumed)} has not consumed it "
                          f"yet: published to {topic} once more (a consumer applies the first copy, skips others)")
        return result
    result.outcome = "already"
    result.message = (f"event {event_id} was re-driven before and {', '.join(refusers)} consumed it: "
                      "nothing to do (a refusal since would be a new dead letter)")
    return result


async def _publish(producer, dead_letters_topic: str, entry: Entry) -> None:
    await producer.send_and_wait(entry.source_topic, value=entry.value, key=entry.key,
                                 headers=redrive_headers(entry, dead_letters_topic))


def _key(dead_letters_topic: str, entry: Entry) -> str:
    return f"{dead_letters_topic}:{entry.position}"
