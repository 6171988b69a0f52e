"""Attestations and the QC results' own signatures (SPEC §11, `shared.contracts.provenance`): pure, no broker."""

from __future__ import annotations

import base64
import json
import random
import shutil
import subprocess
from datetime import datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from shared.contracts import Envelope, Topic, encode, provenance, service_source
from shared.contracts.events import PayoutFailed
from shared.contracts.provenance import (
    ATTESTATION_HEADER,
    ATTESTATION_PROOF_HEADER,
    Attester,
    BadSignature,
    ProvenanceSettings,
    TrustAnchors,
    Unattested,
    check,
    leaf_hash,
    load_signing_key,
    merkle_tree,
    new_service_keys,
    public_key_text,
    root_from_inclusion_proof,
    signed_result,
    signing_key_text,
)
from shared.contracts.signing import generate_private_key, private_key_pem
from shared.timeutil import WIB

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
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
    return value, [("content-type", b"application/cloudevents+json"), *Attester(KEYS[service]).headers(value)]


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
    [(ATTESTATION_HEADER, base64.b64encode(b"x" * 64)), (ATTESTATION_PROOF_HEADER, b"0:1:")],
], ids=["missing", "not-base64", "not-a-signature", "not-a-tree-heads-signature"])
def test_a_missing_or_meaningless_attestation_is_unattested(headers):
    event = result()
    with pytest.raises(Unattested):
        check(Topic.PRODUCTION, encode(event).value, headers, event, ANCHORS)


def test_one_service_cannot_vouch_for_another_services_topic_nor_sign_as_it():
    event = result()
    value = encode(event).value
    by_payout = [(ATTESTATION_HEADER, base64.b64encode(KEYS["payout"].sign(value)))]
    failed = Envelope.wrap(PayoutFailed(payout_id="po_1", artisan_id="res_1", amount_idr=1, reason="other"),
                           source=service_source("production"))
    failed_value, failed_headers = attested(failed, "production")

    with pytest.raises(Unattested):
        check(Topic.PRODUCTION, value, by_payout, event, ANCHORS)
    with pytest.raises(Unattested, match="source"):  # production's key, but payout's topic
        check(Topic.PAYOUT, failed_value, failed_headers, failed, ANCHORS)


def test_two_attestation_or_proof_headers_are_refused_rather_than_one_picked():
    event = result()
    value, headers = attested(event)
    other_value, other_headers = attested(result(piece_id="pc_2"))
    for extra in (headers[-2], headers[-1], other_headers[-2], other_headers[-1]):
        with pytest.raises(Unattested):
            check(Topic.PRODUCTION, value, [*headers, extra], event, ANCHORS)


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


# --- tree heads: one signature per batch ------------------------------------------------------------

#: RFC 6962's reference leaves and the roots of their first 1..8 (Certificate Transparency's test data):
#: a reader in another language checks its tree against the same figures.
RFC6962_LEAVES = [bytes.fromhex(h) for h in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                                             "606162636465666768696a6b6c6d6e6f")]
RFC6962_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
RFC6962_PATHS = {  # (leaf index, tree size): audit path
    (0, 8): ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
             "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"],
    (5, 8): ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
             "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
             "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"],
}


def test_the_tree_is_rfc_6962s():
    leaves = [leaf_hash(value) for value in RFC6962_LEAVES]
    for size in range(1, 9):
        root, paths = merkle_tree(leaves[:size])
        assert root.hex() == RFC6962_ROOTS[size - 1]
        for index in range(size):
            path = b"".join(paths[index])
            assert root_from_inclusion_proof(leaves[index], index, size, path) == root
            # RFC 9162 §2.1.3.2 fails a path that is not exactly as long as the leaf's depth.
            assert root_from_inclusion_proof(leaves[index], index, size, path + root) is None
            if path:
                assert root_from_inclusion_proof(leaves[index], index, size, path[:-32]) is None
    _, paths = merkle_tree(leaves)
    for (index, _), path in RFC6962_PATHS.items():
        assert [h.hex() for h in paths[index]] == path


