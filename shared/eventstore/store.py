"""The event store: append-only streams with optimistic concurrency, and the outbox of the relay."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field

import asyncpg

from shared.contracts import Envelope, decode, encode

NO_STREAM = 0
"""`expected_version` for a stream that must not exist yet."""


class ConcurrencyConflict(Exception):
    """The stream moved on since it was loaded: reload, decide again, retry."""

    def __init__(self, stream_id: str, expected: int, actual: int) -> None:
        super().__init__(f"stream {stream_id!r} is at version {actual}, not the expected {expected}")
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual


@dataclass(frozen=True)
class StreamHistory:
    """A stream's events in version order; `version` is the number of events (0: no stream)."""

    stream_id: str
    version: int
    events: tuple[Envelope, ...]


def append_streams_arguments(appends: Mapping[str, tuple[int, Sequence[Envelope]]]) -> list[list]:
    """The arguments of `event_store_append_streams` (schema) for `{stream_id: (expected_version, events)}`."""
    rows = [(stream_id, event, encode(event)) for stream_id, (_, events) in appends.items() for event in events]
    return [
        list(appends), [expected for expected, _ in appends.values()],
        [stream_id for stream_id, _, _ in rows], [event.id for _, event, _ in rows],
        [event.type for _, event, _ in rows], [record.topic.value for _, _, record in rows],
        [record.key.decode() for _, _, record in rows], [record.value for _, _, record in rows],
    ]


async def conflict(connection: asyncpg.Connection, stream_id: str, expected_version: int) -> ConcurrencyConflict:
    """The conflict of an append to `stream_id` that expected `expected_version`, with the version it found."""
    actual = await connection.fetchval(
        "SELECT coalesce(max(version), 0) FROM event_store WHERE stream_id = $1", stream_id)
    return ConcurrencyConflict(stream_id, expected_version, actual)


async def _append(conn: asyncpg.Connection, stream_id: str, expected_version: int, events: Sequence[Envelope]) -> int:
    # Encoded before the append lock is taken, not while it is held: the event columns of
    # `append_streams_arguments`, for this one stream.
    _, _, _, *event_columns = append_streams_arguments({stream_id: (expected_version, events)})
    # One round trip (`event_store_append` in the schema): the lock, the version check, the rows
    # and the notification. Without a caller's transaction it is a transaction of its own.
    actual = await conn.fetchval(
        "SELECT event_store_append($1, $2, $3, $4, $5, $6, $7)", stream_id, expected_version, *event_columns)
    if actual != expected_version:
        raise ConcurrencyConflict(stream_id, expected_version, actual)
    return expected_version + len(events)


async def _flush_held(connection: asyncpg.Connection) -> None:
    """Before reading the store on `connection`: append what it holds back, so the read sees it."""
    held = held_appends(connection)
    if held is not None and held.pending:
        await held.flush()


