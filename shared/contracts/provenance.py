"""Provenance from the log alone (SPEC §11, defence 2): who vouches for each record on our topics.

Whoever can write to every topic must still not be able to move money. Two signatures do it:

- **Attestation.** Each service signs what it publishes with its own Ed25519 key, once per batch:
  its relay builds an RFC 9162 Merkle tree over the batch's record values (byte for byte as they
  are on the topic) and signs the tree head; each record carries that signature
  (`anyam-attestation`) and its inclusion proof (`anyam-attestation-proof`). A record on
  `enrollment`, `production` or `payout` counts only if its `source` is the service that owns the
  topic and the root its value and proof lead to is signed by one of that service's public keys,
  which readers pin as trust anchors (`ANYAM_TRUST_ANCHORS`). Anything else is `unattested`.
  A reader verifies each tree head's signature once and remembers it, so the other records of a
  batch cost a few SHA-256s. (Records signed one by one, before tree heads, still verify.)
- **The collaborator's own signature.** A `qc-passed` or `qc-failed` carries the signed submission
  it came from (`submission`, every field the collaborator signed, and `signing_key`, the key that
  verified it); the signature must verify over it, and the submission must say what the result says.
  Otherwise it is `bad-signature`: not even the production service can credit a piece no
  collaborator passed.

Whether `signing_key` belonged to the collaborator at the time is production's attested claim
(its intake checks the key's registration and revocation, `collaborator-registered`); the
auditor's `verify` checks it again against the whole key history.

Both failures are `DecodeError`s, so every consumer dead-letters them as it does any record it
cannot accept, and the replay counts and names them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey
from pydantic import AwareDatetime, Field, SecretStr, TypeAdapter, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.contracts.codec import DecodeError
from shared.contracts.envelope import Envelope, service_source
from shared.contracts.events import QcFailed, QcPassed
from shared.contracts.signing import signed, verify
from shared.contracts.topics import Topic

ATTESTATION_HEADER = "anyam-attestation"
#: `<leaf index>:<tree size>:<base64 audit path>` (docs/trust.md).
ATTESTATION_PROOF_HEADER = "anyam-attestation-proof"
#: What precedes the tree size and root in the signed tree head: it keeps a tree head's signature
#: from ever passing for a record's, whose value is a JSON object.
TREE_HEAD_LABEL = b"anyam/attestation/tree-head/v1\x00"
#: The largest tree a reader accepts (a longer batch is attested as several trees): paths of ≤ 16 hashes.
MAX_TREE_SIZE = 65_536
MAX_PATH_HASHES = 16
_HASH_SIZE = 32
_SIGNATURE_HEADER_SIZE = 88  # base64 of 64 bytes
_PROOF = re.compile(rb"(0|[1-9][0-9]{0,4}):([1-9][0-9]{0,4}):([A-Za-z0-9+/]*={0,2})")
_MAX_PROOF_HEADER_SIZE = len(b"65535:65536:") + 4 * ((MAX_PATH_HASHES * _HASH_SIZE + 2) // 3)
#: Tree heads a reader remembers having verified: a relay batch's records arrive close together (per
#: partition), so a few thousand cover the batches a reader is in the middle of.
VERIFIED_TREE_HEADS = 4_096

#: The service that writes each attested topic (SPEC §4), and so the one whose key must vouch for it.
TOPIC_OWNERS: Mapping[Topic, str] = {
    Topic.ENROLLMENT: "enrollment",
    Topic.PRODUCTION: "production",
    Topic.PAYOUT: "payout",
}
SERVICES = tuple(TOPIC_OWNERS.values())

#: The submission fields a `qc-passed` / `qc-failed` repeats, which must be what was signed.
_REPEATED_FIELDS = ("submission_id", "piece_id", "collaborator_id")


class Unattested(DecodeError):
    """A record on a service's topic that the service did not vouch for (no or wrong attestation)."""

    reason = "unattested"


class BadSignature(DecodeError):
    """A QC result whose collaborator's signed submission is missing, altered or does not verify."""

    reason = "bad-signature"


# --- keys -----------------------------------------------------------------------------------


