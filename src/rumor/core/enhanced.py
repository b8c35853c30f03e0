"""Enhanced dissemination of blocks (``peer.gossip.dissemination: enhanced``; rumor's own, not Fabric's).

After Berendea, Mercier, Onica and Rivière, "Fair and Efficient Gossip in Hyperledger Fabric" (ICDCS 2020):
push the whole block for the first few hops, where almost every copy reaches a peer that lacks it, then
only advertise its digest, so that each remaining peer fetches the block once.

    leader (new block)      at once (no batching): the block, with push_ttl = h - 1 and
                            advertise_ttl = advertisementTTL - 1, to ``fanout`` random peers of the channel
                            (or, with h = 0, its digest); h = pushTTL, capped for small channels (push_hops)
    block arrives (push)    first time, push_ttl > 0    -> the block, TTLs - 1, to ``fanout`` peers
                            first time, push_ttl == 0   -> its digest, advertise_ttl - 1, to k peers
                            no TTLs (a Fabric peer's)   -> None: the caller forwards it the Fabric way
    digest arrives          not held and wanted         -> DataRequest(its nonce) to the advertiser; other
                                                           advertisers are remembered and asked in turn when
                                                           one does not answer within ``request_timeout``
                            first time, advertise_ttl>0 -> the digest, advertise_ttl - 1, to k peers
                                                           (at once, even before the block is here)
    request arrives         under a nonce we advertised -> DataUpdate with the block, now or as soon as we
                                                           hold it (the digest may travel ahead of the block)
    update arrives          answering our request       -> verified and stored like a pulled block

A digest goes to k = advertisementFanout peers (default max(fanout, ceil(ln n) + 6) for n peers): each
peer that learns of a block passes the digest on once, so a peer is missed with a chance of about e^-k;
a digest costs ~100 bytes against a block's kilobytes, so k can afford to grow with ln n where the block's
fanout cannot.

On the wire these are Fabric's own messages with optional fields at numbers Fabric does not use: the block
is a DataMessage with ``push_ttl``/``advertise_ttl``; the advertisement a DataDigest (BLOCK_MSG) with
``advertise_ttl`` and a nonce of the advertiser's; request and answer are DataRequest and DataUpdate under
that nonce. A Fabric-mode peer forwards such blocks as any other and ignores advertisements (a digest whose
nonce it never sent), so both modes run in one network; Fabric's periodic pull and state transfer stay on
in enhanced mode and catch whatever this misses.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from rumor.core.msgstore import SignedMessage, block_digest
from rumor.core.types import Effect, NetworkMember, ReceivedMessage, RemotePeer, Send
from rumor.wire import messages as wire
from rumor.wire.pb.gossip import message_pb2 as pb

REQUEST_TIMEOUT = 1.0
"""Seconds to wait for an advertiser's answer before asking the next advertiser of the block."""

AUTO_FANOUT_MARGIN = 6
"""advertisementFanout 0 means ceil(ln n) + this (see EnhancedDissemination._digest_fanout)."""

MEMORY = 60.0
"""Seconds a block's advertisements, requests and nonces are remembered."""


class EnhancedAdapter(Protocol):
    """What the enhanced dissemination needs from its channel."""

    def enhanced_targets(self) -> Sequence[NetworkMember]:
        """Peers a block or digest may go to (our org's peers of the channel); not modified by the caller."""
        ...

    def held_block(self, seq: int) -> SignedMessage | None: ...

    def wants(self, digest: bytes) -> bool: ...

    def accept_requested(
        self, envelope: pb.Envelope, item: pb.GossipMessage, source: ReceivedMessage, now: float
    ) -> list[Effect] | None:
        """Verify and store a block fetched after an advertisement; None when it is rejected."""
        ...


@dataclass(slots=True)
class _Block:
    seq: int
    expires: float
    nonce: int = 0  # the nonce of our own advertisement of it (0: none yet)
    spread: bool = False  # we passed it (or its digest) on already
    offers: list[tuple[RemotePeer, int]] = field(default_factory=list)  # (advertiser, its nonce), in order
    asked: int = -1  # index in offers of the request outstanding (-1: none)
    deadline: float | None = None
    waiting: list[tuple[RemotePeer, int]] = field(default_factory=list)  # requests to answer once held


