"""A channel's configuration in Fabric's own format: read it from config blocks, write it into genesis blocks.

A Fabric channel configuration (``common.Config``) is a versioned tree of groups, each with values, policies and
sub-groups; it travels as the only envelope of a *config block* (the genesis block, and every later block whose
envelope has header type CONFIG)::

    Block{data[0] = Envelope{payload = Payload{header{channel_header{type CONFIG, channel_id}, signature_header},
                                               data = ConfigEnvelope{config = Config{sequence, channel_group},
                                                                     last_update = the CONFIG_UPDATE envelope}}}}

    /Channel                      HashingAlgorithm, BlockDataHashingStructure, OrdererAddresses, Capabilities,
                                  Consortium; policies Readers, Writers, Admins
    /Channel/Orderer              ConsensusType, BatchSize, BatchTimeout, ChannelRestrictions, Capabilities;
                                  policies Readers, Writers, Admins, BlockValidation
    /Channel/Orderer/<MSP ID>     MSP, Endpoints; policies Readers, Writers, Admins
    /Channel/Application          Capabilities; policies Readers, Writers, Admins, ...
    /Channel/Application/<MSP ID> MSP, AnchorPeers; policies Readers, Writers, Admins, Endorsement

``parse_config`` reads that tree into typed values (``ChannelConfig``: the orgs with their MSP definitions, anchor
peers and orderer endpoints, the batch settings, the consensus type, the capabilities and the whole policy tree,
``policies``); ``read_config_block`` takes it out of a block, and ``read_genesis`` checks a genesis block too. Both
genesis forms Fabric makes are accepted: configtxgen's (unsigned, empty creator) and an orderer's (signed).

``channel_config`` builds a configuration from MSP directories and settings with configtxgen's defaults for
everything left out (the policies of Fabric's sample configtx.yaml, capability V2_0), and ``genesis_block`` writes
it as block 0 in the layout a Fabric v2.2 peer accepts with ``peer channel join``. The first rumor releases wrote a
config of their own instead; such a block is refused with a line saying how to recreate the channel.

``new_envelope`` and ``open_envelope`` build and take apart Fabric's signed envelope (channel header with Fabric's
tx id, SHA-256(nonce || creator)); the orderer and its clients use them for transactions and seek requests.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID
from google.protobuf.message import DecodeError, Message

from rumor.config import _check_endpoint
from rumor.crypto.api import CryptoError, InvalidBlock, InvalidIdentity
from rumor.crypto.blocks import (
    SIGNATURES_INDEX,
    BlockSigner,
    block_data_hash,
    decode_block,
    new_block,
    sign_block,
)
from rumor.crypto.identity import certificate_pem, decode_identity, read_pem_certificates
from rumor.crypto.msp import NodeOUs, Org, OrgRegistry, load_crl
from rumor.policies import (
    PolicyError,
    PolicyTree,
    ResolvedIdentity,
    SignedData,
    parse_implicit_meta_rule,
    parse_signature_rule,
    signature_policy,
)
from rumor.wire.pb.common import common_pb2, configtx_pb2, policies_pb2
from rumor.wire.pb.msp import msp_config_pb2, msp_principal_pb2
from rumor.wire.pb.orderer import configuration_pb2 as orderer_config_pb2
from rumor.wire.pb.peer import configuration_pb2 as peer_config_pb2

__all__ = [
    "DEFAULT_ABSOLUTE_MAX_BYTES",
    "DEFAULT_BATCH_TIMEOUT_MS",
    "DEFAULT_MAX_MESSAGE_COUNT",
    "DEFAULT_PREFERRED_MAX_BYTES",
    "BatchSettings",
    "ChannelConfig",
    "ChannelConfigError",
    "ChannelResolver",
    "EnvelopeError",
    "OpenedEnvelope",
    "OrgConfig",
    "batch_config",
    "build_config",
    "channel_config",
    "config_block_envelope",
    "genesis_block",
    "is_config_block",
    "last_config_index",
    "latest_config",
    "load_block",
    "new_envelope",
    "open_envelope",
    "orderer_mspids",
    "orderer_org_config",
    "org_config",
    "org_registry",
    "orgs_of",
    "parse_config",
    "read_config_block",
    "read_genesis",
    "save_block",
]

# Fabric's sample configtx.yaml values (its "MB" means MiB).
DEFAULT_MAX_MESSAGE_COUNT = 10
DEFAULT_PREFERRED_MAX_BYTES = 512 * 1024
DEFAULT_ABSOLUTE_MAX_BYTES = 99 * 1024 * 1024
DEFAULT_BATCH_TIMEOUT_MS = 2000
DEFAULT_CAPABILITY = "V2_0"
# What a Fabric v2.2 peer understands; a config asking for more is refused rather than misread.
KNOWN_CAPABILITIES = frozenset({"V1_1", "V1_2", "V1_3", "V1_4_2", "V1_4_3", "V2_0"})

# Fabric's rule for channel names: they become file and database names on every node.
_CHANNEL_NAME = re.compile(r"^[a-z][a-z0-9.-]*$")
_MAX_CHANNEL_NAME = 249
_MSPID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_NONCE_SIZE = 24
LAST_CONFIG_INDEX = common_pb2.BlockMetadataIndex.Value("LAST_CONFIG")
_DURATION_TERM = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_MAX_GO_DURATION = (2**63 - 1) / 1e9  # seconds
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}

CHANNEL = "Channel"
ORDERER = "Orderer"
APPLICATION = "Application"
CONSORTIUMS = "Consortiums"
ADMINS = "Admins"
BLOCK_VALIDATION = f"/{CHANNEL}/{ORDERER}/BlockValidation"
APPLICATION_READERS = f"/{CHANNEL}/{APPLICATION}/Readers"
APPLICATION_WRITERS = f"/{CHANNEL}/{APPLICATION}/Writers"
CHANNEL_READERS = f"/{CHANNEL}/Readers"
CHANNEL_WRITERS = f"/{CHANNEL}/Writers"

_OLD_FORMAT_HINT = (
    "it was written by rumor 0.1, whose channel config is not Fabric's; recreate the channel with "
    "`rumor network init` or `rumor channel create` and start its peers and orderer on empty data directories"
)


class ChannelConfigError(Exception):
    """A channel configuration or config block that cannot be used; the message is one line saying why."""


class EnvelopeError(ValueError):
    """An envelope whose payload, header or signature header does not decode or is incomplete."""


# --------------------------------------------------------------------------------------------------
# Envelopes


@dataclass(frozen=True)
class OpenedEnvelope:
    """The decoded layers of a signed ``common.Envelope``; ``envelope.payload`` holds the signed bytes."""

    envelope: common_pb2.Envelope
    payload: common_pb2.Payload
    channel_header: common_pb2.ChannelHeader
    signature_header: common_pb2.SignatureHeader

    @property
    def creator(self) -> bytes:
        return self.signature_header.creator

    @property
    def channel_id(self) -> str:
        return self.channel_header.channel_id

    @property
    def tx_id(self) -> str:
        return self.channel_header.tx_id

    def signed_data(self) -> SignedData:
        return SignedData(self.envelope.payload, self.creator, self.envelope.signature)


def tx_id_of(nonce: bytes, creator: bytes) -> str:
    """Fabric's transaction ID: hex SHA-256 of nonce || creator."""
    return hashlib.sha256(nonce + creator).hexdigest()


