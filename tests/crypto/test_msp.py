from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from rumor.crypto import (
    CertificateAuthority,
    CryptoError,
    GeneratedMaterial,
    InvalidIdentity,
    Org,
    OrgRegistry,
    generate_key,
    load_org,
    load_signing_identity,
    serialize_identity,
)
from rumor.crypto.identity import certificate_pem
from rumor.crypto.msp import NodeOUs

NOW = dt.datetime.now(dt.UTC)
HOUR = dt.timedelta(hours=1)


def org_ca(material: GeneratedMaterial, mspid: str) -> CertificateAuthority:
    org = material.org(mspid)
    return CertificateAuthority.load(org.ca_cert, org.ca_key)


def identity_of(mspid: str, cert: x509.Certificate) -> bytes:
    return serialize_identity(mspid, certificate_pem(cert))


def issue(ca: CertificateAuthority, *, not_before=NOW - HOUR, not_after=NOW + HOUR, ou: str | None = "peer"):
    return ca.issue(
        "peerX.example.com",
        generate_key().public_key(),
        not_before=not_before,
        not_after=not_after,
        organizational_unit=ou,
    )


def test_members_of_each_role_validate(material, registry):
    for org in material.orgs:
        for node in org.nodes + org.users:
            valid = registry.validate(load_signing_identity(node.msp_dir, org.mspid).identity)
            assert valid.mspid == org.mspid
            assert valid.not_after > NOW.timestamp()


def test_undecodable_and_unknown_org(material, registry):
    with pytest.raises(InvalidIdentity, match="undecodable"):
        registry.validate(b"\xff\x00garbage")
    cert = x509.load_pem_x509_certificate(material.peers[0].signcert.read_bytes())
    with pytest.raises(InvalidIdentity, match="unknown MSP ID 'Org9MSP'"):
        registry.validate(identity_of("Org9MSP", cert))


def test_certificate_of_another_org_claimed_under_this_mspid(material, registry):
    org2_peer = x509.load_pem_x509_certificate(material.org("Org2MSP").nodes[0].signcert.read_bytes())
    assert registry.validate(identity_of("Org2MSP", org2_peer)).mspid == "Org2MSP"
    with pytest.raises(InvalidIdentity, match="not issued by a CA of Org1MSP"):
        registry.validate(identity_of("Org1MSP", org2_peer))


def test_ca_certificates_are_not_identities(material, registry):
    org2_ca = x509.load_pem_x509_certificate(material.org("Org2MSP").ca_cert.read_bytes())
    org1_ca = x509.load_pem_x509_certificate(material.org("Org1MSP").ca_cert.read_bytes())
    for cert in (org2_ca, org1_ca):
        with pytest.raises(InvalidIdentity, match="CA certificate"):
            registry.validate(identity_of("Org1MSP", cert))


def test_certificate_signed_by_a_lookalike_ca_rejected(material, registry):
    # Same subject name as Org1's CA, different key: names alone must not make a chain.
    impostor = CertificateAuthority.create(
        "ca.org1.example.com", "org1.example.com", not_before=NOW - HOUR, not_after=NOW + HOUR
    )
    with pytest.raises(InvalidIdentity, match="not issued by a CA of Org1MSP"):
        registry.validate(identity_of("Org1MSP", issue(impostor)))


def test_expired_and_not_yet_valid(material, registry):
    ca = org_ca(material, "Org1MSP")
    expired = issue(ca, not_before=NOW - 3 * HOUR, not_after=NOW - HOUR)
    with pytest.raises(InvalidIdentity, match="expired"):
        registry.validate(identity_of("Org1MSP", expired))
    future = issue(ca, not_before=NOW + HOUR, not_after=NOW + 3 * HOUR)
    with pytest.raises(InvalidIdentity, match="not valid before"):
        registry.validate(identity_of("Org1MSP", future))


def test_validity_uses_the_injected_clock(material):
    orgs = [load_org(o.msp_dir, o.mspid) for o in material.orgs]
    identity = load_signing_identity(material.peers[0].msp_dir, "Org1MSP").identity
    clock = [NOW.timestamp()]
    registry = OrgRegistry(orgs, now=lambda: clock[0])
    registry.validate(identity)
    clock[0] = registry.expiration(identity)
    with pytest.raises(InvalidIdentity, match="expired"):
        registry.validate(identity)
    clock[0] = NOW.timestamp() - 3600
    with pytest.raises(InvalidIdentity, match="not valid before"):
        registry.validate(identity)


def make_crl(ca: CertificateAuthority, serials: list[int]) -> x509.CertificateRevocationList:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.certificate.subject)
        .last_update(NOW - HOUR)
        .next_update(NOW + HOUR)
    )
    for serial in serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(NOW - HOUR).build()
        )
    return builder.sign(ca.private_key, hashes.SHA256())


def pem(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.PEM)