def payout_batch(size: int, run: str = "a") -> list[tuple[Envelope, bytes]]:
    """`size` records of the payout service's topic, as its relay would publish them in one batch."""
    events = [Envelope.wrap(PayoutFailed(payout_id=f"po_{run}{n}", artisan_id="res_1", amount_idr=1_000 + n,
                                         reason="wallet-inactive"), source=service_source("payout"))
              for n in range(size)]
    return [(event, encode(event).value) for event in events]


def publish(batch: list[tuple[Envelope, bytes]], key: Ed25519PrivateKey = KEYS["payout"],
            ) -> list[list[tuple[str, bytes]]]:
    return Attester(key).attest([value for _, value in batch])


def refused(event: Envelope, value: bytes, headers, anchors: TrustAnchors | None = None) -> str:
    """The reason `check` refuses the record for (failing the test on any other exception or none)."""
    with pytest.raises(Unattested) as refusal:
        check(Topic.PAYOUT, value, headers, event, anchors or TrustAnchors.of(KEYS))
    return refusal.value.reason


def proof_parts(headers) -> tuple[bytes, bytes, bytes]:
    index, size, path = dict(headers)[ATTESTATION_PROOF_HEADER].split(b":")
    return index, size, path


def with_proof(headers, proof: bytes) -> list[tuple[str, bytes]]:
    return [(name, proof if name == ATTESTATION_PROOF_HEADER else raw) for name, raw in headers]


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 1000])
def test_every_record_of_an_honest_batch_is_vouched_for_with_one_signature_checked(size, monkeypatch):
    batch = payout_batch(size)
    attestations = publish(batch)
    anchors = TrustAnchors.of(KEYS)
    verified = []
    vouches = TrustAnchors.vouches
    monkeypatch.setattr(TrustAnchors, "vouches", lambda self, *args: verified.append(args) or vouches(self, *args))

    for (event, value), headers in zip(batch, attestations, strict=True):
        check(Topic.PAYOUT, value, headers, event, anchors)  # raises if not

    assert len(verified) == 1
    assert len({dict(headers)[ATTESTATION_HEADER] for headers in attestations}) == 1
    assert proof_parts(attestations[0])[1] == str(size).encode()


def test_a_batch_longer_than_the_largest_tree_is_signed_as_several(monkeypatch):
    monkeypatch.setattr(provenance, "MAX_TREE_SIZE", 4)
    batch = payout_batch(10)
    attestations = publish(batch)

    assert [proof_parts(headers)[:2] for headers in attestations] == [
        (b"0", b"4"), (b"1", b"4"), (b"2", b"4"), (b"3", b"4"), (b"0", b"4"), (b"1", b"4"), (b"2", b"4"),
        (b"3", b"4"), (b"0", b"2"), (b"1", b"2")]
    for (event, value), headers in zip(batch, attestations, strict=True):
        check(Topic.PAYOUT, value, headers, event, ANCHORS)


def test_no_record_of_a_batch_passes_with_its_value_index_size_or_path_altered():
    batch = payout_batch(5)
    attestations = publish(batch)
    other = publish(payout_batch(5, run="b"))
    anchors = TrustAnchors.of(KEYS)
    event, value = batch[2]
    headers = attestations[2]
    index, size, path = proof_parts(headers)
    check(Topic.PAYOUT, value, headers, event, anchors)  # the genuine record, now remembered as verified

    altered = {
        "value": (batch[3][1], headers),
        "another record's proof": (value, attestations[3]),
        "index": (value, with_proof(headers, b"3:" + size + b":" + path)),
        "size smaller": (value, with_proof(headers, index + b":4:" + path)),
        "size larger": (value, with_proof(headers, index + b":6:" + path)),
        "path truncated": (value, with_proof(headers, b":".join((index, size, base64.b64encode(
            base64.b64decode(path)[:-32]))))),
        "path extended": (value, with_proof(headers, b":".join((index, size, base64.b64encode(
            base64.b64decode(path) + bytes(32)))))),
        "path of another batch": (value, with_proof(headers, dict(other[2])[ATTESTATION_PROOF_HEADER])),
        "signature of another batch": (value, [(ATTESTATION_HEADER, dict(other[2])[ATTESTATION_HEADER]),
                                               (ATTESTATION_PROOF_HEADER, dict(headers)[ATTESTATION_PROOF_HEADER])]),
        "signature without its proof": (value, [(ATTESTATION_HEADER, dict(headers)[ATTESTATION_HEADER])]),
    }
    for what, (forged_value, forged_headers) in altered.items():
        assert refused(event, forged_value, forged_headers, anchors) == "unattested", what


