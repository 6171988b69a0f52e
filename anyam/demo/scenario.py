"""The demo's programmes as data: pure and deterministic per seed.

Rusunawa Nagrak as the source article tells it: Bimtek Menganyam from 26 to 29
February 2024, 25 participants, all women; one collaborator company pays per
woven piece that passes its QC; weekly payouts. Beside it a smaller one, made
up to show a second rusunawa with another craft: Rusunawa Marunda, Bimtek
Menjahit (recycled bags), 6 participants, its own collaborator and rates.
Each rusunawa's payout runs pay its own residents only. The people are
invented (names, NIKs and phones are made up from the seed); the money and
the rules are the programme's.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from shared.timeutil import WIB


@dataclass(frozen=True)
class Programme:
    """One rusunawa's programme as data: its Bimtek, its collaborator and rates, and its weeks of work."""

    #: Short and stable: names its payout runs (`<key>-2024-w10`) and its demo's idempotency keys.
    key: str
    rusunawa: str
    skill: str
    ovop_product: str
    cohort_starts: date
    cohort_ends: date
    collaborator: str
    #: The collaborator's QC inspector, a code of its register (never a person's name).
    inspector: str
    #: Opening piece rates (rupiah), effective from `rates_from`; the OVOP product first.
    opening_rates: Mapping[str, int]
    rates_from: datetime
    first_monday: date
    weeks: int
    defects: tuple[str, ...]
    #: NIK's first six digits (province, city, district) and the range its made-up sequence numbers take.
    nik_region: str
    nik_first: int
    #: A mid-programme raise (product, rate, from): pieces made before it keep the old rate.
    raise_: tuple[str, int, datetime] | None = None
    #: Share of pieces that are the OVOP product; the rest are the other products, evenly.
    ovop_share: float = 0.55
    #: Which week (0-based) has one payout bounce at the bank, to be paid with the next run.
    failing_week: int | None = None
    #: Materials each participant is given ((name, quantity, unit)), and how much of the first one a
    #: piece of each product needs (docs/materials.md); none: the reconciliation has nothing to check.
    materials: tuple[tuple[str, int, str], ...] = ()
    usage_per_piece: Mapping[str, int] = field(default_factory=dict)

    @property
    def tag(self) -> str:
        """What the demo adds to its idempotency keys; Nagrak's none, so its keys are as they always were."""
        return "" if self.key == "nagrak" else f"-{self.key}"


NAGRAK = Programme(
    key="nagrak", rusunawa="Nagrak", skill="menganyam", ovop_product="piring",
    cohort_starts=date(2024, 2, 26), cohort_ends=date(2024, 2, 29),
    collaborator="PT Anyaman Nusantara Sejahtera", inspector="qc-nusantara-02",
    opening_rates={"piring": 15_000, "tempat mangkuk": 12_500, "tas": 45_000, "dompet": 20_000},
    # From the first working day after the Bimtek.
    rates_from=datetime(2024, 3, 1, 0, 0, tzinfo=WIB),
    raise_=("piring", 17_500, datetime(2024, 3, 18, 0, 0, tzinfo=WIB)),
    first_monday=date(2024, 3, 4), weeks=4,
    defects=("loose-weave", "wrong-size", "colour-mismatch", "frayed-edge", "uneven-shape"),  # codes (SPEC §7)
    # 31 75 = DKI Jakarta, Jakarta Timur (Cipayung, where Rusunawa Nagrak stands); then a made-up rest.
    nik_region="317506", nik_first=1,
    failing_week=1,
    materials=(("rotan sintetis", 7_000, "g"), ("tali plastik", 3, "gulung")),
    # Grams of rotan sintetis per piece: the most prolific weavers need more than the 7 kg each was
    # given, which the reconciliation flags.
    usage_per_piece={"piring": 150, "tempat mangkuk": 200, "tas": 400, "dompet": 120},
)

