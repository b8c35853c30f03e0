from __future__ import annotations

import hashlib

import pytest

from rumor.crypto import _der
from rumor.crypto.api import InvalidBlock
from rumor.crypto.blocks import (
    METADATA_ENTRIES,
    SIGNATURES_INDEX,
    block_data_hash,
    block_header_hash,
    block_signatures,
    header_bytes,
    new_block,
    open_block,
    sign_block,
)
from rumor.wire.pb.common import common_pb2


def header(number: int, previous_hash: bytes = b"", data_hash: bytes = b"") -> common_pb2.BlockHeader:
    return common_pb2.BlockHeader(number=number, previous_hash=previous_hash, data_hash=data_hash)


def test_header_bytes_of_empty_genesis_header():
    assert header_bytes(header(0)) == bytes.fromhex("30 07 02 01 00 04 00 04 00")


def test_header_bytes_with_hashes():
    expected = bytes.fromhex("30 47 02 01 01 04 20") + b"\x11" * 32 + bytes.fromhex("04 20") + b"\x22" * 32
    assert header_bytes(header(1, b"\x11" * 32, b"\x22" * 32)) == expected
    assert block_header_hash(header(1, b"\x11" * 32, b"\x22" * 32)) == hashlib.sha256(expected).digest()


@pytest.mark.parametrize(
    ("number", "encoded"),
    [
        (0, "020100"),
        (127, "02017f"),
        (128, "02020080"),  # a leading zero keeps it positive in two's complement
        (255, "020200ff"),
        (256, "02020100"),
        (2**63, "0209008000000000000000"),
        (2**64 - 1, "020900ffffffffffffffff"),
    ],
)
def test_integer_is_minimal_twos_complement(number, encoded):
    assert _der.integer(number) == bytes.fromhex(encoded)
    assert header_bytes(header(number))[2:-4] == bytes.fromhex(encoded)


def test_long_form_lengths():
    previous = b"\xab" * 200
    encoded = header_bytes(header(0, previous))
    assert encoded == bytes.fromhex("30 81 d0 02 01 00 04 81 c8") + previous + bytes.fromhex("04 00")
    assert _der.octet_string(b"\x00" * 300)[:4] == bytes.fromhex("04 82 01 2c")


def test_split_sequence_inverts_sequence():
    parts = [_der.integer(5), _der.octet_string(b"x" * 300), _der.sequence()]
    assert _der.split_sequence(_der.sequence(*parts)) == parts
    for bad in (b"", b"\x30", b"\x30\x05\x02\x01", _der.sequence(_der.integer(1)) + b"\x00", b"\x30\x81\x01\x00"):
        with pytest.raises(_der.DERError):
            _der.split_sequence(bad)


def test_data_hash_is_sha256_of_concatenated_entries():
    data = [b"tx1", b"", b"tx3"]
    assert block_data_hash(data) == hashlib.sha256(b"tx1tx3").digest()
    assert block_data_hash(common_pb2.BlockData(data=data)) == hashlib.sha256(b"tx1tx3").digest()


def test_new_block_fills_hash_and_pads_metadata():
    block = new_block(7, b"\x01" * 32, [b"a", b"b"])
    assert block.header.number == 7
    assert block.header.previous_hash == b"\x01" * 32
    assert block.header.data_hash == hashlib.sha256(b"ab").digest()
    assert list(block.metadata.metadata) == [b""] * METADATA_ENTRIES == [b""] * 5


class FakeSigner:
    def __init__(self, name: bytes) -> None:
        self.identity = name

    def sign(self, message: bytes) -> bytes:
        return b"sig:" + self.identity + b":" + hashlib.sha256(message).digest()


def test_sign_block_layout_matches_fabric():
    block = new_block(3, b"prev", [b"x"])
    sign_block(block, FakeSigner(b"orderer1"), value=b"orderer-metadata", nonce=b"n" * 24)
    metadata = common_pb2.Metadata.FromString(block.metadata.metadata[SIGNATURES_INDEX])
    assert metadata.value == b"orderer-metadata"
    (entry,) = metadata.signatures
    sig_header = common_pb2.SignatureHeader.FromString(entry.signature_header)
    assert (sig_header.creator, sig_header.nonce) == (b"orderer1", b"n" * 24)
    signed = b"orderer-metadata" + entry.signature_header + header_bytes(block.header)
    assert entry.signature == FakeSigner(b"orderer1").sign(signed)
    (found,) = block_signatures(block)
    assert (found.creator, found.signed_data, found.signature) == (b"orderer1", signed, entry.signature)


def test_sign_block_pads_short_metadata_and_accumulates_signers():
    block = common_pb2.Block(header=header(1), data=common_pb2.BlockData())
    sign_block(block, FakeSigner(b"o1"), nonce=b"")
    sign_block(block, FakeSigner(b"o2"), nonce=b"")
    assert len(block.metadata.metadata) == METADATA_ENTRIES
    assert [s.creator for s in block_signatures(block)] == [b"o1", b"o2"]


def test_random_nonce_by_default():
    a = sign_block(new_block(0, b"", []), FakeSigner(b"o"))
    b = sign_block(new_block(0, b"", []), FakeSigner(b"o"))
    assert a.metadata.metadata[SIGNATURES_INDEX] != b.metadata.metadata[SIGNATURES_INDEX]


def test_open_block_checks_number_and_data_hash():
    block = new_block(4, b"", [b"payload"])
    assert open_block(block.SerializeToString(), 4) == block
    with pytest.raises(InvalidBlock, match="expected 5"):
        open_block(block.SerializeToString(), 5)
    block.data.data[0] = b"tampered"
    with pytest.raises(InvalidBlock, match="data hash"):
        open_block(block.SerializeToString(), 4)
    with pytest.raises(InvalidBlock, match="undecodable"):
        open_block(b"\xff\xff\xff", 4)
    with pytest.raises(InvalidBlock, match="no header"):
        open_block(b"", 0)


def test_missing_or_garbage_signature_metadata():
    block = new_block(0, b"", [])
    with pytest.raises(InvalidBlock, match="no signature metadata"):
        list(block_signatures(block))
    block.metadata.metadata[SIGNATURES_INDEX] = b"\xff\xff"
    with pytest.raises(InvalidBlock, match="undecodable signature metadata"):
        list(block_signatures(block))


def test_a_block_padded_with_signatures_is_refused_before_any_is_checked():
    """Fuzzing found that a relaying peer can append signature entries to a genuine block, each costing a
    signature check: 100 MiB of them was ~20 s of CPU."""
    from rumor.crypto.blocks import MAX_BLOCK_SIGNATURES

    block = common_pb2.Block(header=header(1), data=common_pb2.BlockData())
    for i in range(MAX_BLOCK_SIGNATURES):
        sign_block(block, FakeSigner(b"o%d" % i), nonce=b"")
    assert len(list(block_signatures(block))) == MAX_BLOCK_SIGNATURES
    sign_block(block, FakeSigner(b"one too many"), nonce=b"")
    with pytest.raises(InvalidBlock, match=f"at most {MAX_BLOCK_SIGNATURES}"):
        next(iter(block_signatures(block)))
