"""Every event type of SPEC §6, as frozen pydantic models of the CloudEvent's `data`.

Each model names its CloudEvents `type`, the topic it travels on and the data
field that is its record key (SPEC §4). Unknown extra fields are kept, not
rejected: a newer producer may add optional fields (forward compatibility),
and a signature covers every field the signer sent.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    field_validator,
)

from shared.contracts.codes import Defect, PayoutFailure, WithdrawalReason
from shared.contracts.topics import Topic
from shared.timeutil import WIB

#: The control characters (Unicode category Cc: U+0000–U+001F and U+007F–U+009F) but tab and
#: newline, as a regular-expression character range: what no text in an event may hold.
_CONTROL = r"\x00-\x08\x0b-\x1f\x7f-\x9f"
#: What `storable_text` refuses: those, and lone surrogates (Cs: U+D800–U+DFFF). One compiled
#: character class: a loop asking `unicodedata` about each character was most of decoding's time.
_UNSTORABLE = re.compile(rf"[{_CONTROL}\ud800-\udfff]")


def storable_text(value: str) -> str:
    """Refuse control characters and lone surrogates.

    PostgreSQL cannot store NUL in text, and a lone surrogate is not UTF-8: a
    value carrying either would fail in a consumer's transaction on every retry,
    stalling it for good. The HTTP inputs (`shared.web.inputs`) refuse such a value
    with it; events hold the same rule as their fields' patterns (below).
    """
    found = _UNSTORABLE.search(value)
    if found is not None:
        raise ValueError(f"contains a control character or lone surrogate (U+{ord(found.group()):04X})")
    return value


# Text in an event is storable (see `storable_text`), by pattern: pydantic-core checks a pattern
# itself, where a Python validator was a call out of it for every text field of every event, and
# those calls dominated decoding. The patterns are in the published JSON schemas too.
# Lone surrogates need no pattern: pydantic-core refuses them in any text it checks a pattern on
# ("unable to parse raw data as a unicode string"), and JSON parsing refuses their escapes.
#: Any text but control characters (tab and newline are text).
STORABLE_TEXT_PATTERN = rf"^[^{_CONTROL}]*$"
#: An identifier's: not empty, no surrounding space, no line break, no control character.
ID_PATTERN = rf"^[^\s{_CONTROL}](?:[^\n{_CONTROL}]*[^\s{_CONTROL}])?$"
#: How many digits a label may hold in a row: a NIK has 16, a phone number 10 to 13, an account 8 or
#: more. Spaces and punctuation do not end a row ("0812-9988-7721" is one of 12); a letter does.
MAX_DIGITS_IN_A_ROW = 6
_DIGIT = "[0-9\uff10-\uff19]"  # ASCII and full-width digits
_FILLER = r"[ \t\n.,:;/_+()\-]"
_BREAK = rf"[^0-9\uff10-\uff19 \t\n.,:;/_+()\-{_CONTROL}]"
_DIGIT_ROW = rf"{_FILLER}*(?:{_DIGIT}{_FILLER}*){{0,{MAX_DIGITS_IN_A_ROW}}}"
#: A label names a thing (a rusunawa, a product, a material, a company): storable text in which no
#: more than six digits stand in a row, so no NIK, phone or account number can ride on a topic in one
#: (SPEC §5, §7). A regular language without look-around: pydantic-core's engine checks it itself.
LABEL_PATTERN = rf"^{_DIGIT_ROW}(?:{_BREAK}+{_DIGIT_ROW})*$"
#: An inspector as a collaborator's own register names them: letters, digits, '.', '_' and '-', never a
#: person's name or number (`insp-07`), and, as in a label, no more than six digits in a row.
_CODE_DIGIT_ROW = rf"[._\-]*(?:[0-9][._\-]*){{0,{MAX_DIGITS_IN_A_ROW}}}"
INSPECTOR_PATTERN = rf"^{_CODE_DIGIT_ROW}(?:[A-Za-z]+{_CODE_DIGIT_ROW})*$"
#: What a field's pattern means, for people: `codec` words a refusal with it.
PATTERN_RULES = {
    STORABLE_TEXT_PATTERN: "contains a control character (of those, only tab and newline are text)",
    ID_PATTERN: "must be an id: no surrounding space, no line break, no control character",
    LABEL_PATTERN: f"must name a thing: no control character, and no more than {MAX_DIGITS_IN_A_ROW} digits in a "
                   "row (a NIK, phone or account number may not reach a topic)",
    INSPECTOR_PATTERN: "must be an inspector's code from the collaborator's register (letters, digits, '.', '_', "
                       f"'-'; no more than {MAX_DIGITS_IN_A_ROW} digits in a row), never a name or a number",
}

#: An opaque identifier (SPEC §5): any non-empty string without surrounding space.
Id = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=False, pattern=ID_PATTERN)]
#: The largest amount one `*_idr` field may hold: Rp 1 trillion (SPEC §5), far below what a
#: reader's 64-bit integer or a `bigint` column holds (sums are the readers' to keep exact).
MAX_RUPIAH = 1_000_000_000_000
#: Money: an integer number of rupiah, 0 to `MAX_RUPIAH`. Strict: "1000", 1000.0 and true are refused.
Rupiah = Annotated[int, Strict(), Field(ge=0, le=MAX_RUPIAH)]
Count = Annotated[int, Strict(), Field(gt=0)]
#: The most of a material one product's piece may need, in the usage's own unit: a quantity is a whole
#: number of a unit chosen small enough (grams, centimetres), and bounded like money, so sums stay exact.
MAX_QUANTITY_PER_PIECE = 1_000_000
QuantityPerPiece = Annotated[int, Strict(), Field(ge=0, le=MAX_QUANTITY_PER_PIECE)]
Text = Annotated[str, StringConstraints(min_length=1, max_length=500, pattern=STORABLE_TEXT_PATTERN)]
#: The name of a thing, never of a person (see `LABEL_PATTERN`).
Label = Annotated[str, StringConstraints(min_length=1, max_length=500, pattern=LABEL_PATTERN)]


def label_key(label: str) -> str:
    """What `same_label` compares of a label: spacing and letter case aside."""
    return " ".join(label.split()).casefold()


def same_label(one: str, other: str) -> bool:
    """Whether two labels name one thing (a rusunawa, a product): spacing and letter case are how it was typed."""
    return label_key(one) == label_key(other)
InspectorCode = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=INSPECTOR_PATTERN)]


def _in_wib(moment: datetime) -> datetime:
    # `AwareDatetime` has refused naive times already; `to_wib` would check again, a cost paid on
    # every event a replay reads.
    try:
        return moment.astimezone(WIB)
    except OverflowError:  # at the calendar's edge (year 9999 and a negative offset): not a business time
        raise ValueError("lies outside the calendar once moved to WIB") from None


#: A business time: any offset is accepted, and it is kept in WIB so every topic reads the same way.
WibTime = Annotated[AwareDatetime, AfterValidator(_in_wib)]
Base64 = Annotated[str, StringConstraints(min_length=1, max_length=4000, pattern=r"^[A-Za-z0-9+/]+={0,2}$")]


class EventData(BaseModel):
    """The `data` of one event type; subclasses set the three class attributes."""

    model_config = ConfigDict(frozen=True, extra="allow")

    event_type: ClassVar[str]
    topic: ClassVar[Topic]
    key_field: ClassVar[str]
    #: The version of this `data` that writers write today (the envelope's `dataversion`); readers
    #: upcast older ones (`shared.contracts.versions`).
    data_version: ClassVar[int] = 1

    def record_key(self) -> str:
        """The Kafka record key of this event (SPEC §4)."""
        return str(getattr(self, self.key_field))


# --- enrollment -----------------------------------------------------------------------------


class ResidentRegistered(EventData):
    event_type: ClassVar[str] = "resident-registered"
    topic: ClassVar[Topic] = Topic.ENROLLMENT
    key_field: ClassVar[str] = "resident_id"

    resident_id: Id
    rusunawa: Label
    registered_at: WibTime


class RusunawaRegistered(EventData):
    """A rusunawa the programme runs in, with its OVOP product (one village, one product): the registry
    cohorts belong to and runs, lists and the dashboard are scoped by."""

    event_type: ClassVar[str] = "rusunawa-registered"
    topic: ClassVar[Topic] = Topic.ENROLLMENT
    # No resident: keyed by its own id, so its events stay in order on one partition (as cohorts).
    key_field: ClassVar[str] = "rusunawa_id"

    rusunawa_id: Id
    name: Label
    ovop_product: Label


class CohortScheduled(EventData):
    event_type: ClassVar[str] = "cohort-scheduled"
    topic: ClassVar[Topic] = Topic.ENROLLMENT
    # Cohort events have no resident; SPEC §4 keys the topic by resident_id, so a cohort's
    # own events are keyed by its cohort_id, which keeps them in order on one partition.
    key_field: ClassVar[str] = "cohort_id"

    cohort_id: Id
    rusunawa: Label
    skill: Label
    product_focus: Label
    starts_on: date
    ends_on: date
    capacity: Count


class Enrolled(EventData):
    event_type: ClassVar[str] = "enrolled"
    topic: ClassVar[Topic] = Topic.ENROLLMENT
    key_field: ClassVar[str] = "resident_id"

    resident_id: Id
    cohort_id: Id
    enrolled_at: WibTime


class TrainingCompleted(EventData):
    event_type: ClassVar[str] = "training-completed"
    topic: ClassVar[Topic] = Topic.ENROLLMENT
    key_field: ClassVar[str] = "resident_id"

    resident_id: Id
    cohort_id: Id
    completed_on: date


class Withdrawn(EventData):
    event_type: ClassVar[str] = "withdrawn"
    topic: ClassVar[Topic] = Topic.ENROLLMENT
    key_field: ClassVar[str] = "resident_id"

    resident_id: Id
    cohort_id: Id
    #: A code (dataversion 2); version 1 carried free text, read as `other` unless it was a code.
    reason: WithdrawalReason
    data_version: ClassVar[int] = 2


class PersonalDataErased(EventData):
    """A resident's personal data was erased: ids only, so that a database restored from a backup
    taken before can erase her again (`anyam erasures reapply`)."""

    event_type: ClassVar[str] = "personal-data-erased"
    topic: ClassVar[Topic] = Topic.ENROLLMENT
    key_field: ClassVar[str] = "resident_id"

    resident_id: Id
    erased_at: WibTime
    #: What payout said she was owed (payable and in transit) when she was erased, if it could tell.
    money_owed_idr: Rupiah | None = None
    #: Staff erased her although she was owed money or payout could not tell: the override, recorded.
    money_owed_override: bool = False


# --- production -----------------------------------------------------------------------------


class CollaboratorRegistered(EventData):
    event_type: ClassVar[str] = "collaborator-registered"
    topic: ClassVar[Topic] = Topic.PRODUCTION
    key_field: ClassVar[str] = "collaborator_id"

    collaborator_id: Id
    name: Label
    public_key: Base64
    #: From when signatures by this key count (by a submission's `inspected_at`); absent only on
    #: registrations recorded before keys had a start, which then count from any time.
    valid_from: WibTime | None = None
    #: Set on the registration that revokes the key: submissions production receives from this
    #: moment on are refused, and `verify` names any result received later that relies on the key.
    revoked_from: WibTime | None = None

    @field_validator("public_key")
    @classmethod
    def _is_ed25519_raw_key(cls, value: str) -> str:
        import base64
        import binascii

        try:
            raw = base64.b64decode(value, validate=True)
        except binascii.Error as exc:
            raise ValueError("public_key is not valid base64") from exc
        if len(raw) != 32:
            raise ValueError(f"public_key must be the 32 raw bytes of an Ed25519 key, got {len(raw)} bytes")
        return value


class PieceRateSet(EventData):
    event_type: ClassVar[str] = "piece-rate-set"
    topic: ClassVar[Topic] = Topic.PRODUCTION
    key_field: ClassVar[str] = "collaborator_id"

    collaborator_id: Id
    product: Label
    rate_idr: Rupiah
    effective_from: WibTime


class MaterialUsageSet(EventData):
    """How much of a material one piece of a product needs, for a collaborator, from a moment on
    (extends SPEC §6, like `piece-rate-set`): what materials reconciliation compares issues with
    (docs/materials.md). 0 says the product no longer uses the material from then on."""

    event_type: ClassVar[str] = "material-usage-set"
    topic: ClassVar[Topic] = Topic.PRODUCTION
    key_field: ClassVar[str] = "collaborator_id"

    collaborator_id: Id
    product: Label
    material: Label
    unit: Label
    quantity_per_piece: QuantityPerPiece
    effective_from: WibTime


class MaterialsIssued(EventData):
    event_type: ClassVar[str] = "materials-issued"
    topic: ClassVar[Topic] = Topic.PRODUCTION
    key_field: ClassVar[str] = "artisan_id"

    issue_id: Id
    artisan_id: Id
    collaborator_id: Id
    material: Label
    quantity: Count
    unit: Label


class PieceWoven(EventData):
    event_type: ClassVar[str] = "piece-woven"
    topic: ClassVar[Topic] = Topic.PRODUCTION
    key_field: ClassVar[str] = "artisan_id"

    piece_id: Id
    artisan_id: Id
    collaborator_id: Id
    product: Label
    rate_idr: Rupiah
    woven_at: WibTime


class QcPassed(EventData):
    event_type: ClassVar[str] = "qc-passed"
    topic: ClassVar[Topic] = Topic.PRODUCTION
    key_field: ClassVar[str] = "artisan_id"

    piece_id: Id
    artisan_id: Id
    collaborator_id: Id
    product: Label
    amount_idr: Rupiah
    submission_id: Id
    inspected_at: WibTime
    signature: Base64
    #: The collaborator's submission exactly as signed (every field it sent, `signature` included),
    #: the key it verified against, and when production received it: what `shared.contracts.provenance`
    #: checks, so a result is verifiable from the log alone (SPEC §11).
    submission: dict[str, Any] | None = None
    signing_key: Base64 | None = None
    received_at: WibTime | None = None


class QcFailed(EventData):
    event_type: ClassVar[str] = "qc-failed"
    topic: ClassVar[Topic] = Topic.PRODUCTION
    key_field: ClassVar[str] = "artisan_id"

    piece_id: Id
    artisan_id: Id
    collaborator_id: Id
    submission_id: Id
    #: Codes (dataversion 2); version 1 carried free text, read as `other` unless it was a code.
    defects: list[Defect]
    inspected_at: WibTime
    signature: Base64
    data_version: ClassVar[int] = 2
    #: The collaborator's submission exactly as signed (every field it sent, `signature` included),
    #: the key it verified against, and when production received it: what `shared.contracts.provenance`
    #: checks, so a result is verifiable from the log alone (SPEC §11).
    submission: dict[str, Any] | None = None
    signing_key: Base64 | None = None
    received_at: WibTime | None = None


# --- qc-submissions (untrusted: written by collaborator companies) ------------------------


class QcSubmitted(EventData):
    event_type: ClassVar[str] = "qc-submitted"
    topic: ClassVar[Topic] = Topic.QC_SUBMISSIONS
    key_field: ClassVar[str] = "piece_id"

    submission_id: Id
    piece_id: Id
    collaborator_id: Id
    result: Literal["passed", "failed"]
    inspector: InspectorCode
    # Kept exactly as the collaborator sent it: the signature covers their bytes.
    inspected_at: AwareDatetime
    defects: list[Defect]
    signature: Base64
    #: Version 2 made `defects` codes and `inspector` a code of the collaborator's register; a version 1
    #: submission whose values already are such codes reads as version 2, any other is refused.
    data_version: ClassVar[int] = 2
    # Production copies a submission into its own events (`qc-passed.submission`), so a field the
    # contract does not name, which could hold anything, is refused rather than carried along.
    model_config = ConfigDict(frozen=True, extra="forbid")


# --- payout ---------------------------------------------------------------------------------


class PayoutScheduled(EventData):
    event_type: ClassVar[str] = "payout-scheduled"
    topic: ClassVar[Topic] = Topic.PAYOUT
    key_field: ClassVar[str] = "artisan_id"

    payout_id: Id
    run_id: Id
    artisan_id: Id
    amount_idr: Rupiah
    period_end: WibTime


class Paid(EventData):
    event_type: ClassVar[str] = "paid"
    topic: ClassVar[Topic] = Topic.PAYOUT
    key_field: ClassVar[str] = "artisan_id"

    payout_id: Id
    artisan_id: Id
    amount_idr: Rupiah
    method: Label
    #: Opaque: payout's own reference for the payment (`pref_…`); the bank's reference, which could
    #: hold an account number, stays in payout's database. Older events carry the bank's, as text.
    reference: Text
    paid_at: WibTime


class PayoutFailed(EventData):
    event_type: ClassVar[str] = "payout-failed"
    topic: ClassVar[Topic] = Topic.PAYOUT
    key_field: ClassVar[str] = "artisan_id"

    payout_id: Id
    artisan_id: Id
    amount_idr: Rupiah
    #: A code (dataversion 2); version 1 carried free text, read as `other` unless it was a code.
    reason: PayoutFailure
    data_version: ClassVar[int] = 2


class CollaboratorInvoiced(EventData):
    """Payout invoiced a collaborator for the fees of its passed pieces not invoiced before, up to
    `period_end` (docs/money.md). Keyed by the collaborator, as production keys collaborator events:
    an invoice's events then share one partition, in order."""

    event_type: ClassVar[str] = "collaborator-invoiced"
    topic: ClassVar[Topic] = Topic.PAYOUT
    key_field: ClassVar[str] = "collaborator_id"

    invoice_id: Id
    collaborator_id: Id
    period_end: WibTime
    amount_idr: Rupiah
    pieces: Count


class CollaboratorPaid(EventData):
    """Money a collaborator paid against one of its invoices was received. The bank's reference stays in
    payout's database (it is free text and could hold an account number), as a payout's does."""

    event_type: ClassVar[str] = "collaborator-paid"
    topic: ClassVar[Topic] = Topic.PAYOUT
    key_field: ClassVar[str] = "collaborator_id"

    payment_id: Id
    invoice_id: Id
    collaborator_id: Id
    amount_idr: Rupiah
    received_at: WibTime


#: Every event type of the catalog, by its CloudEvents `type`.
EVENT_TYPES: dict[str, type[EventData]] = {
    model.event_type: model
    for model in (
        ResidentRegistered,
        RusunawaRegistered,
        CohortScheduled,
        Enrolled,
        TrainingCompleted,
        Withdrawn,
        PersonalDataErased,
        CollaboratorRegistered,
        PieceRateSet,
        MaterialUsageSet,
        MaterialsIssued,
        PieceWoven,
        QcPassed,
        QcFailed,
        QcSubmitted,
        PayoutScheduled,
        Paid,
        PayoutFailed,
        CollaboratorInvoiced,
        CollaboratorPaid,
    )
}
