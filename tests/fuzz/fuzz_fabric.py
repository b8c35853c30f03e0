"""Fuzz targets for Fabric's formats as rumor reads them from the network: blocks and their orderer signatures,
config blocks, config updates, policies, and X.509 identities.

The material is real: rumor's own generator makes the MSPs of Org1, Org2 and an orderer org once per process;
a channel's genesis block, a chain of transaction blocks and a config update (Org1's admin moving its anchor
peer) are built from it and checked to be accepted before any mutation. When the Fabric fixture lies beside the
repository (../shared/fabric), its blocks, made by Fabric's own tools, are seeds too.

Each target names the errors its code documents for bad input; anything else escaping is a crash.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import functools
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtensionOID, NameOID
from fuzz_common import check
from fuzz_mutate import Chooser, Mutator, chance, harvest, mutate_bytes, mutate_pem, pick, text, weighted
from google.protobuf.message import DecodeError

from rumor import channelconfig as cc
from rumor import configtx
from rumor.core.identity import IdentityError, IdentityMapper
from rumor.crypto import CertificateAuthority, X509CryptoService, default_spec, generate, load_signing_identity
from rumor.crypto.api import CryptoError, InvalidBlock
from rumor.crypto.blocks import (
    block_data_hash,
    block_header_hash,
    block_signatures,
    header_bytes,
    new_block,
    open_block,
    sign_block,
)
from rumor.crypto.cheap import CheapCryptoService, CheapRegistry
from rumor.crypto.identity import SigningIdentity, serialize_identity
from rumor.ledger.store import LedgerError, check_chain
from rumor.orderer.cutter import BatchSettings
from rumor.policies import PolicyError, PolicyTree, SignedData, parse_implicit_meta_rule, parse_signature_rule
from rumor.wire.pb.common import common_pb2, configtx_pb2
from rumor.wire.pb.msp import identities_pb2
from rumor.wire.pb.peer import configuration_pb2 as peer_config_pb2

CHANNEL = "fuzzchannel"
FABRIC = Path(__file__).resolve().parents[3] / "shared" / "fabric"
"""The Fabric fixture (optional seeds): where tests/fabric looks for it too."""


@dataclass
class Material:
    """Everything the Fabric-format targets start from."""

    config: cc.ChannelConfig
    genesis: bytes
    genesis_unsigned: bytes
    chain: list[bytes]  # genesis, then transaction blocks
    update_block: bytes  # block 1 of another history: a config update
    update: configtx_pb2.ConfigEnvelope
    orderer: SigningIdentity
    peer: SigningIdentity
    admins: list[SigningIdentity]
    users: list[SigningIdentity]
    cas: list[CertificateAuthority]
    mcs: X509CryptoService
    fabric: list[tuple[cc.ChannelConfig, X509CryptoService, list[bytes]]]  # (genesis config, its service, blocks)

    @property
    def signers(self) -> list[SigningIdentity]:
        return [self.orderer, self.peer, *self.admins, *self.users]


@functools.cache
def material() -> Material:
    root = Path(tempfile.mkdtemp(prefix="rumor-fuzz-"))
    atexit.register(shutil.rmtree, root, True)
    generated = generate(default_spec(2, 1), root / "crypto")
    orgs, orderer_org = generated.peer_orgs, generated.orderer_orgs[0]
    # A CRL in Org2's MSP (revoking a serial nobody has), so that configs carry one for the mutations to work on.
    org2_ca = CertificateAuthority.load(orgs[1].ca_cert, orgs[1].ca_key)
    now = dt.datetime.now(dt.UTC)
    crl = org2_ca.issue_crl([12345], last_update=now - dt.timedelta(hours=1), next_update=now + dt.timedelta(days=1))
    (orgs[1].msp_dir / "crls").mkdir(exist_ok=True)
    (orgs[1].msp_dir / "crls" / "crl.pem").write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    config = cc.channel_config(
        CHANNEL,
        [cc.org_config(o.mspid, o.msp_dir, [f"{o.nodes[0].host}:7051"]) for o in orgs],
        [cc.orderer_org_config(orderer_org.mspid, orderer_org.msp_dir, ["127.0.0.1:7050"])],
        cc.batch_config(),
    )
    orderer = load_signing_identity(orderer_org.nodes[0].msp_dir, orderer_org.mspid)
    peer = load_signing_identity(orgs[0].nodes[0].msp_dir, orgs[0].mspid)
    admins = [load_signing_identity(o.admin.msp_dir, o.mspid) for o in orgs]
    users = [load_signing_identity(o.users[1].msp_dir, o.mspid) for o in orgs if len(o.users) > 1]
    cas = [CertificateAuthority.load(o.ca_cert, o.ca_key) for o in (*orgs, orderer_org)]
    genesis = cc.genesis_block(config, orderer, now=1.7e9)
    mcs = X509CryptoService(peer, cc.org_registry([config]))
    mcs.register_channel_config(config)
    chain = [genesis.SerializeToString()]
    previous = block_header_hash(genesis.header)
    for number in range(1, 4):
        envelopes = [
            cc.new_envelope(
                signer, CHANNEL, common_pb2.ENDORSER_TRANSACTION, b"tx %d" % i, now=1.7e9
            ).SerializeToString()
            for i, signer in enumerate((users or admins)[: 1 + number % 2])
        ]
        block = new_block(number, previous, envelopes)
        sign_block(block, orderer, value=cc.orderer_block_metadata(0))
        chain.append(block.SerializeToString())
        previous = block_header_hash(block.header)
    update = _anchor_update(config, admins[0], "peer0.org1.example.com:7061")
    configtx.apply_config_envelope(config, update, mcs.resolver(CHANNEL))  # the seed itself must be accepted
    update_block = _config_block(update, orderer, 1, block_header_hash(genesis.header))
    fabric = _fabric_fixture()
    return Material(
        config=config,
        genesis=chain[0],
        genesis_unsigned=cc.genesis_block(config, now=1.7e9).SerializeToString(),
        chain=chain,
        update_block=update_block,
        update=update,
        orderer=orderer,
        peer=peer,
        admins=admins,
        users=users,
        cas=cas,
        mcs=mcs,
        fabric=fabric,
    )


def _fabric_fixture() -> list[tuple[cc.ChannelConfig, X509CryptoService, list[bytes]]]:
    blocks_dir = FABRIC / "blocks" / "mychannel"
    if not blocks_dir.is_dir():
        return []
    blocks = [p.read_bytes() for p in sorted(blocks_dir.glob("*.block"), key=lambda p: int(p.stem))]
    genesis = cc.read_genesis(blocks[0])
    peer_msp = FABRIC / "crypto" / "peerOrganizations" / "org1.example.com" / "peers" / "peer0.org1.example.com" / "msp"
    mcs = X509CryptoService(load_signing_identity(peer_msp, "Org1MSP"), cc.org_registry([genesis]))
    mcs.register_channel_config(genesis)
    return [(genesis, mcs, blocks)]


def _anchor_update(config: cc.ChannelConfig, admin: SigningIdentity, anchor: str) -> configtx_pb2.ConfigEnvelope:
    """A config update as ``peer channel update`` makes one: Org1's admin sets its anchor peer."""
    mspid = config.orgs[0].mspid
    current = config.config
    org = current.channel_group.groups["Application"].groups[mspid]
    host, port = anchor.rsplit(":", 1)
    value = configtx_pb2.ConfigValue()
    value.CopyFrom(org.values["AnchorPeers"])
    value.version += 1
    value.value = peer_config_pb2.AnchorPeers(
        anchor_peers=[peer_config_pb2.AnchorPeer(host=host, port=int(port))]
    ).SerializeToString()

    def skeleton() -> configtx_pb2.ConfigGroup:
        group = configtx_pb2.ConfigGroup(version=current.channel_group.version)
        application = group.groups["Application"]
        application.version = current.channel_group.groups["Application"].version
        application.groups[mspid].version = org.version
        return group

    read_set, write_set = skeleton(), skeleton()
    write_set.groups["Application"].groups[mspid].values["AnchorPeers"].CopyFrom(value)
    update = configtx_pb2.ConfigUpdate(channel_id=config.name, read_set=read_set, write_set=write_set)
    new_config = configtx_pb2.Config()
    new_config.CopyFrom(current)
    new_config.sequence += 1
    new_config.channel_group.groups["Application"].groups[mspid].values["AnchorPeers"].CopyFrom(value)
    envelope = configtx_pb2.ConfigEnvelope(config=new_config)
    _sign_update(envelope, update.SerializeToString(), [admin], admin)
    return envelope


