"""Production's pure domain: collaborators, rates, material issues, pieces and QC results. No I/O here.

Three aggregates, each a stream in the event store:
- a collaborator (stream = collaborator_id): registered with a first public key,
  then more keys (rotation), key revocations and piece rates. A key rotation is
  another `collaborator-registered` with the same collaborator_id and the new
  key; a revocation is one more for that key with `revoked_from` set: the
  catalog (SPEC §6) keeps its event types, and a consumer that reads the event
  as "this collaborator exists, and this key is theirs" stays right. A key
  signs for submissions inspected from its `valid_from` and received before its
  `revoked_from`, so results accepted before a revocation still verify for
  auditors. Rates live here because "the rate in force" is a question about one
  collaborator's rate history; so do material usages (`material-usage-set`: how
  much of a material one piece of a product needs, from a moment on), the same
  question about materials (docs/materials.md).
- a piece (stream = piece_id): woven once with the rate in force at `woven_at`,
  then at most one final QC result (`qc-passed` or `qc-failed`).
- a material issue (stream = issue_id): issued once.

Deciders get what they need from other aggregates and read models (the
collaborator's state, whether the artisan completed training) in the command,
so they stay pure and testable without a database.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any

from shared.contracts.codec import CONTENT_TYPE_HEADER
from shared.contracts.envelope import CONTENT_TYPE, collaborator_source
from shared.contracts.events import (
    CollaboratorRegistered,
    EventData,
    MaterialsIssued,
    MaterialUsageSet,
    PieceRateSet,
    PieceWoven,
    QcFailed,
    QcPassed,
    QcSubmitted,
)
from shared.contracts.signing import verify
from shared.domain import Conflict, NotFound, Refused
from shared.timeutil import to_wib

#: A piece recorded as woven later than this past "now" is a typo in the date, not a fact.
CLOCK_TOLERANCE = timedelta(minutes=5)

# --- QC rejections ------------------------------------------------------------------------

MALFORMED = "malformed"
SCHEMA_INVALID = "schema-invalid"
BAD_SIGNATURE = "bad-signature"
UNKNOWN_COLLABORATOR = "unknown-collaborator"
UNKNOWN_PIECE = "unknown-piece"
WRONG_COLLABORATOR = "wrong-collaborator"
CONFLICTING_RESULT = "conflicting-result"
#: Signed with a key revoked before the submission was received.
REVOKED_KEY = "revoked-key"
#: Inspected before the signing key's `valid_from`: the key cannot have signed it then.
KEY_NOT_YET_VALID = "key-not-yet-valid"
#: Inspected later than it was received (beyond the clock tolerance), or before the piece was woven.
IMPLAUSIBLE_TIME = "implausible-time"

#: The HTTP status of each rejection reason (the Kafka path dead-letters with the reason instead).
REJECTION_STATUS = {
    MALFORMED: 400,
    SCHEMA_INVALID: 422,
    BAD_SIGNATURE: 422,
    UNKNOWN_COLLABORATOR: 404,
    UNKNOWN_PIECE: 404,
    WRONG_COLLABORATOR: 403,
    CONFLICTING_RESULT: 409,
    REVOKED_KEY: 422,
    KEY_NOT_YET_VALID: 422,
    IMPLAUSIBLE_TIME: 422,
}


class SubmissionRejected(Refused):
    """A QC submission refused; `code` is the machine-readable reason a dead letter carries."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(reason, message)
        self.status = REJECTION_STATUS.get(reason, 422)

    @property
    def reason(self) -> str:
        return self.code


# --- commands -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RegisterCollaborator:
    collaborator_id: str
    name: str
    public_key: str
    valid_from: datetime


@dataclass(frozen=True)
class AddKey:
    collaborator_id: str
    public_key: str
    valid_from: datetime


@dataclass(frozen=True)
class RevokeKey:
    collaborator_id: str
    public_key: str
    revoked_from: datetime


@dataclass(frozen=True)
class SetRate:
    collaborator_id: str
    product: str
    rate_idr: int
    effective_from: datetime


@dataclass(frozen=True)
class SetMaterialUsage:
    collaborator_id: str
    product: str
    material: str
    unit: str
    quantity_per_piece: int
    effective_from: datetime


