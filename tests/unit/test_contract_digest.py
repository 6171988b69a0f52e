"""The ledger digest as docs/contract/ledger.md publishes it, computed the way an outside auditor would.

`documented_digest` below is written from the document alone, with nothing but the standard library
and an RFC 8785 library: it imports nothing of the ledger, payout or the audit. It must give the
digest the project's ledger gives for the same events, and the worked example the document prints;
if either the ledger or the document changes alone, these tests fail.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import rfc8785

LEDGER_DOC = Path(__file__).parents[2] / "docs" / "contract" / "ledger.md"

# --- the documented rule, and nothing else --------------------------------------------------

WIB = timezone(timedelta(hours=7))

#: docs/contract/ledger.md, "Posting rules": the event types that move money, from which account to which.
POSTING_RULES = {
    "qc-passed": ("collaborator:{collaborator_id}:fees", "artisan:{artisan_id}:payable"),
    "payout-scheduled": ("artisan:{artisan_id}:payable", "artisan:{artisan_id}:in-transit"),
    "paid": ("artisan:{artisan_id}:in-transit", "artisan:{artisan_id}:paid"),
    "payout-failed": ("artisan:{artisan_id}:in-transit", "artisan:{artisan_id}:payable"),
}


def documented_objects(events: list[dict[str, Any]], as_of: datetime | None = None) -> list[dict[str, Any]]:
    """Two postings per money-moving event at or before `as_of`, ordered by event id, then account."""
    objects = []
    for event in events:
        rule = POSTING_RULES.get(event["type"])
        if rule is None:
            continue
        moment = datetime.fromisoformat(event["time"]).astimezone(WIB)
        if as_of is not None and moment > as_of:
            continue
        amount = event["data"]["amount_idr"]
        source, destination = (account.format(**event["data"]) for account in rule)
        for account, signed_amount in ((source, -amount), (destination, amount)):
            objects.append({
                "account": account,
                "amount_idr": signed_amount,
                "event_id": event["id"],
                # RFC 3339 in WIB: seconds, a six-digit fraction only when there is one, then +07:00.
                "event_time": moment.isoformat(),
                "event_type": event["type"],
            })
    return sorted(objects, key=lambda posting: (posting["event_id"], posting["account"]))


def documented_bytes(events: list[dict[str, Any]], as_of: datetime | None = None) -> bytes:
    return rfc8785.dumps(documented_objects(events, as_of))


def documented_digest(events: list[dict[str, Any]], as_of: datetime | None = None) -> str:
    return hashlib.sha256(documented_bytes(events, as_of)).hexdigest()


# --- a realistic history, as CloudEvents on the topics ----------------------------------------


def cloud_event(event_id: str, event_type: str, source: str, time: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"specversion": "1.0", "id": event_id, "source": f"/services/{source}", "type": event_type,
            "time": time, "datacontenttype": "application/json", "dataversion": 1, "data": data}


def qc_passed(event_id: str, time: str, piece: str, artisan: str, amount: int) -> dict[str, Any]:
    return cloud_event(event_id, "qc-passed", "production", time, {
        "piece_id": piece, "artisan_id": artisan, "collaborator_id": "col_01HQ5Z2K8J", "product": "piring",
        "amount_idr": amount, "submission_id": f"sub_{piece}", "inspected_at": time, "signature": "c2lnbmF0dXJl",
    })


def payout_event(event_id: str, event_type: str, time: str, payout: str, artisan: str, amount: int,
                 **more: Any) -> dict[str, Any]:
    return cloud_event(event_id, event_type, "payout", time,
                       {"payout_id": payout, "artisan_id": artisan, "amount_idr": amount, **more})


#: Two artisans weave for one collaborator; one is paid, the other's payout fails. Ids are UUIDv7s as
#: the services make them, listed here in time order, which is not their code-point order.
HISTORY = [
    cloud_event("018e0f1a-0000-7000-8000-000000000001", "piece-woven", "production", "2024-03-04T09:15:00+07:00",
                {"piece_id": "pc_1", "artisan_id": "res_ani", "collaborator_id": "col_01HQ5Z2K8J",
                 "product": "piring", "rate_idr": 25_000, "woven_at": "2024-03-04T09:15:00+07:00"}),
    qc_passed("018e0f3c-9b2a-7c4d-8e1f-5a6b7c8d9e0f", "2024-03-04T10:00:00.250000+07:00", "pc_1", "res_ani", 25_000),
    qc_passed("018e0f2b-1111-7222-8333-444455556666", "2024-03-04T11:30:00+07:00", "pc_2", "res_budi", 30_000),
    qc_passed("018e1000-aaaa-7bbb-8ccc-dddddddddddd", "2024-03-05T14:05:09.000001+07:00", "pc_3", "res_ani",
              27_500),
    payout_event("018e2a00-0000-7000-8000-00000000000a", "payout-scheduled", "2024-03-08T17:00:00+07:00",
                 "po_ani_1", "res_ani", 52_500, run_id="run_2024_w10", period_end="2024-03-08T17:00:00+07:00"),
    payout_event("018e29ff-ffff-7fff-8fff-ffffffffffff", "payout-scheduled", "2024-03-08T17:00:00+07:00",
                 "po_budi_1", "res_budi", 30_000, run_id="run_2024_w10", period_end="2024-03-08T17:00:00+07:00"),
    payout_event("018e3b11-2222-7333-8444-555566667777", "paid", "2024-03-09T08:45:12.5+07:00",
                 "po_ani_1", "res_ani", 52_500, method="bank-transfer", reference="TRX-77812",
                 paid_at="2024-03-09T08:45:12+07:00"),
    payout_event("018e3b00-0000-7000-8000-000000000000", "payout-failed", "2024-03-09T02:10:00Z",
                 "po_budi_1", "res_budi", 30_000, reason="account-closed"),
]

#: A cut in the middle: the earnings, not the payouts.
MIDDLE = datetime(2024, 3, 6, tzinfo=WIB)


def project_digest(events: list[dict[str, Any]], as_of: datetime | None = None) -> str:
    """What the project's ledger makes of the same records: decoded as a consumer does, posted, digested."""
    from services.payout import domain
    from shared.contracts import decode

    decoded = [decode(json.dumps(event).encode()) for event in events]
    transactions = [tx for event in decoded if (tx := domain.transaction_for(event)) is not None]
    return domain.ledger_digest(domain.digest_rows(transactions), as_of)


