"""`anyam dead-letters list | show | redrive` on a running stack (`anyam up`'s whole path: Apache Kafka with
SASL and ACLs, the services under their own principals, PostgreSQL), as an operator runs them.

The story: a collaborator signs a QC result with a key it has not registered yet; production refuses it
(`bad-signature`) and dead-letters it. The operator sees it, staff register the key, the operator
re-drives it: the artisan earns the piece's rate exactly once, and a second re-drive changes nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from anyam.demo.scenario import COHORT_ENDS, COHORT_STARTS, RUSUNAWA, SKILL, nagrak
from anyam.stack import stackfile as keys
from anyam.stack.kafka_dist import java_available
from anyam.stack.lifecycle import RunningStack, start_stack
from shared.contracts import CONTENT_TYPE, Topic, topic_name
from shared.contracts.acls import ADMIN
from shared.contracts.codec import CONTENT_TYPE_HEADER
from shared.contracts.signing import public_key_b64, signed, submission_event
from shared.kafka import end_offsets, start_producer
from shared.web.access import collaborator_token
from tests.waiting import until

REPO = Path(__file__).resolve().parents[2]
PREFIX = "dl-"
RATE = 35_000

pytestmark = pytest.mark.timeout(600)


def anyam(*args: str, workdir: Path) -> subprocess.CompletedProcess[str]:
    # The session's broker and sign-in must not reach the command: it reads the stack's files.
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ANYAM_KAFKA_", "ANYAM_TOPIC_PREFIX"))}
    return subprocess.run([sys.executable, "-m", "anyam.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=180, env={**base, "COLUMNS": "250", "NO_COLOR": "1", "ANYAM_WORKDIR": str(workdir)})


def listed(workdir: Path, *filters: str) -> list[dict]:
    result = anyam("dead-letters", "list", "--json", *filters, workdir=workdir)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
async def stack() -> AsyncIterator[RunningStack]:
    if not java_available():
        pytest.fail("the broker's ACLs need Apache Kafka, so Java 17+: install a JDK (the tests never skip them)")
    running = await start_stack(Path(tempfile.mkdtemp(prefix="anyam-dl-")) / ".anyam", engine="kafka",
                                brokers=int(os.environ.get("ANYAM_STACK_BROKERS", "1")), topic_prefix=PREFIX)
    try:
        yield running
    finally:
        await asyncio.to_thread(running.stop)


def client(env: dict[str, str], service: str, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=env[f"ANYAM_{service.upper()}_URL"], timeout=30,
                             headers={"Authorization": f"Bearer {token}"})


async def post(http: httpx.AsyncClient, path: str, body: dict) -> dict:
    response = await http.post(path, json=body, headers={"Idempotency-Key": uuid.uuid4().hex})
    assert response.status_code in (200, 201), f"{path}: {response.status_code} {response.text}"
    return response.json()


async def trained_artisan(env: dict[str, str]) -> str:
    person = nagrak(11, 1).participants[0]
    async with client(env, "enrollment", env[keys.STAFF_TOKEN]) as enrollment:
        resident = await post(enrollment, "/residents", {
            "rusunawa": RUSUNAWA, "unit": person.unit, "full_name": person.full_name, "nik": person.nik,
            "phone": person.phone, "payout_account": person.payout_account})
        await enrollment.post("/rusunawa", json={"name": RUSUNAWA, "ovop_product": "piring"})
        cohort = await post(enrollment, "/cohorts", {
            "rusunawa": RUSUNAWA, "skill": SKILL, "product_focus": "piring", "starts_on": COHORT_STARTS.isoformat(),
            "ends_on": COHORT_ENDS.isoformat(), "capacity": 5})
        await post(enrollment, f"/cohorts/{cohort['cohort_id']}/enrolments", {"resident_id": resident["resident_id"]})
        await post(enrollment, f"/cohorts/{cohort['cohort_id']}/completions",
                   {"resident_id": resident["resident_id"], "completed_on": COHORT_ENDS.isoformat()})
    return resident["resident_id"]


async def statement(env: dict[str, str], artisan_id: str) -> dict:
    async with client(env, "payout", env[keys.AUDITOR_TOKEN]) as payout:
        response = await payout.get(f"/artisans/{artisan_id}/statement")
    if response.status_code == 404:  # no entries yet
        return {"balances": {"earned_idr": 0}, "entries": []}
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_refused_result_is_listed_shown_and_after_the_fix_redriven_once(stack: RunningStack):
    env, workdir = stack.env, stack.workdir
    artisan_id = await trained_artisan(env)
    registered, unregistered = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    async with client(env, "production", env[keys.STAFF_TOKEN]) as production:
        collaborator_id = (await post(production, "/collaborators", {
            "name": "PT Uji Surat Mati", "public_key": public_key_b64(registered),
            "valid_from": "2024-03-01T00:00:00+07:00"}))["collaborator_id"]
        await post(production, f"/collaborators/{collaborator_id}/rates",
                   {"product": "piring", "rate_idr": RATE, "effective_from": "2024-03-01T00:00:00+07:00"})
        piece: dict = {}

        # Production learns of the training from the enrollment topic; a fresh Idempotency-Key per try,
        # since a refusal's answer is kept under its key.
        async def woven() -> bool:
            response = await production.post("/pieces", json={
                "artisan_id": artisan_id, "collaborator_id": collaborator_id, "product": "piring",
                "woven_at": "2024-03-05T10:00:00+07:00"}, headers={"Idempotency-Key": uuid.uuid4().hex})
            piece.update(response.json())
            assert response.status_code in (201, 409), response.text
            return response.status_code == 201

        await until(woven, timeout=60, what="production to know the artisan is trained")

    # The collaborator signs with a key it has not registered yet, and publishes straight onto the topic.
    submission = signed(unregistered, {
        "submission_id": "sub-dl-1", "piece_id": piece["piece_id"], "collaborator_id": collaborator_id,
        "result": "passed", "inspector": "QC-07", "inspected_at": "2024-03-06T10:00:00+07:00", "defects": []})
    value = submission_event(submission)
    event_id = json.loads(value)["id"]
    admin = keys.principal_kafka_settings(env, ADMIN)
    qc_topic = topic_name(Topic.QC_SUBMISSIONS, PREFIX)
    producer = await start_producer(admin)
    try:
        await producer.send_and_wait(qc_topic, value, key=piece["piece_id"].encode(),
                                     headers=[(CONTENT_TYPE_HEADER, CONTENT_TYPE.encode())])
        await producer.send_and_wait(qc_topic, b"not json at all", key=b"junk")  # never re-drivable
    finally:
        await producer.stop()

    async def refused() -> bool:
        return len(listed(workdir, "--topic", "qc-submissions")) == 2

    await until(refused, timeout=60, what="production to dead-letter both records")
    (letter,) = listed(workdir, "--reason", "bad-signature")
    assert letter["event_id"] == event_id and letter["event_type"] == "qc-submitted"
    assert letter["consumer"] == "production-qc-submissions" and letter["topic"] == qc_topic
    (junk,) = listed(workdir, "--reason", "malformed")
    assert junk["event_id"] is None
    assert listed(workdir, "--consumer", "payout-ledger") == []
    assert listed(workdir, "--since", "2099-01-01") == []
    assert len(listed(workdir, "--since", "1h")) == 2

    # The human list: one line per dead letter, metadata only.
    text = anyam("dead-letters", "list", workdir=workdir)
    assert text.returncode == 0, text.stderr
    line = next(line for line in text.stdout.splitlines() if line.startswith(letter["position"] + " "))
    assert "production-qc-submissions" in line and "bad-signature" in line and event_id in line
    assert "QC-07" not in text.stdout  # never a value in the list

    # `show` by event id: everything, the value too (it passed the contract's checks).
    shown = anyam("dead-letters", "show", event_id, "--json", workdir=workdir)
    assert shown.returncode == 0, shown.stderr
    detail = json.loads(shown.stdout)
    assert detail["position"] == letter["position"] and detail["redrivable"] is True
    assert json.loads(detail["value"]) == json.loads(value)
    assert {"name": CONTENT_TYPE_HEADER, "value": CONTENT_TYPE} in detail["headers"]
    assert "signature" in detail["detail"]
    # The malformed one: described, its value withheld, not re-drivable and why.
    junk_shown = json.loads(anyam("dead-letters", "show", junk["position"], "--json", workdir=workdir).stdout)
    assert "value" not in junk_shown and "value_withheld" in junk_shown
    assert junk_shown["redrivable"] is False and "no event with an id" in junk_shown["not_redrivable_because"]

    # Before the fix nothing was earned.
    assert (await statement(env, artisan_id))["balances"]["earned_idr"] == 0

    # The fix: staff register the key the collaborator signed with. Then the re-drive.
    async with client(env, "production", env[keys.STAFF_TOKEN]) as production:
        await post(production, f"/collaborators/{collaborator_id}/keys",
                   {"public_key": public_key_b64(unregistered), "valid_from": "2024-03-01T00:00:00+07:00"})
    first = anyam("dead-letters", "redrive", letter["position"], "--json", workdir=workdir)
    assert first.returncode == 0, first.stdout + first.stderr
    (outcome,) = json.loads(first.stdout)
    assert outcome["outcome"] == "redriven" and outcome["event_id"] == event_id, outcome

    async def earned() -> bool:
        return (await statement(env, artisan_id))["balances"]["earned_idr"] == RATE

    await until(earned, timeout=60, what="the re-driven result to reach the artisan's statement")
    entries = (await statement(env, artisan_id))["entries"]
    assert {(entry["kind"], entry["piece_id"]) for entry in entries} == {("earned", piece["piece_id"])}, entries
    assert len({entry["transaction_id"] for entry in entries}) == 1, entries

    # Again, by event id: it was re-driven and consumed, so nothing is published and nothing changes.
    before = await end_offsets(admin, [qc_topic])
    again = anyam("dead-letters", "redrive", event_id, workdir=workdir)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.startswith("already"), again.stdout
    assert await end_offsets(admin, [qc_topic]) == before
    assert (await statement(env, artisan_id))["balances"]["earned_idr"] == RATE
    # The re-drive was accepted: no new dead letter for it.
    assert [entry["position"] for entry in listed(workdir, "--reason", "bad-signature")] == [letter["position"]]

    # The auditor's replay of the topics (the original record and its re-driven copy) equals the live ledger.
    verified = anyam("verify", "--stack-env", str(stack.path), "--workers", "1", workdir=workdir)
    assert verified.returncode == 0, verified.stdout[-3000:] + verified.stderr[-3000:]

    # What cannot be re-driven says why and exits 1, never a traceback; the rest of a --reason batch is done.
    malformed = anyam("dead-letters", "redrive", "--reason", "malformed", workdir=workdir)
    assert malformed.returncode == 1 and "cannot be re-driven" in malformed.stdout, malformed.stdout
    assert "Traceback" not in malformed.stderr

    # A submission refused over HTTP was never on a topic: not re-drivable.
    token = collaborator_token(env[keys.TOKEN_SECRET], collaborator_id)
    async with client(env, "production", token) as http:
        response = await http.post("/qc-submissions", json=signed(registered, {
            "submission_id": "sub-dl-2", "piece_id": "pc_01J0DOESNOTEXIST000000000", "collaborator_id": collaborator_id,
            "result": "passed", "inspector": "QC-07", "inspected_at": "2024-03-06T10:00:00+07:00", "defects": []}))
        assert response.status_code == 404, response.text

    async def http_letter() -> bool:
        return len(listed(workdir, "--consumer", "production-http")) == 1

    await until(http_letter, timeout=30, what="the HTTP refusal's dead letter")
    (refusal,) = listed(workdir, "--consumer", "production-http")
    over_http = anyam("dead-letters", "redrive", refusal["position"], workdir=workdir)
    assert over_http.returncode == 1 and "refused over HTTP" in over_http.stdout, over_http.stdout


@pytest.mark.parametrize(("args", "message"), [
    (("show", "0:999999"), "there is no dead letter at position 0:999999"),
    (("show", "evt_nobody"), "there is no dead letter of event evt_nobody"),
    (("show", "not an id"), "an id is a position"),
    (("redrive",), "name the dead letters to re-drive"),
    (("redrive", "--reason", "no-such-reason"), "no dead letter has reason"),
    (("list", "--since", "yesterday"), "--since 'yesterday' is neither"),
])
async def test_bad_input_is_one_clear_line_and_exit_1(stack: RunningStack, args, message):
    result = anyam("dead-letters", *args, workdir=stack.workdir)
    assert result.returncode == 1, result.stdout + result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr, result.stderr