def _sign_update(
    envelope: configtx_pb2.ConfigEnvelope, config_update: bytes, signers: list[SigningIdentity], submitter: Any
) -> None:
    """Put ``config_update`` into ``envelope.last_update``, signed by ``signers``, submitted by ``submitter``."""
    signatures = []
    for signer in signers:
        header = common_pb2.SignatureHeader(creator=signer.identity, nonce=b"n" * 24).SerializeToString()
        signatures.append(
            configtx_pb2.ConfigSignature(signature_header=header, signature=signer.sign(header + config_update))
        )
    update_envelope = configtx_pb2.ConfigUpdateEnvelope(config_update=config_update, signatures=signatures)
    envelope.last_update.CopyFrom(
        cc.new_envelope(submitter, CHANNEL, common_pb2.CONFIG_UPDATE, update_envelope.SerializeToString(), now=1.7e9)
    )


def _config_block(
    envelope: configtx_pb2.ConfigEnvelope, orderer: SigningIdentity, number: int, previous: bytes
) -> bytes:
    data = cc.new_envelope(orderer, CHANNEL, common_pb2.CONFIG, envelope.SerializeToString(), tx_id=False, now=1.7e9)
    block = new_block(number, previous, [data.SerializeToString()])
    sign_block(block, orderer, value=cc.orderer_block_metadata(number))
    return block.SerializeToString()


