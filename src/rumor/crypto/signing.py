"""ECDSA keys and signatures the way Fabric makes and checks them.

Keys are P-256, stored as unencrypted PKCS#8 PEM (Fabric's cryptogen names the
file ``priv_sk``). A signature is ECDSA over SHA-256 of the message, DER-encoded
(r, s), with s folded into the lower half of the curve order. ``verify`` accepts
only that exact form: canonical DER, nothing after it, 0 < r < n, 0 < s <= n/2.
Fabric rejects high-S signatures, so accepting them here would let a message
pass in rumor that a Fabric peer drops (and would make signatures malleable).
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature as _CryptographyInvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from rumor.crypto.api import CryptoError, InvalidSignature

PrivateKey = ec.EllipticCurvePrivateKey
PublicKey = ec.EllipticCurvePublicKey

# Group orders of the curves Fabric's MSP accepts; P-256 is what rumor itself uses.
CURVE_ORDERS: dict[str, int] = {
    "secp256r1": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    "secp384r1": int(
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973", 16
    ),
}

_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


def curve_order(curve: ec.EllipticCurve) -> int:
    try:
        return CURVE_ORDERS[curve.name]
    except KeyError:
        raise CryptoError(f"unsupported elliptic curve {curve.name}") from None


def generate_key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def private_key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_private_key(pem: bytes) -> PrivateKey:
    """Parse a PEM private key (PKCS#8 or SEC1 'EC PRIVATE KEY', as older tools write)."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise CryptoError(f"cannot load private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CryptoError("private key is not an elliptic-curve key")
    curve_order(key.curve)
    return key


def write_private_key(path: Path, key: PrivateKey) -> None:
    """Write ``key`` as PKCS#8 PEM, readable by the owner only from the first byte on."""
    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private_key_pem(key))
    # O_CREAT's mode does not apply to a file that already existed.
    os.chmod(path, 0o600)


def read_private_key(path: Path) -> PrivateKey:
    return load_private_key(Path(path).read_bytes())


def public_key_pem(key: PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def to_low_s(signature: bytes, curve: ec.EllipticCurve) -> bytes:
    """Same signature with s replaced by n - s when s is in the upper half; both verify."""
    r, s = decode_dss_signature(signature)
    n = curve_order(curve)
    if s > n // 2:
        return encode_dss_signature(r, n - s)
    return signature


def is_low_s(signature: bytes, curve: ec.EllipticCurve) -> bool:
    _, s = decode_dss_signature(signature)
    return s <= curve_order(curve) // 2


def sign(private_key: PrivateKey, message: bytes) -> bytes:
    """ECDSA/SHA-256 signature over ``message``, DER-encoded with a low s."""
    return to_low_s(private_key.sign(message, _ECDSA_SHA256), private_key.curve)


def check_signature_encoding(signature: bytes, curve: ec.EllipticCurve) -> None:
    """Raise InvalidSignature unless ``signature`` is canonical DER (r, s) with a low s."""
    try:
        r, s = decode_dss_signature(signature)
    except ValueError:
        raise InvalidSignature("signature is not a DER-encoded (r, s) pair") from None
    # The decoder already refuses trailing bytes; comparing with a fresh encoding also
    # catches any non-minimal integer or length it might tolerate.
    if encode_dss_signature(r, s) != signature:
        raise InvalidSignature("signature is not in canonical DER")
    n = CURVE_ORDERS.get(curve.name)
    if n is None:
        raise InvalidSignature(f"unsupported elliptic curve {curve.name}")
    if not 0 < r < n:
        raise InvalidSignature("signature r out of range")
    if not 0 < s < n:
        raise InvalidSignature("signature s out of range")
    if s > n // 2:
        raise InvalidSignature("signature has a high s")


def verify(public_key: PublicKey, signature: bytes, message: bytes) -> None:
    """Raise InvalidSignature unless ``signature`` is a low-S ECDSA/SHA-256 signature of ``message``."""
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise InvalidSignature("public key is not an elliptic-curve key")
    check_signature_encoding(signature, public_key.curve)
    try:
        public_key.verify(signature, message, _ECDSA_SHA256)
    except _CryptographyInvalidSignature:
        raise InvalidSignature("signature does not verify") from None
