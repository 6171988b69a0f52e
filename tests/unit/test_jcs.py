"""Signatures cover RFC 8785 (JCS) canonical JSON (SPEC §6): the RFC's own examples, the cases where
the old `json.dumps(sort_keys=True)` rule gave other bytes, old signatures that stay valid, malformed
data that simply does not verify, and a signature made in JavaScript that verifies here.

The JavaScript signer (tests/node/sign.mjs) needs Node 20 and npm, as CI has: without them the test
fails rather than skips, since a skipped interoperability check proves nothing.
"""

from __future__ import annotations

import base64
import json
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.contracts.signing import (
    canonical_bytes,
    generate_private_key,
    private_key_pem,
    public_key_b64,
    sign,
    signed,
    verify,
    verifying_key,
)
from tests.node_tools import node_tools


def old_rule(data: dict) -> bytes:
    """The bytes signatures covered before RFC 8785: Python's sorted-keys JSON."""
    unsigned = {k: v for k, v in data.items() if k != "signature"}
    return json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def signed_by_old_rule(key, data: dict) -> dict:
    return {**data, "signature": base64.b64encode(key.sign(old_rule(data))).decode()}


# --- RFC 8785's own examples ------------------------------------------------------------------


def test_rfc8785_section_3_2_2_sample_gives_the_rfc_output_bytes():
    # The input of RFC 8785 §3.2.2, as JSON text; the output as §3.2.4 lists its UTF-8 bytes.
    text = r"""{
      "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
      "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
      "literals": [null, true, false]
    }"""
    expected = (
        b'{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        b'"string":"\xe2\x82\xac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    )
    assert canonical_bytes(json.loads(text)) == expected
    assert expected.hex(" ") == (
        "7b 22 6c 69 74 65 72 61 6c 73 22 3a 5b 6e 75 6c 6c 2c 74 72 75 65 2c 66 61 6c 73 65 5d 2c 22 6e "
        "75 6d 62 65 72 73 22 3a 5b 33 33 33 33 33 33 33 33 33 2e 33 33 33 33 33 33 33 2c 31 65 2b 33 30 "
        "2c 34 2e 35 2c 30 2e 30 30 32 2c 31 65 2d 32 37 5d 2c 22 73 74 72 69 6e 67 22 3a 22 e2 82 ac 24 "
        "5c 75 30 30 30 66 5c 6e 41 27 42 5c 22 5c 5c 5c 5c 5c 22 2f 22 7d"
    )


def test_rfc8785_section_3_2_3_sorts_keys_by_utf16_code_units():
    text = r"""{
      "\u20ac": "Euro Sign",
      "\r": "Carriage Return",
      "\ufb33": "Hebrew Letter Dalet With Dagesh",
      "1": "One",
      "\ud83d\ude00": "Emoji: Grinning Face",
      "\u0080": "Control",
      "\u00f6": "Latin Small Letter O With Diaeresis"
    }"""
    # The emoji (UTF-16 D83D DE00) sorts before U+FB33, though its code point is larger.
    assert canonical_bytes(json.loads(text)) == (
        b'{"\\r":"Carriage Return","1":"One","\xc2\x80":"Control",'
        b'"\xc3\xb6":"Latin Small Letter O With Diaeresis","\xe2\x82\xac":"Euro Sign",'
        b'"\xf0\x9f\x98\x80":"Emoji: Grinning Face","\xef\xac\xb3":"Hebrew Letter Dalet With Dagesh"}'
    )


# RFC 8785 Appendix B: an IEEE-754 double (its 64 bits in hex) and how JCS writes it.
APPENDIX_B = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),  # minus zero
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]


def double(ieee_hex: str) -> float:
    return struct.unpack(">d", bytes.fromhex(ieee_hex))[0]


@pytest.mark.parametrize(("ieee_hex", "text"), APPENDIX_B)
def test_rfc8785_appendix_b_numbers(ieee_hex, text):
    assert canonical_bytes({"n": double(ieee_hex)}) == b'{"n":' + text.encode() + b"}"


@pytest.mark.parametrize("ieee_hex", ["7fffffffffffffff", "7ff0000000000000", "fff0000000000000"])
def test_rfc8785_appendix_b_nan_and_infinity_have_no_canonical_form(ieee_hex):
    with pytest.raises(ValueError, match="NaN or infinity"):
        canonical_bytes({"n": double(ieee_hex)})


# --- what changed, and what did not ------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        # Code point order puts U+FB33 first, UTF-16 order the emoji (a surrogate pair from D83D).
        {"piece_id": "P-1", "\ufb33": "dalet", "\U0001f9fa": "keranjang"},
        {"piece_id": "P-1", "moisture": 1e-7},  # Python writes 1e-07
        {"piece_id": "P-1", "grams": 1e20},  # Python writes 1e+20, JCS 100000000000000000000
    ],
    ids=["non-BMP key", "small float", "large float"],
)
def test_where_the_old_rule_differs_only_rfc8785_signatures_verify(data):
    key = generate_private_key()
    assert old_rule(data) != canonical_bytes(data)
    assert verify(public_key_b64(key), signed(key, data))
    assert not verify(public_key_b64(key), signed_by_old_rule(key, data))


def test_a_submission_with_a_non_bmp_key_signs_and_verifies_whatever_its_key_order():
    key = generate_private_key()
    data = signed(key, {"\U0001f600": "senyum", "piece_id": "P-1", "\ufb33": "dalet", "defects": []})
    assert verify(public_key_b64(key), data)
    assert verify(public_key_b64(key), dict(reversed(data.items())))
    assert canonical_bytes(data).startswith(b'{"defects":[],"piece_id":"P-1","\xf0\x9f\x98\x80":')


