"""`anyam demo`: the programmes (Nagrak, Marunda) driven end to end through the services' public doors.

Staff work over HTTP; the collaborator publishes signed QC results onto
Kafka, as a collaborator's IT would. Between steps the demo waits on real
positions (each outbox relay's checkpoint, each consumer's stored offsets),
never on time. What it prints comes from the services: pieces from
production's answers, money from the payout ledger.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import asyncpg
import httpx
from aiokafka import AIOKafkaProducer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from anyam.demo.scenario import PayoutRun, Scenario, Weaving
from anyam.stack import stackfile as keys
from anyam.stack.errors import StackError
from anyam.stack.principals import onboard_collaborator
from shared.contracts import CONTENT_TYPE, Topic, topic_name
from shared.contracts.codec import CONTENT_TYPE_HEADER
from shared.contracts.signing import public_key_b64, signed, submission_event
from shared.eventstore import wait_until_caught_up, wait_until_published
from shared.kafka import start_producer
from shared.settings import KafkaSettings

Progress = Callable[[str], None]


class DemoFailed(StackError):
    """The demo could not finish; the message says which step and which service refused."""


@dataclass(frozen=True)
class ArtisanSummary:
    """One woman's programme at the end of the demo; money from the ledger, pieces from production."""

    resident_id: str
    pieces_woven: int
    pieces_passed: int
    earned_idr: int
    paid_idr: int
    owed_idr: int


def _total(artisans: Iterable[ArtisanSummary]) -> ArtisanSummary:
    artisans = tuple(artisans)
    return ArtisanSummary(
        "total", *(sum(getattr(a, f) for a in artisans)
                   for f in ("pieces_woven", "pieces_passed", "earned_idr", "paid_idr", "owed_idr")),
    )


@dataclass(frozen=True)
class ProgrammeResult:
    """One rusunawa's programme at the end of the demo: its cohort, its collaborator, its residents."""

    rusunawa: str
    skill: str
    ovop_product: str
    artisans: tuple[ArtisanSummary, ...]
    collaborator_id: str
    cohort_id: str
    payouts_paid: int
    payouts_failed: int

    @property
    def totals(self) -> ArtisanSummary:
        return _total(self.artisans)


@dataclass(frozen=True)
class DemoResult:
    programmes: tuple[ProgrammeResult, ...]
    ledger_digest: str
    seconds: float
    #: Artisans flagged by production's materials reconciliation, per anomaly (docs/materials.md).
    materials_flagged: Mapping[str, int] = field(default_factory=dict)
    #: One artisan's own page: her id and the link staff would print on her card (docs/artisans.md).
    artisan_page: tuple[str, str] | None = None

    @property
    def artisans(self) -> tuple[ArtisanSummary, ...]:
        """Every programme's artisans, the first programme's first."""
        return tuple(a for programme in self.programmes for a in programme.artisans)

    @property
    def collaborator_id(self) -> str:
        """The first programme's collaborator (Nagrak's)."""
        return self.programmes[0].collaborator_id

    @property
    def payouts_paid(self) -> int:
        return sum(p.payouts_paid for p in self.programmes)

    @property
    def payouts_failed(self) -> int:
        return sum(p.payouts_failed for p in self.programmes)

    @property
    def totals(self) -> ArtisanSummary:
        return _total(self.artisans)


