"""The dead-letter publisher: every record a consumer could not accept, kept with the reason why.

A dead letter is the original record, byte for byte (value, key and headers),
on the `dead-letters` topic, with headers that say machine-readably why it was
refused and where it came from. Nothing a consumer refuses is silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka import AIOKafkaProducer

from shared.contracts import Topic, topic_name
from shared.timeutil import wib_now

REASON_HEADER = "anyam-dead-letter-reason"
DETAIL_HEADER = "anyam-dead-letter-detail"
CONSUMER_HEADER = "anyam-dead-letter-consumer"
SOURCE_TOPIC_HEADER = "anyam-dead-letter-topic"
SOURCE_PARTITION_HEADER = "anyam-dead-letter-partition"
SOURCE_OFFSET_HEADER = "anyam-dead-letter-offset"
TIME_HEADER = "anyam-dead-letter-time"

_OUR_HEADERS = {
    REASON_HEADER, DETAIL_HEADER, CONSUMER_HEADER, SOURCE_TOPIC_HEADER, SOURCE_PARTITION_HEADER,
    SOURCE_OFFSET_HEADER, TIME_HEADER,
}


@dataclass(frozen=True)
class DeadLetter:
    """A refused record as read back from `dead-letters`."""

    reason: str
    detail: str
    consumer: str
    source_topic: str
    source_partition: int
    source_offset: int
    key: bytes | None
    value: bytes | None
    original_headers: tuple[tuple[str, bytes], ...]

    @classmethod
    def from_record(cls, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> DeadLetter:
        """Parse a record of the `dead-letters` topic."""
        ours = {name: raw.decode() for name, raw in headers if name in _OUR_HEADERS}
        return cls(
            reason=ours.get(REASON_HEADER, ""),
            detail=ours.get(DETAIL_HEADER, ""),
            consumer=ours.get(CONSUMER_HEADER, ""),
            source_topic=ours.get(SOURCE_TOPIC_HEADER, ""),
            source_partition=int(ours.get(SOURCE_PARTITION_HEADER, "-1")),
            source_offset=int(ours.get(SOURCE_OFFSET_HEADER, "-1")),
            key=key,
            value=value,
            original_headers=tuple((n, v) for n, v in headers if n not in _OUR_HEADERS),
        )


class DeadLetterPublisher:
    """Writes refused records to `dead-letters`, keyed by their original key."""

    def __init__(self, producer: AIOKafkaProducer, *, topic_prefix: str = "", consumer: str) -> None:
        self._producer = producer
        self._topic = topic_name(Topic.DEAD_LETTERS, topic_prefix)
        self._consumer = consumer

    async def publish(
        self,
        *,
        reason: str,
        detail: str,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | tuple[tuple[str, bytes], ...] = (),
    ) -> None:
        """Publish one dead letter and wait until the broker has it.

        `detail` must name what is wrong without repeating the record's content,
        which may be personal data.
        """
        delivery = await self._producer.send(
            self._topic,
            value=value,
            key=key,
            headers=[
                *headers,
                (REASON_HEADER, reason.encode()),
                (DETAIL_HEADER, detail.encode()[:1000]),
                (CONSUMER_HEADER, self._consumer.encode()),
                (SOURCE_TOPIC_HEADER, topic.encode()),
                (SOURCE_PARTITION_HEADER, str(partition).encode()),
                (SOURCE_OFFSET_HEADER, str(offset).encode()),
                (TIME_HEADER, wib_now().isoformat().encode()),
            ],
        )
        await delivery
