from __future__ import annotations

import os
import stat

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from rumor.crypto import CryptoError, InvalidSignature
from rumor.crypto.signing import (
    CURVE_ORDERS,
    generate_key,
    is_low_s,
    load_private_key,
    private_key_pem,
    read_private_key,
    sign,
    to_low_s,
    verify,
    write_private_key,
)

N = CURVE_ORDERS["secp256r1"]
MESSAGE = b"a gossip payload"


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return generate_key()


@pytest.fixture(scope="module")
def signature(key: ec.EllipticCurvePrivateKey) -> bytes:
    return sign(key, MESSAGE)


def test_round_trip(key, signature):
    verify(key.public_key(), signature, MESSAGE)


def test_signatures_are_always_low_s(key):
    for i in range(200):
        _, s = decode_dss_signature(sign(key, b"message %d" % i))
        assert s <= N // 2


def test_tampered_message_rejected(key, signature):
    with pytest.raises(InvalidSignature):
        verify(key.public_key(), signature, MESSAGE + b"!")


def test_wrong_key_rejected(signature):
    with pytest.raises(InvalidSignature):
        verify(generate_key().public_key(), signature, MESSAGE)


def test_high_s_twin_rejected_although_mathematically_valid(key, signature):
    r, s = decode_dss_signature(signature)
    high = encode_dss_signature(r, N - s)
    # The twin is a valid ECDSA signature; only the low-S rule rejects it.
    key.public_key().verify(high, MESSAGE, ec.ECDSA(hashes.SHA256()))
    with pytest.raises(InvalidSignature, match="high s"):
        verify(key.public_key(), high, MESSAGE)
    assert to_low_s(high, key.curve) == signature
    assert not is_low_s(high, key.curve)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda sig: sig + b"\x00",
        lambda sig: sig[:-1],
        lambda sig: b"",
        lambda sig: b"\x30\x00",
        lambda sig: b"not der at all",
        lambda sig: b"\x31" + sig[1:],
    ],
    ids=["trailing-byte", "truncated", "empty", "empty-sequence", "garbage", "wrong-tag"],
)
def test_malformed_der_rejected(key, signature, mangle):
    with pytest.raises(InvalidSignature):
        verify(key.public_key(), mangle(signature), MESSAGE)


def test_non_minimal_integer_rejected(key, signature):
    r, s = decode_dss_signature(signature)
    r_bytes = b"\x00\x00" + r.to_bytes(32, "big")
    s_bytes = s.to_bytes(32, "big")
    if s_bytes[0] & 0x80:
        s_bytes = b"\x00" + s_bytes
    body = b"\x02" + bytes([len(r_bytes)]) + r_bytes + b"\x02" + bytes([len(s_bytes)]) + s_bytes
    with pytest.raises(InvalidSignature):
        verify(key.public_key(), b"\x30" + bytes([len(body)]) + body, MESSAGE)


@pytest.mark.parametrize(
    ("r", "s"),
    [(0, 1), (1, 0), (N, 1), (1, N), (N + 5, 1)],
    ids=["r=0", "s=0", "r=n", "s=n", "r>n"],
)
def test_out_of_range_r_or_s_rejected(key, r, s):
    with pytest.raises(InvalidSignature):
        verify(key.public_key(), encode_dss_signature(r, s), MESSAGE)


def test_private_key_file_round_trip_is_pkcs8_and_owner_only(tmp_path, key):
    path = tmp_path / "priv_sk"
    write_private_key(path, key)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = read_private_key(path)
    verify(key.public_key(), sign(loaded, MESSAGE), MESSAGE)


def test_rewriting_a_key_file_tightens_its_mode(tmp_path, key):
    path = tmp_path / "priv_sk"
    path.write_bytes(b"old")
    path.chmod(0o644)
    write_private_key(path, key)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_sec1_keys_from_older_tools_load(key):
    sec1 = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    assert sec1.startswith(b"-----BEGIN EC PRIVATE KEY-----")
    assert private_key_pem(load_private_key(sec1)) == private_key_pem(key)


def test_garbage_key_is_a_crypto_error():
    with pytest.raises(CryptoError):
        load_private_key(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
