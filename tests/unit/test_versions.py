"""Schema evolution (SPEC §5): `dataversion` is read, a known older version is upcast on read, an
unknown one is `unsupported-dataversion`, and a history mixing versions replays to the same ledger."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from services.payout import domain
from services.payout.domain import transaction_for
from shared.contracts.codec import SchemaInvalid, UnsupportedDataVersion, decode, encode
from shared.contracts.codes import CODE_LISTS
from shared.contracts.envelope import Envelope, service_source
from shared.contracts.events import EVENT_TYPES, PayoutFailed, QcFailed, QcPassed, Withdrawn
from shared.contracts.signing import generate_private_key, sign, submission_event
from shared.contracts.topics import Topic
from tests.unit.test_payout_domain import PAYOUT, PRODUCTION, T0, qc_passed, scheduled


def as_version(event: Envelope, version: int, **data_changes: object) -> bytes:
    """`event`'s record as a writer of `version` wrote it, with `data_changes` in its data."""
    document = json.loads(encode(event).value)
    document["dataversion"] = version
    document["data"].update(data_changes)
    return json.dumps(document, ensure_ascii=False).encode()


def test_every_event_is_written_at_its_types_current_version():
    withdrawn = Envelope.wrap(Withdrawn(resident_id="res_1", cohort_id="coh_1", reason="health"),
                              source=service_source("enrollment"))
    woven = qc_passed("res_1", "pc_1", 15_000)

    assert json.loads(encode(withdrawn).value)["dataversion"] == Withdrawn.data_version == 2
    assert json.loads(encode(woven).value)["dataversion"] == QcPassed.data_version == 1
    assert {name: model.data_version for name, model in EVENT_TYPES.items() if model.data_version > 1} == {
        "withdrawn": 2, "qc-failed": 2, "qc-submitted": 2, "payout-failed": 2}


@pytest.mark.parametrize(("words", "read_as"), [("pindah ke Bekasi, hubungi 0812", "other"), ("health", "health")])
def test_a_version_1_withdrawal_reads_as_version_2_its_free_text_as_other_and_a_code_as_itself(words, read_as):
    event = Envelope.wrap(Withdrawn(resident_id="res_1", cohort_id="coh_1", reason="health"),
                          source=service_source("enrollment"))

    read = decode(as_version(event, 1, reason=words), topic=Topic.ENROLLMENT)

    assert read.dataversion == 2 and read.data.reason == read_as
    assert read.id == event.id and read.data.resident_id == "res_1"


def test_version_1_defects_read_as_codes_each_named_once():
    event = Envelope.wrap(QcFailed(piece_id="pc_1", artisan_id="res_1", collaborator_id="col_1", submission_id="s1",
                                   defects=["stain"], inspected_at=T0, signature="c2ln"), source=PRODUCTION)

    read = decode(as_version(event, 1, defects=["stain", "anyaman longgar", "sudut retak"]))

    assert read.data.defects == ["stain", "other"]


@pytest.mark.parametrize("version", [3, 99, 0, -1])
def test_a_version_no_reader_knows_is_unsupported(version):
    event = Envelope.wrap(Withdrawn(resident_id="res_1", cohort_id="coh_1", reason="health"),
                          source=service_source("enrollment"))
    with pytest.raises(UnsupportedDataVersion) as refused:
        decode(as_version(event, version))
    assert refused.value.reason == "unsupported-dataversion" and refused.value.path == "dataversion"
    # A type that never had a second version knows only its first.
    with pytest.raises(UnsupportedDataVersion):
        decode(as_version(qc_passed("res_1", "pc_1", 1), 2))


@pytest.mark.parametrize("version", [None, True, 2.0, "2"])
def test_a_dataversion_that_is_no_integer_or_missing_is_schema_invalid(version):
    event = Envelope.wrap(Withdrawn(resident_id="res_1", cohort_id="coh_1", reason="health"),
                          source=service_source("enrollment"))
    document = json.loads(encode(event).value)
    if version is None:
        del document["dataversion"]
    else:
        document["dataversion"] = version
    with pytest.raises(SchemaInvalid) as refused:
        decode(json.dumps(document).encode())
    assert refused.value.path == "dataversion"


def test_a_collaborators_version_1_submission_is_read_when_its_values_already_are_codes():
    key = generate_private_key()
    data = {"submission_id": "sub_1", "piece_id": "pc_1", "collaborator_id": "col_1", "result": "failed",
            "inspector": "QC-07", "inspected_at": "2024-03-05T10:00:00.000+07:00", "defects": ["loose-weave"]}
    current = json.loads(submission_event({**data, "signature": sign(key, data)}))

    coded = decode(json.dumps({**current, "dataversion": 1}).encode(), topic=Topic.QC_SUBMISSIONS)
    assert coded.dataversion == 2 and coded.data.defects == ["loose-weave"]
    # A signed word cannot be rewritten into a code (the signature covers it): it is refused.
    worded = {**data, "defects": ["anyaman longgar"]}
    with pytest.raises(SchemaInvalid) as refused:
        decode(json.dumps({**current, "dataversion": 1, "data": {**worded, "signature": sign(key, worded)}}).encode())
    assert refused.value.path == "data.defects.0"


def test_a_history_mixing_versions_replays_to_the_ledger_of_its_current_form():
    failed_at = T0 + timedelta(days=2)
    current = [
        qc_passed("res_a", "pc_1", 15_000), qc_passed("res_a", "pc_2", 20_000), qc_passed("res_b", "pc_3", 12_500),
        scheduled("po_a", "res_a", 35_000), scheduled("po_b", "res_b", 12_500),
        Envelope.wrap(PayoutFailed(payout_id="po_a", artisan_id="res_a", amount_idr=35_000, reason="account-closed"),
                      source=PAYOUT, time=failed_at),
        Envelope.wrap(PayoutFailed(payout_id="po_b", artisan_id="res_b", amount_idr=12_500, reason="other"),
                      source=PAYOUT, time=failed_at),
    ]
    # The same events as a version 1 writer had written the failures: reasons in words.
    mixed = [encode(event).value for event in current[:5]] + [
        as_version(current[5], 1, reason="account-closed"),
        as_version(current[6], 1, reason="rekening atas nama orang lain"),
    ]

    def ledger(events):
        transactions = [tx for event in events if (tx := transaction_for(event)) is not None]
        return (domain.balances(transactions), domain.ledger_digest(domain.digest_rows(transactions)))

    replayed = [decode(value) for value in mixed]
    assert [event.dataversion for event in replayed] == [1, 1, 1, 1, 1, 2, 2]
    assert ledger(replayed) == ledger(current)
    balances, _ = ledger(replayed)
    assert balances[domain.payable("res_a")] == 35_000 and balances[domain.payable("res_b")] == 12_500
    assert {event.data.reason for event in replayed[5:]} <= set(CODE_LISTS["payout-failure"])
