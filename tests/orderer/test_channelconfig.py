"""Channel configs (Fabric's format) from crypto material, the genesis block round trip, what read_genesis refuses."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from orderer_helpers import CHANNEL, user

from rumor import channelconfig as cc
from rumor.crypto import CertificateAuthority, InvalidIdentity, X509CryptoService, new_block, sign_block
from rumor.wire.pb.common import common_pb2, configtx_pb2
from rumor.wire.pb.msp import msp_config_pb2
from rumor.wire.pb.orderer import configuration_pb2 as orderer_config_pb2
from rumor.wire.pb.peer import configuration_pb2 as peer_config_pb2


def test_org_config_reads_the_msp_directory(material) -> None:
    org = material.org("Org1MSP")
    config = cc.org_config("Org1MSP", org.msp_dir, ["peer0.org1.example.com:7051"])
    assert config.mspid == "Org1MSP"
    assert config.root_certs == (org.ca_cert.read_bytes(),)
    assert config.tls_root_certs == (org.tlsca_cert.read_bytes(),)
    assert list(config.anchor_peers) == ["peer0.org1.example.com:7051"]
    assert list(config.crls) == []
    assert config.node_ous is not None and config.node_ous.admin == "admin"
    assert sorted(config.policies) == ["Admins", "Endorsement", "Readers", "Writers"]


def test_org_config_errors(material, tmp_path: Path) -> None:
    with pytest.raises(cc.ChannelConfigError, match="no such MSP directory"):
        cc.org_config("Org1MSP", tmp_path / "missing")
    (tmp_path / "msp" / "cacerts").mkdir(parents=True)
    with pytest.raises(cc.ChannelConfigError, match="no CA certificate"):
        cc.org_config("Org1MSP", tmp_path / "msp")
    with pytest.raises(cc.ChannelConfigError, match="not a valid MSP ID"):
        cc.org_config("Org 1", material.org("Org1MSP").msp_dir)


def test_genesis_round_trip(channel_config, orderer_identity, tmp_path: Path) -> None:
    block = cc.genesis_block(channel_config, orderer_identity, now=1_700_000_000.5)
    assert block.header.number == 0
    assert block.header.previous_hash == b""
    path = cc.save_block(tmp_path / "channels" / f"{CHANNEL}.block", block)
    raw = cc.load_block(path)
    assert raw == block.SerializeToString(deterministic=True)
    assert cc.read_genesis(raw) == channel_config
    assert cc.read_genesis(block) == channel_config

    opened = cc.open_envelope(block.data.data[0])
    assert opened.channel_header.type == common_pb2.CONFIG
    assert opened.channel_id == CHANNEL
    assert opened.channel_header.timestamp.ToNanoseconds() == 1_700_000_000_500_000_000
    assert opened.creator == orderer_identity.identity
    assert opened.tx_id == ""  # as a Fabric orderer writes its CONFIG envelopes
    # The config transaction is signed by the orderer over the payload bytes.
    registry = cc.org_registry([channel_config])
    mcs = X509CryptoService(orderer_identity, registry)
    mcs.verify(opened.creator, opened.envelope.signature, opened.envelope.payload)


def test_genesis_block_verifies_as_an_orderer_block(material, channel_config, orderer_identity) -> None:
    block = cc.genesis_block(channel_config, orderer_identity)
    peer_side = X509CryptoService(user(material, "Org2MSP"), cc.org_registry([channel_config]))
    peer_side.register_channel(CHANNEL, cc.orderer_mspids(channel_config))
    peer_side.verify_block(CHANNEL, 0, block.SerializeToString())


def test_genesis_must_be_signed_by_an_orderer_org(material, channel_config) -> None:
    with pytest.raises(cc.ChannelConfigError, match="not one of its orderer orgs"):
        cc.genesis_block(channel_config, user(material, "Org1MSP"))


def _block_with(envelopes: list[bytes], signer, number: int = 0, previous: bytes = b"") -> bytes:
    return sign_block(new_block(number, previous, envelopes), signer).SerializeToString()


def test_read_genesis_refusals(channel_config, orderer_identity) -> None:
    good = cc.genesis_block(channel_config, orderer_identity)
    entry = good.data.data[0]

    def refused(raw: bytes, fragment: str) -> None:
        with pytest.raises(cc.ChannelConfigError, match=fragment) as info:
            cc.read_genesis(raw)
        assert "\n" not in str(info.value)

    refused(b"\xff\xff\xff", "not a block")
    refused(_block_with([entry], orderer_identity, number=1, previous=b"x" * 32), "block number 1, expected 0")
    refused(_block_with([entry], orderer_identity, previous=b"x" * 32), "has a previous hash")
    refused(_block_with([entry, entry], orderer_identity), "has 2 envelopes, expected 1")
    refused(_block_with([], orderer_identity), "has 0 envelopes")
    refused(_block_with([b"\xff\x01garbage"], orderer_identity), "not a genesis block: .*does not decode")

    tampered = common_pb2.Block()
    tampered.CopyFrom(good)
    tampered.data.data[0] = entry + b"\x00"
    refused(tampered.SerializeToString(), "data hash does not match")

    transaction = cc.new_envelope(orderer_identity, CHANNEL, common_pb2.ENDORSER_TRANSACTION, b"tx")
    refused(_block_with([transaction.SerializeToString()], orderer_identity), "type ENDORSER_TRANSACTION")

    no_config = cc.new_envelope(orderer_identity, CHANNEL, common_pb2.CONFIG, b"\xff\xff")
    refused(_block_with([no_config.SerializeToString()], orderer_identity), "written by rumor 0.1")

    no_orderer = configtx_pb2.Config()
    no_orderer.CopyFrom(channel_config.config)
    del no_orderer.channel_group.groups["Orderer"]
    unusable = cc.new_envelope(
        orderer_identity, CHANNEL, common_pb2.CONFIG, configtx_pb2.ConfigEnvelope(config=no_orderer).SerializeToString()
    )
    refused(_block_with([unusable.SerializeToString()], orderer_identity), "no Orderer group")


def test_load_block_of_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(cc.ChannelConfigError, match="no such block file"):
        cc.load_block(tmp_path / "nope.block")


def _orderer_group(c: configtx_pb2.Config) -> configtx_pb2.ConfigGroup:
    return c.channel_group.groups["Orderer"]


def _app_org(c: configtx_pb2.Config) -> configtx_pb2.ConfigGroup:
    return c.channel_group.groups["Application"].groups["Org1MSP"]


def _set(group: configtx_pb2.ConfigGroup, key: str, message) -> None:  # type: ignore[no-untyped-def]
    group.values[key].value = message.SerializeToString()


def _corrupt_root_subject(group: configtx_pb2.ConfigGroup) -> None:
    """Org1's CA certificate with invalid UTF-8 in its subject's common name: it loads, its subject does not read."""
    msp = msp_config_pb2.MSPConfig.FromString(group.values["MSP"].value)
    fabric = msp_config_pb2.FabricMSPConfig.FromString(msp.config)
    der = x509.load_pem_x509_certificate(fabric.root_certs[0]).public_bytes(serialization.Encoding.DER)
    name = b"ca.org1.example.com"
    at = der.find(name, der.find(name) + 1)  # the issuer comes first, the subject second
    corrupt = x509.load_der_x509_certificate(der[:at] + b"\xff\xfe" + der[at + 2 :])
    fabric.root_certs[0] = corrupt.public_bytes(serialization.Encoding.PEM)
    msp.config = fabric.SerializeToString()
    _set(group, "MSP", msp)


def _add_admin_cert(group: configtx_pb2.ConfigGroup, pem: bytes) -> None:
    msp = msp_config_pb2.MSPConfig.FromString(group.values["MSP"].value)
    fabric = msp_config_pb2.FabricMSPConfig.FromString(msp.config)
    fabric.admins.append(pem)
    msp.config = fabric.SerializeToString()
    _set(group, "MSP", msp)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda c: c.channel_group.groups["Application"].groups["Org1MSP"].values.pop("MSP"), "has no MSP value"),
        (lambda c: _orderer_group(c).values.pop("BatchSize"), "lacks BatchSize or BatchTimeout"),
        (lambda c: _set(_orderer_group(c), "BatchSize", orderer_config_pb2.BatchSize()), "max_message_count"),
        (
            lambda c: _set(_orderer_group(c), "BatchTimeout", orderer_config_pb2.BatchTimeout(timeout="soon")),
            "'soon' is not a duration",
        ),
        (
            lambda c: _set(
                _orderer_group(c),
                "BatchSize",
                orderer_config_pb2.BatchSize(max_message_count=1, preferred_max_bytes=10, absolute_max_bytes=1),
            ),
            "below preferred_max_bytes",
        ),
        (lambda c: _orderer_group(c).policies.pop("BlockValidation"), "no /Channel/Orderer/BlockValidation"),
        (
            lambda c: _set(
                _app_org(c),
                "AnchorPeers",
                peer_config_pb2.AnchorPeers(anchor_peers=[peer_config_pb2.AnchorPeer(host="h", port=99999)]),
            ),
            "endpoint 'h:99999'",
        ),
        (
            lambda c: _set(c.channel_group, "HashingAlgorithm", configtx_pb2.HashingAlgorithm(name="SHA3")),
            "only SHA256",
        ),
        (
            lambda c: _set(
                c.channel_group,
                "Capabilities",
                configtx_pb2.Capabilities(capabilities={"V9_9": configtx_pb2.Capability()}),
            ),
            r"capabilities rumor does not know: \['V9_9'\]",
        ),
        # Found by fuzzing (tests/fuzz): an admin certificate that is not PEM was accepted here, and then every policy
        # evaluation involving the org (block validation, config updates) raised ValueError.
        (lambda c: _add_admin_cert(_app_org(c), b"not a certificate"), "Org1MSP has a certificate that is not PEM"),
        (lambda c: _add_admin_cert(_orderer_group(c).groups["OrdererMSP"], b""), "certificate that is not PEM"),
        # Found while fuzzing (by reading what a fuzzed config reaches): cryptography reads a certificate's subject
        # only when asked, so this loaded, and matching the org's CRLs to its CAs (org_registry) later raised
        # ValueError.
        (lambda c: _corrupt_root_subject(_app_org(c)), r"Org1MSP has a corrupt certificate: .*subject"),
        (
            # Found by fuzzing: a timeout beyond any float became an infinite one, and the orderer's cutter raised
            # OverflowError on it.
            lambda c: _set(
                _orderer_group(c), "BatchTimeout", orderer_config_pb2.BatchTimeout(timeout="1" + "0" * 400 + "s")
            ),
            "longer than a Go duration",
        ),
        (lambda c: setattr(_app_org(c).policies["Readers"].policy, "value", b"\xff"), "does not decode"),
        (lambda c: setattr(_app_org(c).policies["Readers"].policy, "type", 2), "policy type 2 is not supported"),
    ],
)
def test_parse_config_refusals(channel_config, change, fragment: str) -> None:
    config = configtx_pb2.Config()
    config.CopyFrom(channel_config.config)
    change(config)
    with pytest.raises(cc.ChannelConfigError, match=fragment):
        cc.parse_config(config, CHANNEL)


def test_batch_timeout_is_read_in_time_linear_in_its_length() -> None:
    # Found by fuzzing: the reader searched for duration terms anywhere in the text, backtracking over a run of
    # digits from each of its positions; 20,000 digits took 17 s, 100,000 would take minutes. The bound here is
    # hundreds of times what reading them takes now.
    for text in ("9" * 100_000, "9" * 100_000 + "s", "1s" * 50_000 + "x"):
        started = time.perf_counter()
        with pytest.raises(cc.ChannelConfigError):
            cc.parse_duration(text)
        assert time.perf_counter() - started < 1.0
    assert cc.parse_duration("1m30s") == 90.0
    assert cc.parse_duration("2000000h") == 7.2e9  # within Go's time.Duration


def test_channel_names_follow_fabric(channel_config) -> None:
    for bad in ("Bad_Name", "", "9lives"):
        with pytest.raises(cc.ChannelConfigError, match="is not valid"):
            cc.parse_config(channel_config.config, bad)


def test_org_registry_validates_members_and_orderers(material, channel_config, orderer_identity) -> None:
    registry = cc.org_registry([channel_config])
    assert registry.mspids == {"Org1MSP", "Org2MSP", "OrdererMSP"}
    registry.validate(user(material, "Org1MSP").identity)
    registry.validate(orderer_identity.identity)
    with pytest.raises(InvalidIdentity, match="unknown MSP ID"):
        registry.validate(user(material, "Org3MSP").identity)


def test_org_registry_merges_channels_and_refuses_conflicts(material, channel_config, slow_channel_config) -> None:
    assert cc.org_registry([channel_config, slow_channel_config]).mspids == {"Org1MSP", "Org2MSP", "OrdererMSP"}
    orderer_org = material.orderer_orgs[0]
    impostor = cc.org_config("Org1MSP", material.org("Org2MSP").msp_dir)
    conflicting = cc.channel_config(
        "conflicting", [impostor], [cc.orderer_org_config(orderer_org.mspid, orderer_org.msp_dir, [])]
    )
    with pytest.raises(cc.ChannelConfigError, match="Org1MSP is defined differently in channels"):
        cc.org_registry([channel_config, conflicting])


def test_crls_travel_in_the_config_and_revoke(material, tmp_path: Path) -> None:
    org = material.org("Org1MSP")
    revoked = user(material, "Org1MSP")
    ca = CertificateAuthority.load(org.ca_cert, org.ca_key)
    now = dt.datetime.now(dt.UTC)
    crl = ca.issue_crl(
        [revoked.certificate.serial_number],
        last_update=now - dt.timedelta(minutes=1),
        next_update=now + dt.timedelta(days=1),
    )
    msp = tmp_path / "msp"
    (msp / "cacerts").mkdir(parents=True)
    (msp / "cacerts" / "ca.pem").write_bytes(org.ca_cert.read_bytes())
    (msp / "crls").mkdir()
    (msp / "crls" / "crl.pem").write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    orderer_org = material.orderer_orgs[0]
    config = cc.channel_config(
        "crlchannel",
        [cc.org_config("Org1MSP", msp)],
        [cc.orderer_org_config(orderer_org.mspid, orderer_org.msp_dir, [])],
    )
    assert len(config.orgs[0].crls) == 1
    registry = cc.org_registry([config])
    with pytest.raises(InvalidIdentity, match="revoked"):
        registry.validate(revoked.identity)
    registry.validate(user(material, "Org1MSP", "Admin").identity)
