"""The wire contract: every event round-trips, and every bad record gets a typed, named error."""

from __future__ import annotations

import json
import sys
import unicodedata
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from shared.contracts import (
    EVENT_TYPES,
    DecodeError,
    Envelope,
    MalformedRecord,
    SchemaInvalid,
    Topic,
    UnexpectedEventType,
    UnknownEventType,
    WrongSpecVersion,
    decode,
    encode,
    service_source,
)
from shared.contracts import events as ev
from shared.contracts.codec import _decode_step_by_step, _decoded_in_one_pass, _parse_json_object
from shared.contracts.envelope import Attribute
from shared.contracts.schema_export import SCHEMA_DIR, stale_files

JAKARTA_MORNING = datetime(2024, 3, 4, 9, 15, tzinfo=timezone(timedelta(hours=7)))
PUBLIC_KEY = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="  # 32 bytes
SIGNATURE = "c2lnbmF0dXJl"

EXAMPLES: list[ev.EventData] = [
    ev.ResidentRegistered(resident_id="res_1", rusunawa="Nagrak", registered_at=JAKARTA_MORNING),
    ev.CohortScheduled(
        cohort_id="coh_1", rusunawa="Nagrak", skill="menganyam", product_focus="piring",
        starts_on=date(2024, 2, 26), ends_on=date(2024, 2, 29), capacity=25,
    ),
    ev.Enrolled(resident_id="res_1", cohort_id="coh_1", enrolled_at=JAKARTA_MORNING),
    ev.TrainingCompleted(resident_id="res_1", cohort_id="coh_1", completed_on=date(2024, 2, 29)),
    ev.Withdrawn(resident_id="res_1", cohort_id="coh_1", reason="moved-away"),
    ev.CollaboratorRegistered(collaborator_id="col_1", name="PT Anyaman Nusantara", public_key=PUBLIC_KEY),
    ev.PieceRateSet(collaborator_id="col_1", product="piring", rate_idr=15_000, effective_from=JAKARTA_MORNING),
    ev.MaterialsIssued(
        issue_id="iss_1", artisan_id="res_1", collaborator_id="col_1", material="rotan sintetis", quantity=5,
        unit="kg",
    ),
    ev.PieceWoven(
        piece_id="pc_1", artisan_id="res_1", collaborator_id="col_1", product="piring", rate_idr=15_000,
        woven_at=JAKARTA_MORNING,
    ),
    ev.QcPassed(
        piece_id="pc_1", artisan_id="res_1", collaborator_id="col_1", product="piring", amount_idr=15_000,
        submission_id="sub_1", inspected_at=JAKARTA_MORNING, signature=SIGNATURE,
    ),
    ev.QcFailed(
        piece_id="pc_2", artisan_id="res_1", collaborator_id="col_1", submission_id="sub_2",
        defects=["loose-weave"], inspected_at=JAKARTA_MORNING, signature=SIGNATURE,
    ),
    ev.QcSubmitted(
        submission_id="sub_1", piece_id="pc_1", collaborator_id="col_1", result="passed", inspector="QC-07",
        inspected_at=JAKARTA_MORNING, defects=[], signature=SIGNATURE,
    ),
    ev.PayoutScheduled(
        payout_id="po_1", run_id="run-2024-w10", artisan_id="res_1", amount_idr=15_000, period_end=JAKARTA_MORNING,
    ),
    ev.Paid(
        payout_id="po_1", artisan_id="res_1", amount_idr=15_000, method="bank-transfer", reference="TRX-1",
        paid_at=JAKARTA_MORNING,
    ),
    ev.PayoutFailed(payout_id="po_2", artisan_id="res_1", amount_idr=15_000, reason="account-closed"),
    ev.PersonalDataErased(resident_id="res_1", erased_at=JAKARTA_MORNING, money_owed_idr=0),
    ev.MaterialUsageSet(
        collaborator_id="col_1", product="piring", material="rotan sintetis", unit="g", quantity_per_piece=250,
        effective_from=JAKARTA_MORNING,
    ),
    ev.RusunawaRegistered(rusunawa_id="rsw_1", name="Rusunawa Nagrak", ovop_product="anyaman piring"),
    ev.CollaboratorInvoiced(invoice_id="inv_1", collaborator_id="col_1", period_end=JAKARTA_MORNING,
                            amount_idr=45_000, pieces=3),
    ev.CollaboratorPaid(payment_id="cpay_1", invoice_id="inv_1", collaborator_id="col_1", amount_idr=20_000,
                        received_at=JAKARTA_MORNING),
]


def wrapped(data: ev.EventData) -> Envelope:
    return Envelope.wrap(data, source=service_source("production"), time=JAKARTA_MORNING)


