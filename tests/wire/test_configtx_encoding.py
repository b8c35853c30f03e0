"""Fabric's configtx, policy, MSP and config-value messages: bytes built by hand from the protobuf rules must match.

Field numbers are Fabric v2.2's; a wrong one here would make a config that Fabric reads differently.
"""

from __future__ import annotations

from test_encoding import lfield, vfield

from rumor.wire.pb.common import common_pb2, configtx_pb2, policies_pb2
from rumor.wire.pb.etcdraft import etcdraft_pb2
from rumor.wire.pb.msp import msp_config_pb2, msp_principal_pb2
from rumor.wire.pb.orderer import configuration_pb2 as orderer_pb2
from rumor.wire.pb.peer import configuration_pb2 as peer_pb2


def entry(key: bytes, value: bytes) -> bytes:
    """A protobuf map entry: key field 1, value field 2."""
    return lfield(1, key) + lfield(2, value)


def test_config_envelope_and_groups() -> None:
    value = configtx_pb2.ConfigValue(version=2, value=b"v", mod_policy="Admins")
    value_bytes = vfield(1, 2) + lfield(2, b"v") + lfield(3, b"Admins")
    assert value.SerializeToString() == value_bytes
    policy = configtx_pb2.ConfigPolicy(version=1, policy=policies_pb2.Policy(type=3, value=b"p"), mod_policy="M")
    policy_bytes = vfield(1, 1) + lfield(2, vfield(1, 3) + lfield(2, b"p")) + lfield(3, b"M")
    assert policy.SerializeToString() == policy_bytes
    group = configtx_pb2.ConfigGroup(version=1, mod_policy="Admins")
    group.values["K"].CopyFrom(value)
    group.policies["P"].CopyFrom(policy)
    group.groups["G"].version = 4
    expected = (
        vfield(1, 1)
        + lfield(2, entry(b"G", vfield(1, 4)))
        + lfield(3, entry(b"K", value_bytes))
        + lfield(4, entry(b"P", policy_bytes))
        + lfield(5, b"Admins")
    )
    assert group.SerializeToString(deterministic=True) == expected
    config = configtx_pb2.Config(sequence=3, channel_group=configtx_pb2.ConfigGroup(version=1))
    envelope = configtx_pb2.ConfigEnvelope(config=config, last_update=common_pb2.Envelope(payload=b"u"))
    assert envelope.SerializeToString() == lfield(1, vfield(1, 3) + lfield(2, vfield(1, 1))) + lfield(
        2, lfield(1, b"u")
    )


def test_config_update_messages() -> None:
    update = configtx_pb2.ConfigUpdate(
        channel_id="ch",
        read_set=configtx_pb2.ConfigGroup(version=1),
        write_set=configtx_pb2.ConfigGroup(version=2),
        isolated_data={"x": b"y"},
    )
    expected = lfield(1, b"ch") + lfield(2, vfield(1, 1)) + lfield(3, vfield(1, 2)) + lfield(5, entry(b"x", b"y"))
    assert update.SerializeToString(deterministic=True) == expected
    signature = configtx_pb2.ConfigSignature(signature_header=b"h", signature=b"s")
    update_envelope = configtx_pb2.ConfigUpdateEnvelope(config_update=b"u", signatures=[signature])
    assert update_envelope.SerializeToString() == lfield(1, b"u") + lfield(2, lfield(1, b"h") + lfield(2, b"s"))


def test_policies_and_principals() -> None:
    role = msp_principal_pb2.MSPRole(msp_identifier="Org1MSP", role=msp_principal_pb2.MSPRole.PEER)
    assert role.SerializeToString() == lfield(1, b"Org1MSP") + vfield(2, 3)
    principal = msp_principal_pb2.MSPPrincipal(principal_classification=0, principal=b"r")
    assert principal.SerializeToString() == lfield(2, b"r")  # ROLE is 0: not written
    unit = msp_principal_pb2.OrganizationUnit(
        msp_identifier="M", organizational_unit_identifier="peer", certifiers_identifier=b"c"
    )
    assert unit.SerializeToString() == lfield(1, b"M") + lfield(2, b"peer") + lfield(3, b"c")
    rule = policies_pb2.SignaturePolicy(
        n_out_of=policies_pb2.SignaturePolicy.NOutOf(
            n=1, rules=[policies_pb2.SignaturePolicy(signed_by=0), policies_pb2.SignaturePolicy(signed_by=1)]
        )
    )
    rule_bytes = lfield(2, vfield(1, 1) + lfield(2, vfield(1, 0)) + lfield(2, vfield(1, 1)))
    assert rule.SerializeToString() == rule_bytes
    envelope = policies_pb2.SignaturePolicyEnvelope(version=0, rule=rule, identities=[principal])
    assert envelope.SerializeToString() == lfield(2, rule_bytes) + lfield(3, lfield(2, b"r"))
    meta = policies_pb2.ImplicitMetaPolicy(sub_policy="Admins", rule=policies_pb2.ImplicitMetaPolicy.MAJORITY)
    assert meta.SerializeToString() == lfield(1, b"Admins") + vfield(2, 2)