@dataclass(frozen=True)
class IssueMaterials:
    issue_id: str
    artisan_id: str
    artisan_trained: bool
    collaborator_id: str
    collaborator: Collaborator
    material: str
    quantity: int
    unit: str


@dataclass(frozen=True)
class WeavePiece:
    piece_id: str
    artisan_id: str
    artisan_trained: bool
    collaborator_id: str
    collaborator: Collaborator
    product: str
    woven_at: datetime
    recorded_at: datetime
    #: The day the artisan completed training, when known: nothing is woven before it.
    trained_on: date | None = None


@dataclass(frozen=True)
class JudgeSubmission:
    """Record a collaborator's QC result for a piece, if it is theirs to give and is signed by them.

    `raw` is the submission's data exactly as sent: the signature covers it, not `submission`.
    """

    submission: QcSubmitted
    raw: Mapping[str, Any]
    collaborator: Collaborator
    received_at: datetime


# --- state --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rate:
    effective_from: datetime
    rate_idr: int


@dataclass(frozen=True)
class Usage:
    """How much of a material one piece needs, in `unit`, from `effective_from` on."""

    effective_from: datetime
    quantity_per_piece: int
    unit: str


@dataclass(frozen=True)
class Key:
    """One of a collaborator's signing keys and when it signs for them."""

    public_key: str
    #: None: registered before keys had a start, valid for any `inspected_at`.
    valid_from: datetime | None
    revoked_from: datetime | None = None

    def signs_for(self, inspected_at: datetime, received_at: datetime) -> bool:
        """Whether a submission inspected and received at these times may rest on this key."""
        started = self.valid_from is None or self.valid_from <= inspected_at
        return started and (self.revoked_from is None or received_at < self.revoked_from)


@dataclass(frozen=True)
class Collaborator:
    collaborator_id: str | None = None
    name: str = ""
    #: Every key ever registered, oldest first.
    keys: tuple[Key, ...] = ()
    #: Per product, its rates in order of `effective_from`.
    rates: Mapping[str, tuple[Rate, ...]] = field(default_factory=dict)
    #: Per (product, material), its usages in order of `effective_from`.
    usages: Mapping[tuple[str, str], tuple[Usage, ...]] = field(default_factory=dict)

    @property
    def exists(self) -> bool:
        return self.collaborator_id is not None

    @property
    def public_keys(self) -> tuple[str, ...]:
        return tuple(key.public_key for key in self.keys)

    def key(self, public_key: str) -> Key | None:
        return next((key for key in self.keys if key.public_key == public_key), None)

    def rate_in_force(self, product: str, at: datetime) -> int | None:
        """The rate for `product` whose `effective_from` is the latest at or before `at`."""
        in_force = [rate for rate in self.rates.get(product, ()) if rate.effective_from <= at]
        return in_force[-1].rate_idr if in_force else None


@dataclass(frozen=True)
class MaterialIssue:
    issue: MaterialsIssued | None = None


@dataclass(frozen=True)
class Piece:
    woven: PieceWoven | None = None
    result: QcPassed | QcFailed | None = None

    @property
    def exists(self) -> bool:
        return self.woven is not None


# --- evolve -------------------------------------------------------------------------------


def evolve_collaborator(state: Collaborator, event: EventData) -> Collaborator:
    match event:
        case CollaboratorRegistered():
            registered = Key(event.public_key, event.valid_from, event.revoked_from)
            if not state.exists:
                return Collaborator(collaborator_id=event.collaborator_id, name=event.name, keys=(registered,))
            known = state.key(event.public_key)
            if known is None:
                return replace(state, keys=(*state.keys, registered))
            if event.revoked_from is None or (known.revoked_from is not None
                                              and known.revoked_from <= event.revoked_from):
                return state
            revoked = replace(known, revoked_from=event.revoked_from)
            return replace(state, keys=tuple(revoked if key is known else key for key in state.keys))
        case PieceRateSet():
            rates = sorted(
                (*state.rates.get(event.product, ()), Rate(event.effective_from, event.rate_idr)),
                key=lambda rate: rate.effective_from,
            )
            return replace(state, rates={**state.rates, event.product: tuple(rates)})
        case MaterialUsageSet():
            key = (event.product, event.material)
            usages = sorted(
                (*state.usages.get(key, ()), Usage(event.effective_from, event.quantity_per_piece, event.unit)),
                key=lambda usage: usage.effective_from,
            )
            return replace(state, usages={**state.usages, key: tuple(usages)})
    return state


