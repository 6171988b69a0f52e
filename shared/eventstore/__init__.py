"""The event store as outbox, the relay, transactional consumers and dead letters (asyncpg + aiokafka)."""

from shared.eventstore.consumer import (
    BatchHandler,
    OffsetBeyondEnd,
    Reject,
    TransactionalConsumer,
)
from shared.eventstore.deadletters import DeadLetter, DeadLetterPublisher
from shared.eventstore.relay import OutboxRelay
from shared.eventstore.schema import install
from shared.eventstore.store import (
    NO_STREAM,
    ConcurrencyConflict,
    EventStore,
    HeldAppends,
    StreamHistory,
    appends_held_to_commit,
    held_appends,
)
from shared.eventstore.tracking import stored_offsets, wait_until_caught_up, wait_until_published

__all__ = [
    "NO_STREAM",
    "BatchHandler",
    "ConcurrencyConflict",
    "DeadLetter",
    "DeadLetterPublisher",
    "EventStore",
    "HeldAppends",
    "OffsetBeyondEnd",
    "OutboxRelay",
    "Reject",
    "StreamHistory",
    "TransactionalConsumer",
    "appends_held_to_commit",
    "held_appends",
    "install",
    "stored_offsets",
    "wait_until_caught_up",
    "wait_until_published",
]