@dataclass
class HeldAppends:
    """A command's appends, held back to the end of its transaction (`appends_held_to_commit`).

    An append takes the global append lock (`schema.APPEND_LOCK_KEY`), which every other
    writer waits for until this transaction ends. Appended as the action runs, the lock
    would also be held through whatever the transaction does after it (storing the
    command's answer for its idempotency key) and each round trip's wait for this
    process's busy event loop. Held to the end, it is held for one round trip and the commit,
    or, for a command written in one statement (`one_statement`), for that statement alone.
    """

    connection: asyncpg.Connection
    #: The command writes nothing but its appends (and its answer), all in one statement at the
    #: end (`take`), outside any transaction until then; nothing can be flushed before that.
    one_statement: bool = False
    #: Whether a command written in one statement may decide on states remembered from earlier
    #: commands (`shared.handling.RememberedStates`); not when it is decided again after a
    #: conflict or a refusal: then every state it reads is read afresh.
    may_remember: bool = True
    #: Whether it did: a refusal decided on a remembered state is decided again on fresh ones,
    #: since a refusal commits nothing that would check the state was still current.
    remembered: bool = False
    _appends: list[tuple[str, int, Sequence[Envelope]]] = field(default_factory=list)
    _reads: dict[str, int] = field(default_factory=dict)

    @property
    def pending(self) -> int:
        """How many appends are held, not yet flushed."""
        return len(self._appends)

    def read_at(self, stream_id: str, version: int) -> None:
        """The command decided on `stream_id` as it was at `version`: its statement commits only if
        the stream is still there (checked under the append lock, like an append's expected version),
        else it is undone as a concurrency conflict and decided again. Only for one statement."""
        if not self.one_statement:
            raise RuntimeError("only a command written in one statement checks the streams it read")
        self._reads.setdefault(stream_id, version)  # read twice: the first read is what it decided on

    def hold(self, stream_id: str, expected_version: int, events: Sequence[Envelope]) -> int:
        self._appends.append((stream_id, expected_version, events))
        return expected_version + len(events)

    async def flush(self) -> None:
        """Append everything held, in the order it was appended (raises `ConcurrencyConflict`)."""
        if self.one_statement:
            raise RuntimeError("a command written in one statement cannot read back its own appends")
        appends, self._appends = self._appends, []
        for stream_id, expected_version, events in appends:
            await _append(self.connection, stream_id, expected_version, events)

    def take(self) -> dict[str, tuple[int, list[Envelope]]]:
        """Everything held, for the caller to write itself (`append_streams_arguments`):
        `{stream_id: (expected_version, events)}`, each stream's events in the order appended,
        streams in the order of their first append; then each stream only read (`read_at`), with
        no events, so that its version is checked too."""
        appends, self._appends = self._appends, []
        reads, self._reads = self._reads, {}
        taken: dict[str, tuple[int, list[Envelope]]] = {}
        for stream_id, expected_version, events in appends:
            if stream_id in taken:
                first_expected, earlier = taken[stream_id]
                if expected_version != first_expected + len(earlier):
                    raise RuntimeError(f"appends to {stream_id!r} do not follow on from each other")
                earlier.extend(events)
            else:
                taken[stream_id] = (expected_version, list(events))
        for stream_id, version in reads.items():
            if stream_id not in taken:
                taken[stream_id] = (version, [])
            elif taken[stream_id][0] != version:
                raise RuntimeError(f"{stream_id!r} was read at version {version} but appended to at another")
        return taken


_HELD: ContextVar[HeldAppends | None] = ContextVar("anyam_held_appends", default=None)


def held_appends(connection: asyncpg.Connection) -> HeldAppends | None:
    """What the command running on `connection` holds back (`appends_held_to_commit`), if one is."""
    held = _HELD.get()
    return held if held is not None and held.connection is connection else None


@contextlib.contextmanager
def appends_held_to_commit(
    connection: asyncpg.Connection, *, one_statement: bool = False, may_remember: bool = True
) -> Iterator[HeldAppends]:
    """Within this block, `EventStore.append(connection=connection)` is held back until `flush()`,
    which the caller runs last before committing (or `take()`, with `one_statement`). Reading
    the store on that connection flushes first, so a command still reads its own appends.
    Leaving by an exception drops what is held (its transaction is rolling back); leaving
    normally with appends never written is a bug that would lose them, so it raises instead."""
    held = HeldAppends(connection, one_statement, may_remember)
    token = _HELD.set(held)
    try:
        yield held
        if held.pending:
            raise RuntimeError(f"{held.pending} held appends were never flushed (or taken) before the end")
    finally:
        _HELD.reset(token)