def test_crl_in_msp_dir_revokes(material, tmp_path: Path):
    org = material.org("Org1MSP")
    msp = tmp_path / "msp"
    shutil.copytree(org.msp_dir, msp)
    revoked = load_signing_identity(org.nodes[1].msp_dir, "Org1MSP")
    (msp / "crls").mkdir()
    (msp / "crls" / "crl.pem").write_bytes(
        pem(make_crl(org_ca(material, "Org1MSP"), [revoked.certificate.serial_number]))
    )
    registry = OrgRegistry([load_org(msp, "Org1MSP")])
    with pytest.raises(InvalidIdentity, match="revoked"):
        registry.validate(revoked.identity)
    registry.validate(load_signing_identity(org.nodes[0].msp_dir, "Org1MSP").identity)


def test_crl_added_at_runtime_revokes(material, registry):
    peer = load_signing_identity(material.org("Org1MSP").nodes[2].msp_dir, "Org1MSP")
    registry.validate(peer.identity)
    before = registry.generation
    ca = org_ca(material, "Org1MSP")
    registry.add_crl(
        "Org1MSP", pem(ca.issue_crl([peer.certificate.serial_number], last_update=NOW, next_update=NOW + HOUR))
    )
    assert registry.generation > before
    with pytest.raises(InvalidIdentity, match="revoked"):
        registry.validate(peer.identity)


def test_crl_must_be_signed_by_the_org(material, registry):
    peer = load_signing_identity(material.org("Org1MSP").nodes[0].msp_dir, "Org1MSP")
    foreign = pem(make_crl(org_ca(material, "Org2MSP"), [peer.certificate.serial_number]))
    with pytest.raises(CryptoError, match="not signed by its CAs"):
        registry.add_crl("Org1MSP", foreign)
    with pytest.raises(CryptoError, match="not a PEM CRL"):
        registry.add_crl("Org1MSP", b"junk")
    with pytest.raises(InvalidIdentity, match="unknown MSP ID"):
        registry.add_crl("NopeMSP", foreign)
    registry.validate(peer.identity)


def test_another_orgs_crl_does_not_revoke_same_serial(material, registry):
    # CRLs apply only to certificates of the CA that issued them, even for equal serial numbers.
    peer = load_signing_identity(material.org("Org1MSP").nodes[0].msp_dir, "Org1MSP")
    tlsca = CertificateAuthority.load(material.org("Org1MSP").tlsca_cert, material.org("Org1MSP").tlsca_key)
    org = registry.org("Org1MSP")
    registry.add_org(Org("Org1MSP", (*org.root_certs, tlsca.certificate), node_ous=org.node_ous))
    registry.add_crl("Org1MSP", pem(make_crl(tlsca, [peer.certificate.serial_number])))
    registry.validate(peer.identity)


def test_node_ous_required_when_enabled(material, registry):
    ca = org_ca(material, "Org1MSP")
    for ou in (None, "engineering"):
        with pytest.raises(InvalidIdentity, match="exactly one of the OUs"):
            registry.validate(identity_of("Org1MSP", issue(ca, ou=ou)))
    org = registry.org("Org1MSP")
    assert org.node_ous == NodeOUs()
    registry.add_org(Org("Org1MSP", org.root_certs))
    registry.validate(identity_of("Org1MSP", issue(ca, ou=None)))


def test_intermediate_ca_chains(material):
    root = org_ca(material, "Org1MSP")
    key = generate_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name.from_rfc4514_string("CN=ica.org1.example.com"))
        .issuer_name(root.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - HOUR)
        .not_valid_after(NOW + HOUR)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
    )
    intermediate = CertificateAuthority(builder.sign(root.private_key, hashes.SHA256()), key)
    leaf = identity_of("Org1MSP", issue(intermediate))
    with_ica = OrgRegistry([Org("Org1MSP", (root.certificate,), intermediate_certs=(intermediate.certificate,))])
    assert with_ica.validate(leaf).mspid == "Org1MSP"
    with pytest.raises(InvalidIdentity, match="not issued"):
        OrgRegistry([Org("Org1MSP", (root.certificate,))]).validate(leaf)


def test_expiration_and_org_of(material, registry):
    node = material.org("Org2MSP").nodes[0]
    identity = load_signing_identity(node.msp_dir, "Org2MSP").identity
    cert = x509.load_pem_x509_certificate(node.signcert.read_bytes())
    assert registry.expiration(identity) == cert.not_valid_after_utc.timestamp()
    assert registry.org_of(identity) == b"Org2MSP"
    with pytest.raises(InvalidIdentity):
        registry.org_of(b"\xff")


def test_load_org_reads_tls_roots_and_rejects_empty_dirs(material, tmp_path: Path):
    org = load_org(material.org("Org1MSP").msp_dir, "Org1MSP")
    assert org.tls_root_certs[0] == x509.load_pem_x509_certificate(material.org("Org1MSP").tlsca_cert.read_bytes())
    with pytest.raises(CryptoError, match="no such MSP directory"):
        load_org(tmp_path / "missing", "X")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CryptoError, match="no CA certificate"):
        load_org(tmp_path / "empty", "X")