def evolve_issue(state: MaterialIssue, event: EventData) -> MaterialIssue:
    if isinstance(event, MaterialsIssued):
        return MaterialIssue(issue=event)
    return state


def evolve_piece(state: Piece, event: EventData) -> Piece:
    match event:
        case PieceWoven():
            return Piece(woven=event)
        case QcPassed() | QcFailed():
            return replace(state, result=event)
    return state


# --- decide -------------------------------------------------------------------------------


def decide_collaborator(
    state: Collaborator, command: RegisterCollaborator | AddKey | RevokeKey | SetRate | SetMaterialUsage
) -> list[EventData]:
    match command:
        case RegisterCollaborator():
            if state.exists:
                return []  # registering the same id again is a no-op
            return [CollaboratorRegistered(collaborator_id=command.collaborator_id, name=command.name,
                                           public_key=command.public_key, valid_from=command.valid_from)]
        case AddKey():
            _existing(state, command.collaborator_id)
            if command.public_key in state.public_keys:
                return []
            return [CollaboratorRegistered(collaborator_id=command.collaborator_id, name=state.name,
                                           public_key=command.public_key, valid_from=command.valid_from)]
        case RevokeKey():
            return _revoke(_existing(state, command.collaborator_id), command)
        case SetRate():
            return _set_rate(_existing(state, command.collaborator_id), command)
        case SetMaterialUsage():
            return _set_usage(_existing(state, command.collaborator_id), command)
    raise TypeError(f"not a collaborator command: {type(command).__name__}")


def _existing(state: Collaborator, collaborator_id: str) -> Collaborator:
    if not state.exists:
        raise NotFound("collaborator-not-found", f"There is no collaborator {collaborator_id}; register it first.")
    return state


def _revoke(state: Collaborator, command: RevokeKey) -> list[EventData]:
    key = state.key(command.public_key)
    if key is None:
        raise NotFound("key-not-found", f"Collaborator {state.collaborator_id} has no such key registered.")
    if key.revoked_from is not None and key.revoked_from <= command.revoked_from:
        return []  # already revoked from then or earlier
    return [CollaboratorRegistered(collaborator_id=command.collaborator_id, name=state.name,
                                   public_key=key.public_key, valid_from=key.valid_from,
                                   revoked_from=command.revoked_from)]


def _set_rate(state: Collaborator, command: SetRate) -> list[EventData]:
    if command.rate_idr <= 0:
        raise Refused("invalid-rate", "A piece rate must be a positive whole number of rupiah.")
    for rate in state.rates.get(command.product, ()):
        if rate.effective_from == command.effective_from:
            if rate.rate_idr == command.rate_idr:
                return []  # the same rate again is the same one rate
            # Replacing it would make the rate "in force" at one moment depend on when a piece
            # was recorded; a change is a new rate from a new moment (a compensating entry).
            raise Conflict(
                "rate-already-set",
                f"A rate of {rate.rate_idr} IDR for {command.product!r} already takes effect at "
                f"{command.effective_from.isoformat()}; set the new rate with a later effective_from.",
            )
    return [PieceRateSet(collaborator_id=command.collaborator_id, product=command.product,
                         rate_idr=command.rate_idr, effective_from=command.effective_from)]


def _set_usage(state: Collaborator, command: SetMaterialUsage) -> list[EventData]:
    """Like a rate: a change is a new usage from a new moment, never an edit of one in force."""
    earlier = state.usages.get((command.product, command.material), ())
    if earlier and earlier[0].unit != command.unit:
        # Quantities of one material for one product add up only in one unit: a usage in grams
        # after one in kilograms would count the same material twice over, a thousandfold apart.
        raise Conflict(
            "usage-unit-changed",
            f"The usage of {command.material!r} for {command.product!r} is counted in {earlier[0].unit!r}; "
            f"set it in {earlier[0].unit!r} (or name the material differently).",
        )
    for usage in earlier:
        if usage.effective_from == command.effective_from:
            if usage.quantity_per_piece == command.quantity_per_piece:
                return []  # the same usage again is the same one usage
            raise Conflict(
                "usage-already-set",
                f"A usage of {usage.quantity_per_piece} {usage.unit} of {command.material!r} per {command.product!r} "
                f"already takes effect at {command.effective_from.isoformat()}; set the new usage with a later "
                "effective_from.",
            )
    return [MaterialUsageSet(collaborator_id=command.collaborator_id, product=command.product,
                             material=command.material, unit=command.unit,
                             quantity_per_piece=command.quantity_per_piece, effective_from=command.effective_from)]