def new_envelope(
    signer: BlockSigner,
    channel_id: str,
    header_type: int,
    data: bytes,
    *,
    now: float | None = None,
    nonce: bytes | None = None,
    tls_cert_hash: bytes = b"",
    tx_id: bool = True,
) -> common_pb2.Envelope:
    """A ``common.Envelope`` carrying ``data``, signed by ``signer`` over its payload bytes.

    The channel header carries the channel, Fabric's tx id (unless ``tx_id`` is false, as in the CONFIG envelopes
    an orderer makes), a timestamp (``now``, Unix seconds) and, for a seek request under mutual TLS, the hash of
    the client's TLS certificate. ``nonce`` defaults to random bytes.
    """
    nonce = os.urandom(_NONCE_SIZE) if nonce is None else nonce
    creator = signer.identity
    channel_header = common_pb2.ChannelHeader(
        type=header_type,
        channel_id=channel_id,
        tx_id=tx_id_of(nonce, creator) if tx_id else "",
        tls_cert_hash=tls_cert_hash,
    )
    seconds = time.time() if now is None else now
    channel_header.timestamp.FromNanoseconds(int(seconds * 1e9))
    payload = common_pb2.Payload(
        header=common_pb2.Header(
            channel_header=channel_header.SerializeToString(deterministic=True),
            signature_header=common_pb2.SignatureHeader(creator=creator, nonce=nonce).SerializeToString(
                deterministic=True
            ),
        ),
        data=data,
    ).SerializeToString(deterministic=True)
    return common_pb2.Envelope(payload=payload, signature=signer.sign(payload))


def open_envelope(envelope: common_pb2.Envelope | bytes, *, require_creator: bool = True) -> OpenedEnvelope:
    """Decode an envelope's payload and headers (the signature is not checked here); EnvelopeError if malformed."""
    if isinstance(envelope, bytes):
        envelope = _parse(common_pb2.Envelope, envelope, "envelope")
    if not envelope.payload:
        raise EnvelopeError("envelope has no payload")
    payload = _parse(common_pb2.Payload, envelope.payload, "payload")
    if not payload.HasField("header"):
        raise EnvelopeError("payload has no header")
    if not payload.header.channel_header:
        raise EnvelopeError("payload header has no channel header")
    channel_header = _parse(common_pb2.ChannelHeader, payload.header.channel_header, "channel header")
    signature_header = _parse(common_pb2.SignatureHeader, payload.header.signature_header, "signature header")
    if require_creator and not signature_header.creator:
        raise EnvelopeError("signature header names no creator")
    return OpenedEnvelope(envelope, payload, channel_header, signature_header)


_M = TypeVar("_M", bound=Message)


def _parse(cls: type[_M], data: bytes, what: str) -> _M:
    message = cls()
    try:
        message.ParseFromString(data)
    except (DecodeError, ValueError, TypeError, RecursionError) as exc:
        raise EnvelopeError(f"{what} does not decode: {exc}") from None
    return message


def _value(cls: type[_M], data: bytes, where: str) -> _M:
    try:
        return _parse(cls, data, where)
    except EnvelopeError as exc:
        raise ChannelConfigError(str(exc)) from None


# --------------------------------------------------------------------------------------------------
# The typed configuration


@dataclass(frozen=True)
class OrgConfig:
    """An org of the channel, application or orderer, with its MSP definition as the config carries it (PEM)."""

    mspid: str
    root_certs: tuple[bytes, ...]
    intermediate_certs: tuple[bytes, ...] = ()
    tls_root_certs: tuple[bytes, ...] = ()
    tls_intermediate_certs: tuple[bytes, ...] = ()
    crls: tuple[bytes, ...] = ()
    admins: tuple[bytes, ...] = ()  # admin certificates listed explicitly (without NodeOUs, the only admins)
    node_ous: NodeOUs | None = None  # None: NodeOUs disabled
    node_ou_certificates: Mapping[str, bytes] = field(default_factory=dict)  # role -> PEM of its certifying CA
    anchor_peers: tuple[str, ...] = ()  # application orgs: host:port other orgs may dial
    endpoints: tuple[str, ...] = ()  # orderer orgs: host:port of their AtomicBroadcast service
    policies: Mapping[str, policies_pb2.Policy] = field(default_factory=dict)  # only used when writing a config

    def to_org(self) -> Org:
        """The crypto layer's view of the MSP, for identity validation."""
        try:
            return Org(
                mspid=self.mspid,
                root_certs=tuple(x509.load_pem_x509_certificate(pem) for pem in self.root_certs),
                intermediate_certs=tuple(x509.load_pem_x509_certificate(pem) for pem in self.intermediate_certs),
                tls_root_certs=tuple(x509.load_pem_x509_certificate(pem) for pem in self.tls_root_certs),
                node_ous=self.node_ous,
            )
        except (ValueError, CryptoError) as exc:
            raise ChannelConfigError(f"org {self.mspid}: {exc}") from None

    @property
    def definition(self) -> tuple[object, ...]:
        """What must agree when the same MSP ID appears in several channels."""
        return (
            frozenset(self.root_certs),
            frozenset(self.intermediate_certs),
            frozenset(self.tls_root_certs),
            frozenset(self.crls),
            frozenset(self.admins),
            self.node_ous,
        )


@dataclass(frozen=True)
class BatchSettings:
    """When the ordering service cuts a block (/Channel/Orderer BatchSize and BatchTimeout)."""

    max_message_count: int = DEFAULT_MAX_MESSAGE_COUNT
    preferred_max_bytes: int = DEFAULT_PREFERRED_MAX_BYTES
    absolute_max_bytes: int = DEFAULT_ABSOLUTE_MAX_BYTES
    batch_timeout: float = DEFAULT_BATCH_TIMEOUT_MS / 1000  # seconds

    @property
    def batch_timeout_ms(self) -> int:
        return round(self.batch_timeout * 1000)


@dataclass(frozen=True)
class Capabilities:
    channel: frozenset[str] = frozenset()
    orderer: frozenset[str] = frozenset()
    application: frozenset[str] = frozenset()