def load_signing_key(text: str) -> Ed25519PrivateKey:
    """A service's private key from its setting: PKCS#8 PEM, or base64 of the 32-byte seed."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_private_key(text.encode(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("the signing key is not an Ed25519 key")
        return key
    try:
        seed = base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ValueError("the signing key is neither PEM nor base64") from None
    if len(seed) != 32:
        raise ValueError(f"the signing key must be 32 bytes (base64), not {len(seed)}")
    return Ed25519PrivateKey.from_private_bytes(seed)


def signing_key_text(key: Ed25519PrivateKey) -> str:
    """`key` as its setting holds it: base64 of the 32-byte seed (one line, fit for an env file)."""
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                            serialization.NoEncryption())
    return base64.b64encode(raw).decode()


def public_key_text(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """A public key as SPEC §6 writes keys: base64 of its 32 raw bytes."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return base64.b64encode(public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()


@dataclass(frozen=True)
class TrustAnchors:
    """The public keys each service's attestations must verify against (several during a rotation)."""

    keys: Mapping[str, tuple[Ed25519PublicKey, ...]]
    #: The same keys as libsodium's (PyNaCl), which verifies faster than OpenSSL (docs/performance.md):
    #: a replay checks a collaborator's signature per QC result.
    _verifiers: Mapping[str, tuple[VerifyKey, ...]] = field(init=False, repr=False, compare=False)
    #: (service, tree size, root, signature header) of the tree heads verified lately, least recent first.
    _verified_heads: OrderedDict[tuple[str, int, bytes, bytes], None] = field(init=False, repr=False,
                                                                              compare=False)

    def __post_init__(self) -> None:
        raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
        object.__setattr__(self, "_verifiers", {service: tuple(VerifyKey(key.public_bytes(*raw)) for key in found)
                                                for service, found in self.keys.items()})
        object.__setattr__(self, "_verified_heads", OrderedDict())

    @classmethod
    def parse(cls, setting: str) -> TrustAnchors:
        """From `ANYAM_TRUST_ANCHORS`: `service:base64key` pairs, comma-separated, e.g.
        `production:MCow…,payout:Xy…,enrollment:…`. Raises `ValueError` naming what is wrong."""
        keys: dict[str, list[Ed25519PublicKey]] = {}
        for item in filter(None, (part.strip() for part in setting.split(","))):
            service, separator, text = item.partition(":")
            if not separator or service not in SERVICES:
                raise ValueError(f"trust anchor {item[:20]!r}… must be <service>:<base64 key>, the service one of "
                                 f"{', '.join(SERVICES)}")
            try:
                raw = base64.b64decode(text, validate=True)
                keys.setdefault(service, []).append(Ed25519PublicKey.from_public_bytes(raw))
            except (binascii.Error, ValueError):
                raise ValueError(f"the trust anchor of {service} is not base64 of a 32-byte Ed25519 key") from None
        missing = [service for service in SERVICES if service not in keys]
        if missing:
            raise ValueError(f"no trust anchor for {', '.join(missing)}")
        return cls({service: tuple(found) for service, found in keys.items()})

    @classmethod
    def of(cls, keys: Mapping[str, Ed25519PrivateKey | Ed25519PublicKey]) -> TrustAnchors:
        """The anchors that trust exactly these keys (one per service)."""
        return cls({service: (key.public_key() if isinstance(key, Ed25519PrivateKey) else key,)
                    for service, key in keys.items()})

    def setting(self) -> str:
        """These anchors as `ANYAM_TRUST_ANCHORS` writes them."""
        return ",".join(f"{service}:{public_key_text(key)}" for service, found in self.keys.items() for key in found)

    def vouches(self, service: str, value: bytes, signature: bytes) -> bool:
        """Whether `signature` is one of `service`'s keys' signature over `value`."""
        for key in self._verifiers.get(service, ()):
            try:
                key.verify(value, signature)
            except (BadSignatureError, ValueError):  # ValueError: not 64 bytes, so no signature at all
                continue
            return True
        return False

    def vouches_for_tree(self, service: str, size: int, root: bytes, signature_header: bytes) -> bool:
        """Whether `signature_header` (an `anyam-attestation` header) is one of `service`'s keys'
        signature over the tree head (`size`, `root`); `Unattested` if it is no signature at all.

        Only heads that verified are remembered, keyed by all four: a record whose value or proof was
        altered leads to another root, so it never matches a head remembered for its batch."""
        head = (service, size, root, signature_header)
        heads = self._verified_heads
        try:
            heads.move_to_end(head)
            return True
        except KeyError:
            pass
        if not self.vouches(service, tree_head(size, root), _signature(signature_header)):
            return False
        heads[head] = None
        while len(heads) > VERIFIED_TREE_HEADS:
            try:
                heads.popitem(last=False)
            except KeyError:  # emptied meanwhile by another thread: nothing left to evict
                break
        return True


