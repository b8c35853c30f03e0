"""A channel's configuration: build it from crypto material, carry it in a genesis block, read it back.

rumor keeps a channel's configuration in a ``rumorpb.ChannelConfig``: its member orgs (CA and TLS CA
certificates, CRLs, anchor peers), its orderer orgs (CA and TLS CA certificates, AtomicBroadcast endpoints)
and the orderer's block-cutting settings. The configuration travels as the only data entry of the channel's
genesis block, in the envelope layout Fabric uses for every transaction::

    Block{header{number 0, previous_hash empty}, data[0] = Envelope{
        payload   = Payload{header = Header{channel_header   = ChannelHeader{type CONFIG, channel_id, ...},
                                            signature_header = SignatureHeader{creator, nonce}},
                            data   = ChannelConfig},
        signature = the orderer's signature over payload}}
    metadata[SIGNATURES] = the orderer's block signature

Peers and orderers start a channel from that block, so ``read_genesis`` checks its shape strictly and says
what is wrong in one line (``ChannelConfigError``). It does not check the orderer's signatures: a genesis
block is trusted because the operator handed it over, exactly as Fabric trusts it; peers that want to can
still run it through ``X509CryptoService.verify_block``.

``new_envelope`` and ``open_envelope`` build and take apart that signed envelope; the orderer and its clients
use them for ordinary transactions and seek requests as well.

The config has no room for NodeOUs settings or intermediate CAs; ``org_registry`` assumes NodeOUs enabled
with Fabric's OU names (rumor's generator always enables them) and ``org_config`` refuses an MSP directory
with intermediate CAs rather than produce a config that would reject its members.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from google.protobuf.message import DecodeError

from rumor.config import _check_endpoint
from rumor.crypto.api import CryptoError, InvalidBlock
from rumor.crypto.blocks import BlockSigner, block_data_hash, decode_block, new_block, sign_block
from rumor.crypto.identity import certificate_pem, decode_identity, read_pem_certificates
from rumor.crypto.msp import NodeOUs, Org, OrgRegistry, load_crl
from rumor.wire.pb.common import common_pb2
from rumor.wire.pb.rumorpb import channel_pb2

__all__ = [
    "DEFAULT_ABSOLUTE_MAX_BYTES",
    "DEFAULT_BATCH_TIMEOUT_MS",
    "DEFAULT_MAX_MESSAGE_COUNT",
    "DEFAULT_PREFERRED_MAX_BYTES",
    "ChannelConfigError",
    "EnvelopeError",
    "OpenedEnvelope",
    "batch_config",
    "channel_config",
    "genesis_block",
    "load_block",
    "new_envelope",
    "open_envelope",
    "orderer_mspids",
    "orderer_org_config",
    "org_config",
    "org_registry",
    "orgs_of",
    "read_genesis",
    "save_block",
    "validate_channel_config",
]

# Fabric's sample configtx.yaml values (its "MB" means MiB).
DEFAULT_MAX_MESSAGE_COUNT = 10
DEFAULT_PREFERRED_MAX_BYTES = 512 * 1024
DEFAULT_ABSOLUTE_MAX_BYTES = 99 * 1024 * 1024
DEFAULT_BATCH_TIMEOUT_MS = 2000

# Fabric's rule for channel names: they become file and database names on every node.
_CHANNEL_NAME = re.compile(r"^[a-z][a-z0-9.-]*$")
_MAX_CHANNEL_NAME = 249
_MSPID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_NONCE_SIZE = 24


class ChannelConfigError(Exception):
    """A channel configuration or genesis block that cannot be used; the message is one line saying why."""


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


def new_envelope(
    signer: BlockSigner,
    channel_id: str,
    header_type: int,
    data: bytes,
    *,
    now: float | None = None,
    nonce: bytes | None = None,
) -> common_pb2.Envelope:
    """A ``common.Envelope`` carrying ``data``, signed by ``signer`` over its payload bytes.

    The transaction ID is Fabric's: hex SHA-256 of nonce || creator. ``now`` (Unix seconds) stamps the
    channel header; ``nonce`` defaults to random bytes.
    """
    nonce = os.urandom(_NONCE_SIZE) if nonce is None else nonce
    creator = signer.identity
    channel_header = common_pb2.ChannelHeader(
        type=header_type,
        channel_id=channel_id,
        tx_id=hashlib.sha256(nonce + creator).hexdigest(),
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


def open_envelope(envelope: common_pb2.Envelope | bytes) -> OpenedEnvelope:
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
    if not payload.header.signature_header:
        raise EnvelopeError("payload header has no signature header")
    signature_header = _parse(common_pb2.SignatureHeader, payload.header.signature_header, "signature header")
    if not signature_header.creator:
        raise EnvelopeError("signature header names no creator")
    return OpenedEnvelope(envelope, payload, channel_header, signature_header)


_M = TypeVar("_M", common_pb2.Envelope, common_pb2.Payload, common_pb2.ChannelHeader, common_pb2.SignatureHeader)


def _parse(cls: type[_M], data: bytes, what: str) -> _M:
    message = cls()
    try:
        message.ParseFromString(data)
    except (DecodeError, ValueError, TypeError) as exc:
        raise EnvelopeError(f"{what} does not decode: {exc}") from None
    return message


# --------------------------------------------------------------------------------------------------
# Building a configuration


def _certificates_pem(directory: Path) -> list[bytes]:
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


def _read_msp(msp_dir: Path | str, mspid: str) -> tuple[list[bytes], list[bytes], list[bytes]]:
    msp_dir = Path(msp_dir)
    if not _MSPID.match(mspid):
        raise ChannelConfigError(f"{mspid!r} is not a valid MSP ID (letters, digits, '.', '_', '-')")
    if not msp_dir.is_dir():
        raise ChannelConfigError(f"{msp_dir}: no such MSP directory (for {mspid})")
    roots = _certificates_pem(msp_dir / "cacerts")
    if not roots:
        raise ChannelConfigError(f"{msp_dir / 'cacerts'}: no CA certificate (for {mspid})")
    if _certificates_pem(msp_dir / "intermediatecerts"):
        raise ChannelConfigError(
            f"{msp_dir / 'intermediatecerts'}: intermediate CAs are not supported in rumor's channel config"
        )
    return roots, _certificates_pem(msp_dir / "tlscacerts"), _crls_pem(msp_dir / "crls")


def org_config(mspid: str, msp_dir: Path | str, anchor_peers: Iterable[str] = ()) -> channel_pb2.OrgConfig:
    """A member org read from its MSP directory (``peerOrganizations/<domain>/msp``: cacerts, tlscacerts, crls)."""
    roots, tls_roots, crls = _read_msp(msp_dir, mspid)
    return channel_pb2.OrgConfig(
        mspid=mspid, root_certs=roots, tls_root_certs=tls_roots, anchor_peers=list(anchor_peers), crls=crls
    )


def orderer_org_config(mspid: str, msp_dir: Path | str, endpoints: Iterable[str]) -> channel_pb2.OrdererOrgConfig:
    """An orderer org read from its MSP directory (``ordererOrganizations/<domain>/msp``) with its endpoints."""
    roots, tls_roots, crls = _read_msp(msp_dir, mspid)
    if crls:
        raise ChannelConfigError(f"{Path(msp_dir) / 'crls'}: CRLs of orderer orgs are not supported")
    return channel_pb2.OrdererOrgConfig(mspid=mspid, root_certs=roots, tls_root_certs=tls_roots, endpoints=endpoints)


def batch_config(
    *,
    max_message_count: int = DEFAULT_MAX_MESSAGE_COUNT,
    preferred_max_bytes: int = DEFAULT_PREFERRED_MAX_BYTES,
    absolute_max_bytes: int = DEFAULT_ABSOLUTE_MAX_BYTES,
    batch_timeout: float = DEFAULT_BATCH_TIMEOUT_MS / 1000,
) -> channel_pb2.BatchConfig:
    """Block-cutting settings; ``batch_timeout`` in seconds. Defaults are Fabric's sample configtx.yaml's."""
    return channel_pb2.BatchConfig(
        max_message_count=max_message_count,
        preferred_max_bytes=preferred_max_bytes,
        absolute_max_bytes=absolute_max_bytes,
        batch_timeout_ms=round(batch_timeout * 1000),
    )


def channel_config(
    name: str,
    orgs: Sequence[channel_pb2.OrgConfig],
    orderer_orgs: Sequence[channel_pb2.OrdererOrgConfig],
    batch: channel_pb2.BatchConfig | None = None,
) -> channel_pb2.ChannelConfig:
    """A validated ChannelConfig (ChannelConfigError says what is wrong)."""
    config = channel_pb2.ChannelConfig(
        name=name, orgs=orgs, orderer_orgs=orderer_orgs, batch=batch if batch is not None else batch_config()
    )
    validate_channel_config(config)
    return config


def validate_channel_config(config: channel_pb2.ChannelConfig) -> None:
    """Raise ChannelConfigError unless ``config`` is usable by peers and orderers."""
    name = config.name
    if not _CHANNEL_NAME.match(name) or len(name) > _MAX_CHANNEL_NAME:
        raise ChannelConfigError(
            f"channel name {name!r} is not valid (lower-case letters, digits, '.' and '-', starting with a letter, "
            f"at most {_MAX_CHANNEL_NAME} characters)"
        )
    where = f"channel {name}"
    if not config.orgs:
        raise ChannelConfigError(f"{where}: no member org")
    if not config.orderer_orgs:
        raise ChannelConfigError(f"{where}: no orderer org")
    mspids = [o.mspid for o in config.orgs] + [o.mspid for o in config.orderer_orgs]
    duplicates = sorted({m for m in mspids if mspids.count(m) > 1})
    if duplicates:
        raise ChannelConfigError(f"{where}: MSP IDs listed more than once: {duplicates}")
    for org in [*config.orgs, *config.orderer_orgs]:
        if not _MSPID.match(org.mspid):
            raise ChannelConfigError(f"{where}: {org.mspid!r} is not a valid MSP ID")
        if not org.root_certs:
            raise ChannelConfigError(f"{where}: org {org.mspid} has no root certificate")
        for pem in [*org.root_certs, *org.tls_root_certs]:
            try:
                x509.load_pem_x509_certificate(pem)
            except ValueError:
                raise ChannelConfigError(f"{where}: org {org.mspid} has a certificate that is not PEM") from None
    for org in config.orgs:
        for peer in org.anchor_peers:
            if _check_endpoint(peer) is not None:
                raise ChannelConfigError(f"{where}: anchor peer {peer!r} of {org.mspid} is not host:port")
    for orderer_org in config.orderer_orgs:
        for endpoint in orderer_org.endpoints:
            if _check_endpoint(endpoint) is not None:
                raise ChannelConfigError(f"{where}: endpoint {endpoint!r} of {orderer_org.mspid} is not host:port")
    if not config.HasField("batch"):
        raise ChannelConfigError(f"{where}: no batch settings")
    batch = config.batch
    if batch.max_message_count < 1:
        raise ChannelConfigError(f"{where}: batch max_message_count must be at least 1")
    if batch.preferred_max_bytes < 1:
        raise ChannelConfigError(f"{where}: batch preferred_max_bytes must be at least 1")
    if batch.absolute_max_bytes < batch.preferred_max_bytes:
        raise ChannelConfigError(
            f"{where}: batch absolute_max_bytes ({batch.absolute_max_bytes}) is below preferred_max_bytes "
            f"({batch.preferred_max_bytes})"
        )
    if batch.batch_timeout_ms < 1:
        raise ChannelConfigError(f"{where}: batch timeout must be at least 1 ms")


def orderer_mspids(config: channel_pb2.ChannelConfig) -> list[str]:
    """The MSP IDs whose orderers sign the channel's blocks (for ``X509CryptoService.register_channel``)."""
    return [o.mspid for o in config.orderer_orgs]


