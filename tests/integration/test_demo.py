"""`anyam demo` on the embedded stack, as a newcomer runs it: it finishes and tells the ledger's truth."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
import pytest

from anyam.demo.scenario import MATERIALS, ROTAN_PER_PIECE, nagrak, programmes
from anyam.stack import read_stack_env
from anyam.stack.stackfile import stack_kafka_settings
from shared.contracts import ALL_TOPICS, EVENT_TOPICS, topic_name
from shared.contracts.provenance import TOPIC_OWNERS
from shared.money import rupiah
from tests.asyncapi_records import record_problems
from tests.kafka_reader import read_topic

ANYAM = [sys.executable, "-m", "anyam.cli"]


def anyam(*args: str, workdir: Path, timeout: float = 600, columns: int = 200) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": str(columns), "NO_COLOR": "1"}
    env = {k: v for k, v in env.items() if not k.startswith("ANYAM_")}  # the stack's own settings only
    return subprocess.run([*ANYAM, *args, "--workdir", str(workdir)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=Path(__file__).parents[2])


@pytest.fixture
def workdir(tmp_path_factory):
    # Short: PostgreSQL's Unix socket lives under it.
    path = Path(tmp_path_factory.mktemp("demo", numbered=True))
    yield path
    anyam("down", workdir=path)


def money(text: str) -> int:
    return int(text.removeprefix("Rp ").replace(".", ""))


async def test_the_demo_runs_to_the_end_and_its_printed_totals_equal_the_ledgers(workdir):
    result = anyam("demo", "--seed", "7", workdir=workdir)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    # One table per rusunawa, in the order they ran (Nagrak, then Marunda), each with its own totals.
    footers = re.findall(r"total\s*│\s*(\d+)\s*│\s*(\d+)\s*│\s*(Rp [\d.]+)\s*│\s*(Rp [\d.]+)\s*│\s*(Rp [\d.]+)",
                         result.stdout)
    scenarios = programmes(7)
    assert len(footers) == len(scenarios) == 2, result.stdout[-3000:]
    for footer, programme in zip(footers, scenarios, strict=True):
        assert int(footer[0]) == len(programme.weavings) and int(footer[1]) == sum(w.passes for w in programme.weavings)
        assert f"Rusunawa {programme.programme.rusunawa}: the programme so far" in result.stdout
        assert f"Rusunawa {programme.programme.rusunawa}: {programme.programme.skill}, OVOP product " \
               f"{programme.programme.ovop_product};" in result.stdout
    earned, paid, owed = (sum(money(footer[i]) for footer in footers) for i in (2, 3, 4))
    scenario = nagrak(7)

    env = read_stack_env(workdir / "stack.env")
    headers = {"Authorization": f"Bearer {env['ANYAM_AUDITOR_TOKEN']}"}
    async with httpx.AsyncClient(base_url=env["ANYAM_PAYOUT_URL"], headers=headers) as payout:
        accounts = (await payout.get("/ledger/balances")).json()["accounts"]
        digest = (await payout.get("/ledger/digest")).json()["digest"]
    ledger = {kind: sum(v for account, v in accounts.items() if account.startswith(f"{owner}:")
                        and account.endswith(f":{kind}"))
              for owner, kinds in (("artisan", ("payable", "in-transit", "paid")),
                                   ("collaborator", ("fees", "receivable"))) for kind in kinds}
    collaborator_paid = -sum(v for account, v in accounts.items()
                             if account.startswith("collaborator:") and account.endswith(":paid"))
    assert earned == ledger["payable"] + ledger["in-transit"] + ledger["paid"]
    # Money in: the collaborator was invoiced for every passed piece and paid it in two parts, so its
    # fees and receivable settled to zero and what it paid is what its artisans earned (docs/money.md).
    assert (ledger["fees"], ledger["receivable"], collaborator_paid) == (0, 0, earned)
    assert paid == ledger["paid"]
    assert owed == ledger["payable"] + ledger["in-transit"]
    assert f"Ledger digest: {digest}" in result.stdout
    # Every passed piece was paid by the last weekly run: the programme owes nothing at the end.
    assert owed == 0 and paid == earned > 0
    assert all(rupiah(money(footer[2])) in result.stdout for footer in footers)
    # The demo ends with the auditor's verify, which passed (a failure would have exited non-zero).
    assert "the live ledger equals the replay and every invariant holds" in result.stdout
    assert f"Replayed ledger digest: {digest}" in result.stdout
    # Production's materials reconciliation flags whoever needed more rotan than the 7 kg she was given.
    (rotan, given, _), needs = MATERIALS[0], Counter()
    for weaving in scenario.weavings:
        needs[weaving.participant] += ROTAN_PER_PIECE[weaving.product]
    over = sum(need > given for need in needs.values())
    assert 0 < over < len(scenario.participants) and rotan == "rotan sintetis"
    assert f"Bahan baku: {over} artisans wove beyond their materials, 0 hold idle ones." in result.stdout

    # Every record the demo wrote is declared by the AsyncAPI document of the service that wrote it, and
    # by those of the services that read it, on that channel: its type, its value's schema, its headers.
    async with httpx.AsyncClient(headers=headers) as http:
        documents = {service: (await http.get(f"{env[f'ANYAM_{service.upper()}_URL']}/asyncapi.json")).json()
                     for service in ("enrollment", "production", "payout")}
    kafka = stack_kafka_settings(env)
    counts = {}
    for topic in ALL_TOPICS:
        if topic in TOPIC_OWNERS:
            assert f"send-{topic.value}" in documents[TOPIC_OWNERS[topic]]["operations"]
        declaring = {service: document for service, document in documents.items()
                     if topic.value in document["channels"]}
        records = await read_topic(kafka, topic_name(topic, kafka.topic_prefix))
        counts[topic.value] = len(records)
        for record in records:
            for service, document in declaring.items():
                problems = record_problems(document, topic.value, record.value, record.headers)
                assert not problems, f"{topic.value}[{record.partition}]@{record.offset} per {service}: {problems}"
    assert all(counts[topic.value] > 0 for topic in EVENT_TOPICS), counts

    # No personal data in any log of the run: the services' logs, the broker's, and what the demo printed.
    logs = result.stdout + result.stderr + "".join(p.read_text(errors="replace") for p in workdir.glob("*.log"))
    assert list(workdir.glob("*.log")), "the stack wrote no logs to search"
    for person in (p for programme in scenarios for p in programme.participants):
        for secret in (person.full_name, person.nik, person.phone, person.payout_account):
            assert secret not in logs, "personal data in the logs"

    # A field officer's sheet through `anyam pieces import`: a table of each row, and the same file run
    # again (after a timeout) records nothing twice and prints the same table.
    resident = re.search(r"\bres_\w+", result.stdout)[0]
    async with httpx.AsyncClient(headers=headers) as http:
        statement = (await http.get(f"{env['ANYAM_PAYOUT_URL']}/artisans/{resident}/statement")).json()
        piece_id = next(entry["piece_id"] for entry in statement["entries"] if entry.get("piece_id"))
        collaborator_id = (await http.get(f"{env['ANYAM_PRODUCTION_URL']}/pieces/{piece_id}")).json()[
            "collaborator_id"]
    sheet = workdir / "week-14.csv"
    sheet.write_text("artisan_id,collaborator_id,product,woven_at\n"
                     f"{resident},{collaborator_id},piring,2024-03-30 10:00\n"
                     f"{resident},col_nobody,piring,2024-03-30 10:00\n", encoding="utf-8")
    imported = anyam("pieces", "import", str(sheet), workdir=workdir, columns=80)
    assert imported.returncode == 1, imported.stdout + imported.stderr  # a row was refused
    assert max(map(len, imported.stdout.splitlines())) <= 80, imported.stdout
    recorded, refused = (next(line for line in imported.stdout.splitlines() if line.strip().startswith(str(n)))
                         for n in (2, 3))
    assert "recorded" in recorded and re.search(r"pc_\w+", recorded) and "Rp 17.500" in recorded  # the raise
    assert "refused" in refused and "collaborator-not-found" in refused
    assert "1 recorded now, 0 recorded before, 1 refused" in imported.stdout
    again = anyam("pieces", "import", str(sheet), workdir=workdir, columns=80)
    assert (again.returncode, again.stdout) == (1, imported.stdout)