MARUNDA = Programme(
    key="marunda", rusunawa="Marunda", skill="menjahit", ovop_product="tas daur ulang",
    cohort_starts=date(2024, 3, 4), cohort_ends=date(2024, 3, 7),
    collaborator="CV Jahit Pesisir Lestari", inspector="qc-pesisir-01",
    opening_rates={"tas daur ulang": 35_000, "dompet koin": 10_000, "sarung bantal": 22_500},
    rates_from=datetime(2024, 3, 8, 0, 0, tzinfo=WIB),
    first_monday=date(2024, 3, 11), weeks=3,
    defects=("wrong-size", "frayed-edge", "stain", "weak-handle", "colour-mismatch"),
    # 31 72 = DKI Jakarta, Jakarta Utara (where Rusunawa Marunda stands); the sequence numbers start at
    # 5001, so no NIK is ever one of Nagrak's.
    nik_region="317206", nik_first=5001,
    ovop_share=0.6,
)

# Nagrak's figures by name, as the tests and the materials docs use them.
RUSUNAWA, SKILL, OVOP_PRODUCT = NAGRAK.rusunawa, NAGRAK.skill, NAGRAK.ovop_product
COHORT_STARTS, COHORT_ENDS = NAGRAK.cohort_starts, NAGRAK.cohort_ends
COLLABORATOR = NAGRAK.collaborator
MATERIALS = NAGRAK.materials
ROTAN_PER_PIECE = NAGRAK.usage_per_piece

_GIVEN = ("Siti", "Dewi", "Sri", "Nur", "Rina", "Yuliana", "Ani", "Wati", "Ratna", "Lestari", "Fitri", "Endang",
          "Sumarni", "Kartini", "Maryam", "Suryani", "Indah", "Ida", "Tuti", "Aminah", "Rohani", "Yati", "Eka",
          "Nani", "Murni", "Rahmawati", "Sulastri", "Heni")
_FAMILY = ("Aminah", "Lestari", "Wahyuni", "Hayati", "Marlina", "Handayani", "Rahayu", "Susanti", "Purnamasari",
           "Kusumawati", "Setiawati", "Anggraini", "Maharani", "Permatasari", "Safitri", "Fauziah")


@dataclass(frozen=True)
class Participant:
    """One resident: their personal data (which only enrollment ever stores) and how they weave."""

    index: int
    full_name: str
    nik: str
    phone: str
    unit: str
    payout_account: str
    pieces_per_week: int
    pass_rate: float


@dataclass(frozen=True)
class Weaving:
    """One piece as the scenario plans it: who, what, when woven, and the collaborator's QC verdict."""

    participant: int
    product: str
    woven_at: datetime
    passes: bool
    defects: tuple[str, ...]
    inspected_at: datetime


@dataclass(frozen=True)
class PayoutRun:
    """A weekly payout run: its id, the Sunday-night cut, and which payouts fail at the bank."""

    run_id: str
    period_end: datetime
    failing_participants: frozenset[int] = field(default_factory=frozenset)

    @property
    def run_at(self) -> datetime:
        """When staff run it: the Monday morning after the cut (the programme's date, not today's)."""
        return datetime.combine(self.period_end.date() + timedelta(days=1), time(10, 0), WIB)

    @property
    def settled_at(self) -> datetime:
        """When the bank's answers come back: that Monday afternoon."""
        return self.run_at + timedelta(hours=5)


@dataclass(frozen=True)
class Scenario:
    seed: int
    participants: tuple[Participant, ...]
    weavings: tuple[Weaving, ...]
    runs: tuple[PayoutRun, ...]
    programme: Programme = NAGRAK

    def rate_at(self, product: str, moment: datetime) -> int:
        """The rate in force for `product` at `moment` (what `piece-woven` must carry)."""
        if self.programme.raise_ is not None:
            raised_product, raised_rate, raised_from = self.programme.raise_
            if product == raised_product and moment >= raised_from:
                return raised_rate
        return self.programme.opening_rates[product]


