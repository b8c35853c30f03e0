"""rumor reads a real Fabric channel: its config, its policies, its config updates and its blocks' signatures."""

from __future__ import annotations

import pytest
from fabric_fixture import CHANNEL, FABRIC, HEADER_HASHES, HEIGHT, block_bytes, crypto_service, identity

from rumor import channelconfig as cc
from rumor import channelspec, configtx
from rumor.crypto import InvalidBlock
from rumor.crypto.blocks import block_header_hash, decode_block
from rumor.policies import SignedData
from rumor.wire.pb.common import common_pb2, configtx_pb2


def test_every_block_parses_and_chains() -> None:
    previous = b""
    for number in range(HEIGHT):
        block = decode_block(block_bytes(number))
        assert block.header.number == number
        assert block.header.previous_hash == previous
        previous = block_header_hash(block.header)
        assert previous.hex() == HEADER_HASHES[number]
        assert cc.is_config_block(block) == (number <= 2)
        for data in block.data.data:
            assert cc.open_envelope(data, require_creator=False).channel_id == CHANNEL


def test_genesis_config_values(genesis_config: cc.ChannelConfig) -> None:
    config = genesis_config
    assert config.name == CHANNEL and config.sequence == 1
    assert [o.mspid for o in config.orgs] == ["Org1MSP", "Org2MSP"]
    assert [o.mspid for o in config.orderer_orgs] == ["OrdererMSP"]
    assert config.batch == cc.BatchSettings(10, 524288, 103809024, 2.0)
    assert config.consensus_type == "etcdraft"
    assert config.orderer_endpoints == ["127.0.0.1:17050"] and config.orderer_addresses == ()
    assert config.capabilities == cc.Capabilities(frozenset({"V2_0"}), frozenset({"V2_0"}), frozenset({"V2_0"}))
    assert config.consortium == "SampleConsortium"
    assert config.anchor_peers == {"Org1MSP": [], "Org2MSP": []}
    org1 = config.org("Org1MSP")
    assert org1 is not None and org1.node_ous is not None
    assert (org1.node_ous.client, org1.node_ous.peer, org1.node_ous.admin) == ("client", "peer", "admin")
    assert len(org1.root_certs) == 1 and len(org1.tls_root_certs) == 1 and org1.admins == ()
    described = {path: config.policies.describe(path) for path in config.policies.policies}
    assert described["/Channel/Readers"] == "ANY Readers"
    assert described["/Channel/Admins"] == "MAJORITY Admins"
    assert described["/Channel/Orderer/BlockValidation"] == "ANY Writers"
    assert described["/Channel/Application/Org1MSP/Readers"] == "OR('Org1MSP.admin', 'Org1MSP.peer', 'Org1MSP.client')"
    assert described["/Channel/Application/Org2MSP/Writers"] == "OR('Org2MSP.admin', 'Org2MSP.client')"
    assert described["/Channel/Application/Org1MSP/Endorsement"] == "OR('Org1MSP.peer')"
    assert described["/Channel/Orderer/OrdererMSP/Writers"] == "OR('OrdererMSP.member')"
    assert described["/Channel/Application/LifecycleEndorsement"] == "MAJORITY Endorsement"
    assert len(described) == 23


def _signed(signer, data: bytes = b"x") -> SignedData:  # type: ignore[no-untyped-def]
    return SignedData(data, signer.identity, signer.sign(data))


def test_policies_evaluate_by_role(genesis_config: cc.ChannelConfig) -> None:
    mcs = crypto_service(genesis_config)
    resolver = mcs.resolver(CHANNEL)
    tree = genesis_config.policies
    admin1, user1, peer1, admin2 = (
        identity("org1", "Admin"),
        identity("org1", "User1"),
        identity("org1", "peer0"),
        identity("org2", "Admin"),
    )
    assert tree.satisfied("/Channel/Application/Org1MSP/Readers", [_signed(peer1)], resolver)
    assert not tree.satisfied("/Channel/Application/Org1MSP/Writers", [_signed(peer1)], resolver)
    assert tree.satisfied("/Channel/Application/Org1MSP/Writers", [_signed(user1)], resolver)
    assert tree.satisfied("/Channel/Application/Readers", [_signed(peer1)], resolver)  # ANY of the orgs
    # MAJORITY of two orgs' admins needs both
    assert not tree.satisfied("/Channel/Application/Admins", [_signed(admin1)], resolver)
    assert tree.satisfied("/Channel/Application/Admins", [_signed(admin1), _signed(admin2)], resolver)
    # a signature that does not verify counts for nothing
    forged = SignedData(b"x", admin2.identity, admin1.sign(b"x"))
    assert not tree.satisfied("/Channel/Application/Admins", [_signed(admin1), forged], resolver)
    # the orderer org's members write the orderer group; an application org's do not
    assert not tree.satisfied("/Channel/Orderer/Writers", [_signed(user1)], resolver)