@dataclass(frozen=True, eq=False)
class ChannelConfig:
    """Everything rumor reads from a channel's configuration; ``config`` keeps the message it came from.

    Two are equal when they are the same channel's same configuration message.
    """

    name: str
    sequence: int
    orgs: tuple[OrgConfig, ...]  # application orgs (the channel's members)
    orderer_orgs: tuple[OrgConfig, ...]
    batch: BatchSettings
    consensus_type: str
    consensus_metadata: bytes
    consensus_state: int
    orderer_addresses: tuple[str, ...]  # the channel-level OrdererAddresses value (Fabric 1.x style)
    capabilities: Capabilities
    hashing_algorithm: str
    block_data_hashing_width: int
    consortium: str
    policies: PolicyTree
    config: configtx_pb2.Config

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ChannelConfig) and (self.name, self.config) == (other.name, other.config)

    def __hash__(self) -> int:
        return hash((self.name, self.sequence))

    def org(self, mspid: str) -> OrgConfig | None:
        for org in (*self.orgs, *self.orderer_orgs):
            if org.mspid == mspid:
                return org
        return None

    @property
    def orderer_endpoints(self) -> list[str]:
        """Where to reach the ordering service: the orderer orgs' Endpoints, else the channel's OrdererAddresses.

        That is Fabric v2's rule: once any orderer org names endpoints, the global addresses are ignored.
        """
        per_org = [e for org in self.orderer_orgs for e in org.endpoints]
        return per_org if per_org else list(self.orderer_addresses)

    @property
    def orderer_tls_roots(self) -> list[bytes]:
        return [pem for org in self.orderer_orgs for pem in (*org.tls_root_certs, *org.tls_intermediate_certs)]

    @property
    def tls_roots(self) -> list[bytes]:
        return [
            pem
            for org in (*self.orgs, *self.orderer_orgs)
            for pem in (*org.tls_root_certs, *org.tls_intermediate_certs)
        ]

    @property
    def anchor_peers(self) -> dict[str, list[str]]:
        return {org.mspid: list(org.anchor_peers) for org in self.orgs}


def _org_of_group(mspid_key: str, group: configtx_pb2.ConfigGroup, where: str, *, orderer: bool) -> OrgConfig:
    if "MSP" not in group.values:
        raise ChannelConfigError(f"{where}: org {mspid_key} has no MSP value")
    msp = _value(msp_config_pb2.MSPConfig, group.values["MSP"].value, f"{where}/MSP")
    if msp.type != 0:
        raise ChannelConfigError(f"{where}: org {mspid_key} uses MSP type {msp.type}; only X.509 (0) is supported")
    fabric = _value(msp_config_pb2.FabricMSPConfig, msp.config, f"{where}/MSP")
    if not _MSPID.match(fabric.name):
        raise ChannelConfigError(f"{where}: {fabric.name!r} is not a valid MSP ID")
    if not fabric.root_certs:
        raise ChannelConfigError(f"{where}: org {fabric.name} has no root certificate")
    node_ous = None
    ou_certs: dict[str, bytes] = {}
    if fabric.HasField("fabric_node_ous") and fabric.fabric_node_ous.enable:
        ous = fabric.fabric_node_ous
        node_ous = NodeOUs(
            client=ous.client_ou_identifier.organizational_unit_identifier,
            peer=ous.peer_ou_identifier.organizational_unit_identifier,
            admin=ous.admin_ou_identifier.organizational_unit_identifier,
            orderer=ous.orderer_ou_identifier.organizational_unit_identifier,
        )
        for role, ident in (
            ("client", ous.client_ou_identifier),
            ("peer", ous.peer_ou_identifier),
            ("admin", ous.admin_ou_identifier),
            ("orderer", ous.orderer_ou_identifier),
        ):
            if ident.certificate:
                ou_certs[role] = bytes(ident.certificate)
    anchors: list[str] = []
    if "AnchorPeers" in group.values:
        value = _value(peer_config_pb2.AnchorPeers, group.values["AnchorPeers"].value, f"{where}/AnchorPeers")
        anchors = [f"{a.host}:{a.port}" for a in value.anchor_peers]
    endpoints: list[str] = []
    if "Endpoints" in group.values:
        endpoints = list(
            _value(configtx_pb2.OrdererAddresses, group.values["Endpoints"].value, f"{where}/Endpoints").addresses
        )
    org = OrgConfig(
        mspid=fabric.name,
        root_certs=tuple(fabric.root_certs),
        intermediate_certs=tuple(fabric.intermediate_certs),
        tls_root_certs=tuple(fabric.tls_root_certs),
        tls_intermediate_certs=tuple(fabric.tls_intermediate_certs),
        crls=tuple(fabric.revocation_list),
        admins=tuple(fabric.admins),
        node_ous=node_ous,
        node_ou_certificates=ou_certs,
        anchor_peers=tuple(anchors),
        endpoints=tuple(endpoints),
    )
    # Admin certificates too: they are read whenever a policy is evaluated, so one that does not load would make
    # every evaluation fail with ValueError instead of this config being refused now (as Fabric's MSP setup does).
    certificates = (*org.root_certs, *org.intermediate_certs, *org.tls_root_certs, *org.tls_intermediate_certs)
    for pem in (*certificates, *org.admins):
        _check_certificate(pem, f"{where}: org {org.mspid}")
    for pem in org.crls:
        _check_crl(pem, f"{where}: org {org.mspid}")
    for endpoint in (*org.anchor_peers, *org.endpoints):
        if _check_endpoint(endpoint) is not None:
            raise ChannelConfigError(f"{where}: endpoint {endpoint!r} of {org.mspid} is not host:port")
    del orderer
    return org


def _check_certificate(pem: bytes, where: str) -> None:
    """ChannelConfigError unless ``pem`` is a certificate whose every field reads.

    cryptography parses a certificate's names, key and extensions only when they are first read, so a certificate
    with a corrupt subject loads, and raises ValueError later, wherever it is used (matching a CRL to its CA, say).
    Go's parser, which Fabric's MSP uses, reads everything at once and refuses it: so does this.
    """
    try:
        certificate = x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise ChannelConfigError(f"{where} has a certificate that is not PEM") from None
    try:
        _ = (certificate.subject, certificate.issuer, certificate.extensions, certificate.public_key())
        _ = (certificate.not_valid_before_utc, certificate.not_valid_after_utc, certificate.serial_number)
    except Exception as exc:  # ValueError, UnsupportedAlgorithm, DuplicateExtension ...: all mean "corrupt"
        raise ChannelConfigError(f"{where} has a corrupt certificate: {type(exc).__name__}: {exc}") from None


def _check_crl(pem: bytes, where: str) -> None:
    """ChannelConfigError unless ``pem`` is a CRL whose every field reads (see ``_check_certificate``)."""
    try:
        crl = x509.load_pem_x509_crl(pem)
        _ = (crl.issuer, crl.extensions, crl.last_update_utc, crl.next_update_utc)
        for revoked in crl:
            _ = (revoked.serial_number, revoked.revocation_date_utc, revoked.extensions)
    except Exception as exc:  # as above
        raise ChannelConfigError(f"{where} has a CRL that does not read: {type(exc).__name__}: {exc}") from None


