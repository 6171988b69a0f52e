"""A steady mixed load on a running stack that remembers exactly what was accepted.

Staff record woven pieces and enrol new residents over HTTP; the collaborator
answers every piece with a signed QC result, half of them published onto
`qc-submissions` as its IT would, half over `POST /qc-submissions`. Each
command is retried with its own Idempotency-Key (and each Kafka record with
its own bytes, so its event id) until it is accepted, as a careful client
does through an outage. `reconcile` then compares the ledger, production and
enrollment with what was accepted: every passed piece earned exactly once at
its rate, nothing missing, nothing extra.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from anyam.demo.runner import StackClients, consumers_of
from anyam.stack import stackfile as keys
from anyam.stack.principals import onboard_collaborator
from shared.contracts import CONTENT_TYPE, Topic, topic_name
from shared.contracts.codec import CONTENT_TYPE_HEADER
from shared.contracts.signing import public_key_b64, signed, submission_event
from shared.kafka import start_producer
from shared.timeutil import WIB, wib_now
from shared.web.access import collaborator_token

RATES = {"piring": 15_000, "tempat mangkuk": 12_500, "tas": 45_000, "dompet": 20_000}
PRODUCTS = tuple(RATES)
RATES_FROM = datetime(2024, 1, 1, tzinfo=WIB)
COHORT_DAYS = (date(2026, 1, 5), date(2026, 1, 9))
#: Enrolments per cohort before the load schedules the next one (a cohort holds at most 500).
COHORT_SIZE = 400
RETRY_BACKOFF_SECONDS = 0.25


class LoadFailed(Exception):
    """A command was refused for a reason no retry can fix (a 4xx), or never accepted in time."""


@dataclass(frozen=True)
class AcceptedPiece:
    piece_id: str
    artisan_id: str
    rate_idr: int
    passes: bool


@dataclass
class LoadFigures:
    """What the load did: commands accepted, retries it took, and the longest a command waited."""

    accepted: int = 0
    retries: int = 0
    longest_wait_seconds: float = 0.0
    #: Status codes of answers that were retried (503 while a database restarts; a 500 would be a bug).
    retried_statuses: Counter[int] = field(default_factory=Counter)
    accepted_at: list[tuple[float, str]] = field(default_factory=list)  # (monotonic time, command)

    def accepted_between(self, start: float, end: float, command: str = "") -> int:
        """Commands accepted in [start, end] whose name starts with `command` (all by default)."""
        return sum(start <= at <= end and what.startswith(command) for at, what in self.accepted_at)


@dataclass(frozen=True)
class Reconciliation:
    """The ledger, production and enrollment against what the load had accepted."""

    pieces: int
    passed: int
    earned_idr: int
    enrolments: int
    problems: tuple[str, ...]

    @property
    def exact(self) -> bool:
        return not self.problems


class SteadyLoad:
    """Pieces (each followed by its QC result) at `rate` per second, plus a resident enrolled every tenth tick."""

    def __init__(
        self, clients: StackClients, *, tag: str, rate: float = 10.0, artisans: int = 8, retry_for: float = 300.0
    ) -> None:
        self.clients = clients
        self.tag = tag
        self.rate = rate
        self.retry_for = retry_for
        self.figures = LoadFigures()
        self.pieces: dict[str, AcceptedPiece] = {}
        self.enrolled: dict[int, tuple[str, str]] = {}  # resident index -> (cohort, resident)
        self._artisan_count = artisans
        self._artisans: list[str] = []
        self._key = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(f"{tag}-collaborator".encode()).digest())
        self._collaborator_id = ""
        self._collaborator: httpx.AsyncClient | None = None
        self._producer: AIOKafkaProducer | None = None
        self._in_flight: set[asyncio.Future[Any]] = set()
        self._cohorts: dict[int, asyncio.Future[dict]] = {}
        self._ticks = 0
        self._stop = asyncio.Event()
        self._pacing: asyncio.Future[None] | None = None

    # --- before the load ---------------------------------------------------------------------------

    async def prepare(self) -> None:
        """A collaborator with rates, and trained artisans production already knows about."""
        collaborator = await self._post("production", "/collaborators",
                                        {"name": f"Mitra {self.tag}", "public_key": public_key_b64(self._key)},
                                        key=f"{self.tag}-collaborator")
        self._collaborator_id = collaborator["collaborator_id"]
        # It publishes as itself: its own principal may write qc-submissions and nothing else.
        onboarded = await onboard_collaborator(self.clients.env, self._collaborator_id)
        self._producer = await start_producer(onboarded.kafka)
        for product, rate in RATES.items():
            await self._post("production", f"/collaborators/{self._collaborator_id}/rates",
                             {"product": product, "rate_idr": rate, "effective_from": RATES_FROM.isoformat()},
                             key=f"{self.tag}-rate-{product}")
        token = collaborator_token(self.clients.env[keys.TOKEN_SECRET], self._collaborator_id)
        self._collaborator = httpx.AsyncClient(
            base_url=self.clients.env["ANYAM_PRODUCTION_URL"], headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        trained = await asyncio.gather(*(self._train(-1 - n) for n in range(self._artisan_count)))
        self._artisans = [resident for _, resident in trained]
        await self.clients.settle(consumers_of(self.clients.kafka.topic_prefix), timeout=self.retry_for)

    async def close(self) -> None:
        """Stop at once: commands still in flight are abandoned (after a failure nobody waits for them)."""
        self._stop.set()
        for task in [*self._in_flight, *([self._pacing] if self._pacing else [])]:
            task.cancel()
        await asyncio.gather(*self._in_flight, *([self._pacing] if self._pacing else []), return_exceptions=True)
        if self._producer is not None:
            await self._producer.stop()
        if self._collaborator is not None:
            await self._collaborator.aclose()

    # --- the load ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Begin the steady load in the background (after `prepare`)."""
        self._stop = asyncio.Event()
        self._pacing = asyncio.ensure_future(self.run(self._stop))

    async def stop(self) -> None:
        """Start no more commands, and wait until every one started was accepted."""
        self._stop.set()
        assert self._pacing is not None, "stop() before start()"
        await self._pacing
        await self.drain()

    async def run(self, stop: asyncio.Event) -> None:
        """Start one piece per tick (and an enrolment every tenth) until `stop` is set; never waits on them."""
        interval = 1.0 / self.rate
        next_tick = time.monotonic()
        while not stop.is_set():
            tick, self._ticks = self._ticks, self._ticks + 1
            self._spawn(self._piece(tick))
            if tick % 10 == 0:
                self._spawn(self._train(tick // 10))
            next_tick += interval
            # Sleeping to the next tick is the load's pace, not a wait on the system.
            try:
                await asyncio.wait_for(stop.wait(), max(0.0, next_tick - time.monotonic()))
            except TimeoutError:
                pass

    async def drain(self) -> None:
        """Wait until every command started has been accepted (or failed for good: then raise)."""
        while self._in_flight:
            done = await asyncio.gather(*list(self._in_flight), return_exceptions=True)
            for failure in done:
                if isinstance(failure, BaseException):
                    raise failure

    def _spawn(self, job: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(job)
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _piece(self, tick: int) -> None:
        artisan = self._artisans[tick % len(self._artisans)]
        product = PRODUCTS[tick % len(PRODUCTS)]
        woven_at = wib_now()
        piece = await self._post("production", "/pieces", {
            "artisan_id": artisan, "collaborator_id": self._collaborator_id, "product": product,
            "woven_at": woven_at.isoformat(),
        }, key=f"{self.tag}-piece-{tick}")
        if piece["rate_idr"] != RATES[product]:
            raise LoadFailed(f"piece {piece['piece_id']} got rate {piece['rate_idr']}, expected {RATES[product]}")
        passes = tick % 5 != 0
        data = signed(self._key, {
            "submission_id": f"qc-{self.tag}-{tick}", "piece_id": piece["piece_id"],
            "collaborator_id": self._collaborator_id, "result": "passed" if passes else "failed",
            "inspector": "qc-load", "inspected_at": (woven_at + timedelta(seconds=1)).isoformat(),
            "defects": [] if passes else ["loose-weave"],
        })
        if tick % 2 == 0:
            await self._publish_submission(piece["piece_id"], data)
        else:
            await self._until_accepted(
                lambda: self._collaborator.post("/qc-submissions", json=data,  # type: ignore[union-attr]
                                                headers={"Idempotency-Key": f"{self.tag}-qc-{tick}"}),
                what="POST /qc-submissions",
            )
        self.pieces[piece["piece_id"]] = AcceptedPiece(piece["piece_id"], artisan, piece["rate_idr"], passes)

    async def _publish_submission(self, piece_id: str, data: dict) -> None:
        # The same bytes on every attempt: one event id, so a record sent twice is applied once.
        value = submission_event(data, event_id=f"qc-event-{data['submission_id']}")
        topic = topic_name(Topic.QC_SUBMISSIONS, self.clients.kafka.topic_prefix)
        producer = self._producer
        assert producer is not None, "publishing before prepare()"
        started = time.monotonic()
        while True:
            try:
                await asyncio.wait_for(producer.send_and_wait(
                    topic, value, key=piece_id.encode(), headers=[(CONTENT_TYPE_HEADER, CONTENT_TYPE.encode())],
                ), 10)
                self._accepted(started, "publish to qc-submissions")
                return
            except Exception:  # noqa: BLE001 - broker unreachable or slow: the collaborator sends it again
                await self._retry(started, "publish to qc-submissions")

    async def _train(self, index: int) -> tuple[str, str]:
        """Register, enrol and complete one resident (synthetic personal data); returns (cohort, resident)."""
        cohort = await self._cohort(max(index, 0) // COHORT_SIZE)
        digits = int(hashlib.sha256(f"{self.tag}-{index}".encode()).hexdigest()[:12], 16) % 10**12
        resident = (await self._post("enrollment", "/residents", {
            "rusunawa": "Nagrak", "unit": f"Blok L-{abs(index)}", "full_name": f"Warga Uji {abs(index)}",
            "nik": f"3175{digits:012d}", "phone": f"0813{digits % 10**8:08d}",
        }, key=f"{self.tag}-resident-{index}"))["resident_id"]
        await self._post("enrollment", f"/cohorts/{cohort}/enrolments", {"resident_id": resident},
                         key=f"{self.tag}-enrol-{index}")
        await self._post("enrollment", f"/cohorts/{cohort}/completions",
                         {"resident_id": resident, "completed_on": COHORT_DAYS[1].isoformat()},
                         key=f"{self.tag}-complete-{index}")
        self.enrolled[index] = (cohort, resident)
        return cohort, resident

    async def _cohort(self, number: int) -> str:
        if number not in self._cohorts:  # one request per cohort, however many residents wait for it
            self._cohorts[number] = asyncio.ensure_future(self._schedule(number))
        return (await self._cohorts[number])["cohort_id"]

    async def _schedule(self, number: int) -> dict:
        # A cohort belongs to a registered rusunawa (registering it again changes nothing).
        await self._post("enrollment", "/rusunawa", {"name": "Nagrak", "ovop_product": "piring"},
                         key=f"{self.tag}-rusunawa-{number}")
        return await self._post("enrollment", "/cohorts", {
            "rusunawa": "Nagrak", "skill": "menganyam", "product_focus": "piring",
            "starts_on": COHORT_DAYS[0].isoformat(), "ends_on": COHORT_DAYS[1].isoformat(), "capacity": 500,
        }, key=f"{self.tag}-cohort-{number}")

    # --- retrying until accepted -------------------------------------------------------------------

    async def _post(self, service: str, path: str, body: dict, *, key: str) -> dict:
        client = self.clients.http[service]
        response = await self._until_accepted(
            lambda: client.post(path, json=body, headers={"Idempotency-Key": key}), what=f"{service} POST {path}"
        )
        return response.json()

    async def _until_accepted(self, send: Callable[[], Awaitable[httpx.Response]], *, what: str) -> httpx.Response:
        started = time.monotonic()
        while True:
            try:
                response = await send()
            except httpx.TransportError:  # the service is down or restarting
                await self._retry(started, what)
                continue
            if response.status_code < 400:
                self._accepted(started, what)
                return response
            if response.status_code < 500 and response.status_code != 409 or (
                response.status_code == 409 and response.json().get("code") != "busy"
            ):
                raise LoadFailed(f"{what} refused: {response.status_code} {response.text[:300]}")
            self.figures.retried_statuses[response.status_code] += 1
            await self._retry(started, what)

    def _accepted(self, started: float, what: str) -> None:
        now = time.monotonic()
        self.figures.accepted += 1
        self.figures.accepted_at.append((now, what))
        self.figures.longest_wait_seconds = max(self.figures.longest_wait_seconds, now - started)

    async def _retry(self, started: float, what: str) -> None:
        if time.monotonic() - started > self.retry_for:
            raise LoadFailed(f"{what} was not accepted within {self.retry_for:.0f}s")
        self.figures.retries += 1
        await asyncio.sleep(RETRY_BACKOFF_SECONDS)  # a client's backoff between attempts

    # --- afterwards ----------------------------------------------------------------------------------

    async def reconcile(self) -> Reconciliation:
        """Settle every service, then compare the ledger, production and enrollment with what was accepted."""
        await self.drain()
        await self.clients.settle(consumers_of(self.clients.kafka.topic_prefix), timeout=self.retry_for)
        problems: list[str] = []
        by_artisan: dict[str, list[AcceptedPiece]] = {}
        for piece in self.pieces.values():
            by_artisan.setdefault(piece.artisan_id, []).append(piece)
        earned_total = 0
        for artisan, pieces in sorted(by_artisan.items()):
            passed = {p.piece_id: p.rate_idr for p in pieces if p.passes}
            response = await self.clients.http["payout"].get(f"/artisans/{artisan}/statement")
            statement = response.json() if response.status_code == 200 else {"balances": {}, "entries": []}
            earned = statement["balances"].get("earned_idr", 0)
            earned_total += earned
            transactions: dict[str, str] = {}
            for entry in statement["entries"]:
                if entry["kind"] == "earned":
                    transactions[entry["transaction_id"]] = entry["piece_id"]
            in_ledger = sorted(transactions.values())
            if earned != sum(passed.values()):
                problems.append(f"artisan {artisan}: earned {earned} IDR in the ledger, {sum(passed.values())} "
                                "IDR accepted")
            if in_ledger != sorted(passed):
                missing = set(passed) - set(in_ledger)
                twice = {p for p in in_ledger if in_ledger.count(p) > 1}
                extra = set(in_ledger) - set(passed)
                problems.append(f"artisan {artisan}: {len(missing)} passed pieces missing from the ledger, "
                                f"{len(twice)} earned twice, {len(extra)} earned without a pass")
        for piece in self.pieces.values():
            found = (await self.clients.http["production"].get(f"/pieces/{piece.piece_id}")).json()
            result = (found.get("qc") or {}).get("result")
            if result != ("passed" if piece.passes else "failed"):
                problems.append(f"piece {piece.piece_id}: production says QC {result!r}")
        cohorts: dict[str, set[str]] = {}
        for cohort, resident in self.enrolled.values():
            cohorts.setdefault(cohort, set()).add(resident)
        for cohort, residents in cohorts.items():
            state = await self.clients.get("enrollment", f"/cohorts/{cohort}")
            if set(state["enrolled"]) != residents or set(state["completed"]) != residents:
                problems.append(f"cohort {cohort}: {len(state['enrolled'])} enrolled and {len(state['completed'])} "
                                f"completed, {len(residents)} accepted")
        return Reconciliation(
            pieces=len(self.pieces), passed=sum(p.passes for p in self.pieces.values()), earned_idr=earned_total,
            enrolments=len(self.enrolled), problems=tuple(problems),
        )
