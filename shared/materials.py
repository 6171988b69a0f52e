"""Materials reconciliation: what was issued to each artisan beside what her pieces needed (docs/materials.md).

One pure function, `reconcile`, holds the rules; production's `GET /materials/reconciliation`
and payout's dashboard both call it with the facts their read models keep, so the two can never
flag differently. No I/O here.

The facts (all from the `production` topic):
- usages (`material-usage-set`): per collaborator, product and material, how many units of the
  material one piece needs from `effective_from` on;
- issues (`materials-issued`): units of a material handed to an artisan for a collaborator, at
  the event's time;
- pieces (`piece-woven`, and `qc-passed` for `passed`): what an artisan wove for a collaborator.

Per artisan, collaborator, material and unit, the **expected use** is the sum over her pieces for
that collaborator of the usage in force for the piece's product at its `woven_at` (none in force:
0). Two anomalies are flagged:
- `woven-beyond-materials`: expected use > issued (exactly the allowance is not flagged);
- `idle-materials`: issued > expected use (she still holds some), and neither an issue of that
  material nor a piece for that collaborator happened in the `idle_weeks` weeks up to `as_of`:
  the later of the two is on or before `as_of` − 7 × `idle_weeks` days, dates in WIB.
Facts dated after `as_of` (WIB) are left out, so `as_of` in the past reads the past.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from shared.timeutil import to_wib

#: `idle-materials` after this many weeks without a piece or an issue, unless a deployment says otherwise.
DEFAULT_IDLE_WEEKS = 4
#: The bounds of the setting: at least a week, at most a year.
MIN_IDLE_WEEKS, MAX_IDLE_WEEKS = 1, 52

WOVEN_BEYOND_MATERIALS = "woven-beyond-materials"
IDLE_MATERIALS = "idle-materials"


@dataclass(frozen=True)
class UsageFact:
    collaborator_id: str
    product: str
    material: str
    unit: str
    quantity_per_piece: int
    effective_from: datetime


@dataclass(frozen=True)
class IssueFact:
    artisan_id: str
    collaborator_id: str
    material: str
    unit: str
    quantity: int
    issued_at: datetime


@dataclass(frozen=True)
class PieceFact:
    """`woven` pieces (of which `passed` passed QC) an artisan wove for a collaborator at one moment."""

    artisan_id: str
    collaborator_id: str
    product: str
    woven_at: datetime
    woven: int = 1
    passed: int = 0


@dataclass(frozen=True)
class MaterialLine:
    """One material (in one unit) an artisan received or needed for one collaborator."""

    material: str
    unit: str
    issued: int
    expected: int
    last_issued_on: date | None
    flags: tuple[str, ...]

    @property
    def remaining(self) -> int:
        """What she should still hold (negative: she wove beyond what she was given)."""
        return self.issued - self.expected


@dataclass(frozen=True)
class Holding:
    """An artisan's materials and pieces with one collaborator."""

    artisan_id: str
    collaborator_id: str
    woven: int
    passed: int
    last_woven_on: date | None
    materials: tuple[MaterialLine, ...]


@dataclass(frozen=True)
class Anomaly:
    kind: str
    artisan_id: str
    collaborator_id: str
    material: str
    unit: str
    issued: int
    expected: int
    #: The last day something happened (an issue or a piece): for `idle-materials`, idle since then.
    last_activity_on: date | None


@dataclass(frozen=True)
class CollaboratorTotal:
    """One collaborator's figures for one material, over all its artisans."""

    collaborator_id: str
    material: str
    unit: str
    issued: int
    expected: int
    artisans: int
    flagged: int


@dataclass(frozen=True)
class Reconciliation:
    as_of: date
    idle_weeks: int
    holdings: tuple[Holding, ...]

    @property
    def anomalies(self) -> list[Anomaly]:
        found: list[Anomaly] = []
        for holding in self.holdings:
            for line in holding.materials:
                last = max((d for d in (line.last_issued_on, holding.last_woven_on) if d is not None), default=None)
                found.extend(Anomaly(kind, holding.artisan_id, holding.collaborator_id, line.material, line.unit,
                                     line.issued, line.expected, last) for kind in line.flags)
        return found

    def totals(self) -> list[CollaboratorTotal]:
        """Per collaborator and material: issued, expected use, how many artisans, how many flagged."""
        sums: dict[tuple[str, str, str], list[int]] = {}
        for holding in self.holdings:
            for line in holding.materials:
                row = sums.setdefault((holding.collaborator_id, line.material, line.unit), [0, 0, 0, 0])
                row[0] += line.issued
                row[1] += line.expected
                row[2] += 1
                row[3] += bool(line.flags)
        return [CollaboratorTotal(c, m, u, *row) for (c, m, u), row in sorted(sums.items())]