def _mutated_block(c: Chooser, raw: bytes, dictionary: list[bytes], orderer: Any) -> tuple[bytes, bool]:
    """A mutation of block ``raw``; with fix-ups so that some get past the cheap checks: the data hash made to
    match again, the orderer's signature made again (True: re-signed)."""
    if chance(c, 25):
        return mutate_bytes(c, raw, dictionary), False
    block = common_pb2.Block.FromString(raw)
    Mutator(c, dictionary).mutate(block, 1 + c.below(4))
    if chance(c, 60):
        block.header.data_hash = block_data_hash(block.data)
    resigned = False
    if chance(c, 35):
        del block.metadata.metadata[:]
        sign_block(block, orderer, value=pick(c, (b"", cc.orderer_block_metadata(0), c.raw(8))), nonce=b"n" * 24)
        resigned = True
    return block.SerializeToString(), resigned


class BlockTarget:
    """A block from a peer or an orderer: ``open_block``, ``block_signatures``, ``verify_block`` of the X.509
    service (under the channel's BlockValidation policy, and by orderer org alone) and of the cheap one, the
    ledger's ``check_chain``, and the config-block probes a peer runs on every block it commits. Refusals are
    InvalidBlock / CryptoError and LedgerError; the probes return None rather than raise."""

    name = "block"

    def __init__(self, seed: int) -> None:
        m = self.m = material()
        self.seeds = [*m.chain, m.update_block, m.genesis_unsigned] + [b for _, _, blocks in m.fabric for b in blocks]
        self.headers = {header_bytes(common_pb2.Block.FromString(raw).header) for raw in self.seeds}
        self.dictionary = harvest([common_pb2.Block.FromString(raw) for raw in self.seeds])
        self.by_orgs = X509CryptoService(m.peer, m.mcs.registry)
        self.by_orgs.register_channel(CHANNEL, ["OrdererMSP"])  # one orderer org signature, no policy
        registry = CheapRegistry()
        self.cheap_orderer = CheapCryptoService.for_peer("OrdererMSP", "orderer", registry)
        registry.register_channel(CHANNEL, ["OrdererMSP"])
        self.cheap = CheapCryptoService.for_peer("Org1MSP", "p0", registry)

    def run(self, c: Chooser) -> str:
        m = self.m
        base = pick(c, self.seeds)
        signer = pick(c, (m.orderer, m.orderer, self.cheap_orderer, m.admins[0]))
        raw, resigned = _mutated_block(c, base, self.dictionary, signer)
        seq = weighted(c, [(8, _number_of(raw)), (1, 0), (1, c.below(2**64))])
        outcome = "rejected"
        try:
            block = open_block(raw, seq)
            list(block_signatures(block))
        except InvalidBlock:
            pass
        for mcs in (m.mcs, self.by_orgs, self.cheap):
            try:
                mcs.verify_block(CHANNEL, seq, raw)
            except CryptoError:
                continue
            outcome = "verified"
            if not resigned and signer is not self.cheap_orderer and mcs is not self.cheap:
                header = header_bytes(common_pb2.Block.FromString(raw).header)
                check(header in self.headers, "a block whose signed header was changed verified")
        with contextlib.suppress(LedgerError):
            check_chain(CHANNEL, seq, b"prev", [raw])
        try:
            decoded = common_pb2.Block.FromString(raw)
        except DecodeError:
            return outcome
        cc.is_config_block(decoded)
        cc.last_config_index(decoded)
        for data in decoded.data.data[:8]:
            with contextlib.suppress(cc.EnvelopeError):
                cc.open_envelope(data)
        return outcome