@dataclass
class StackClients:
    """The running stack as `.anyam/stack.env` describes it, plus the demo's clients."""

    env: Mapping[str, str]
    http: dict[str, httpx.AsyncClient] = field(default_factory=dict)
    pools: dict[str, asyncpg.Pool] = field(default_factory=dict)

    @property
    def kafka(self) -> KafkaSettings:
        return keys.stack_kafka_settings(self.env)

    async def open(self) -> None:
        token = self.env[keys.STAFF_TOKEN]
        for service in ("enrollment", "production", "payout"):
            url = self.env.get(f"ANYAM_{service.upper()}_URL")
            if url is None:
                raise DemoFailed(f"the stack runs no {service} service; the demo needs all three")
            self.http[service] = httpx.AsyncClient(
                base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60,
                limits=httpx.Limits(max_connections=16),
            )
            self.pools[service] = await asyncpg.create_pool(
                self.env[f"ANYAM_{service.upper()}_DATABASE_URL"], min_size=1, max_size=2
            )

    async def close(self) -> None:
        for client in self.http.values():
            await client.aclose()
        for pool in self.pools.values():
            await pool.close()

    async def post(self, service: str, path: str, body: dict, *, key: str) -> dict:
        """POST with an Idempotency-Key: a demo re-run after a crash repeats nothing."""
        response = await self.http[service].post(path, json=body, headers={"Idempotency-Key": key})
        if response.status_code >= 400:
            raise DemoFailed(f"{service} refused {path}: {response.status_code}", detail=response.text[:500])
        return response.json()

    async def post_csv(self, service: str, path: str, text: str, *, key: str) -> dict:
        """POST a CSV upload with its Idempotency-Key: a re-run sends the same rows and records none again."""
        response = await self.http[service].post(path, content=text.encode(), headers={
            "Content-Type": "text/csv; charset=utf-8", "Idempotency-Key": key})
        if response.status_code >= 400:
            raise DemoFailed(f"{service} refused {path}: {response.status_code}", detail=response.text[:500])
        return response.json()

    async def get(self, service: str, path: str) -> dict:
        response = await self.http[service].get(path)
        response.raise_for_status()
        return response.json()

    async def settle(self, consumers: Iterable[tuple[str, str, Iterable[Topic]]], timeout: float = 120) -> None:
        """Wait until every relay published everything and every consumer applied it, on real positions.

        Consuming makes new events (a QC submission becomes `qc-passed`, which the ledger
        consumes), so the check repeats until one round finds nothing new anywhere.
        """
        consumers = list(consumers)
        previous: tuple[int, ...] | None = None
        while True:
            positions = []
            for pool in self.pools.values():
                await wait_until_published(pool, timeout=timeout)
                async with pool.acquire() as conn:
                    positions.append(await conn.fetchval("SELECT coalesce(max(position), 0) FROM event_store"))
            for service, name, topics in consumers:
                await wait_until_caught_up(self.pools[service], name, self.kafka, list(topics), timeout=timeout)
            if tuple(positions) == previous:
                return
            previous = tuple(positions)


def consumers_of(prefix: str) -> list[tuple[str, str, tuple[Topic, ...]]]:
    """(service, consumer group, topics) of every transactional consumer of the stack."""
    from services.payout.artisan import ARTISAN_TOPICS, artisan_consumer
    from services.payout.dashboard import DASHBOARD_TOPICS, dashboard_consumer
    from services.payout.messaging import LEDGER_TOPICS, ledger_consumer
    from services.production.app import QC_CONSUMER
    from services.production.projections import TRAINING_CONSUMER

    return [
        ("production", TRAINING_CONSUMER, (Topic.ENROLLMENT,)),
        ("production", QC_CONSUMER, (Topic.QC_SUBMISSIONS,)),
        ("payout", ledger_consumer(prefix), tuple(LEDGER_TOPICS)),
        ("payout", dashboard_consumer(prefix), tuple(DASHBOARD_TOPICS)),
        ("payout", artisan_consumer(prefix), tuple(ARTISAN_TOPICS)),
    ]


async def run_demo(
    env: Mapping[str, str], scenarios: Scenario | Sequence[Scenario], progress: Progress = lambda _: None
) -> DemoResult:
    """Run `scenarios` (one programme per rusunawa, one after another) on the stack `env` describes;
    returns what the services say happened."""
    started = time.monotonic()
    scenarios = (scenarios,) if isinstance(scenarios, Scenario) else tuple(scenarios)
    stack = StackClients(env)
    await stack.open()
    consumers = consumers_of(stack.kafka.topic_prefix)
    try:
        results = [await _run_programme(stack, env, scenario, consumers, progress) for scenario in scenarios]
        progress("Reading the ledger")
        digest = (await stack.get("payout", "/ledger/digest"))["digest"]
        reconciliation = await stack.get("production", "/materials/reconciliation")
        flagged = {kind: len({a["artisan_id"] for a in reconciliation["anomalies"] if a["kind"] == kind})
                   for kind in ("woven-beyond-materials", "idle-materials")}
        page = await _artisan_page(stack, scenarios[0], results[0][1])
        return DemoResult(tuple(result for result, _ in results), digest, time.monotonic() - started, flagged,
                          artisan_page=page)
    finally:
        await stack.close()


