from __future__ import annotations

import datetime as dt
import ipaddress
import os
import stat
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from rumor.crypto import (
    GeneratedMaterial,
    MaterialExistsError,
    NetworkSpec,
    OrdererOrgSpec,
    OrgSpec,
    SpecError,
    default_spec,
    generate,
    load_signing_identity,
    load_spec,
    verify,
)
from rumor.crypto.signing import CURVE_ORDERS, read_private_key

N = CURVE_ORDERS["secp256r1"]

MSP_FILES = ("cacerts/ca.{d}-cert.pem", "tlscacerts/tlsca.{d}-cert.pem", "config.yaml")


def node_files(base: str, host: str, domain: str, tls: tuple[str, str, str]) -> set[str]:
    files = {f"{base}/msp/{f.format(d=domain)}" for f in MSP_FILES}
    files |= {f"{base}/msp/signcerts/{host}-cert.pem", f"{base}/msp/keystore/priv_sk"}
    files |= {f"{base}/tls/{f}" for f in tls}
    return files


def org_files(kind: str, domain: str, nodes: list[str], users: list[str]) -> set[str]:
    top = f"{kind}Organizations/{domain}"
    files = {
        f"{top}/ca/ca.{domain}-cert.pem",
        f"{top}/ca/priv_sk",
        f"{top}/tlsca/tlsca.{domain}-cert.pem",
        f"{top}/tlsca/priv_sk",
    }
    files |= {f"{top}/msp/{f.format(d=domain)}" for f in MSP_FILES}
    for n in nodes:
        host = f"{n}.{domain}"
        files |= node_files(f"{top}/{kind}s/{host}", host, domain, ("server.crt", "server.key", "ca.crt"))
    for u in users:
        host = f"{u}@{domain}"
        files |= node_files(f"{top}/users/{host}", host, domain, ("client.crt", "client.key", "ca.crt"))
    return files


def all_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_layout_is_exactly_cryptogens(material: GeneratedMaterial):
    expected = (
        org_files("peer", "org1.example.com", ["peer0", "peer1", "peer2"], ["Admin", "User1"])
        | org_files("peer", "org2.example.com", ["peer0", "peer1", "peer2"], ["Admin", "User1"])
        | org_files("orderer", "example.com", ["orderer"], ["Admin"])
    )
    assert all_files(material.root) == expected


def test_generated_material_lists_paths(material: GeneratedMaterial):
    assert [p.host for p in material.peers] == [f"peer{i}.org{o}.example.com" for o in (1, 2) for i in range(3)]
    assert [o.host for o in material.orderers] == ["orderer.example.com"]
    peer = material.node("peer1.org2.example.com")
    assert peer.mspid == "Org2MSP"
    root = material.root / "peerOrganizations/org2.example.com"
    assert peer.msp_dir == root / "peers/peer1.org2.example.com/msp"
    assert peer.signcert == root / "peers/peer1.org2.example.com/msp/signcerts/peer1.org2.example.com-cert.pem"
    assert peer.tls_cert == root / "peers/peer1.org2.example.com/tls/server.crt"
    admin = material.org("Org2MSP").admin
    assert admin.host == "Admin@org2.example.com"
    assert admin.tls_key == root / "users/Admin@org2.example.com/tls/client.key"
    for org in material.orgs:
        for path in (org.ca_cert, org.ca_key, org.tlsca_cert, org.tlsca_key, org.msp_dir):
            assert path.exists()
        for node in org.nodes + org.users:
            for path in (node.signcert, node.keystore, node.tls_cert, node.tls_key, node.tls_ca_cert):
                assert path.is_file()


def test_key_files_are_owner_only(material: GeneratedMaterial):
    keys = [p for p in material.root.rglob("*") if p.name in ("priv_sk", "server.key", "client.key")]
    # two CA keys per org, and an enrollment and a TLS key per node or user
    assert len(keys) == 3 * 2 + 2 * (3 + 2) * 2 + (1 + 1) * 2
    for path in keys:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
        read_private_key(path)


def test_every_certificate_signature_is_low_s(material: GeneratedMaterial):
    certs = [p for p in material.root.rglob("*") if p.suffix in (".pem", ".crt")]
    assert len(certs) > 50
    for path in certs:
        _, s = decode_dss_signature(cert(path).signature)
        assert s <= N // 2, path


