"""Production's Kafka entrypoints: the consumers' handlers, thin like the HTTP ones.

The `qc-submissions` topic is untrusted input (ARCHITECTURE.md): whatever a
collaborator's client writes there is decoded by the transactional consumer
(`malformed`, `schema-invalid`, `wrong-specversion`, `unknown-type`,
`unexpected-type` are dead-lettered before this module sees the record), then
judged here. An accepted submission appends `qc-passed` / `qc-failed` to the
piece's stream in the consumer's transaction, so it is recorded exactly once
with the offset; a refused one is dead-lettered with its reason and noted in
`qc_rejections` for the collaborator to read back.
"""

from __future__ import annotations

import json
from typing import Any

from aiokafka import ConsumerRecord

from services.production import projections
from services.production.domain import SCHEMA_INVALID, SubmissionRejected
from services.production.handlers import ProductionHandlers
from shared.contracts import Envelope, collaborator_source
from shared.contracts.events import QcSubmitted
from shared.eventstore import BatchHandler, Reject, UnitOfWork
from shared.eventstore.consumer import BatchItems

QC_CONSUMER = "production-qc-submissions"


def qc_submission_handler(handlers: ProductionHandlers) -> BatchHandler:
    """The `qc-submissions` consumer's handler: judge each submission, or `Reject` it with the reason.

    A batch is judged in one go (`judge_many`: three round trips, not three per submission),
    its refusals dead-lettered as they would be one by one; should judging the batch fail,
    the consumer judges it submission by submission.
    """

    async def on_submission(uow: UnitOfWork, event: Envelope, record: ConsumerRecord) -> None:
        submission = _submission(event)
        try:
            _check_source(event, submission)
            await handlers.judge(uow, submission, _raw_data(record))
        except SubmissionRejected as rejected:
            raise _reject(submission, record, rejected) from None

    async def on_batch(uow: UnitOfWork, items: BatchItems) -> list[tuple[int, Reject]]:
        refusals: list[tuple[int, Reject]] = []
        judged: list[int] = []
        submissions = [_submission(event) for event, _ in items]
        for index, (event, record) in enumerate(items):
            try:
                _check_source(event, submissions[index])
                judged.append(index)
            except SubmissionRejected as rejected:
                refusals.append((index, _reject(submissions[index], record, rejected)))
        outcomes = await handlers.judge_many(
            uow, [(submissions[index], _raw_data(items[index][1])) for index in judged])
        for index, outcome in zip(judged, outcomes, strict=True):
            if isinstance(outcome, SubmissionRejected):
                refusals.append((index, _reject(submissions[index], items[index][1], outcome)))
        return sorted(refusals, key=lambda refusal: refusal[0])

    return BatchHandler(apply_batch=on_batch, each=on_submission)


def _submission(event: Envelope) -> QcSubmitted:
    submission = event.data
    assert isinstance(submission, QcSubmitted)  # the consumer decodes for this topic only
    return submission


def _check_source(event: Envelope, submission: QcSubmitted) -> None:
    if event.source != collaborator_source(submission.collaborator_id):
        raise SubmissionRejected(
            SCHEMA_INVALID, "`source` must be /collaborators/<collaborator_id>, naming the collaborator of the data."
        )


def _reject(submission: QcSubmitted, record: ConsumerRecord, rejected: SubmissionRejected) -> Reject:
    """The consumer's refusal of `record`, which also notes it in `qc_rejections` for the collaborator."""
    rejection = projections.Rejection(
        collaborator_id=submission.collaborator_id, submission_id=submission.submission_id,
        piece_id=submission.piece_id, reason=rejected.reason, detail=rejected.message, channel="kafka",
        source=f"{record.topic}[{record.partition}]@{record.offset}",
    )

    async def note_for_collaborator(uow: UnitOfWork) -> None:
        await projections.record_rejection(uow.connection, rejection)

    return Reject(rejected.reason, rejected.message, on_rejected=note_for_collaborator)


def _raw_data(record: ConsumerRecord) -> dict[str, Any]:
    # Decoding normalised the data (e.g. times); the signature covers the bytes as sent, so the
    # record is parsed again. The consumer already checked it is an object with an object `data`.
    return json.loads(record.value.decode("utf-8"))["data"]