def test_msp_config() -> None:
    ou = msp_config_pb2.FabricOUIdentifier(certificate=b"C", organizational_unit_identifier="peer")
    ou_bytes = lfield(1, b"C") + lfield(2, b"peer")
    node_ous = msp_config_pb2.FabricNodeOUs(
        enable=True, client_ou_identifier=ou, peer_ou_identifier=ou, admin_ou_identifier=ou, orderer_ou_identifier=ou
    )
    node_ous_bytes = (
        vfield(1, 1) + lfield(2, ou_bytes) + lfield(3, ou_bytes) + lfield(4, ou_bytes) + lfield(5, ou_bytes)
    )
    assert node_ous.SerializeToString() == node_ous_bytes
    crypto = msp_config_pb2.FabricCryptoConfig(signature_hash_family="SHA2", identity_identifier_hash_function="SHA256")
    crypto_bytes = lfield(1, b"SHA2") + lfield(2, b"SHA256")
    fabric = msp_config_pb2.FabricMSPConfig(
        name="Org1MSP",
        root_certs=[b"R"],
        intermediate_certs=[b"I"],
        admins=[b"A"],
        revocation_list=[b"L"],
        organizational_unit_identifiers=[ou],
        crypto_config=crypto,
        tls_root_certs=[b"T"],
        tls_intermediate_certs=[b"U"],
        fabric_node_ous=node_ous,
    )
    expected = (
        lfield(1, b"Org1MSP") + lfield(2, b"R") + lfield(3, b"I") + lfield(4, b"A") + lfield(5, b"L")
        + lfield(7, ou_bytes) + lfield(8, crypto_bytes) + lfield(9, b"T") + lfield(10, b"U")
        + lfield(11, node_ous_bytes)
    )  # fmt: skip
    assert fabric.SerializeToString() == expected
    assert msp_config_pb2.MSPConfig(type=0, config=b"c").SerializeToString() == lfield(2, b"c")


def test_config_values() -> None:
    assert configtx_pb2.HashingAlgorithm(name="SHA256").SerializeToString() == lfield(1, b"SHA256")
    width = configtx_pb2.BlockDataHashingStructure(width=2**32 - 1).SerializeToString()
    assert width == vfield(1, 2**32 - 1)
    assert configtx_pb2.OrdererAddresses(addresses=["a:1", "b:2"]).SerializeToString() == lfield(1, b"a:1") + lfield(
        1, b"b:2"
    )
    assert configtx_pb2.Consortium(name="C").SerializeToString() == lfield(1, b"C")
    capabilities = configtx_pb2.Capabilities(capabilities={"V2_0": configtx_pb2.Capability()})
    assert capabilities.SerializeToString() == lfield(1, entry(b"V2_0", b""))
    batch = orderer_pb2.BatchSize(max_message_count=10, absolute_max_bytes=103809024, preferred_max_bytes=524288)
    assert batch.SerializeToString() == vfield(1, 10) + vfield(2, 103809024) + vfield(3, 524288)
    assert orderer_pb2.BatchTimeout(timeout="2s").SerializeToString() == lfield(1, b"2s")
    consensus = orderer_pb2.ConsensusType(
        type="etcdraft", metadata=b"m", state=orderer_pb2.ConsensusType.STATE_MAINTENANCE
    )
    assert consensus.SerializeToString() == lfield(1, b"etcdraft") + lfield(2, b"m") + vfield(3, 1)
    assert orderer_pb2.ChannelRestrictions(max_count=5).SerializeToString() == vfield(1, 5)
    anchors = peer_pb2.AnchorPeers(anchor_peers=[peer_pb2.AnchorPeer(host="h", port=7051)])
    assert anchors.SerializeToString() == lfield(1, lfield(1, b"h") + vfield(2, 7051))


def test_block_metadata_and_raft() -> None:
    obm = common_pb2.OrdererBlockMetadata(last_config=common_pb2.LastConfig(index=2), consenter_metadata=b"c")
    assert obm.SerializeToString() == lfield(1, vfield(1, 2)) + lfield(2, b"c")
    # The fixture README: block 3's consenter metadata is consenter_ids=[1], next_consenter_id=2, raft_index=5.
    raft = etcdraft_pb2.BlockMetadata(consenter_ids=[1], next_consenter_id=2, raft_index=5)
    assert raft.SerializeToString() == bytes.fromhex("0a010110021805")
    consenter = etcdraft_pb2.Consenter(host="h", port=1, client_tls_cert=b"c", server_tls_cert=b"s")
    assert consenter.SerializeToString() == lfield(1, b"h") + vfield(2, 1) + lfield(3, b"c") + lfield(4, b"s")
    options = etcdraft_pb2.Options(
        tick_interval="500ms", election_tick=10, heartbeat_tick=1, max_inflight_blocks=5, snapshot_interval_size=16
    )
    assert options.SerializeToString() == lfield(1, b"500ms") + vfield(2, 10) + vfield(3, 1) + vfield(4, 5) + vfield(
        5, 16
    )
    assert common_pb2.HeaderType.Value("PEER_ADMIN_OPERATION") == 8