def _number_of(raw: bytes) -> int:
    try:
        return common_pb2.Block.FromString(raw).header.number
    except DecodeError:
        return 0


def _adopt(config: cc.ChannelConfig, m: Material) -> str:
    """What a peer does with a configuration it accepted: an org registry from it (ChannelConfigError), a crypto
    service that verifies the channel's blocks under it, and its resolver asked about a few identities."""
    try:
        registry = cc.org_registry([config])
    except cc.ChannelConfigError:
        return "unusable"
    mcs = X509CryptoService(m.peer, registry)
    mcs.register_channel_config(config)
    resolver = mcs.resolver(config.name)
    for signer in m.signers[:4]:
        resolver.resolve(signer.identity)
        resolver.verify(signer.identity, signer.sign(b"x"), b"x")
    with contextlib.suppress(CryptoError):
        mcs.verify_block(config.name, 1, m.chain[1])
    check(cc.parse_config(config.config, config.name) == config, "an accepted config does not read back the same")
    # An orderer cuts blocks by these settings; parse_config checked them, so they must be usable.
    BatchSettings.from_config(config.batch)
    return "adopted"


class ConfigBlockTarget:
    """``read_config_block`` and ``read_genesis`` of a block (ChannelConfigError), then what a peer does with the
    configuration it read (``_adopt``)."""

    name = "config-block"

    def __init__(self, seed: int) -> None:
        m = self.m = material()
        self.seeds = [m.genesis, m.genesis_unsigned, m.update_block, m.chain[1]]
        self.seeds += [b for _, _, blocks in m.fabric for b in blocks[:3]]
        self.dictionary = harvest([common_pb2.Block.FromString(raw) for raw in self.seeds])

    def run(self, c: Chooser) -> str:
        m = self.m
        raw, _ = _mutated_block(c, pick(c, self.seeds), self.dictionary, m.orderer)
        with contextlib.suppress(cc.ChannelConfigError):
            cc.read_genesis(raw)
        try:
            config = cc.read_config_block(raw)
        except cc.ChannelConfigError:
            return "rejected"
        check(bool(config.orderer_orgs), "a config without orderer orgs was read")
        return _adopt(config, m)


