"""The event store on PostgreSQL: append-only streams with optimistic concurrency, the outbox of the relay,
and the unit of work the services' handlers run in (`PostgresUnitOfWork`)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence

import asyncpg

from shared.contracts import Envelope, decode, encode
from shared.eventstore.unit import NO_STREAM, ConcurrencyConflict, StreamHistory, merge_appends


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


class EventStore:
    """Appends events to streams and loads them back, in one service's own database.

    Handlers work inside a unit of work (`unit`, or the one their entry point opened); the store's
    own `append` and `load` are for everything outside one: applications, tools and tests.
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def append(self, stream_id: str, expected_version: int, events: Sequence[Envelope]) -> int:
        """Append `events` after version `expected_version`, in a transaction of their own; returns the
        stream's new version. Raises `ConcurrencyConflict` when the stream is not at `expected_version`."""
        async with self._pool.acquire() as conn:
            return await _append(conn, stream_id, expected_version, events)

    async def load(self, stream_id: str) -> StreamHistory:
        """Every committed event of `stream_id` in version order (an empty history when there is no stream)."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT version, payload, topic FROM event_store WHERE stream_id = $1 ORDER BY version", stream_id)
        return history(stream_id, rows)

    @contextlib.asynccontextmanager
    async def unit(self) -> AsyncIterator[PostgresUnitOfWork]:
        """A unit of work in a transaction of its own, its appends written at the end (`PostgresUnitOfWork`)."""
        async with self._pool.acquire() as conn, conn.transaction():
            unit = PostgresUnitOfWork(conn)
            yield unit
            await unit.flush()


def history(stream_id: str, rows: Sequence[asyncpg.Record]) -> StreamHistory:
    """A stream's history from its rows in version order (none: the stream does not exist)."""
    return StreamHistory(stream_id=stream_id, version=rows[-1]["version"] if rows else NO_STREAM,
                         events=tuple(decode(row["payload"]) for row in rows))