class ProvenanceSettings(BaseSettings):
    """A service's own signing key and the keys it trusts (`ANYAM_SIGNING_KEY`, `ANYAM_TRUST_ANCHORS`)."""

    model_config = SettingsConfigDict(env_prefix="ANYAM_", extra="ignore")

    signing_key: SecretStr = Field(
        description="This service's Ed25519 private key (base64 of its 32-byte seed, or PKCS#8 PEM): it attests "
                    "every record the service publishes.",
    )
    trust_anchors: str = Field(
        description="The services' public keys, `service:base64key` comma-separated (e.g. "
                    "`enrollment:…,production:…,payout:…`): records on a service's topic count only when "
                    "attested by one of that service's keys.",
    )

    def attester(self) -> Attester:
        """Who signs this service's records; `ValueError` saying what is wrong with the key."""
        return Attester(load_signing_key(self.signing_key.get_secret_value()))

    def anchors(self) -> TrustAnchors:
        """The trust anchors; `ValueError` saying what to set when they are missing or malformed."""
        if not self.trust_anchors.strip():
            raise ValueError("ANYAM_TRUST_ANCHORS is not set: without the services' public keys no record on "
                             "their topics can be trusted (`anyam up` writes them to .anyam/stack.env)")
        return TrustAnchors.parse(self.trust_anchors)


def new_service_keys() -> dict[str, Ed25519PrivateKey]:
    """A fresh signing key per service (for a new stack)."""
    return {service: Ed25519PrivateKey.generate() for service in SERVICES}


# --- attesting ------------------------------------------------------------------------------


# Copying a hash already fed its prefix is cheaper than making a new one (OpenSSL's set-up), and a
# replay hashes about ten times per record.
_LEAF_PREFIXED = hashlib.sha256(b"\x00")
_NODE_PREFIXED = hashlib.sha256(b"\x01")


def leaf_hash(value: bytes) -> bytes:
    """RFC 9162 §2.1.1: a record's leaf in its batch's tree, SHA-256(0x00 || value)."""
    leaf = _LEAF_PREFIXED.copy()
    leaf.update(value)
    return leaf.digest()


def _node_hash(left: bytes, right: bytes) -> bytes:
    node = _NODE_PREFIXED.copy()
    node.update(left)
    node.update(right)
    return node.digest()


def tree_head(size: int, root: bytes) -> bytes:
    """The bytes a service signs for a batch: the label, the tree size (8 bytes, big-endian), the root."""
    return TREE_HEAD_LABEL + size.to_bytes(8, "big") + root


def merkle_tree(leaves: Sequence[bytes]) -> tuple[bytes, list[list[bytes]]]:
    """The root of the RFC 9162 tree over `leaves` (leaf hashes, at least one) and each leaf's audit
    path, the sibling nearest the leaf first."""
    paths: list[list[bytes]] = [[] for _ in leaves]
    return _subtree(leaves, paths, 0, len(leaves)), paths


def _subtree(leaves: Sequence[bytes], paths: list[list[bytes]], start: int, end: int) -> bytes:
    if end - start == 1:
        return leaves[start]
    split = start + (1 << ((end - start - 1).bit_length() - 1))  # the largest power of two < n
    left, right = _subtree(leaves, paths, start, split), _subtree(leaves, paths, split, end)
    for index in range(start, split):
        paths[index].append(right)
    for index in range(split, end):
        paths[index].append(left)
    return _node_hash(left, right)


def root_from_inclusion_proof(leaf: bytes, index: int, size: int, path: bytes) -> bytes | None:
    """The root that `leaf` at `index` of a tree of `size` leads to with the audit `path` (its hashes
    concatenated), by RFC 9162 §2.1.3.2; None when the path cannot be one of such a tree."""
    if not 0 <= index < size or len(path) % _HASH_SIZE:
        return None
    fn, sn, root = index, size - 1, leaf
    for offset in range(0, len(path), _HASH_SIZE):
        if sn == 0:
            return None  # a longer path than the tree has levels
        sibling = path[offset:offset + _HASH_SIZE]
        if fn & 1 or fn == sn:
            root = _node_hash(sibling, root)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            root = _node_hash(root, sibling)
        fn, sn = fn >> 1, sn >> 1
    return root if sn == 0 else None