class ConfigUpdateTarget:
    """A config block's update checked against the configuration in force (``read_config_envelope``, then
    ``apply_config_envelope``: ChannelConfigError, ConfigUpdateError), as a peer does on committing a config
    block; an accepted configuration is adopted (``_adopt``).

    To get past the cheap checks, some mutations are fixed up: the sequence set right, the block's configuration
    recomputed from the (mutated) update, the update signed again by both orgs' admins."""

    name = "config-update"

    def __init__(self, seed: int) -> None:
        m = self.m = material()
        self.cases: list[tuple[cc.ChannelConfig, Any, configtx_pb2.ConfigEnvelope]] = [
            (m.config, m.mcs.resolver(CHANNEL), m.update)
        ]
        for genesis, mcs, blocks in m.fabric:
            for raw in blocks[1:3]:
                opened = cc.config_block_envelope(common_pb2.Block.FromString(raw))
                if opened is not None:
                    self.cases.append((genesis, mcs.resolver(genesis.name), cc.read_config_envelope(opened)))
        self.dictionary = harvest([envelope for _, _, envelope in self.cases])

    def run(self, c: Chooser) -> str:
        m = self.m
        current, resolver, seed = pick(c, self.cases)
        envelope = configtx_pb2.ConfigEnvelope()
        envelope.CopyFrom(seed)
        Mutator(c, self.dictionary).mutate(envelope, 1 + c.below(4))
        if chance(c, 60):
            envelope.config.sequence = current.sequence + 1
        update = _update_of(envelope)
        if update is not None and chance(c, 50):
            _recompute_config(current, envelope, update)
        if update is not None and chance(c, 50) and current is m.config:
            _sign_update(envelope, update.SerializeToString(), m.admins, pick(c, m.admins))
        if chance(c, 30):
            block = _config_block(envelope, m.orderer, current.sequence, b"")
            opened = cc.config_block_envelope(common_pb2.Block.FromString(block))
            if opened is None:
                return "not a config block"
            try:
                envelope = cc.read_config_envelope(opened)
            except cc.ChannelConfigError:
                return "rejected"
        try:
            config = configtx.apply_config_envelope(current, envelope, resolver)
        except configtx.ConfigUpdateError:
            return "rejected"
        return _adopt(config, m) if current is m.config else "accepted"


def _update_of(envelope: configtx_pb2.ConfigEnvelope) -> configtx_pb2.ConfigUpdate | None:
    try:
        opened = cc.open_envelope(envelope.last_update, require_creator=False)
        update_envelope = configtx_pb2.ConfigUpdateEnvelope.FromString(opened.payload.data)
        return configtx_pb2.ConfigUpdate.FromString(update_envelope.config_update)
    except (cc.EnvelopeError, DecodeError):
        return None


def _recompute_config(
    current: cc.ChannelConfig, envelope: configtx_pb2.ConfigEnvelope, update: configtx_pb2.ConfigUpdate
) -> None:
    """Make the block's configuration the one the (mutated) update produces, so that the check which compares
    them passes and the mutation reaches ``parse_config``. Uses configtx's own flattening: the point is to feed
    hostile configurations to what comes after that comparison, not to test the comparison against itself."""
    try:
        existing = configtx._flatten(current.config.channel_group)
        write_set = configtx._flatten(update.write_set) if update.HasField("write_set") else {}
        read_set = configtx._flatten(update.read_set) if update.HasField("read_set") else {}
        merged = dict(existing)
        merged.update({k: e for k, e in write_set.items() if k not in read_set or read_set[k].version != e.version})
        envelope.config.channel_group.CopyFrom(configtx._rebuild(merged, (), "Channel", 0))
    except configtx.ConfigUpdateError:
        return