def nagrak(seed: int = 2024, participants: int = 25) -> Scenario:
    """The whole programme for `seed`: the same seed always gives the same people, pieces and verdicts."""
    return build(NAGRAK, random.Random(seed), seed, participants)


def marunda(seed: int = 2024, participants: int = 6) -> Scenario:
    """The smaller sewing programme at Rusunawa Marunda, from its own random stream (Nagrak's stays as it was)."""
    return build(MARUNDA, random.Random(f"marunda-{seed}"), seed, participants)


def programmes(seed: int = 2024) -> tuple[Scenario, ...]:
    """What `anyam demo` runs: both rusunawa, each with its own craft, cohort and collaborator."""
    return nagrak(seed), marunda(seed)


def build(programme: Programme, rng: random.Random, seed: int, participants: int) -> Scenario:
    """`programme`'s people, pieces, verdicts and weekly runs, drawn from `rng` in a fixed order."""
    people = tuple(_participant(rng, programme, i) for i in range(participants))
    others = tuple(p for p in programme.opening_rates if p != programme.ovop_product)
    weavings: list[Weaving] = []
    for week in range(programme.weeks):
        monday = programme.first_monday + timedelta(weeks=week)
        for person in people:
            for _ in range(person.pieces_per_week):
                day = monday + timedelta(days=rng.randrange(6))  # Monday to Saturday
                woven_at = datetime.combine(day, time(rng.randrange(8, 17), rng.randrange(60)), WIB)
                product = programme.ovop_product if rng.random() < programme.ovop_share else rng.choice(others)
                passes = rng.random() < person.pass_rate
                defects = () if passes else tuple(sorted(rng.sample(programme.defects, rng.randint(1, 2))))
                # Inspected within a day, and no later than Saturday 17:00, so each week's
                # payout (cut Sunday night) covers that week's pieces.
                inspected_at = min(woven_at + timedelta(hours=rng.randrange(2, 20)),
                                   datetime.combine(monday + timedelta(days=5), time(17, 0), WIB))
                inspected_at = max(inspected_at, woven_at + timedelta(minutes=30))
                weavings.append(Weaving(person.index, product, woven_at, passes, defects, inspected_at))
    weavings.sort(key=lambda w: (w.woven_at, w.participant))
    runs = []
    for week in range(programme.weeks):
        monday = programme.first_monday + timedelta(weeks=week)
        year, number, _ = monday.isocalendar()
        runs.append(PayoutRun(
            run_id=f"{programme.key}-{year}-w{number:02d}",
            period_end=datetime.combine(monday + timedelta(days=6), time(23, 59, 59), WIB),
            # One e-wallet transfer bounces; the money goes back to payable and is paid with the next run.
            failing_participants=(frozenset({rng.randrange(participants)}) if week == programme.failing_week
                                  else frozenset()),
        ))
    return Scenario(seed=seed, participants=people, weavings=tuple(weavings), runs=tuple(runs),
                    programme=programme)


def _participant(rng: random.Random, programme: Programme, index: int) -> Participant:
    given, family = rng.choice(_GIVEN), rng.choice(_FAMILY)
    birth = date(1970, 1, 1) + timedelta(days=rng.randrange(30 * 365))
    # Region, then day of birth (+40: a woman), month, year, and a sequence number in the programme's range.
    nik = f"{programme.nik_region}{birth.day + 40:02d}{birth.month:02d}{birth.year % 100:02d}" \
          f"{programme.nik_first + index:04d}"
    return Participant(
        index=index,
        full_name=f"{given} {family}",
        nik=nik,
        phone=f"08{rng.choice((12, 13, 21, 52, 57, 77, 81))}{rng.randrange(10**7, 10**8)}",
        unit=f"Blok {rng.choice('ABCD')}-{rng.randrange(1, 6)}{rng.randrange(1, 21):02d}",
        payout_account=f"BRI {rng.randrange(10**14, 10**15)}",
        pieces_per_week=rng.randint(3, 8),
        pass_rate=rng.uniform(0.7, 0.95),
    )
