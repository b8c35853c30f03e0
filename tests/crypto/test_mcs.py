from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from rumor.crypto import (
    CertificateAuthority,
    InvalidBlock,
    InvalidIdentity,
    InvalidSignature,
    MessageCryptoService,
    OrgRegistry,
    SecurityAdvisor,
    X509CryptoService,
    load_org,
    load_signing_identity,
    new_block,
    pki_id_of,
    serialize_identity,
    sign_block,
)
from rumor.crypto.blocks import SIGNATURES_INDEX
from rumor.wire.pb.common import common_pb2

CHANNEL = "mychannel"


@pytest.fixture
def clock() -> list[float]:
    return [dt.datetime.now(dt.UTC).timestamp()]


@pytest.fixture
def registry(material, clock) -> OrgRegistry:
    return OrgRegistry([load_org(o.msp_dir, o.mspid) for o in material.orgs], now=lambda: clock[0])


@pytest.fixture
def peer(material):
    return load_signing_identity(material.org("Org1MSP").nodes[0].msp_dir, "Org1MSP")


@pytest.fixture
def other(material):
    return load_signing_identity(material.org("Org2MSP").nodes[1].msp_dir, "Org2MSP")


@pytest.fixture
def orderer(material):
    return load_signing_identity(material.orderers[0].msp_dir, "OrdererMSP")


@pytest.fixture
def mcs(peer, registry) -> X509CryptoService:
    service = X509CryptoService(peer, registry)
    service.register_channel(CHANNEL, ["OrdererMSP"])
    return service


def test_implements_both_interfaces(mcs):
    assert isinstance(mcs, MessageCryptoService)
    assert isinstance(mcs, SecurityAdvisor)


def test_sign_and_verify_across_orgs(mcs, peer, other, registry):
    remote = X509CryptoService(other, registry)
    signature = remote.sign(b"alive")
    mcs.verify(other.identity, signature, b"alive")
    remote.verify(peer.identity, mcs.sign(b"hello"), b"hello")
    assert mcs.pki_id_of(other.identity) == other.pki_id == pki_id_of(other.identity)
    assert mcs.pki_id == peer.pki_id and mcs.identity == peer.identity


def test_tampered_message_or_wrong_identity_rejected(mcs, peer, other):
    signature = X509CryptoService(other, mcs.registry).sign(b"alive")
    with pytest.raises(InvalidSignature):
        mcs.verify(other.identity, signature, b"alive!")
    with pytest.raises(InvalidSignature):
        mcs.verify(peer.identity, signature, b"alive")