# --------------------------------------------------------------------------------------------------
# The genesis block


def genesis_block(
    config: channel_pb2.ChannelConfig, orderer_signer: BlockSigner, *, now: float | None = None
) -> common_pb2.Block:
    """Block 0 of ``config``'s channel, its config envelope and the block signed by ``orderer_signer``.

    The signer must belong to one of the channel's orderer orgs, or peers would refuse the block.
    """
    validate_channel_config(config)
    try:
        signer_mspid, _ = decode_identity(orderer_signer.identity)
    except CryptoError as exc:
        raise ChannelConfigError(f"orderer identity: {exc}") from None
    if signer_mspid not in orderer_mspids(config):
        raise ChannelConfigError(
            f"channel {config.name}: the signer's MSP ID {signer_mspid} is not one of its orderer orgs "
            f"{orderer_mspids(config)}"
        )
    envelope = new_envelope(
        orderer_signer, config.name, common_pb2.CONFIG, config.SerializeToString(deterministic=True), now=now
    )
    block = new_block(0, b"", [envelope.SerializeToString(deterministic=True)])
    return sign_block(block, orderer_signer)


def read_genesis(block: bytes | common_pb2.Block) -> channel_pb2.ChannelConfig:
    """The ChannelConfig inside a genesis block; ChannelConfigError when the block is not one."""
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
    if block_data_hash(block.data) != block.header.data_hash:
        raise ChannelConfigError("genesis block is corrupt: its data hash does not match its data")
    if len(block.data.data) != 1:
        raise ChannelConfigError(f"not a genesis block: {len(block.data.data)} data entries, expected 1")
    try:
        opened = open_envelope(block.data.data[0])
    except EnvelopeError as exc:
        raise ChannelConfigError(f"genesis block: {exc}") from None
    header_type = opened.channel_header.type
    if header_type != common_pb2.CONFIG:
        kind = common_pb2.HeaderType.Name(header_type) if header_type in common_pb2.HeaderType.values() else header_type
        raise ChannelConfigError(f"not a genesis block: its transaction is of type {kind}, expected CONFIG")
    config = channel_pb2.ChannelConfig()
    try:
        config.ParseFromString(opened.payload.data)
    except (DecodeError, ValueError, TypeError) as exc:
        raise ChannelConfigError(f"genesis block: channel config does not decode: {exc}") from None
    if config.name != opened.channel_id:
        raise ChannelConfigError(
            f"genesis block: config names channel {config.name!r} but its header says {opened.channel_id!r}"
        )
    validate_channel_config(config)
    return config


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
# Orgs for identity validation