def valid_value() -> dict:
    return json.loads(encode(wrapped(EXAMPLES[8])).value)


def test_the_examples_cover_every_event_type_of_the_catalog():
    assert {type(e).event_type for e in EXAMPLES} == set(EVENT_TYPES)


@pytest.mark.parametrize("data", EXAMPLES, ids=lambda d: d.event_type)
def test_every_event_type_round_trips_through_a_kafka_record(data):
    event = wrapped(data)
    record = encode(event)

    assert decode(record.value, topic=record.topic) == event
    # Read in one pass: the step-by-step way is only for what is wrong.
    assert _decoded_in_one_pass(record.value, record.topic) == event
    assert record.topic == data.topic
    assert record.key == str(getattr(data, data.key_field)).encode()
    assert ("content-type", b"application/cloudevents+json") in record.headers


@pytest.mark.parametrize("data", EXAMPLES, ids=lambda d: d.event_type)
def test_records_carry_the_envelope_attributes_of_spec_section_5(data):
    document = json.loads(encode(wrapped(data)).value)

    assert document["specversion"] == "1.0"
    assert document["type"] == data.event_type
    assert document["datacontenttype"] == "application/json"
    assert document["time"].endswith("+07:00")


def test_business_times_given_in_utc_are_written_in_wib():
    woven = ev.PieceWoven(
        piece_id="pc_9", artisan_id="res_1", collaborator_id="col_1", product="tas", rate_idr=1,
        woven_at=datetime(2024, 3, 4, 2, 15, tzinfo=UTC),
    )
    assert json.loads(encode(wrapped(woven)).value)["data"]["woven_at"] == "2024-03-04T09:15:00+07:00"


def test_unknown_extra_data_fields_are_tolerated_and_kept():
    value = valid_value()
    value["data"]["colour"] = "natural"

    event = decode(json.dumps(value).encode())

    assert event.data.model_extra == {"colour": "natural"}
    assert json.loads(encode(event).value)["data"]["colour"] == "natural"


@pytest.mark.parametrize(
    ("value", "error", "reason"),
    [
        (b"\xff\xfe not utf-8", MalformedRecord, "malformed"),
        (b"{not json", MalformedRecord, "malformed"),
        (b"[1, 2]", MalformedRecord, "malformed"),
        (None, MalformedRecord, "malformed"),
        (b" " * 2_000_000, MalformedRecord, "malformed"),
    ],
    ids=["not-utf8", "not-json", "not-an-object", "tombstone", "huge"],
)
def test_values_that_are_not_json_objects_are_malformed(value, error, reason):
    with pytest.raises(error) as caught:
        decode(value)
    assert caught.value.reason == reason


def test_a_wrong_specversion_is_named():
    value = valid_value() | {"specversion": "0.3"}
    with pytest.raises(WrongSpecVersion) as caught:
        decode(json.dumps(value).encode())
    assert caught.value.reason == "wrong-specversion"
    assert caught.value.path == "specversion"


def test_an_unknown_type_is_named():
    value = valid_value() | {"type": "piece-stolen"}
    with pytest.raises(UnknownEventType, match="piece-stolen"):
        decode(json.dumps(value).encode())


def test_a_trusted_event_type_on_the_untrusted_topic_is_refused():
    # A collaborator must not be able to write `qc-passed` straight onto qc-submissions.
    passed = encode(wrapped(EXAMPLES[9]))
    with pytest.raises(UnexpectedEventType) as caught:
        decode(passed.value, topic=Topic.QC_SUBMISSIONS)
    assert caught.value.reason == "unexpected-type"


@pytest.mark.parametrize(
    ("mutate", "path", "wording"),
    [
        (lambda v: v["data"].pop("rate_idr"), "data.rate_idr", "missing"),
        (lambda v: v["data"].update(rate_idr="15000"), "data.rate_idr", "invalid"),
        (lambda v: v["data"].update(rate_idr=15000.5), "data.rate_idr", "invalid"),
        (lambda v: v["data"].update(rate_idr=True), "data.rate_idr", "invalid"),
        (lambda v: v["data"].update(rate_idr=-1), "data.rate_idr", "invalid"),
        (lambda v: v["data"].update(woven_at="2024-03-04T09:15:00"), "data.woven_at", "invalid"),
        (lambda v: v.pop("id"), "id", "missing"),
        (lambda v: v.update(time="yesterday"), "time", "invalid"),
        (lambda v: v.update(data=[1]), "data", "object"),
        (lambda v: v.update(id="\u0000x"), "id", "control character"),
        (lambda v: v["data"].update(artisan_id="res\ud800"), "data.artisan_id", "unicode"),
        (lambda v: v["data"].update(product="piring\u0000"), "data.product", "control character"),
    ],
    ids=["missing-field", "money-as-string", "money-as-float", "money-as-bool", "negative-money",
         "naive-time", "missing-id", "bad-time", "data-not-object", "nul-in-id", "lone-surrogate", "nul-in-text"],
)
def test_missing_or_invalid_fields_are_named_by_their_path(mutate, path, wording):
    value = valid_value()
    mutate(value)
    with pytest.raises(SchemaInvalid) as caught:
        decode(json.dumps(value).encode())
    assert caught.value.reason == "schema-invalid"
    assert caught.value.path == path
    assert wording in str(caught.value)