async def _run_programme(
    stack: StackClients, env: Mapping[str, str], scenario: Scenario,
    consumers: list[tuple[str, str, tuple[Topic, ...]]], progress: Progress,
) -> tuple[ProgrammeResult, Mapping[int | str, str]]:
    """One rusunawa's programme: Bimtek, collaborator, then each week's pieces, QC and payout run."""
    programme = scenario.programme
    tag = f"demo-{scenario.seed}{programme.tag}"
    progress(f"Bimtek {programme.skill.capitalize()} at Rusunawa {programme.rusunawa}: "
             f"{len(scenario.participants)} residents")
    residents = await _train(stack, scenario, tag)
    cohort_id = residents.pop("_cohort")
    await stack.settle(consumers)

    progress(f"Collaborator {programme.collaborator}: key, piece rates, materials")
    key = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(f"{tag}-collaborator".encode()).digest())
    collaborator_id = await _collaborate(stack, scenario, residents, key, tag)
    # The collaborator publishes its QC results as itself: a principal that may write qc-submissions only.
    producer = await start_producer((await onboard_collaborator(env, collaborator_id)).kafka)
    try:
        paid = failed = 0
        woven: dict[int, int] = {}  # pieces production accepted, per participant
        for week, run in enumerate(scenario.runs, start=1):
            this_week = [w for w in scenario.weavings if w.woven_at <= run.period_end
                         and w.woven_at > run.period_end - timedelta(weeks=1)]
            progress(f"{programme.rusunawa} week {week}: {len(this_week)} pieces made and inspected; "
                     f"payout run {run.run_id}")
            pieces = await _weave(stack, scenario, this_week, residents, collaborator_id, f"{tag}-pieces-{run.run_id}")
            for weaving in this_week:
                woven[weaving.participant] = woven.get(weaving.participant, 0) + 1
            await _inspect(stack, producer, scenario, this_week, pieces, collaborator_id, key)
            await stack.settle(consumers)
            week_paid, week_failed = await _pay(stack, scenario, run, residents, tag)
            paid, failed = paid + week_paid, failed + week_failed
            await stack.settle(consumers)

        progress(f"{programme.collaborator} invoiced for its passed pieces; it pays in two parts")
        await _invoice(stack, collaborator_id, scenario.runs[-1].period_end, tag)
        await stack.settle(consumers)
    finally:
        await producer.stop()
    artisans = await _summaries(stack, scenario, residents, woven)
    return ProgrammeResult(programme.rusunawa, programme.skill, programme.ovop_product, tuple(artisans),
                           collaborator_id, cohort_id, paid, failed), residents


async def gather_bounded(jobs: Iterable[Awaitable], limit: int = 8) -> list:
    gate = asyncio.Semaphore(limit)

    async def bounded(job: Awaitable):
        async with gate:
            return await job

    return await asyncio.gather(*(bounded(job) for job in jobs))


async def _train(stack: StackClients, scenario: Scenario, tag: str) -> dict[int | str, str]:
    people, programme = scenario.participants, scenario.programme
    registered = await gather_bounded(
        stack.post("enrollment", "/residents", {
            "rusunawa": programme.rusunawa, "unit": p.unit, "full_name": p.full_name, "nik": p.nik, "phone": p.phone,
            "payout_account": p.payout_account,
        }, key=f"{tag}-resident-{p.index}")
        for p in people
    )
    residents: dict[int | str, str] = {p.index: r["resident_id"] for p, r in zip(people, registered, strict=True)}
    await stack.post("enrollment", "/rusunawa",
                     {"name": programme.rusunawa, "ovop_product": programme.ovop_product}, key=f"{tag}-rusunawa")
    cohort = await stack.post("enrollment", "/cohorts", {
        "rusunawa": programme.rusunawa, "skill": programme.skill, "product_focus": programme.ovop_product,
        "starts_on": programme.cohort_starts.isoformat(), "ends_on": programme.cohort_ends.isoformat(),
        "capacity": len(people),
    }, key=f"{tag}-cohort")
    cohort_id = cohort["cohort_id"]
    await gather_bounded(stack.post("enrollment", f"/cohorts/{cohort_id}/enrolments",
                                    {"resident_id": residents[p.index]}, key=f"{tag}-enrol-{p.index}")
                         for p in people)
    completed_on = programme.cohort_ends.isoformat()
    await gather_bounded(stack.post("enrollment", f"/cohorts/{cohort_id}/completions",
                                    {"resident_id": residents[p.index], "completed_on": completed_on},
                                    key=f"{tag}-complete-{p.index}") for p in people)
    residents["_cohort"] = cohort_id
    return residents


