"""The registry of Anyam's services as the embedded stack sees them.

Each service gets its own database now. A service that has a `launcher` is
also started by `anyam up` (and stopped by `anyam down`); adding one is a
matter of setting the launcher here, nothing else in the stack changes.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from anyam.stack import stackfile
from shared.contracts.provenance import TrustAnchors, new_service_keys, signing_key_text


@dataclass(frozen=True)
class LaunchedService:
    """A service process a launcher started: where it answers and what to stop."""

    url: str
    pid: int


#: Starts a service against the stack: gets its spec, the stack's environment
#: so far (see `service_environment`) and the work directory for its log;
#: returns once the service answers.
Launcher = Callable[["ServiceSpec", Mapping[str, str], Path], Awaitable[LaunchedService]]


@dataclass(frozen=True)
class ServiceSpec:
    """One service: its name, and how to launch it (None while it has no process yet)."""

    name: str
    launcher: Launcher | None = None

    @property
    def database(self) -> str:
        """The service's own database on the stack's PostgreSQL."""
        return f"anyam_{self.name}"

    @property
    def database_url_key(self) -> str:
        """The stack-file key with the URL of the service's database."""
        return f"ANYAM_{self.name.upper()}_DATABASE_URL"

    @property
    def url_key(self) -> str:
        """The stack-file key with the service's HTTP base URL (SPEC §8)."""
        return f"ANYAM_{self.name.upper()}_URL"

    @property
    def pid_key(self) -> str:
        """The stack-file key with the pid of the service process `anyam up` started."""
        return f"ANYAM_STACK_{self.name.upper()}_PID"


def service_is_built(name: str) -> bool:
    """Whether `services/<name>` has an entry point yet (services join the stack as they are built)."""
    return importlib.util.find_spec(f"services.{name}.__main__") is not None


async def _launch_process(spec: ServiceSpec, stack_env: Mapping[str, str], workdir: Path) -> LaunchedService:
    from anyam.stack.launch import launch_service_process  # launch imports this module

    return await launch_service_process(spec, stack_env, workdir)


SERVICES: tuple[ServiceSpec, ...] = tuple(
    ServiceSpec(name, launcher=_launch_process if service_is_built(name) else None)
    for name in ("enrollment", "production", "payout")
)

#: Settings only one service may see: the personal-data master key stays with enrollment.
PRIVATE_SETTINGS = {"ANYAM_PERSONAL_DATA_KEY": "enrollment"}


def signing_key_path(workdir: Path, service: str) -> Path:
    """Where the stack keeps a service's private signing key: readable by its owner only, never in the
    stack file (which auditors read); the stack file carries the public halves (`ANYAM_TRUST_ANCHORS`)."""
    return workdir / "keys" / f"{service}.key"


def write_signing_keys(workdir: Path) -> str:
    """A new signing key per service, each written to its `signing_key_path`; returns the trust anchors."""
    keys = new_service_keys()
    for service, key in keys.items():
        path = signing_key_path(workdir, service)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(signing_key_text(key) + "\n")
    return TrustAnchors.of(keys).setting()


def service_environment(spec: ServiceSpec, stack_env: Mapping[str, str]) -> dict[str, str]:
    """The `ANYAM_*` environment a service process of the stack runs with.

    Every service reads its own database from `ANYAM_DATABASE_URL`; the stack
    file keeps one per service under `ANYAM_<NAME>_DATABASE_URL`. It signs in to
    the broker as its own principal (SPEC §11), from its file in the stack's
    credentials folder, never with the stack file's (the auditor's) credentials.
    """
    env = {
        key: value for key, value in stack_env.items()
        if not key.startswith("ANYAM_STACK_") and PRIVATE_SETTINGS.get(key, spec.name) == spec.name
    }
    env["ANYAM_DATABASE_URL"] = stack_env[spec.database_url_key]
    if stackfile.CREDENTIALS in stack_env:
        own = stackfile.read_stack_env(stackfile.credentials_file(stack_env[stackfile.CREDENTIALS], spec.name))
        for key in stackfile.KAFKA_SECURITY_KEYS:
            env.pop(key, None)
        env.update(own)
    return env
