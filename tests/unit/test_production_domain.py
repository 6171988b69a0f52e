"""Production's pure deciders and the signing helpers: no database, no broker, milliseconds."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.production import domain
from services.production.domain import (
    AddKey,
    Collaborator,
    IssueMaterials,
    JudgeSubmission,
    Piece,
    RegisterCollaborator,
    SetRate,
    SubmissionRejected,
    WeavePiece,
)
from services.production.handlers import parse_submission
from shared.contracts.events import (
    CollaboratorRegistered,
    MaterialsIssued,
    PieceRateSet,
    PieceWoven,
    QcFailed,
    QcPassed,
    QcSubmitted,
)
from shared.contracts.signing import (
    canonical_bytes,
    generate_private_key,
    load_private_key,
    private_key_pem,
    public_key_b64,
    sign,
    signed,
    verify,
    verifying_key,
)
from shared.domain import Conflict, NotFound, Refused, fold

WIB = timezone(timedelta(hours=7))
MARCH = datetime(2024, 3, 1, tzinfo=WIB)
APRIL = datetime(2024, 4, 1, tzinfo=WIB)
NOW = datetime(2024, 6, 1, 12, tzinfo=WIB)
KEY = generate_private_key()
OTHER_KEY = generate_private_key()


def collaborator(*events) -> Collaborator:
    registered = CollaboratorRegistered(collaborator_id="col_1", name="PT Anyaman", public_key=public_key_b64(KEY))
    return fold(domain.evolve_collaborator, Collaborator(), (registered, *events))


def rate(product: str, rate_idr: int, effective_from: datetime) -> PieceRateSet:
    return PieceRateSet(collaborator_id="col_1", product=product, rate_idr=rate_idr, effective_from=effective_from)


PRICED = collaborator(rate("piring", 10_000, MARCH), rate("piring", 12_500, APRIL), rate("tas", 40_000, MARCH))


def weave(woven_at: datetime, *, trained: bool = True, state: Collaborator = PRICED, product: str = "piring",
          collaborator_id: str = "col_1") -> list:
    return domain.decide_piece(Piece(), WeavePiece(
        piece_id="pc_1", artisan_id="res_1", artisan_trained=trained, collaborator_id=collaborator_id,
        collaborator=state, product=product, woven_at=woven_at, recorded_at=NOW,
    ))


def woven_piece(collaborator_id: str = "col_1", rate_idr: int = 10_000) -> Piece:
    return Piece(woven=PieceWoven(piece_id="pc_1", artisan_id="res_1", collaborator_id=collaborator_id,
                                  product="piring", rate_idr=rate_idr, woven_at=MARCH + timedelta(days=3)))


def submission_data(**changes) -> dict:
    data = {"submission_id": "sub_1", "piece_id": "pc_1", "collaborator_id": "col_1", "result": "passed",
            "inspector": "QC-07", "inspected_at": "2024-03-05T10:00:00.000+07:00", "defects": []}
    return data | changes


def judge(piece: Piece, raw: dict, state: Collaborator = PRICED) -> list:
    return domain.decide_piece(piece, JudgeSubmission(
        submission=QcSubmitted.model_validate(raw), raw=raw, collaborator=state, received_at=NOW,
    ))


def rejection_reason(piece: Piece, raw: dict, state: Collaborator = PRICED) -> str:
    with pytest.raises(SubmissionRejected) as rejected:
        judge(piece, raw, state)
    return rejected.value.reason


# --- signing ------------------------------------------------------------------------------


def test_canonical_bytes_sort_keys_drop_whitespace_keep_non_ascii_and_leave_out_the_signature():
    data = {"b": 1, "a": "Tas anyaman — rotan", "signature": "ignored", "c": [1, {"y": 2, "x": 3}]}

    assert canonical_bytes(data) == '{"a":"Tas anyaman — rotan","b":1,"c":[1,{"x":3,"y":2}]}'.encode()


def test_a_signature_verifies_over_the_data_as_sent_and_fails_after_any_change():
    data = signed(KEY, submission_data())

    assert verify(public_key_b64(KEY), data)
    assert not verify(public_key_b64(OTHER_KEY), data)
    assert not verify(public_key_b64(KEY), data | {"result": "failed"})
    # Re-serialised through the model, the time loses its ".000": the bytes differ, so must the verdict.
    normalised = QcSubmitted.model_validate(data).model_dump(mode="json")
    assert normalised["inspected_at"] != data["inspected_at"]
    assert not verify(public_key_b64(KEY), normalised)


def test_malformed_keys_signatures_and_unencodable_text_simply_do_not_verify():
    data = signed(KEY, submission_data())

    assert not verify("not base64!", data)
    assert not verify(public_key_b64(KEY), data | {"signature": "AAAA"})
    assert not verify(public_key_b64(KEY), data | {"signature": 42})
    lone_surrogate = json.loads('"\\ud800"')
    assert not verify(public_key_b64(KEY), data | {"inspector": lone_surrogate})


def test_a_private_key_survives_its_pem_file_and_signs_the_same():
    again = load_private_key(private_key_pem(KEY))

    assert public_key_b64(again) == public_key_b64(KEY)
    assert sign(again, submission_data()) == sign(KEY, submission_data())
    with pytest.raises(ValueError):
        load_private_key(b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")


def test_the_first_registered_key_that_verifies_is_found_among_several():
    data = signed(OTHER_KEY, submission_data())

    assert verifying_key([public_key_b64(KEY), public_key_b64(OTHER_KEY)], data) == public_key_b64(OTHER_KEY)
    assert verifying_key([public_key_b64(KEY)], data) is None


# --- collaborators and rates --------------------------------------------------------------


def test_registering_a_collaborator_emits_its_first_key_and_again_is_a_no_op():
    command = RegisterCollaborator(collaborator_id="col_1", name="PT Anyaman", public_key=public_key_b64(KEY),
                                   valid_from=MARCH)

    first = domain.decide_collaborator(Collaborator(), command)

    assert first == [CollaboratorRegistered(collaborator_id="col_1", name="PT Anyaman",
                                            public_key=public_key_b64(KEY), valid_from=MARCH)]
    assert domain.decide_collaborator(fold(domain.evolve_collaborator, Collaborator(), first), command) == []


def test_a_key_rotation_adds_a_key_and_keeps_every_older_one():
    state = collaborator()
    new_key = public_key_b64(OTHER_KEY)

    events = domain.decide_collaborator(state, AddKey(collaborator_id="col_1", public_key=new_key, valid_from=APRIL))
    rotated = fold(domain.evolve_collaborator, state, events)

    assert events == [CollaboratorRegistered(collaborator_id="col_1", name="PT Anyaman", public_key=new_key,
                                             valid_from=APRIL)]
    assert rotated.public_keys == (public_key_b64(KEY), new_key)
    assert rotated.name == "PT Anyaman"
    again = AddKey(collaborator_id="col_1", public_key=new_key, valid_from=APRIL)
    assert domain.decide_collaborator(rotated, again) == []


def test_a_key_for_a_collaborator_that_does_not_exist_is_not_found():
    with pytest.raises(NotFound) as refused:
        domain.decide_collaborator(Collaborator(), AddKey(collaborator_id="col_x", public_key=public_key_b64(KEY),
                                                          valid_from=MARCH))
    assert refused.value.code == "collaborator-not-found"


def test_the_rate_in_force_is_the_latest_that_took_effect_at_or_before_the_moment():
    assert PRICED.rate_in_force("piring", MARCH - timedelta(seconds=1)) is None
    assert PRICED.rate_in_force("piring", MARCH) == 10_000
    assert PRICED.rate_in_force("piring", APRIL - timedelta(seconds=1)) == 10_000
    assert PRICED.rate_in_force("piring", APRIL) == 12_500
    assert PRICED.rate_in_force("tas", APRIL) == 40_000
    assert PRICED.rate_in_force("dompet", APRIL) is None


def test_a_rate_set_out_of_order_still_applies_from_its_own_effective_date():
    state = collaborator(rate("piring", 12_500, APRIL), rate("piring", 10_000, MARCH))

    assert state.rate_in_force("piring", MARCH + timedelta(days=10)) == 10_000
    assert state.rate_in_force("piring", APRIL + timedelta(days=10)) == 12_500


def test_the_same_rate_again_is_a_no_op_and_a_different_one_at_the_same_moment_is_a_conflict():
    assert domain.decide_collaborator(PRICED, SetRate("col_1", "piring", 10_000, MARCH)) == []
    with pytest.raises(Conflict) as refused:
        domain.decide_collaborator(PRICED, SetRate("col_1", "piring", 11_000, MARCH))
    assert refused.value.code == "rate-already-set"
    assert "later effective_from" in refused.value.message


def test_a_rate_must_be_positive():
    with pytest.raises(Refused) as refused:
        domain.decide_collaborator(PRICED, SetRate("col_1", "piring", 0, APRIL))
    assert refused.value.code == "invalid-rate"


# --- materials and pieces -----------------------------------------------------------------


def test_only_a_trained_resident_receives_materials():
    command = IssueMaterials(issue_id="iss_1", artisan_id="res_1", artisan_trained=False, collaborator_id="col_1",
                             collaborator=PRICED, material="rotan sintetis", quantity=5, unit="kg")

    with pytest.raises(Conflict) as refused:
        domain.decide_issue(domain.MaterialIssue(), command)
    issued = domain.decide_issue(domain.MaterialIssue(), IssueMaterials(**{**command.__dict__,
                                                                           "artisan_trained": True}))

    assert refused.value.code == "not-trained"
    assert "has not completed training" in refused.value.message
    assert issued == [MaterialsIssued(issue_id="iss_1", artisan_id="res_1", collaborator_id="col_1",
                                      material="rotan sintetis", quantity=5, unit="kg")]


def test_only_a_trained_resident_weaves():
    with pytest.raises(Conflict) as refused:
        weave(MARCH + timedelta(days=1), trained=False)
    assert refused.value.code == "not-trained"


def test_a_piece_carries_the_rate_in_force_when_it_was_woven():
    before = weave(APRIL - timedelta(minutes=1))
    after = weave(APRIL + timedelta(minutes=1))

    assert [e.rate_idr for e in before + after] == [10_000, 12_500]
    assert before[0].woven_at == APRIL - timedelta(minutes=1)


def test_a_piece_without_a_rate_in_force_is_a_conflict_that_names_the_priced_products():
    with pytest.raises(Conflict) as refused:
        weave(MARCH - timedelta(days=1))
    with pytest.raises(Conflict) as unpriced:
        weave(APRIL, product="dompet")

    assert refused.value.code == unpriced.value.code == "no-rate-in-force"
    assert "piring, tas" in unpriced.value.message


def test_a_piece_for_an_unknown_collaborator_is_not_found_and_one_woven_in_the_future_is_refused():
    with pytest.raises(NotFound) as unknown:
        weave(APRIL, state=Collaborator(), collaborator_id="col_x")
    with pytest.raises(Refused) as future:
        weave(NOW + timedelta(hours=1))

    assert unknown.value.code == "collaborator-not-found" and "col_x" in unknown.value.message
    assert future.value.code == "woven-in-the-future"


def test_a_piece_is_woven_once():
    assert domain.decide_piece(woven_piece(), WeavePiece(
        piece_id="pc_1", artisan_id="res_1", artisan_trained=True, collaborator_id="col_1", collaborator=PRICED,
        product="piring", woven_at=APRIL, recorded_at=NOW,
    )) == []


# --- QC submissions -----------------------------------------------------------------------


def test_a_signed_pass_for_ones_own_piece_becomes_qc_passed_with_the_pieces_rate():
    raw = signed(KEY, submission_data())

    [event] = judge(woven_piece(rate_idr=12_500), raw)

    assert isinstance(event, QcPassed)
    assert (event.amount_idr, event.submission_id, event.signature) == (12_500, "sub_1", raw["signature"])
    assert event.inspected_at == datetime(2024, 3, 5, 10, tzinfo=WIB)


def test_a_signed_fail_becomes_qc_failed_with_its_defects():
    raw = signed(KEY, submission_data(result="failed", defects=["loose-weave", "colour-mismatch"]))

    [event] = judge(woven_piece(), raw)

    assert isinstance(event, QcFailed)
    assert event.defects == ["loose-weave", "colour-mismatch"]


def test_the_same_submission_again_is_a_no_op_and_a_different_one_is_a_conflict():
    raw = signed(KEY, submission_data())
    judged = fold(domain.evolve_piece, woven_piece(), judge(woven_piece(), raw))

    assert judge(judged, raw) == []
    assert rejection_reason(judged, signed(KEY, submission_data(submission_id="sub_2"))) == "conflicting-result"
    assert rejection_reason(judged, signed(KEY, submission_data(result="failed"))) == "conflicting-result"


def test_each_rejection_reason_of_the_judge():
    good = signed(KEY, submission_data())

    assert rejection_reason(woven_piece(), good, Collaborator()) == "unknown-collaborator"
    assert rejection_reason(woven_piece(), signed(OTHER_KEY, submission_data())) == "bad-signature"
    assert rejection_reason(woven_piece(), good | {"defects": ["stain"]}) == "bad-signature"
    assert rejection_reason(Piece(), good) == "unknown-piece"
    assert rejection_reason(woven_piece(collaborator_id="col_2"), good) == "wrong-collaborator"


def test_the_signature_is_checked_before_anything_about_the_piece_is_revealed():
    forged = signed(OTHER_KEY, submission_data())

    assert rejection_reason(Piece(), forged) == "bad-signature"
    assert rejection_reason(woven_piece(collaborator_id="col_2"), forged) == "bad-signature"


def test_a_result_signed_with_an_older_key_still_verifies_after_a_rotation():
    rotated = fold(domain.evolve_collaborator, PRICED, domain.decide_collaborator(
        PRICED, AddKey(collaborator_id="col_1", public_key=public_key_b64(OTHER_KEY), valid_from=MARCH)))

    assert judge(woven_piece(), signed(KEY, submission_data()), rotated)
    assert judge(woven_piece(), signed(OTHER_KEY, submission_data()), rotated)


def test_rejections_map_to_4xx_statuses():
    assert {reason: SubmissionRejected(reason, "x").status for reason in domain.REJECTION_STATUS} == {
        "malformed": 400, "schema-invalid": 422, "bad-signature": 422, "unknown-collaborator": 404,
        "unknown-piece": 404, "wrong-collaborator": 403, "conflicting-result": 409,
        "revoked-key": 422, "key-not-yet-valid": 422, "implausible-time": 422,
    }


@pytest.mark.parametrize(
    ("body", "reason", "wording"),
    [
        (b"\xff\xfe", "malformed", "not UTF-8"),
        (b"{not json", "malformed", "not JSON"),
        (b"[1, 2]", "malformed", "a JSON list"),
        (json.dumps(submission_data(result="maybe", signature="AAAA")).encode(), "schema-invalid", "`result`"),
        (json.dumps(submission_data()).encode(), "schema-invalid", "`signature` is missing"),
    ],
)
def test_an_http_body_that_is_not_a_submission_is_rejected_naming_the_field(body, reason, wording):
    with pytest.raises(SubmissionRejected) as rejected:
        parse_submission(body)

    assert rejected.value.reason == reason
    assert wording in rejected.value.message


def test_an_http_body_is_kept_exactly_as_sent_for_the_signature():
    body = json.dumps(signed(KEY, submission_data()), ensure_ascii=False, indent=4).encode()

    submission, raw = parse_submission(body)

    assert raw["inspected_at"] == "2024-03-05T10:00:00.000+07:00"
    assert verify(public_key_b64(KEY), raw)
    assert submission.piece_id == "pc_1"


# --- property: random command sequences never break production's invariants -------------------------

SECOND = fold(domain.evolve_collaborator, Collaborator(), (
    CollaboratorRegistered(collaborator_id="col_2", name="PT Lain", public_key=public_key_b64(OTHER_KEY)),
    PieceRateSet(collaborator_id="col_2", product="piring", rate_idr=9_000, effective_from=MARCH),
))
COLLABORATORS = {"col_1": (PRICED, KEY), "col_2": (SECOND, OTHER_KEY)}

weave_steps = st.tuples(
    st.just("weave"), st.sampled_from(["pc_0", "pc_1", "pc_2"]), st.sampled_from(["col_1", "col_2", "col_9"]),
    st.booleans(), st.sampled_from(["piring", "tas", "dompet"]),
    st.sampled_from([MARCH - timedelta(days=1), MARCH + timedelta(days=2), APRIL + timedelta(days=2),
                     NOW + timedelta(days=30)]),
)
judge_steps = st.tuples(
    st.just("judge"), st.sampled_from(["pc_0", "pc_1", "pc_2", "pc_9"]), st.sampled_from(["col_1", "col_2"]),
    st.sampled_from(["col_1", "col_2"]),  # whose key signs it
    st.sampled_from(["passed", "failed"]), st.sampled_from(["sub_a", "sub_b"]),
    st.sampled_from(["2024-03-05T10:00:00+07:00", "2024-04-05T10:00:00+07:00"]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(weave_steps, judge_steps), max_size=25))
def test_random_command_sequences_give_each_piece_one_result_at_its_own_rate_for_its_own_collaborator(steps):
    pieces: dict[str, Piece] = {}
    results: dict[str, list] = {}
    for step in steps:
        piece_id = step[1]
        state = pieces.get(piece_id, Piece())
        if step[0] == "weave":
            _, _, collaborator_id, trained, product, woven_at = step
            known = COLLABORATORS.get(collaborator_id, (Collaborator(), KEY))[0]
            command = WeavePiece(piece_id=piece_id, artisan_id="res_1", artisan_trained=trained,
                                 collaborator_id=collaborator_id, collaborator=known, product=product,
                                 woven_at=woven_at, recorded_at=NOW)
        else:
            _, _, collaborator_id, signer, verdict, submission_id, inspected_at = step
            raw = signed(COLLABORATORS[signer][1], submission_data(
                piece_id=piece_id, collaborator_id=collaborator_id, result=verdict, submission_id=submission_id,
                inspected_at=inspected_at, defects=[] if verdict == "passed" else ["loose-weave"]))
            command = JudgeSubmission(submission=QcSubmitted.model_validate(raw), raw=raw,
                                      collaborator=COLLABORATORS[collaborator_id][0], received_at=NOW)
        try:
            events = domain.decide_piece(state, command)
        except Refused:
            continue  # a refusal (NotFound, Conflict, SubmissionRejected) changes nothing
        for event in events:
            if isinstance(event, QcPassed | QcFailed):
                results.setdefault(piece_id, []).append(event)
                woven = state.woven
                assert woven is not None and event.collaborator_id == woven.collaborator_id
                if isinstance(event, QcPassed):
                    assert event.amount_idr == woven.rate_idr > 0
            if isinstance(event, PieceWoven):
                assert not state.exists, "a piece was woven twice"
        pieces[piece_id] = fold(domain.evolve_piece, state, events)
    assert all(len(found) == 1 for found in results.values()), results


# --- key validity, revocation and plausible times ------------------------------------------


def registered_from(valid_from: datetime, *events) -> Collaborator:
    registered = CollaboratorRegistered(collaborator_id="col_1", name="PT Anyaman", public_key=public_key_b64(KEY),
                                        valid_from=valid_from)
    return fold(domain.evolve_collaborator, Collaborator(), (registered, rate("piring", 10_000, MARCH), *events))


def revoke(state: Collaborator, revoked_from: datetime) -> Collaborator:
    events = domain.decide_collaborator(state, domain.RevokeKey(
        collaborator_id="col_1", public_key=public_key_b64(KEY), revoked_from=revoked_from))
    return fold(domain.evolve_collaborator, state, events)


def test_a_key_registered_today_does_not_sign_for_a_piece_inspected_before_it_was_registered():
    registered_in_may = registered_from(datetime(2024, 5, 1, tzinfo=WIB))

    assert rejection_reason(woven_piece(), signed(KEY, submission_data()), registered_in_may) == "key-not-yet-valid"
    assert judge(woven_piece(), signed(KEY, submission_data()), registered_from(MARCH))


def test_a_revoked_key_signs_nothing_received_from_the_revocation_on_and_what_came_before_stays():
    state = registered_from(MARCH)
    revoked_before_now = revoke(state, NOW - timedelta(hours=1))
    revoked_after_now = revoke(state, NOW + timedelta(hours=1))
    # Backdating inspected_at does not help: it is when production received it that counts.
    backdated = signed(KEY, submission_data(inspected_at="2024-03-05T10:00:00+07:00"))

    assert rejection_reason(woven_piece(), backdated, revoked_before_now) == "revoked-key"
    assert judge(woven_piece(), backdated, revoked_after_now)
    key = revoked_before_now.key(public_key_b64(KEY))
    assert key is not None and key.revoked_from == NOW - timedelta(hours=1)


def test_revoking_again_later_changes_nothing_and_revoking_earlier_moves_the_revocation_back():
    state = revoke(registered_from(MARCH), APRIL)
    later = domain.RevokeKey(collaborator_id="col_1", public_key=public_key_b64(KEY), revoked_from=NOW)
    earlier = domain.RevokeKey(collaborator_id="col_1", public_key=public_key_b64(KEY), revoked_from=MARCH)

    assert domain.decide_collaborator(state, later) == []
    moved = fold(domain.evolve_collaborator, state, domain.decide_collaborator(state, earlier))
    assert moved.keys[0].revoked_from == MARCH
    with pytest.raises(NotFound):
        domain.decide_collaborator(state, domain.RevokeKey(
            collaborator_id="col_1", public_key=public_key_b64(OTHER_KEY), revoked_from=NOW))


def test_a_result_inspected_before_its_piece_was_woven_or_after_it_was_received_is_implausible():
    before_woven = signed(KEY, submission_data(inspected_at="2024-03-02T10:00:00+07:00"))
    in_the_future = signed(KEY, submission_data(inspected_at=(NOW + timedelta(hours=1)).isoformat()))
    within_the_skew = signed(KEY, submission_data(inspected_at=(NOW + timedelta(minutes=4)).isoformat()))

    assert rejection_reason(woven_piece(), before_woven) == "implausible-time"
    assert rejection_reason(woven_piece(), in_the_future) == "implausible-time"
    assert judge(woven_piece(), within_the_skew)


def test_a_piece_cannot_be_woven_before_its_artisan_completed_training():
    def weave_trained_on(day):
        return domain.decide_piece(Piece(), WeavePiece(
            piece_id="pc_1", artisan_id="res_1", artisan_trained=True, trained_on=day, collaborator_id="col_1",
            collaborator=PRICED, product="piring", woven_at=datetime(2024, 3, 4, 9, tzinfo=WIB), recorded_at=NOW))

    with pytest.raises(Refused) as refused:
        weave_trained_on(datetime(2024, 3, 5).date())
    assert refused.value.code == "woven-before-training"
    assert weave_trained_on(datetime(2024, 3, 4).date())


def test_a_result_carries_the_submission_as_signed_and_the_key_so_anyone_can_check_it():
    from shared.contracts.provenance import BadSignature, check_submission

    raw = signed(KEY, submission_data(inspector="QC-Sari.3"))
    (passed,) = judge(woven_piece(), raw)

    assert passed.submission == raw and passed.signing_key == public_key_b64(KEY) and passed.received_at == NOW
    check_submission(passed)  # raises if it does not verify
    with pytest.raises(BadSignature):
        check_submission(passed.model_copy(update={"piece_id": "pc_other"}))
    with pytest.raises(BadSignature):
        check_submission(passed.model_copy(update={"submission": {**raw, "result": "failed"}}))
    with pytest.raises(BadSignature):
        check_submission(passed.model_copy(update={"signing_key": public_key_b64(OTHER_KEY)}))
    with pytest.raises(BadSignature):
        check_submission(passed.model_copy(update={"submission": None}))


# --- a submission refused over HTTP, as its dead letter records it ------------------------------


def test_a_refused_json_submission_is_dead_lettered_as_the_cloudevent_it_would_have_been_on_the_topic():
    body = json.dumps({"submission_id": "sub_1", "piece_id": "pc_1", "collaborator_id": "col_1",
                       "result": "passed", "signature": "AAAA"}).encode()
    received = datetime(2024, 3, 4, 9, 15, tzinfo=timezone(timedelta(hours=7)))
    value, headers = domain.refused_submission_event(body, reason="bad-signature", collaborator_id="col_1",
                                                     event_id="e1", received_at=received)
    event = json.loads(value)
    assert headers == [("content-type", b"application/cloudevents+json")]
    assert {k: event[k] for k in ("specversion", "id", "source", "type", "subject", "datacontenttype",
                                  "dataversion")} == {
        "specversion": "1.0", "id": "e1", "source": "/collaborators/col_1", "type": "qc-submitted",
        "subject": "pc_1", "datacontenttype": "application/json", "dataversion": 2}
    assert datetime.fromisoformat(event["time"]) == received
    assert event["data"] == json.loads(body)  # as sent, the signature with it


@pytest.mark.parametrize(("reason", "body"), [
    ("malformed", b"\xff\xfe not utf-8"), ("malformed", b"[1, 2]"), ("malformed", b"{not json"), ("malformed", b""),
    ("schema-invalid", json.dumps({"submission_id": "sub_1", "piece_id": "pc_1", "collaborator_id": "col_1",
                                   "inspector": "Bu Siti 081299887721", "result": "passed"}).encode()),
])
def test_a_body_refused_for_its_shape_is_withheld_from_the_dead_letter(reason, body):
    value, _ = domain.refused_submission_event(body, reason=reason, collaborator_id=None, event_id="e2",
                                               received_at=datetime(2024, 3, 4, tzinfo=UTC))
    event = json.loads(value)
    assert event["source"] == "/collaborators/unknown" and event["type"] == "qc-submitted"
    assert "data" not in event and "data_base64" not in event and "subject" not in event
    assert b"081299887721" not in value