def test_anchor_peer_updates_apply(genesis_config: cc.ChannelConfig) -> None:
    config = genesis_config
    expected = [
        {"Org1MSP": ["127.0.0.1:17051", "127.0.0.1:17052"], "Org2MSP": []},
        {"Org1MSP": ["127.0.0.1:17051", "127.0.0.1:17052"], "Org2MSP": ["127.0.0.1:17061"]},
    ]
    for number in (1, 2):
        opened = cc.config_block_envelope(decode_block(block_bytes(number)))
        assert opened is not None
        config = configtx.apply_config_envelope(
            config, cc.read_config_envelope(opened), crypto_service(config).resolver(CHANNEL)
        )
        assert config.sequence == number + 1
        assert config.anchor_peers == expected[number - 1]
    assert cc.read_config_block(block_bytes(2)) == config


def _update_of(number: int) -> tuple[configtx_pb2.ConfigEnvelope, configtx_pb2.ConfigUpdateEnvelope]:
    opened = cc.config_block_envelope(decode_block(block_bytes(number)))
    assert opened is not None
    envelope = cc.read_config_envelope(opened)
    update = configtx_pb2.ConfigUpdateEnvelope.FromString(
        common_pb2.Payload.FromString(envelope.last_update.payload).data
    )
    return envelope, update


def _with_update(envelope: configtx_pb2.ConfigEnvelope, update: configtx_pb2.ConfigUpdateEnvelope):  # type: ignore[no-untyped-def]
    payload = common_pb2.Payload.FromString(envelope.last_update.payload)
    payload.data = update.SerializeToString()
    changed = configtx_pb2.ConfigEnvelope()
    changed.CopyFrom(envelope)
    changed.last_update.payload = payload.SerializeToString()
    return changed


def _signature(signer, config_update: bytes) -> configtx_pb2.ConfigSignature:  # type: ignore[no-untyped-def]
    header = common_pb2.SignatureHeader(creator=signer.identity, nonce=b"n" * 24).SerializeToString()
    return configtx_pb2.ConfigSignature(signature_header=header, signature=signer.sign(header + config_update))


@pytest.mark.parametrize(
    ("signers", "fragment"),
    [
        (
            ("org2", "Admin"),
            "changing \\[Group\\] /Channel/Application/Org1MSP needs /Channel/Application/Org1MSP/Admins",
        ),
        (("org1", "User1"), "is not satisfied"),
        (None, "by no signature"),
    ],
)
def test_config_update_signed_by_the_wrong_identity_is_refused(genesis_config, signers, fragment) -> None:  # type: ignore[no-untyped-def]
    envelope, update = _update_of(1)
    del update.signatures[:]
    if signers is not None:
        update.signatures.append(_signature(identity(*signers), update.config_update))
    with pytest.raises(configtx.ConfigUpdateError, match=fragment):
        configtx.apply_config_envelope(
            genesis_config, _with_update(envelope, update), crypto_service(genesis_config).resolver(CHANNEL)
        )
    # the right admin's signature, made here, is accepted
    del update.signatures[:]
    update.signatures.append(_signature(identity("org1", "Admin"), update.config_update))
    result = configtx.apply_config_envelope(
        genesis_config, _with_update(envelope, update), crypto_service(genesis_config).resolver(CHANNEL)
    )
    assert result.anchor_peers["Org1MSP"] == ["127.0.0.1:17051", "127.0.0.1:17052"]


def test_config_updates_out_of_order_or_tampered_are_refused(genesis_config) -> None:  # type: ignore[no-untyped-def]
    resolver = crypto_service(genesis_config).resolver(CHANNEL)
    envelope, _ = _update_of(2)
    with pytest.raises(configtx.ConfigUpdateError, match="config sequence 3, expected 2"):
        configtx.apply_config_envelope(genesis_config, envelope, resolver)
    envelope, _ = _update_of(1)
    altered = configtx_pb2.ConfigEnvelope()
    altered.CopyFrom(envelope)
    org2 = altered.config.channel_group.groups["Application"].groups["Org2MSP"]
    org2.values["AnchorPeers"].value = b""  # a change the signed update does not make
    with pytest.raises(configtx.ConfigUpdateError, match="does not produce the configuration"):
        configtx.apply_config_envelope(genesis_config, altered, resolver)


def test_every_block_signature_verifies_under_block_validation(genesis_config) -> None:  # type: ignore[no-untyped-def]
    mcs = crypto_service(genesis_config)
    for number in range(1, HEIGHT):
        mcs.verify_block(CHANNEL, number, block_bytes(number))
        assert cc.last_config_index(decode_block(block_bytes(number))) == min(number, 2)