class PostgresUnitOfWork:
    """A unit of work on one of the services' databases: `connection`'s transaction (or, with
    `one_statement`, the one statement its entry point writes at the end).

    Appends are held back to the end: the entry point writes them last (`flush`), or hands them to
    its own statement (`take`). An append takes the global append lock (`schema.APPEND_LOCK_KEY`),
    which every other writer waits for until this transaction ends; appended as the handler runs,
    the lock would be held through whatever follows (storing the command's answer, the consumer's
    offsets) and each round trip's wait for this process's busy event loop. Held to the end, it is
    held for one round trip and the commit, or, written in one statement, for that statement alone.
    Reading the store first appends what is held, so a handler still reads its own appends.
    """

    def __init__(self, connection: asyncpg.Connection, *, one_statement: bool = False,
                 may_remember: bool = True) -> None:
        self._connection = connection
        #: The unit writes nothing but its appends (and its answer), all in one statement at the
        #: end (`take`), outside any transaction until then; nothing can be flushed before that.
        self.one_statement = one_statement
        #: Whether a unit written in one statement may decide on states remembered from earlier
        #: commands (`shared.handling.RememberedStates`); not when it is decided again after a
        #: conflict or a refusal: then every state it reads is read afresh.
        self.may_remember = may_remember
        #: Whether it did: a refusal decided on a remembered state is decided again on fresh ones,
        #: since a refusal commits nothing that would check the state was still current.
        self.remembered = False
        self._appends: list[tuple[str, int, Sequence[Envelope]]] = []
        self._reads: dict[str, int] = {}

    @property
    def connection(self) -> asyncpg.Connection:
        return self._connection

    @property
    def pending(self) -> int:
        """How many appends are held, not yet written."""
        return len(self._appends)

    def append(self, stream_id: str, expected_version: int, events: Sequence[Envelope]) -> int:
        if not (self.one_statement or self._connection.is_in_transaction()):
            raise RuntimeError("a unit of work appends only inside its transaction (or as one statement)")
        self._appends.append((stream_id, expected_version, events))
        return expected_version + len(events)

    def append_streams(self, appends: Mapping[str, tuple[int, Sequence[Envelope]]]) -> None:
        for stream_id, (expected_version, events) in appends.items():
            if events:
                self.append(stream_id, expected_version, events)

    def read_at(self, stream_id: str, version: int) -> None:
        """The unit decided on `stream_id` as it was at `version`: its statement commits only if the
        stream is still there (checked under the append lock, like an append's expected version),
        else it is undone as a concurrency conflict and decided again. Only for one statement."""
        if not self.one_statement:
            raise RuntimeError("only a unit written in one statement checks the streams it read")
        self._reads.setdefault(stream_id, version)  # read twice: the first read is what it decided on

    async def flush(self) -> None:
        """Write everything held, in one round trip (raises `ConcurrencyConflict`, appending nothing,
        when a stream is not at its expected version). The entry point's last write before COMMIT."""
        if self.one_statement:
            raise RuntimeError("a unit written in one statement cannot read back its own appends")
        held = self.take()
        arguments = append_streams_arguments(held)
        if not arguments[3]:
            return
        conflicts = await self._connection.fetchval(
            "SELECT event_store_append_streams($1, $2, $3, $4, $5, $6, $7, $8)", *arguments)
        if conflicts:
            raise await conflict(self._connection, conflicts[0], held[conflicts[0]][0])

    def take(self) -> dict[str, tuple[int, list[Envelope]]]:
        """Everything held, for the caller to write itself (`append_streams_arguments`):
        `{stream_id: (expected_version, events)}`, each stream's events in the order appended,
        streams in the order of their first append; then each stream only read (`read_at`), with
        no events, so that its version is checked too."""
        appends, self._appends = self._appends, []
        reads, self._reads = self._reads, {}
        taken = merge_appends(appends)
        for stream_id, version in reads.items():
            if stream_id not in taken:
                taken[stream_id] = (version, [])
            elif taken[stream_id][0] != version:
                raise RuntimeError(f"{stream_id!r} was read at version {version} but appended to at another")
        return taken

    async def load(self, stream_id: str, *, lock: bool = False) -> StreamHistory:
        query = "SELECT version, payload, topic FROM event_store WHERE stream_id = $1 ORDER BY version"
        if lock:
            self._check_can_lock()
            query = "SELECT version, payload, topic FROM event_store_load_locked($1)"
        await self._before_reading()
        return history(stream_id, await self._connection.fetch(query, stream_id))

    async def load_streams(self, stream_ids: Iterable[str], *, lock: bool = False) -> dict[str, StreamHistory]:
        wanted = sorted(set(stream_ids))
        if lock:
            self._check_can_lock()
            query = "SELECT stream_id, version, payload FROM event_store_load_locked_streams($1)"
        else:
            query = """SELECT stream_id, version, payload FROM event_store WHERE stream_id = ANY($1)
                       ORDER BY stream_id, version"""
        await self._before_reading()
        rows = await self._connection.fetch(query, wanted) if wanted else []
        found: dict[str, list[asyncpg.Record]] = {}
        for row in rows:
            found.setdefault(row["stream_id"], []).append(row)
        return {stream_id: history(stream_id, found.get(stream_id, [])) for stream_id in wanted}

    async def lock_stream(self, stream_id: str) -> None:
        # Optimistic concurrency alone stays correct under contention, but 40 requests racing for
        # one cohort would mostly lose and retry; waiting in line is kinder.
        self._check_can_lock()
        await self._before_reading()
        await self._connection.execute("SELECT event_store_lock_stream($1)", stream_id)

    @contextlib.asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        # Appends written inside the block (a read flushes them) are rolled back with it, so what
        # was held before it is held again; what it appended itself is dropped.
        appends, reads = list(self._appends), dict(self._reads)
        try:
            async with self._connection.transaction():
                yield
        except BaseException:
            self._appends, self._reads = appends, reads
            raise

    def _check_can_lock(self) -> None:
        if not self._connection.is_in_transaction():
            raise RuntimeError("a stream's lock is held by a transaction: this unit has none")

    async def _before_reading(self) -> None:
        if self._appends:
            await self.flush()
