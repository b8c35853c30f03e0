"""Pull: fetch the items (blocks, identities) that push did not bring, from a few random peers.

    responder                                               initiator (every interval, peer_num peers)
       O   <------------- Hello(nonce_p) -------------------   O
      /|\\  -------------- Digest([3, 5, 8], nonce_p) ------->  /|\\    digests collected for digest_wait
       |   <------------- Request([3, 8], nonce_p) ---------   |      each wanted item asked of one random holder
      / \\  -------------- Update([item3, item8], nonce_p) -->  / \\    updates accepted for response_wait

Initiator: a round sends a Hello with a fresh random nonce to each chosen peer.
For ``digest_wait`` it collects the Digests that come back under those nonces
(from the peer each nonce was sent to), ignoring digests of items it holds or
does not want (the item filter: blocks below the ledger height). Then it asks
each wanted item of one random holder, and for ``response_wait`` accepts
Updates. An Update item is taken only if it answers a digest this very peer was
asked for under this very nonce, if its content has that digest, and if the
owner's verify hook accepts it (signature, block signature, ...). So a
byzantine responder can send anything it likes and inject nothing: not items
nobody asked it for, not items under another nonce, not items whose content
does not match the requested digest, and not forgeries.

Responder: a Hello is answered with the digests of what we hold and may
disclose to that requester (the digest filter); its nonce is remembered for
``request_wait`` so that a Request under it gets an Update with the requested
items we hold and may disclose.

The engine holds no items: its owner (a channel for blocks, the certificate
store for identities) answers through the ``PullAdapter`` and keeps the items in
its message store. Pull messages travel unsigned: the authenticated connection
vouches for who sent them and each item carries its own proof.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from rumor.core.types import Effect, NetworkMember, NullTracer, ReceivedMessage, RemotePeer, Send, Tracer
from rumor.wire import messages as wire
from rumor.wire.pb.gossip import message_pb2 as pb

MAX_DIGESTS = 10_000
"""Digests taken from one Digest or Request message; more would only serve to fill our memory."""

MAX_HELLOS_PER_PEER = 4
"""Hellos of one peer answered within requestWaitTime. An honest peer sends one per pull round; a peer that sends
more gets no more digests (each answer costs us a digest of the whole store)."""


class Membership(Protocol):
    """The part of discovery that the dissemination components read."""

    def alive_members(self) -> list[NetworkMember]: ...

    def lookup(self, pki_id: bytes) -> NetworkMember | None: ...


class PullAdapter(Protocol):
    """What the pull engine needs from the owner of the items."""

    def pull_candidates(self) -> Sequence[NetworkMember]:
        """Members a round may pull from (the membership filter)."""
        ...

    def digests_for(self, requester: ReceivedMessage) -> list[bytes]:
        """Digests of the items we hold and may disclose to ``requester``."""
        ...

    def items_for(self, digests: Sequence[bytes], requester: ReceivedMessage) -> list[pb.Envelope]:
        """The items among ``digests`` we hold and may disclose to ``requester``."""
        ...

    def wants(self, digest: bytes) -> bool:
        """Whether an item we were offered is worth asking for (not held, passes the item filter)."""
        ...

    def digest_of(self, item: pb.GossipMessage) -> bytes | None:
        """The digest of an item's content (None: not an item of this engine's type)."""
        ...

    def accept(
        self, envelope: pb.Envelope, item: pb.GossipMessage, source: ReceivedMessage, now: float
    ) -> list[Effect] | None:
        """Verify and store a pulled item; None when it is rejected, else the effects of accepting it."""
        ...


@dataclass(slots=True)
class _Round:
    started: float
    digests_until: float
    # nonce -> peer it was sent to; insertion-ordered for determinism.
    hellos: dict[int, RemotePeer] = field(default_factory=dict)
    owners: dict[bytes, list[int]] = field(default_factory=dict)
    requested: dict[int, set[bytes]] = field(default_factory=dict)
    responses_until: float | None = None


@dataclass(slots=True)
class PullStats:
    rounds: int = 0
    hellos_answered: int = 0
    items_requested: int = 0
    items_accepted: int = 0
    items_rejected: int = 0
    unexpected: int = 0


class PullEngine:
    """One pull protocol instance (per message type, and per channel for blocks)."""

    def __init__(
        self,
        *,
        msg_type: int,
        adapter: PullAdapter,
        rng: random.Random,
        interval: float,
        peer_num: int,
        digest_wait: float,
        request_wait: float,
        response_wait: float,
        channel: bytes = b"",
        tracer: Tracer | None = None,
        name: str = "",
    ) -> None:
        self.msg_type = msg_type
        self.channel = channel
        self.interval = interval
        self.peer_num = peer_num
        self.digest_wait = digest_wait
        self.request_wait = request_wait
        self.response_wait = response_wait
        self.name = name or ("blocks" if msg_type == wire.BLOCK_MSG else "identities")
        self.stats = PullStats()
        self._adapter = adapter
        self._rng = rng
        self._tracer: Tracer = tracer if tracer is not None else NullTracer()
        self._next_round: float | None = None
        self._round: _Round | None = None
        # Responder side: (requester, nonce) -> expiry, and a FIFO of the same for expiry in O(1).
        self._incoming: dict[tuple[bytes, int], float] = {}
        self._incoming_fifo: deque[tuple[float, tuple[bytes, int]]] = deque()
        self._incoming_per_peer: dict[bytes, int] = {}

    # --- the node interface, in miniature ---------------------------------------------------------

    def start(self, now: float) -> None:
        self._next_round = now + self.interval

    def stop(self) -> None:
        self._next_round = None
        self._round = None
        self._incoming.clear()
        self._incoming_fifo.clear()
        self._incoming_per_peer.clear()

    def next_deadline(self) -> float | None:
        best = self._next_round
        r = self._round
        if r is not None:
            d = r.digests_until if r.responses_until is None else r.responses_until
            if best is None or d < best:
                best = d
        if self._incoming_fifo:
            d = self._incoming_fifo[0][0]
            if best is None or d < best:
                best = d
        return best

    def _round_deadline(self) -> float | None:
        r = self._round
        if r is None:
            return None
        return r.digests_until if r.responses_until is None else r.responses_until

    def on_tick(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        while self._incoming_fifo and self._incoming_fifo[0][0] <= now:
            expiry, key = self._incoming_fifo.popleft()
            if self._incoming.get(key) == expiry:
                del self._incoming[key]
                self._forget_hello(key[0])
        r = self._round
        if r is not None and r.responses_until is None and now >= r.digests_until:
            effects.extend(self._send_requests(r, now))
        if r is not None and r.responses_until is not None and now >= r.responses_until:
            self._round = None
        if self._next_round is not None and now >= self._next_round:
            self._next_round = now + self.interval
            effects.extend(self.initiate(now))
        return effects

    # --- initiator --------------------------------------------------------------------------------

    def _new_nonce(self, taken: dict[int, RemotePeer]) -> int:
        while True:
            nonce = self._rng.getrandbits(64)
            if nonce and nonce not in taken:
                return nonce

    def _send(self, msg: pb.GossipMessage, peer: RemotePeer) -> Send:
        return Send(envelope=wire.seal(msg), to=(peer,))

    def initiate(self, now: float) -> list[Effect]:
        """Start a round now (a round still running is abandoned)."""
        candidates = sorted(self._adapter.pull_candidates(), key=lambda m: m.pki_id)
        chosen = self._rng.sample(candidates, min(self.peer_num, len(candidates)))
        self._round = r = _Round(started=now, digests_until=now + self.digest_wait)
        self.stats.rounds += 1
        effects: list[Effect] = []
        for member in chosen:
            nonce = self._new_nonce(r.hellos)
            peer = RemotePeer(member.pki_id, member.preferred_endpoint)
            r.hellos[nonce] = peer
            effects.append(self._send(wire.hello(nonce, self.msg_type, channel=self.channel), peer))
        if not chosen:
            self._round = None
        return effects

    def _from_hello_peer(self, msg: ReceivedMessage, nonce: int) -> bool:
        r = self._round
        if r is None:
            return False
        peer = r.hellos.get(nonce)
        return peer is not None and peer.pki_id == msg.sender

    def _on_digest(self, msg: ReceivedMessage, now: float) -> list[Effect]:
        dig = msg.message.data_dig
        r = self._round
        if r is None or r.responses_until is not None or not self._from_hello_peer(msg, dig.nonce):
            self._unexpected(msg, now, "digest without a matching hello")
            return []
        for digest in dig.digests[:MAX_DIGESTS]:
            owners = r.owners.get(digest)
            if owners is None:
                if not self._adapter.wants(digest):
                    continue
                owners = r.owners[digest] = []
            if dig.nonce not in owners:
                owners.append(dig.nonce)
        return []

    def _send_requests(self, r: _Round, now: float) -> list[Effect]:
        r.responses_until = now + self.response_wait
        for digest, nonces in r.owners.items():
            # Asked again at the last moment: an item pushed in the meantime need not be pulled.
            if not self._adapter.wants(digest):
                continue
            r.requested.setdefault(self._rng.choice(nonces), set()).add(digest)
        effects: list[Effect] = []
        for nonce, peer in r.hellos.items():
            wanted = r.requested.get(nonce)
            if not wanted:
                continue
            digests = [d for d in r.owners if d in wanted]
            self.stats.items_requested += len(digests)
            effects.append(self._send(wire.data_request(nonce, self.msg_type, digests, channel=self.channel), peer))
        if not effects:
            self._round = None
        return effects

    def _on_update(self, msg: ReceivedMessage, now: float) -> list[Effect]:
        update = msg.message.data_update
        r = self._round
        if r is None or r.responses_until is None or not self._from_hello_peer(msg, update.nonce):
            self._unexpected(msg, now, "update without a matching request")
            return []
        pending = r.requested.get(update.nonce, set())
        effects: list[Effect] = []
        # At most the items we asked this peer for can be accepted; decoding more would be work for nothing.
        excess = len(update.data) - len(pending)
        if excess > 0:
            self._reject(msg, now, f"{excess} items beyond the {len(pending)} requested", count=excess)
        for envelope in update.data[: len(pending)]:
            try:
                item = wire.open_envelope(envelope)
            except wire.InvalidMessage as exc:
                self._reject(msg, now, f"undecodable item: {exc}")
                continue
            digest = self._adapter.digest_of(item)
            if digest is None or digest not in pending:
                self._reject(msg, now, "item not requested from this peer")
                continue
            pending.discard(digest)
            accepted = self._adapter.accept(envelope, item, msg, now)
            if accepted is None:
                self._reject(msg, now, "item failed verification", digest=digest)
                continue
            self.stats.items_accepted += 1
            effects.extend(accepted)
        return effects

    def _forget_hello(self, sender: bytes) -> None:
        left = self._incoming_per_peer.get(sender, 0) - 1
        if left > 0:
            self._incoming_per_peer[sender] = left
        else:
            self._incoming_per_peer.pop(sender, None)

    def _reject(self, msg: ReceivedMessage, now: float, reason: str, count: int = 1, **fields: object) -> None:
        self.stats.items_rejected += count
        self._tracer.event("pull_item_rejected", now, pull=self.name, sender=msg.sender, reason=reason, **fields)

    def _unexpected(self, msg: ReceivedMessage, now: float, reason: str) -> None:
        self.stats.unexpected += 1
        self._tracer.event("pull_message_ignored", now, pull=self.name, sender=msg.sender, reason=reason)

    # --- responder --------------------------------------------------------------------------------

    def _on_hello(self, msg: ReceivedMessage, now: float) -> list[Effect]:
        nonce = msg.message.hello.nonce
        key = (msg.sender, nonce)
        if key not in self._incoming:
            if self._incoming_per_peer.get(msg.sender, 0) >= MAX_HELLOS_PER_PEER:
                self._unexpected(msg, now, f"more than {MAX_HELLOS_PER_PEER} hellos within requestWaitTime")
                return []
            self._incoming_per_peer[msg.sender] = self._incoming_per_peer.get(msg.sender, 0) + 1
        expiry = now + self.request_wait
        self._incoming[key] = expiry
        self._incoming_fifo.append((expiry, key))
        self.stats.hellos_answered += 1
        digests = self._adapter.digests_for(msg)
        if not digests:
            return []
        peer = RemotePeer(msg.sender, msg.sender_endpoint)
        return [self._send(wire.data_digest(nonce, self.msg_type, digests, channel=self.channel), peer)]

    def _on_request(self, msg: ReceivedMessage, now: float) -> list[Effect]:
        req = msg.message.data_req
        if (msg.sender, req.nonce) not in self._incoming:
            self._unexpected(msg, now, "request without a recent hello")
            return []
        items = self._adapter.items_for(list(dict.fromkeys(req.digests[:MAX_DIGESTS])), msg)
        if not items:
            return []
        peer = RemotePeer(msg.sender, msg.sender_endpoint)
        return [self._send(wire.data_update(req.nonce, self.msg_type, items, channel=self.channel), peer)]

    # --- dispatch ---------------------------------------------------------------------------------

    def on_message(self, msg: ReceivedMessage, now: float) -> list[Effect]:
        """Handle a pull message of this engine's type (hello, digest, request or update)."""
        kind = msg.message.WhichOneof("content")
        if kind == "hello":
            return self._on_hello(msg, now)
        if kind == "data_dig":
            return self._on_digest(msg, now)
        if kind == "data_req":
            return self._on_request(msg, now)
        if kind == "data_update":
            return self._on_update(msg, now)
        return []


def pull_type_of(msg: pb.GossipMessage) -> int | None:
    """The PullMsgType of a pull message, None for other kinds."""
    kind = msg.WhichOneof("content")
    if kind in wire.PULL_KINDS:
        return int(getattr(msg, kind).msg_type)
    return None