def test_a_remembered_tree_head_vouches_for_no_record_its_batch_did_not_hold():
    """After a genuine record verified (its head remembered), records forged into 'the same batch' are
    still refused: a forger's value leads to another root, whatever path and index they claim."""
    batch = payout_batch(8)
    attestations = publish(batch)
    anchors = TrustAnchors.of(KEYS)
    for (event, value), headers in zip(batch, attestations, strict=True):
        check(Topic.PAYOUT, value, headers, event, anchors)

    forged_event = Envelope.wrap(PayoutFailed(payout_id="po_a3", artisan_id="res_1", amount_idr=9_999_999,
                                              reason="wallet-inactive"), source=service_source("payout"))
    forged = encode(forged_event).value
    for headers in attestations:
        assert refused(forged_event, forged, headers, anchors) == "unattested"
    # ... nor with a proof built for it beside the genuine leaves, under the genuine signature.
    leaves = [leaf_hash(value) for _, value in batch]
    _, paths = merkle_tree([*leaves[:3], leaf_hash(forged), *leaves[4:]])
    crafted = [(ATTESTATION_HEADER, dict(attestations[3])[ATTESTATION_HEADER]),
               (ATTESTATION_PROOF_HEADER, b"3:8:" + base64.b64encode(b"".join(paths[3])))]
    assert refused(forged_event, forged, crafted, anchors) == "unattested"


def test_only_the_topic_owners_key_vouches_for_a_tree_head():
    batch = payout_batch(3)
    for key in (KEYS["production"], Ed25519PrivateKey.generate()):
        for (event, value), headers in zip(batch, publish(batch, key), strict=True):
            assert refused(event, value, headers) == "unattested"


@pytest.mark.parametrize("proof", [
    b"", b"0:1", b"0:1:=", b"0:0:", b"1:1:", b"-0:1:", b"+0:1:", b"00:1:", b"0:01:", b" 0:1:", b"0:1: ",
    b"0:1:\n", b"0 :1:", b"0:1:AA", "٠:١:".encode(), b"0:65537:", b"70000:65536:", b"0:99999999999999999999:",
    b"0:2:" + base64.b64encode(bytes(31)), b"0:2:" + base64.b64encode(bytes(32))[:-2] + b"B=",
    b"0:65536:" + base64.b64encode(bytes(17 * 32)), b"0:1:" + b"A" * 1_000_000, None, "0:1:",
], ids=lambda proof: repr(proof)[:30])
def test_a_malformed_proof_is_unattested_never_an_error(proof):
    [(event, value)] = payout_batch(1)
    [headers] = publish([(event, value)])
    assert refused(event, value, with_proof(headers, proof)) == "unattested"


@pytest.mark.parametrize("signature", [
    None, b"", "x" * 88, bytearray(b"A" * 88), b"A" * 87, b"A" * 89, b"A" * 86 + b"==", b"!" * 88, b"A" * 10_000_000,
], ids=lambda signature: repr(signature)[:20])
def test_a_malformed_signature_header_is_unattested_never_an_error(signature):
    [(event, value)] = payout_batch(1)
    [headers] = publish([(event, value)])
    forged = [(ATTESTATION_HEADER, signature), (ATTESTATION_PROOF_HEADER, dict(headers)[ATTESTATION_PROOF_HEADER])]
    assert refused(event, value, forged) == "unattested"


