"""Apache Kafka's broker jars from Maven Central, fetched once into a cache folder and reused offline.

`deploy/kafka/pom.xml` pins the version; Maven's dependency plugin copies the broker's runtime
jars into `<cache>/<pom digest>/libs`. A folder that holds a complete copy is used as it is, with
no network and no Maven, so only the first run (or a change of the pom) downloads anything.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from anyam.stack.errors import StackError

#: The pom that pins the broker, in the repository beside the packages.
POM = Path(__file__).resolve().parents[2] / "deploy" / "kafka" / "pom.xml"
#: The oldest Java Apache Kafka 4 brokers run on.
MINIMUM_JAVA = 17
#: Written last into a cache folder: its presence means the jars are complete.
_COMPLETE = "complete"
_JAVA_VERSION = re.compile(r'version "(\d+)(?:\.(\d+))?')


class KafkaUnavailable(StackError):
    """Apache Kafka cannot be run here: no suitable Java, or its jars cannot be fetched."""


@dataclass(frozen=True)
class KafkaDistribution:
    """The jars of one pinned Apache Kafka broker, and the Java that runs them."""

    version: str
    libs: Path
    java: str

    @property
    def classpath(self) -> str:
        """The broker's class path (every jar of `libs`)."""
        return str(self.libs / "*")


def cache_root() -> Path:
    """Where fetched brokers are kept: `$ANYAM_KAFKA_CACHE`, else the user's cache folder."""
    explicit = os.environ.get("ANYAM_KAFKA_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "anyam" / "kafka"


def pinned_version(pom: Path = POM) -> str:
    """The Kafka version the pom pins (`<kafka.version>`)."""
    found = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", _read_pom(pom))
    if not found:
        raise KafkaUnavailable(f"{pom} pins no <kafka.version>")
    return found.group(1).strip()


def java_executable() -> str:
    """The `java` of `$JAVA_HOME`, else of PATH, when it is Java 17 or newer; raises `KafkaUnavailable`."""
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not os.access(java, os.X_OK):
        raise KafkaUnavailable(
            f"Apache Kafka needs Java {MINIMUM_JAVA} or newer, and there is no `java` "
            f"({'JAVA_HOME=' + home if home else 'none on PATH'}); install a JDK (e.g. openjdk-17-jre-headless) "
            "or use --broker tansu"
        )
    major = java_major_version(java)
    if major < MINIMUM_JAVA:
        raise KafkaUnavailable(
            f"Apache Kafka needs Java {MINIMUM_JAVA} or newer, and {java} is Java {major}; "
            "point JAVA_HOME at a newer JDK or use --broker tansu"
        )
    return java


def java_major_version(java: str) -> int:
    """The major version `java -version` reports (1.8 counts as 8)."""
    try:
        shown = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise KafkaUnavailable(f"cannot run {java} -version: {err}") from err
    found = _JAVA_VERSION.search(shown.stderr + shown.stdout)
    if not found:
        raise KafkaUnavailable(f"cannot tell the version of {java}: {shown.stderr.strip()[:200]}")
    major = int(found.group(1))
    return int(found.group(2) or 0) if major == 1 else major


def java_available() -> bool:
    """Whether a Java that runs Apache Kafka is installed (the stack's default broker depends on it)."""
    try:
        java_executable()
    except KafkaUnavailable:
        return False
    return True


def ensure_kafka(pom: Path = POM, *, cache: Path | None = None, quiet: bool = True) -> KafkaDistribution:
    """The pinned broker's jars, fetched with Maven unless the cache already holds them.

    Idempotent; offline once fetched. Raises `KafkaUnavailable` with what is missing.
    """
    java = java_executable()
    text = _read_pom(pom)
    version = pinned_version(pom)
    folder = (cache or cache_root()) / f"{version}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"
    libs = folder / "libs"
    if not (folder / _COMPLETE).exists():
        _fetch(pom, folder, libs, quiet=quiet)
    return KafkaDistribution(version, libs, java)


def _fetch(pom: Path, folder: Path, libs: Path, *, quiet: bool) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaUnavailable(
            f"Apache Kafka's jars are not in {folder.parent} yet, and fetching them needs Maven (`mvn`, "
            "with Maven Central reachable); install Maven or use --broker tansu"
        )
    # A half-written folder from an interrupted fetch is started over.
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    command = [
        mvn, "-B", *(["-q"] if quiet else []), "-f", str(pom),
        "dependency:copy-dependencies", "-DincludeScope=runtime", f"-DoutputDirectory={libs}",
    ]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=quiet, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise KafkaUnavailable(f"fetching Apache Kafka with Maven failed: {err}") from err
    jars = sorted(p.name for p in libs.glob("*.jar")) if libs.is_dir() else []
    if done.returncode != 0 or not any(name.startswith("kafka_2.13-") for name in jars):
        tail = "\n".join(((done.stdout or "") + (done.stderr or "")).strip().splitlines()[-15:])
        raise KafkaUnavailable(f"fetching Apache Kafka with Maven failed (exit {done.returncode})", detail=tail)
    (folder / _COMPLETE).write_text("\n".join(jars) + "\n")


def _read_pom(pom: Path) -> str:
    try:
        return pom.read_text()
    except OSError as err:
        raise KafkaUnavailable(
            f"cannot read {pom} ({err.strerror}): the embedded Apache Kafka is set up from a checkout of the repository"
        ) from err
