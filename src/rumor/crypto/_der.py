"""The few pieces of ASN.1 DER that rumor writes and splits by hand.

Fabric hashes a block header as the DER encoding of SEQUENCE { INTEGER, OCTET
STRING, OCTET STRING }, and an MSP rewrites a certificate's signature BIT STRING
to make it low-S. Both need only tag-length-value framing, which is small
enough to write here rather than pull in an ASN.1 library.
"""

from __future__ import annotations

INTEGER = 0x02
BIT_STRING = 0x03
OCTET_STRING = 0x04
SEQUENCE = 0x30


class DERError(ValueError):
    """Bytes that are not the DER framing the caller expected."""


def encode_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + encode_length(len(content)) + content


def integer(value: int) -> bytes:
    """INTEGER in minimal two's-complement form (so 128 needs a leading zero byte)."""
    size = value.bit_length() // 8 + 1 if value >= 0 else (value + 1).bit_length() // 8 + 1
    return tlv(INTEGER, value.to_bytes(size, "big", signed=True))


def octet_string(value: bytes) -> bytes:
    return tlv(OCTET_STRING, value)


def sequence(*elements: bytes) -> bytes:
    return tlv(SEQUENCE, b"".join(elements))


def read_tlv(data: bytes, offset: int = 0) -> tuple[int, int, int]:
    """Split the element at ``offset`` into (tag, start of content, end of content).

    Only single-byte tags and definite lengths are accepted: DER allows nothing else
    in the structures rumor reads.
    """
    if offset + 2 > len(data):
        raise DERError("truncated element")
    tag = data[offset]
    first = data[offset + 1]
    pos = offset + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise DERError("bad length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
        if length < 0x80 or data[pos - count] == 0:
            raise DERError("non-minimal length")
    end = pos + length
    if end > len(data):
        raise DERError("truncated element")
    return tag, pos, end


def split_sequence(data: bytes) -> list[bytes]:
    """The encoded elements of a SEQUENCE that spans all of ``data``."""
    tag, start, end = read_tlv(data)
    if tag != SEQUENCE or end != len(data):
        raise DERError("not a single SEQUENCE")
    elements = []
    pos = start
    while pos < end:
        _, _, elem_end = read_tlv(data, pos)
        elements.append(data[pos:elem_end])
        pos = elem_end
    return elements
