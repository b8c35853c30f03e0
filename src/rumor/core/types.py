"""Values shared by every protocol component: members, received messages, effects, ports.

Effects are what the core asks its shell to do; the shell reports back through
the input methods of ``rumor.core.node.GossipNode`` (a received message, a
finished handshake, a lost connection, a tick). The simulator is one such
shell, ``rumor.node.Peer`` (over gRPC) is another.

Time is a float of seconds on the shell's clock (monotonic for the real peer,
virtual in the simulator). The core never reads a clock and never draws from
the module-level ``random``: it receives ``now`` and an injected ``random.Random``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from rumor.wire.pb.gossip import message_pb2 as pb

PKIid = bytes


@dataclass(frozen=True, slots=True)
class RemotePeer:
    """Where to reach a peer: its PKI-ID and the endpoint to dial ("host:port")."""

    pki_id: PKIid
    endpoint: str


@dataclass(frozen=True, slots=True)
class NetworkMember:
    """A peer as membership knows it.

    ``endpoint`` is the external endpoint (what other orgs see); ``internal_endpoint``
    is learned only from the SecretEnvelope of a peer of our own org.
    """

    pki_id: PKIid
    endpoint: str
    internal_endpoint: str = ""
    metadata: bytes = b""
    org: bytes = b""
    properties: pb.Properties | None = None

    @property
    def preferred_endpoint(self) -> str:
        """The endpoint to dial: the internal one when we know it (same org), else the external one."""
        return self.internal_endpoint or self.endpoint


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """A message whose origin the shell has proven.

    ``sender`` is the PKI-ID that the connection's handshake authenticated;
    ``sender_identity`` the serialized identity it presented, and ``proof`` the
    signed ConnEstablish envelope of that handshake, kept to authorize
    requests such as state transfer.
    """

    sender: PKIid
    sender_endpoint: str
    sender_identity: bytes
    envelope: pb.Envelope
    message: pb.GossipMessage
    proof: pb.Envelope | None = None


# --- effects: what the core asks the shell to do -----------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``envelope`` to each of ``to``; the shell dials when no connection is open."""

    envelope: pb.Envelope
    to: tuple[RemotePeer, ...]


@dataclass(frozen=True, slots=True)
class Handshake:
    """Authenticate ``endpoint`` (a probe connection) and report ``on_handshake`` with its identity.

    Used for bootstrap and anchor peers, whose PKI-ID is not known yet.
    """

    endpoint: str


@dataclass(frozen=True, slots=True)
class Probe:
    """Ping ``peer`` (a dead peer being given another chance); report ``on_probe``."""

    peer: RemotePeer


@dataclass(frozen=True, slots=True)
class Disconnect:
    """Close the connection to ``pki_id``, if any (a peer declared dead or cut off)."""

    pki_id: PKIid


@dataclass(frozen=True, slots=True)
class Deliver:
    """Hand an accepted message to the application's subscriptions (for example a new block)."""

    message: ReceivedMessage


@dataclass(frozen=True, slots=True)
class Committed:
    """Block ``seq_num`` of ``channel`` is now durable in the ledger (for the application's commit stream)."""

    channel: str
    seq_num: int
    block: bytes


@dataclass(frozen=True, slots=True)
class LeadershipChanged:
    """This peer started (``is_leader``) or stopped leading its org on ``channel``: start or stop pulling
    blocks from the ordering service. ``leader`` is the PKI-ID now believed to lead, if any."""

    channel: str
    is_leader: bool
    leader: PKIid | None


Effect = Send | Handshake | Probe | Disconnect | Deliver | Committed | LeadershipChanged


@dataclass(frozen=True, slots=True)
class HandshakeResult:
    """What the shell reports after a ``Handshake`` effect: the identity, or why it failed."""

    endpoint: str
    pki_id: PKIid | None = None
    identity: bytes = b""
    error: str = ""


# --- ports: synchronous local interfaces the core may call ------------------------------------


class Tracer(Protocol):
    """Receives protocol events (for metrics, the dashboard, benchmarks and tests)."""

    def event(self, name: str, now: float, **fields: object) -> None: ...


@dataclass
class NullTracer:
    """A tracer that drops everything."""

    def event(self, name: str, now: float, **fields: object) -> None:
        return None


@dataclass
class RecordingTracer:
    """A tracer that keeps every event, for tests and the simulator."""

    events: list[tuple[str, float, dict[str, object]]] = field(default_factory=list)

    def event(self, name: str, now: float, **fields: object) -> None:
        self.events.append((name, now, fields))

    def named(self, name: str) -> list[dict[str, object]]:
        return [f for n, _, f in self.events if n == name]
