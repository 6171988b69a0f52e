"""PostgreSQL connection pools for the services and tools."""

from __future__ import annotations

import asyncpg
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Failures of the database server itself, not of one statement: wait and retry, never blame the input.
#: Class 57 covers a server shutting down or restarting under us (admin/crash shutdown, "cannot
#: connect now" while it starts), which is what a restart of PostgreSQL looks like to a live connection.
DATABASE_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    # A connection whose server went away mid-statement can be left mid-operation; its next use then
    # fails with "another operation is in progress" (seen once when PostgreSQL restarted under load).
    asyncpg.InternalClientError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
)


class DatabaseSettings(BaseSettings):
    """Where a service's own database is (`ANYAM_DATABASE_URL`); each service has its own."""

    model_config = SettingsConfigDict(env_prefix="ANYAM_", extra="ignore")

    database_url: str = Field(description="asyncpg/libpq URL of this service's own database.")
    database_pool_size: int = Field(default=10, ge=1, description="Most connections one process opens.")


async def create_pool(url: str, *, max_size: int = 10, min_size: int = 1) -> asyncpg.Pool:
    """A connection pool on `url`; connections that break are replaced on next use."""
    return await asyncpg.create_pool(url, min_size=min_size, max_size=max_size, command_timeout=60,
                                     reset=keep_session)


async def keep_session(_connection: asyncpg.Connection) -> None:
    """What a pooled connection needs on release beyond asyncpg's own rollback: nothing.

    asyncpg's default reset sends `pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`
    on every release: a round trip as dear as the work of a short command (such as
    `EventStore.append`, which is one round trip itself). Pooled connections here keep no session state: locks are
    transaction-scoped (`pg_advisory_xact_lock`), cursors live inside transactions, nothing is
    `SET` for the session. The one exception, the relay leader's session lock and `LISTEN`,
    ends by closing its connection (`OutboxRelay`). An open transaction is still rolled back by
    asyncpg before this runs.
    """


def normalised(expression: str) -> str:
    """SQL for a label (a rusunawa's name) as `shared.contracts.events.same_label` compares it: spacing
    and letter case aside."""
    return f"lower(regexp_replace(btrim({expression}), '\\s+', ' ', 'g'))"
