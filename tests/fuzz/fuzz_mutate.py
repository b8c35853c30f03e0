"""Structure-aware mutation of protobuf messages and of raw bytes, driven by a ``Chooser``.

Every random decision goes through a ``Chooser``: ``RandomChooser`` (a seeded ``random.Random``) drives the long
run of ``make fuzz``, ``HypothesisChooser`` (hypothesis' ``data.draw``) the bounded tests of ``make test``, where a
failure shrinks to a small example. The same mutators serve both, so the tests exercise exactly what the long
run does.

``mutate_message`` edits a message in place: it walks down a random path of set fields, also into ``bytes``
fields that hold another serialized message (``embedded_type`` knows which: an Envelope's payload is a
GossipMessage, a block's data entries are Envelopes, a config value is a BatchSize or an MSPConfig depending on
its key ...), and at the end of the path changes one thing: a scalar set to an edge value (0, 2^64-1, an
unknown enum number, an empty or huge string), a sub-message cleared, replaced or switched to another member of
its oneof, a repeated field emptied, shuffled or grown by hundreds of copies. ``mutate_bytes`` flips, inserts,
deletes and splices bytes of a serialized form; what it produces usually does not decode, which is the point.
"""

from __future__ import annotations

import base64
import functools
import random
import re
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

from rumor.wire.pb.common import common_pb2, configtx_pb2, policies_pb2
from rumor.wire.pb.gossip import message_pb2 as gossip_pb2
from rumor.wire.pb.msp import identities_pb2, msp_config_pb2, msp_principal_pb2
from rumor.wire.pb.orderer import configuration_pb2 as orderer_config_pb2
from rumor.wire.pb.peer import configuration_pb2 as peer_config_pb2

T = TypeVar("T")

MAX_BLOB = 1 << 20
"""The largest random blob a mutation writes (1 MiB): large enough to cost, small enough to keep runs fast."""

MAX_GROWTH = 4 << 20
"""Bytes that copying elements of a repeated field may add at most (a 1 MiB block copied 3,000 times would not
fit in memory, and says nothing a few copies do not)."""


class Chooser(Protocol):
    """The source of every random decision of a mutation."""

    def below(self, n: int) -> int:
        """An integer in [0, n); n >= 1."""
        ...

    def raw(self, n: int) -> bytes:
        """``n`` arbitrary bytes."""
        ...


