"""`anyam dead-letters`' parsing and formatting: what an operator types, and what is (never) shown."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest

from anyam.deadletters.operations import stack_consumers
from anyam.deadletters.records import (
    REDRIVEN_FROM_HEADER,
    BadInput,
    Position,
    details,
    entry_from_record,
    matches,
    parse_selector,
    parse_since,
    redrive_headers,
    redrive_refusal,
    select,
    summary,
    table,
)
from shared.timeutil import WIB

PREFIX = "p-"
VALUE = json.dumps({"specversion": "1.0", "id": "evt_01J0AAA", "type": "qc-submitted",
                    "data": {"piece_id": "pc_1", "inspector": "QC-07"}}).encode()


def dead_letter(reason="bad-signature", *, value=VALUE, consumer="production-qc-submissions",
                topic=f"{PREFIX}qc-submissions", partition="2", offset="41", extra=(), position=(0, 7)):
    headers = [("content-type", b"application/cloudevents+json"), *extra,
               ("anyam-dead-letter-reason", reason.encode()),
               ("anyam-dead-letter-detail", b"The signature does not verify."),
               ("anyam-dead-letter-consumer", consumer.encode()),
               ("anyam-dead-letter-topic", topic.encode()),
               ("anyam-dead-letter-partition", partition.encode()),
               ("anyam-dead-letter-offset", offset.encode()),
               ("anyam-dead-letter-time", b"2024-03-21T10:00:00+07:00")]
    return entry_from_record(*position, 1_700_000_000_000, b"pc_1", value, headers)


def refusal(entry):
    return redrive_refusal(entry, prefix=PREFIX, consumers=stack_consumers(PREFIX))


@pytest.mark.parametrize(("text", "expected"), [
    ("0:17", Position(0, 17)), (" 12:0 ", Position(12, 0)), ("evt_01J0AAA", "evt_01J0AAA"),
    ("5d8f-uuid-like", "5d8f-uuid-like"),
])
def test_an_id_is_a_position_or_an_event_id(text, expected):
    assert parse_selector(text) == expected


@pytest.mark.parametrize("text", ["0:17:3", "-1:4", "", "two words", "x" * 201, "é"])
def test_anything_else_is_refused_with_a_message_that_says_what_an_id_is(text):
    with pytest.raises(BadInput, match="position|id"):
        parse_selector(text)


def test_since_takes_a_moment_a_wib_date_or_an_age():
    now = datetime(2024, 3, 21, 12, 0, tzinfo=WIB)
    assert parse_since("6h", now) == now - timedelta(hours=6)
    assert parse_since("30m", now) == now - timedelta(minutes=30)
    assert parse_since("2d", now) == now - timedelta(days=2)
    assert parse_since("2024-03-20", now) == datetime(2024, 3, 20, tzinfo=WIB)
    assert parse_since("2024-03-20T01:00:00Z", now) == datetime(2024, 3, 20, 8, tzinfo=WIB)
    assert parse_since("2024-03-20T01:00:00", now).tzinfo is WIB  # a naive moment is WIB, business time
    for bad in ("yesterday", "6 hours", "2024-13-01", "-3h"):
        with pytest.raises(BadInput, match="--since"):
            parse_since(bad, now)


def test_a_dead_letter_is_read_back_with_its_original_headers_apart_from_its_own():
    entry = dead_letter()
    assert (entry.position, entry.reason, entry.consumer, entry.source) == (
        Position(0, 7), "bad-signature", "production-qc-submissions", f"{PREFIX}qc-submissions[2]@41")
    assert entry.headers == (("content-type", b"application/cloudevents+json"),)
    assert (entry.event_id, entry.event_type) == ("evt_01J0AAA", "qc-submitted")
    assert entry.refused_at == datetime(2024, 3, 21, 10, tzinfo=WIB)


def test_unreadable_headers_and_values_read_as_unknown_never_raise():
    entry = entry_from_record(1, 2, 1_700_000_000_000, None, b"\xff\xfe", [
        ("anyam-dead-letter-partition", b"not a number"), ("anyam-dead-letter-time", b"\xff"),
        ("anyam-dead-letter-reason", None)])
    assert (entry.source_partition, entry.reason, entry.event_id) == (-1, "", None)
    assert entry.refused_at == datetime.fromtimestamp(1_700_000_000, WIB)  # the record's own timestamp
    assert entry_from_record(0, 0, None, None, b'["id"]', None).event_id is None
    assert entry_from_record(0, 0, None, None, b'{"id": 7, "type": "x y"}', None).event_id is None


def test_the_list_shows_metadata_never_the_value():
    entry = dead_letter()
    row = summary(entry)
    assert "QC-07" not in json.dumps(row) and "QC-07" not in " ".join(table([entry])[0])
    assert row["event_id"] == "evt_01J0AAA" and row["position"] == "0:7"


def test_show_prints_the_value_only_of_a_record_the_contract_checked():
    checked = details(dead_letter(), redrive_refusal=None)
    assert json.loads(checked["value"]) == json.loads(VALUE)
    unchecked = details(dead_letter("schema-invalid"), redrive_refusal=None)
    assert "value" not in unchecked and "personal data" in unchecked["value_withheld"]
    assert "QC-07" not in json.dumps(unchecked)
    assert "QC-07" in details(dead_letter("schema-invalid"), redrive_refusal=None, raw=True)["value"]
    binary = details(dead_letter("handler-error", value=b"\xff\x00"), redrive_refusal=None)
    assert binary["value"] == "base64:/wA="


def test_filters_take_base_or_full_names_and_since():
    entry = dead_letter()
    assert matches(entry, topic="qc-submissions", prefix=PREFIX) and matches(entry, topic=f"{PREFIX}qc-submissions")
    assert not matches(entry, topic="production", prefix=PREFIX)
    assert matches(entry, consumer="production-qc-submissions", reason="bad-signature")
    assert not matches(entry, reason="malformed")
    assert matches(entry, since=datetime(2024, 3, 21, 9, tzinfo=WIB))
    assert not matches(entry, since=datetime(2024, 3, 21, 11, tzinfo=WIB))
    assert select([entry], Position(0, 7)) == [entry] and select([entry], "evt_01J0AAA") == [entry]
    assert select([entry], Position(0, 8)) == [] and select([entry], "evt_other") == []


def test_a_curable_refusal_from_a_topic_is_redrivable():
    assert refusal(dead_letter()) is None
    assert refusal(dead_letter("handler-error", consumer=f"{PREFIX}payout-ledger", topic=f"{PREFIX}production")) is None


@pytest.mark.parametrize(("entry", "why"), [
    (dead_letter("unknown-piece", consumer="production-http", topic="http:POST /qc-submissions", partition="-1",
                 offset="-1"), "refused over HTTP"),
    (dead_letter("malformed", consumer="production-http", topic="http:POST /qc-submissions", partition="-1",
                 offset="-1"), "body was withheld"),
    (dead_letter("malformed", value=b"not json"), "no event with an id"),
    (dead_letter("malformed", value=None), "carries no value"),
    (dead_letter(topic="qc-submissions"), "not one of this stack's event topics"),  # another prefix's
    (dead_letter(consumer="someone-else"), "not a consumer this stack runs"),
    (dead_letter(consumer="payout-ledger", topic=f"{PREFIX}production"), "not a consumer this stack runs"),
])
def test_what_cannot_be_redriven_says_why(entry, why):
    assert why in (refusal(entry) or "")


def test_a_redriven_record_keeps_its_headers_and_names_the_dead_letter_once():
    entry = dead_letter(extra=[("anyam-attestation", b"sig"), (REDRIVEN_FROM_HEADER, b"p-dead-letters:1:1")])
    assert redrive_headers(entry, "p-dead-letters") == [
        ("content-type", b"application/cloudevents+json"), ("anyam-attestation", b"sig"),
        (REDRIVEN_FROM_HEADER, b"p-dead-letters:0:7")]
    assert dead_letter(extra=[(REDRIVEN_FROM_HEADER, b"p-dead-letters:1:1")]).redriven_from == "p-dead-letters:1:1"