async def _collaborate(
    stack: StackClients, scenario: Scenario, residents: Mapping[int | str, str], key: Ed25519PrivateKey, tag: str
) -> str:
    programme = scenario.programme
    # The key signs for the programme from its first day (the demo records March 2024 today).
    collaborator = await stack.post("production", "/collaborators",
                                    {"name": programme.collaborator, "public_key": public_key_b64(key),
                                     "valid_from": programme.rates_from.isoformat()}, key=f"{tag}-collab")
    collaborator_id = collaborator["collaborator_id"]
    rates = [(product, rate, programme.rates_from) for product, rate in programme.opening_rates.items()]
    if programme.raise_ is not None:
        rates.append(programme.raise_)
    for product, rate, effective_from in rates:
        await stack.post("production", f"/collaborators/{collaborator_id}/rates",
                         {"product": product, "rate_idr": rate, "effective_from": effective_from.isoformat()},
                         key=f"{tag}-rate-{product}-{effective_from.date()}")
    for product, quantity in programme.usage_per_piece.items():
        material, _, unit = programme.materials[0]
        await stack.post("production", f"/collaborators/{collaborator_id}/material-usages",
                         {"product": product, "material": material, "unit": unit,
                          "quantity_per_piece": quantity, "effective_from": programme.rates_from.isoformat()},
                         key=f"{tag}-usage-{product}")
    await gather_bounded(
        stack.post("production", "/material-issues", {
            "artisan_id": residents[p.index], "collaborator_id": collaborator_id, "material": material,
            "quantity": quantity, "unit": unit,
        }, key=f"{tag}-materials-{p.index}-{material}")
        for p in scenario.participants for material, quantity, unit in programme.materials
    )
    return collaborator_id


async def _weave(
    stack: StackClients, scenario: Scenario, weavings: list[Weaving], residents: Mapping[int | str, str],
    collaborator_id: str, key: str,
) -> list[dict]:
    """The week's pieces as the field officers record them: one CSV upload, a result per row."""
    sheet = "artisan_id,collaborator_id,product,woven_at\r\n" + "".join(
        f'{residents[w.participant]},{collaborator_id},"{w.product}",{w.woven_at.isoformat()}\r\n'
        for w in weavings)
    answer = await stack.post_csv("production", "/piece-batches", sheet, key=key)
    pieces = answer["results"]
    if len(pieces) != len(weavings) or answer["refused"]:
        refused: dict = next((r for r in pieces if r["status"] == "refused"), {})
        raise DemoFailed(f"production refused row {refused.get('row')} of the week's pieces: {refused.get('code')}",
                         detail=refused.get("message", ""))
    for weaving, piece in zip(weavings, pieces, strict=True):
        expected = scenario.rate_at(weaving.product, weaving.woven_at)
        if piece["rate_idr"] != expected:
            raise DemoFailed(f"piece {piece['piece_id']} got rate {piece['rate_idr']}, expected {expected}")
    return pieces


async def _inspect(
    stack: StackClients, producer: AIOKafkaProducer, scenario: Scenario, weavings: list[Weaving], pieces: list[dict],
    collaborator_id: str, key: Ed25519PrivateKey,
) -> None:
    """The collaborator's QC, signed with its own key and published straight onto `qc-submissions`."""
    topic = topic_name(Topic.QC_SUBMISSIONS, stack.kafka.topic_prefix)
    deliveries = []
    for weaving, piece in zip(weavings, pieces, strict=True):
        data = signed(key, {
            "submission_id": f"qc-{piece['piece_id']}", "piece_id": piece["piece_id"],
            "collaborator_id": collaborator_id, "result": "passed" if weaving.passes else "failed",
            "inspector": scenario.programme.inspector, "inspected_at": weaving.inspected_at.isoformat(),
            "defects": list(weaving.defects),
        })
        value = submission_event(data, time=weaving.inspected_at)
        deliveries.append(await producer.send(topic, value, key=piece["piece_id"].encode(),
                                              headers=[(CONTENT_TYPE_HEADER, CONTENT_TYPE.encode())]))
    await asyncio.gather(*deliveries)


