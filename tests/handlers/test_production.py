"""Production's handlers, one body on both event stores (`conftest.backend`).

Collaborators, rates, woven pieces and QC judging: what a command records, refuses, and records
once however often it is sent. Who completed training is a read model (PostgreSQL); here it is
given to the handlers as known, as their cache would hold it.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from services.production.domain import SetRate, SubmissionRejected
from services.production.handlers import ProductionHandlers
from shared.contracts.events import QcPassed, QcSubmitted
from shared.contracts.signing import generate_private_key, public_key_b64, signed
from shared.domain import Conflict

WIB = timezone(timedelta(hours=7))
MARCH = datetime(2024, 3, 1, tzinfo=WIB)
NOW = datetime(2024, 4, 1, 12, tzinfo=WIB)
KEY, STRANGER = generate_private_key(), generate_private_key()
TRAINED, UNTRAINED = "res_trained", "res_untrained"


class Training:
    """Who completed training, as production's read model (`projections.TrainedResidents`) answers."""

    def __init__(self, completed: dict[str, date]) -> None:
        self._completed = completed

    async def completed_on(self, uow, resident_id: str) -> date | None:
        return self._completed.get(resident_id)

    async def is_trained(self, uow, resident_id: str) -> bool:
        return resident_id in self._completed


@pytest.fixture
def handlers() -> ProductionHandlers:
    return ProductionHandlers(trained=Training({TRAINED: date(2024, 2, 28)}), clock=lambda: NOW)


async def workshop(backend, handlers: ProductionHandlers) -> str:
    """A collaborator with a rate for plates from March, as staff set it up."""
    async with backend.store.unit() as uow:
        collaborator_id = await handlers.register_collaborator(uow, "PT Anyaman", public_key_b64(KEY), MARCH)
    async with backend.store.unit() as uow:
        await handlers.set_rate(uow, SetRate(collaborator_id, "piring", 12_500, MARCH))
    return collaborator_id


async def weave(backend, handlers: ProductionHandlers, collaborator_id: str, artisan_id: str = TRAINED) -> str:
    async with backend.store.unit() as uow:
        woven = await handlers.weave(uow, artisan_id=artisan_id, collaborator_id=collaborator_id, product="piring",
                                     woven_at=MARCH + timedelta(days=5))
    return woven.piece_id


def submission(piece_id: str, collaborator_id: str, *, key=KEY, number: int = 1, **changes):
    raw = signed(key, {"submission_id": f"sub_{number}", "piece_id": piece_id, "collaborator_id": collaborator_id,
                       "result": "passed", "inspector": "QC-07", "inspected_at": "2024-03-10T10:00:00.000+07:00",
                       "defects": []} | changes)
    return QcSubmitted.model_validate(raw), raw


async def test_a_piece_is_priced_at_the_collaborators_rate_in_force_and_recorded_once(backend, handlers):
    collaborator_id = await workshop(backend, handlers)
    piece_id = await weave(backend, handlers, collaborator_id)

    (event,) = (await backend.store.load(piece_id)).events
    assert (event.type, event.data.rate_idr, event.data.artisan_id) == ("piece-woven", 12_500, TRAINED)


async def test_only_a_trained_resident_weaves_and_a_refusal_records_nothing(backend, handlers):
    collaborator_id = await workshop(backend, handlers)
    with pytest.raises(Conflict) as refused:
        await weave(backend, handlers, collaborator_id, artisan_id=UNTRAINED)

    assert refused.value.code == "not-trained"
    assert [event.type for event in await backend.events()] == ["collaborator-registered", "piece-rate-set"]


async def test_a_passed_result_is_recorded_once_and_the_same_result_again_changes_nothing(backend, handlers):
    collaborator_id = await workshop(backend, handlers)
    piece_id = await weave(backend, handlers, collaborator_id)
    result = submission(piece_id, collaborator_id)

    async with backend.store.unit() as uow:
        first = await handlers.judge(uow, *result)
    async with backend.store.unit() as uow:
        again = await handlers.judge(uow, *result)

    assert (first.recorded_now, again.recorded_now) == (True, False)
    assert isinstance(first.result, QcPassed) and again.result == first.result
    assert [event.type for event in (await backend.store.load(piece_id)).events] == ["piece-woven", "qc-passed"]


@pytest.mark.parametrize(("forged", "reason"), [
    ({"key": STRANGER}, "bad-signature"),
    ({"result": "failed", "defects": ["loose-weave"], "number": 2}, "conflicting-result"),
    ({"collaborator_id": "col_nobody"}, "unknown-collaborator"),
    ({"piece_id": "pc_nothing"}, "unknown-piece"),
])
async def test_a_result_that_must_not_count_is_rejected_with_its_reason_and_records_nothing(
    backend, handlers, forged, reason
):
    collaborator_id = await workshop(backend, handlers)
    piece_id = await weave(backend, handlers, collaborator_id)
    async with backend.store.unit() as uow:
        await handlers.judge(uow, *submission(piece_id, collaborator_id))
    recorded = len(await backend.events())
    changes = dict(forged)
    key, number = changes.pop("key", KEY), changes.pop("number", 1)
    changes = {"piece_id": piece_id, "collaborator_id": collaborator_id} | changes
    forged_submission = submission(changes.pop("piece_id"), changes.pop("collaborator_id"), key=key, number=number,
                                   **changes)

    with pytest.raises(SubmissionRejected) as rejected:
        async with backend.store.unit() as uow:
            await handlers.judge(uow, *forged_submission)

    assert rejected.value.reason == reason
    assert len(await backend.events()) == recorded


async def test_a_batch_judged_at_once_records_what_judging_one_by_one_would(backend, handlers):
    """The QC consumer judges a whole batch in one go (`judge_many`): a later submission for a piece sees
    what an earlier one in the same batch recorded, and a rejected one in between records nothing."""
    collaborator_id = await workshop(backend, handlers)
    first, second = [await weave(backend, handlers, collaborator_id) for _ in range(2)]
    batch = [submission(first, collaborator_id, number=1),
             submission(first, collaborator_id, number=2, result="failed", defects=["loose-weave"]),
             submission(second, collaborator_id, key=STRANGER, number=3),
             submission(second, collaborator_id, number=4, result="failed", defects=["broken-strand"]),
             submission(first, collaborator_id, number=1)]

    async with backend.store.unit() as uow:
        outcomes = await handlers.judge_many(uow, batch)

    described = [o.reason if isinstance(o, SubmissionRejected) else (o.recorded_now, o.result.submission_id)
                 for o in outcomes]
    assert described == [(True, "sub_1"), "conflicting-result", "bad-signature", (True, "sub_4"), (False, "sub_1")]
    assert [e.type for e in (await backend.store.load(first)).events] == ["piece-woven", "qc-passed"]
    assert [e.type for e in (await backend.store.load(second)).events] == ["piece-woven", "qc-failed"]


async def test_a_different_rate_for_the_same_moment_is_a_conflict_and_the_same_rate_again_a_no_op(backend, handlers):
    collaborator_id = await workshop(backend, handlers)
    async with backend.store.unit() as uow:
        again = await handlers.set_rate(uow, SetRate(collaborator_id, "piring", 12_500, MARCH))
    with pytest.raises(Conflict):
        async with backend.store.unit() as uow:
            await handlers.set_rate(uow, SetRate(collaborator_id, "piring", 13_000, MARCH))

    assert again is False
    assert [e.type for e in (await backend.store.load(collaborator_id)).events] == [
        "collaborator-registered", "piece-rate-set"]
