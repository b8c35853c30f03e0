"""Fuzz targets for the wire decoder and for every message handler of the protocol core.

``PeerWorld`` is one peer's whole core (``PeerCore``: discovery, certificate pull, the channel with its block pull
and StateInfo, enhanced dissemination, state transfer, leader election) on the peer daemon's own stores (the SQLite
ledger and peer list; or the simulator's in-memory ones), and a small shell around it that stands for five other
peers (p1, p2 of our Org1; q1, q2 of Org2; r1 of Org3, which is not in the
channel). The shell executes what the core asks (handshakes answered, probes answered, blocks from the ordering
service fed to a leader) and checks every effect. Each input is a message from one of the five, who are
authenticated (the handshake proved who sent it) and hostile: it starts from a valid message of some kind, or
from a valid answer to something the core just sent that peer (so that it carries the right nonce and gets past
the "did we ask?" checks), is mutated, and is signed again by the peer it speaks for, or by its sender, or not at
all. It then goes through the shell's own decoding (``open_envelope``, as ``rumor.comm`` does) into
``PeerCore.on_message``; the clock moves and timers fire between inputs. Now and then the peer leaves and re-joins
the channel, loses a connection, or restarts on its stores (a new incarnation that loads the peers it saved).

Invariants, besides "no exception": every envelope the core sends decodes and carries a legal tag; every signed
message it passes on (alive, StateInfo, leadership, identity; inside membership responses, snapshots and pull
updates too) is signed by the peer it speaks for; every block it passes on or commits verifies.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import random
import shutil
import tempfile
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fuzz_common import InvariantViolation, check
from fuzz_mutate import Chooser, Mutator, chance, harvest, mutate_bytes, pick, weighted
from google.protobuf.message import DecodeError

from rumor.comm.handshake import HandshakeError, verify_conn_establish
from rumor.config import GossipConfig
from rumor.core.channel import channel_mac
from rumor.core.msgstore import block_digest, origin_of
from rumor.core.node import GossipNode
from rumor.core.peer import PeerCore
from rumor.core.peerstore import MemoryPeerStore, PeerStore, SqlitePeerStore
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
    Send,
)
from rumor.crypto.api import CryptoError
from rumor.crypto.blocks import block_data_hash, block_header_hash, new_block, sign_block
from rumor.crypto.cheap import CheapCryptoService, CheapRegistry
from rumor.ledger import Ledger, MemoryLedger
from rumor.sim.x509 import X509Material
from rumor.wire import messages as wire
from rumor.wire.pb.common import common_pb2
from rumor.wire.pb.gossip import message_pb2 as pb

CHANNEL = "fuzzchannel"
ORG1, ORG2, ORG3, ORDERER = "Org1MSP", "Org2MSP", "Org3MSP", "OrdererMSP"
CHAIN_LENGTH = 48
PRIVATE_KINDS = ("private_data", "privateReq", "privateRes")
EFFECT_TYPES = (Send, Handshake, Probe, Disconnect, Deliver, Committed, LeadershipChanged)


@dataclass
class Actor:
    """A peer the shell stands for (or our own peer, ``p0``)."""

    name: str
    svc: Any  # CheapCryptoService or X509CryptoService
    endpoint: str
    inc: int
    seq: int = 0
    proof: pb.Envelope | None = None
    pki_id: bytes = b""
    identity: bytes = b""

    def __post_init__(self) -> None:
        self.pki_id = bytes(self.svc.pki_id)
        self.identity = bytes(self.svc.identity)

    def tick(self) -> int:
        self.seq += 1
        return self.seq


def _crypto(kind: str) -> tuple[Any, Any]:
    """(a factory of crypto services by (org, name), the orderer's service) for ``kind`` cheap or x509."""
    if kind == "cheap":
        registry = CheapRegistry()
        registry.register_channel(CHANNEL, [ORDERER])

        def cheap(org: str, name: str) -> CheapCryptoService:
            return CheapCryptoService.for_peer(org, name, registry)

        return cheap, cheap(ORDERER, "orderer")
    services = _x509_services()
    return (lambda org, name: services[(org, name)]), services[(ORDERER, "orderer")]


@functools.cache
def _x509_services() -> dict[tuple[str, str], Any]:
    """X.509 services made once per process: keys and certificates take a while, and a world built again must
    be the same world (hypothesis replays an example on a fresh one and expects the same behaviour)."""
    material = X509Material()
    material.register_channel(CHANNEL, [ORDERER])
    names = [(ORG1, "p0"), (ORG1, "p1"), (ORG1, "p2"), (ORG2, "q1"), (ORG2, "q2"), (ORG3, "r1")]
    services = {(org, name): material.service(org, name) for org, name in names}
    services[(ORDERER, "orderer")] = material.service(ORDERER, "orderer", role="orderer")
    return services


class PeerWorld:
    """One peer's core behind a checking shell, and the hostile peers around it (see the module docstring)."""

    def __init__(
        self, seed: int, *, crypto: str = "cheap", dissemination: str = "fabric", ledger: str = "sqlite"
    ) -> None:
        self.rng = random.Random(seed)
        make, self.orderer = _crypto(crypto)
        self.me = Actor("p0", make(ORG1, "p0"), "p0:7051", 10**18)
        self.actors = [
            Actor(name, make(org, name), f"{name}:7051", 10**18 + i)
            for i, (name, org) in enumerate([("p1", ORG1), ("p2", ORG1), ("q1", ORG2), ("q2", ORG2), ("r1", ORG3)])
        ]
        self.by_pki = {a.pki_id: a for a in (self.me, *self.actors)}
        self.by_endpoint = {a.endpoint: a for a in self.actors}
        for actor in self.actors:
            conn = wire.conn_establish(actor.pki_id, actor.identity, b"")
            actor.proof = wire.seal(conn, actor.svc.sign)
        self.chain = self._chain(CHAIN_LENGTH)
        self.now = 0.0
        self.config = GossipConfig(
            endpoint=self.me.endpoint,
            external_endpoint=self.me.endpoint,
            bootstrap=("p1:7051", "q1:7051", "nowhere:7051"),
            dissemination=dissemination,
        )
        # The peer daemon's own stores (SQLite; the ledger in memory, the peer list in a file, since each of its
        # calls opens the file anew), or the simulator's: both stand behind the core.
        self.ledger: Ledger | MemoryLedger = Ledger(":memory:") if ledger == "sqlite" else MemoryLedger()
        self.peer_store: PeerStore = SqlitePeerStore(_scratch_file()) if ledger == "sqlite" else MemoryPeerStore()
        # What the core sent each peer lately: the hostile peers answer it (under its nonces).
        self.outbox: dict[bytes, deque[pb.GossipMessage]] = {a.pki_id: deque(maxlen=12) for a in self.actors}
        self.committed = 0
        self.joined = True
        self.core = self._start_core()
        self.apply(self.core.add_block(CHANNEL, 0, self.chain[0], now=0.0))
        # Everyone introduces itself, so that the core knows its neighbours and the channel's peers.
        for actor in self.actors:
            self.deliver(actor, self.seal(self.alive(actor, with_identity=True), actor))
            self.deliver(actor, self.seal(self.state_info(actor), actor))
        seeds = [self.seed(kind, self.actors[0]) for kind in SEED_KINDS]
        self.dictionary = harvest(seeds) + [a.pki_id for a in self.actors] + [a.identity for a in self.actors]

    def _start_core(self) -> PeerCore:
        node = GossipNode(
            self.config,
            self.me.identity,
            self.me.svc,
            self.me.svc,
            rng=random.Random(self.me.inc),
            start_time_ns=self.me.inc,
            peer_store=self.peer_store,
        )
        self.core = PeerCore(node, self.ledger, rng=random.Random(self.me.inc + 1))
        anchors = {ORG1: ["p1:7051"], ORG2: ["q1:7051"]}
        if self.joined:
            self.apply(self.core.join_channel(CHANNEL, [ORG1, ORG2], anchors, now=self.now))
        self.apply(self.core.start(self.now))
        return self.core

    def restart(self) -> None:
        """Stop the core and start a new one (a new incarnation) on the same ledger and peer list: what the
        hostile peers made it store must not break its start."""
        self.apply(self.core.stop(self.now))
        self.me.inc += 1
        self.core = self._start_core()

    def _chain(self, length: int) -> list[bytes]:
        chain: list[bytes] = []
        previous = b""
        for number in range(length):
            block = new_block(number, previous, [b"tx %d" % number, bytes(range(number % 7))])
            sign_block(block, self.orderer, nonce=b"%024d" % number)
            chain.append(block.SerializeToString())
            previous = block_header_hash(block.header)
        return chain

    # --- the shell ------------------------------------------------------------------------------------

    def deliver(self, sender: Actor, envelope: pb.Envelope) -> str:
        """Hand ``envelope`` from ``sender`` to the core the way rumor.comm does: decoded and tag-checked first."""
        try:
            message = wire.open_envelope(envelope)
        except wire.InvalidMessage:
            return "shell-rejected"
        kind = message.WhichOneof("content")
        if kind in ("conn", "ack"):
            return "shell-handled"  # comm drops a second ConnEstablish and answers acks itself
        received = ReceivedMessage(
            sender.pki_id, sender.endpoint, sender.identity, envelope, message, proof=sender.proof
        )
        self.apply(self.core.on_message(received, self.now))
        return "delivered"

    def advance(self, c: Chooser) -> None:
        """Move the clock a random step; run the timers that came due."""
        step = weighted(c, [(30, 0.0), (30, 0.05), (20, 0.6), (12, 2.5), (6, 11.0), (2, 70.0)])
        self.now += step
        deadline = self.core.next_deadline()
        check(deadline is None or deadline == deadline, "next_deadline() is NaN")
        if deadline is not None and deadline <= self.now:
            self.apply(self.core.on_tick(self.now))

    def apply(self, effects: list[Effect]) -> None:
        """Check every effect and do what a shell does with it; effects that cause more effects are queued."""
        queue = deque(effects)
        steps = 0
        while queue:
            steps += 1
            check(steps < 100_000, "effects keep causing effects")
            effect = queue.popleft()
            if not isinstance(effect, EFFECT_TYPES):  # (the message only when it fails: an effect may be megabytes)
                raise InvariantViolation(f"not an effect: {type(effect).__name__}")
            if isinstance(effect, Send):
                self._check_send(effect)
                message = wire.open_envelope(effect.envelope)
                for target in effect.to:
                    sent = self.outbox.get(target.pki_id)
                    if sent is not None:
                        sent.append(message)
            elif isinstance(effect, Committed):
                check(effect.channel == CHANNEL, f"committed a block of {effect.channel!r}")
                self._check_block(effect.channel, effect.seq_num, effect.block, "committed")
                self.committed += 1
            elif isinstance(effect, Handshake):
                actor = self.by_endpoint.get(effect.endpoint)
                if actor is None or self.rng.random() < 0.2:
                    result = HandshakeResult(effect.endpoint, error="connection refused")
                else:
                    result = HandshakeResult(effect.endpoint, actor.pki_id, actor.identity)
                queue.extend(self.core.on_handshake(result, self.now))
            elif isinstance(effect, Probe):
                queue.extend(self.core.on_probe(effect.peer, self.rng.random() < 0.7, self.now))
            elif isinstance(effect, LeadershipChanged) and effect.is_leader and self.joined:
                # A leader's deliver client brings the ordering service's next block.
                height = self.ledger.height(CHANNEL)
                if height < len(self.chain):
                    queue.extend(self.core.add_block(CHANNEL, height, self.chain[height], now=self.now))

    def _check_send(self, effect: Send) -> None:
        check(len(effect.to) > 0, "a Send to nobody")
        check(all(t.pki_id != self.me.pki_id for t in effect.to), "a Send to ourselves")
        try:
            message = wire.open_envelope(effect.envelope)
        except wire.InvalidMessage as exc:
            raise InvariantViolation(f"sent an envelope that does not open: {exc}") from None
        self._check_relayed(effect.envelope, message)
        kind = message.WhichOneof("content")
        if kind == "mem_res":
            for envelope in (*message.mem_res.alive, *message.mem_res.dead):
                self._check_inner(envelope, "alive_msg")
        elif kind == "state_snapshot":
            for envelope in message.state_snapshot.elements:
                self._check_inner(envelope, "state_info")
        elif kind == "data_update":
            for envelope in message.data_update.data:
                self._check_inner(envelope, None)
        elif kind == "mem_req":
            self._check_inner(message.mem_req.self_information, "alive_msg")

    def _check_inner(self, envelope: pb.Envelope, kind: str | None) -> None:
        try:
            inner = wire.open_envelope(envelope)
        except wire.InvalidMessage as exc:
            raise InvariantViolation(f"sent an inner envelope that does not open: {exc}") from None
        check(kind is None or inner.WhichOneof("content") == kind, f"sent a {inner.WhichOneof('content')} as {kind}")
        self._check_relayed(envelope, inner)

    def _check_relayed(self, envelope: pb.Envelope, message: pb.GossipMessage) -> None:
        """A signed kind must be signed by the peer it speaks for; a block must verify."""
        kind = message.WhichOneof("content")
        if kind in wire.SIGNED_KINDS:
            origin = self.by_pki.get(origin_of(message) or b"") if kind != "conn" else self.me
            check(origin is not None, f"passed on a {kind} of a peer nobody knows")
            assert origin is not None
            identity = origin.identity if kind != "peer_identity" else message.peer_identity.cert
            try:
                self.me.svc.verify(identity, envelope.signature, envelope.payload)
            except CryptoError as exc:
                raise InvariantViolation(f"passed on a {kind} of {origin.name} that it did not sign: {exc}") from None
            secret = envelope.secret_envelope
            if kind == "alive_msg" and envelope.HasField("secret_envelope") and secret.payload:
                # Only an alive message's secret (the internal endpoint) means anything; it must be the origin's.
                try:
                    self.me.svc.verify(origin.identity, secret.signature, secret.payload)
                except CryptoError as exc:
                    raise InvariantViolation(
                        f"passed on an alive message of {origin.name} with a forged secret: {exc}"
                    ) from None
        elif kind == "data_msg":
            payload = message.data_msg.payload
            self._check_block(message.channel.decode(errors="replace"), payload.seq_num, payload.data, "passed on")

    def _check_block(self, channel: str, seq: int, block: bytes, what: str) -> None:
        try:
            self.me.svc.verify_block(channel, seq, block)
        except CryptoError as exc:
            raise InvariantViolation(f"{what} block {seq} of {channel!r} that does not verify: {exc}") from None

    # --- valid messages ---------------------------------------------------------------------------------

    def seal(self, message: pb.GossipMessage, signer: Actor | None, secret: str = "") -> pb.Envelope:
        envelope = wire.seal(message, signer.svc.sign if signer is not None else None)
        if secret and signer is not None:
            envelope = wire.with_secret(envelope, secret, signer.svc.sign)
        return envelope

    def alive(self, actor: Actor, *, with_identity: bool = False) -> pb.GossipMessage:
        identity = actor.identity if with_identity else b""
        return wire.alive(actor.endpoint, actor.pki_id, actor.inc, actor.tick(), identity=identity)

    def state_info(self, actor: Actor, height: int | None = None, left: bool = False) -> pb.GossipMessage:
        height = self.ledger.height(CHANNEL) + 3 if height is None else height
        mac = channel_mac(actor.pki_id, CHANNEL)
        return wire.state_info(mac, actor.pki_id, actor.inc, actor.tick(), height, left)

    def block_message(self, seq: int, c: Chooser | None = None) -> pb.GossipMessage:
        seq = min(max(seq, 0), len(self.chain) - 1)
        if c is not None and chance(c, 30):
            return wire.data_message(
                CHANNEL.encode(), seq, self.chain[seq], push_ttl=c.below(4), advertise_ttl=c.below(4)
            )
        return wire.data_message(CHANNEL.encode(), seq, self.chain[seq])

    def block_envelope(self, seq: int) -> pb.Envelope:
        return wire.seal(self.block_message(seq))

    def identity_envelope(self, actor: Actor) -> pb.Envelope:
        return wire.seal(wire.peer_identity(actor.pki_id, actor.identity), actor.svc.sign)

    def seed(self, kind: str, origin: Actor, c: Chooser | None = None) -> pb.GossipMessage:
        """A valid message of ``kind`` speaking for ``origin`` (fresh timestamps, blocks near our height)."""
        r = c if c is not None else _Fixed()
        height = self.ledger.height(CHANNEL)
        channel = CHANNEL.encode()
        nonce = pick(r, (0, 1, 7, 2**64 - 1, r.below(2**64)))
        msg_type = pick(r, (wire.BLOCK_MSG, wire.IDENTITY_MSG))
        seqs = [height + i for i in range(r.below(4), 4 + r.below(6))]
        if kind == "alive_msg":
            return self.alive(origin, with_identity=chance(r, 50))
        if kind == "mem_req":
            return wire.membership_request(
                self.seal(self.alive(origin), origin), [a.pki_id for a in self.actors], nonce
            )
        if kind == "mem_res":
            alive = [self.seal(self.alive(a, with_identity=chance(r, 30)), a) for a in self.actors if chance(r, 70)]
            dead = [self.seal(self.alive(a), a) for a in self.actors if chance(r, 20)]
            return wire.membership_response(alive, dead, nonce)
        if kind == "data_msg":
            return self.block_message(height + r.below(6) - 1, c)
        if kind == "hello":
            return wire.hello(nonce, msg_type, channel if msg_type == wire.BLOCK_MSG else b"")
        if kind == "data_dig":
            digests = self._digests(msg_type, seqs)
            advertise = r.below(4) if msg_type == wire.BLOCK_MSG and chance(r, 40) else None
            ch = channel if msg_type == wire.BLOCK_MSG else b""
            return wire.data_digest(nonce, msg_type, digests, ch, advertise_ttl=advertise)
        if kind == "data_req":
            ch = channel if msg_type == wire.BLOCK_MSG else b""
            return wire.data_request(nonce, msg_type, self._digests(msg_type, seqs), ch)
        if kind == "data_update":
            return self._update(nonce, msg_type, self._digests(msg_type, seqs))
        if kind == "empty":
            return wire.empty(nonce)
        if kind == "conn":
            return wire.conn_establish(origin.pki_id, origin.identity, b"")
        if kind == "state_info":
            return self.state_info(origin, height + r.below(8), left=chance(r, 10))
        if kind == "state_snapshot":
            elements = [self.seal(self.state_info(a), a) for a in self.actors if chance(r, 70)]
            return wire.state_info_snapshot(elements, nonce)
        if kind == "state_info_pull_req":
            return wire.state_info_pull_request(channel_mac(origin.pki_id, CHANNEL), nonce)
        if kind == "state_request":
            start = max(0, height - r.below(4))
            return wire.state_request(channel, start, start + r.below(12), nonce)
        if kind == "state_response":
            return wire.state_response(channel, self._payloads(seqs), nonce)
        if kind == "leadership_msg":
            return wire.leadership(channel, origin.pki_id, origin.inc, origin.tick(), chance(r, 50))
        if kind == "peer_identity":
            return wire.peer_identity(origin.pki_id, origin.identity)
        if kind == "ack":
            return wire.ack(nonce, pick(r, ("", "error")))
        message = pb.GossipMessage(tag=wire.REQUIRED_TAG[kind], channel=channel, nonce=nonce)
        getattr(message, kind).SetInParent()
        return message

    def _digests(self, msg_type: int, seqs: Sequence[int]) -> list[bytes]:
        if msg_type == wire.BLOCK_MSG:
            return [block_digest(s) for s in seqs]
        return [a.pki_id for a in self.actors]

    def _payloads(self, seqs: Sequence[int]) -> list[pb.Payload]:
        return [pb.Payload(seq_num=s, data=self.chain[s]) for s in seqs if 0 <= s < len(self.chain)]

    def _update(self, nonce: int, msg_type: int, digests: Sequence[bytes]) -> pb.GossipMessage:
        items: list[pb.Envelope] = []
        for digest in digests:
            if msg_type == wire.BLOCK_MSG:
                try:
                    seq = int(digest.decode("ascii"))
                except (UnicodeDecodeError, ValueError):
                    continue
                if 0 <= seq < len(self.chain):
                    items.append(self.block_envelope(seq))
            else:
                actor = self.by_pki.get(bytes(digest))
                if actor is not None:
                    items.append(self.identity_envelope(actor))
        channel = CHANNEL.encode() if msg_type == wire.BLOCK_MSG else b""
        return wire.data_update(nonce, msg_type, items, channel)

    def answer(self, sent: pb.GossipMessage, c: Chooser) -> pb.GossipMessage | None:
        """A valid answer to ``sent`` (a message the core sent): under its nonce, with what it asked for."""
        kind = sent.WhichOneof("content")
        height = self.ledger.height(CHANNEL)
        if kind == "hello":
            hello = sent.hello
            seqs = range(height, height + 1 + c.below(8))
            channel = sent.channel
            return wire.data_digest(hello.nonce, hello.msg_type, self._digests(hello.msg_type, seqs), channel)
        if kind == "data_dig":
            dig = sent.data_dig
            wanted = [d for d in dig.digests if chance(c, 70)] or list(dig.digests[:1])
            return wire.data_request(dig.nonce, dig.msg_type, wanted, sent.channel)
        if kind == "data_req":
            req = sent.data_req
            return self._update(req.nonce, req.msg_type, list(req.digests))
        if kind == "mem_req":
            alive = [self.seal(self.alive(a, with_identity=chance(c, 30)), a) for a in self.actors if chance(c, 80)]
            dead = [self.seal(self.alive(a), a) for a in self.actors if chance(c, 10)]
            return wire.membership_response(alive, dead, sent.nonce)
        if kind == "state_info_pull_req":
            elements = [self.seal(self.state_info(a), a) for a in self.actors if chance(c, 80)]
            return wire.state_info_snapshot(elements, sent.nonce)
        if kind == "state_request":
            req = sent.state_request
            end = min(req.end_seq_num, req.start_seq_num + 20)
            return wire.state_response(sent.channel, self._payloads(range(req.start_seq_num, end + 1)), sent.nonce)
        if kind in ("alive_msg", "state_info", "leadership_msg", "data_msg"):
            copy = pb.GossipMessage()
            copy.CopyFrom(sent)
            return copy
        return None


class _Fixed:
    """A chooser that always takes the first option: builds the canonical seed of each kind."""

    def below(self, n: int) -> int:
        return 0

    def raw(self, n: int) -> bytes:
        return bytes(n)


SEED_KINDS = (
    "alive_msg",
    "mem_req",
    "mem_res",
    "data_msg",
    "hello",
    "data_dig",
    "data_req",
    "data_update",
    "empty",
    "conn",
    "state_info",
    "state_snapshot",
    "state_info_pull_req",
    "state_request",
    "state_response",
    "leadership_msg",
    "peer_identity",
    "ack",
    *PRIVATE_KINDS,
)


def _resign_blocks(world: PeerWorld, message: pb.GossipMessage, c: Chooser) -> None:
    """Let the orderer sign the (mutated) blocks in ``message`` again: clients choose what goes into a block and
    an orderer signs it, so a block whose content is hostile but whose signature is good is a real input."""

    def fix(seq: int, data: bytes) -> bytes:
        block = common_pb2.Block()
        try:
            block.ParseFromString(data)
        except DecodeError:
            return data
        if chance(c, 70):
            block.header.data_hash = block_data_hash(block.data)
        if chance(c, 50):
            block.header.number = seq
        del block.metadata.metadata[:]
        return sign_block(block, world.orderer, nonce=b"n" * 24).SerializeToString()

    kind = message.WhichOneof("content")
    if kind == "data_msg" and message.data_msg.HasField("payload"):
        payload = message.data_msg.payload
        payload.data = fix(payload.seq_num, payload.data)
    elif kind == "state_response":
        for payload in message.state_response.payloads:
            payload.data = fix(payload.seq_num, payload.data)
    elif kind == "data_update":
        for envelope in message.data_update.data:
            try:
                inner = wire.open_envelope(envelope)
            except wire.InvalidMessage:
                continue
            if inner.WhichOneof("content") == "data_msg":
                _resign_blocks(world, inner, c)
                envelope.payload = inner.SerializeToString()


class PeerTarget:
    """``PeerCore.on_message`` fed hostile messages from authenticated peers (see the module docstring)."""

    def __init__(
        self, seed: int, *, crypto: str = "cheap", dissemination: str = "fabric", ledger: str = "sqlite"
    ) -> None:
        self.name = f"peer-{crypto}-{dissemination}"
        self.world = PeerWorld(seed, crypto=crypto, dissemination=dissemination, ledger=ledger)

    def run(self, c: Chooser) -> str:
        w = self.world
        w.advance(c)
        if chance(c, 1):
            self._membership_change(c)
        sender = weighted(
            c, [(30, w.actors[0]), (20, w.actors[1]), (25, w.actors[2]), (10, w.actors[3]), (15, w.actors[4])]
        )
        message: pb.GossipMessage | None = None
        sent_to_sender = w.outbox[sender.pki_id]
        if sent_to_sender and chance(c, 45):
            message = w.answer(pick(c, sent_to_sender), c)
        origin = sender if chance(c, 75) else pick(c, w.actors)
        if message is None:
            message = w.seed(pick(c, SEED_KINDS), origin, c)
        rounds = weighted(c, [(25, 0), (40, 1), (20, 2), (10, 3), (5, 8)])
        Mutator(c, w.dictionary).mutate(message, rounds)
        if rounds and chance(c, 75):
            # Most mutations would otherwise die at the shell's tag check; a hostile peer sets the right tag.
            with contextlib.suppress(wire.InvalidMessage):
                message.tag = wire.required_tag(message)
        if chance(c, 20):
            _resign_blocks(w, message, c)
        envelope = self._envelope(message, sender, c)
        outcome = w.deliver(sender, envelope)
        if chance(c, 3):
            w.deliver(sender, envelope)  # the same envelope twice: a replay
        return outcome

    def _envelope(self, message: pb.GossipMessage, sender: Actor, c: Chooser) -> pb.Envelope:
        w = self.world
        speaker = w.by_pki.get(origin_of_safe(message) or b"")
        # An authenticated peer signs whatever it likes with its own key; signing as the peer the message
        # speaks for models that peer being the hostile one, and gets the input past the signature checks.
        signer = weighted(
            c,
            [(55, speaker if speaker is not None and speaker is not w.me else sender), (20, sender), (25, None)],
        )
        secret = ""
        if message.WhichOneof("content") == "alive_msg" and chance(c, 50):
            secret = pick(c, ("p1:7051", "p0:7051", "", "x" * 300, "nowhere:1"))
        envelope = w.seal(message, signer, secret)
        how = c.below(20)
        if how == 0:
            envelope.signature = c.raw(c.below(80))
        elif how == 1:
            envelope.payload = mutate_bytes(c, envelope.payload, w.dictionary)
        elif how == 2:
            envelope.secret_envelope.payload = mutate_bytes(c, envelope.secret_envelope.payload)
        elif how == 3:
            envelope.secret_envelope.signature = c.raw(16)
        return envelope

    def _membership_change(self, c: Chooser) -> None:
        """Rarely, the application leaves or re-joins the channel, or a connection drops: handlers must cope
        with messages arriving in every such state."""
        w = self.world
        how = c.below(4)
        if how == 3:
            w.restart()
        elif how == 0 and w.joined:
            w.apply(w.core.leave_channel(CHANNEL, now=w.now))
            w.joined = False
        elif how == 1 and not w.joined:
            w.apply(w.core.join_channel(CHANNEL, [ORG1, ORG2], now=w.now))
            w.joined = True
        else:
            w.apply(w.core.on_connection_lost(pick(c, w.actors).pki_id, w.now))


_SCRATCH: list[Path] = []


def _scratch_file() -> Path:
    """A fresh file name in this process's scratch directory (removed at exit)."""
    if not _SCRATCH:
        # In memory where the system has a tmpfs: the peer store syncs each save to disk, and the fuzz saves often.
        shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        root = Path(tempfile.mkdtemp(prefix="rumor-fuzz-", dir=shm))
        atexit.register(shutil.rmtree, root, True)
        _SCRATCH.append(root)
    _SCRATCH.append(_SCRATCH[0] / f"peers-{len(_SCRATCH)}.sqlite")
    return _SCRATCH[-1]


def origin_of_safe(message: pb.GossipMessage) -> bytes | None:
    try:
        return origin_of(message)
    except wire.InvalidMessage:
        return None


class WireTarget:
    """The shell's decoding of a received frame: ``Envelope`` parse, ``open_envelope``, the SecretEnvelope, and the
    handshake's ``verify_conn_establish``. Refusals are DecodeError (the frame), InvalidMessage, CryptoError and
    HandshakeError; whatever is accepted must carry a legal tag and, for a handshake, be signed by its identity."""

    name = "wire"

    def __init__(self, seed: int) -> None:
        self.world = PeerWorld(seed)
        w = self.world
        self.frames: list[bytes] = []
        for kind in SEED_KINDS:
            for origin in w.actors[:3]:
                secret = "p1:7051" if kind == "alive_msg" else ""
                signer = origin if kind in wire.SIGNED_KINDS else None
                self.frames.append(w.seal(w.seed(kind, origin), signer, secret).SerializeToString())
        self.dictionary = w.dictionary

    def run(self, c: Chooser) -> str:
        w = self.world
        frame = pick(c, self.frames)
        if chance(c, 50):
            envelope = pb.Envelope.FromString(frame)
            Mutator(c, self.dictionary).mutate(envelope, 1 + c.below(3))
            if chance(c, 50):
                try:
                    message = wire.open_envelope(envelope)
                    envelope = w.seal(message, pick(c, w.actors)) if chance(c, 50) else envelope
                except wire.InvalidMessage:
                    pass
            frame = envelope.SerializeToString()
        else:
            frame = mutate_bytes(c, frame, self.dictionary)
        return self.decode(frame)

    def decode(self, frame: bytes) -> str:
        w = self.world
        outcome = "rejected"
        envelope = pb.Envelope()
        try:
            envelope.ParseFromString(frame)
        except DecodeError:
            return "undecodable"
        try:
            message = wire.open_envelope(envelope)
        except wire.InvalidMessage:
            pass
        else:
            outcome = "accepted"
            kind = wire.kind_of(message)
            check(kind in wire.REQUIRED_TAG or kind in wire.PULL_KINDS, f"accepted an unknown kind {kind}")
            check(message.tag == wire.required_tag(message), f"accepted a {kind} with tag {message.tag}")
            sender = w.actors[0]
            try:
                endpoint = wire.secret_endpoint(envelope, sender.identity, w.me.svc)
                check(endpoint is None or isinstance(endpoint, str), "secret endpoint is not a string")
            except (CryptoError, wire.InvalidMessage):
                pass
            wire.strip_secret(envelope)
        try:
            verified = verify_conn_establish(frame, mcs=w.me.svc, expected_tls_hash=b"", own_pki_id=w.me.pki_id)
        except HandshakeError:
            return outcome
        # expected_tls_hash=b"" means "TLS on, no certificate seen": nothing may pass.
        raise InvariantViolation(f"a handshake without a TLS certificate passed: {verified}")


class HandshakeTarget:
    """``verify_conn_establish`` with TLS off, so that mutated but re-signed ConnEstablish messages get through
    to the identity checks: what passes must name the identity that signed it."""

    name = "handshake"

    def __init__(self, seed: int) -> None:
        self.world = PeerWorld(seed)

    def run(self, c: Chooser) -> str:
        w = self.world
        actor = pick(c, w.actors)
        message = wire.conn_establish(actor.pki_id, actor.identity, b"hash", probe=chance(c, 20))
        Mutator(c, w.dictionary).mutate(message, c.below(4))
        signer = pick(c, (actor, pick(c, w.actors), None))
        envelope = w.seal(message, signer)
        if chance(c, 10):
            envelope.payload = mutate_bytes(c, envelope.payload)
        try:
            verified = verify_conn_establish(envelope, mcs=w.me.svc, expected_tls_hash=None, own_pki_id=w.me.pki_id)
        except HandshakeError:
            return "rejected"
        check(verified.pki_id == w.me.svc.pki_id_of(verified.identity), "handshake pki_id is not its identity's")
        try:
            w.me.svc.verify(verified.identity, envelope.signature, envelope.payload)
        except CryptoError as exc:
            raise InvariantViolation(f"a handshake passed that its identity did not sign: {exc}") from None
        check(verified.pki_id != w.me.pki_id, "a handshake from ourselves passed")
        return "accepted"
