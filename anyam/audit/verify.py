"""`anyam verify`: replay the history, compare it with the live ledger, check every invariant.

The live ledger is read only through the payout service's HTTP API with the
auditor's token (an auditor has no business in the payout database): the
digest and every account's balance as of the cut. Equal digests mean equal
rows, since the digest covers every transaction's event id, type and time, its
two accounts and its amount (docs/contract/ledger.md). When they differ, every artisan's statement is read
from both ledgers and compared transaction by transaction, so the report names
the row: missing from the live ledger, extra in it, an amount or account that
differs, or a row citing an event that is not in the history.

Then the invariants of SPEC §7 are checked on the history and the replayed
ledger (`anyam.audit.invariants`). The verdict is "verified" only when the
live ledger equals the replay and every invariant holds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from anyam.audit import invariants as inv
from anyam.audit.invariants import HistoryFacts, InvariantResult, Violation
from anyam.audit.replay import (
    DEFAULT_WORKERS,
    AuditError,
    HistoryRead,
    PartitionOrder,
    ReplayedLedger,
    ReplayProgress,
    history_ends,
    replayed_ledger,
    stop_offsets,
)
from services.payout import domain
from shared.contracts import EVENT_TOPICS, base_topic
from shared.contracts.provenance import TrustAnchors
from shared.settings import KafkaSettings

#: Statements read at once from the payout service when the ledgers differ.
CONCURRENT_READS = 8


class LiveLedger:
    """The live ledger as the payout service's HTTP API shows it to an auditor."""

    def __init__(self, base_url: str, token: str, *, timeout: float = 60.0, known_at: datetime | None = None) -> None:
        self.base_url = base_url
        #: Every read is of the ledger as it was known at this moment (recording time; None: now).
        self.known_at = known_at
        self._client = httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {token}"},
                                         timeout=timeout)

    async def close(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()

    async def _get(self, path: str, as_of: datetime | None, *, missing_ok: bool = False) -> dict[str, Any] | None:
        params = {"as_of": as_of.isoformat()} if as_of is not None else {}
        if self.known_at is not None:
            params["as_known_at"] = self.known_at.isoformat()
        try:
            response = await self._client.get(path, params=params)
        except httpx.HTTPError as exc:
            raise AuditError(f"cannot reach the payout service at {self.base_url} ({type(exc).__name__}); "
                             "check --payout-url") from exc
        if response.status_code in (401, 403):
            raise AuditError(f"the payout service refused the auditor token (HTTP {response.status_code}); "
                             "check ANYAM_AUDITOR_TOKEN")
        if response.status_code == 404 and missing_ok:
            return None
        if response.status_code != 200:
            try:
                title = response.json().get("title") or response.json().get("detail")
            except ValueError:
                title = None
            raise AuditError(f"the payout service answered GET {path} with HTTP {response.status_code}"
                             + (f" ({title})" if title else ""))
        return response.json()

    async def digest(self, as_of: datetime | None = None) -> dict[str, Any]:
        """`GET /ledger/digest`: digest, transactions and postings as of `as_of`."""
        body = await self._get("/ledger/digest", as_of)
        assert body is not None
        return body

    async def balances(self, as_of: datetime | None = None) -> dict[str, int]:
        """`GET /ledger/balances`: every account's balance as of `as_of`."""
        body = await self._get("/ledger/balances", as_of)
        assert body is not None
        return dict(body["accounts"])

    async def statement_postings(self, artisan_id: str, as_of: datetime | None = None) -> list[dict[str, Any]]:
        """`GET /artisans/{id}/statement`'s entries (none when the live ledger has no such artisan)."""
        from urllib.parse import quote

        body = await self._get(f"/artisans/{quote(artisan_id, safe='')}/statement", as_of, missing_ok=True)
        return list(body["entries"]) if body is not None else []


@dataclass(frozen=True)
class LedgerSummary:
    """A ledger's digest as of the cut and what it covers."""

    digest: str
    transactions: int
    postings: int

    def to_json(self) -> dict[str, Any]:
        """The summary as a JSON object."""
        return {"algorithm": "sha256", "digest": self.digest, "transactions": self.transactions,
                "postings": self.postings}


@dataclass
class VerifyReport:
    """The verdict of `anyam verify`, every invariant's result, and what the auditor should know besides."""

    as_of: datetime | None
    replayed: LedgerSummary
    live: LedgerSummary
    live_url: str
    invariants: list[InvariantResult]
    history: HistoryRead
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True only when the live ledger equals the replay and every invariant holds."""
        return all(result.holds for result in self.invariants)

    @property
    def broken(self) -> list[InvariantResult]:
        """The invariants that do not hold."""
        return [result for result in self.invariants if not result.holds]

    def to_json(self) -> dict[str, Any]:
        """The machine-readable report (`--json-report`)."""
        return {
            "verified": self.ok,
            "as_of": self.as_of.isoformat() if self.as_of else None,
            "broken_invariants": [result.name for result in self.broken],
            "replayed_ledger": self.replayed.to_json(),
            "live_ledger": self.live.to_json() | {"url": self.live_url},
            "invariants": [result.to_json() for result in self.invariants],
            "warnings": self.warnings,
            "history": self.history.to_json(),
        }


async def verify(
    kafka: KafkaSettings,
    *,
    payout_url: str,
    auditor_token: str,
    as_of: datetime | None = None,
    database_url: str | None = None,
    partition_order: PartitionOrder | None = None,
    progress: Callable[[ReplayProgress], None] | None = None,
    status: Callable[[str], None] = lambda _: None,
    workers: int = DEFAULT_WORKERS,
    trust: TrustAnchors,
    known_at: datetime | None = None,
) -> VerifyReport:
    """Replay the topics into a scratch ledger, compare it with the live one as of `as_of`, and check
    every invariant. Raises `AuditError` when the audit cannot be carried out at all.

    With `known_at`, both are read as they were known at that moment: the replay reads only the
    records on the topics by then, the live ledger cuts by the same records' times (`as_known_at`)."""
    live = LiveLedger(payout_url, auditor_token, known_at=known_at)
    try:
        await live.digest(as_of)  # fail fast, before a long replay, on a wrong URL or token
        stop_at = None if known_at is None else await stop_offsets(kafka, known_at)
        facts = HistoryFacts()
        status("replaying the history")
        async with replayed_ledger(kafka, database_url=database_url, partition_order=partition_order,
                                   observers=[facts.observe], progress=progress, workers=workers,
                                   trust=trust, stop_at=stop_at) as ledger:
            status(f"comparing with the live ledger at {payout_url}")
            report = await _compare_and_check(ledger, live, facts, as_of)
        grown = 0 if known_at is not None else await _history_growth(kafka, ledger.history)
        if grown:
            report.warnings.append(
                f"{grown} records were published while verifying, after the history read; if the live ledger "
                "already holds their events they show as extra rows. Verify again when the stack is quiet, or "
                "--as-of a moment before them.")
        return report
    finally:
        await live.close()


async def _compare_and_check(
    ledger: ReplayedLedger, live: LiveLedger, facts: HistoryFacts, as_of: datetime | None
) -> VerifyReport:
    mine = await ledger.digest(as_of)
    theirs = await live.digest(as_of)
    replayed_summary = LedgerSummary(mine.digest, mine.transactions, mine.postings)
    live_summary = LedgerSummary(theirs["digest"], theirs["transactions"], theirs["postings"])
    my_balances, their_balances = await ledger.balances(as_of), await live.balances(as_of)

    comparison = inv.diff_balances(my_balances, their_balances)
    orphans: list[Violation] = []
    live_legs: list[tuple[str, str, list[int]]] = []
    compared_rows = None
    if replayed_summary.digest != live_summary.digest:
        comparison.insert(0, Violation(
            f"the live ledger's digest {live_summary.digest} ({live_summary.transactions} transactions, "
            f"{live_summary.postings} postings) differs from the replay's {replayed_summary.digest} "
            f"({replayed_summary.transactions} transactions, {replayed_summary.postings} postings)",
            kind="digest-differs",
            details={"live": live_summary.to_json(), "replayed": replayed_summary.to_json()}))
        artisans = {a for account in (*my_balances, *their_balances) if (a := inv.artisan_of(account))}
        artisans |= {a.artisan_id for a in await ledger.artisans(as_of)}
        replayed_entries, live_entries = await _statements(ledger, live, sorted(artisans), as_of)
        differences, orphans = inv.diff_ledgers(replayed_entries, live_entries, facts.money_event_ids)
        comparison += differences
        compared_rows = len(replayed_entries.keys() | live_entries.keys())
        # Transactions other than earnings post only to artisan accounts, so a statement shows all
        # their postings: each can be checked to balance on its own.
        live_legs = [(e.transaction_id, e.event_id, list(e.legs.values())) for e in live_entries.values()
                     if e.kind != domain.Kind.EARNED]

    rows = await ledger.rows()
    results = [
        InvariantResult(
            inv.LIVE_MATCHES_REPLAY,
            "the live ledger equals the replay: digest, every account's balance"
            + (", every transaction" if compared_rows is not None else ""),
            1 + len(my_balances.keys() | their_balances.keys()) + (compared_rows or 0), tuple(comparison)),
        InvariantResult(
            inv.LEDGER_EVENTS_IN_HISTORY,
            "every live ledger row cites an event in the history"
            + (" (the digests are equal: the live rows are the replayed ones)" if compared_rows is None else ""),
            live_summary.transactions, tuple(orphans)),
        inv.check_transactions_balance(await ledger.transaction_legs(as_of),
                                       live_total=sum(their_balances.values()), live_legs=live_legs),
        inv.check_pieces_earned_once(facts, rows, as_of),
        inv.check_earned_at_piece_rate(facts, as_of),
        inv.check_paid_within_earned(rows, as_of),
        inv.check_qc_signatures(facts, as_of),
        inv.check_history_attested(ledger.history.refused, ledger.history.records),
        inv.check_payouts_follow_schedule(facts, as_of),
    ]
    return VerifyReport(as_of, replayed_summary, live_summary, live.base_url, results, ledger.history,
                        warnings=_warnings(ledger.history))


async def _statements(
    ledger: ReplayedLedger, live: LiveLedger, artisans: Iterable[str], as_of: datetime | None
) -> tuple[dict[str, inv.Entry], dict[str, inv.Entry]]:
    """Every artisan's statement from both ledgers, folded into one entry per transaction each."""
    artisans = list(artisans)
    gate = asyncio.Semaphore(CONCURRENT_READS)

    async def read(artisan_id: str) -> list[dict[str, Any]]:
        async with gate:
            return await live.statement_postings(artisan_id, as_of)

    theirs = await asyncio.gather(*(read(a) for a in artisans))
    mine = [await ledger.statement_postings(a, as_of) for a in artisans]  # one connection: one at a time
    return (inv.entries_from_postings(p for postings in mine for p in postings),
            inv.entries_from_postings(p for postings in theirs for p in postings))


def _warnings(history: HistoryRead) -> list[str]:
    """What the auditor should know that breaks no invariant by itself."""
    notes = []
    if history.missing_topics:
        notes.append(f"topics missing from the broker: {', '.join(history.missing_topics)}")
    for (topic, partition), start in sorted(history.truncated.items()):
        notes.append(f"{topic}[{partition}] starts at offset {start}: earlier records were deleted from the log, "
                     "so events they held cannot be replayed")
    if history.undecodable_count:
        by_topic = _count_by(u.position.topic for u in history.undecodable)
        notes.append(f"{history.undecodable_count} records are not acceptable events and were skipped, as the live "
                     f"consumers skip them ({_listing(by_topic)})")
    if history.refused_count:
        reasons = _count_by(r.reason for r in history.refused)
        notes.append(f"{history.refused_count} events were refused by the ledger, as the live consumer refuses "
                     f"them ({_listing(reasons)}); see the JSON report for their ids")
    return notes


def _count_by(values: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


def _listing(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{key}: {n}" for key, n in sorted(counts.items()))


async def _history_growth(kafka: KafkaSettings, history: HistoryRead) -> int:
    """How many records reached the event topics after the replay took their end offsets."""
    now = await history_ends(kafka, EVENT_TOPICS)
    grown = 0
    for tp, end in now.items():
        key = (base_topic(tp.topic, kafka.topic_prefix).value, tp.partition)
        grown += max(0, end - history.ends.get(key, 0))
    return grown
