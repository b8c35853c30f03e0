from __future__ import annotations

import hashlib

import pytest

from rumor.crypto import (
    CheapCryptoService,
    CheapRegistry,
    InvalidBlock,
    InvalidIdentity,
    InvalidSignature,
    MessageCryptoService,
    SecurityAdvisor,
    decode_identity,
    new_block,
    sign_block,
)

CHANNEL = "mychannel"


@pytest.fixture
def clock() -> list[float]:
    return [1000.0]


@pytest.fixture
def registry(clock) -> CheapRegistry:
    registry = CheapRegistry(now=lambda: clock[0])
    registry.register_channel(CHANNEL, ["OrdererMSP"])
    return registry


@pytest.fixture
def alice(registry) -> CheapCryptoService:
    return CheapCryptoService.for_peer("Org1MSP", "peer0", registry)


@pytest.fixture
def bob(registry) -> CheapCryptoService:
    return CheapCryptoService.for_peer("Org2MSP", "peer0", registry)


@pytest.fixture
def orderer(registry) -> CheapCryptoService:
    return CheapCryptoService.for_peer("OrdererMSP", "orderer", registry)


def test_implements_both_interfaces(alice):
    assert isinstance(alice, MessageCryptoService)
    assert isinstance(alice, SecurityAdvisor)


def test_identities_are_serialized_identities_with_real_pki_ids(alice, bob):
    mspid, id_bytes = decode_identity(alice.identity)
    assert (mspid, id_bytes) == ("Org1MSP", b"cheap:peer0")
    assert alice.pki_id == hashlib.sha256(b"Org1MSPcheap:peer0").digest() == bob.pki_id_of(alice.identity)
    assert alice.pki_id != bob.pki_id  # same name, other org
    assert bob.org_of(alice.identity) == b"Org1MSP"


def test_sign_verify_round_trip_and_determinism(alice, bob):
    signature = alice.sign(b"alive")
    assert signature == alice.sign(b"alive")
    bob.verify(alice.identity, signature, b"alive")


def test_tampered_message_rejected(alice, bob):
    with pytest.raises(InvalidSignature):
        bob.verify(alice.identity, alice.sign(b"alive"), b"alive, tampered")


def test_signature_claimed_by_another_identity_rejected(alice, bob, registry):
    mallory = CheapCryptoService.for_peer("Org1MSP", "peer1", registry)
    with pytest.raises(InvalidSignature):
        bob.verify(alice.identity, mallory.sign(b"alive"), b"alive")


def test_revoked_identity_rejected(alice, bob, registry):
    signature = alice.sign(b"alive")
    registry.revoke(alice.identity)
    with pytest.raises(InvalidIdentity, match="revoked"):
        bob.verify(alice.identity, signature, b"alive")
    with pytest.raises(InvalidIdentity, match="revoked"):
        bob.validate_identity(alice.identity)


def test_expiry_follows_the_injected_clock(alice, bob, registry, clock):
    assert bob.expiration(alice.identity) is None
    registry.set_expiration(alice.identity, 1500.0)
    assert bob.expiration(alice.identity) == 1500.0
    bob.validate_identity(alice.identity)
    clock[0] = 1500.0
    with pytest.raises(InvalidIdentity, match="expired"):
        bob.validate_identity(alice.identity)
    registry.set_expiration(alice.identity, None)
    bob.validate_identity(alice.identity)


def test_unknown_or_unenrolled_identities_rejected(bob, registry):
    with pytest.raises(InvalidIdentity, match="not issued by Org2MSP"):
        bob.validate_identity(CheapRegistry.identity_of("Org2MSP", "ghost"))
    with pytest.raises(InvalidIdentity, match="unknown MSP ID"):
        bob.validate_identity(CheapRegistry.identity_of("Org9MSP", "ghost"))
    with pytest.raises(InvalidIdentity, match="undecodable"):
        bob.validate_identity(b"\xff")
    with pytest.raises(InvalidIdentity):
        CheapCryptoService(registry, CheapRegistry.identity_of("Org1MSP", "ghost"))


def test_registries_do_not_trust_each_other(alice):
    stranger = CheapRegistry(secret=b"another network")
    stranger.enroll("Org1MSP", "peer0")
    verifier = CheapCryptoService.for_peer("Org2MSP", "peer0", stranger)
    with pytest.raises(InvalidSignature):
        verifier.verify(alice.identity, alice.sign(b"m"), b"m")


def block(number: int, signer, data=(b"tx",)) -> bytes:
    return sign_block(new_block(number, b"", list(data)), signer, nonce=b"").SerializeToString()


def test_verify_block(alice, orderer, bob):
    alice.verify_block(CHANNEL, 1, block(1, orderer))
    with pytest.raises(InvalidBlock, match="expected 2"):
        alice.verify_block(CHANNEL, 2, block(1, orderer))
    with pytest.raises(InvalidBlock, match="not an orderer org"):
        alice.verify_block(CHANNEL, 1, block(1, bob))
    with pytest.raises(InvalidBlock, match="unknown channel"):
        alice.verify_block("other", 1, block(1, orderer))
    with pytest.raises(InvalidBlock, match="undecodable"):
        alice.verify_block(CHANNEL, 1, b"\xff\xff")


def test_verify_block_rejects_tampering(alice, orderer):
    good = new_block(1, b"", [b"tx"])
    sign_block(good, orderer, nonce=b"")
    tampered_data = type(good).FromString(good.SerializeToString())
    tampered_data.data.data[0] = b"evil"
    with pytest.raises(InvalidBlock, match="data hash"):
        alice.verify_block(CHANNEL, 1, tampered_data.SerializeToString())
    tampered_header = type(good).FromString(good.SerializeToString())
    tampered_header.header.previous_hash = b"x"
    with pytest.raises(InvalidBlock, match="does not verify"):
        alice.verify_block(CHANNEL, 1, tampered_header.SerializeToString())


def test_revoked_orderer_blocks_rejected(alice, orderer, registry):
    registry.revoke(orderer.identity)
    with pytest.raises(InvalidBlock, match="revoked"):
        alice.verify_block(CHANNEL, 1, block(1, orderer))


def test_per_peer_channel_registration_overrides_registry(alice, orderer, registry):
    alice.register_channel(CHANNEL, [])
    with pytest.raises(InvalidBlock, match="not an orderer org"):
        alice.verify_block(CHANNEL, 1, block(1, orderer))
    alice.register_channel("private", ["OrdererMSP"])
    alice.verify_block("private", 1, block(1, orderer))


def test_many_peers_share_one_registry(registry):
    services = [CheapCryptoService.for_peer(f"Org{i % 4}MSP", f"peer{i}", registry) for i in range(1000)]
    assert len({s.pki_id for s in services}) == 1000
    services[0].verify(services[999].identity, services[999].sign(b"x"), b"x")