def test_text_is_refused_for_exactly_the_control_characters_but_tab_and_newline_and_lone_surrogates():
    for code_point in range(sys.maxunicode + 1):
        char = chr(code_point)
        unstorable = char not in "\t\n" and unicodedata.category(char) in ("Cc", "Cs")
        if unstorable:
            with pytest.raises(ValueError, match=f"U\\+{code_point:04X}"):
                ev.storable_text(f"a{char}b")
        else:
            assert ev.storable_text(f"a{char}b") == f"a{char}b"


def test_an_events_text_and_ids_refuse_exactly_what_storable_text_refuses():
    # Events check the rule with patterns pydantic-core runs (and lone surrogates by its own
    # unicode check), not with `storable_text`: both must refuse the very same characters.
    text, attribute, identifier = TypeAdapter(ev.Text), TypeAdapter(Attribute), TypeAdapter(ev.Id)
    for code_point in range(sys.maxunicode + 1):
        char = chr(code_point)
        unstorable = char not in "\t\n" and unicodedata.category(char) in ("Cc", "Cs")
        for adapter in (text, attribute, identifier):
            refused = char == "\n" and adapter is identifier  # an id is one line
            try:
                adapter.validate_python(f"a{char}b")
            except ValidationError:
                assert unstorable or refused, f"U+{code_point:04X} refused by {adapter}"
            else:
                assert not (unstorable or refused), f"U+{code_point:04X} accepted by {adapter}"
    # An id's first and last characters are no space either, as before.
    for value in (" a", "a ", "\ta", "a\u3000"):
        with pytest.raises(ValidationError):
            identifier.validate_python(value)


def test_a_control_character_is_refused_in_words_not_as_a_regular_expression():
    value = valid_value()
    value["data"]["product"] = "piring\u0007"
    with pytest.raises(SchemaInvalid) as caught:
        decode(json.dumps(value).encode())
    assert str(caught.value) == ("`data.product` is invalid: must name a thing: no control character, and no "
                                 "more than 6 digits in a row (a NIK, phone or account number may not reach a topic)")


@pytest.mark.parametrize("text", ["NIK 3175094107880021", "hubungi 0812-9988-7721", "0812 9988 7721",
                                  "rek. 1234567890", "\uff10\uff18\uff11\uff12\uff19\uff19\uff18\uff18"])
def test_a_label_holding_a_nik_phone_or_account_number_is_refused_without_repeating_it(text):
    value = valid_value()
    value["data"]["product"] = f"piring {text}"
    with pytest.raises(SchemaInvalid) as caught:
        decode(json.dumps(value).encode())
    assert caught.value.path == "data.product" and text not in str(caught.value)


@pytest.mark.parametrize("label", ["piring lidi", "tas 40x25 cm", "Rusunawa Marunda Blok 12", "Angkatan 2024",
                                   "PT Anyaman Nusantara", "kode 123456"])
def test_labels_that_name_things_with_a_few_digits_are_accepted(label):
    value = valid_value()
    value["data"]["product"] = label
    assert decode(json.dumps(value).encode()).data.product == label


def test_error_messages_never_repeat_field_values():
    # Field values may be personal data (SPEC §5); errors name the field, never its content.
    value = valid_value()
    value["data"]["rate_idr"] = "3171234567890123"
    with pytest.raises(SchemaInvalid) as caught:
        decode(json.dumps(value).encode())
    assert "3171234567890123" not in str(caught.value)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_raise_anything_but_a_decode_error(blob):
    with pytest.raises(DecodeError):
        decode(blob)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


any_text = st.text(alphabet=st.characters(exclude_categories=()), max_size=20)  # lone surrogates too
any_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | any_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=500, deadline=None)
@given(document=st.dictionaries(any_text, any_json, max_size=4), ascii_only=st.booleans())
def test_documents_are_read_exactly_as_the_json_module_reads_them(document, ascii_only):
    # decode parses with pydantic-core's faster parser and falls back to `json` where it refuses.
    text = json.dumps(document, ensure_ascii=ascii_only)
    try:
        expected = json.loads(text)
    except (ValueError, RecursionError):
        expected = None
    if not ascii_only and any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        return  # a raw lone surrogate cannot be UTF-8 encoded, so no record can carry it
    assert _parse_json_object(text.encode()) == expected


