"""Build, seal, open and check gossip messages.

Every message between peers is a ``GossipMessage`` serialized into the
``payload`` of an ``Envelope``. Some kinds are signed by their origin (the
signature covers exactly the payload bytes); the others travel with an empty
signature because they are vouched for otherwise (the authenticated stream, a
signed inner message, or a block's orderer signature).

Each kind must carry one routing tag. A receiver that sees another tag drops
the message: the tag decides who may see it (org only, channel only, ...), so
a wrong tag is either a bug or an attempt to leak a message past its scope.

    build  ->  seal(msg, sign)  ->  Envelope  ==wire==>  open_envelope(env)  ->  check_tag
                                                         verify_envelope(env, identity, verifier)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from google.protobuf.message import DecodeError

from rumor.wire.pb.gossip import message_pb2 as pb

GossipMessage = pb.GossipMessage
Envelope = pb.Envelope
Tag = pb.GossipMessage.Tag
PullMsgType = pb.PullMsgType

EMPTY = pb.GossipMessage.EMPTY
ORG_ONLY = pb.GossipMessage.ORG_ONLY
CHAN_ONLY = pb.GossipMessage.CHAN_ONLY
CHAN_AND_ORG = pb.GossipMessage.CHAN_AND_ORG
CHAN_OR_ORG = pb.GossipMessage.CHAN_OR_ORG
UNDEFINED = pb.GossipMessage.UNDEFINED

BLOCK_MSG = pb.BLOCK_MSG
IDENTITY_MSG = pb.IDENTITY_MSG

PULL_KINDS = frozenset({"hello", "data_dig", "data_req", "data_update"})

REQUIRED_TAG: dict[str, int] = {
    "alive_msg": EMPTY,
    "mem_req": EMPTY,
    "mem_res": EMPTY,
    "conn": EMPTY,
    "empty": EMPTY,
    "data_msg": CHAN_AND_ORG,
    "leadership_msg": CHAN_AND_ORG,
    "peer_identity": ORG_ONLY,
    "state_info": CHAN_OR_ORG,
    "state_info_pull_req": CHAN_OR_ORG,
    "state_snapshot": CHAN_OR_ORG,
    "state_request": CHAN_OR_ORG,
    "state_response": CHAN_OR_ORG,
    "private_data": CHAN_ONLY,
    "privateReq": CHAN_ONLY,
    "privateRes": CHAN_ONLY,
    "ack": UNDEFINED,
}
"""The tag each kind must carry; pull kinds depend on msg_type (see ``required_tag``)."""

SIGNED_KINDS = frozenset({"conn", "alive_msg", "state_info", "leadership_msg", "peer_identity"})
"""Kinds whose Envelope carries the origin's signature over the payload."""


class InvalidMessage(ValueError):
    """A message that does not decode, has no content, or carries an illegal tag."""


class Signer(Protocol):
    def __call__(self, message: bytes, /) -> bytes: ...


class Verifier(Protocol):
    def verify(self, identity: bytes, signature: bytes, message: bytes) -> None: ...


def kind_of(msg: GossipMessage) -> str:
    """Name of the content field set in ``msg`` ("alive_msg", "data_msg", ...)."""
    kind = msg.WhichOneof("content")
    if kind is None:
        raise InvalidMessage("gossip message has no content")
    return kind


def _pull_type(msg: GossipMessage, kind: str) -> int:
    return int(getattr(msg, kind).msg_type)


def required_tag(msg: GossipMessage) -> int:
    """The only tag ``msg`` may carry, given its kind (and pull type for pull messages)."""
    kind = kind_of(msg)
    if kind in PULL_KINDS:
        pull_type = _pull_type(msg, kind)
        if pull_type == BLOCK_MSG:
            return CHAN_AND_ORG
        if pull_type == IDENTITY_MSG:
            return EMPTY
        raise InvalidMessage(f"{kind}: invalid pull message type {pull_type}")
    return REQUIRED_TAG[kind]


def check_tag(msg: GossipMessage) -> None:
    """Raise InvalidMessage unless ``msg`` carries the tag its kind requires."""
    expected = required_tag(msg)
    if msg.tag != expected:
        actual = Tag.Name(msg.tag) if msg.tag in Tag.values() else str(msg.tag)
        raise InvalidMessage(f"{kind_of(msg)} must carry tag {Tag.Name(expected)}, not {actual}")


def seal(msg: GossipMessage, sign: Signer | None = None) -> Envelope:
    """Serialize ``msg`` into an Envelope, signed over the payload bytes when ``sign`` is given."""
    payload = msg.SerializeToString(deterministic=True)
    return Envelope(payload=payload, signature=sign(payload) if sign is not None else b"")


