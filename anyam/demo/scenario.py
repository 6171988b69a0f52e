"""The Nagrak programme as the source article tells it, as data: pure and deterministic per seed.

Rusunawa Nagrak, Bimtek Menganyam from 26 to 29 February 2024, 25 participants,
all women; one collaborator company pays per woven piece that passes its QC;
weekly payouts. The people are invented (names, NIKs and phones are made up
from the seed); the money and the rules are the programme's.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from shared.timeutil import WIB

RUSUNAWA = "Nagrak"
SKILL = "menganyam"
OVOP_PRODUCT = "piring"
COHORT_STARTS, COHORT_ENDS = date(2024, 2, 26), date(2024, 2, 29)
COLLABORATOR = "PT Anyaman Nusantara Sejahtera"
PRODUCTS = ("piring", "tempat mangkuk", "tas", "dompet")
#: Opening piece rates (rupiah), effective from the first working day after the Bimtek.
OPENING_RATES = {"piring": 15_000, "tempat mangkuk": 12_500, "tas": 45_000, "dompet": 20_000}
RATES_FROM = datetime(2024, 3, 1, 0, 0, tzinfo=WIB)
#: A mid-programme raise for the OVOP product: pieces woven before it keep the old rate.
RAISE = ("piring", 17_500, datetime(2024, 3, 18, 0, 0, tzinfo=WIB))
WEEKS = 4
FIRST_MONDAY = date(2024, 3, 4)
DEFECTS = ("loose-weave", "wrong-size", "colour-mismatch", "frayed-edge", "uneven-shape")  # codes (SPEC §7)
MATERIALS = (("rotan sintetis", 7_000, "g"), ("tali plastik", 3, "gulung"))
#: Grams of rotan sintetis one piece of each product needs (docs/materials.md), from RATES_FROM on: the
#: most prolific weavers need more than the 7 kg each was given, which the reconciliation flags.
ROTAN_PER_PIECE = {"piring": 150, "tempat mangkuk": 200, "tas": 400, "dompet": 120}

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

    def rate_at(self, product: str, moment: datetime) -> int:
        """The rate in force for `product` at `moment` (what `piece-woven` must carry)."""
        raised_product, raised_rate, raised_from = RAISE
        if product == raised_product and moment >= raised_from:
            return raised_rate
        return OPENING_RATES[product]


def nagrak(seed: int = 2024, participants: int = 25) -> Scenario:
    """The whole programme for `seed`: the same seed always gives the same people, pieces and verdicts."""
    rng = random.Random(seed)
    people = tuple(_participant(rng, i) for i in range(participants))
    weavings: list[Weaving] = []
    for week in range(WEEKS):
        monday = FIRST_MONDAY + timedelta(weeks=week)
        for person in people:
            for _ in range(person.pieces_per_week):
                day = monday + timedelta(days=rng.randrange(6))  # Monday to Saturday
                woven_at = datetime.combine(day, time(rng.randrange(8, 17), rng.randrange(60)), WIB)
                product = OVOP_PRODUCT if rng.random() < 0.55 else rng.choice(PRODUCTS[1:])
                passes = rng.random() < person.pass_rate
                defects = () if passes else tuple(sorted(rng.sample(DEFECTS, rng.randint(1, 2))))
                # Inspected within a day, and no later than Saturday 17:00, so each week's
                # payout (cut Sunday night) covers that week's pieces.
                inspected_at = min(woven_at + timedelta(hours=rng.randrange(2, 20)),
                                   datetime.combine(monday + timedelta(days=5), time(17, 0), WIB))
                inspected_at = max(inspected_at, woven_at + timedelta(minutes=30))
                weavings.append(Weaving(person.index, product, woven_at, passes, defects, inspected_at))
    weavings.sort(key=lambda w: (w.woven_at, w.participant))
    runs = tuple(
        PayoutRun(
            run_id=f"nagrak-2024-w{(FIRST_MONDAY + timedelta(weeks=week)).isocalendar().week:02d}",
            period_end=datetime.combine(FIRST_MONDAY + timedelta(weeks=week, days=6), time(23, 59, 59), WIB),
            # One e-wallet transfer bounces in the second week; the money goes back to payable
            # and is paid with the next run.
            failing_participants=frozenset({rng.randrange(participants)}) if week == 1 else frozenset(),
        )
        for week in range(WEEKS)
    )
    return Scenario(seed=seed, participants=people, weavings=tuple(weavings), runs=runs)


def _participant(rng: random.Random, index: int) -> Participant:
    given, family = rng.choice(_GIVEN), rng.choice(_FAMILY)
    # 31 75 = DKI Jakarta, Jakarta Timur (Cipayung, where Rusunawa Nagrak stands); then a made-up rest.
    birth = date(1970, 1, 1) + timedelta(days=rng.randrange(30 * 365))
    nik = f"317506{birth.day + 40:02d}{birth.month:02d}{birth.year % 100:02d}{index + 1:04d}"
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