@dataclass(slots=True)
class EnhancedStats:
    pushed: int = 0
    advertised: int = 0
    requests_sent: int = 0
    requests_served: int = 0
    requests_deferred: int = 0
    request_timeouts: int = 0
    fetched: int = 0


class EnhancedDissemination:
    """Push-then-advertise dissemination of one channel's blocks (sans-IO; see the module docstring)."""

    def __init__(
        self,
        channel: bytes,
        *,
        adapter: EnhancedAdapter,
        rng: random.Random,
        fanout: int,
        push_ttl: int,
        advertisement_ttl: int,
        advertisement_fanout: int = 0,
        request_timeout: float = REQUEST_TIMEOUT,
        memory: float = MEMORY,
    ) -> None:
        self.channel = channel
        self.fanout = fanout
        self.advertisement_fanout = advertisement_fanout
        self.push_ttl = push_ttl
        self.advertisement_ttl = advertisement_ttl
        self.request_timeout = request_timeout
        self.memory = memory
        self.stats = EnhancedStats()
        self._adapter = adapter
        self._rng = rng
        self._blocks: dict[int, _Block] = {}
        self._by_nonce: dict[int, int] = {}  # our advertisement nonce -> block
        self._timers: list[tuple[float, int]] = []  # (request deadline, block), lazily invalidated
        self._expiry: deque[tuple[float, int]] = deque()  # (expiry, block), in order of creation

    # --- bookkeeping ------------------------------------------------------------------------------

    def _block(self, seq: int, now: float) -> _Block:
        state = self._blocks.get(seq)
        if state is None:
            state = self._blocks[seq] = _Block(seq, now + self.memory)
            self._expiry.append((state.expires, seq))
        return state

    def _own_nonce(self, state: _Block) -> int:
        if not state.nonce:
            nonce = self._rng.getrandbits(64) or 1
            while nonce in self._by_nonce:
                nonce = self._rng.getrandbits(64) or 1
            state.nonce = nonce
            self._by_nonce[nonce] = state.seq
        return state.nonce

    def _digest_fanout(self, pool_size: int) -> int:
        if self.advertisement_fanout > 0:
            return self.advertisement_fanout
        # A peer that learns of a block passes its digest on once, to k peers: it reaches each peer about k
        # times, and misses one with a chance of about e^-k, so some peer of n with about n e^-k. Digests
        # are small, so k can grow with ln n: k = ln n + 6 leaves about 1 block in 400 to the periodic pull.
        return max(self.fanout, math.ceil(math.log(pool_size + 1)) + AUTO_FANOUT_MARGIN)

    def _choose(self, exclude: bytes = b"", *, digest: bool = False) -> list[RemotePeer]:
        """``fanout`` random targets other than ``exclude``, each such set equally likely."""
        pool = self._adapter.enhanced_targets()
        k = self._digest_fanout(len(pool)) if digest else self.fanout
        if len(pool) <= k + 1:
            picks = [m for m in pool if m.pki_id != exclude]
            if len(picks) > k:
                picks = self._rng.sample(picks, k)
        else:
            # k + 1 at random, then the excluded one (or else the last) dropped: a uniform k-subset of the rest.
            drawn = self._rng.sample(pool, k + 1)
            picks = [m for m in drawn if m.pki_id != exclude][:k]
        return [RemotePeer(m.pki_id, m.preferred_endpoint) for m in picks]

    def _push_block(self, held: SignedMessage, push_ttl: int, advertise_ttl: int, exclude: bytes) -> list[Effect]:
        targets = self._choose(exclude)
        if not targets:
            return []
        data = held.message.data_msg
        message = wire.data_message(
            self.channel, data.payload.seq_num, data.payload.data, push_ttl=push_ttl, advertise_ttl=advertise_ttl
        )
        self.stats.pushed += len(targets)
        return [Send(wire.seal(message), tuple(targets))]

    def _advertise(self, state: _Block, advertise_ttl: int, exclude: bytes) -> list[Effect]:
        targets = self._choose(exclude, digest=True)
        if not targets:
            return []
        digest = wire.data_digest(
            self._own_nonce(state),
            wire.BLOCK_MSG,
            [block_digest(state.seq)],
            channel=self.channel,
            advertise_ttl=advertise_ttl,
        )
        self.stats.advertised += len(targets)
        return [Send(wire.seal(digest), tuple(targets))]

    def _spread(
        self, state: _Block, held: SignedMessage | None, push_ttl: int, advertise_ttl: int, sender: bytes
    ) -> list[Effect]:
        """Pass the block (while push hops are left and we hold it) or its digest on, once per block."""
        if state.spread:
            return []
        state.spread = True
        if held is not None and push_ttl > 0:
            return self._push_block(held, push_ttl - 1, max(advertise_ttl - 1, 0), sender)
        if advertise_ttl > 0:
            return self._advertise(state, advertise_ttl - 1, sender)
        return []

    def _answer_waiting(self, state: _Block, held: SignedMessage) -> list[Effect]:
        effects: list[Effect] = []
        for peer, nonce in state.waiting:
            self.stats.requests_served += 1
            update = wire.data_update(nonce, wire.BLOCK_MSG, [held.envelope], channel=self.channel)
            effects.append(Send(wire.seal(update), (peer,)))
        state.waiting.clear()
        return effects

    # --- the channel's calls ----------------------------------------------------------------------

    def push_hops(self, peers: int) -> int:
        """Hops of whole-block push for a channel of ``peers`` peers: pushTTL, but no more than keep the
        holders after the last push hop at half the peers (fanout^h <= max(peers / 2, fanout)); beyond that
        most pushed copies would land on peers that hold the block already. 2 for 100 or 1,000 peers with
        fanout 4; 1 for 4 to 31 peers."""
        hops = 0
        while hops < self.push_ttl and self.fanout ** (hops + 1) <= max(peers / 2, self.fanout):
            hops += 1
        return hops

    def originate(self, held: SignedMessage, now: float) -> list[Effect]:
        """A new block of our own (the leader's): push it at once to ``fanout`` peers."""
        state = self._block(held.message.data_msg.payload.seq_num, now)
        hops = self.push_hops(len(self._adapter.enhanced_targets()) + 1)
        return self._spread(state, held, hops, self.advertisement_ttl, b"")

    def on_block(self, msg: ReceivedMessage, held: SignedMessage, now: float) -> list[Effect] | None:
        """A pushed block we just stored; None when it carries no TTLs (the caller forwards it Fabric's way)."""
        data = msg.message.data_msg
        if not data.HasField("push_ttl"):
            self.held(held, now)
            return None
        state = self._block(data.payload.seq_num, now)
        effects = self.held(held, now)
        advertise_ttl = data.advertise_ttl if data.HasField("advertise_ttl") else 0
        return effects + self._spread(state, held, data.push_ttl, advertise_ttl, msg.sender)

    def held(self, held: SignedMessage, now: float) -> list[Effect]:
        """We hold a block now (however it came): answer the requests that wait for it, stop asking for it."""
        state = self._blocks.get(held.message.data_msg.payload.seq_num)
        if state is None:
            return []
        state.asked, state.deadline = -1, None
        return self._answer_waiting(state, held)

    def on_message(self, msg: ReceivedMessage, now: float) -> list[Effect] | None:
        """An advertisement, a request under one of our nonces, or the answer to one of our requests;
        None for any other pull message (the pull engine's)."""
        m = msg.message
        kind = m.WhichOneof("content")
        if kind == "data_dig" and m.data_dig.HasField("advertise_ttl") and m.data_dig.msg_type == wire.BLOCK_MSG:
            return self._on_advertisement(msg, now)
        if kind == "data_req" and m.data_req.nonce in self._by_nonce:
            return self._on_request(msg, now)
        if kind == "data_update" and self._answers_ours(msg):
            return self._on_update(msg, now)
        return None

    def _on_advertisement(self, msg: ReceivedMessage, now: float) -> list[Effect]:
        dig = msg.message.data_dig
        advertiser = RemotePeer(msg.sender, msg.sender_endpoint)
        effects: list[Effect] = []
        for digest in dig.digests[:16]:
            try:
                seq = int(digest.decode("ascii"))
            except (UnicodeDecodeError, ValueError):
                continue
            held = self._adapter.held_block(seq)
            if held is None and not self._adapter.wants(digest):
                continue  # committed long ago, or not a block we could take
            state = self._block(seq, now)
            if held is None:
                state.offers.append((advertiser, dig.nonce))
                if state.asked < 0:
                    effects += self._ask(state, len(state.offers) - 1, now)
            effects += self._spread(state, held, 0, dig.advertise_ttl, msg.sender)
        return effects

    def _ask(self, state: _Block, index: int, now: float) -> list[Effect]:
        peer, nonce = state.offers[index]
        state.asked = index
        state.deadline = now + self.request_timeout
        heapq.heappush(self._timers, (state.deadline, state.seq))
        self.stats.requests_sent += 1
        request = wire.data_request(nonce, wire.BLOCK_MSG, [block_digest(state.seq)], channel=self.channel)
        return [Send(wire.seal(request), (peer,))]

    def _on_request(self, msg: ReceivedMessage, now: float) -> list[Effect]:
        req = msg.message.data_req
        seq = self._by_nonce[req.nonce]
        state = self._blocks.get(seq)
        if state is None or block_digest(seq) not in req.digests:
            return []
        requester = (RemotePeer(msg.sender, msg.sender_endpoint), req.nonce)
        held = self._adapter.held_block(seq)
        if held is None:
            if len(state.waiting) < 4 * max(self.fanout, 1):
                self.stats.requests_deferred += 1
                state.waiting.append(requester)
            return []
        state.waiting.append(requester)
        return self._answer_waiting(state, held)

    def _answers_ours(self, msg: ReceivedMessage) -> bool:
        update = msg.message.data_update
        if update.msg_type != wire.BLOCK_MSG:
            return False
        return any(state.offers[state.asked][1] == update.nonce for state in self._requested_of(msg.sender))

    def _requested_of(self, sender: bytes) -> list[_Block]:
        return [s for s in self._blocks.values() if s.asked >= 0 and s.offers[s.asked][0].pki_id == sender]

    def _on_update(self, msg: ReceivedMessage, now: float) -> list[Effect]:
        update = msg.message.data_update
        asked = {s.seq: s for s in self._requested_of(msg.sender) if s.offers[s.asked][1] == update.nonce}
        effects: list[Effect] = []
        for envelope in update.data[:16]:
            try:
                item = wire.open_envelope(envelope)
            except wire.InvalidMessage:
                continue
            if item.WhichOneof("content") != "data_msg" or item.channel != self.channel:
                continue
            state = asked.get(item.data_msg.payload.seq_num)
            if state is None:
                continue  # not what we asked this peer for under this nonce
            accepted = self._adapter.accept_requested(envelope, item, msg, now)
            if accepted is None:
                # A forgery: ask the next advertiser.
                effects += self._next_offer(state, now)
                continue
            self.stats.fetched += 1
            effects += accepted
            held = self._adapter.held_block(state.seq)
            if held is not None:
                effects += self.held(held, now)
        return effects

    def _next_offer(self, state: _Block, now: float) -> list[Effect]:
        following = state.asked + 1
        state.asked, state.deadline = -1, None
        if following < len(state.offers):
            return self._ask(state, following, now)
        return []

    # --- time -------------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        timers = self._timers
        while timers:
            at, seq = timers[0]
            state = self._blocks.get(seq)
            if state is not None and state.deadline == at:
                break
            heapq.heappop(timers)
        best = timers[0][0] if timers else None
        if self._expiry and (best is None or self._expiry[0][0] < best):
            best = self._expiry[0][0]
        return best

    def on_tick(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        while self._timers and self._timers[0][0] <= now:
            at, seq = heapq.heappop(self._timers)
            state = self._blocks.get(seq)
            if state is None or state.deadline != at:
                continue
            self.stats.request_timeouts += 1
            effects += self._next_offer(state, now)
        while self._expiry and self._expiry[0][0] <= now:
            _, seq = self._expiry.popleft()
            state = self._blocks.pop(seq, None)
            if state is not None and state.nonce:
                self._by_nonce.pop(state.nonce, None)
        return effects

    def stop(self) -> None:
        self._blocks.clear()
        self._by_nonce.clear()
        self._timers.clear()
        self._expiry.clear()
