"""Fabric's block hashing and orderer block signatures.

    data_hash    = SHA-256(data[0] || data[1] || ...)
    header bytes = DER of SEQUENCE { INTEGER number, OCTET STRING previous_hash, OCTET STRING data_hash }
    block hash   = SHA-256(header bytes)          (the next block's previous_hash)

An orderer signs a block by putting into ``metadata[SIGNATURES]`` a
``common.Metadata{value, signatures}`` where each ``MetadataSignature`` holds a
serialized ``SignatureHeader{creator, nonce}`` and a signature over
``value || signature_header || header bytes``. The metadata list is padded to one
entry per ``BlockMetadataIndex`` name, as Fabric's block constructor does.

``open_block`` and ``block_signatures`` carry the checks every block verifier
shares (decodable, expected number, data hash matches, signature records
well-formed) so that the X.509 and the cheap crypto services differ only in how
they check a single signature. Signatures that name their signer by a consenter
identifier (Fabric 3's BFT ``identifier_header``) are skipped: rumor does not
know consenter sets.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from google.protobuf.message import DecodeError

from rumor.crypto import _der
from rumor.crypto.api import InvalidBlock
from rumor.wire.pb.common import common_pb2

SIGNATURES_INDEX = common_pb2.BlockMetadataIndex.Value("SIGNATURES")
METADATA_ENTRIES = len(common_pb2.BlockMetadataIndex.keys())
NONCE_SIZE = 24  # Fabric's signature-header nonce length


class BlockSigner(Protocol):
    """Anything that can sign as an orderer: a SigningIdentity, a cheap crypto service, ..."""

    @property
    def identity(self) -> bytes: ...

    def sign(self, message: bytes) -> bytes: ...


def header_bytes(header: common_pb2.BlockHeader) -> bytes:
    return _der.sequence(
        _der.integer(header.number), _der.octet_string(header.previous_hash), _der.octet_string(header.data_hash)
    )


def block_header_hash(header: common_pb2.BlockHeader) -> bytes:
    return hashlib.sha256(header_bytes(header)).digest()


def block_data_hash(data: common_pb2.BlockData | Iterable[bytes]) -> bytes:
    entries = data.data if isinstance(data, common_pb2.BlockData) else data
    digest = hashlib.sha256()
    for entry in entries:
        digest.update(entry)
    return digest.digest()


def new_block(number: int, previous_hash: bytes, data_list: Iterable[bytes]) -> common_pb2.Block:
    """An unsigned block holding ``data_list``, its data hash filled in and metadata padded."""
    block = common_pb2.Block()
    block.header.number = number
    block.header.previous_hash = previous_hash
    block.data.data.extend(data_list)
    block.header.data_hash = block_data_hash(block.data)
    block.metadata.metadata.extend([b""] * METADATA_ENTRIES)
    return block


def _pad_metadata(block: common_pb2.Block) -> None:
    missing = METADATA_ENTRIES - len(block.metadata.metadata)
    if missing > 0:
        block.metadata.metadata.extend([b""] * missing)


def sign_block(
    block: common_pb2.Block,
    signer: BlockSigner,
    *,
    value: bytes = b"",
    nonce: bytes | None = None,
) -> common_pb2.Block:
    """Add ``signer``'s signature to ``block``'s SIGNATURES metadata, in place; returns the block.

    ``value`` is the metadata value that the signature also covers (Fabric puts the
    serialized OrdererBlockMetadata there). Existing signatures are kept when the
    value is the same, so several orderers can sign one block; a different value
    starts over. ``nonce`` defaults to random bytes; pass one for reproducible blocks.
    """
    _pad_metadata(block)
    metadata = common_pb2.Metadata()
    existing = block.metadata.metadata[SIGNATURES_INDEX]
    if existing:
        try:
            metadata.ParseFromString(existing)
        except DecodeError:
            metadata = common_pb2.Metadata()
        if metadata.value != value:
            metadata = common_pb2.Metadata()
    metadata.value = value
    signature_header = common_pb2.SignatureHeader(
        creator=signer.identity, nonce=os.urandom(NONCE_SIZE) if nonce is None else nonce
    ).SerializeToString(deterministic=True)
    signed = value + signature_header + header_bytes(block.header)
    metadata.signatures.append(
        common_pb2.MetadataSignature(signature_header=signature_header, signature=signer.sign(signed))
    )
    block.metadata.metadata[SIGNATURES_INDEX] = metadata.SerializeToString(deterministic=True)
    return block


def decode_block(block_bytes: bytes) -> common_pb2.Block:
    block = common_pb2.Block()
    try:
        block.ParseFromString(block_bytes)
    except (DecodeError, ValueError, TypeError) as exc:
        raise InvalidBlock(f"undecodable block: {exc}") from None
    return block


def open_block(block_bytes: bytes, seq_num: int) -> common_pb2.Block:
    """Decode a block and check its number and data hash; InvalidBlock when either is off."""
    block = decode_block(block_bytes)
    if not block.HasField("header"):
        raise InvalidBlock("block has no header")
    if block.header.number != seq_num:
        raise InvalidBlock(f"block number {block.header.number}, expected {seq_num}")
    if block_data_hash(block.data) != block.header.data_hash:
        raise InvalidBlock(f"block {seq_num}: data hash does not match its data")
    return block


@dataclass(frozen=True)
class BlockSignature:
    """One orderer signature found in a block: who claims it, what it signs, the signature."""

    creator: bytes
    signed_data: bytes
    signature: bytes


MAX_BLOCK_SIGNATURES = 128
"""Signature entries a block may carry: a Raft or etcd ordering service signs once; a BFT one of n nodes about
2n/3 times. More is only work for the verifier (docs/security.md)."""


def block_signatures(block: common_pb2.Block) -> Iterator[BlockSignature]:
    """The signatures in ``metadata[SIGNATURES]``; InvalidBlock when that entry is missing or undecodable."""
    if len(block.metadata.metadata) <= SIGNATURES_INDEX or not block.metadata.metadata[SIGNATURES_INDEX]:
        raise InvalidBlock(f"block {block.header.number}: no signature metadata")
    metadata = common_pb2.Metadata()
    try:
        metadata.ParseFromString(block.metadata.metadata[SIGNATURES_INDEX])
    except (DecodeError, ValueError, TypeError) as exc:
        raise InvalidBlock(f"block {block.header.number}: undecodable signature metadata: {exc}") from None
    if len(metadata.signatures) > MAX_BLOCK_SIGNATURES:
        # Anyone who relays a block can append entries; each costs a signature check, so a block with more than
        # any ordering service signs with is refused before one is checked.
        raise InvalidBlock(
            f"block {block.header.number}: {len(metadata.signatures)} signatures (at most {MAX_BLOCK_SIGNATURES})"
        )
    hdr = header_bytes(block.header)
    for entry in metadata.signatures:
        if not entry.signature_header:
            continue
        signature_header = common_pb2.SignatureHeader()
        try:
            signature_header.ParseFromString(entry.signature_header)
        except (DecodeError, ValueError, TypeError):
            continue
        yield BlockSignature(
            creator=signature_header.creator,
            signed_data=metadata.value + entry.signature_header + hdr,
            signature=entry.signature,
        )
