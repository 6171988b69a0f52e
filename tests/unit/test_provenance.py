"""Attestations and the QC results' own signatures (SPEC §11, `shared.contracts.provenance`): pure, no broker."""

from __future__ import annotations

import base64
from datetime import datetime

import pytest
from pydantic import ValidationError

from shared.contracts import Envelope, Topic, encode, service_source
from shared.contracts.events import PayoutFailed
from shared.contracts.provenance import (
    ATTESTATION_HEADER,
    Attester,
    BadSignature,
    ProvenanceSettings,
    TrustAnchors,
    Unattested,
    check,
    load_signing_key,
    new_service_keys,
    signed_result,
    signing_key_text,
)
from shared.contracts.signing import generate_private_key, private_key_pem
from shared.timeutil import WIB

KEYS = new_service_keys()
ANCHORS = TrustAnchors.of(KEYS)
INSPECTED = datetime(2024, 3, 26, 10, 0, tzinfo=WIB)
COLLABORATOR = generate_private_key()


def result(**changes) -> Envelope:
    data = signed_result(COLLABORATOR, piece_id="pc_1", artisan_id="res_1", collaborator_id="col_1",
                         amount_idr=15_000, inspected_at=INSPECTED)
    return Envelope.wrap(data.model_copy(update=changes), source=service_source("production"), time=INSPECTED)


def attested(event: Envelope, service: str = "production") -> tuple[bytes, list[tuple[str, bytes]]]:
    value = encode(event).value
    return value, [("content-type", b"application/cloudevents+json"), Attester(KEYS[service]).header(value)]


def test_a_record_attested_by_the_service_that_owns_its_topic_is_vouched_for():
    event = result()
    value, headers = attested(event)

    check(Topic.PRODUCTION, value, headers, event, ANCHORS)  # raises if not


def test_an_attestation_covers_the_record_exactly_as_published_and_nothing_else():
    event = result()
    value, headers = attested(event)
    raised = encode(result(amount_idr=15_001)).value

    with pytest.raises(Unattested):
        check(Topic.PRODUCTION, raised, headers, event, ANCHORS)


@pytest.mark.parametrize("headers", [
    [],
    [(ATTESTATION_HEADER, b"not base64!")],
    [(ATTESTATION_HEADER, base64.b64encode(b"x" * 64))],
], ids=["missing", "not-base64", "not-a-signature"])
def test_a_missing_or_meaningless_attestation_is_unattested(headers):
    event = result()
    with pytest.raises(Unattested):
        check(Topic.PRODUCTION, encode(event).value, headers, event, ANCHORS)


def test_one_service_cannot_vouch_for_another_services_topic_nor_sign_as_it():
    event = result()
    value = encode(event).value
    by_payout = [(ATTESTATION_HEADER, base64.b64encode(KEYS["payout"].sign(value)))]
    failed = Envelope.wrap(PayoutFailed(payout_id="po_1", artisan_id="res_1", amount_idr=1, reason="x"),
                           source=service_source("production"))
    failed_value, failed_headers = attested(failed, "production")

    with pytest.raises(Unattested):
        check(Topic.PRODUCTION, value, by_payout, event, ANCHORS)
    with pytest.raises(Unattested, match="source"):  # production's key, but payout's topic
        check(Topic.PAYOUT, failed_value, failed_headers, failed, ANCHORS)


def test_two_attestation_headers_are_refused_rather_than_one_picked():
    event = result()
    value, headers = attested(event)
    with pytest.raises(Unattested):
        check(Topic.PRODUCTION, value, [*headers, headers[-1]], event, ANCHORS)


def test_an_attested_result_still_needs_its_collaborators_signed_submission():
    for changes in ({"submission": None}, {"signing_key": None}, {"piece_id": "pc_2"},
                    {"signing_key": base64.b64encode(bytes(32)).decode()}):
        event = result(**changes)
        value, headers = attested(event)
        with pytest.raises(BadSignature):
            check(Topic.PRODUCTION, value, headers, event, ANCHORS)


def test_records_on_topics_no_service_owns_need_no_attestation():
    event = result()
    check(Topic.QC_SUBMISSIONS, encode(event).value, [], event, ANCHORS)


def test_trust_anchors_round_trip_and_refuse_what_they_cannot_use():
    assert TrustAnchors.parse(ANCHORS.setting()).setting() == ANCHORS.setting()
    for bad, words in (("production:AAAA", "32-byte"), ("nobody:" + ANCHORS.setting().split(":")[1], "service"),
                       (ANCHORS.setting().split(",")[0], "no trust anchor")):
        with pytest.raises(ValueError, match=words):
            TrustAnchors.parse(bad)


def test_a_service_without_a_key_or_anchors_says_what_to_set(monkeypatch):
    monkeypatch.delenv("ANYAM_SIGNING_KEY", raising=False)
    monkeypatch.delenv("ANYAM_TRUST_ANCHORS", raising=False)
    with pytest.raises(ValidationError, match="signing_key"):
        ProvenanceSettings(trust_anchors=ANCHORS.setting())
    with pytest.raises(ValueError, match="ANYAM_TRUST_ANCHORS"):
        ProvenanceSettings(signing_key=signing_key_text(KEYS["payout"]), trust_anchors=" ").anchors()
    with pytest.raises(ValueError, match="neither PEM nor base64"):
        ProvenanceSettings(signing_key="not a key!", trust_anchors=ANCHORS.setting()).attester()


def test_a_signing_key_reads_from_its_seed_or_pem():
    key = KEYS["production"]
    for text in (signing_key_text(key), private_key_pem(key).decode()):
        assert load_signing_key(text).sign(b"x") == key.sign(b"x")