def test_the_documented_rule_gives_the_ledgers_digest_whole_and_cut():
    assert documented_digest(HISTORY) == project_digest(HISTORY)
    assert documented_digest(HISTORY, MIDDLE) == project_digest(HISTORY, MIDDLE)
    assert documented_digest(HISTORY, MIDDLE) != documented_digest(HISTORY)


def test_the_digest_does_not_depend_on_the_order_the_events_were_read_in():
    assert project_digest(HISTORY[::-1]) == documented_digest(HISTORY[::-1]) == documented_digest(HISTORY)


def test_the_digest_covers_every_field_of_every_transaction():
    whole = project_digest(HISTORY)
    for index, edit in ((2, {"amount_idr": 30_001}), (1, {"artisan_id": "res_citra"}),
                        (1, {"collaborator_id": "col_other"}), (6, {"artisan_id": "res_budi"})):
        edited = [dict(event, data={**event["data"], **edit}) if i == index else event
                  for i, event in enumerate(HISTORY)]
        assert project_digest(edited) == documented_digest(edited) != whole, edit
    retimed = [dict(event, time="2024-03-04T11:30:00.000001+07:00") if i == 2 else event
               for i, event in enumerate(HISTORY)]
    assert project_digest(retimed) == documented_digest(retimed) != whole


def test_the_worked_example_of_the_document_is_this_history():
    """The document prints the canonical bytes and the digest of `HISTORY`: an implementer can check
    every step of theirs against it."""
    document = LEDGER_DOC.read_text()
    printed_bytes = re.search(r"<!-- digest-example-bytes -->\n```json\n(.*?)\n```", document, re.S)
    printed_digest = re.search(r"<!-- digest-example-digest -->\n`([0-9a-f]{64})`", document)
    assert printed_bytes and printed_digest, "docs/contract/ledger.md lost its worked example"
    # Printed one object per line for people; the bytes are that text without its line breaks.
    assert printed_bytes.group(1).replace("\n", "").encode() == documented_bytes(HISTORY)
    assert printed_digest.group(1) == documented_digest(HISTORY) == project_digest(HISTORY)


def test_the_ledgers_rows_are_written_as_rfc_8785_writes_them_for_any_text_an_id_may_hold():
    from services.payout import domain

    for text in ("res_Ñyoman", "pc_\u00e9\u0301", "col_\U0001f9fa", 'res_"quoted"', "res_back\\slash", "res_\tab",
                 "res_\u2028", "res_\x7f"):
        for amount in (-1_000_000_000_000, 0, 1_000_000_000_000):
            row = domain.DigestRow(f"ev_{text}", f"artisan:{text}:payable", amount, "qc-passed",
                                   datetime(2024, 3, 4, 10, tzinfo=WIB))
            expected = {"account": row.account, "amount_idr": amount, "event_id": row.event_id,
                        "event_time": "2024-03-04T10:00:00+07:00", "event_type": "qc-passed"}
            assert row.canonical() == rfc8785.dumps(expected), (text, amount)