def _capabilities(group: configtx_pb2.ConfigGroup | None, where: str) -> frozenset[str]:
    if group is None or "Capabilities" not in group.values:
        return frozenset()
    value = _value(configtx_pb2.Capabilities, group.values["Capabilities"].value, f"{where}/Capabilities")
    names = frozenset(value.capabilities)
    unknown = sorted(names - KNOWN_CAPABILITIES)
    if unknown:
        raise ChannelConfigError(f"{where}: requires capabilities rumor does not know: {unknown}")
    return names


def parse_duration(text: str) -> float:
    """A Go duration as configtx writes BatchTimeout (``2s``, ``500ms``, ``1m30s``) in seconds.

    Read term by term from the start, so the time is linear in the length of the text: searching for terms
    anywhere, as this once did, backtracks over every run of digits from each of its positions, and a config
    block's BatchTimeout of 20,000 digits took 17 s to refuse. A total beyond Go's time.Duration (2^63 - 1 ns)
    is refused as Go's time.ParseDuration refuses it; it would otherwise become an infinite timeout.
    """
    remaining = text.strip()
    if not remaining:
        raise ChannelConfigError("empty duration")
    total = 0.0
    position = 0
    while position < len(remaining):
        match = _DURATION_TERM.match(remaining, position)
        if match is None:
            raise ChannelConfigError(f"{text[:40]!r} is not a duration such as 2s or 500ms")
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    if not total <= _MAX_GO_DURATION:
        raise ChannelConfigError(f"{text[:40]!r} is longer than a Go duration can be (about 292 years)")
    return total


def format_duration(seconds: float) -> str:
    if seconds >= 1 and float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{round(seconds * 1000)}ms"


def parse_config(config: configtx_pb2.Config, channel_id: str) -> ChannelConfig:
    """The typed view of ``config`` for channel ``channel_id``; ChannelConfigError says what is unusable."""
    if not _CHANNEL_NAME.match(channel_id) or len(channel_id) > _MAX_CHANNEL_NAME:
        raise ChannelConfigError(
            f"channel name {channel_id!r} is not valid (lower-case letters, digits, '.' and '-', starting with a "
            f"letter, at most {_MAX_CHANNEL_NAME} characters)"
        )
    where = f"channel {channel_id}"
    root = config.channel_group
    if ORDERER not in root.groups:
        raise ChannelConfigError(f"{where}: the config has no Orderer group")
    orderer = root.groups[ORDERER]
    application = root.groups.get(APPLICATION)
    orgs = (
        tuple(
            _org_of_group(name, application.groups[name], f"{where}: /Channel/Application/{name}", orderer=False)
            for name in sorted(application.groups)
        )
        if application is not None
        else ()
    )
    orderer_orgs = tuple(
        _org_of_group(name, orderer.groups[name], f"{where}: /Channel/Orderer/{name}", orderer=True)
        for name in sorted(orderer.groups)
    )
    mspids = [o.mspid for o in (*orgs, *orderer_orgs)]
    duplicates = sorted({m for m in mspids if mspids.count(m) > 1})
    if duplicates:
        raise ChannelConfigError(f"{where}: MSP IDs listed more than once: {duplicates}")
    if not orderer_orgs:
        raise ChannelConfigError(f"{where}: no orderer org")
    if "BatchSize" not in orderer.values or "BatchTimeout" not in orderer.values:
        raise ChannelConfigError(f"{where}: the Orderer group lacks BatchSize or BatchTimeout")
    size = _value(orderer_config_pb2.BatchSize, orderer.values["BatchSize"].value, f"{where}: BatchSize")
    timeout_text = _value(
        orderer_config_pb2.BatchTimeout, orderer.values["BatchTimeout"].value, f"{where}: BatchTimeout"
    ).timeout
    try:
        timeout = parse_duration(timeout_text)
    except ChannelConfigError as exc:
        raise ChannelConfigError(f"{where}: BatchTimeout: {exc}") from None
    batch = BatchSettings(
        max_message_count=size.max_message_count,
        preferred_max_bytes=size.preferred_max_bytes,
        absolute_max_bytes=size.absolute_max_bytes,
        batch_timeout=timeout,
    )
    _check_batch(batch, where)
    consensus = orderer_config_pb2.ConsensusType()
    if "ConsensusType" in orderer.values:
        consensus = _value(
            orderer_config_pb2.ConsensusType, orderer.values["ConsensusType"].value, f"{where}: ConsensusType"
        )
    addresses: tuple[str, ...] = ()
    if "OrdererAddresses" in root.values:
        addresses = tuple(
            _value(
                configtx_pb2.OrdererAddresses, root.values["OrdererAddresses"].value, f"{where}: OrdererAddresses"
            ).addresses
        )
        for endpoint in addresses:
            if _check_endpoint(endpoint) is not None:
                raise ChannelConfigError(f"{where}: orderer address {endpoint!r} is not host:port")
    hashing = "SHA256"
    if "HashingAlgorithm" in root.values:
        hashing = _value(configtx_pb2.HashingAlgorithm, root.values["HashingAlgorithm"].value, where).name
    if hashing != "SHA256":
        raise ChannelConfigError(f"{where}: hashing algorithm {hashing!r}; only SHA256 is supported")
    width = 2**32 - 1
    if "BlockDataHashingStructure" in root.values:
        width = _value(
            configtx_pb2.BlockDataHashingStructure, root.values["BlockDataHashingStructure"].value, where
        ).width
    if width != 2**32 - 1:
        raise ChannelConfigError(f"{where}: BlockDataHashingStructure width {width}; only 2^32-1 is supported")
    consortium = ""
    if "Consortium" in root.values:
        consortium = _value(configtx_pb2.Consortium, root.values["Consortium"].value, where).name
    try:
        tree = PolicyTree.from_group(root, f"/{CHANNEL}")
    except PolicyError as exc:
        raise ChannelConfigError(f"{where}: {exc}") from None
    if BLOCK_VALIDATION not in tree:
        raise ChannelConfigError(f"{where}: no {BLOCK_VALIDATION} policy, so no block could be verified")
    return ChannelConfig(
        name=channel_id,
        sequence=config.sequence,
        orgs=orgs,
        orderer_orgs=orderer_orgs,
        batch=batch,
        consensus_type=consensus.type,
        consensus_metadata=consensus.metadata,
        consensus_state=consensus.state,
        orderer_addresses=addresses,
        capabilities=Capabilities(
            channel=_capabilities(root, f"{where}: /Channel"),
            orderer=_capabilities(orderer, f"{where}: /Channel/Orderer"),
            application=_capabilities(application, f"{where}: /Channel/Application"),
        ),
        hashing_algorithm=hashing,
        block_data_hashing_width=width,
        consortium=consortium,
        policies=tree,
        config=config,
    )


