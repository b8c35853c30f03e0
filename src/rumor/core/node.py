"""GossipNode: one peer's whole gossip core, composed from its components (sans-IO).

    received message ──> by kind ──> alive / membership request, response     Discovery
                                     identity pull (IDENTITY_MSG)             CertStore
                                     block pull (BLOCK_MSG), block, leadership,
                                     StateInfo, StateInfo request / snapshot   Channel (found by name or MAC)
                                     state transfer, private data, acks       Deliver to the application
    gossip(msg) ──> sign if its kind is signed ──> Channel store (blocks, leadership) ──> Emitter (push)
    a tick ──> each component's timers;  next_deadline() = the earliest of them

The shell has already decoded the envelope and checked the tag (``open_envelope``)
and proven who sent it (the handshake); the signature of a signed kind is
checked by the component that owns the kind, with the identity of the message's
origin from the shared identity mapper.

Push routing follows the message's tag: ORG_ONLY to our org, CHAN_AND_ORG to
our org's peers of the channel, CHAN_OR_ORG to the channel's orgs or ours,
CHAN_ONLY to the channel's peers, EMPTY to anyone; a message speaking for a
peer without an external endpoint never leaves our org, and a SecretEnvelope
never does either. A message is never pushed back to the peer it came from or
to its origin, and never to ourselves.

A StateInfo of a channel we do not know is relayed to our own org only (a peer of
ours may be in it), as Fabric does; it is checked against its origin's
signature first, and held for a short while to join the channel with.

Accepted messages (new blocks, leadership messages, and the kinds meant for
other parts of the peer such as state transfer) come out as ``Deliver``
effects; ``Subscriptions`` fans them out to bounded queues for the shell.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from rumor.config import GossipConfig
from rumor.core.certstore import CertStore
from rumor.core.channel import Channel, channel_mac
from rumor.core.discovery import DISCOVERY_KINDS, Discovery
from rumor.core.emitter import Emitter, Route, routing_filter
from rumor.core.identity import IdentityError, IdentityMapper
from rumor.core.msgstore import MessageStore, SignedMessage, gossip_policy, origin_of
from rumor.core.peerstore import PeerStore
from rumor.core.pull import pull_type_of
from rumor.core.types import (
    Deliver,
    Effect,
    HandshakeResult,
    NetworkMember,
    NullTracer,
    PKIid,
    ReceivedMessage,
    RemotePeer,
    Send,
    Tracer,
)
from rumor.crypto.api import CryptoError, MessageCryptoService, SecurityAdvisor
from rumor.wire import messages as wire
from rumor.wire.pb.gossip import message_pb2 as pb

CHANNEL_KINDS = frozenset({"data_msg", "leadership_msg", "state_info", "state_info_pull_req", "state_snapshot"})
PASS_THROUGH_KINDS = frozenset({"state_request", "state_response", "private_data", "privateReq", "privateRes", "ack"})
"""Kinds the gossip core does not handle itself: delivered to the application as they come."""


@dataclass
class NodeStats:
    identities_rejected: int = 0
    unknown_channel: int = 0
    relayed_state_info: int = 0
    delivered: int = 0
    ignored: int = 0


def _org_id(org: bytes | str) -> bytes:
    return org.encode() if isinstance(org, str) else org


def _relay_key(item: SignedMessage) -> tuple[bytes, bytes]:
    info = item.message.state_info
    return (info.pki_id, info.channel_MAC)


class GossipNode:
    """The sans-IO gossip core of one peer: implements the node interface driven by the shell.

    ``start_time_ns`` becomes the inc_num of every PeerTime this peer signs; it must grow between
    restarts (the shell passes its start time). ``rng`` is the only randomness: each component gets
    its own generator seeded from it. ``endpoint`` is the endpoint peers of our org dial (overrides
    ``config.endpoint``), ``external_endpoint`` the one other orgs dial (overrides
    ``config.external_endpoint``; empty keeps this peer unknown outside its org). With
    ``forwarding`` off, blocks received by push are not pushed further (pull still spreads them).
    """

    def __init__(
        self,
        config: GossipConfig,
        identity: bytes,
        mcs: MessageCryptoService,
        advisor: SecurityAdvisor,
        *,
        rng: random.Random,
        start_time_ns: int,
        endpoint: str | None = None,
        external_endpoint: str | None = None,
        peer_store: PeerStore | None = None,
        tracer: Tracer | None = None,
        forwarding: bool = True,
        metadata: bytes = b"",
        clock_offset: float = 0.0,
    ) -> None:
        if external_endpoint is not None:
            config = replace(config, external_endpoint=external_endpoint)
        self.config = config
        self.identity = identity
        self.mcs = mcs
        self.advisor = advisor
        self.forwarding = forwarding
        self.tracer: Tracer = tracer if tracer is not None else NullTracer()
        self.stats = NodeStats()
        self._inc_num = start_time_ns
        self._rng = rng

        self.identities = IdentityMapper(mcs, identity, clock_offset=clock_offset)
        self.discovery = Discovery(
            config,
            identity,
            mcs,
            advisor,
            inc_num=start_time_ns,
            rng=self._child_rng(),
            identities=self.identities,
            peer_store=peer_store,
            tracer=self.tracer,
            internal_endpoint=endpoint,
            metadata=metadata,
        )
        self.pki_id: PKIid = self.discovery.pki_id
        self.org: bytes = self.discovery.org
        self.certs = CertStore(
            config=config,
            identity=identity,
            mcs=mcs,
            advisor=advisor,
            identities=self.identities,
            membership=self.discovery,
            rng=self._child_rng(),
            tracer=self.tracer,
        )
        self.emitter = Emitter(
            burst_size=config.max_propagation_burst_size,
            burst_latency=config.max_propagation_burst_latency,
            iterations=config.propagate_iterations,
            peer_num=config.propagate_peer_num,
            membership=self.discovery.alive_view,
            rng=self._child_rng(),
        )
        self.channels: dict[str, Channel] = {}
        self._relay: MessageStore[SignedMessage] = MessageStore(
            gossip_policy(0, of=lambda s: s.message),
            key=_relay_key,
            scope=_relay_key,
            ttl=config.alive_expiration_timeout,
        )
        self._running = False
        self._stopped = False

    def _child_rng(self) -> random.Random:
        return random.Random(self._rng.getrandbits(64))

    @classmethod
    def create(
        cls,
        mcs: MessageCryptoService,
        *,
        endpoint: str,
        external_endpoint: str = "",
        bootstrap: Sequence[str] = (),
        config: GossipConfig | None = None,
        identity: bytes | None = None,
        advisor: SecurityAdvisor | None = None,
        seed: int = 0,
        start_time_ns: int = 1,
        tracer: Tracer | None = None,
        forwarding: bool = True,
        peer_store: PeerStore | None = None,
        **overrides: object,
    ) -> GossipNode:
        """A node for tests and the simulator.

        ``mcs`` is usually a ``CheapCryptoService`` (its ``identity`` is used unless one is given, and
        it serves as the security advisor too). ``overrides`` replace fields of ``config`` (default
        ``GossipConfig()``), e.g. ``pull_interval=1.0``. The random generator is seeded from ``seed``
        and the identity, so every node of a seeded scenario draws differently yet reproducibly.
        """
        if identity is None:
            identity = getattr(mcs, "identity")  # noqa: B009 - not part of the MessageCryptoService protocol
        if advisor is None:
            assert isinstance(mcs, SecurityAdvisor), "give an advisor when the crypto service is not one"
            advisor = mcs
        base = config if config is not None else GossipConfig()
        base = replace(base, endpoint=endpoint, external_endpoint=external_endpoint, bootstrap=tuple(bootstrap))
        if overrides:
            base = replace(base, **overrides)  # type: ignore[arg-type]
        rng = random.Random(seed.to_bytes(8, "big", signed=True) + identity)
        return cls(
            base,
            identity,
            mcs,
            advisor,
            rng=rng,
            start_time_ns=start_time_ns,
            peer_store=peer_store,
            tracer=tracer,
            forwarding=forwarding,
        )

    # --- queries ----------------------------------------------------------------------------------

    @property
    def inc_num(self) -> int:
        """The incarnation number of this run (its start time in ns), first half of every PeerTime we sign."""
        return self._inc_num

    @property
    def endpoint(self) -> str:
        """The endpoint peers of our org dial."""
        return self.discovery.internal_endpoint

    @property
    def external_endpoint(self) -> str:
        return self.discovery.endpoint

    def peers(self) -> list[NetworkMember]:
        """Alive members of the network, as discovery knows them."""
        return self.discovery.alive_members()

    def dead_peers(self) -> list[NetworkMember]:
        """Members presumed dead (not yet forgotten)."""
        return self.discovery.dead_members()

    def channel(self, name: str) -> Channel:
        """The channel joined under ``name``; KeyError if never joined."""
        return self.channels[name]

    def peers_of_channel(self, name: str) -> list[NetworkMember]:
        """Alive peers that proved membership of channel ``name`` (their StateInfo in ``properties``)."""
        channel = self.channels.get(name)
        return channel.peers_of_channel() if channel is not None else []

    # --- the application's calls ------------------------------------------------------------------

    def update_metadata(self, metadata: bytes) -> None:
        self.discovery.update_metadata(metadata)

    def join_channel(
        self,
        name: str,
        orgs: Iterable[bytes | str],
        anchor_peers: Mapping[bytes | str, Iterable[str]] | Iterable[str] = (),
        *,
        now: float,
    ) -> list[Effect]:
        """Join (or re-join) channel ``name`` whose member orgs are ``orgs`` (MSP IDs); dial its anchor peers.

        ``anchor_peers`` maps each org to its anchor endpoints, as a channel config does. A peer without
        an external endpoint cannot be reached from other orgs, so it skips their anchor peers (Fabric
        does the same); plain endpoints, whose org is unknown, are then skipped too.
        """
        org_ids = [_org_id(o) for o in orgs]
        channel = self.channels.get(name)
        if channel is None:
            channel = Channel(
                name,
                config=self.config,
                identity=self.identity,
                mcs=self.mcs,
                advisor=self.advisor,
                identities=self.identities,
                membership=self.discovery,
                rng=self._child_rng(),
                inc_num=self._inc_num,
                push=self._push,
                forwarding=self.forwarding,
                tracer=self.tracer,
            )
            self.channels[name] = channel
            effects = channel.join(org_ids, now)
            if self._running:
                effects += channel.start(now)
        else:
            effects = channel.join(org_ids, now)
        self.discovery.add_anchor_peers(self._reachable_anchors(anchor_peers))
        self._adopt_relayed(channel, now)
        return effects

    def _reachable_anchors(self, anchor_peers: Mapping[bytes | str, Iterable[str]] | Iterable[str]) -> list[str]:
        reachable_outside = bool(self.external_endpoint)
        if isinstance(anchor_peers, Mapping):
            out: list[str] = []
            for org, endpoints in anchor_peers.items():
                if reachable_outside or _org_id(org) == self.org:
                    out.extend(endpoints)
            return out
        return list(anchor_peers) if reachable_outside else []

    def leave_channel(self, name: str, *, now: float) -> list[Effect]:
        """Leave channel ``name``: peers learn it from a StateInfo with left_channel=true."""
        return self.channels[name].leave(now)

    def update_ledger_height(self, name: str, height: int, *, now: float) -> list[Effect]:
        """The ledger of channel ``name`` now holds blocks below ``height``; told to peers by StateInfo."""
        return self.channels[name].update_ledger_height(height, now)

    def _seal(self, message: pb.GossipMessage) -> SignedMessage:
        wire.check_tag(message)
        sign = self.mcs.sign if wire.kind_of(message) in wire.SIGNED_KINDS else None
        return SignedMessage(wire.seal(message, sign), message)

    def gossip(self, message: pb.GossipMessage, now: float) -> list[Effect]:
        """Push ``message`` to the network (signed first when its kind requires it).

        A block goes into its channel's store first, so that peers can pull it from us; it is not
        delivered back to this peer. Raises InvalidMessage for a wrong tag, KeyError for a block or
        leadership message of a channel not joined.
        """
        item = self._seal(message)
        kind = wire.kind_of(message)
        channel: Channel | None = None
        if message.channel:
            channel = self.channels.get(message.channel.decode(errors="replace"))
        if kind in ("data_msg", "leadership_msg"):
            if channel is None:
                raise KeyError(f"channel {message.channel!r} not joined")
            added = channel.add_own_block(item, now) if kind == "data_msg" else channel.add_own_leadership(item, now)
            if not added:
                return []
            if kind == "data_msg":
                spread = channel.spread_own_block(item, now)
                if spread is not None:
                    return spread
        return self._push(item, channel, (), now)

    def send(self, message: pb.GossipMessage, peers: Iterable[RemotePeer]) -> list[Effect]:
        """Send ``message`` (signed when its kind requires it) straight to ``peers``, never to ourselves."""
        targets = tuple(p for p in peers if p.pki_id != self.pki_id)
        if not targets:
            return []
        return [Send(self._seal(message).envelope, targets)]

    # --- push routing -----------------------------------------------------------------------------

    def _route(self, item: SignedMessage, channel: Channel | None) -> Route:
        message = item.message
        origin = origin_of(message)
        disclose = True
        if origin is not None:
            member = self.discovery.lookup(origin)
            disclose = member is not None and bool(member.endpoint)
        in_channel = None
        if channel is not None:
            # StateInfo is how peers of the channel's orgs learn who is in it: it goes to those orgs;
            # everything else of a channel only to peers that proved they are in it.
            in_channel = channel.is_member_org if message.HasField("state_info") else channel.is_channel_peer
        allowed = routing_filter(message.tag, self_org=self.org, in_channel=in_channel, disclose_to_other_orgs=disclose)
        envelope = item.envelope
        foreign = wire.strip_secret(envelope) if envelope.HasField("secret_envelope") else envelope

        def route(member: NetworkMember) -> pb.Envelope | None:
            if member.pki_id == self.pki_id or not allowed(member):
                return None
            if member.org == self.org:
                return envelope
            return foreign if member.endpoint else None

        return route

    def _push(
        self, item: SignedMessage, channel: Channel | None, exclude: Collection[bytes], now: float
    ) -> list[Effect]:
        return self.emitter.add(item.envelope, self._route(item, channel), now, exclude=(*exclude, self.pki_id))

    # --- the node interface -----------------------------------------------------------------------

    def start(self, now: float) -> list[Effect]:
        self._running = True
        effects = self.discovery.start(now)
        self.certs.start(now)
        for channel in self.channels.values():
            effects += channel.start(now)
        return effects

    def stop(self, now: float) -> list[Effect]:
        if not self._running:
            return []
        effects = self.emitter.flush(now)
        self._running = False
        self._stopped = True
        effects += self.discovery.stop(now)
        self.certs.stop()
        for channel in self.channels.values():
            channel.stop()
        return effects

    def next_deadline(self) -> float | None:
        if not self._running:
            return None
        # Asked after every call into the node, so written out rather than through lists.
        best = self.discovery.next_deadline()
        for d in (self.certs.next_deadline(), self.emitter.next_deadline(), self._relay.next_deadline()):
            if d is not None and (best is None or d < best):
                best = d
        for channel in self.channels.values():
            d = channel.next_deadline()
            if d is not None and (best is None or d < best):
                best = d
        return best

    def on_tick(self, now: float) -> list[Effect]:
        if not self._running:
            return []
        effects = self.discovery.on_tick(now)
        effects += self.certs.on_tick(now)
        for channel in self.channels.values():
            effects += channel.on_tick(now)
        self._relay.expire(now)
        effects += self.emitter.on_tick(now)
        return effects

    def on_handshake(self, result: HandshakeResult, now: float) -> list[Effect]:
        return self.discovery.on_handshake(result, now) if self._running else []

    def on_probe(self, peer: RemotePeer, alive: bool, now: float) -> list[Effect]:
        return self.discovery.on_probe(peer, alive, now) if self._running else []

    def on_connection_lost(self, pki_id: bytes, now: float) -> list[Effect]:
        return self.discovery.on_connection_lost(pki_id, now) if self._running else []

    def on_message(self, msg: ReceivedMessage, now: float) -> list[Effect]:
        if not self._running or msg.sender == self.pki_id:
            return []
        kind = msg.message.WhichOneof("content")
        if kind in DISCOVERY_KINDS:
            return self.discovery.on_message(msg, now)
        if msg.sender_identity:
            # The handshake proved it; remembering it lets us check what this peer signs.
            try:
                self.identities.put(msg.sender, msg.sender_identity, now)
            except IdentityError as exc:
                self.stats.identities_rejected += 1
                self.tracer.event("message_rejected", now, sender=msg.sender, kind=kind, reason=str(exc))
                return []
        if kind in wire.PULL_KINDS:
            if pull_type_of(msg.message) == wire.IDENTITY_MSG:
                return self.certs.on_message(msg, now)
            return self._to_channel(self._channel_named(msg.message.channel), msg, now)
        if kind in CHANNEL_KINDS:
            return self._on_channel_message(kind, msg, now)
        if kind in PASS_THROUGH_KINDS:
            return self._pass_through(kind, msg, now)
        self.stats.ignored += 1
        return []

    def _pass_through(self, kind: str, msg: ReceivedMessage, now: float) -> list[Effect]:
        """Hand a message for another part of the peer to the application, if its channel allows the sender."""
        if msg.message.channel:
            # State transfer and private data carry a channel's blocks and data: same access rule as blocks.
            channel = self._channel_named(msg.message.channel)
            try:
                org = self.advisor.org_of(msg.sender_identity)
            except CryptoError:
                org = None
            if channel is None or channel.left or org is None or not channel.is_org_in_channel(org):
                self.stats.ignored += 1
                name = msg.message.channel.decode(errors="replace")
                self.tracer.event("channel_access_denied", now, channel=name, sender=msg.sender, kind=kind)
                return []
        self.stats.delivered += 1
        return [Deliver(msg)]

    # --- channel messages -------------------------------------------------------------------------

    def _channel_named(self, name: bytes) -> Channel | None:
        try:
            return self.channels.get(name.decode())
        except UnicodeDecodeError:
            return None

    def _channel_by_mac(self, pki_id: bytes, mac: bytes) -> Channel | None:
        for channel in self.channels.values():
            if channel.mac_of(pki_id) == mac:
                return channel
        return None

    def _to_channel(self, channel: Channel | None, msg: ReceivedMessage, now: float) -> list[Effect]:
        if channel is None:
            self.stats.unknown_channel += 1
            return []
        return channel.on_message(msg, now)

    def _on_channel_message(self, kind: str, msg: ReceivedMessage, now: float) -> list[Effect]:
        m = msg.message
        if kind == "state_info":
            channel = self._channel_by_mac(m.state_info.pki_id, m.state_info.channel_MAC)
            if channel is None:
                return self._relay_state_info(msg, now)
            return channel.on_message(msg, now)
        if kind == "state_info_pull_req":
            return self._to_channel(self._channel_by_mac(msg.sender, m.state_info_pull_req.channel_MAC), msg, now)
        return self._to_channel(self._channel_named(m.channel), msg, now)

    def _relay_state_info(self, msg: ReceivedMessage, now: float) -> list[Effect]:
        """A StateInfo of a channel we are not in: pass it on within our org, if its origin signed it."""
        info = msg.message.state_info
        item = SignedMessage(msg.envelope, msg.message)
        if info.pki_id == self.pki_id or not self._relay.check_valid(item):
            return []
        try:
            if self.advisor.org_of(msg.sender_identity) != self.org:
                return []
            identity = self.identities.get(info.pki_id, now)
            if identity is None or not msg.envelope.signature:
                return []
            wire.verify_envelope(msg.envelope, identity, self.mcs)
        except CryptoError:
            return []
        self._relay.add(item, now)
        self.stats.relayed_state_info += 1
        return self._push(item, None, (msg.sender, info.pki_id), now)

    def _adopt_relayed(self, channel: Channel, now: float) -> None:
        for item in self._relay.items():
            info = item.message.state_info
            if info.channel_MAC == channel_mac(info.pki_id, channel.name):
                self._relay.remove(_relay_key(item))
                channel.accept_state_info(item, now)


# --- subscriptions: a helper for shells ------------------------------------------------------------


@dataclass
class Subscription:
    """Accepted messages matching ``predicate``, newest last; the oldest are dropped past ``maxlen``."""

    predicate: Callable[[ReceivedMessage], bool]
    queue: deque[ReceivedMessage] = field(default_factory=deque)
    dropped: int = 0
    closed: bool = False

    def pop_all(self) -> list[ReceivedMessage]:
        out = list(self.queue)
        self.queue.clear()
        return out


class Subscriptions:
    """Fans the ``Deliver`` effects of a node out to subscriptions (Fabric's Accept, without channels).

    The shell calls ``dispatch(effects)`` on whatever the node returned; it returns the other
    effects. An asyncio shell wakes its readers after a dispatch.
    """

    def __init__(self, maxlen: int = 1024) -> None:
        self.maxlen = maxlen
        self._subs: list[Subscription] = []

    def subscribe(self, predicate: Callable[[ReceivedMessage], bool], maxlen: int | None = None) -> Subscription:
        sub = Subscription(predicate, deque(maxlen=maxlen or self.maxlen))
        self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        sub.closed = True
        self._subs = [s for s in self._subs if s is not sub]

    def dispatch(self, effects: Iterable[Effect]) -> list[Effect]:
        rest: list[Effect] = []
        for effect in effects:
            if not isinstance(effect, Deliver):
                rest.append(effect)
                continue
            for sub in self._subs:
                if sub.predicate(effect.message):
                    if sub.queue.maxlen is not None and len(sub.queue) == sub.queue.maxlen:
                        sub.dropped += 1
                    sub.queue.append(effect.message)
        return rest


def is_block_of(channel: str) -> Callable[[ReceivedMessage], bool]:
    """Predicate for ``Subscriptions.subscribe``: blocks of ``channel``."""
    name = channel.encode()
    return lambda m: m.message.HasField("data_msg") and m.message.channel == name