def test_nesting_too_deep_for_the_fast_parser_is_judged_as_json_judges_it():
    value = valid_value()
    value["data"]["product"] = json.loads("[" * 500 + "]" * 500)
    with pytest.raises(SchemaInvalid) as caught:
        decode(json.dumps(value).encode())
    assert caught.value.path == "data.product"


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from(sorted(valid_value()["data"])), replacement=json_values)
def test_any_json_in_a_data_field_either_decodes_or_raises_a_decode_error(field, replacement):
    value = valid_value()
    value["data"][field] = replacement
    try:
        decode(json.dumps(value).encode())
    except DecodeError:
        pass


_ABSENT = object()
#: Values that pass or fail one rule or another: absent, wrong JSON types, almost-right formats.
_REPLACEMENTS = [
    _ABSENT, None, "", " x", "x\u0000", "1.0", "1", "qc-passed", "res_1", "YWJj", 15_000, 15_000.0, "15000", -1, 0,
    True, [], {}, ["anyaman longgar"], "2024-03-04T09:15:00+07:00", "2024-03-04T09:15:00", "2024-03-04",
    1_709_518_500,
]


def _mutated_record(example: ev.EventData, place: str, field: str, replacement: object, event_type: str) -> bytes:
    """An example event's record with one thing changed: a field of the envelope or of its data replaced
    (or, with `_ABSENT`, removed), its `type` swapped for another, or a key written twice."""
    document = json.loads(encode(wrapped(example)).value)
    document["type"] = event_type
    target = document if place == "envelope" else document["data"]
    if place == "twice":
        # The same key twice in one object: JSON leaves it to the reader; both ways must read alike.
        text, again = json.dumps(document), None if replacement is _ABSENT else replacement
        return (text[:-1] + f", {json.dumps(field)}: {json.dumps(again)}}}").encode()
    if replacement is _ABSENT:
        target.pop(field, None)
    else:
        target[field] = replacement
    return json.dumps(document).encode()


def _read_alike(value: bytes, topic: Topic | None) -> bool:
    """Whether the one pass declines `value` or reads it as the step-by-step way does; True if it read it."""
    one_pass = _decoded_in_one_pass(value, topic)
    if one_pass is None:
        return False  # declined: the step-by-step way judges it, as `decode` does
    step_by_step = _decode_step_by_step(value, topic)  # a refusal here fails the test
    assert type(one_pass) is Envelope and type(one_pass.data) is type(step_by_step.data)
    assert one_pass == step_by_step
    assert one_pass.model_fields_set == step_by_step.model_fields_set
    assert one_pass.model_dump_json() == step_by_step.model_dump_json()
    return True


def test_what_one_pass_accepts_the_step_by_step_way_reads_as_the_same_event():
    # Every example, every field of its envelope and data (and one neither has) removed or replaced by
    # each of the values above, under its own type and another's, for no topic, its own and another.
    read = 0
    for example in EXAMPLES:
        other_type = next(t for t, model in EVENT_TYPES.items() if model.topic != example.topic)
        envelope_fields = [*Envelope.model_fields, "extension"]
        data_fields = [*type(example).model_fields, "extension"]
        for place, fields in (("envelope", envelope_fields), ("data", data_fields), ("twice", envelope_fields)):
            for field in fields:
                for replacement in _REPLACEMENTS:
                    for event_type in (example.event_type, other_type):
                        value = _mutated_record(example, place, field, replacement, event_type)
                        for topic in (None, example.topic, EVENT_TYPES[other_type].topic):
                            read += _read_alike(value, topic)
    assert read > 1000  # the one pass reads what is valid, not nothing


@settings(max_examples=500, deadline=None)
@given(
    example=st.sampled_from(EXAMPLES),
    place=st.sampled_from(["envelope", "data", "twice"]),
    field=st.sampled_from(sorted({*Envelope.model_fields, "amount_idr", "rate_idr", "quantity", "artisan_id",
                                  "inspected_at", "starts_on", "defects", "result", "public_key"})),
    replacement=any_json,
    topic=st.none() | st.sampled_from(list(Topic)),
)
def test_any_json_anywhere_is_read_by_one_pass_as_by_the_step_by_step_way_or_declined(
    example, place, field, replacement, topic,
):
    _read_alike(_mutated_record(example, place, field, replacement, example.event_type), topic)


def test_the_checked_in_json_schemas_match_the_models():
    stale = stale_files()
    assert not stale, f"{SCHEMA_DIR} is stale for {stale}: run `python -m shared.contracts.schema_export`"