def test_headers_must_be_the_canonical_base64_of_their_bytes():
    """Base64 has spare bits in its last character: one set decodes to the same bytes, and is refused,
    so that every reader, in every language, accepts exactly the same headers."""
    def spare_bit_set(text: bytes) -> bytes:
        unpadded = text.rstrip(b"=")
        return unpadded[:-1] + bytes([_B64[_B64.index(unpadded[-1]) ^ 1]]) + text[len(unpadded):]

    batch = payout_batch(2)
    [headers, _] = publish(batch)
    event, value = batch[0]
    signature, proof = dict(headers)[ATTESTATION_HEADER], dict(headers)[ATTESTATION_PROOF_HEADER]
    index, size, path = proof.split(b":")
    assert base64.b64decode(spare_bit_set(signature)) == base64.b64decode(signature)
    assert base64.b64decode(spare_bit_set(path)) == base64.b64decode(path)
    check(Topic.PAYOUT, value, headers, event, ANCHORS)

    assert refused(event, value, [(ATTESTATION_HEADER, spare_bit_set(signature)),
                                  (ATTESTATION_PROOF_HEADER, proof)]) == "unattested"
    assert refused(event, value, with_proof(headers, b":".join((index, size, spare_bit_set(path))))) == "unattested"


_B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def test_random_attestation_headers_are_unattested_never_an_error():
    rng = random.Random(25)
    [(event, value)] = payout_batch(1)
    [headers] = publish([(event, value)])
    genuine = dict(headers)
    alphabet = b"0123456789:+/=ABCxyz\x00\xff"
    for _ in range(2_000):
        proof = bytes(rng.choice(alphabet) for _ in range(rng.randrange(40)))
        if rng.random() < 0.5:  # near misses: a genuine proof with one byte changed
            raw = bytearray(genuine[ATTESTATION_PROOF_HEADER])
            raw[rng.randrange(len(raw))] = rng.choice(alphabet)
            proof = bytes(raw)
        if proof == genuine[ATTESTATION_PROOF_HEADER]:
            continue
        assert refused(event, value, with_proof(headers, proof)) == "unattested"


def test_a_record_signed_on_its_own_before_tree_heads_still_verifies():
    """Records published before tree heads carry one signature over their value and no proof; the log
    keeps them forever, so they still verify (and a tree head's signature never passes for one)."""
    [(event, value)] = payout_batch(1)
    legacy = [(ATTESTATION_HEADER, base64.b64encode(KEYS["payout"].sign(value)))]
    check(Topic.PAYOUT, value, legacy, event, ANCHORS)

    assert refused(event, value, [(ATTESTATION_HEADER, base64.b64encode(KEYS["payout"].sign(b"x" + value)))]) \
        == "unattested"
    with_a_proof = [*legacy, (ATTESTATION_PROOF_HEADER, b"0:1:")]  # read as a tree head of one: it is not
    assert refused(event, value, with_a_proof) == "unattested"


def test_remembered_tree_heads_are_bounded_and_the_forgotten_verify_again(monkeypatch):
    monkeypatch.setattr(provenance, "VERIFIED_TREE_HEADS", 3)
    batches = [payout_batch(2, run=str(n)) for n in range(5)]
    attested_batches = [publish(batch) for batch in batches]
    anchors = TrustAnchors.of(KEYS)
    verified = []
    vouches = TrustAnchors.vouches
    monkeypatch.setattr(TrustAnchors, "vouches", lambda self, *args: verified.append(args) or vouches(self, *args))

    for batch, attestations in zip(batches, attested_batches, strict=True):
        for (event, value), headers in zip(batch, attestations, strict=True):
            check(Topic.PAYOUT, value, headers, event, anchors)
    assert len(verified) == 5
    (event, value), headers = batches[0][1], attested_batches[0][1]  # the first head, evicted since
    check(Topic.PAYOUT, value, headers, event, anchors)
    (event, value), headers = batches[4][1], attested_batches[4][1]  # the last head, remembered
    check(Topic.PAYOUT, value, headers, event, anchors)
    assert len(verified) == 6