def test_peer_key_signs_for_its_certificate_and_chains_to_its_org(material, registry):
    for node in material.peers + material.orderers:
        sid = load_signing_identity(node.msp_dir, node.mspid)
        verify(cert(node.signcert).public_key(), sid.sign(b"msg"), b"msg")
        assert registry.validate(sid.identity).mspid == node.mspid


def test_enrollment_certificates_carry_node_ous(material: GeneratedMaterial):
    def ous(path: Path) -> list[str]:
        return [a.value for a in cert(path).subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)]

    org1 = material.org("Org1MSP")
    assert ous(org1.nodes[0].signcert) == ["peer"]
    assert ous(org1.users[0].signcert) == ["admin"]
    assert ous(org1.users[1].signcert) == ["client"]
    assert ous(material.orderers[0].signcert) == ["orderer"]
    leaf = cert(org1.nodes[0].signcert)
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "peer0.org1.example.com"
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False


def test_cas_are_self_signed_cas_that_sign_certificates_and_crls(material: GeneratedMaterial):
    for org in material.orgs:
        for path, cn in ((org.ca_cert, f"ca.{org.domain}"), (org.tlsca_cert, f"tlsca.{org.domain}")):
            ca = cert(path)
            ca.verify_directly_issued_by(ca)
            assert ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == cn
            assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
            usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
            assert usage.key_cert_sign and usage.crl_sign
            ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
            assert len(ski) == 32
        assert (org.msp_dir / "cacerts" / f"ca.{org.domain}-cert.pem").read_bytes() == org.ca_cert.read_bytes()
        assert (org.msp_dir / "tlscacerts" / f"tlsca.{org.domain}-cert.pem").read_bytes() == (
            org.tlsca_cert.read_bytes()
        )