class PolicyTarget:
    """A configuration's policies: ``PolicyTree.from_group`` of a mutated channel group, then ``evaluate`` of its
    policies with good and bad signatures (PolicyError); and the configtx.yaml rule parsers (PolicyError)."""

    name = "policies"

    RULES = (
        "OR('Org1MSP.admin', 'Org1MSP.peer')",
        "AND('Org1MSP.member', OutOf(2, 'Org2MSP.admin', 'Org2MSP.peer', 'OrdererMSP.orderer'))",
        "OutOf(1, 'A.member')",
        "MAJORITY Admins",
        "ANY Readers",
    )

    def __init__(self, seed: int) -> None:
        m = self.m = material()
        self.groups = [m.config.config.channel_group] + [g.config.channel_group for g, _, _ in m.fabric]
        self.dictionary = harvest(self.groups)
        self.resolver = m.mcs.resolver(CHANNEL)
        self.signed = [SignedData(b"data", s.identity, s.sign(b"data")) for s in m.signers]
        self.signed.append(SignedData(b"data", m.admins[0].identity, m.admins[1].sign(b"data")))  # forged
        self.signed.append(SignedData(b"data", b"\x0a\x07Org1MSP\x12\x03bad", b"sig"))

    def run(self, c: Chooser) -> str:
        if chance(c, 15):
            rule = (
                mutate_bytes(c, pick(c, self.RULES).encode()).decode("utf-8", "replace") if chance(c, 70) else text(c)
            )
            for parse in (parse_signature_rule, parse_implicit_meta_rule):
                with contextlib.suppress(PolicyError):
                    parse(rule)
            return "rule"
        group = configtx_pb2.ConfigGroup()
        group.CopyFrom(pick(c, self.groups))
        Mutator(c, self.dictionary).mutate(group, 1 + c.below(4))
        try:
            tree = PolicyTree.from_group(group)
        except PolicyError:
            return "rejected"
        signed = [s for s in self.signed if chance(c, 50)]
        paths = sorted(tree.policies)
        # Eight policies per input (each evaluation verifies ECDSA signatures afresh, a quarter millisecond each).
        for path in [pick(c, paths) for _ in range(min(8, len(paths)))]:
            with contextlib.suppress(PolicyError):
                tree.evaluate(path, signed, self.resolver)
        return "evaluated"


def _name_text(c: Chooser, default: str) -> str:
    """Random text that an X.509 name attribute can hold (1 to 64 bytes of UTF-8)."""
    return text(c).encode()[:64].decode("utf-8", "ignore") or default


def _keys() -> list[Any]:
    return [
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP384R1()),
        ec.generate_private_key(ec.SECP256K1()),
        rsa.generate_private_key(public_exponent=65537, key_size=1024),
        ed25519.Ed25519PrivateKey.generate(),
    ]


