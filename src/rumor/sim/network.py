"""An in-memory network with a virtual clock, for running protocol cores by the hundred.

Every protocol core implements the same "node" interface (``SimNode`` below):
it is told what happened with an explicit ``now`` and answers with effects.
This module plays the part of the comm layer for all of them at once:

    event queue (time, seq) ── pop ──> call the node (start / on_message / on_tick / ...)
          ^                                   │ effects
          └──── schedule deliveries, ─────────┘
                handshake and probe answers, the node's next timer

* ``Send`` is delivered to each target after ``latency(src, dst)`` unless the
  target is down, the two are partitioned, the target's endpoint now belongs to
  another PKI-ID, or the loss model drops it. With a ``bandwidth`` model each
  peer has an uplink of that many bytes per second: a message first waits for
  the messages queued before it to leave, then takes size / bandwidth to leave
  itself, then travels for the latency (store and forward, one FIFO uplink per
  peer; downlinks are not limited). The receiver gets a
  ``ReceivedMessage`` whose sender is the PKI-ID of the sending node, as a real
  connection's handshake would have proven.
* ``Handshake`` and ``Probe`` are answered after a round trip when the target is
  reachable, else with a failure (after ``dial_timeout`` when partitioned, as a
  dial that gets no answer would).
* A node's timer fires when virtual time reaches ``next_deadline()``; the queue
  keeps one live timer per node (a version counter voids superseded ones).
* ``crash`` drops a node and, as a broken TCP connection would, tells each peer
  that had exchanged messages with it (``on_connection_lost``); ``restart``
  brings up a fresh node object on the same endpoint.

Ties are broken by insertion order and all randomness comes from one seeded
``random.Random``, so a scenario with the same seed runs identically.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from rumor.core.types import (
    Committed,
    Deliver,
    Disconnect,
    Effect,
    Handshake,
    HandshakeResult,
    LeadershipChanged,
    Probe,
    ReceivedMessage,
    RemotePeer,
    Send,
)
from rumor.wire.messages import InvalidMessage, open_envelope
from rumor.wire.pb.gossip import message_pb2 as pb


class SimNode(Protocol):
    """What the simulator (and the real peer) drive: a sans-IO protocol core."""

    def start(self, now: float) -> list[Effect]: ...

    def on_message(self, msg: ReceivedMessage, now: float) -> list[Effect]: ...

    def on_tick(self, now: float) -> list[Effect]: ...

    def next_deadline(self) -> float | None: ...

    def on_handshake(self, result: HandshakeResult, now: float) -> list[Effect]: ...

    def on_probe(self, peer: RemotePeer, alive: bool, now: float) -> list[Effect]: ...

    def on_connection_lost(self, pki_id: bytes, now: float) -> list[Effect]: ...

    def stop(self, now: float) -> list[Effect]: ...


LatencyModel = Callable[[str, str, random.Random], float]
"""One-way latency in seconds from the first endpoint to the second."""

BandwidthModel = Callable[[str], "float | None"]
"""Uplink bandwidth of an endpoint in bytes per second (None: unlimited)."""

TransmitHook = Callable[["SimPeer", "SimPeer", pb.GossipMessage, int], None]
"""Called as a message leaves (sender, receiver, message, bytes on the wire), whether or not it arrives."""

ReceiveHook = Callable[["SimPeer", "SimPeer", pb.GossipMessage, float], None]
"""Called as a message arrives, before the receiver handles it: (receiver, sender, message, now)."""

MAX_STALLED_TICKS = 10_000
"""How often a node may ask to be woken at the current instant again before the simulator calls it a livelock."""

DropRule = Callable[[str, str, pb.GossipMessage], bool]
"""A test's rule: True drops the message going from the first endpoint to the second."""


@dataclass
class SimPeer:
    """One endpoint of the simulated network and the node currently running there."""

    endpoint: str
    pki_id: bytes
    identity: bytes
    node: SimNode | None
    aliases: tuple[str, ...] = ()
    bandwidth: float | None = None
    uplink_free_at: float = 0.0
    bytes_sent: int = 0
    generation: int = 0
    timer_version: int = 0
    timer_at: float | None = None
    stalled_ticks: int = 0
    delivered: list[tuple[float, ReceivedMessage]] = field(default_factory=list)
    committed: list[tuple[float, Committed]] = field(default_factory=list)
    leadership: list[tuple[float, LeadershipChanged]] = field(default_factory=list)

    @property
    def up(self) -> bool:
        return self.node is not None


@dataclass
class SimStats:
    """Counts of what crossed the simulated network."""

    sent: int = 0
    delivered: int = 0
    dropped: int = 0
    bytes_sent: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    bytes_by_kind: dict[str, int] = field(default_factory=dict)
    """Bytes that left their sender (transmitted, whether or not they arrived), by message kind."""


