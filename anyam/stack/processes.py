"""Small process and port helpers shared by the broker, PostgreSQL and the stack lifecycle."""

from __future__ import annotations

import errno
import os
import signal
import socket
import time
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

import psutil

from anyam.stack.errors import StackError

#: How often deadline-bounded waits re-check their condition.
POLL_INTERVAL = 0.05


def private_log(path: Path, *, append: bool = True) -> BinaryIO:
    """A log file of the stack's opened for writing, readable by its owner only (0600), even one that
    existed before: a process's log may name ids, addresses and what went wrong."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    descriptor = os.open(path, flags, 0o600)
    os.fchmod(descriptor, 0o600)
    return os.fdopen(descriptor, "ab" if append else "wb")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    """Whether another socket is bound to `host:port`, so a listener could not take it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR like the broker's own listener does, so connections lingering
        # in TIME_WAIT from an earlier run do not count as "in use".
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            if err.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def is_alive(pid: int | None, *, started_before: float | None = None) -> bool:
    """Whether process `pid` runs (zombies count as dead).

    With `started_before` (a UNIX time), a process created later is a stranger
    that happens to reuse the pid, and counts as dead too.
    """
    if not pid:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        # One second of slack: create_time has clock-tick resolution.
        return started_before is None or proc.create_time() <= started_before + 1.0
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def wait_gone(pids: Iterable[int], timeout: float) -> list[int]:
    """Wait until none of `pids` is alive or `timeout` passes; return those still alive."""
    remaining = [pid for pid in pids if pid]
    deadline = time.monotonic() + timeout
    while True:
        remaining = [pid for pid in remaining if is_alive(pid)]
        if not remaining or time.monotonic() >= deadline:
            return remaining
        time.sleep(POLL_INTERVAL)


def send_signal(pid: int, sig: signal.Signals) -> bool:
    """Send `sig` to `pid`; False when the process is already gone."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def terminate(pid: int, timeout: float = 10.0) -> None:
    """Stop `pid`: SIGTERM, and SIGKILL if it is still alive after `timeout` seconds.

    Returns once the process is gone (or unkillable, which only a zombie or a
    process in uninterruptible sleep would be).
    """
    if not is_alive(pid):
        return
    # A SIGSTOPped process would keep SIGTERM pending forever.
    send_signal(pid, signal.SIGCONT)
    send_signal(pid, signal.SIGTERM)
    if wait_gone([pid], timeout):
        send_signal(pid, signal.SIGKILL)
        wait_gone([pid], 5.0)


def terminate_all(pids: Iterable[int], timeout: float = 10.0) -> None:
    """`terminate` several processes at once: SIGTERM to all, SIGKILL to those alive after `timeout`.

    For the nodes of a cluster: stopped one after another, the last ones would wait for a quorum
    that has already gone.
    """
    alive = [pid for pid in pids if is_alive(pid)]
    for pid in alive:
        send_signal(pid, signal.SIGCONT)
        send_signal(pid, signal.SIGTERM)
    for pid in wait_gone(alive, timeout):
        send_signal(pid, signal.SIGKILL)
    wait_gone(alive, 5.0)


def pause_or_resume(pid: int, *, pause: bool, what: str, timeout: float = 5.0) -> None:
    """SIGSTOP (`pause`) or SIGCONT `pid` and return once it is stopped (or running) again.

    Signal delivery is asynchronous; callers expect the outage to have begun (or ended). Raises
    `StackError` naming `what` when the process does not get there within `timeout` seconds.
    """
    sig = signal.SIGSTOP if pause else signal.SIGCONT
    send_signal(pid, sig)
    deadline = time.monotonic() + timeout
    proc = psutil.Process(pid)
    while (proc.status() == psutil.STATUS_STOPPED) != pause:
        if time.monotonic() > deadline:
            raise StackError(f"{what} did not {'stop' if pause else 'continue'} on {sig.name}")
        time.sleep(0.005)