class RandomChooser:
    """Decisions from a seeded ``random.Random``: fast, for the long run."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def below(self, n: int) -> int:
        return self.rng.randrange(n)

    def raw(self, n: int) -> bytes:
        return self.rng.randbytes(n)


class HypothesisChooser:
    """Decisions drawn from hypothesis (``st.data()``), so that a failing example shrinks.

    Large blobs are expanded from a drawn seed: hypothesis keeps each example's choices small.
    """

    def __init__(self, data: Any) -> None:
        from hypothesis import strategies as st

        self._data = data
        self._st = st

    def below(self, n: int) -> int:
        if n <= 1:
            return 0
        return int(self._data.draw(self._st.integers(0, n - 1)))

    def raw(self, n: int) -> bytes:
        if n <= 64:
            return bytes(self._data.draw(self._st.binary(min_size=n, max_size=n)))
        seed = self._data.draw(self._st.integers(0, 2**32 - 1))
        return random.Random(seed).randbytes(n)


def chance(c: Chooser, percent: int) -> bool:
    """True about ``percent`` times in a hundred."""
    return c.below(100) < percent


def pick(c: Chooser, items: Sequence[T]) -> T:
    return items[c.below(len(items))]


def weighted(c: Chooser, options: Sequence[tuple[int, T]]) -> T:
    total = sum(w for w, _ in options)
    point = c.below(total)
    for weight, value in options:
        if point < weight:
            return value
        point -= weight
    raise AssertionError("unreachable")


# --- edge values ------------------------------------------------------------------------------------

_UINT64 = (0, 1, 2, 3, 7, 9, 10, 11, 127, 128, 255, 256, 1000, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**53 + 1)
_UINT64_TOP = (2**63 - 1, 2**63, 2**64 - 2, 2**64 - 1)
_INT_EDGES = (0, 1, -1, 2, -2, 127, -128, 2**31 - 1, -(2**31))

_RANGES = {
    FieldDescriptor.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.CPPTYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.CPPTYPE_UINT64: (0, 2**64 - 1),
}

_STRINGS = (
    "",
    "a",
    "mychannel",
    "fuzzchannel",
    "Org1MSP",
    "Org2MSP",
    "OrdererMSP",
    "p1:7051",
    "127.0.0.1:7051",
    "host:0",
    "host:99999",
    ":",
    "[::1]:7051",
    "\x00",
    "../../etc/passwd",
    "/Channel/Application/Admins",
    "Admins",
    "ANY",
    "é€\U0001f600",
    "a" * 300,
    "9" * 5000,
    "2s",
    "1h30m",
    "-1s",
    "99999999999999999999h",
    "1" + "0" * 400 + "s",  # a number beyond any float
    "SHA256",
    "V2_0",
)


def integer(c: Chooser, cpp_type: int, current: int = 0) -> int:
    lo, hi = _RANGES[cpp_type]
    how = c.below(6)
    if how == 0:
        value = pick(c, _UINT64 + _UINT64_TOP) if lo == 0 else pick(c, _INT_EDGES)
    elif how == 1:
        value = current + pick(c, (-2, -1, 1, 2))
    elif how == 2:
        value = c.below(16)
    elif how == 3:
        value = hi - c.below(3)
    elif how == 4:
        value = lo + c.below(3)
    else:
        value = lo + c.below(hi - lo + 1)
    return min(max(value, lo), hi)


def text(c: Chooser) -> str:
    how = c.below(5)
    if how == 0:
        return "".join(chr(32 + c.below(95)) for _ in range(c.below(40)))
    if how == 1:
        return "".join(chr(c.below(0xD7FF) + 1) for _ in range(c.below(12)))
    if how == 2 and chance(c, 25):
        # A long run of one character: what makes a backtracking regular expression take quadratic time.
        return pick(c, ("9", "a", " ", ":", ".", "é")) * weighted(c, [(6, 1000), (3, 16_000), (1, 100_000)])
    return pick(c, _STRINGS)


def blob(c: Chooser, dictionary: Sequence[bytes] = ()) -> bytes:
    how = c.below(10)
    if how == 0:
        return b""
    if how <= 2 and dictionary:
        return pick(c, dictionary)
    if how == 3:
        size = weighted(c, [(8, 1024), (3, 64 * 1024), (1, MAX_BLOB)])
        return c.raw(1) * size
    if how == 4:
        return c.raw(32)
    return c.raw(c.below(48))


# --- byte mutations ---------------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def mutate_bytes(c: Chooser, data: bytes, dictionary: Sequence[bytes] = ()) -> bytes:
    """``data`` with one to four byte-level edits (flip, insert, delete, splice, huge length prefixes ...)."""
    out = bytearray(data)
    for _ in range(1 + c.below(4)):
        how = c.below(10)
        at = c.below(len(out) + 1)
        if how == 0 and out:
            index = min(at, len(out) - 1)
            out[index] ^= 1 << c.below(8)
        elif how == 1 and out:
            out[min(at, len(out) - 1)] = pick(c, (0x00, 0x01, 0x7F, 0x80, 0xFF, 0x0A, 0x12, 0x08))
        elif how == 2:
            out[at:at] = c.raw(1 + c.below(8))
        elif how == 3 and out:
            end = min(len(out), at + 1 + c.below(16))
            del out[at:end]
        elif how == 4 and out:
            start = c.below(len(out))
            piece = out[start : start + 1 + c.below(64)]
            out[at:at] = piece * (1 + c.below(4))
        elif how == 5:
            del out[at:]
        elif how == 6:
            # A length-delimited field whose length claims far more than there is, or a varint of ten bytes.
            out[at:at] = bytes([(1 + c.below(30)) << 3 | 2]) + _varint(pick(c, (2**31, 2**32 - 1, 2**63, 2**64 - 1)))
        elif how == 7 and dictionary:
            out[at:at] = pick(c, dictionary)
        elif how == 8:
            # An unknown field with a random wire type: decoders must skip it or refuse the whole message.
            out += _varint((1 + c.below(2000)) << 3 | c.below(6)) + c.raw(c.below(10))
        else:
            out[at:at] = c.raw(1)
    return bytes(out)


def mutate_pem(c: Chooser, pem: bytes) -> bytes:
    """A PEM certificate whose DER was mutated, still in PEM armour: the PEM layer loads it, so the mutation
    reaches the X.509 parser (and cryptography's lazily parsed fields behind it)."""
    lines = pem.strip().split(b"\n")
    if len(lines) < 3 or not lines[0].startswith(b"-----BEGIN") or chance(c, 20):
        return mutate_bytes(c, pem)
    try:
        der = base64.b64decode(b"".join(lines[1:-1]), validate=True)
    except ValueError:
        return mutate_bytes(c, pem)
    der = _corrupt_text(c, der) if chance(c, 40) else mutate_bytes(c, der)
    return lines[0] + b"\n" + base64.encodebytes(der) + lines[-1] + b"\n"


def _corrupt_text(c: Chooser, der: bytes) -> bytes:
    """``der`` with bytes inside one of its runs of text (a name, a URL) made invalid UTF-8, lengths unchanged: the
    structure still parses, the field does not, and X.509 parsers read such fields only when asked."""
    runs = [m.span() for m in re.finditer(rb"[ -~]{4,}", der)]
    if not runs:
        return mutate_bytes(c, der)
    start, end = pick(c, runs)
    at = start + c.below(end - start)
    return der[:at] + pick(c, (b"\xff", b"\x80", b"\xc3", b"\x00")) + der[at + 1 :]


# --- which bytes fields hold which message ----------------------------------------------------------

_CONFIG_VALUES: dict[str, type[Message]] = {
    "MSP": msp_config_pb2.MSPConfig,
    "AnchorPeers": peer_config_pb2.AnchorPeers,
    "Endpoints": configtx_pb2.OrdererAddresses,
    "OrdererAddresses": configtx_pb2.OrdererAddresses,
    "BatchSize": orderer_config_pb2.BatchSize,
    "BatchTimeout": orderer_config_pb2.BatchTimeout,
    "ConsensusType": orderer_config_pb2.ConsensusType,
    "ChannelRestrictions": orderer_config_pb2.ChannelRestrictions,
    "Capabilities": configtx_pb2.Capabilities,
    "HashingAlgorithm": configtx_pb2.HashingAlgorithm,
    "BlockDataHashingStructure": configtx_pb2.BlockDataHashingStructure,
    "Consortium": configtx_pb2.Consortium,
}

_EMBEDDED: dict[tuple[str, str], type[Message]] = {
    ("gossip.Envelope", "payload"): gossip_pb2.GossipMessage,
    ("gossip.SecretEnvelope", "payload"): gossip_pb2.Secret,
    ("gossip.Payload", "data"): common_pb2.Block,
    ("gossip.AliveMessage", "identity"): identities_pb2.SerializedIdentity,
    ("gossip.PeerIdentity", "cert"): identities_pb2.SerializedIdentity,
    ("gossip.ConnEstablish", "identity"): identities_pb2.SerializedIdentity,
    ("common.BlockData", "data"): common_pb2.Envelope,
    ("common.Envelope", "payload"): common_pb2.Payload,
    ("common.Header", "channel_header"): common_pb2.ChannelHeader,
    ("common.Header", "signature_header"): common_pb2.SignatureHeader,
    ("common.SignatureHeader", "creator"): identities_pb2.SerializedIdentity,
    ("common.BlockMetadata", "metadata"): common_pb2.Metadata,
    ("common.MetadataSignature", "signature_header"): common_pb2.SignatureHeader,
    ("common.Metadata", "value"): common_pb2.OrdererBlockMetadata,
    ("common.ConfigUpdateEnvelope", "config_update"): configtx_pb2.ConfigUpdate,
    ("common.ConfigSignature", "signature_header"): common_pb2.SignatureHeader,
    ("msp.MSPConfig", "config"): msp_config_pb2.FabricMSPConfig,
}

_PRINCIPALS: dict[int, type[Message]] = {
    msp_principal_pb2.MSPPrincipal.ROLE: msp_principal_pb2.MSPRole,
    msp_principal_pb2.MSPPrincipal.ORGANIZATION_UNIT: msp_principal_pb2.OrganizationUnit,
    msp_principal_pb2.MSPPrincipal.IDENTITY: identities_pb2.SerializedIdentity,
}


def embedded_type(parent: Message, field: FieldDescriptor, key: str | None, c: Chooser) -> type[Message] | None:
    """The message type serialized in bytes field ``field`` of ``parent`` (None: plain bytes).

    ``key`` is the map key when ``parent`` is a map entry's value (a config value's meaning depends on it).
    """
    full = parent.DESCRIPTOR.full_name
    if full == "common.ConfigValue" and field.name == "value" and key is not None:
        return _CONFIG_VALUES.get(key)
    if full == "common.Policy" and field.name == "value":
        policy_type = parent.type  # type: ignore[attr-defined]
        if policy_type == policies_pb2.Policy.SIGNATURE:
            return policies_pb2.SignaturePolicyEnvelope
        if policy_type == policies_pb2.Policy.IMPLICIT_META:
            return policies_pb2.ImplicitMetaPolicy
        return None
    if full == "msp.MSPPrincipal" and field.name == "principal":
        return _PRINCIPALS.get(parent.principal_classification)  # type: ignore[attr-defined]
    if full == "common.Payload" and field.name == "data":
        # A CONFIG payload holds a ConfigEnvelope, a CONFIG_UPDATE one a ConfigUpdateEnvelope; the header says
        # which, but a guess is as good for fuzzing: a wrong guess just makes a stranger mutation.
        return pick(c, (configtx_pb2.ConfigEnvelope, configtx_pb2.ConfigUpdateEnvelope))
    return _EMBEDDED.get((full, field.name))


# --- message mutations ------------------------------------------------------------------------------


class Mutator:
    """Mutates messages in place; ``dictionary`` holds byte strings worth splicing in (ids, identities, ...)."""

    def __init__(self, c: Chooser, dictionary: Sequence[bytes] = ()) -> None:
        self.c = c
        self.dictionary = dictionary

    # -- entry points --

    def mutate(self, msg: Message, rounds: int = 1) -> None:
        for _ in range(rounds):
            if chance(self.c, 50):
                self._mutate_anywhere(msg)
            else:
                self._mutate(msg, None, 0)

    def random_message(self, cls: type[Message], depth: int = 0) -> Message:
        msg = cls()
        self._fill(msg, depth)
        return msg

    # -- internals --

    def _fields(self, msg: Message) -> list[FieldDescriptor]:
        return list(msg.DESCRIPTOR.fields)

    def _is_set(self, msg: Message, field: FieldDescriptor) -> bool:
        if field.is_repeated:
            return len(getattr(msg, field.name)) > 0
        if field.has_presence:
            return msg.HasField(field.name)
        return getattr(msg, field.name) != field.default_value

    def _mutate(self, msg: Message, key: str | None, depth: int) -> None:
        c = self.c
        fields = self._fields(msg)
        if not fields:
            return
        if chance(c, 6) and self._translate(msg):
            return
        present = [f for f in fields if self._is_set(msg, f)]
        # Mostly walk what is there (deep paths reach the checks that matter); sometimes set what is not.
        field = pick(c, present) if present and chance(c, 80) else pick(c, fields)
        descend = depth < 12 and chance(c, 65)
        if field.is_repeated and field.message_type is not None and field.message_type.GetOptions().map_entry:
            self._mutate_map(msg, field, descend, depth)
        elif field.is_repeated:
            self._mutate_repeated(msg, field, descend, depth)
        elif field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
            sub = getattr(msg, field.name)
            if descend and msg.HasField(field.name):
                self._mutate(sub, None, depth + 1)
            else:
                self._replace_message(msg, field)
        else:
            self._mutate_scalar(msg, field, key, descend, depth)

    def _mutate_anywhere(self, msg: Message) -> None:
        """Mutate one sub-message picked uniformly among all of ``msg``'s, embedded ones included.

        A random walk from the root reaches a node twelve levels down (an org's MSP inside a config inside an
        envelope inside a block) once in thousands of tries; picking among all nodes reaches it as often as any.
        """
        nodes = self._nodes(msg)
        node, key, writebacks = pick(self.c, nodes)
        self._mutate(node, key, 10)
        for writeback in writebacks:  # innermost first: each serializes its message into the one around it
            writeback()

    def _nodes(self, root: Message, limit: int = 600) -> list[tuple[Message, str | None, list[Callable[[], None]]]]:
        """Every sub-message of ``root`` (up to ``limit``) with its map key, and how to write it back when it was
        decoded from a bytes field."""
        out: list[tuple[Message, str | None, list[Callable[[], None]]]] = []

        def walk(msg: Message, key: str | None, writebacks: list[Callable[[], None]], depth: int) -> None:
            if len(out) >= limit or depth > 24:
                return
            out.append((msg, key, writebacks))
            for field, value in msg.ListFields():
                if field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
                    if field.message_type.GetOptions().map_entry:
                        if field.message_type.fields_by_name["value"].cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
                            for entry_key in sorted(value.keys())[:16]:
                                walk(value[entry_key], entry_key, writebacks, depth + 1)
                    elif field.is_repeated:
                        for item in value[:16]:
                            walk(item, None, writebacks, depth + 1)
                    else:
                        walk(value, None, writebacks, depth + 1)
                elif field.type == FieldDescriptor.TYPE_BYTES:
                    items = list(value[:8]) if field.is_repeated else [value]
                    for index, item in enumerate(items):
                        inner_cls = embedded_type(msg, field, key, self.c) if item else None
                        if inner_cls is None:
                            continue
                        inner = inner_cls()
                        try:
                            inner.ParseFromString(item)
                        except DecodeError:
                            continue
                        back = functools.partial(_write_back, msg, field, index, inner)
                        walk(inner, None, [back, *writebacks], depth + 1)

        walk(root, None, [], 0)
        return out

    def _translate(self, msg: Message) -> bool:
        """Move every unsigned integer of ``msg`` by one large offset: relations between them (start <= end,
        seq_num == header number) survive, so the message passes the checks of order and lands in the range
        where storage and arithmetic overflow. False when ``msg`` has no such field."""
        unsigned = [
            f
            for f in msg.DESCRIPTOR.fields
            if not f.is_repeated and f.cpp_type in (FieldDescriptor.CPPTYPE_UINT64, FieldDescriptor.CPPTYPE_UINT32)
        ]
        if not unsigned:
            return False
        offset = pick(self.c, (2**31, 2**32, 2**53, 2**63 - 16, 2**63, 2**64 - 64))
        for field in unsigned:
            hi = _RANGES[field.cpp_type][1]
            setattr(msg, field.name, min(getattr(msg, field.name) + offset, hi))
        return True

    def _mutate_scalar(self, msg: Message, field: FieldDescriptor, key: str | None, descend: bool, depth: int) -> None:
        c = self.c
        if field.type == FieldDescriptor.TYPE_BYTES:
            current = getattr(msg, field.name)
            setattr(msg, field.name, self._mutate_blob(msg, field, key, current, descend, depth))
        else:
            setattr(msg, field.name, self._scalar(field, getattr(msg, field.name)))
        if field.containing_oneof is not None and chance(c, 10):
            msg.ClearField(field.name)

    def _mutate_blob(
        self, msg: Message, field: FieldDescriptor, key: str | None, current: bytes, descend: bool, depth: int
    ) -> bytes:
        c = self.c
        inner_cls = embedded_type(msg, field, key, c)
        if inner_cls is not None and descend:
            inner = inner_cls()
            try:
                inner.ParseFromString(current)
            except DecodeError:
                return mutate_bytes(c, current, self.dictionary)
            self._mutate(inner, None, depth + 1)
            return inner.SerializeToString()
        if inner_cls is not None and chance(c, 30):
            return self.random_message(inner_cls, depth + 1).SerializeToString()
        if current.startswith(b"-----BEGIN") and chance(c, 60):
            return mutate_pem(c, current)
        if current and chance(c, 50):
            return mutate_bytes(c, current, self.dictionary)
        return blob(c, self.dictionary)

    def _scalar(self, field: FieldDescriptor, current: Any) -> Any:
        c = self.c
        cpp = field.cpp_type
        if cpp == FieldDescriptor.CPPTYPE_BOOL:
            return not current if chance(c, 70) else bool(c.below(2))
        if cpp == FieldDescriptor.CPPTYPE_ENUM:
            known = [v.number for v in field.enum_type.values]
            return pick(c, known) if chance(c, 60) else integer(c, FieldDescriptor.CPPTYPE_INT32, current)
        if cpp in _RANGES:
            return integer(c, cpp, int(current))
        if field.type == FieldDescriptor.TYPE_STRING:
            return text(c)
        if field.type == FieldDescriptor.TYPE_BYTES:
            return blob(c, self.dictionary)
        # float and double: rumor's messages have none, but a generic mutator should not fail on them.
        return pick(c, (0.0, -1.0, 1e308, float("inf"), float("nan")))

    def _replace_message(self, msg: Message, field: FieldDescriptor) -> None:
        c = self.c
        how = c.below(4)
        if how == 0:
            msg.ClearField(field.name)
        elif how == 1:
            getattr(msg, field.name).SetInParent()  # an empty sub-message: set, but with nothing in it
        else:
            getattr(msg, field.name).CopyFrom(self.random_message(type(getattr(msg, field.name))))

    def _mutate_repeated(self, msg: Message, field: FieldDescriptor, descend: bool, depth: int) -> None:
        c = self.c
        items = getattr(msg, field.name)
        is_message = field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE
        how = c.below(8)
        if len(items) and descend and how < 4:
            index = c.below(len(items))
            if is_message:
                self._mutate(items[index], None, depth + 1)
            elif field.type == FieldDescriptor.TYPE_BYTES:
                items[index] = self._mutate_blob(msg, field, None, items[index], True, depth)
            else:
                items[index] = self._scalar(field, items[index])
        elif how == 4 and len(items):
            del items[c.below(len(items))]
        elif how == 5 and len(items):
            # Many copies of one element: every handler must bound what it takes from one message.
            element = items[c.below(len(items))]
            size = element.ByteSize() if is_message else len(element) if isinstance(element, bytes) else 8
            copies = min(weighted(c, [(6, 2), (3, 100), (1, 3000)]), max(1, MAX_GROWTH // max(size, 1)))
            items.extend([element] * copies)
        elif how == 6 and len(items) > 1:
            values = list(items)
            random.Random(c.below(2**32)).shuffle(values)
            del items[:]
            items.extend(values)
        elif is_message:
            self._fill(items.add(), depth + 1)
        else:
            items.append(self._scalar(field, field.default_value))

    def _mutate_map(self, msg: Message, field: FieldDescriptor, descend: bool, depth: int) -> None:
        c = self.c
        entries = getattr(msg, field.name)
        value_field = field.message_type.fields_by_name["value"]
        keys = sorted(entries.keys())
        how = c.below(6)
        if keys and descend and how < 3:
            key = pick(c, keys)
            if value_field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
                self._mutate(entries[key], key, depth + 1)
            else:
                entries[key] = self._scalar(value_field, entries[key])
        elif keys and how == 3:
            del entries[pick(c, keys)]
        elif keys and how == 4 and value_field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
            # The same content under another key (an org listed twice under two names, ...).
            source = entries[pick(c, keys)]
            entries[text(c) or "x"].CopyFrom(source)
        else:
            new_key = text(c) if chance(c, 70) else (pick(c, keys) if keys else "")
            if value_field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
                entries[new_key].CopyFrom(self.random_message(type(entries[new_key]), depth + 1))
            else:
                entries[new_key] = self._scalar(value_field, value_field.default_value)

    def _fill(self, msg: Message, depth: int) -> None:
        """Set a random few of ``msg``'s fields to random values (a sub-message only while shallow)."""
        c = self.c
        descriptor: Descriptor = msg.DESCRIPTOR
        for field in descriptor.fields:
            if not chance(c, 35):
                continue
            if field.is_repeated:
                if field.message_type is not None and field.message_type.GetOptions().map_entry:
                    if depth < 3:
                        self._mutate_map(msg, field, False, depth)
                    continue
                for _ in range(c.below(3)):
                    if field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
                        if depth < 3:
                            self._fill(getattr(msg, field.name).add(), depth + 1)
                    else:
                        getattr(msg, field.name).append(self._scalar(field, field.default_value))
            elif field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
                if depth < 3:
                    sub = getattr(msg, field.name)
                    sub.SetInParent()
                    self._fill(sub, depth + 1)
            else:
                setattr(msg, field.name, self._scalar(field, field.default_value))


def _write_back(parent: Message, field: FieldDescriptor, index: int, inner: Message) -> None:
    data = inner.SerializeToString()
    if field.is_repeated:
        getattr(parent, field.name)[index] = data
    else:
        setattr(parent, field.name, data)


def harvest(messages: Sequence[Message], limit: int = 400) -> list[bytes]:
    """Byte strings found in ``messages`` (ids, identities, MACs, serialized parts), for splicing in."""
    found: dict[bytes, None] = {}

    def walk(msg: Message, depth: int) -> None:
        if depth > 8 or len(found) >= limit:
            return
        for field, value in msg.ListFields():
            if field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
                if field.message_type.GetOptions().map_entry:
                    for entry in value.values():
                        if isinstance(entry, Message):
                            walk(entry, depth + 1)
                elif field.is_repeated:
                    for entry in value[:8]:
                        walk(entry, depth + 1)
                else:
                    walk(value, depth + 1)
            elif field.type == FieldDescriptor.TYPE_BYTES:
                for item in value[:8] if field.is_repeated else [value]:
                    if 0 < len(item) <= 4096:
                        found.setdefault(bytes(item), None)

    for msg in messages:
        walk(msg, 0)
    return list(found)