class IdentityTarget:
    """Serialized X.509 identities as they arrive in alive messages, handshakes and block signatures: ``pki_id_of``,
    ``validate_identity``, ``org_of``, ``verify`` (CryptoError), the channel resolver (None for a bad identity) and
    the identity mapper (IdentityError). Inputs are mutated serialized identities, mutated certificates, and
    certificates made up here with odd fields (other curves, RSA, Ed25519, CA flags, NodeOUs, validity, garbage in
    the extensions cryptography parses lazily) and signed by an org's real CA, so that they pass the chain check."""

    name = "identity"

    def __init__(self, seed: int) -> None:
        m = self.m = material()
        self.seeds = [s.identity for s in m.signers]
        self.keys = _keys()
        self.dictionary = harvest([identities_pb2.SerializedIdentity.FromString(i) for i in self.seeds])
        self.resolver = m.mcs.resolver(CHANNEL)
        self.mapper = IdentityMapper(m.mcs, m.peer.identity, clock_offset=0.0)

    def run(self, c: Chooser) -> str:
        m = self.m
        how = c.below(10)
        if how < 3:
            message = identities_pb2.SerializedIdentity.FromString(pick(c, self.seeds))
            Mutator(c, self.dictionary).mutate(message, 1 + c.below(3))
            identity = message.SerializeToString()
        elif how < 5:
            message = identities_pb2.SerializedIdentity.FromString(pick(c, self.seeds))
            identity = serialize_identity(message.mspid, mutate_pem(c, message.id_bytes))
        else:
            identity = self._forged(c)
        mcs = m.mcs
        try:
            pki_id = mcs.pki_id_of(identity)
        except CryptoError:
            return "undecodable"
        with contextlib.suppress(IdentityError):
            self.mapper.put(pki_id, identity, 0.0)
        self.resolver.resolve(identity)
        try:
            mcs.validate_identity(identity)
        except CryptoError:
            return "rejected"
        mcs.org_of(identity)
        mcs.expiration(identity)
        with contextlib.suppress(CryptoError):
            mcs.verify(identity, pick(c, (b"", c.raw(70), m.peer.sign(b"m"))), b"m")
        return "valid"

    def _forged(self, c: Chooser) -> bytes:
        m = self.m
        index = c.below(len(m.cas))
        ca = m.cas[index]
        mspid = (
            pick(c, ("Org1MSP", "Org2MSP", "OrdererMSP"))
            if chance(c, 20)
            else ("Org1MSP", "Org2MSP", "OrdererMSP")[index]
        )
        key = pick(c, self.keys)
        now = dt.datetime.now(dt.UTC)
        not_before = weighted(
            c,
            [
                (8, now - dt.timedelta(hours=1)),
                (1, now + dt.timedelta(days=1)),
                (1, dt.datetime(1950, 1, 1, tzinfo=dt.UTC)),
            ],
        )
        not_after = weighted(
            c,
            [
                (8, now + dt.timedelta(days=1)),
                (1, now - dt.timedelta(hours=2)),
                (1, dt.datetime(9999, 1, 1, tzinfo=dt.UTC)),
            ],
        )
        attributes = [x509.NameAttribute(NameOID.COMMON_NAME, _name_text(c, "x"))]
        for _ in range(weighted(c, [(2, 0), (6, 1), (2, 2)])):
            attributes.append(
                x509.NameAttribute(
                    NameOID.ORGANIZATIONAL_UNIT_NAME,
                    pick(c, ("peer", "client", "admin", "orderer", _name_text(c, "y"))),
                )
            )
        try:
            builder = (
                x509.CertificateBuilder()
                .subject_name(x509.Name(attributes))
                .issuer_name(ca.certificate.subject if chance(c, 90) else x509.Name(attributes))
                .public_key(key.public_key())
                .serial_number(1 + c.below(2**150))
                .not_valid_before(not_before)
                .not_valid_after(not_after)
            )
            if chance(c, 60):
                builder = builder.add_extension(
                    x509.BasicConstraints(ca=chance(c, 20), path_length=None), critical=True
                )
            if chance(c, 50):
                aki = x509.AuthorityKeyIdentifier(ca.key_identifier if chance(c, 80) else c.raw(20), None, None)
                builder = builder.add_extension(aki, critical=False)
            if chance(c, 20):
                # An extension cryptography knows, with a body that is not what its OID says: parsed only when read.
                oid = pick(
                    c,
                    (
                        ExtensionOID.BASIC_CONSTRAINTS,
                        ExtensionOID.KEY_USAGE,
                        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
                        ExtensionOID.SUBJECT_KEY_IDENTIFIER,
                    ),
                )
                builder = builder.add_extension(
                    x509.UnrecognizedExtension(oid, c.raw(c.below(12))), critical=chance(c, 50)
                )
            signing_key = ca.private_key if chance(c, 85) else pick(c, self.keys[:3])
            algorithm = (
                None
                if isinstance(signing_key, ed25519.Ed25519PrivateKey)
                else pick(c, (hashes.SHA256(), hashes.SHA384(), hashes.SHA512()))
            )
            cert = builder.sign(signing_key, algorithm)
        except ValueError:  # cryptography refuses some combinations (a duplicate extension, dates reversed)
            return serialize_identity(mspid, b"not a certificate")
        pem = cert.public_bytes(serialization.Encoding.PEM)
        if chance(c, 15):
            pem = mutate_pem(c, pem)
        return serialize_identity(mspid, pem)