def test_invalid_identity_raises_invalid_identity(mcs, material):
    org2_cert = x509.load_pem_x509_certificate(material.org("Org2MSP").nodes[0].signcert.read_bytes())
    forged = serialize_identity("Org1MSP", org2_cert.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(InvalidIdentity):
        mcs.verify(forged, b"", b"msg")
    with pytest.raises(InvalidIdentity):
        mcs.validate_identity(b"garbage")
    with pytest.raises(InvalidIdentity):
        mcs.pki_id_of(b"\xff")


def test_identities_are_validated_once_and_cached(mcs, other, registry, monkeypatch):
    calls = []
    original = registry.validate
    monkeypatch.setattr(registry, "validate", lambda identity: calls.append(identity) or original(identity))
    signature = X509CryptoService(other, registry).sign(b"m")
    for _ in range(5):
        mcs.verify(other.identity, signature, b"m")
    mcs.validate_identity(other.identity)
    assert calls == [other.identity]


def test_cache_dropped_when_a_crl_arrives(mcs, other, registry, material):
    signature = X509CryptoService(other, registry).sign(b"m")
    mcs.verify(other.identity, signature, b"m")
    org2 = material.org("Org2MSP")
    ca = CertificateAuthority.load(org2.ca_cert, org2.ca_key)
    now = dt.datetime.now(dt.UTC)
    crl = ca.issue_crl([other.certificate.serial_number], last_update=now, next_update=now + dt.timedelta(hours=1))
    registry.add_crl("Org2MSP", crl.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(InvalidIdentity, match="revoked"):
        mcs.verify(other.identity, signature, b"m")


def test_cached_identity_still_expires(mcs, other, clock):
    signature = X509CryptoService(other, mcs.registry).sign(b"m")
    mcs.verify(other.identity, signature, b"m")
    clock[0] = mcs.expiration(other.identity) + 1
    with pytest.raises(InvalidIdentity, match="expired"):
        mcs.verify(other.identity, signature, b"m")


def test_cache_is_bounded(peer, other, orderer, registry):
    mcs = X509CryptoService(peer, registry, cache_size=2)
    for sid in (peer, other, orderer):
        mcs.validate_identity(sid.identity)
    assert len(mcs._cache) == 2


def test_expiration_and_org_of(mcs, other):
    assert mcs.expiration(other.identity) == other.certificate.not_valid_after_utc.timestamp()
    assert mcs.org_of(other.identity) == b"Org2MSP"


def signed_block(number: int, signer, data=(b"tx1", b"tx2")) -> common_pb2.Block:
    return sign_block(new_block(number, b"\x07" * 32, list(data)), signer)


def test_verify_block_accepts_orderer_signed_block(mcs, orderer):
    mcs.verify_block(CHANNEL, 5, signed_block(5, orderer).SerializeToString())


def test_verify_block_rejects_wrong_number(mcs, orderer):
    with pytest.raises(InvalidBlock, match="expected 6"):
        mcs.verify_block(CHANNEL, 6, signed_block(5, orderer).SerializeToString())


def test_verify_block_rejects_tampered_data(mcs, orderer):
    block = signed_block(5, orderer)
    block.data.data[1] = b"tx2'"
    with pytest.raises(InvalidBlock, match="data hash"):
        mcs.verify_block(CHANNEL, 5, block.SerializeToString())


def test_verify_block_rejects_tampered_header_with_consistent_data_hash(mcs, orderer):
    block = signed_block(5, orderer)
    block.header.previous_hash = b"\x08" * 32
    with pytest.raises(InvalidBlock, match=r"no valid orderer signature.*does not verify"):
        mcs.verify_block(CHANNEL, 5, block.SerializeToString())


def test_verify_block_rejects_peer_signature(mcs, peer, other):
    for signer in (peer, other):
        with pytest.raises(InvalidBlock, match="not an orderer org"):
            mcs.verify_block(CHANNEL, 1, signed_block(1, signer).SerializeToString())


def test_verify_block_accepts_if_any_signature_is_good(mcs, peer, orderer):
    block = signed_block(2, peer)
    sign_block(block, orderer)
    mcs.verify_block(CHANNEL, 2, block.SerializeToString())


def test_verify_block_rejects_unknown_channel(mcs, orderer):
    with pytest.raises(InvalidBlock, match="unknown channel"):
        mcs.verify_block("otherchannel", 5, signed_block(5, orderer).SerializeToString())


def test_verify_block_channel_orderer_orgs_are_per_channel(mcs, orderer):
    mcs.register_channel("peersigned", ["Org2MSP"])
    with pytest.raises(InvalidBlock, match="not an orderer org"):
        mcs.verify_block("peersigned", 5, signed_block(5, orderer).SerializeToString())


def test_verify_block_rejects_garbage_and_unsigned(mcs):
    with pytest.raises(InvalidBlock, match="undecodable"):
        mcs.verify_block(CHANNEL, 0, b"\xff\xff\xff\xff")
    with pytest.raises(InvalidBlock, match="no signature metadata"):
        mcs.verify_block(CHANNEL, 0, new_block(0, b"", []).SerializeToString())


def test_verify_block_rejects_signature_by_invalid_identity(mcs, orderer):
    block = signed_block(3, orderer)
    metadata = common_pb2.Metadata.FromString(block.metadata.metadata[SIGNATURES_INDEX])
    metadata.signatures[0].signature_header = common_pb2.SignatureHeader(creator=b"bogus").SerializeToString()
    block.metadata.metadata[SIGNATURES_INDEX] = metadata.SerializeToString()
    with pytest.raises(InvalidBlock, match="undecodable identity"):
        mcs.verify_block(CHANNEL, 3, block.SerializeToString())