async def _pay(
    stack: StackClients, scenario: Scenario, run: PayoutRun, residents: Mapping[int | str, str], tag: str
) -> tuple[int, int]:
    # At the programme's dates, not today's: the ledger as of any day of March 2024 shows what was
    # paid by then, and a re-run of the demo sends the very same requests. Each run pays its own
    # rusunawa's residents only.
    body = {"run_id": run.run_id, "period_end": run.period_end.isoformat(), "run_at": run.run_at.isoformat(),
            "rusunawa": scenario.programme.rusunawa}
    result = await stack.post("payout", "/payout-runs", body, key=f"{tag}-{run.run_id}")
    failing = {residents[i] for i in run.failing_participants}
    paid = failed = 0
    for payout in result["payouts"]:
        if payout["artisan_id"] in failing:
            await stack.post("payout", f"/payouts/{payout['payout_id']}/failure", {
                "reason": "account-closed", "failed_at": run.settled_at.isoformat(),
            }, key=f"{tag}-fail-{payout['payout_id']}")
            failed += 1
        else:
            await stack.post("payout", f"/payouts/{payout['payout_id']}/confirmation", {
                "method": "bank-transfer", "reference": f"TRF-{payout['payout_id'][-12:]}",
                "paid_at": run.settled_at.isoformat(),
            }, key=f"{tag}-pay-{payout['payout_id']}")
            paid += 1
    return paid, failed


async def _invoice(stack: StackClients, collaborator_id: str, period_end: datetime, tag: str) -> None:
    """Money in (docs/money.md): the collaborator is invoiced for the period and pays it in two transfers."""
    invoice = await stack.post("payout", "/collaborator-invoices", {
        "collaborator_id": collaborator_id, "period_end": period_end.isoformat()}, key=f"{tag}-invoice")
    # Received the moment it was invoiced: deterministic, so a re-run sends the very same requests.
    first = invoice["amount_idr"] // 2
    for part, amount in enumerate((first, invoice["amount_idr"] - first), start=1):
        if amount == 0:
            continue  # an invoice of 1 rupiah is paid in one part
        await stack.post("payout", f"/collaborator-invoices/{invoice['invoice_id']}/payments", {
            "amount_idr": amount, "received_at": invoice["invoiced_at"], "reference": f"TRF-IN-{tag}-{part}"},
            key=f"{tag}-invoice-payment-{part}")


async def _summaries(
    stack: StackClients, scenario: Scenario, residents: Mapping[int | str, str], woven: Mapping[int, int]
) -> list[ArtisanSummary]:
    summaries = []
    for person in scenario.participants:
        resident_id = residents[person.index]
        statement = await stack.http["payout"].get(f"/artisans/{resident_id}/statement")
        balances = statement.json()["balances"] if statement.status_code == 200 else {}
        entries = statement.json()["entries"] if statement.status_code == 200 else []
        summaries.append(ArtisanSummary(
            resident_id=resident_id,
            pieces_woven=woven.get(person.index, 0),
            pieces_passed=len({e["piece_id"] for e in entries if e["kind"] == "earned"}),
            earned_idr=balances.get("earned_idr", 0),
            paid_idr=balances.get("paid_idr", 0),
            owed_idr=balances.get("payable_idr", 0) + balances.get("in_transit_idr", 0),
        ))
    return summaries


async def _artisan_page(stack: StackClients, scenario: Scenario, residents: Mapping[int | str, str]) -> tuple[str, str]:
    """A link to one artisan's own page: hers whose transfer bounced, so her page shows every kind of payslip.

    Each demo run makes a new link (the secret is never stored, so no earlier one can be shown again)."""
    failing = sorted(i for run in scenario.runs for i in run.failing_participants)
    artisan_id = residents[failing[0] if failing else scenario.participants[0].index]
    response = await stack.http["payout"].post(f"/artisans/{artisan_id}/links")
    if response.status_code != 201:
        raise DemoFailed(f"payout refused a link for artisan {artisan_id}: {response.status_code}",
                         detail=response.text[:500])
    return artisan_id, response.json()["url"]