def decide_issue(state: MaterialIssue, command: IssueMaterials) -> list[EventData]:
    if state.issue is not None:
        return []
    collaborator = _existing(command.collaborator, command.collaborator_id)
    _trained(command.artisan_id, command.artisan_trained, "receive materials")
    return [MaterialsIssued(issue_id=command.issue_id, artisan_id=command.artisan_id,
                            collaborator_id=collaborator.collaborator_id, material=command.material,
                            quantity=command.quantity, unit=command.unit)]


def _trained(artisan_id: str, trained: bool, to_do: str) -> None:
    if not trained:
        raise Conflict(
            "not-trained",
            f"Resident {artisan_id} has not completed training, and only trained residents may {to_do}. "
            "Record the completion in enrollment first (if it was just recorded, retry in a moment).",
        )


def decide_piece(state: Piece, command: WeavePiece | JudgeSubmission) -> list[EventData]:
    match command:
        case WeavePiece():
            return _weave(state, command)
        case JudgeSubmission():
            return _judge(state, command)
    raise TypeError(f"not a piece command: {type(command).__name__}")


def _weave(state: Piece, command: WeavePiece) -> list[EventData]:
    if state.exists:
        return []  # a piece is woven once
    collaborator = _existing(command.collaborator, command.collaborator_id)
    _trained(command.artisan_id, command.artisan_trained, "weave pieces")
    if command.woven_at > command.recorded_at + CLOCK_TOLERANCE:
        raise Refused("woven-in-the-future", "woven_at lies in the future; record a piece once it is woven.")
    if command.trained_on is not None and to_wib(command.woven_at).date() < command.trained_on:
        raise Refused(
            "woven-before-training",
            f"Resident {command.artisan_id} completed training on {command.trained_on.isoformat()}; a piece "
            "cannot have been woven before that day (WIB). Check woven_at.",
        )
    rate = collaborator.rate_in_force(command.product, command.woven_at)
    if rate is None:
        priced = ", ".join(sorted(collaborator.rates)) or "none yet"
        raise Conflict(
            "no-rate-in-force",
            f"Collaborator {collaborator.collaborator_id} has no rate for {command.product!r} in force at "
            f"{command.woven_at.isoformat()} (products with rates: {priced}); set one with an effective_from "
            "at or before woven_at first.",
        )
    return [PieceWoven(piece_id=command.piece_id, artisan_id=command.artisan_id,
                       collaborator_id=collaborator.collaborator_id, product=command.product, rate_idr=rate,
                       woven_at=command.woven_at)]