#: docs/trust.md's worked example: RFC 8032's first test key as production's, three records in one batch.
DOCUMENTED_KEY = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
DOCUMENTED_VALUES = [b'{"id":"ev_1"}', b'{"id":"ev_2"}', b'{"id":"ev_3"}']
DOCUMENTED_SIGNATURE = (b"GudyIlfY6VGp6rpbSxxMyfuzrQcyB+wYFqrik9RvPYdqhd/u6zYmpdg/jcfFAagC4/Je2kncIYxf1Hfda9VUBA==")
DOCUMENTED_PROOFS = [
    b"0:3:4TXFxxU+Dsfb8UwD2VILapm5c1yE5meIqLTvxNoihBWerOG3PafIhCmMpNVO+Oz+Rr4T7V0l55m9g8BdVXChVQ==",
    b"1:3:tIkG/7oitSAYEKs9dx8pAqx/eqRlOifxa13asQpK4feerOG3PafIhCmMpNVO+Oz+Rr4T7V0l55m9g8BdVXChVQ==",
    b"2:3:+gt1TpLLjAt7Xshh5jwgmZems752uSvDYnHxP9zmOS4=",
]


def test_the_worked_example_of_the_contract_is_what_a_relay_publishes():
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(DOCUMENTED_KEY))
    assert public_key_text(key) == "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
    assert Attester(key).attest(DOCUMENTED_VALUES) == [
        [(ATTESTATION_HEADER, DOCUMENTED_SIGNATURE), (ATTESTATION_PROOF_HEADER, proof)] for proof in DOCUMENTED_PROOFS]
    trust = " ".join((Path(__file__).resolve().parents[2] / "docs" / "trust.md").read_text().split())
    for text in (DOCUMENTED_SIGNATURE, *DOCUMENTED_PROOFS):
        assert text.decode() in trust


def test_a_javascript_reader_written_from_the_contract_agrees_with_ours():
    """tests/node/verify-attestation.mjs (docs/trust.md in JavaScript, node:crypto only) accepts the records
    a relay attests, the worked example's included, and refuses what this reader refuses."""
    node = shutil.which("node")
    if node is None:  # a skipped interoperability check proves nothing (as in test_jcs.py)
        pytest.fail("Node.js 20 must be on PATH: this test runs tests/node/verify-attestation.mjs.", pytrace=False)
    batch = payout_batch(13)
    attestations = publish(batch)
    records = [(value, headers) for (_, value), headers in zip(batch, attestations, strict=True)]
    event, value = batch[6]
    index, size, path = proof_parts(attestations[6])
    refusals = [
        (batch[7][1], attestations[6]),
        (value, with_proof(attestations[6], b"7:" + size + b":" + path)),
        (value, with_proof(attestations[6], index + b":14:" + path)),
        (value, with_proof(attestations[6], index + b":" + size + b":" + path + b"\n")),
        (value, [*attestations[6], attestations[6][1]]),
        (value, publish(batch, KEYS["production"])[6]),
    ]
    job = {"public_key": public_key_text(KEYS["payout"]), "records": [
        {"value": base64.b64encode(value).decode(),
         "headers": [[name, base64.b64encode(raw).decode()] for name, raw in headers]}
        for value, headers in records + refusals]}
    done = subprocess.run([node, str(NODE_DIR / "verify-attestation.mjs")], input=json.dumps(job),
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    verdicts = json.loads(done.stdout)

    assert verdicts[:len(records)] == [True] * len(records)
    # The JavaScript reader refuses each forgery, naming why (a reason instead of true).
    assert all(isinstance(verdict, str) and verdict for verdict in verdicts[len(records):]), verdicts
    assert len(verdicts) == len(records) + len(refusals)
    for forged_value, forged_headers in refusals:
        assert refused(event, forged_value, forged_headers) == "unattested"

    documented = {"public_key": "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=", "records": [
        {"value": base64.b64encode(value).decode(), "headers": [
            [ATTESTATION_HEADER, base64.b64encode(DOCUMENTED_SIGNATURE).decode()],
            [ATTESTATION_PROOF_HEADER, base64.b64encode(proof).decode()]]}
        for value, proof in zip(DOCUMENTED_VALUES, DOCUMENTED_PROOFS, strict=True)]}
    done = subprocess.run([node, str(NODE_DIR / "verify-attestation.mjs")], input=json.dumps(documented),
                          capture_output=True, text=True, timeout=60, check=False)
    assert json.loads(done.stdout) == [True, True, True], done.stderr