def open_envelope(envelope: Envelope) -> GossipMessage:
    """Decode the GossipMessage inside ``envelope`` and check its tag; InvalidMessage if either fails."""
    msg = GossipMessage()
    try:
        msg.ParseFromString(envelope.payload)
    except DecodeError as exc:
        raise InvalidMessage(f"undecodable gossip message: {exc}") from None
    check_tag(msg)
    return msg


def verify_envelope(envelope: Envelope, identity: bytes, verifier: Verifier) -> None:
    """Check the signature of ``envelope`` over the received payload bytes (never a re-encoding).

    Raises whatever the verifier raises (rumor.crypto.api.InvalidSignature / InvalidIdentity).
    """
    verifier.verify(identity, envelope.signature, envelope.payload)


def with_secret(envelope: Envelope, internal_endpoint: str, sign: Signer) -> Envelope:
    """Attach a signed SecretEnvelope holding the internal endpoint (for peers of our own org)."""
    secret = pb.Secret(internalEndpoint=internal_endpoint).SerializeToString(deterministic=True)
    out = Envelope()
    out.CopyFrom(envelope)
    out.secret_envelope.payload = secret
    out.secret_envelope.signature = sign(secret)
    return out


def strip_secret(envelope: Envelope) -> Envelope:
    """A copy of ``envelope`` without its SecretEnvelope, for sending across organizations."""
    out = Envelope()
    out.CopyFrom(envelope)
    out.ClearField("secret_envelope")
    return out


def secret_endpoint(envelope: Envelope, identity: bytes, verifier: Verifier) -> str | None:
    """The internal endpoint in ``envelope``'s SecretEnvelope, or None when absent.

    The secret is signed separately from the payload; a bad signature raises.
    """
    if not envelope.HasField("secret_envelope") or not envelope.secret_envelope.payload:
        return None
    verifier.verify(identity, envelope.secret_envelope.signature, envelope.secret_envelope.payload)
    secret = pb.Secret()
    try:
        secret.ParseFromString(envelope.secret_envelope.payload)
    except DecodeError as exc:
        raise InvalidMessage(f"undecodable secret envelope: {exc}") from None
    return secret.internalEndpoint or None


# --- builders: one per kind, each with its legal tag -------------------------------------------


def peer_time(inc_num: int, seq_num: int) -> pb.PeerTime:
    return pb.PeerTime(inc_num=inc_num, seq_num=seq_num)


def alive(
    endpoint: str, pki_id: bytes, inc_num: int, seq_num: int, identity: bytes = b"", metadata: bytes = b""
) -> GossipMessage:
    return GossipMessage(
        tag=EMPTY,
        alive_msg=pb.AliveMessage(
            membership=pb.Member(endpoint=endpoint, metadata=metadata, pki_id=pki_id),
            timestamp=peer_time(inc_num, seq_num),
            identity=identity,
        ),
    )


def membership_request(self_information: Envelope, known: Iterable[bytes] = (), nonce: int = 0) -> GossipMessage:
    return GossipMessage(
        tag=EMPTY, nonce=nonce, mem_req=pb.MembershipRequest(self_information=self_information, known=list(known))
    )


def membership_response(alive_envs: Iterable[Envelope], dead_envs: Iterable[Envelope], nonce: int = 0) -> GossipMessage:
    return GossipMessage(
        tag=EMPTY, nonce=nonce, mem_res=pb.MembershipResponse(alive=list(alive_envs), dead=list(dead_envs))
    )


def membership_response_of(response: pb.MembershipResponse, nonce: int = 0) -> GossipMessage:
    """A MembershipResponse message around an already built response (copied)."""
    return GossipMessage(tag=EMPTY, nonce=nonce, mem_res=response)


def conn_establish(pki_id: bytes, identity: bytes, tls_cert_hash: bytes, probe: bool = False) -> GossipMessage:
    return GossipMessage(
        tag=EMPTY,
        nonce=0,
        conn=pb.ConnEstablish(pki_id=pki_id, identity=identity, tls_cert_hash=tls_cert_hash, probe=probe),
    )


def data_message(
    channel: bytes,
    seq_num: int,
    block: bytes,
    nonce: int = 0,
    *,
    push_ttl: int | None = None,
    advertise_ttl: int | None = None,
) -> GossipMessage:
    """A gossiped block: ``block`` is a serialized common.Block numbered ``seq_num``.

    ``push_ttl`` and ``advertise_ttl`` (enhanced dissemination only) are the hops left for pushing the whole
    block and for advertising its digest; None leaves them out, as Fabric does.
    """
    data = pb.DataMessage(payload=pb.Payload(seq_num=seq_num, data=block))
    if push_ttl is not None:
        data.push_ttl = push_ttl
    if advertise_ttl is not None:
        data.advertise_ttl = advertise_ttl
    return GossipMessage(tag=CHAN_AND_ORG, channel=channel, nonce=nonce, data_msg=data)