def test_tls_certificates_have_sans_and_both_ekus(material: GeneratedMaterial):
    org1 = material.org("Org1MSP")
    peer = org1.nodes[0]
    tls = cert(peer.tls_cert)
    tls.verify_directly_issued_by(cert(org1.tlsca_cert))
    assert peer.tls_ca_cert.read_bytes() == org1.tlsca_cert.read_bytes()
    sans = tls.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["peer0.org1.example.com", "peer0", "localhost"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    ekus = tls.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(ekus) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    client = cert(org1.admin.tls_cert)
    assert set(client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == set(ekus)
    orderer = cert(material.orderers[0].tls_cert)
    orderer_sans = orderer.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "orderer.example.com" in orderer_sans.get_values_for_type(x509.DNSName)


def test_msp_config_enables_node_ous(material: GeneratedMaterial):
    org = material.org("Org2MSP")
    for config in (org.msp_dir / "config.yaml", org.nodes[0].msp_dir / "config.yaml"):
        node_ous = yaml.safe_load(config.read_text())["NodeOUs"]
        assert node_ous["Enable"] is True
        for key, ou in (
            ("ClientOUIdentifier", "client"),
            ("PeerOUIdentifier", "peer"),
            ("AdminOUIdentifier", "admin"),
            ("OrdererOUIdentifier", "orderer"),
        ):
            assert node_ous[key] == {
                "Certificate": "cacerts/ca.org2.example.com-cert.pem",
                "OrganizationalUnitIdentifier": ou,
            }


SMALL = NetworkSpec(
    peer_orgs=(OrgSpec("Org1", "org1.example.com", "Org1MSP", ("peer0",), users=0),),
    orderer_orgs=(),
    validity_days=1,
)


def test_refuses_to_overwrite_unless_forced(tmp_path: Path):
    out = tmp_path / "out"
    first = generate(SMALL, out)
    old = first.peers[0].signcert.read_bytes()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(MaterialExistsError, match="not empty"):
        generate(SMALL, out)
    assert first.peers[0].signcert.read_bytes() == old
    second = generate(SMALL, out, force=True)
    assert second.peers[0].signcert.read_bytes() != old
    assert (out / "notes.txt").read_text() == "mine"
    (tmp_path / "file").write_text("x")
    with pytest.raises(MaterialExistsError):
        generate(SMALL, tmp_path / "file", force=True)


def test_validity_follows_spec_and_clock(tmp_path: Path):
    start = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    out = generate(SMALL, tmp_path / "out", now=start)
    leaf = cert(out.peers[0].signcert)
    assert leaf.not_valid_before_utc == start - dt.timedelta(minutes=5)
    assert leaf.not_valid_after_utc == start + dt.timedelta(days=1)


def test_default_spec():
    spec = default_spec(3, 2)
    assert [(o.name, o.domain, o.mspid, o.peers) for o in spec.peer_orgs] == [
        (f"Org{i}", f"org{i}.example.com", f"Org{i}MSP", ("peer0", "peer1")) for i in (1, 2, 3)
    ]
    assert [(o.mspid, o.domain, o.orderers) for o in spec.orderer_orgs] == [("OrdererMSP", "example.com", ("orderer",))]
    with pytest.raises(SpecError):
        default_spec(0, 1)


def write_yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "crypto-config.yaml"
    path.write_text(text)
    return path


def test_load_spec(tmp_path: Path):
    spec = load_spec(
        write_yaml(
            tmp_path,
            """
ValidityDays: 30
PeerOrgs:
  - Name: Org1
    Domain: org1.example.com
    EnableNodeOUs: true
    Template: {Count: 2, Start: 1}
    Specs: [{Hostname: anchor}]
    Users: {Count: 3}
OrdererOrgs:
  - Name: Orderer
    Domain: example.com
    MSPID: OrdererMSP
    Specs: [{Hostname: orderer}]
    Template: {Count: 2}
""",
        )
    )
    assert spec == NetworkSpec(
        peer_orgs=(OrgSpec("Org1", "org1.example.com", "Org1MSP", ("peer1", "peer2", "anchor"), users=3),),
        orderer_orgs=(OrdererOrgSpec("Orderer", "example.com", "OrdererMSP", ("orderer0", "orderer1", "orderer"), 0),),
        validity_days=30,
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("PeerOrgs: [{Name: Org1}]", r"PeerOrgs\[0\]\.Domain: required"),
        ("PeerOrgs: [{Name: Org1, Domain: a.com, Template: {Count: x}}]", r"Template\.Count"),
        ("PeerOrgs: [{Name: Org1, Domain: a.com, Specs: [{Hostname: ../../etc}]}]", r"Specs\[0\]\.Hostname"),
        ("PeerOrgs: [{Name: Org1, Domain: ../evil, Specs: [{Hostname: p}]}]", r"Domain"),
        ("PeerOrgs: [{Name: Org1, Domain: a.com, Specs: [{Hostname: p}], Colour: red}]", r"unknown key.*Colour"),
        ("PeerOrgs: [{Name: Org1, Domain: a.com}]", r"no nodes"),
        ("PeerOrgs: [{Name: Org1, Domain: a.com, Template: {Count: 1}, Specs: [{Hostname: peer0}]}]", "duplicate"),
        ("PeerOrgs: [{Name: Org1, Domain: a.com, MSPID: 'bad id', Template: {Count: 1}}]", r"MSPID"),
        ("PeerOrgs: [{Name: Org1, Domain: a.com, EnableNodeOUs: false, Template: {Count: 1}}]", "EnableNodeOUs"),
        (
            "PeerOrgs: [{Name: A, Domain: a.com, Template: {Count: 1}},\n"
            "           {Name: B, Domain: a.com, Template: {Count: 1}}]",
            "Domain used by more than one org",
        ),
        (
            "PeerOrgs: [{Name: A, Domain: a.com, MSPID: X, Template: {Count: 1}}]\n"
            "OrdererOrgs: [{Name: B, Domain: b.com, MSPID: X, Specs: [{Hostname: o}]}]",
            "MSPID: used by more than one org",
        ),
        ("ValidityDays: 0\nPeerOrgs: [{Name: A, Domain: a.com, Template: {Count: 1}}]", "ValidityDays"),
        ("PeerOrgs: {Name: Org1}", "PeerOrgs: expected a list"),
        ("[1, 2]", "spec: expected a mapping"),
        ("{}", "neither PeerOrgs nor OrdererOrgs"),
        ("PeerOrgs: [", "not valid YAML"),
    ],
)
def test_load_spec_errors_name_the_key(tmp_path: Path, text: str, message: str):
    with pytest.raises(SpecError, match=message) as info:
        load_spec(write_yaml(tmp_path, text))
    assert isinstance(info.value, ValueError)
    assert "crypto-config.yaml" in str(info.value)


def test_load_spec_missing_file(tmp_path: Path):
    with pytest.raises(SpecError, match="cannot read"):
        load_spec(tmp_path / "nope.yaml")
