"""The published code lists (SPEC §7): what a reason or a defect may say on a topic.

A topic is kept forever and cannot be erased, so nothing a person typed may reach
one: a withdrawal's reason, a QC defect and a failed payout's reason are codes
from these lists. A person's own words, where a service keeps them at all, stay
in that service's database. Each list ends with `other`, for what no code names;
a list grows by a new code (readers refuse a code they do not know, so a code is
added to the contract before anyone sends it).
"""

from __future__ import annotations

from typing import Literal, get_args

#: Why a resident left a cohort (`withdrawn.reason`, dataversion 2).
WithdrawalReason = Literal[
    "moved-away",  # left the rusunawa
    "found-work",  # took other work
    "health",  # her own health
    "family-care",  # caring for a child or a relative
    "schedule-conflict",  # the sessions clash with other duties
    "lost-interest",  # chose to stop
    "no-contact",  # stopped attending and could not be reached
    "other",
]

#: What QC found wrong with a piece (`qc-submitted.defects` and `qc-failed.defects`, dataversion 2).
Defect = Literal[
    "loose-weave",  # anyaman longgar
    "uneven-shape",  # bentuk tidak rata
    "wrong-size",  # ukuran tidak sesuai
    "broken-strand",  # lidi atau serat patah
    "frayed-edge",  # tepi terurai
    "stain",  # noda
    "mould",  # jamur
    "colour-mismatch",  # warna tidak sesuai
    "weak-handle",  # pegangan lemah (tas)
    "wrong-material",  # bahan tidak sesuai
    "other",
]

#: Why a payout did not reach the artisan (`payout-failed.reason`, dataversion 2).
PayoutFailure = Literal[
    "account-closed",
    "account-not-found",
    "name-mismatch",
    "rejected-by-bank",
    "limit-exceeded",
    "wallet-inactive",
    "returned",
    "other",
]

#: Every published list, by the name the contract gives it.
CODE_LISTS: dict[str, tuple[str, ...]] = {
    "withdrawal-reason": get_args(WithdrawalReason),
    "defect": get_args(Defect),
    "payout-failure": get_args(PayoutFailure),
}

#: What a code from an older version's free text becomes when that version is upcast.
OTHER = "other"