def _pull_tag(msg_type: int) -> int:
    return CHAN_AND_ORG if msg_type == BLOCK_MSG else EMPTY


def hello(nonce: int, msg_type: int, channel: bytes = b"", metadata: bytes = b"") -> GossipMessage:
    return GossipMessage(
        tag=_pull_tag(msg_type),
        channel=channel,
        hello=pb.GossipHello(nonce=nonce, metadata=metadata, msg_type=msg_type),
    )


def data_digest(
    nonce: int, msg_type: int, digests: Sequence[bytes], channel: bytes = b"", *, advertise_ttl: int | None = None
) -> GossipMessage:
    """A pull digest; with ``advertise_ttl`` an advertisement of new blocks (enhanced dissemination)."""
    digest = pb.DataDigest(nonce=nonce, digests=list(digests), msg_type=msg_type)
    if advertise_ttl is not None:
        digest.advertise_ttl = advertise_ttl
    return GossipMessage(tag=_pull_tag(msg_type), channel=channel, data_dig=digest)


def data_request(nonce: int, msg_type: int, digests: Sequence[bytes], channel: bytes = b"") -> GossipMessage:
    return GossipMessage(
        tag=_pull_tag(msg_type),
        channel=channel,
        data_req=pb.DataRequest(nonce=nonce, digests=list(digests), msg_type=msg_type),
    )


def data_update(nonce: int, msg_type: int, items: Sequence[Envelope], channel: bytes = b"") -> GossipMessage:
    return GossipMessage(
        tag=_pull_tag(msg_type),
        channel=channel,
        data_update=pb.DataUpdate(nonce=nonce, data=list(items), msg_type=msg_type),
    )


def state_info(
    channel_mac: bytes, pki_id: bytes, inc_num: int, seq_num: int, ledger_height: int, left_channel: bool = False
) -> GossipMessage:
    """A peer's signed view of itself on a channel. The channel name itself is not sent, only its MAC."""
    return GossipMessage(
        tag=CHAN_OR_ORG,
        state_info=pb.StateInfo(
            timestamp=peer_time(inc_num, seq_num),
            pki_id=pki_id,
            channel_MAC=channel_mac,
            properties=pb.Properties(ledger_height=ledger_height, left_channel=left_channel),
        ),
    )


def state_info_pull_request(channel_mac: bytes, nonce: int) -> GossipMessage:
    return GossipMessage(
        tag=CHAN_OR_ORG, nonce=nonce, state_info_pull_req=pb.StateInfoPullRequest(channel_MAC=channel_mac)
    )


def state_info_snapshot(elements: Iterable[Envelope], nonce: int) -> GossipMessage:
    return GossipMessage(tag=CHAN_OR_ORG, nonce=nonce, state_snapshot=pb.StateInfoSnapshot(elements=list(elements)))


def state_request(channel: bytes, start: int, end: int, nonce: int) -> GossipMessage:
    """Ask for blocks ``start`` through ``end`` inclusive."""
    return GossipMessage(
        tag=CHAN_OR_ORG,
        channel=channel,
        nonce=nonce,
        state_request=pb.RemoteStateRequest(start_seq_num=start, end_seq_num=end),
    )


def state_response(channel: bytes, payloads: Iterable[pb.Payload], nonce: int) -> GossipMessage:
    return GossipMessage(
        tag=CHAN_OR_ORG,
        channel=channel,
        nonce=nonce,
        state_response=pb.RemoteStateResponse(payloads=list(payloads)),
    )


def leadership(channel: bytes, pki_id: bytes, inc_num: int, seq_num: int, is_declaration: bool) -> GossipMessage:
    return GossipMessage(
        tag=CHAN_AND_ORG,
        channel=channel,
        leadership_msg=pb.LeadershipMessage(
            pki_id=pki_id, timestamp=peer_time(inc_num, seq_num), is_declaration=is_declaration
        ),
    )


def peer_identity(pki_id: bytes, cert: bytes, metadata: bytes = b"") -> GossipMessage:
    """A peer's identity as exchanged by the identity pull (``cert`` is the serialized identity)."""
    return GossipMessage(tag=ORG_ONLY, peer_identity=pb.PeerIdentity(pki_id=pki_id, cert=cert, metadata=metadata))


def ack(nonce: int, error: str = "") -> GossipMessage:
    """Acknowledgement of the message with ``nonce``; no tag, no channel."""
    return GossipMessage(nonce=nonce, ack=pb.Acknowledgement(error=error))


def empty(nonce: int = 0) -> GossipMessage:
    return GossipMessage(tag=EMPTY, nonce=nonce, empty=pb.Empty())