@dataclass(frozen=True)
class Attester:
    """Signs the records one service publishes, one signature per batch."""

    key: Ed25519PrivateKey

    def attest(self, values: Sequence[bytes]) -> list[list[tuple[str, bytes]]]:
        """The attestation headers of each record of a batch published together, whose values are
        `values`: one tree head signed per `MAX_TREE_SIZE` records."""
        attestations: list[list[tuple[str, bytes]]] = []
        for start in range(0, len(values), MAX_TREE_SIZE):
            batch = values[start:start + MAX_TREE_SIZE]
            root, paths = merkle_tree([leaf_hash(value) for value in batch])
            signature = base64.b64encode(self.key.sign(tree_head(len(batch), root)))
            attestations += [[(ATTESTATION_HEADER, signature),
                              (ATTESTATION_PROOF_HEADER, b"%d:%d:%s" % (index, len(batch),
                                                                         base64.b64encode(b"".join(path))))]
                             for index, path in enumerate(paths)]
        return attestations

    def headers(self, value: bytes) -> list[tuple[str, bytes]]:
        """The attestation headers of one record published alone (a tree of one)."""
        return self.attest([value])[0]


# --- checking -------------------------------------------------------------------------------


def check(topic: Topic, value: bytes, headers: Sequence[tuple[str, bytes | None]] | None, event: Envelope,
          anchors: TrustAnchors) -> None:
    """Raise `Unattested` or `BadSignature` unless `event`, read from `topic` as `value` with
    `headers`, is vouched for as SPEC §11 asks. Records on topics no service owns pass."""
    owner = TOPIC_OWNERS.get(topic)
    if owner is None:
        return
    if event.source != service_source(owner):
        raise Unattested(f"`source` must be {service_source(owner)} on {topic.value}", path="source")
    _check_attestation(owner, value, headers or (), anchors)
    if isinstance(event.data, QcPassed | QcFailed):
        check_submission(event.data)


def _check_attestation(owner: str, value: bytes, headers: Sequence[tuple[str, bytes | None]],
                       anchors: TrustAnchors) -> None:
    signatures = [raw for name, raw in headers if name == ATTESTATION_HEADER]
    proofs = [raw for name, raw in headers if name == ATTESTATION_PROOF_HEADER]
    if len(signatures) != 1:
        raise Unattested(f"the record carries {len(signatures)} {ATTESTATION_HEADER} headers, not exactly one")
    if len(proofs) > 1:
        raise Unattested(f"the record carries {len(proofs)} {ATTESTATION_PROOF_HEADER} headers, not one")
    if not isinstance(signatures[0], bytes) or len(signatures[0]) != _SIGNATURE_HEADER_SIZE:
        raise Unattested(f"the {ATTESTATION_HEADER} header is not base64 of a 64-byte signature")
    if not proofs:  # signed on its own, as records were before tree heads: the log keeps them forever
        if not anchors.vouches(owner, value, _signature(signatures[0])):
            raise Unattested(f"the {ATTESTATION_HEADER} header is not the {owner} service's signature of the record")
        return
    index, size, path = _inclusion_proof(proofs[0])
    root = root_from_inclusion_proof(leaf_hash(value), index, size, path)
    if root is None:
        raise Unattested(f"the {ATTESTATION_PROOF_HEADER} path does not fit leaf {index} of a tree of {size}")
    if not anchors.vouches_for_tree(owner, size, root, signatures[0]):
        raise Unattested(f"the record is in no tree head the {owner} service signed")


def _signature(raw: bytes) -> bytes:
    """The 64 bytes of an `anyam-attestation` header of 88 bytes: canonical base64, nothing else."""
    return _canonical_base64(raw, ATTESTATION_HEADER)


def _canonical_base64(text: bytes, header: str) -> bytes:
    try:
        decoded = binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        raise Unattested(f"the {header} header is not base64") from None
    # A set spare bit in the last character decodes to the same bytes: refused, so that readers in
    # every language accept exactly the same headers.
    if binascii.b2a_base64(decoded, newline=False) != text:
        raise Unattested(f"the {header} header is not canonical base64")
    return decoded


