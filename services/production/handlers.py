"""Production's command handlers: load → decide → append, in the caller's unit of work.

QC submissions arrive on two entrypoints (the `qc-submissions` consumer and
`POST /qc-submissions`); both end in `judge`, so the rules are the same.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from pydantic import ValidationError

from services.production import domain, projections
from services.production.domain import MALFORMED, SCHEMA_INVALID, SubmissionRejected
from shared.contracts import Envelope, service_source
from shared.contracts.codec import MAX_VALUE_BYTES
from shared.contracts.events import (
    EventData,
    MaterialsIssued,
    PieceWoven,
    QcFailed,
    QcPassed,
    QcSubmitted,
)
from shared.domain import fold
from shared.eventstore import NO_STREAM, UnitOfWork
from shared.handling import Aggregate, RememberedStates, handle, load_state, load_states
from shared.ids import new_id
from shared.timeutil import wib_now

SOURCE = service_source("production")

COLLABORATOR = Aggregate(domain.Collaborator(), domain.evolve_collaborator, domain.decide_collaborator)
PIECE = Aggregate(domain.Piece(), domain.evolve_piece, domain.decide_piece)
ISSUE = Aggregate(domain.MaterialIssue(), domain.evolve_issue, domain.decide_issue)

#: Business times outside these years are typos, and near the ends of Python's calendar they
#: cannot even be moved to WIB; refusing them keeps "bad input" a 4xx, never a crash.
EARLIEST_YEAR, LATEST_YEAR = 2000, 2099


@dataclass(frozen=True)
class QcOutcome:
    """What became of an accepted submission: the recorded result, and whether this call recorded it."""

    recorded_now: bool
    result: QcPassed | QcFailed


@dataclass(frozen=True)
class ProductionHandlers:
    """Runs production's commands in a unit of work: its event streams and read models."""

    #: Collaborators as the last command written in one statement read them (rates, keys), and who
    #: is known to be trained: most commands then read nothing before their one statement.
    collaborators: RememberedStates[domain.Collaborator] = field(default_factory=RememberedStates)
    trained: projections.TrainedResidents = field(default_factory=projections.TrainedResidents)
    #: The handlers' one "now": when a piece is recorded, a submission received (SPEC §7: not inspected
    #: after it; a revoked key signs nothing received from its revocation on), a key starts or is revoked.
    clock: Callable[[], datetime] = wib_now

    async def register_collaborator(
        self, uow: UnitOfWork, name: str, public_key: str, valid_from: datetime | None = None
    ) -> str:
        """Register a collaborator whose key signs for submissions inspected from `valid_from` (default: now)."""
        collaborator_id = new_id("col")
        command = domain.RegisterCollaborator(collaborator_id=collaborator_id, name=name, public_key=public_key,
                                              valid_from=valid_from or self.clock())
        await handle(uow, COLLABORATOR, collaborator_id, command, source=SOURCE, fresh_id=True)
        return collaborator_id

    async def add_key(
        self, uow: UnitOfWork, collaborator_id: str, public_key: str, valid_from: datetime | None = None
    ) -> bool:
        """Add a signing key (rotation) valid from `valid_from` (default: now); False when it was there already."""
        command = domain.AddKey(collaborator_id=collaborator_id, public_key=public_key,
                                valid_from=valid_from or self.clock())
        return bool(await handle(uow, COLLABORATOR, collaborator_id, command, source=SOURCE))

    async def revoke_key(
        self, uow: UnitOfWork, collaborator_id: str, public_key: str, revoked_from: datetime | None = None
    ) -> bool:
        """Revoke a signing key from `revoked_from` (default: now); False when it was revoked by then already."""
        command = domain.RevokeKey(collaborator_id=collaborator_id, public_key=public_key,
                                   revoked_from=revoked_from or self.clock())
        return bool(await handle(uow, COLLABORATOR, collaborator_id, command, source=SOURCE))

    async def set_rate(self, uow: UnitOfWork, command: domain.SetRate) -> bool:
        """Set a piece rate from `effective_from` on; False when exactly this rate was already set."""
        return bool(await handle(uow, COLLABORATOR, command.collaborator_id, command, source=SOURCE))

    async def set_material_usage(self, uow: UnitOfWork, command: domain.SetMaterialUsage) -> bool:
        """Set a material's usage per piece from `effective_from` on; False when exactly this one was set."""
        return bool(await handle(uow, COLLABORATOR, command.collaborator_id, command, source=SOURCE))

    async def issue_materials(
        self, uow: UnitOfWork, *, artisan_id: str, collaborator_id: str, material: str, quantity: int,
        unit: str,
    ) -> MaterialsIssued:
        issue_id = new_id("iss")
        command = domain.IssueMaterials(
            issue_id=issue_id, artisan_id=artisan_id, artisan_trained=await self.trained.is_trained(uow, artisan_id),
            collaborator_id=collaborator_id, collaborator=await self.collaborator_state(uow, collaborator_id),
            material=material, quantity=quantity, unit=unit,
        )
        events = await handle(uow, ISSUE, issue_id, command, source=SOURCE, fresh_id=True)
        return cast(MaterialsIssued, events[0].data)

    async def weave(
        self, uow: UnitOfWork, *, artisan_id: str, collaborator_id: str, product: str, woven_at: datetime
    ) -> PieceWoven:
        """Record a woven piece at the rate in force for its collaborator and product at `woven_at`."""
        piece_id = new_id("pc")
        trained_on = await self.trained.completed_on(uow, artisan_id)
        command = domain.WeavePiece(
            piece_id=piece_id, artisan_id=artisan_id, artisan_trained=trained_on is not None, trained_on=trained_on,
            collaborator_id=collaborator_id, collaborator=await self.collaborator_state(uow, collaborator_id),
            product=product, woven_at=woven_at, recorded_at=self.clock(),
        )
        events = await handle(uow, PIECE, piece_id, command, source=SOURCE, time=_business_time,
                              fresh_id=True)
        return cast(PieceWoven, events[0].data)

    async def judge(self, uow: UnitOfWork, submission: QcSubmitted, raw: Mapping[str, Any]) -> QcOutcome:
        """Accept a QC submission as the piece's final result, or raise `SubmissionRejected` with the reason.

        `raw` is the submission's data exactly as sent, over which the signature is checked.
        """
        (outcome,) = await self.judge_many(uow, [(submission, raw)])
        if isinstance(outcome, SubmissionRejected):
            raise outcome
        return outcome

    async def judge_many(
        self, uow: UnitOfWork, submissions: Sequence[tuple[QcSubmitted, Mapping[str, Any]]]
    ) -> list[QcOutcome | SubmissionRejected]:
        """`judge` for each of `submissions` in turn, in three round trips however many there are.

        The outcomes are exactly those of judging them one after the other: a later submission
        for the same piece sees what an earlier one recorded. A rejected one records nothing.
        """
        collaborator_ids = {submission.collaborator_id for submission, _ in submissions}
        collaborators = await load_states(
            uow, COLLABORATOR, filter(projections.storable, collaborator_ids))
        # No stream can have an unstorable id: deciding on "no piece" gives the right reason
        # (a bad signature still comes before an unknown piece).
        piece_ids = {submission.piece_id for submission, _ in submissions}
        pieces = await load_states(uow, PIECE, filter(projections.storable, piece_ids), lock=True)
        outcomes: list[QcOutcome | SubmissionRejected] = []
        appends: dict[str, tuple[int, list[Envelope]]] = {}
        received_at = self.clock()
        for submission, raw in submissions:
            piece, version = pieces.get(submission.piece_id, (domain.Piece(), NO_STREAM))
            command = domain.JudgeSubmission(
                submission=submission, raw=raw,
                collaborator=collaborators.get(submission.collaborator_id, (domain.Collaborator(), NO_STREAM))[0],
                received_at=received_at,
            )
            try:
                _check_inspected_at(submission)
                decided = domain.decide_piece(piece, command)
            except SubmissionRejected as rejected:
                outcomes.append(rejected)
                continue
            if not decided:
                assert piece.result is not None
                outcomes.append(QcOutcome(recorded_now=False, result=piece.result))
                continue
            events = [Envelope.wrap(data, source=SOURCE, time=_business_time(data)) for data in decided]
            appends.setdefault(submission.piece_id, (version, []))[1].extend(events)
            pieces[submission.piece_id] = (fold(domain.evolve_piece, piece, decided), version)
            outcomes.append(QcOutcome(recorded_now=True, result=cast("QcPassed | QcFailed", events[0].data)))
        uow.append_streams(appends)
        return outcomes

    async def collaborator_state(self, uow: UnitOfWork, collaborator_id: str) -> domain.Collaborator:
        """The collaborator's state (empty when there is none, or the id cannot name one)."""
        if not projections.storable(collaborator_id):
            return domain.Collaborator()
        state, _ = await self.collaborators.load(uow, COLLABORATOR, collaborator_id)
        return state

    async def piece_state(self, uow: UnitOfWork, piece_id: str) -> domain.Piece:
        if not projections.storable(piece_id):
            return domain.Piece()
        state, _ = await load_state(uow, PIECE, piece_id)
        return state