class EventStore:
    """Appends events to streams and loads them back, in one service's own database.

    Command handlers pass the connection of their transaction to every call and
    need no pool; without a `connection`, a call uses the store's own pool.
    """

    def __init__(self, pool: asyncpg.Pool | None = None) -> None:
        self._pool = pool

    def _own_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("this EventStore has no pool: pass the connection of your transaction")
        return self._pool

    async def append(
        self,
        stream_id: str,
        expected_version: int,
        events: Sequence[Envelope],
        *,
        connection: asyncpg.Connection | None = None,
    ) -> int:
        """Append `events` after version `expected_version`; returns the stream's new version.

        Raises `ConcurrencyConflict` when the stream is not at `expected_version`.
        With `connection`, the append joins the caller's open transaction, so the
        caller's other writes (idempotency records, read models) commit with it;
        the caller should append last, because the append lock is held until commit
        (inside `appends_held_to_commit`, the append waits for the caller's `flush()`).
        """
        if connection is not None:
            held = held_appends(connection)
            if not ((held is not None and held.one_statement) or connection.is_in_transaction()):
                raise RuntimeError("append(connection=...) needs a connection inside a transaction")
            if held is not None:
                return held.hold(stream_id, expected_version, events)
            return await _append(connection, stream_id, expected_version, events)
        async with self._own_pool().acquire() as conn:
            return await _append(conn, stream_id, expected_version, events)

    async def append_streams(
        self, appends: Mapping[str, tuple[int, Sequence[Envelope]]], *, connection: asyncpg.Connection
    ) -> None:
        """Append to several streams at once, in the caller's transaction: `{stream_id: (expected_version, events)}`.

        All or nothing: raises `ConcurrencyConflict` (naming the first stream not at its expected
        version) and appends none when any stream moved on. Positions follow the mapping's order.
        One round trip, however many streams: for consumers that decide a whole batch together.
        """
        if not connection.is_in_transaction():
            raise RuntimeError("append_streams needs a connection inside a transaction")
        await _flush_held(connection)
        arguments = append_streams_arguments(appends)
        if not arguments[3]:
            return
        conflicts = await connection.fetchval(
            "SELECT event_store_append_streams($1, $2, $3, $4, $5, $6, $7, $8)", *arguments)
        if conflicts:
            raise await conflict(connection, conflicts[0], appends[conflicts[0]][0])

    @staticmethod
    async def lock_stream(connection: asyncpg.Connection, stream_id: str) -> None:
        """Serialise deciders on `stream_id` until the connection's transaction ends.

        Optimistic concurrency alone stays correct under contention, but 40 requests
        racing for one cohort would mostly lose and retry; waiting in line is kinder.
        (The two-key advisory lock space is disjoint from the append lock's one-key space.)
        """
        await _flush_held(connection)
        await connection.execute("SELECT event_store_lock_stream($1)", stream_id)

    async def load(
        self, stream_id: str, *, connection: asyncpg.Connection | None = None, lock: bool = False
    ) -> StreamHistory:
        """Every event of `stream_id` in version order (an empty history when the stream does not exist).

        With `lock`, first takes the stream's lock (`lock_stream`) in the same round trip; it needs
        the `connection` of a transaction, which holds the lock until it ends.
        """
        query = "SELECT version, payload, topic FROM event_store WHERE stream_id = $1 ORDER BY version"
        if lock:
            if connection is None or not connection.is_in_transaction():
                raise RuntimeError("load(lock=True) needs the connection of a transaction")
            query = "SELECT version, payload, topic FROM event_store_load_locked($1)"
        if connection is not None:
            await _flush_held(connection)
            rows = await connection.fetch(query, stream_id)
        else:
            async with self._own_pool().acquire() as conn:
                rows = await conn.fetch(query, stream_id)
        return _history(stream_id, rows)

    async def load_streams(
        self, stream_ids: Iterable[str], *, connection: asyncpg.Connection, lock: bool = False
    ) -> dict[str, StreamHistory]:
        """Every one of `stream_ids`' histories (empty for a stream that does not exist), in one round trip.

        With `lock`, first takes every stream's lock (`lock_stream`), in an order that cannot
        deadlock against another transaction locking some of the same streams.
        """
        wanted = sorted(set(stream_ids))
        if lock:
            if not connection.is_in_transaction():
                raise RuntimeError("load_streams(lock=True) needs the connection of a transaction")
            query = "SELECT stream_id, version, payload FROM event_store_load_locked_streams($1)"
        else:
            query = """SELECT stream_id, version, payload FROM event_store WHERE stream_id = ANY($1)
                       ORDER BY stream_id, version"""
        await _flush_held(connection)
        rows = await connection.fetch(query, wanted) if wanted else []
        found: dict[str, list[asyncpg.Record]] = {}
        for row in rows:
            found.setdefault(row["stream_id"], []).append(row)
        return {stream_id: _history(stream_id, found.get(stream_id, [])) for stream_id in wanted}


def _history(stream_id: str, rows: Sequence[asyncpg.Record]) -> StreamHistory:
    """A stream's history from its rows in version order (none: the stream does not exist)."""
    return StreamHistory(stream_id=stream_id, version=rows[-1]["version"] if rows else NO_STREAM,
                         events=tuple(decode(row["payload"]) for row in rows))
