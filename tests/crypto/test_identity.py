from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from rumor.crypto import (
    CertificateAuthority,
    CryptoError,
    InvalidIdentity,
    OrgRegistry,
    SigningIdentity,
    deserialize_identity,
    generate_key,
    load_org,
    load_signing_identity,
    pki_id_of,
    serialize_identity,
    verify,
)
from rumor.crypto.identity import certificate_pem, has_high_s, replace_signature, sanitize_certificate
from rumor.crypto.signing import CURVE_ORDERS, write_private_key
from rumor.wire.pb.msp import identities_pb2

N = CURVE_ORDERS["secp256r1"]
NOW = dt.datetime.now(dt.UTC)


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create(
        "ca.test.example.com",
        "test.example.com",
        not_before=NOW - dt.timedelta(days=1),
        not_after=NOW + dt.timedelta(days=1),
    )


def issue(ca: CertificateAuthority, key=None, ou: str = "peer"):
    key = key or generate_key()
    cert = ca.issue(
        "peer0.test.example.com",
        key.public_key(),
        not_before=NOW - dt.timedelta(hours=1),
        not_after=NOW + dt.timedelta(hours=1),
        organizational_unit=ou,
    )
    return key, cert


def high_s_twin(cert):
    r, s = decode_dss_signature(cert.signature)
    return replace_signature(cert, encode_dss_signature(r, N - s))


def test_serialize_round_trip(ca):
    _, cert = issue(ca)
    identity = serialize_identity("TestMSP", certificate_pem(cert))
    assert identities_pb2.SerializedIdentity.FromString(identity).id_bytes == certificate_pem(cert)
    assert deserialize_identity(identity) == ("TestMSP", cert)


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"\xff\xfe\xfd",
        identities_pb2.SerializedIdentity(mspid="TestMSP").SerializeToString(),
        identities_pb2.SerializedIdentity(id_bytes=b"x").SerializeToString(),
        identities_pb2.SerializedIdentity(mspid="TestMSP", id_bytes=b"not a pem").SerializeToString(),
    ],
    ids=["empty", "not-protobuf", "no-cert", "no-mspid", "not-pem"],
)
def test_garbage_identities_rejected(garbage):
    with pytest.raises(InvalidIdentity):
        deserialize_identity(garbage)


def test_pki_id_is_sha256_of_mspid_and_id_bytes(ca):
    _, cert = issue(ca)
    pem = certificate_pem(cert)
    assert pki_id_of(serialize_identity("Org1MSP", pem)) == hashlib.sha256(b"Org1MSP" + pem).digest()
    # The same certificate claimed under another MSP ID is another peer.
    assert pki_id_of(serialize_identity("Org1MSP", pem)) != pki_id_of(serialize_identity("Org2MSP", pem))
    with pytest.raises(InvalidIdentity):
        pki_id_of(b"\xff")


def test_high_s_certificate_is_sanitized_to_its_low_s_twin(ca):
    _, cert = issue(ca)
    high = high_s_twin(cert)
    high.verify_directly_issued_by(ca.certificate)  # still a correctly signed certificate
    assert has_high_s(high, ca.private_key.curve)
    assert high.tbs_certificate_bytes == cert.tbs_certificate_bytes
    assert sanitize_certificate(high, ca.private_key.curve) == cert
    assert sanitize_certificate(cert, ca.private_key.curve) is cert


def write_msp(msp_dir: Path, ca: CertificateAuthority, cert, key, key_name: str = "priv_sk", extra_keys: int = 0):
    (msp_dir / "signcerts").mkdir(parents=True)
    (msp_dir / "keystore").mkdir()
    (msp_dir / "cacerts").mkdir()
    (msp_dir / "signcerts" / "cert.pem").write_bytes(certificate_pem(cert))
    (msp_dir / "cacerts" / "ca.pem").write_bytes(certificate_pem(ca.certificate))
    for i in range(extra_keys):
        write_private_key(msp_dir / "keystore" / f"{i:064x}_sk", generate_key())
    write_private_key(msp_dir / "keystore" / key_name, key)


def test_load_signing_identity_signs_as_its_certificate(tmp_path, ca):
    key, cert = issue(ca)
    write_msp(tmp_path / "msp", ca, cert, key)
    sid = load_signing_identity(tmp_path / "msp", "TestMSP")
    assert sid.identity == serialize_identity("TestMSP", certificate_pem(cert))
    assert sid.pki_id == pki_id_of(sid.identity)
    verify(cert.public_key(), sid.sign(b"hello"), b"hello")


def test_cryptogen_style_material_with_high_s_cert_and_old_key_names(tmp_path, ca):
    # Fabric's cryptogen neither normalizes certificate signatures nor (before 2.0) names the key priv_sk.
    key, cert = issue(ca)
    write_msp(tmp_path / "msp", ca, high_s_twin(cert), key, key_name=f"{'ab' * 32}_sk", extra_keys=2)
    sid = load_signing_identity(tmp_path / "msp", "TestMSP")
    assert sid.certificate == cert
    assert sid.identity == serialize_identity("TestMSP", certificate_pem(cert))
    registry = OrgRegistry([load_org(tmp_path / "msp", "TestMSP")])
    assert registry.validate(sid.identity).mspid == "TestMSP"


def test_signing_identity_needs_a_matching_key(tmp_path, ca):
    _, cert = issue(ca)
    write_msp(tmp_path / "msp", ca, cert, generate_key())
    with pytest.raises(CryptoError, match="no private key matches"):
        load_signing_identity(tmp_path / "msp", "TestMSP")
    with pytest.raises(CryptoError, match="does not match"):
        SigningIdentity("TestMSP", cert, generate_key())


def test_signing_identity_needs_one_signcert_and_a_keystore(tmp_path, ca):
    key, cert = issue(ca)
    write_msp(tmp_path / "msp", ca, cert, key)
    (tmp_path / "msp" / "signcerts" / "other.pem").write_bytes(certificate_pem(issue(ca)[1]))
    with pytest.raises(CryptoError, match="exactly one certificate"):
        load_signing_identity(tmp_path / "msp", "TestMSP")
    with pytest.raises(CryptoError, match="exactly one certificate"):
        load_signing_identity(tmp_path / "missing", "TestMSP")