OrgEntry = channel_pb2.OrgConfig | channel_pb2.OrdererOrgConfig


def _to_org(entry: OrgEntry, node_ous: NodeOUs | None) -> Org:
    try:
        return Org(
            mspid=entry.mspid,
            root_certs=tuple(x509.load_pem_x509_certificate(pem) for pem in entry.root_certs),
            tls_root_certs=tuple(x509.load_pem_x509_certificate(pem) for pem in entry.tls_root_certs),
            node_ous=node_ous,
        )
    except (ValueError, CryptoError) as exc:
        raise ChannelConfigError(f"org {entry.mspid}: {exc}") from None


def orgs_of(config: channel_pb2.ChannelConfig) -> list[OrgEntry]:
    """Member orgs then orderer orgs."""
    return [*config.orgs, *config.orderer_orgs]


def _definition(entry: OrgEntry) -> tuple[frozenset[bytes], frozenset[bytes], frozenset[bytes]]:
    crls = entry.crls if isinstance(entry, channel_pb2.OrgConfig) else ()
    return frozenset(entry.root_certs), frozenset(entry.tls_root_certs), frozenset(crls)


def org_registry(
    configs: Iterable[channel_pb2.ChannelConfig],
    *,
    now: Callable[[], float] = time.time,
    node_ous: NodeOUs | None = NodeOUs(),  # noqa: B008 - frozen, so sharing the default is safe
) -> OrgRegistry:
    """An OrgRegistry holding every member and orderer org of ``configs``.

    An org in several channels must be defined the same way in each (same roots, TLS roots and CRLs): one
    registry cannot hold two versions of an MSP ID, and silently picking one would accept identities that a
    channel did not admit.
    """
    registry = OrgRegistry(now=now)
    seen: dict[str, tuple[str, tuple[frozenset[bytes], frozenset[bytes], frozenset[bytes]]]] = {}
    for config in configs:
        for entry in orgs_of(config):
            definition = _definition(entry)
            previous = seen.get(entry.mspid)
            if previous is not None:
                if previous[1] != definition:
                    raise ChannelConfigError(
                        f"org {entry.mspid} is defined differently in channels {previous[0]} and {config.name}"
                    )
                continue
            seen[entry.mspid] = (config.name, definition)
            registry.add_org(_to_org(entry, node_ous))
            for crl in definition[2]:
                try:
                    registry.add_crl(entry.mspid, crl)
                except CryptoError as exc:
                    raise ChannelConfigError(f"org {entry.mspid}: {exc}") from None
    return registry