def _inclusion_proof(raw: bytes | None) -> tuple[int, int, bytes]:
    """The leaf index, tree size and audit path of an `anyam-attestation-proof` header, held to its
    exact form (docs/trust.md): a reader never guesses what a malformed proof meant."""
    matched = (_PROOF.fullmatch(raw) if isinstance(raw, bytes) and len(raw) <= _MAX_PROOF_HEADER_SIZE
               else None)
    if matched is None:
        raise Unattested(f"the {ATTESTATION_PROOF_HEADER} header is not <index>:<size>:<base64 path>")
    index, size, encoded = int(matched[1]), int(matched[2]), matched[3]
    if size > MAX_TREE_SIZE or index >= size:
        raise Unattested(f"the {ATTESTATION_PROOF_HEADER} header names leaf {index} of a tree of {size} "
                         f"(at most {MAX_TREE_SIZE:,})")
    path = _canonical_base64(encoded, ATTESTATION_PROOF_HEADER)
    if len(path) % _HASH_SIZE or len(path) > MAX_PATH_HASHES * _HASH_SIZE:
        raise Unattested(f"the {ATTESTATION_PROOF_HEADER} path is not up to {MAX_PATH_HASHES} 32-byte hashes")
    return index, size, path


def check_submission(result: QcPassed | QcFailed) -> None:
    """Raise `BadSignature` unless `result` carries the collaborator's signed submission it records."""
    submission, key = result.submission, result.signing_key
    if submission is None or key is None:
        raise BadSignature(f"{result.event_type} carries no signed submission (`submission`, `signing_key`)",
                           path="data.submission")
    verdict = "passed" if isinstance(result, QcPassed) else "failed"
    if (any(submission.get(name) != getattr(result, name) for name in _REPEATED_FIELDS)
            or submission.get("result") != verdict or submission.get("signature") != result.signature
            or not _same_instant(submission.get("inspected_at"), result.inspected_at)):
        raise BadSignature(f"the signed submission does not say what the {result.event_type} says",
                           path="data.submission")
    if not verify(key, submission):
        raise BadSignature("the collaborator's signature does not verify over the submission",
                           path="data.submission.signature")


_MOMENT: TypeAdapter[datetime] = TypeAdapter(AwareDatetime)


def signed_result(
    collaborator_key: Ed25519PrivateKey, *, piece_id: str, artisan_id: str, collaborator_id: str,
    inspected_at: datetime, amount_idr: int | None = None, product: str = "piring",
    defects: Sequence[str] = (), received_at: datetime | None = None,
) -> QcPassed | QcFailed:
    """The QC result production records for a submission `collaborator_key` signed: a `qc-passed` when
    `amount_idr` is given, else a `qc-failed`. For histories made without the services (tests, the bench)."""
    verdict = "passed" if amount_idr is not None else "failed"
    submission = signed(collaborator_key, {
        "submission_id": f"sub_{piece_id}", "piece_id": piece_id, "collaborator_id": collaborator_id,
        "result": verdict, "inspector": "QC-1", "inspected_at": inspected_at.isoformat(), "defects": list(defects),
    })
    common = {"piece_id": piece_id, "artisan_id": artisan_id, "collaborator_id": collaborator_id,
              "submission_id": submission["submission_id"], "inspected_at": inspected_at,
              "signature": submission["signature"], "submission": submission,
              "signing_key": public_key_text(collaborator_key), "received_at": received_at or inspected_at}
    if amount_idr is not None:
        return QcPassed(product=product, amount_idr=amount_idr, **common)
    return QcFailed(defects=list(defects), **common)


def _same_instant(text: Any, moment: datetime) -> bool:
    """Whether `text` is the time `moment`, read as the submission's own field was read."""
    try:
        return _MOMENT.validate_python(text) == moment
    except ValidationError:
        return False


if __name__ == "__main__":
    # A new key set for a deployment: each service's private key, and the anchors every reader pins.
    fresh = new_service_keys()
    for service, key in fresh.items():
        print(f"{service.upper()}_SIGNING_KEY={signing_key_text(key)}")
    print(f"ANYAM_TRUST_ANCHORS={TrustAnchors.of(fresh).setting()}")