def _judge(state: Piece, command: JudgeSubmission) -> list[EventData]:
    submission, collaborator = command.submission, command.collaborator
    # The signature is checked before anything about the piece is looked at: an unsigned
    # message learns nothing about which pieces exist or whose they are.
    if not collaborator.exists:
        raise SubmissionRejected(
            UNKNOWN_COLLABORATOR, f"There is no collaborator {submission.collaborator_id}; check collaborator_id."
        )
    key = next((key for key in collaborator.keys if verify(key.public_key, command.raw)), None)
    if key is None:
        raise SubmissionRejected(
            BAD_SIGNATURE,
            f"The signature does not verify against any key registered for {submission.collaborator_id}. Sign the "
            "RFC 8785 canonical JSON (JCS) of every data field except `signature`, as UTF-8, with your Ed25519 "
            "private key, and send the data exactly as signed.",
        )
    if key.revoked_from is not None and command.received_at >= key.revoked_from:
        raise SubmissionRejected(
            REVOKED_KEY, f"The key that signed this submission was revoked for {submission.collaborator_id} from "
            f"{to_wib(key.revoked_from).isoformat()}; sign with a current key.",
        )
    if not key.signs_for(submission.inspected_at, command.received_at):
        raise SubmissionRejected(
            KEY_NOT_YET_VALID, "The key that signed this submission was valid only from a later time than "
            "inspected_at; sign with the key that was registered when the piece was inspected.",
        )
    if submission.inspected_at > command.received_at + CLOCK_TOLERANCE:
        raise SubmissionRejected(IMPLAUSIBLE_TIME, "inspected_at lies in the future; submit a result once the "
                                 "piece has been inspected.")
    if not state.exists:
        raise SubmissionRejected(UNKNOWN_PIECE, f"There is no piece {submission.piece_id}; check piece_id.")
    woven = state.woven
    assert woven is not None
    if woven.collaborator_id != submission.collaborator_id:
        raise SubmissionRejected(
            WRONG_COLLABORATOR,
            f"Piece {submission.piece_id} was not woven for {submission.collaborator_id}; a collaborator may only "
            "judge its own pieces.",
        )
    if submission.inspected_at < woven.woven_at:
        raise SubmissionRejected(IMPLAUSIBLE_TIME, f"inspected_at is before piece {submission.piece_id} was "
                                 "woven; a piece is inspected after it is woven.")
    if state.result is not None:
        if _same_result(state.result, submission):
            return []  # the same submission again is a no-op
        raise SubmissionRejected(
            CONFLICTING_RESULT,
            f"Piece {submission.piece_id} already has a final QC result (submission "
            f"{state.result.submission_id}); each piece gets exactly one.",
        )
    # What was signed travels with the result, so anyone can check it from the log alone (SPEC §11).
    provenance = {"submission": dict(command.raw), "signing_key": key.public_key,
                  "received_at": command.received_at}
    if submission.result == "passed":
        return [QcPassed(piece_id=woven.piece_id, artisan_id=woven.artisan_id, collaborator_id=woven.collaborator_id,
                         product=woven.product, amount_idr=woven.rate_idr, submission_id=submission.submission_id,
                         inspected_at=submission.inspected_at, signature=submission.signature, **provenance)]
    return [QcFailed(piece_id=woven.piece_id, artisan_id=woven.artisan_id, collaborator_id=woven.collaborator_id,
                     submission_id=submission.submission_id, defects=list(submission.defects),
                     inspected_at=submission.inspected_at, signature=submission.signature, **provenance)]


def _same_result(result: QcPassed | QcFailed, submission: QcSubmitted) -> bool:
    """A repeat of the recorded submission, not merely one with the same id and a different verdict."""
    verdict = "passed" if isinstance(result, QcPassed) else "failed"
    return (
        result.submission_id == submission.submission_id
        and verdict == submission.result
        and result.inspected_at == submission.inspected_at
    )


def refused_submission_event(
    body: bytes, *, reason: str, collaborator_id: str | None, event_id: str, received_at: datetime,
) -> tuple[bytes, list[tuple[str, bytes]]]:
    """A submission refused over HTTP as the `qc-submitted` CloudEvent it would have been on the topic,
    and its headers: a dead letter looks the same whichever way the submission came (issue 27).

    `collaborator_id` is who the token says (or, for staff, what the body claims). The event's `data`
    is the body as sent, signature and all, when the body passed the contract's checks and was refused
    for what it says (a bad signature, another collaborator's piece). A body refused for its shape
    (`malformed`, `schema-invalid`) is withheld: what failed those checks may be a phone number or a
    name in a field meant for a code, and no topic may carry one (SPEC §5); the dead letter's detail
    names the field.
    """
    envelope: dict[str, Any] = {
        "specversion": "1.0", "id": event_id,
        "source": collaborator_source(collaborator_id) if collaborator_id else "/collaborators/unknown",
        "type": QcSubmitted.event_type, "time": received_at.isoformat(),
        "datacontenttype": "application/json", "dataversion": QcSubmitted.data_version,
    }
    data = None if reason in (MALFORMED, SCHEMA_INVALID) else _json_object(body)
    if data is not None:
        if isinstance(piece_id := data.get("piece_id"), str) and piece_id:
            envelope["subject"] = piece_id[:200]
        envelope["data"] = data
    return _json_bytes(envelope), [(CONTENT_TYPE_HEADER, CONTENT_TYPE.encode())]


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _json_bytes(document: dict[str, Any]) -> bytes:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