def reconcile(
    usages: Iterable[UsageFact], issues: Iterable[IssueFact], pieces: Iterable[PieceFact], *,
    as_of: date, idle_weeks: int = DEFAULT_IDLE_WEEKS,
) -> Reconciliation:
    """Issues beside expected use per artisan, collaborator and material, flagged as the module says."""
    if not MIN_IDLE_WEEKS <= idle_weeks <= MAX_IDLE_WEEKS:
        raise ValueError(f"idle_weeks must be {MIN_IDLE_WEEKS} to {MAX_IDLE_WEEKS}")
    in_force: dict[tuple[str, str], dict[str, list[UsageFact]]] = {}
    for usage in sorted(usages, key=lambda u: u.effective_from):
        in_force.setdefault((usage.collaborator_id, usage.product), {}).setdefault(usage.material, []).append(usage)

    # Per (artisan, collaborator): pieces woven and passed, the last day woven; per material line:
    # issued, expected, the last day issued.
    pairs: dict[tuple[str, str], list] = {}
    lines: dict[tuple[str, str], dict[tuple[str, str], list]] = {}

    def pair(artisan_id: str, collaborator_id: str) -> list:
        return pairs.setdefault((artisan_id, collaborator_id), [0, 0, None])

    def line(artisan_id: str, collaborator_id: str, material: str, unit: str) -> list:
        pair(artisan_id, collaborator_id)
        return lines.setdefault((artisan_id, collaborator_id), {}).setdefault((material, unit), [0, 0, None])

    for issue in issues:
        day = to_wib(issue.issued_at).date()
        if day > as_of:
            continue
        row = line(issue.artisan_id, issue.collaborator_id, issue.material, issue.unit)
        row[0] += issue.quantity
        row[2] = day if row[2] is None else max(row[2], day)
    for piece in pieces:
        day = to_wib(piece.woven_at).date()
        if day > as_of:
            continue
        totals = pair(piece.artisan_id, piece.collaborator_id)
        totals[0] += piece.woven
        totals[1] += piece.passed
        totals[2] = day if totals[2] is None else max(totals[2], day)
        for material, history in in_force.get((piece.collaborator_id, piece.product), {}).items():
            used = _in_force_at(history, piece.woven_at)
            if used is not None:
                line(piece.artisan_id, piece.collaborator_id, material, used.unit)[1] += (
                    used.quantity_per_piece * piece.woven)

    idle_from = as_of - timedelta(weeks=idle_weeks)
    holdings = []
    for (artisan_id, collaborator_id), (woven, passed, last_woven) in sorted(pairs.items()):
        materials = []
        for (material, unit), (issued, expected, last_issued) in sorted(lines.get((artisan_id, collaborator_id),
                                                                                  {}).items()):
            flags = []
            if expected > issued:
                flags.append(WOVEN_BEYOND_MATERIALS)
            last_activity = max((d for d in (last_issued, last_woven) if d is not None), default=None)
            if issued > expected and last_activity is not None and last_activity <= idle_from:
                flags.append(IDLE_MATERIALS)
            materials.append(MaterialLine(material, unit, issued, expected, last_issued, tuple(flags)))
        holdings.append(Holding(artisan_id, collaborator_id, woven, passed, last_woven, tuple(materials)))
    return Reconciliation(as_of=as_of, idle_weeks=idle_weeks, holdings=tuple(holdings))


def _in_force_at(history: list[UsageFact], moment: datetime) -> UsageFact | None:
    """The usage whose `effective_from` is the latest at or before `moment` (history sorted by it)."""
    found: UsageFact | None = None
    for usage in history:
        if usage.effective_from > moment:
            break
        found = usage
    return found