def parse_submission(body: bytes) -> tuple[QcSubmitted, dict[str, Any]]:
    """A submission's data from an HTTP body: the validated model, and the dict as sent (for the signature).

    Raises `SubmissionRejected` (`malformed` or `schema-invalid`), naming the field, never its value.
    """
    if len(body) > MAX_VALUE_BYTES:
        raise SubmissionRejected(MALFORMED, f"The body is {len(body)} bytes, over the {MAX_VALUE_BYTES}-byte limit.")
    try:
        raw = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise SubmissionRejected(MALFORMED, f"The body is not UTF-8 (bad byte at offset {exc.start}).") from None
    except (json.JSONDecodeError, RecursionError):
        raise SubmissionRejected(MALFORMED, "The body is not JSON.") from None
    if not isinstance(raw, dict):
        raise SubmissionRejected(MALFORMED, f"The body is a JSON {type(raw).__name__}, not an object.")
    return validate_submission(raw), raw


def validate_submission(raw: Mapping[str, Any]) -> QcSubmitted:
    """The `qc-submitted` data in `raw`; `SubmissionRejected(schema-invalid)` naming the first bad field."""
    try:
        return QcSubmitted.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        path = ".".join(str(part) for part in first["loc"]) or "data"
        problem = "is missing" if first["type"] == "missing" else f"is invalid: {first['msg']}"
        raise SubmissionRejected(SCHEMA_INVALID, f"`{path}` {problem}.") from None


def _check_inspected_at(submission: QcSubmitted) -> None:
    if not EARLIEST_YEAR <= submission.inspected_at.year <= LATEST_YEAR:
        raise SubmissionRejected(
            SCHEMA_INVALID, f"`inspected_at` must lie in the years {EARLIEST_YEAR} to {LATEST_YEAR}."
        )


def _business_time(data: EventData) -> datetime | None:
    """The CloudEvents `time` of an event: when it happened in the programme, not when it was stored."""
    if isinstance(data, PieceWoven):
        return data.woven_at
    if isinstance(data, QcPassed | QcFailed):
        return data.inspected_at
    return None