def _mutations(block: common_pb2.Block):  # type: ignore[no-untyped-def]
    """Every copy of ``block`` with one byte of its header, data or signature metadata changed."""

    def flipped(data: bytes, index: int) -> bytes:
        return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]

    for field in ("previous_hash", "data_hash"):
        value = getattr(block.header, field)
        for i in range(len(value)):
            copy = common_pb2.Block()
            copy.CopyFrom(block)
            setattr(copy.header, field, flipped(value, i))
            yield f"header.{field}[{i}]", copy
    copy = common_pb2.Block()
    copy.CopyFrom(block)
    copy.header.number += 1
    yield "header.number", copy
    for e, entry in enumerate(block.data.data):
        for i in range(len(entry)):
            copy = common_pb2.Block()
            copy.CopyFrom(block)
            copy.data.data[e] = flipped(entry, i)
            yield f"data[{e}][{i}]", copy
    signatures = block.metadata.metadata[0]
    for i in range(len(signatures)):
        copy = common_pb2.Block()
        copy.CopyFrom(block)
        copy.metadata.metadata[0] = flipped(signatures, i)
        yield f"metadata[SIGNATURES][{i}]", copy


@pytest.mark.parametrize("number", range(1, HEIGHT))
def test_any_changed_byte_is_refused(genesis_config, number: int) -> None:  # type: ignore[no-untyped-def]
    mcs = crypto_service(genesis_config)
    block = decode_block(block_bytes(number))
    count = 0
    for where, mutated in _mutations(block):
        with pytest.raises(InvalidBlock):
            mcs.verify_block(CHANNEL, number, mutated.SerializeToString())
            pytest.fail(f"block {number} with {where} changed was accepted")
        count += 1
    assert count > 500


def test_a_block_of_mychannel_offered_as_another_channels_is_refused(genesis_config) -> None:  # type: ignore[no-untyped-def]
    mcs = crypto_service(genesis_config)
    other = cc.parse_config(genesis_config.config, "otherchannel")  # same orgs and orderer, other name
    mcs.register_channel_config(other)
    for number in range(1, HEIGHT):
        with pytest.raises(InvalidBlock, match="is for channel 'mychannel', not 'otherchannel'"):
            mcs.verify_block("otherchannel", number, block_bytes(number))


def _without_versions(group: configtx_pb2.ConfigGroup) -> configtx_pb2.ConfigGroup:
    copy = configtx_pb2.ConfigGroup()
    copy.CopyFrom(group)

    def strip(g: configtx_pb2.ConfigGroup) -> None:
        g.version = 0
        for item in (*g.values.values(), *g.policies.values()):
            item.version = 0
        for sub in g.groups.values():
            strip(sub)

    strip(copy)
    return copy


def test_genesis_writer_reproduces_the_fixture_config(genesis_config) -> None:  # type: ignore[no-untyped-def]
    ours = channelspec.load_profile(FABRIC / "configtx.yaml", "MyChannel", CHANNEL, orderer_profile="SystemChannel")
    # Versions differ by history (the orderer made block 0 from a creation transaction); every value, policy,
    # group and mod_policy must be the same, byte for byte.
    assert _without_versions(ours.config.channel_group) == _without_versions(genesis_config.config.channel_group)
    block = cc.genesis_block(ours)
    assert cc.read_genesis(block.SerializeToString()) == ours


def test_configtxgens_unsigned_system_genesis_reads_but_cannot_be_joined() -> None:
    raw = (FABRIC / "blocks" / "system-genesis.block").read_bytes()
    block = decode_block(raw)
    opened = cc.config_block_envelope(block)
    assert opened is not None and opened.creator == b"" and opened.envelope.signature == b""
    config = cc.read_config_block(raw)
    assert config.name == "system-channel" and [o.mspid for o in config.orderer_orgs] == ["OrdererMSP"]
    assert config.orgs == () and cc.last_config_index(block) == 0
    assert block_header_hash(block.header).hex() == "2d65684d4a8bf473f467a039d78795d25e9817ab23be20bc9d6b5fde2eeae72e"
    with pytest.raises(cc.ChannelConfigError, match="no application org"):
        cc.read_genesis(raw)


def test_a_genesis_block_of_rumor_0_1_is_refused_with_a_way_out() -> None:
    # rumor 0.1 put its own ChannelConfig{name = 1, orgs = 2, ...} where Fabric has a ConfigEnvelope
    old_config = b"\x0a\x09mychannel\x12\x09\x0a\x07Org1MSP"
    payload = common_pb2.Payload(
        header=common_pb2.Header(
            channel_header=common_pb2.ChannelHeader(type=common_pb2.CONFIG, channel_id=CHANNEL).SerializeToString(),
            signature_header=common_pb2.SignatureHeader(creator=b"c", nonce=b"n").SerializeToString(),
        ),
        data=old_config,
    )
    from rumor.crypto.blocks import new_block

    block = new_block(0, b"", [common_pb2.Envelope(payload=payload.SerializeToString()).SerializeToString()])
    with pytest.raises(cc.ChannelConfigError, match=r"written by rumor 0\.1.*recreate the channel") as info:
        cc.read_genesis(block.SerializeToString())
    assert "\n" not in str(info.value)
