"""The event store as outbox and its unit of work (on PostgreSQL, or in memory for fast tests), the relay,
transactional consumers and dead letters (asyncpg + aiokafka)."""

from shared.eventstore.consumer import (
    BatchHandler,
    OffsetBeyondEnd,
    Reject,
    TransactionalConsumer,
)
from shared.eventstore.deadletters import DeadLetter, DeadLetterPublisher
from shared.eventstore.memory import InMemoryEventStore, InMemoryUnitOfWork
from shared.eventstore.relay import OutboxRelay
from shared.eventstore.schema import install
from shared.eventstore.store import EventStore, PostgresUnitOfWork
from shared.eventstore.tracking import stored_offsets, wait_until_caught_up, wait_until_published
from shared.eventstore.unit import NO_STREAM, ConcurrencyConflict, StreamHistory, UnitOfWork

__all__ = [
    "NO_STREAM",
    "BatchHandler",
    "ConcurrencyConflict",
    "DeadLetter",
    "DeadLetterPublisher",
    "EventStore",
    "InMemoryEventStore",
    "InMemoryUnitOfWork",
    "OffsetBeyondEnd",
    "OutboxRelay",
    "PostgresUnitOfWork",
    "Reject",
    "StreamHistory",
    "TransactionalConsumer",
    "UnitOfWork",
    "install",
    "stored_offsets",
    "wait_until_caught_up",
    "wait_until_published",
]
