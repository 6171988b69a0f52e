"""docs/collaborators.md's worked signing example is right: its canonical bytes, key and signature are
what Anyam's own signing code (shared/contracts/signing.py) computes and verifies, its envelope is one
production's consumer accepts, and the Java client is built against the broker's Kafka version.

The example blocks are the fenced blocks that follow `<!-- worked-example:NAME -->` in the guide;
tests/integration/test_clients.py has both clients sign the same data to the same signature.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from shared.contracts.codec import decode
from shared.contracts.signing import canonical_bytes, load_private_key, public_key_b64, sign, verify
from shared.contracts.topics import Topic

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "collaborators.md"
#: RFC 8032 §7.1, TEST 1.
RFC8032_SECRET = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
RFC8032_PUBLIC = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"


def example() -> dict[str, str]:
    text = GUIDE.read_text(encoding="utf-8")
    return {name: body.strip("\n") for name, body in
            re.findall(r"<!-- worked-example:([a-z-]+) -->\s*```[a-z]*\n(.*?)```", text, flags=re.S)}


def test_the_guide_has_every_part_of_the_worked_example():
    assert set(example()) == {"data", "canonical", "canonical-hex", "private-key-pem", "public-key", "signature",
                              "envelope"}


def test_the_canonical_bytes_shown_are_rfc_8785_of_the_data_in_text_and_hex():
    parts = example()
    expected = canonical_bytes(json.loads(parts["data"]))
    assert parts["canonical"].encode("utf-8") == expected
    assert bytes.fromhex(parts["canonical-hex"].replace("\n", " ")) == expected
    assert f"{len(expected)} bytes" in GUIDE.read_text(encoding="utf-8")


def test_the_key_is_rfc_8032s_first_test_key_and_its_public_half_is_the_one_shown():
    parts = example()
    key = load_private_key(parts["private-key-pem"].encode())
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                            serialization.NoEncryption())
    assert raw.hex() == RFC8032_SECRET
    assert public_key_b64(key) == parts["public-key"]
    assert base64.b64decode(parts["public-key"]).hex() == RFC8032_PUBLIC


def test_the_signature_shown_is_the_keys_signature_of_the_data_and_one_changed_byte_breaks_it():
    parts = example()
    data = json.loads(parts["data"])
    key = load_private_key(parts["private-key-pem"].encode())
    assert sign(key, data) == parts["signature"]
    assert verify(parts["public-key"], {**data, "signature": parts["signature"]})
    assert not verify(parts["public-key"], {**data, "inspector": "insp-08", "signature": parts["signature"]})


def test_the_envelope_shown_carries_the_signed_data_and_is_one_the_consumer_accepts():
    parts = example()
    envelope = json.loads(parts["envelope"])
    assert envelope["data"] == {**json.loads(parts["data"]), "signature": parts["signature"]}
    assert envelope["dataversion"] == 2
    assert envelope["source"] == f"/collaborators/{envelope['data']['collaborator_id']}"
    event = decode(parts["envelope"].encode(), topic=Topic.QC_SUBMISSIONS)
    assert event.type == "qc-submitted" and event.data.piece_id == envelope["subject"]


def test_the_java_client_uses_the_kafka_version_the_stack_runs():
    def version(pom: str) -> str:
        return re.search(r"<kafka\.version>([^<]+)</kafka\.version>", (ROOT / pom).read_text()).group(1)

    assert version("clients/java/pom.xml") == version("deploy/kafka/pom.xml")
