"""Ed25519 signatures on QC submissions (SPEC §6, `qc-submitted`).

A collaborator signs the UTF-8 bytes of the canonical JSON of a submission's
`data` without its `signature` field, canonical as RFC 8785 (the JSON
Canonicalization Scheme, JCS) defines it: keys sorted by their UTF-16 code
units, no insignificant whitespace, strings with only the escapes JSON
requires (non-ASCII kept as is), numbers written as ECMAScript writes an
IEEE-754 double. The bytes come from `rfc8785`, a maintained implementation,
so a signer using any JCS library (JavaScript's `canonicalize`, Java's, Go's,
.NET's) produces them too. For strings and lists of strings with keys in the
Basic Multilingual Plane they equal Python's
`json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)`, so
signatures made that way before stay valid.

Verification must run over the data *as sent* (the dict `json.loads` gives
back), never over a model re-serialised from it: re-serialising may rewrite a
time such as `...T09:15:00.000+07:00`, and the signature covers the
collaborator's bytes, not ours.

Keys travel as base64 of their 32 raw bytes; private keys are stored as
unencrypted PKCS#8 PEM, which OpenSSL and every mainstream library read.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import rfc8785
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from shared.contracts.codec import decode
from shared.contracts.envelope import collaborator_source
from shared.contracts.events import QcSubmitted
from shared.contracts.topics import Topic
from shared.ids import new_event_id
from shared.timeutil import to_wib, wib_now

SIGNATURE_FIELD = "signature"


def canonical_bytes(data: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: RFC 8785 canonical JSON of `data` minus `signature`.

    Raises `ValueError` when `data` has no RFC 8785 form, so no signer can have
    signed it: text that is not valid Unicode (a lone surrogate from a `\\ud800`
    escape), an integer beyond IEEE-754's exact range (±(2**53 - 1)), NaN or
    infinity, a key that is not a string, a value that is not JSON, or nesting
    too deep to walk. The message never quotes the offending value: it may be
    personal data.
    """
    unsigned = {key: value for key, value in data.items() if key != SIGNATURE_FIELD}
    try:
        return rfc8785.dumps(unsigned)
    except rfc8785.IntegerDomainError:
        raise ValueError("the data holds an integer outside the range RFC 8785 allows (±(2**53 - 1))") from None
    except rfc8785.FloatDomainError:
        raise ValueError("the data holds a number RFC 8785 cannot write (NaN or infinity)") from None
    except (rfc8785.CanonicalizationError, UnicodeError):
        # Lone surrogates (a key's fails while sorting, as a UnicodeEncodeError),
        # non-string keys, values that are not JSON. The library's message may
        # quote the value, so it is neither repeated nor chained.
        raise ValueError(
            "the data has no RFC 8785 canonical form (text that is not valid Unicode, a key that is not "
            "a string, or a value that is not JSON)"
        ) from None
    except RecursionError:
        raise ValueError("the data is nested too deeply to canonicalise") from None


def generate_private_key() -> Ed25519PrivateKey:
    """A new random Ed25519 private key."""
    return Ed25519PrivateKey.generate()


def private_key_pem(private_key: Ed25519PrivateKey) -> bytes:
    """`private_key` as unencrypted PKCS#8 PEM, for a file only its owner may read."""
    return private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_private_key(pem: bytes) -> Ed25519PrivateKey:
    """The Ed25519 private key in PEM `pem`; `ValueError` if it is not one."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError("not an unencrypted PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"the key is {type(key).__name__.removeprefix('_')}, not an Ed25519 key")
    return key


def public_key_b64(private_key: Ed25519PrivateKey) -> str:
    """The public half of `private_key` as SPEC §6 writes it: base64 of the 32 raw bytes."""
    raw = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def sign(private_key: Ed25519PrivateKey, data: Mapping[str, Any]) -> str:
    """The base64 signature of `data` (its `signature` field, if any, is not covered)."""
    return base64.b64encode(private_key.sign(canonical_bytes(data))).decode()


def signed(private_key: Ed25519PrivateKey, data: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `data` with its `signature` field set (replaced, if it had one)."""
    return {**{k: v for k, v in data.items() if k != SIGNATURE_FIELD}, SIGNATURE_FIELD: sign(private_key, data)}


def verify(public_key: str, data: Mapping[str, Any], signature: str | None = None) -> bool:
    """Whether `signature` (default: `data["signature"]`) is `public_key`'s signature of `data`.

    Any malformed input (a key or signature that is not base64 of the right
    length, data that is not valid Unicode) is simply "does not verify".

    Verified by libsodium (PyNaCl), faster than OpenSSL (docs/performance.md): a replay of the log
    checks one per QC result.
    """
    signature = data.get(SIGNATURE_FIELD) if signature is None else signature
    if not isinstance(signature, str) or not isinstance(public_key, str):
        return False
    try:
        _verify_key(public_key).verify(canonical_bytes(data), base64.b64decode(signature, validate=True))
    except (BadSignatureError, ValueError, binascii.Error):  # binascii.Error is a ValueError too
        return False
    return True


@functools.lru_cache(maxsize=4096)
def _verify_key(public_key: str) -> VerifyKey:
    """The key in `public_key` (base64 of 32 bytes); `ValueError` if it is not one. Kept for the next
    signature: a collaborator signs many submissions with the same key."""
    return VerifyKey(base64.b64decode(public_key, validate=True))


def verifying_key(public_keys: Iterable[str], data: Mapping[str, Any]) -> str | None:
    """The first of `public_keys` whose signature `data` carries, or None.

    A collaborator keeps every key it ever registered, so results signed before
    a key rotation still verify when an auditor checks them later.
    """
    return next((key for key in public_keys if verify(key, data)), None)


def submission_event(data: Mapping[str, Any], *, event_id: str | None = None, time: datetime | None = None) -> bytes:
    """The bytes of a `qc-submitted` CloudEvent around signed `data`, written exactly as signed.

    Built as a plain dict rather than through the pydantic model, which would
    re-serialise fields (e.g. `inspected_at`) and so change the signed bytes.
    Raises `DecodeError` when production's consumer would refuse the event.
    """
    envelope = {
        "specversion": "1.0",
        "id": event_id or new_event_id(),
        "source": collaborator_source(data["collaborator_id"]),
        "type": QcSubmitted.event_type,
        "subject": data["piece_id"],
        "time": (to_wib(time) if time is not None else wib_now()).isoformat(),
        "datacontenttype": "application/json",
        "dataversion": QcSubmitted.data_version,
        "data": dict(data),
    }
    value = json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    decode(value, topic=Topic.QC_SUBMISSIONS)  # what we send is what production's consumer accepts
    return value