class SimNetwork:
    """Runs any number of sans-IO nodes against each other on a virtual clock."""

    def __init__(
        self,
        seed: int = 0,
        latency: float | LatencyModel = 0.005,
        loss: float = 0.0,
        dial_timeout: float = 3.0,
        record: bool = False,
        bandwidth: float | BandwidthModel | None = None,
        keep_effects: bool = True,
    ) -> None:
        """``keep_effects`` False keeps no Committed/Deliver history on the SimPeers (the hooks still see
        them): a long run of many peers would otherwise hold every block once per peer."""
        self.rng = random.Random(seed)
        self.keep_effects = keep_effects
        self.now = 0.0
        self.loss = loss
        self.dial_timeout = dial_timeout
        self._latency: LatencyModel = latency if callable(latency) else (lambda _a, _b, _r, v=latency: v)
        self._bandwidth: BandwidthModel = bandwidth if callable(bandwidth) else (lambda _e, v=bandwidth: v)
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0
        self.peers: dict[str, SimPeer] = {}
        self._by_endpoint: dict[str, SimPeer] = {}
        self._groups: dict[str, int] | None = None
        self._connections: set[tuple[str, str]] = set()
        self.drop_rules: list[DropRule] = []
        self.stats = SimStats()
        self.events_processed = 0
        self.record = record
        self.log: list[tuple[float, str, str, str, str]] = []
        self.on_deliver: Callable[[SimPeer, ReceivedMessage, float], None] | None = None
        self.on_commit: Callable[[SimPeer, Committed, float], None] | None = None
        self.on_transmit: TransmitHook | None = None
        self.on_receive: ReceiveHook | None = None

    # --- topology -------------------------------------------------------------------------------

    def add(
        self,
        endpoint: str,
        pki_id: bytes,
        identity: bytes,
        node: SimNode,
        aliases: Iterable[str] = (),
        start: bool = True,
    ) -> SimPeer:
        """Place ``node`` at ``endpoint`` (and its ``aliases``, e.g. an internal endpoint)."""
        if endpoint in self._by_endpoint:
            raise ValueError(f"endpoint {endpoint} is taken")
        peer = SimPeer(endpoint=endpoint, pki_id=pki_id, identity=identity, node=node, aliases=tuple(aliases))
        bandwidth = self._bandwidth(endpoint)
        peer.bandwidth = bandwidth if bandwidth else None
        self.peers[endpoint] = peer
        for name in (endpoint, *peer.aliases):
            self._by_endpoint[name] = peer
        if start:
            self._call(peer, lambda n: n.start(self.now))
        return peer

    def node(self, endpoint: str) -> SimNode:
        peer = self.peers[endpoint]
        if peer.node is None:
            raise ValueError(f"{endpoint} is down")
        return peer.node

    def at(self, when: float, action: Callable[[], None]) -> None:
        """Run ``action`` (a scenario step: a crash, a new block, ...) when virtual time reaches ``when``."""
        self._push(max(when, self.now), action)

    def every(self, interval: float, action: Callable[[], None], start: float | None = None) -> None:
        """Run ``action`` every ``interval`` seconds of virtual time, for as long as the simulation runs."""

        def tick() -> None:
            action()
            self._push(self.now + interval, tick)

        self._push(self.now + interval if start is None else start, tick)

    def invoke(self, endpoint: str, call: Callable[[SimNode], list[Effect]]) -> None:
        """Call into the node at ``endpoint`` now (as its application would) and carry out the effects."""
        peer = self.peers[endpoint]
        if peer.node is None:
            raise ValueError(f"{endpoint} is down")
        self._call(peer, call)

    def crash(self, endpoint: str) -> None:
        """Stop the node at ``endpoint`` without letting it say goodbye."""
        peer = self.peers[endpoint]
        peer.node = None
        peer.generation += 1
        peer.timer_at = None
        for a, b in sorted(self._connections):
            if endpoint in (a, b):
                self._connections.discard((a, b))
                other = self.peers[b if a == endpoint else a]
                self._schedule(
                    self._latency(endpoint, other.endpoint, self.rng),
                    other,
                    lambda n, pid=peer.pki_id: n.on_connection_lost(pid, self.now),
                )

    def stop(self, endpoint: str) -> None:
        """Stop the node at ``endpoint`` gracefully: it may send its last effects, then it is gone."""
        peer = self.peers[endpoint]
        if peer.node is not None:
            self._call(peer, lambda n: n.stop(self.now))
        self.crash(endpoint)

    def restart(self, endpoint: str, node: SimNode, pki_id: bytes | None = None, identity: bytes | None = None) -> None:
        """Run a new node object at ``endpoint`` (optionally with a renewed identity)."""
        peer = self.peers[endpoint]
        if peer.node is not None:
            raise ValueError(f"{endpoint} is still up; crash it first")
        peer.node = node
        peer.generation += 1
        peer.uplink_free_at = self.now  # whatever was queued on its uplink died with the old process
        if pki_id is not None:
            peer.pki_id = pki_id
        if identity is not None:
            peer.identity = identity
        self._call(peer, lambda n: n.start(self.now))

    def partition(self, *groups: Iterable[str]) -> None:
        """Split the network: endpoints of different groups cannot reach each other.

        Endpoints named in no group form one more group together.
        """
        assigned: dict[str, int] = {}
        for index, group in enumerate(groups):
            for endpoint in group:
                assigned[endpoint] = index
        rest = len(groups)
        self._groups = {ep: assigned.get(ep, rest) for ep in self.peers}

    def heal(self) -> None:
        self._groups = None

    def reachable(self, a: str, b: str) -> bool:
        if self._groups is None:
            return True
        return self._groups.get(a, -1) == self._groups.get(b, -1)

    # --- running --------------------------------------------------------------------------------

    def run_until(self, t: float) -> None:
        """Process every event up to virtual time ``t``; the clock ends at ``t``."""
        while self._queue and self._queue[0][0] <= t:
            at, _, action = heapq.heappop(self._queue)
            self.now = max(self.now, at)
            self.events_processed += 1
            action()
        self.now = max(self.now, t)

    def run_for(self, duration: float) -> None:
        self.run_until(self.now + duration)

    def run_until_true(self, predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
        """Advance until ``predicate()`` holds (checked every ``step`` of virtual time) or ``timeout`` passes."""
        deadline = self.now + timeout
        while not predicate():
            if self.now >= deadline:
                return False
            self.run_until(min(deadline, self.now + step))
        return True

    # --- internals ------------------------------------------------------------------------------

    def _push(self, at: float, action: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (at, self._seq, action))

    def _schedule(self, delay: float, peer: SimPeer, call: Callable[[SimNode], list[Effect]]) -> None:
        generation = peer.generation

        def fire() -> None:
            if peer.node is not None and peer.generation == generation:
                self._call(peer, call)

        self._push(self.now + delay, fire)

    def _call(self, peer: SimPeer, call: Callable[[SimNode], list[Effect]]) -> None:
        node = peer.node
        assert node is not None
        effects = call(node)
        if peer.node is node:
            self._apply(peer, effects)
            self._rearm(peer)

    def _rearm(self, peer: SimPeer) -> None:
        node = peer.node
        if node is None:
            return
        deadline = node.next_deadline()
        if deadline is None or deadline == peer.timer_at:
            return
        peer.timer_version += 1
        peer.timer_at = deadline
        version, generation = peer.timer_version, peer.generation

        def fire() -> None:
            if peer.node is None or peer.generation != generation or peer.timer_version != version:
                return
            peer.timer_at = None
            self._call(peer, lambda n: n.on_tick(self.now))
            # a node whose deadline stays at or before now after on_tick would spin the clock forever
            after = peer.node.next_deadline() if peer.node is not None else None
            peer.stalled_ticks = peer.stalled_ticks + 1 if after is not None and after <= self.now else 0
            if peer.stalled_ticks > MAX_STALLED_TICKS:
                stuck = f"next_deadline() stays at {after} <= now ({self.now}) after on_tick"
                raise RuntimeError(f"{peer.endpoint}: {stuck}: timer livelock")

        self._push(max(deadline, self.now), fire)

    def _apply(self, src: SimPeer, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Send):
                self._send_all(src, effect)
            elif isinstance(effect, Handshake):
                self._answer_handshake(src, effect.endpoint)
            elif isinstance(effect, Probe):
                self._answer_probe(src, effect.peer)
            elif isinstance(effect, Disconnect):
                dst = self._find_pki(effect.pki_id)
                if dst is not None:
                    self._connections.discard(self._pair(src.endpoint, dst.endpoint))
            elif isinstance(effect, Committed):
                if self.keep_effects:
                    src.committed.append((self.now, effect))
                if self.on_commit is not None:
                    self.on_commit(src, effect, self.now)
            elif isinstance(effect, LeadershipChanged):
                src.leadership.append((self.now, effect))
            elif isinstance(effect, Deliver):
                if self.keep_effects:
                    src.delivered.append((self.now, effect.message))
                if self.on_deliver is not None:
                    self.on_deliver(src, effect.message, self.now)
            else:
                raise TypeError(f"unknown effect {effect!r}")

    def _find_pki(self, pki_id: bytes) -> SimPeer | None:
        for peer in self.peers.values():
            if peer.pki_id == pki_id:
                return peer
        return None

    @staticmethod
    def _pair(a: str, b: str) -> tuple[str, str]:
        return (a, b) if a <= b else (b, a)

    def _send_all(self, src: SimPeer, effect: Send) -> None:
        envelope = effect.envelope
        size = envelope.ByteSize()
        # Decoded once, at the first target that can receive it; every target gets the same (immutable)
        # ReceivedMessage, since sender, envelope and message are the same for all of them.
        decoded: list[ReceivedMessage | None] = []
        for target in effect.to:
            self._send(src, target, envelope, size, decoded)

    def _send(
        self,
        src: SimPeer,
        target: RemotePeer,
        envelope: pb.Envelope,
        size: int,
        decoded: list[ReceivedMessage | None],
    ) -> None:
        stats = self.stats
        stats.sent += 1
        stats.bytes_sent += size
        dst = self._by_endpoint.get(target.endpoint)
        if dst is None or dst.node is None or dst.pki_id != target.pki_id or dst is src:
            stats.dropped += 1
            return
        groups = self._groups
        if groups is not None and groups.get(src.endpoint, -1) != groups.get(dst.endpoint, -1):
            stats.dropped += 1
            return
        if not decoded:
            try:
                decoded.append(
                    ReceivedMessage(
                        sender=src.pki_id,
                        sender_endpoint=src.endpoint,
                        sender_identity=src.identity,
                        envelope=envelope,
                        message=open_envelope(envelope),
                    )
                )
            except InvalidMessage:
                decoded.append(None)
        received = decoded[0]
        if received is None:
            stats.dropped += 1
            return
        message = received.message
        kind = message.WhichOneof("content") or ""
        stats.by_kind[kind] = stats.by_kind.get(kind, 0) + 1
        # The message leaves the sender: it occupies the uplink whether or not the link then loses it.
        delay = self._latency(src.endpoint, dst.endpoint, self.rng)
        bandwidth = src.bandwidth
        if bandwidth is not None:
            start = src.uplink_free_at if src.uplink_free_at > self.now else self.now
            src.uplink_free_at = start + size / bandwidth
            delay += src.uplink_free_at - self.now
        src.bytes_sent += size
        stats.bytes_by_kind[kind] = stats.bytes_by_kind.get(kind, 0) + size
        if self.on_transmit is not None:
            self.on_transmit(src, dst, message, size)
        if self.loss and self.rng.random() < self.loss:
            stats.dropped += 1
            return
        if self.drop_rules and any(rule(src.endpoint, dst.endpoint, message) for rule in self.drop_rules):
            stats.dropped += 1
            return
        src_generation, dst_generation = src.generation, dst.generation

        def arrive() -> None:
            node = dst.node
            if node is None or dst.generation != dst_generation:
                return  # the receiver crashed (and maybe restarted) meanwhile
            if src.generation != src_generation:
                return  # the sender crashed while the message was in flight: the stream broke
            self._connections.add(self._pair(src.endpoint, dst.endpoint))
            stats.delivered += 1
            if self.record:
                self.log.append((self.now, src.endpoint, dst.endpoint, kind, envelope.payload.hex()[:16]))
            if self.on_receive is not None:
                self.on_receive(dst, src, message, self.now)
            # _call, written out: this is the simulator's innermost loop
            effects = node.on_message(received, self.now)
            if dst.node is node:
                if effects:
                    self._apply(dst, effects)
                self._rearm(dst)

        self._push(self.now + delay, arrive)

    def _answer_handshake(self, src: SimPeer, endpoint: str) -> None:
        dst = self._by_endpoint.get(endpoint)
        if dst is None or not dst.up or dst is src:
            reason = "cannot dial self" if dst is src else "connection refused"
            result = HandshakeResult(endpoint=endpoint, error=reason)
            self._schedule(
                2 * self._latency(src.endpoint, endpoint, self.rng), src, lambda n: n.on_handshake(result, self.now)
            )
            return
        if not self.reachable(src.endpoint, dst.endpoint):
            result = HandshakeResult(endpoint=endpoint, error="dial timed out")
            self._schedule(self.dial_timeout, src, lambda n: n.on_handshake(result, self.now))
            return
        result = HandshakeResult(endpoint=endpoint, pki_id=dst.pki_id, identity=dst.identity)
        self._schedule(
            2 * self._latency(src.endpoint, dst.endpoint, self.rng), src, lambda n: n.on_handshake(result, self.now)
        )

    def _answer_probe(self, src: SimPeer, target: RemotePeer) -> None:
        dst = self._by_endpoint.get(target.endpoint)
        alive = dst is not None and dst.up and dst.pki_id == target.pki_id and dst is not src
        if alive and dst is not None and not self.reachable(src.endpoint, dst.endpoint):
            self._schedule(self.dial_timeout, src, lambda n: n.on_probe(target, False, self.now))
            return
        delay = 2 * self._latency(src.endpoint, target.endpoint, self.rng)
        self._schedule(delay, src, lambda n: n.on_probe(target, alive, self.now))