SUBMISSION = {
    "submission_id": "S-20240301-0007",
    "piece_id": "P-20240301-0042",
    "collaborator_id": "C-rotan-lestari",
    "result": "failed",
    "inspector": "Siti Nurhaliza — pemeriksa mutu, Rusunawa Marunda",
    "inspected_at": "2024-03-01T09:15:00.000+07:00",
    "defects": ["anyaman longgar", "warna tidak rata", '"sudut" retak\n\t\\'],
}


def test_a_signature_made_with_pythons_sorted_keys_json_still_verifies():
    # SPEC §6: for strings and lists of strings the bytes are the old ones, so old signatures stay valid.
    key = generate_private_key()
    assert canonical_bytes(SUBMISSION) == old_rule(SUBMISSION)
    assert verify(public_key_b64(key), signed_by_old_rule(key, SUBMISSION))


# Keys in the Basic Multilingual Plane (surrogates excluded), where UTF-16 and code point order agree;
# values any valid text, control characters and astral characters included.
BMP_KEY = st.text(st.characters(max_codepoint=0xFFFF, exclude_categories=["Cs"]), max_size=8)
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(BMP_KEY, TEXT | st.lists(TEXT, max_size=4), max_size=8))
def test_strings_and_lists_of_strings_give_pythons_sorted_keys_json(data):
    assert canonical_bytes(data) == old_rule(data)


# --- malformed data does not verify ----------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("inspector", "Siti \ud800"),  # a lone surrogate, as json.loads gives for "\ud800"
        ("defects", ["ok", "\udc00"]),
        ("count", 2**64),
        ("count", 2**53),  # one past IEEE-754's exact integers
        ("ratio", float("nan")),
        ("ratio", float("inf")),
        ("blob", b"bytes"),
        ("when", {1, 2}),
    ],
    ids=["lone surrogate", "lone surrogate in a list", "2**64", "2**53", "nan", "infinity", "bytes", "set"],
)
def test_data_without_a_canonical_form_does_not_verify_and_never_raises(field, value):
    key = generate_private_key()
    data = {**signed(key, SUBMISSION), field: value}
    assert verify(public_key_b64(key), data) is False
    assert verifying_key([public_key_b64(key)], data) is None
    with pytest.raises(ValueError):
        canonical_bytes(data)


def test_a_key_with_a_lone_surrogate_or_a_non_string_key_does_not_verify():
    key = generate_private_key()
    for extra in ({"\ud83d": "x"}, {1: "x"}):
        data = {**signed(key, SUBMISSION), **extra}
        assert verify(public_key_b64(key), data) is False


@pytest.mark.parametrize(
    "data", [{"secret": 2**64}, {"secret": "Rahasia \ud800 pribadi"}, {"Rahasia \ud800": "x"}, {"secret": {b"Rahasia"}}]
)
def test_the_error_never_quotes_the_data(data):
    with pytest.raises(ValueError) as caught:
        canonical_bytes(data)
    message = str(caught.value)
    assert "18446744073709551616" not in message and "Rahasia" not in message and "\\ud800" not in message
    assert type(caught.value) is ValueError
    # Nor does a traceback carry rfc8785's own message (which quotes the value) as the cause.
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_the_signature_field_itself_is_never_covered():
    key = generate_private_key()
    data = signed(key, SUBMISSION)
    assert canonical_bytes(data) == canonical_bytes(SUBMISSION)
    assert sign(key, data) == data["signature"]


# --- a signature made in JavaScript ----------------------------------------------------------


@pytest.fixture(scope="session")
def node_signer() -> Path:
    """tests/node/sign.mjs with its locked dependencies installed."""
    return node_tools("test_jcs.py checks that a signature made by a JavaScript RFC 8785 implementation "
                      "(tests/node/sign.mjs) verifies here.") / "sign.mjs"


def test_a_signature_made_by_javascripts_canonicalize_and_node_crypto_verifies(node_signer, tmp_path):
    key = generate_private_key()
    key_file = tmp_path / "collaborator.pem"
    key_file.write_bytes(private_key_pem(key))
    data = {
        **SUBMISSION,
        "\U0001f9fa": "keranjang rotan",  # a non-BMP key, which UTF-16 order puts before U+FB33
        "\ufb33": "catatan",
        "measurements": [["panjang", "40 cm"], ["lebar", "25 cm"], []],
        "attempt": 2,
    }
    assert canonical_bytes(data) != old_rule(data)  # the case where the JCS rule matters

    done = subprocess.run(
        ["node", str(node_signer), str(key_file)],
        input=json.dumps(data, ensure_ascii=False),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    from_node = {**data, "signature": done.stdout.strip()}

    public_key = public_key_b64(key)
    assert verify(public_key, from_node)
    assert verify(public_key, dict(reversed(from_node.items())))  # key order as sent does not matter
    assert from_node["signature"] == sign(key, data)  # Ed25519 is deterministic: the very same bytes were signed
    assert not verify(public_key, {**from_node, "inspector": "Siti Nurhaliza — pemeriksa mutu"})
    assert not verify(public_key, {**from_node, "measurements": [["panjang", "41 cm"], ["lebar", "25 cm"], []]})
    assert not verify(public_key_b64(generate_private_key()), from_node)
