"""The collaborator clients of clients/ (docs/collaborators.md) against the live services and broker.

Both the Java client (kafka-clients, the JDK's Ed25519, erdtman's RFC 8785) and the TypeScript one
(kafkajs, node:crypto, `canonicalize`) are built here from the repository as a collaborator would build
them, then run as processes with the credentials file `onboard_collaborator` writes (the SASL user of the
collaborator: it may write `qc-submissions` and nothing else) and a key of their own. Each submits over
Kafka and over HTTP; passed pieces show up as earnings on the artisan's statement, a failed one as its
result, and a submission with one byte changed after signing is refused as `bad-signature` on both
ways in: dead-lettered from the topic, a 422 problem over HTTP, and listed in the collaborator's
rejections.

Java 17+ with Maven, and Node.js 20+ with npm, must be installed (CI has them): without them the tests
fail rather than skip, since a skipped client proves nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from anyam.stack import stackfile as keys
from anyam.stack.principals import COLLABORATOR_TOKEN, onboard_collaborator, write_credentials
from services.production.messaging import QC_CONSUMER
from shared.contracts import Topic, topic_name
from shared.contracts.acls import ADMIN
from shared.contracts.signing import generate_private_key, private_key_pem, public_key_b64
from shared.eventstore.deadletters import DeadLetter
from tests.integration.test_audit import Programme, programme  # noqa: F401 - the fixture
from tests.kafka_reader import read_topic
from tests.unit.test_collaborators_doc import example as worked_example
from tests.waiting import until

#: The first build on a new machine fetches the clients' dependencies (Maven Central, npm) within a test.
pytestmark = pytest.mark.timeout(900)

ROOT = Path(__file__).resolve().parents[2]
JAVA_DIR = ROOT / "clients" / "java"
TS_DIR = ROOT / "clients" / "typescript"
RATE_IDR = 12_500
WOVEN = "2024-03-25T09:00:00+07:00"
INSPECTED = "2024-03-26T10:00:00+07:00"


# --- building the clients (as a collaborator would; cached between runs) -------------------------------


def _tool(name: str, why: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"`{name}` must be on PATH: {why}", pytrace=False)
    return found


def _run(command: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def java_client() -> list[str]:
    """The command that runs clients/java, built with Maven: offline from the local repository that
    `anyam fetch-kafka` fills, online only the first time (or after the pom changed)."""
    why = "tests/integration/test_clients.py builds and runs the Java collaborator client (clients/java)."
    mvn, java = _tool("mvn", why + " Install Maven."), _tool("java", why + " Install a JDK 17+.")
    build = [mvn, "-B", "-q", "package"]
    done = _run([*build, "-o"], JAVA_DIR, 600)
    if done.returncode != 0:  # something is not in the local repository yet: fetch it once
        done = _run(build, JAVA_DIR, 900)
    if done.returncode != 0:
        pytest.fail(f"mvn package in clients/java failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}",
                    pytrace=False)
    classpath = os.pathsep.join([str(JAVA_DIR / "target" / "classes"), str(JAVA_DIR / "target" / "lib" / "*")])
    return [java, "-cp", classpath, "org.anyam.collaborator.QcClient"]


@pytest.fixture(scope="session")
def ts_client() -> list[str]:
    """The command that runs clients/typescript: its locked dependencies (`npm ci`, again only when the lock
    changed) and `tsc`."""
    why = "tests/integration/test_clients.py builds and runs the TypeScript collaborator client."
    node, npm = _tool("node", why + " Install Node.js 20+."), _tool("npm", why + " Install npm.")
    version = _run([node, "--version"], TS_DIR, 30).stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < 20:
        pytest.fail(f"clients/typescript needs Node.js 20 or later; found {version}.", pytrace=False)
    lock, installed = TS_DIR / "package-lock.json", TS_DIR / "node_modules" / ".package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        done = _run([npm, "ci", "--prefer-offline", "--no-audit", "--no-fund"], TS_DIR, 600)
        if done.returncode != 0:
            pytest.fail(f"npm ci in clients/typescript failed:\n{done.stdout}\n{done.stderr}", pytrace=False)
    done = _run([npm, "run", "--silent", "build"], TS_DIR, 300)
    if done.returncode != 0:
        pytest.fail(f"tsc in clients/typescript failed:\n{done.stdout}\n{done.stderr}", pytrace=False)
    return [node, str(TS_DIR / "dist" / "qc-client.js")]


@dataclass(frozen=True)
class Ran:
    code: int
    out: dict[str, Any] | None
    stderr: str


async def run_client(command: list[str], *args: str, data: dict[str, Any], timeout: float = 120) -> Ran:
    """Run a client with `data` on stdin, without blocking the loop the services run in."""
    process = await asyncio.create_subprocess_exec(
        *command, *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(json.dumps(data).encode()), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    lines = stdout.decode().strip().splitlines()
    return Ran(process.returncode, json.loads(lines[-1]) if lines else None, stderr.decode())


# --- the same bytes as the guide ---------------------------------------------------------------------


@pytest.mark.parametrize("client", ["java_client", "ts_client"])
async def test_each_client_signs_the_guides_worked_example_to_the_guides_signature(client, request, tmp_path):
    example = worked_example()
    key = tmp_path / "rfc8032-test.key"
    key.write_text(example["private-key-pem"] + "\n")
    data = json.loads(example["data"])

    ran = await run_client(request.getfixturevalue(client), "sign", "--key", str(key), data=data)

    assert ran.code == 0, ran.stderr
    assert ran.out == {**data, "signature": example["signature"]}


# --- over Kafka and HTTP, against the live services ----------------------------------------------------


@dataclass
class Collaborator:
    collaborator_id: str
    key_file: Path
    credentials: Path
    token: str


async def onboarded_collaborator(stack: Programme, tmp_path: Path) -> Collaborator:
    """A collaborator registered with a key of its own, a rate for piring, and its credentials file."""
    key = generate_private_key()
    key_file = tmp_path / "collaborator.key"
    key_file.write_bytes(private_key_pem(key))
    key_file.chmod(0o600)
    staff = {"Authorization": f"Bearer {stack.tokens.staff}"}
    async with httpx.AsyncClient(base_url=stack.production_url, headers=staff, timeout=30) as production:
        registered = await production.post("/collaborators", json={
            "name": "PT Contoh Kriya", "public_key": public_key_b64(key), "valid_from": "2024-03-01T00:00:00+07:00"})
        assert registered.status_code == 201, registered.text
        collaborator_id = registered.json()["collaborator_id"]
        rate = await production.post(f"/collaborators/{collaborator_id}/rates", json={
            "product": "piring", "rate_idr": RATE_IDR, "effective_from": "2024-03-01T00:00:00+07:00"})
        assert rate.status_code == 201, rate.text
    # What `anyam collaborator onboard` does on a running stack: a SASL user allowed to write
    # qc-submissions only, and one file with the bootstrap, user, password, HTTP token and URL.
    folder = tmp_path / "credentials"
    folder.mkdir(mode=0o700)
    write_credentials(folder, ADMIN, keys.kafka_environment(stack.kafka))
    onboarded = await onboard_collaborator({keys.CREDENTIALS: str(folder), keys.TOKEN_SECRET: stack.tokens.secret,
                                            "ANYAM_PRODUCTION_URL": stack.production_url}, collaborator_id)
    given = keys.read_stack_env(onboarded.path)
    if stack.kafka.kafka_security_protocol.startswith("SASL"):
        assert given[keys.KAFKA_SASL_USERNAME] == onboarded.principal != stack.kafka.kafka_sasl_username
    return Collaborator(collaborator_id, key_file, onboarded.path, given[COLLABORATOR_TOKEN])


async def weave(stack: Programme, artisan_id: str, collaborator_id: str) -> str:
    async with httpx.AsyncClient(base_url=stack.production_url, timeout=30,
                                 headers={"Authorization": f"Bearer {stack.tokens.staff}"}) as production:
        woven = await production.post("/pieces", json={"artisan_id": artisan_id, "collaborator_id": collaborator_id,
                                                       "product": "piring", "woven_at": WOVEN})
    assert woven.status_code == 201 and woven.json()["rate_idr"] == RATE_IDR, woven.text
    return woven.json()["piece_id"]


def result(collaborator_id: str, piece_id: str, verdict: str = "passed") -> dict[str, Any]:
    """A QC result as the new contract (dataversion 2) has it: the inspector and defects are codes."""
    return {"submission_id": f"sub-{uuid.uuid4().hex[:12]}", "piece_id": piece_id, "collaborator_id": collaborator_id,
            "result": verdict, "inspector": "insp-07", "inspected_at": INSPECTED,
            "defects": [] if verdict == "passed" else ["loose-weave"]}


def tampered(signed: dict[str, Any]) -> dict[str, Any]:
    """`signed` with one byte of its data changed after signing (insp-07 → insp-08)."""
    assert signed["inspector"] == "insp-07"
    return {**signed, "inspector": "insp-08"}


async def statement(stack: Programme, artisan_id: str) -> dict[str, Any] | None:
    async with stack.live() as payout:
        response = await payout.get(f"/artisans/{artisan_id}/statement")
    return response.json() if response.status_code == 200 else None


async def test_both_clients_submit_over_kafka_and_http_and_a_tampered_submission_is_refused_as_bad_signature(
        programme, java_client, ts_client, tmp_path):  # noqa: F811
    collaborator = await onboarded_collaborator(programme, tmp_path)
    artisan = programme.demo.artisans[0].resident_id
    creds = ["--credentials", str(collaborator.credentials)]
    signing = ["--key", str(collaborator.key_file)]
    clients = {"java": java_client, "typescript": ts_client}

    passed: dict[str, str] = {}  # piece_id -> which client and way
    failed: dict[str, str] = {}
    kafka_forgeries: dict[tuple[str, int, int], str] = {}  # (topic, partition, offset) -> submission_id
    http_forgeries: list[str] = []
    forged_pieces: set[str] = set()
    for name, client in clients.items():
        for way in ("kafka", "http"):
            piece = await weave(programme, artisan, collaborator.collaborator_id)
            ran = await run_client(client, way, *signing, *creds, data=result(collaborator.collaborator_id, piece))
            assert ran.code == 0, f"{name} over {way}: {ran.out} {ran.stderr}"
            passed[piece] = f"{name} over {way}"
            if way == "http":
                assert ran.out["status"] == 201 and ran.out["response"]["event"] == "qc-passed", ran.out
                assert ran.out["response"]["amount_idr"] == RATE_IDR
            else:
                assert ran.out["topic"] == topic_name(Topic.QC_SUBMISSIONS, programme.kafka.topic_prefix), ran.out

            # The same client signs; one byte of the data is changed afterwards; the client sends it as signed.
            piece = await weave(programme, artisan, collaborator.collaborator_id)
            forged_pieces.add(piece)
            signed = await run_client(client, "sign", *signing, data=result(collaborator.collaborator_id, piece))
            assert signed.code == 0, signed.stderr
            forged = tampered(signed.out)
            ran = await run_client(client, way, "--as-signed", *creds, data=forged)
            if way == "http":
                assert ran.code == 1, f"{name}: {ran.out} {ran.stderr}"
                assert ran.out["status"] == 422 and ran.out["response"]["code"] == "bad-signature", ran.out
                http_forgeries.append(forged["submission_id"])
            else:
                assert ran.code == 0, f"{name}: {ran.out} {ran.stderr}"  # the broker takes it; production refuses
                kafka_forgeries[(ran.out["topic"], ran.out["partition"], ran.out["offset"])] = forged["submission_id"]

        # A failed result, with its defect code, over the other way for each client.
        piece = await weave(programme, artisan, collaborator.collaborator_id)
        way = "kafka" if name == "java" else "http"
        ran = await run_client(client, way, *signing, *creds,
                               data=result(collaborator.collaborator_id, piece, "failed"))
        assert ran.code == 0, f"{name} over {way}: {ran.out} {ran.stderr}"
        failed[piece] = f"{name} over {way}"

    # Every passed piece is earned once, at its rate, on the artisan's statement.
    async def all_earned() -> bool:
        found = await statement(programme, artisan)
        earned = {e["piece_id"]: e["amount_idr"] for e in (found or {"entries": []})["entries"]
                  if e.get("piece_id") in passed or e.get("piece_id") in failed}
        return earned == {piece: RATE_IDR for piece in passed}
    await until(all_earned, timeout=90, what=f"the statement showing earnings for {sorted(passed.values())}")

    # The failed pieces carry their result and defect, and earn nothing.
    async with httpx.AsyncClient(base_url=programme.production_url, timeout=30,
                                 headers={"Authorization": f"Bearer {programme.tokens.auditor}"}) as production:
        for piece, how in failed.items():
            async def judged(piece: str = piece) -> bool:
                return (await production.get(f"/pieces/{piece}")).json().get("qc") is not None
            await until(judged, timeout=60, what=f"the failed result sent by {how}")
            qc = (await production.get(f"/pieces/{piece}")).json()["qc"]
            assert (qc["event"], qc["defects"]) == ("qc-failed", ["loose-weave"]), how

    # The tampered Kafka submissions are dead-lettered by production's consumer, as bad-signature.
    dead_letters = topic_name(Topic.DEAD_LETTERS, programme.kafka.topic_prefix)

    async def forgeries_dead_lettered() -> bool:
        letters = [DeadLetter.from_record(r.key, r.value, r.headers) for r in await read_topic(programme.kafka,
                                                                                                 dead_letters)]
        found = {(d.source_topic, d.source_partition, d.source_offset): d.reason for d in letters
                 if d.consumer == QC_CONSUMER}
        return all(found.get(where) == "bad-signature" for where in kafka_forgeries)
    await until(forgeries_dead_lettered, timeout=60, what="the tampered Kafka submissions in dead-letters")

    # ... and the collaborator reads every refusal back, with its reason, using its own token.
    async with httpx.AsyncClient(base_url=programme.production_url, timeout=30,
                                 headers={"Authorization": f"Bearer {collaborator.token}"}) as production:
        answer = await production.get(f"/collaborators/{collaborator.collaborator_id}/rejections")
    assert answer.status_code == 200, answer.text
    refused = {r["submission_id"]: (r["reason"], r["channel"]) for r in answer.json()["rejections"]}
    assert refused == {**{s: ("bad-signature", "kafka") for s in kafka_forgeries.values()},
                       **{s: ("bad-signature", "http") for s in http_forgeries}}
    # Nothing tampered was earned.
    entries = (await statement(programme, artisan))["entries"]
    assert not {e.get("piece_id") for e in entries} & forged_pieces