def _check_batch(batch: BatchSettings, where: str) -> None:
    if batch.max_message_count < 1:
        raise ChannelConfigError(f"{where}: batch max_message_count must be at least 1")
    if batch.preferred_max_bytes < 1:
        raise ChannelConfigError(f"{where}: batch preferred_max_bytes must be at least 1")
    if batch.absolute_max_bytes < batch.preferred_max_bytes:
        raise ChannelConfigError(
            f"{where}: batch absolute_max_bytes ({batch.absolute_max_bytes}) is below preferred_max_bytes "
            f"({batch.preferred_max_bytes})"
        )
    if batch.batch_timeout <= 0:
        raise ChannelConfigError(f"{where}: batch timeout must be positive")


# --------------------------------------------------------------------------------------------------
# Config blocks


def config_block_envelope(block: common_pb2.Block) -> OpenedEnvelope | None:
    """The CONFIG envelope of a config block, or None when the block is not one (cheap: one header decoded)."""
    if len(block.data.data) != 1:
        return None
    try:
        opened = open_envelope(block.data.data[0], require_creator=False)
    except EnvelopeError:
        return None
    return opened if opened.channel_header.type == common_pb2.CONFIG else None


def last_config_index(block: common_pb2.Block) -> int | None:
    """The newest config block's number as ``block``'s metadata records it (the signed OrdererBlockMetadata in
    SIGNATURES, Fabric v2's place; else the LAST_CONFIG slot); None when neither holds one."""
    entries = block.metadata.metadata
    for slot, signed in ((SIGNATURES_INDEX, True), (LAST_CONFIG_INDEX, False)):
        if len(entries) <= slot or not entries[slot]:
            continue
        try:
            metadata = _parse(common_pb2.Metadata, entries[slot], "metadata")
            if signed:
                value = _parse(common_pb2.OrdererBlockMetadata, metadata.value, "orderer block metadata")
                if value.HasField("last_config"):
                    return value.last_config.index
            else:
                return _parse(common_pb2.LastConfig, metadata.value, "last config").index
        except EnvelopeError:
            continue
    return None


def is_config_block(block: common_pb2.Block) -> bool:
    return config_block_envelope(block) is not None


def read_config_envelope(opened: OpenedEnvelope) -> configtx_pb2.ConfigEnvelope:
    try:
        envelope = _parse(configtx_pb2.ConfigEnvelope, opened.payload.data, "config envelope")
    except EnvelopeError:
        raise ChannelConfigError(f"channel {opened.channel_id}: {_OLD_FORMAT_HINT}") from None
    if not envelope.HasField("config") or not envelope.config.HasField("channel_group"):
        raise ChannelConfigError(f"channel {opened.channel_id}: {_OLD_FORMAT_HINT}")
    return envelope


def read_config_block(block: bytes | common_pb2.Block) -> ChannelConfig:
    """The configuration a config block (genesis or later) carries; ChannelConfigError when it is not one."""
    if isinstance(block, bytes):
        try:
            block = decode_block(block)
        except InvalidBlock as exc:
            raise ChannelConfigError(f"not a block: {exc}") from None
    if not block.HasField("header"):
        raise ChannelConfigError("not a config block: the block has no header")
    if block_data_hash(block.data) != block.header.data_hash:
        raise ChannelConfigError(f"block {block.header.number} is corrupt: its data hash does not match its data")
    if len(block.data.data) != 1:
        raise ChannelConfigError(
            f"not a config block: block {block.header.number} has {len(block.data.data)} envelopes, expected 1"
        )
    try:
        opened = open_envelope(block.data.data[0], require_creator=False)
    except EnvelopeError as exc:
        raise ChannelConfigError(f"not a config block: {exc}") from None
    header_type = opened.channel_header.type
    if header_type != common_pb2.CONFIG:
        kind = common_pb2.HeaderType.Name(header_type) if header_type in common_pb2.HeaderType.values() else header_type
        raise ChannelConfigError(
            f"not a config block: block {block.header.number} holds a transaction of type {kind}, expected CONFIG"
        )
    envelope = read_config_envelope(opened)
    return parse_config(envelope.config, opened.channel_id)


def read_genesis(block: bytes | common_pb2.Block) -> ChannelConfig:
    """The configuration in a genesis block (configtxgen's or an orderer's); ChannelConfigError when not one."""
    if isinstance(block, bytes):
        try:
            block = decode_block(block)
        except InvalidBlock as exc:
            raise ChannelConfigError(f"not a block: {exc}") from None
    if not block.HasField("header"):
        raise ChannelConfigError("not a genesis block: the block has no header")
    if block.header.number != 0:
        raise ChannelConfigError(f"not a genesis block: block number {block.header.number}, expected 0")
    if block.header.previous_hash:
        raise ChannelConfigError("not a genesis block: it has a previous hash")
    try:
        config = read_config_block(block)
    except ChannelConfigError as exc:
        raise ChannelConfigError(str(exc).replace("not a config block", "not a genesis block")) from None
    if not config.orgs:
        raise ChannelConfigError(
            f"channel {config.name}: no application org (a system channel's genesis cannot be joined by peers)"
        )
    return config


class _BlockSource(Protocol):
    def get_block(self, channel: str, number: int) -> bytes | None: ...

    def height(self, channel: str) -> int: ...


def latest_config(ledger: _BlockSource, channel: str) -> ChannelConfig:
    """The configuration in force after the ledger's last block: the config block its LAST_CONFIG names.

    Config blocks were checked when they were committed, so reading the newest one is enough. A last block
    without a usable LAST_CONFIG (a block from an orderer that does not record it) gives the genesis config.
    """
    genesis = ledger.get_block(channel, 0)
    if genesis is None:
        raise ChannelConfigError(f"channel {channel}: no genesis block")
    height = ledger.height(channel)
    last = ledger.get_block(channel, height - 1) if height > 1 else None
    index = last_config_index(decode_block(last)) if last is not None else 0
    if index is not None and 0 < index < height:
        raw = ledger.get_block(channel, index)
        if raw is not None and is_config_block(decode_block(raw)):
            return read_config_block(raw)
    return read_genesis(genesis)


