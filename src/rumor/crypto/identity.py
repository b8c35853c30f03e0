"""Serialized identities, PKI-IDs, and the local signing identity of a peer.

An identity on the wire is an ``msp.SerializedIdentity{mspid, id_bytes}`` whose
id_bytes hold a PEM certificate; its PKI-ID is SHA-256(mspid || id_bytes) over
exactly those bytes. A peer's own identity is loaded from a Fabric MSP directory:

    msp/signcerts/<one cert>.pem    msp/keystore/<one key file, e.g. priv_sk>
    msp/cacerts/*.pem               msp/intermediatecerts/*.pem (optional)

Fabric's MSP rewrites a certificate whose ECDSA signature has a high s into its
low-S twin before serializing it, so that is done here too: a peer loading
material made by Fabric's cryptogen (which does not normalize s) then announces
the same identity bytes, hence the same PKI-ID, as a Fabric peer would.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature as _CryptographyInvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from google.protobuf.message import DecodeError

from rumor.crypto import _der
from rumor.crypto.api import CryptoError, InvalidIdentity, PKIid
from rumor.crypto.signing import CURVE_ORDERS, PrivateKey, load_private_key
from rumor.crypto.signing import sign as _sign
from rumor.wire.pb.msp import identities_pb2

_ECDSA_SIGNATURE_OIDS = frozenset(
    {
        x509.SignatureAlgorithmOID.ECDSA_WITH_SHA256,
        x509.SignatureAlgorithmOID.ECDSA_WITH_SHA384,
        x509.SignatureAlgorithmOID.ECDSA_WITH_SHA512,
    }
)


def serialize_identity(mspid: str, cert_pem: bytes) -> bytes:
    if not mspid:
        raise InvalidIdentity("empty MSP ID")
    return identities_pb2.SerializedIdentity(mspid=mspid, id_bytes=cert_pem).SerializeToString(deterministic=True)


def decode_identity(identity: bytes) -> tuple[str, bytes]:
    """(mspid, id_bytes) of a serialized identity, without looking inside id_bytes."""
    msg = identities_pb2.SerializedIdentity()
    try:
        msg.ParseFromString(identity)
    except (DecodeError, ValueError, TypeError) as exc:
        raise InvalidIdentity(f"undecodable identity: {exc}") from None
    if not msg.mspid:
        raise InvalidIdentity("undecodable identity: no MSP ID")
    if not msg.id_bytes:
        raise InvalidIdentity("undecodable identity: no certificate")
    return msg.mspid, msg.id_bytes


def load_certificate(pem: bytes) -> x509.Certificate:
    """The first certificate in ``pem`` (Fabric also reads only the first PEM block)."""
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise InvalidIdentity(f"not a PEM certificate: {exc}") from None


def deserialize_identity(identity: bytes) -> tuple[str, x509.Certificate]:
    mspid, id_bytes = decode_identity(identity)
    return mspid, load_certificate(id_bytes)


def pki_id_of(identity: bytes) -> PKIid:
    mspid, id_bytes = decode_identity(identity)
    return hashlib.sha256(mspid.encode() + id_bytes).digest()


def certificate_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def replace_signature(cert: x509.Certificate, signature: bytes) -> x509.Certificate:
    """``cert`` with its signature value swapped, the signed part left byte for byte."""
    try:
        tbs, algorithm, _ = _der.split_sequence(cert.public_bytes(serialization.Encoding.DER))
    except ValueError as exc:
        raise CryptoError(f"cannot split certificate: {exc}") from None
    bits = _der.tlv(_der.BIT_STRING, b"\x00" + signature)
    return x509.load_der_x509_certificate(_der.sequence(tbs, algorithm, bits))


def has_high_s(cert: x509.Certificate, issuer_curve: ec.EllipticCurve) -> bool:
    if cert.signature_algorithm_oid not in _ECDSA_SIGNATURE_OIDS or issuer_curve.name not in CURVE_ORDERS:
        return False
    _, s = decode_dss_signature(cert.signature)
    return s > CURVE_ORDERS[issuer_curve.name] // 2


def sanitize_certificate(cert: x509.Certificate, issuer_curve: ec.EllipticCurve) -> x509.Certificate:
    """The low-S form of ``cert`` (itself when already low-S or not ECDSA-signed).

    The curve is the issuer's: the order that s is folded against is that of the
    key that signed, not of the key the certificate carries.
    """
    if not has_high_s(cert, issuer_curve):
        return cert
    r, s = decode_dss_signature(cert.signature)
    return replace_signature(cert, encode_dss_signature(r, CURVE_ORDERS[issuer_curve.name] - s))


def find_issuer(cert: x509.Certificate, candidates: Iterable[x509.Certificate]) -> x509.Certificate | None:
    for candidate in candidates:
        try:
            cert.verify_directly_issued_by(candidate)
        except (ValueError, TypeError, _CryptographyInvalidSignature):
            continue
        return candidate
    return None


def read_pem_certificates(directory: Path) -> list[x509.Certificate]:
    """Every certificate in the files of ``directory`` (absent directory: none)."""
    certs: list[x509.Certificate] = []
    if not directory.is_dir():
        return certs
    for path in sorted(_visible_files(directory)):
        try:
            certs.extend(x509.load_pem_x509_certificates(path.read_bytes()))
        except ValueError as exc:
            raise CryptoError(f"{path}: not a PEM certificate: {exc}") from None
    return certs


def _visible_files(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if p.is_file() and not p.name.startswith(".")]


@dataclass(frozen=True)
class SigningIdentity:
    """A peer's (or orderer's, or user's) own certificate and key, bound to its MSP ID.

    ``identity`` is the serialized SerializedIdentity this node presents; ``pki_id``
    is derived from it. Signing needs no I/O once loaded.
    """

    mspid: str
    certificate: x509.Certificate
    private_key: PrivateKey = field(repr=False)
    identity: bytes = field(init=False, repr=False)
    pki_id: PKIid = field(init=False)

    def __post_init__(self) -> None:
        if self.certificate.public_key() != self.private_key.public_key():
            raise CryptoError("private key does not match the certificate")
        identity = serialize_identity(self.mspid, certificate_pem(self.certificate))
        object.__setattr__(self, "identity", identity)
        object.__setattr__(self, "pki_id", pki_id_of(identity))

    def sign(self, message: bytes) -> bytes:
        return _sign(self.private_key, message)

    @classmethod
    def load(cls, msp_dir: Path, mspid: str) -> SigningIdentity:
        return load_signing_identity(msp_dir, mspid)


def load_signing_identity(msp_dir: Path, mspid: str) -> SigningIdentity:
    """Load the identity in a Fabric MSP directory (the MSP ID is not stored there: peers get it from config).

    The keystore may hold ``priv_sk`` (cryptogen 2.x), ``<hex>_sk`` (older tools) or
    several keys; the one matching the signing certificate is used.
    """
    msp_dir = Path(msp_dir)
    certs = read_pem_certificates(msp_dir / "signcerts")
    if len(certs) != 1:
        raise CryptoError(f"{msp_dir / 'signcerts'}: expected exactly one certificate, found {len(certs)}")
    cert = certs[0]
    keystore = msp_dir / "keystore"
    key_files = sorted(_visible_files(keystore)) if keystore.is_dir() else []
    if not key_files:
        raise CryptoError(f"{keystore}: no private key")
    key = None
    for path in key_files:
        candidate = load_private_key(path.read_bytes())
        if candidate.public_key() == cert.public_key():
            key = candidate
            break
    if key is None:
        raise CryptoError(f"{keystore}: no private key matches {msp_dir / 'signcerts'}")
    issuers = read_pem_certificates(msp_dir / "cacerts") + read_pem_certificates(msp_dir / "intermediatecerts")
    issuer = find_issuer(cert, issuers)
    if issuer is not None:
        issuer_key = issuer.public_key()
        if isinstance(issuer_key, ec.EllipticCurvePublicKey):
            cert = sanitize_certificate(cert, issuer_key.curve)
    return SigningIdentity(mspid=mspid, certificate=cert, private_key=key)


@functools.lru_cache(maxsize=1024)
def identity_name(identity: bytes) -> str:
    """A serialized identity's certificate common name (a node's name under cryptogen: peer0.org1.example.com),
    for log lines; "" when it has none or does not decode. Cached: a log line must not parse a certificate."""
    try:
        _, pem = decode_identity(identity)
        names = load_certificate(pem).subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    except Exception:  # any undecodable identity: no name, the caller shows the PKI-ID
        return ""
    value = names[0].value if names else ""
    return value if isinstance(value, str) else ""