def save_block(path: Path | str, block: common_pb2.Block | bytes) -> Path:
    """Write a ``.block`` file (a serialized common.Block) atomically: a reader never sees half of it."""
    path = Path(path)
    data = block if isinstance(block, bytes) else block.SerializeToString(deterministic=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def load_block(path: Path | str) -> bytes:
    """The bytes of a ``.block`` file; ChannelConfigError when it cannot be read."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ChannelConfigError(f"{path}: no such block file") from None
    except OSError as exc:
        raise ChannelConfigError(f"{path}: cannot read block file ({exc.strerror or exc})") from None


# --------------------------------------------------------------------------------------------------
# Building a configuration


def _pem_list(directory: Path) -> list[bytes]:
    try:
        return [certificate_pem(cert) for cert in read_pem_certificates(directory)]
    except CryptoError as exc:
        raise ChannelConfigError(str(exc)) from None


def _crls_pem(directory: Path) -> list[bytes]:
    if not directory.is_dir():
        return []
    crls: list[bytes] = []
    for path in sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith(".")):
        pem = path.read_bytes()
        try:
            load_crl(pem)
        except CryptoError as exc:
            raise ChannelConfigError(f"{path}: {exc}") from None
        crls.append(pem)
    return crls


def _node_ous_of(msp_dir: Path) -> tuple[NodeOUs | None, dict[str, bytes]]:
    path = msp_dir / "config.yaml"
    if not path.is_file():
        return None, {}
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ChannelConfigError(f"{path}: not valid YAML: {exc}") from None
    section = doc.get("NodeOUs") if isinstance(doc, dict) else None
    if not isinstance(section, dict) or not section.get("Enable"):
        return None, {}
    names: dict[str, str] = {}
    certs: dict[str, bytes] = {}
    for role, key in (
        ("client", "ClientOUIdentifier"),
        ("peer", "PeerOUIdentifier"),
        ("admin", "AdminOUIdentifier"),
        ("orderer", "OrdererOUIdentifier"),
    ):
        ident = section.get(key)
        if ident is None:
            names[role] = ""
            continue
        if not isinstance(ident, dict):
            raise ChannelConfigError(f"{path}: NodeOUs.{key} must be a mapping")
        names[role] = str(ident.get("OrganizationalUnitIdentifier", role))
        cert = ident.get("Certificate")
        if cert:
            cert_path = msp_dir / str(cert)
            try:
                certs[role] = cert_path.read_bytes()
            except OSError as exc:
                raise ChannelConfigError(f"{path}: NodeOUs.{key}.Certificate {cert_path}: {exc.strerror}") from None
    return NodeOUs(**names), certs


def default_org_policies(mspid: str, *, orderer: bool = False) -> dict[str, policies_pb2.Policy]:
    """The per-org policies of Fabric's sample configtx.yaml."""
    if orderer:
        rules = {
            "Readers": f"OR('{mspid}.member')",
            "Writers": f"OR('{mspid}.member')",
            "Admins": f"OR('{mspid}.admin')",
        }
    else:
        rules = {
            "Readers": f"OR('{mspid}.admin', '{mspid}.peer', '{mspid}.client')",
            "Writers": f"OR('{mspid}.admin', '{mspid}.client')",
            "Admins": f"OR('{mspid}.admin')",
            "Endorsement": f"OR('{mspid}.peer')",
        }
    return {name: signature_policy(parse_signature_rule(rule)) for name, rule in rules.items()}


def org_config(
    mspid: str,
    msp_dir: Path | str,
    anchor_peers: Iterable[str] = (),
    *,
    policies: Mapping[str, policies_pb2.Policy] | None = None,
) -> OrgConfig:
    """An application org read from its MSP directory (cacerts, intermediatecerts, tlscacerts, admincerts, crls,
    config.yaml), with the sample policies unless ``policies`` are given."""
    return _read_msp_dir(mspid, msp_dir, anchor_peers=tuple(anchor_peers), policies=policies, orderer=False)


def orderer_org_config(
    mspid: str,
    msp_dir: Path | str,
    endpoints: Iterable[str],
    *,
    policies: Mapping[str, policies_pb2.Policy] | None = None,
) -> OrgConfig:
    """An orderer org read from its MSP directory with the endpoints of its orderers."""
    return _read_msp_dir(mspid, msp_dir, endpoints=tuple(endpoints), policies=policies, orderer=True)


def _read_msp_dir(
    mspid: str,
    msp_dir: Path | str,
    *,
    anchor_peers: tuple[str, ...] = (),
    endpoints: tuple[str, ...] = (),
    policies: Mapping[str, policies_pb2.Policy] | None,
    orderer: bool,
) -> OrgConfig:
    msp_dir = Path(msp_dir)
    if not _MSPID.match(mspid):
        raise ChannelConfigError(f"{mspid!r} is not a valid MSP ID (letters, digits, '.', '_', '-')")
    if not msp_dir.is_dir():
        raise ChannelConfigError(f"{msp_dir}: no such MSP directory (for {mspid})")
    roots = _pem_list(msp_dir / "cacerts")
    if not roots:
        raise ChannelConfigError(f"{msp_dir / 'cacerts'}: no CA certificate (for {mspid})")
    for endpoint in (*anchor_peers, *endpoints):
        if _check_endpoint(endpoint) is not None:
            raise ChannelConfigError(f"endpoint {endpoint!r} of {mspid} is not host:port")
    node_ous, ou_certs = _node_ous_of(msp_dir)
    return OrgConfig(
        mspid=mspid,
        root_certs=tuple(roots),
        intermediate_certs=tuple(_pem_list(msp_dir / "intermediatecerts")),
        tls_root_certs=tuple(_pem_list(msp_dir / "tlscacerts")),
        tls_intermediate_certs=tuple(_pem_list(msp_dir / "tlsintermediatecerts")),
        crls=tuple(_crls_pem(msp_dir / "crls")),
        admins=tuple(_pem_list(msp_dir / "admincerts")),
        node_ous=node_ous,
        node_ou_certificates=ou_certs,
        anchor_peers=anchor_peers,
        endpoints=endpoints,
        policies=dict(policies) if policies is not None else default_org_policies(mspid, orderer=orderer),
    )


def batch_config(
    *,
    max_message_count: int = DEFAULT_MAX_MESSAGE_COUNT,
    preferred_max_bytes: int = DEFAULT_PREFERRED_MAX_BYTES,
    absolute_max_bytes: int = DEFAULT_ABSOLUTE_MAX_BYTES,
    batch_timeout: float = DEFAULT_BATCH_TIMEOUT_MS / 1000,
) -> BatchSettings:
    """Block-cutting settings; ``batch_timeout`` in seconds. Defaults are Fabric's sample configtx.yaml's."""
    return BatchSettings(max_message_count, preferred_max_bytes, absolute_max_bytes, batch_timeout)


def _meta(rule: str) -> policies_pb2.Policy:
    return parse_implicit_meta_rule(rule)


DEFAULT_CHANNEL_POLICIES = {"Readers": "ANY Readers", "Writers": "ANY Writers", "Admins": "MAJORITY Admins"}
DEFAULT_ORDERER_POLICIES = {**DEFAULT_CHANNEL_POLICIES, "BlockValidation": "ANY Writers"}
DEFAULT_APPLICATION_POLICIES = {
    **DEFAULT_CHANNEL_POLICIES,
    "LifecycleEndorsement": "MAJORITY Endorsement",
    "Endorsement": "MAJORITY Endorsement",
}


def _serialized(message: Message) -> bytes:
    return message.SerializeToString(deterministic=True)


def _set_value(group: configtx_pb2.ConfigGroup, key: str, message: Message) -> None:
    group.values[key].CopyFrom(configtx_pb2.ConfigValue(value=_serialized(message), mod_policy=ADMINS))


def _set_policies(group: configtx_pb2.ConfigGroup, policies: Mapping[str, policies_pb2.Policy]) -> None:
    for name, policy in policies.items():
        group.policies[name].CopyFrom(configtx_pb2.ConfigPolicy(policy=policy, mod_policy=ADMINS))


def _capability_value(names: Iterable[str]) -> configtx_pb2.Capabilities:
    value = configtx_pb2.Capabilities()
    for name in names:
        value.capabilities[name].SetInParent()
    return value


def _msp_value(org: OrgConfig) -> msp_config_pb2.MSPConfig:
    fabric = msp_config_pb2.FabricMSPConfig(
        name=org.mspid,
        root_certs=org.root_certs,
        intermediate_certs=org.intermediate_certs,
        admins=org.admins,
        revocation_list=org.crls,
        crypto_config=msp_config_pb2.FabricCryptoConfig(
            signature_hash_family="SHA2", identity_identifier_hash_function="SHA256"
        ),
        tls_root_certs=org.tls_root_certs,
        tls_intermediate_certs=org.tls_intermediate_certs,
    )
    if org.node_ous is not None:
        ous = fabric.fabric_node_ous
        ous.enable = True
        for role, ident in (
            ("client", ous.client_ou_identifier),
            ("peer", ous.peer_ou_identifier),
            ("admin", ous.admin_ou_identifier),
            ("orderer", ous.orderer_ou_identifier),
        ):
            name = getattr(org.node_ous, role)
            if name:
                ident.organizational_unit_identifier = name
                ident.certificate = org.node_ou_certificates.get(role, b"")
    return msp_config_pb2.MSPConfig(type=0, config=_serialized(fabric))


def _org_group(org: OrgConfig, *, orderer: bool) -> configtx_pb2.ConfigGroup:
    group = configtx_pb2.ConfigGroup(mod_policy=ADMINS)
    _set_value(group, "MSP", _msp_value(org))
    if orderer and org.endpoints:
        _set_value(group, "Endpoints", configtx_pb2.OrdererAddresses(addresses=org.endpoints))
    if not orderer and org.anchor_peers:
        anchors = peer_config_pb2.AnchorPeers()
        for endpoint in org.anchor_peers:
            host, _, port = endpoint.rpartition(":")
            anchors.anchor_peers.add(host=host, port=int(port))
        _set_value(group, "AnchorPeers", anchors)
    _set_policies(group, org.policies or default_org_policies(org.mspid, orderer=orderer))
    return group


def build_config(
    name: str,
    orgs: Sequence[OrgConfig],
    orderer_orgs: Sequence[OrgConfig],
    batch: BatchSettings | None = None,
    *,
    consensus_type: str = "solo",
    consensus_metadata: bytes = b"",
    capabilities: Capabilities | None = None,
    channel_policies: Mapping[str, str] | None = None,
    orderer_policies: Mapping[str, str] | None = None,
    application_policies: Mapping[str, str] | None = None,
    consortium: str = "",
    orderer_addresses: Sequence[str] = (),
    sequence: int = 0,
) -> configtx_pb2.Config:
    """A ``common.Config`` laid out as configtxgen lays out an application channel (every mod_policy Admins)."""
    batch = batch or BatchSettings()
    capabilities = capabilities or Capabilities(
        frozenset({DEFAULT_CAPABILITY}), frozenset({DEFAULT_CAPABILITY}), frozenset({DEFAULT_CAPABILITY})
    )
    root = configtx_pb2.ConfigGroup(mod_policy=ADMINS)
    _set_value(root, "HashingAlgorithm", configtx_pb2.HashingAlgorithm(name="SHA256"))
    _set_value(root, "BlockDataHashingStructure", configtx_pb2.BlockDataHashingStructure(width=2**32 - 1))
    if orderer_addresses:
        _set_value(root, "OrdererAddresses", configtx_pb2.OrdererAddresses(addresses=orderer_addresses))
    if capabilities.channel:
        _set_value(root, "Capabilities", _capability_value(capabilities.channel))
    if consortium:
        _set_value(root, "Consortium", configtx_pb2.Consortium(name=consortium))
    _set_policies(root, {k: _meta(v) for k, v in (channel_policies or DEFAULT_CHANNEL_POLICIES).items()})

    orderer = root.groups[ORDERER]
    orderer.mod_policy = ADMINS
    _set_value(
        orderer, "ConsensusType", orderer_config_pb2.ConsensusType(type=consensus_type, metadata=consensus_metadata)
    )
    _set_value(
        orderer,
        "BatchSize",
        orderer_config_pb2.BatchSize(
            max_message_count=batch.max_message_count,
            absolute_max_bytes=batch.absolute_max_bytes,
            preferred_max_bytes=batch.preferred_max_bytes,
        ),
    )
    _set_value(orderer, "BatchTimeout", orderer_config_pb2.BatchTimeout(timeout=format_duration(batch.batch_timeout)))
    _set_value(orderer, "ChannelRestrictions", orderer_config_pb2.ChannelRestrictions())
    if capabilities.orderer:
        _set_value(orderer, "Capabilities", _capability_value(capabilities.orderer))
    _set_policies(orderer, {k: _meta(v) for k, v in (orderer_policies or DEFAULT_ORDERER_POLICIES).items()})
    for org in orderer_orgs:
        orderer.groups[org.mspid].CopyFrom(_org_group(org, orderer=True))

    application = root.groups[APPLICATION]
    application.mod_policy = ADMINS
    if capabilities.application:
        _set_value(application, "Capabilities", _capability_value(capabilities.application))
    _set_policies(application, {k: _meta(v) for k, v in (application_policies or DEFAULT_APPLICATION_POLICIES).items()})
    for org in orgs:
        application.groups[org.mspid].CopyFrom(_org_group(org, orderer=False))
    return configtx_pb2.Config(sequence=sequence, channel_group=root)


def channel_config(
    name: str,
    orgs: Sequence[OrgConfig],
    orderer_orgs: Sequence[OrgConfig],
    batch: BatchSettings | None = None,
    **options: object,
) -> ChannelConfig:
    """A validated configuration for a new channel (``build_config``'s options), read back as rumor reads it."""
    if not orgs:
        raise ChannelConfigError(f"channel {name}: no member org")
    if not orderer_orgs:
        raise ChannelConfigError(f"channel {name}: no orderer org")
    _check_batch(batch or BatchSettings(), f"channel {name}")
    return parse_config(build_config(name, orgs, orderer_orgs, batch, **options), name)  # type: ignore[arg-type]


def orderer_mspids(config: ChannelConfig) -> list[str]:
    return [o.mspid for o in config.orderer_orgs]


def genesis_block(
    config: ChannelConfig | configtx_pb2.Config,
    orderer_signer: BlockSigner | None = None,
    *,
    channel_id: str | None = None,
    now: float | None = None,
) -> common_pb2.Block:
    """Block 0 of the channel: one CONFIG envelope holding ``ConfigEnvelope{config}``.

    With ``orderer_signer`` the envelope is signed as a Fabric orderer signs the genesis blocks it makes (no tx id),
    and the block carries the signed OrdererBlockMetadata; without, it is unsigned, as configtxgen writes it.
    """
    if isinstance(config, ChannelConfig):
        channel_id, message = config.name, config.config
    else:
        if channel_id is None:
            raise ChannelConfigError("genesis_block: a Config message needs channel_id")
        message = config
        parse_config(message, channel_id)
    data = _serialized(configtx_pb2.ConfigEnvelope(config=message))
    if orderer_signer is not None:
        try:
            signer_mspid, _ = decode_identity(orderer_signer.identity)
        except CryptoError as exc:
            raise ChannelConfigError(f"orderer identity: {exc}") from None
        parsed = config if isinstance(config, ChannelConfig) else parse_config(message, channel_id)
        if signer_mspid not in orderer_mspids(parsed):
            raise ChannelConfigError(
                f"channel {channel_id}: the signer's MSP ID {signer_mspid} is not one of its orderer orgs "
                f"{orderer_mspids(parsed)}"
            )
        envelope = new_envelope(orderer_signer, channel_id, common_pb2.CONFIG, data, now=now, tx_id=False)
    else:
        nonce = os.urandom(_NONCE_SIZE)
        channel_header = common_pb2.ChannelHeader(
            type=common_pb2.CONFIG, version=1, channel_id=channel_id, tx_id=tx_id_of(nonce, b"")
        )
        channel_header.timestamp.FromNanoseconds(int((time.time() if now is None else now) * 1e9))
        payload = common_pb2.Payload(
            header=common_pb2.Header(
                channel_header=_serialized(channel_header),
                signature_header=_serialized(common_pb2.SignatureHeader(nonce=nonce)),
            ),
            data=data,
        )
        envelope = common_pb2.Envelope(payload=_serialized(payload))
    block = new_block(0, b"", [_serialized(envelope)])
    if orderer_signer is not None:
        sign_block(block, orderer_signer, value=orderer_block_metadata(0))
    return block


def orderer_block_metadata(last_config: int, consenter_metadata: bytes = b"") -> bytes:
    """The value of metadata[SIGNATURES] in a Fabric v2 block: the newest config block's number, signed."""
    return _serialized(
        common_pb2.OrdererBlockMetadata(
            last_config=common_pb2.LastConfig(index=last_config), consenter_metadata=consenter_metadata
        )
    )


# --------------------------------------------------------------------------------------------------
# Orgs for identity validation, and what an identity is in a channel


def orgs_of(config: ChannelConfig) -> list[OrgConfig]:
    """Member orgs then orderer orgs."""
    return [*config.orgs, *config.orderer_orgs]


def org_registry(
    configs: Iterable[ChannelConfig],
    *,
    now: Callable[[], float] = time.time,
) -> OrgRegistry:
    """An OrgRegistry holding every member and orderer org of ``configs``.

    An org in several channels must be defined the same way in each (same roots, TLS roots, CRLs, NodeOUs): one
    registry cannot hold two versions of an MSP ID, and silently picking one would accept identities that a
    channel did not admit.
    """
    registry = OrgRegistry(now=now)
    seen: dict[str, tuple[str, tuple[object, ...]]] = {}
    for config in configs:
        for entry in orgs_of(config):
            previous = seen.get(entry.mspid)
            if previous is not None:
                if previous[1] != entry.definition:
                    raise ChannelConfigError(
                        f"org {entry.mspid} is defined differently in channels {previous[0]} and {config.name}"
                    )
                continue
            seen[entry.mspid] = (config.name, entry.definition)
            registry.add_org(entry.to_org())
            for crl in entry.crls:
                try:
                    registry.add_crl(entry.mspid, crl)
                except CryptoError as exc:
                    raise ChannelConfigError(f"org {entry.mspid}: {exc}") from None
    return registry


class ChannelResolver:
    """What an identity is in one channel, for policy evaluation: valid in which org, with which roles.

    Validation (chain, validity period, CRLs, NodeOUs) is the registry's; roles come from the channel's MSP
    definitions: with NodeOUs, the client/peer/admin/orderer OU of the certificate; an admin is also anyone whose
    certificate the MSP lists under admins.
    """

    def __init__(
        self, config: ChannelConfig, validate: Callable[[bytes], object], verify: Callable[[bytes, bytes, bytes], None]
    ) -> None:
        self._orgs = {org.mspid: org for org in orgs_of(config)}
        self._validate = validate
        self._verify = verify

    def resolve(self, identity: bytes) -> ResolvedIdentity | None:
        try:
            mspid, id_bytes = decode_identity(identity)
        except CryptoError:
            return None
        org = self._orgs.get(mspid)
        if org is None:
            return None
        try:
            valid = self._validate(identity)
        except (InvalidIdentity, CryptoError):
            return None
        certificate: x509.Certificate = valid.certificate  # type: ignore[attr-defined]
        ous = frozenset(
            str(a.value) for a in certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
        )
        roles = {msp_principal_pb2.MSPRole.MEMBER}
        if org.node_ous is not None:
            for role, value in (
                ("client", msp_principal_pb2.MSPRole.CLIENT),
                ("peer", msp_principal_pb2.MSPRole.PEER),
                ("admin", msp_principal_pb2.MSPRole.ADMIN),
                ("orderer", msp_principal_pb2.MSPRole.ORDERER),
            ):
                name = getattr(org.node_ous, role)
                if name and name in ous:
                    roles.add(value)
        if org.admins and certificate_pem(certificate) in {
            certificate_pem(x509.load_pem_x509_certificate(a)) for a in org.admins
        }:
            roles.add(msp_principal_pb2.MSPRole.ADMIN)
        del id_bytes
        return ResolvedIdentity(mspid=mspid, roles=frozenset(roles), ous=ous)

    def verify(self, identity: bytes, signature: bytes, data: bytes) -> bool:
        try:
            self._verify(identity, signature, data)
        except CryptoError:
            return False
        return True
