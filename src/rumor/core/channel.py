"""A channel: who is in it, what its peers know, and its blocks, with access limited to its orgs.

    join(orgs)                the orgs whose peers may see the channel; our StateInfo is (re)made
    channel_MAC(peer)         SHA-256(pki_id || channel name): a StateInfo names its channel only by
                              this MAC, so only a peer that knows the name can tell which channel it is
    our StateInfo             signed {PeerTime, pki_id, MAC, ledger height, left_channel}; remade when
                              the height changes or we leave; published when it changed, at most once per
                              publishStateInfoInterval, and again until some channel member is known
    every requestStateInfoInterval
                              StateInfoPullRequest{our MAC} to pullPeerNum peers of the channel's orgs;
                              the answer is a StateInfoSnapshot of the StateInfos the responder holds
    peers_of_channel()        alive members of the channel's orgs with a valid StateInfo (MAC checked,
                              signed by the origin, org in the channel) that did not leave
    block (push)              sender of a channel org -> not a duplicate or too old for the store ->
                              mcs.verify_block -> store, Deliver to the application, forward by push
    block (pull)              BLOCK_MSG pull among same-org peers of the channel only; digests below
                              the ledger height are not requested; pulled blocks pass the same checks

Access control: every message handled here must come from a peer of an org of
the channel (the connection proved the sender's identity, hence its org).
StateInfo pull requests are answered only to such peers, and a requester of
another org gets our org's StateInfos only for peers that have an external
endpoint. A channel object outlives ``leave``: joining again continues its
PeerTime, so the new StateInfo supersedes the left_channel one everywhere.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, replace

from rumor.config import GossipConfig
from rumor.core.enhanced import EnhancedDissemination
from rumor.core.identity import IdentityMapper
from rumor.core.msgstore import MessageStore, SignedMessage, block_digest, block_policy, gossip_policy
from rumor.core.pull import Membership, PullEngine
from rumor.core.types import Deliver, Effect, NetworkMember, NullTracer, ReceivedMessage, RemotePeer, Send, Tracer
from rumor.crypto.api import CryptoError, MessageCryptoService, SecurityAdvisor
from rumor.wire import messages as wire
from rumor.wire.pb.gossip import message_pb2 as pb

BLOCK_EXPIRATION_FACTOR = 100
"""Blocks leave the pull store after this many pull intervals, as in Fabric."""

MAC_CACHE_SIZE = 100_000
"""PKI-IDs whose channel MAC is remembered (the cache starts over when full)."""

STATE_INFO_SWEEP_FACTOR = 5
"""StateInfos of peers membership forgot are dropped every this many pull intervals."""

Push = Callable[[SignedMessage, "Channel", Collection[bytes], float], list[Effect]]
"""Hands a message to the node's emitter: (message, its channel, PKI-IDs to skip, now) -> effects."""


def channel_mac(pki_id: bytes, channel: str) -> bytes:
    """SHA-256(pki_id || channel name): how StateInfo names a channel without revealing it."""
    return hashlib.sha256(pki_id + channel.encode()).digest()


def _key_of_block(item: SignedMessage) -> bytes:
    return block_digest(item.message.data_msg.payload.seq_num)


def _pki_of_state(item: SignedMessage) -> bytes:
    return item.message.state_info.pki_id


def _pki_of_leader(item: SignedMessage) -> bytes:
    return item.message.leadership_msg.pki_id


def _message(item: SignedMessage) -> pb.GossipMessage:
    return item.message


@dataclass
class ChannelStats:
    blocks_received: int = 0
    blocks_pulled: int = 0
    blocks_duplicate: int = 0
    blocks_rejected: int = 0
    state_info_accepted: int = 0
    state_info_rejected: int = 0
    state_info_published: int = 0
    access_denied: int = 0


class Channel:
    """One channel as one peer sees it (sans-IO; the node routes the channel's messages here)."""

    def __init__(
        self,
        name: str,
        *,
        config: GossipConfig,
        identity: bytes,
        mcs: MessageCryptoService,
        advisor: SecurityAdvisor,
        identities: IdentityMapper,
        membership: Membership,
        rng: random.Random,
        inc_num: int,
        push: Push,
        forwarding: bool = True,
        tracer: Tracer | None = None,
    ) -> None:
        self.name = name
        self.name_bytes = name.encode()
        self.config = config
        self._mcs = mcs
        self._advisor = advisor
        self._identities = identities
        self._membership = membership
        self._rng = rng
        self._inc_num = inc_num
        self._seq = 0
        self._push = push
        self.forwarding = forwarding
        self._tracer: Tracer = tracer if tracer is not None else NullTracer()
        self.pki_id = mcs.pki_id_of(identity)
        self.org = advisor.org_of(identity)
        self.mac = channel_mac(self.pki_id, name)
        self._macs: dict[bytes, bytes] = {self.pki_id: self.mac}
        self._orgs_of: dict[bytes, bytes | None] = {}  # sender identity -> its org (None: not decodable)
        self.stats = ChannelStats()

        self.orgs: frozenset[bytes] = frozenset()
        self.left = False
        self.ledger_height = 0
        self._origin_orgs: dict[bytes, bytes] = {}
        self.blocks: MessageStore[SignedMessage] = MessageStore(
            block_policy(config.max_block_count_to_store, of=_message),
            key=_key_of_block,
            ttl=config.pull_interval * BLOCK_EXPIRATION_FACTOR,
        )
        self.state_infos: MessageStore[SignedMessage] = MessageStore(
            gossip_policy(0, of=_message),
            key=_pki_of_state,
            scope=_pki_of_state,
            on_invalidate=self._forget_payload,
        )
        # Payloads of the StateInfos held: a snapshot mostly repeats them, and this skips decoding those.
        self._held_payloads: set[bytes] = set()
        self.leaders: MessageStore[SignedMessage] = MessageStore(
            gossip_policy(0, of=_message), key=_pki_of_leader, scope=_pki_of_leader
        )
        self.pull = PullEngine(
            msg_type=wire.BLOCK_MSG,
            adapter=self,
            rng=rng,
            interval=config.pull_interval,
            peer_num=config.pull_peer_num,
            digest_wait=config.digest_wait_time,
            request_wait=config.request_wait_time,
            response_wait=config.response_wait_time,
            channel=self.name_bytes,
            tracer=self._tracer,
            name=f"blocks:{name}",
        )
        self.enhanced: EnhancedDissemination | None = None
        if config.dissemination == "enhanced":
            self.enhanced = EnhancedDissemination(
                self.name_bytes,
                adapter=self,
                rng=random.Random(rng.getrandbits(64)),
                fanout=config.fanout,
                push_ttl=config.push_ttl,
                advertisement_ttl=config.advertisement_ttl,
                advertisement_fanout=config.advertisement_fanout,
            )
        self._own_state: SignedMessage | None = None
        self._peers_cache: tuple[object, list[NetworkMember]] | None = None
        self._newest_block = 0  # the highest block number ever stored (an upper bound of the held ones)
        self._own_state_versions = 0  # the part of state_infos.version that our own StateInfo moved
        self._org_peers_cache: tuple[object, list[NetworkMember]] | None = None
        self._publish_pending = False
        self._next_publish: float | None = None
        self._next_request: float | None = None
        self._next_sweep: float | None = None
        self._started = False

    # --- membership of the channel ----------------------------------------------------------------

    def mac_of(self, pki_id: bytes) -> bytes:
        mac = self._macs.get(pki_id)
        if mac is None:
            if len(self._macs) >= MAC_CACHE_SIZE:
                self._macs.clear()
            mac = self._macs[pki_id] = channel_mac(pki_id, self.name)
        return mac

    def own_state_info(self) -> SignedMessage | None:
        """Our current signed StateInfo for this channel (what we publish), once joined."""
        return self._own_state

    def is_org_in_channel(self, org: bytes) -> bool:
        return org in self.orgs

    def is_member_org(self, member: NetworkMember) -> bool:
        """Whether the member's org is one of the channel's (it may be told about the channel)."""
        return member.org in self.orgs

    def state_of(self, pki_id: bytes) -> pb.StateInfo | None:
        item = self.state_infos.get(pki_id)
        return item.message.state_info if item is not None else None

    def is_channel_peer(self, member: NetworkMember) -> bool:
        """Whether the member proved it is in the channel (valid StateInfo, not left) and its org is allowed."""
        if self.left or member.org not in self.orgs:
            return False
        state = self.state_of(member.pki_id)
        return state is not None and not state.properties.left_channel

    def peers_of_channel(self) -> list[NetworkMember]:
        """Alive peers that proved membership of the channel, with the properties of their StateInfo.

        The list is rebuilt only when membership, the StateInfos held or the channel's orgs changed (when
        membership tells its version); the members and their properties are then shared between calls.
        """
        if self.left:
            return []
        version = getattr(self._membership, "members_version", None)
        key = (version, self._others_states_version(), self.orgs) if version is not None else None
        cached = self._peers_cache
        if key is not None and cached is not None and cached[0] == key:
            return list(cached[1])
        out = self._peers_of_channel()
        if key is not None:
            self._peers_cache = (key, out)
            return list(out)
        return out

    def _others_states_version(self) -> int:
        """Moves whenever a StateInfo of another peer arrives, is replaced or goes."""
        return self.state_infos.version - self._own_state_versions

    def _peers_of_channel(self) -> list[NetworkMember]:
        out: list[NetworkMember] = []
        for member in self._membership.alive_members():
            if member.org not in self.orgs:
                continue
            state = self.state_of(member.pki_id)
            if state is None or state.properties.left_channel:
                continue
            properties = pb.Properties()
            properties.CopyFrom(state.properties)
            out.append(replace(member, properties=properties))
        return out

    # --- lifecycle --------------------------------------------------------------------------------

    def join(self, orgs: Iterable[bytes], now: float) -> list[Effect]:
        """(Re)join with the channel's member orgs; StateInfos of orgs no longer in it are dropped."""
        self.orgs = frozenset(orgs)
        rejoined, self.left = self.left, False
        self._purge_states(lambda s: _pki_of_state(s) != self.pki_id and not self._org_allowed(s))
        if rejoined and self._started:
            self.pull.start(now)
        return self._refresh_state(now)

    def leave(self, now: float) -> list[Effect]:
        """Stop taking part; publish a StateInfo with left_channel=true right away."""
        self.left = True
        self.pull.stop()
        self._refresh_state(now, publish=False)
        return self._publish(now) if self._started else []

    def update_ledger_height(self, height: int, now: float) -> list[Effect]:
        if height == self.ledger_height:
            return []
        self.ledger_height = height
        return self._refresh_state(now)

    def start(self, now: float) -> list[Effect]:
        self._started = True
        if not self.left:
            self.pull.start(now)
        self._next_request = now + self.config.request_state_info_interval
        self._next_sweep = now + self.config.pull_interval * STATE_INFO_SWEEP_FACTOR
        return self._maybe_publish(now)

    def stop(self) -> None:
        self._started = False
        self.pull.stop()
        if self.enhanced is not None:
            self.enhanced.stop()
        self._next_publish = self._next_request = self._next_sweep = None

    def next_deadline(self) -> float | None:
        if not self._started:
            return None
        best = self._next_request
        for d in (
            self._next_sweep,
            self.blocks.next_deadline(),
            self.pull.next_deadline(),
            self._next_publish if self._publish_pending else None,
            self.enhanced.next_deadline() if self.enhanced is not None else None,
        ):
            if d is not None and (best is None or d < best):
                best = d
        return best

    def on_tick(self, now: float) -> list[Effect]:
        if not self._started:
            return []
        effects: list[Effect] = []
        self.blocks.expire(now)
        if not self.left:
            effects += self.pull.on_tick(now)
            if self.enhanced is not None:
                effects += self.enhanced.on_tick(now)
        effects += self._maybe_publish(now)
        if self._next_request is not None and now >= self._next_request:
            self._next_request = now + self.config.request_state_info_interval
            if not self.left:
                effects += self._request_state_info()
        if self._next_sweep is not None and now >= self._next_sweep:
            self._next_sweep = now + self.config.pull_interval * STATE_INFO_SWEEP_FACTOR
            self._purge_states(
                lambda s: _pki_of_state(s) != self.pki_id and self._membership.lookup(_pki_of_state(s)) is None
            )
        return effects

    def _store_state(self, item: SignedMessage, now: float) -> bool:
        if not self.state_infos.add(item, now):
            return False
        self._held_payloads.add(item.envelope.payload)
        return True

    def _forget_payload(self, item: SignedMessage) -> None:
        self._held_payloads.discard(item.envelope.payload)

    def _purge_states(self, should_purge: Callable[[SignedMessage], bool]) -> None:
        for item in self.state_infos.purge(should_purge):
            self._forget_payload(item)

    # --- our own StateInfo ------------------------------------------------------------------------

    def _refresh_state(self, now: float, publish: bool = True) -> list[Effect]:
        self._seq += 1
        msg = wire.state_info(self.mac, self.pki_id, self._inc_num, self._seq, self.ledger_height, self.left)
        own = SignedMessage(wire.seal(msg, self._mcs.sign), msg)
        self._own_state = own
        before = self.state_infos.version
        self._store_state(own, now)
        # Our own StateInfo is not in peers_of_channel: its changes (a new height per block) must not make
        # every peer rebuild its O(N) list of channel peers once per block.
        self._own_state_versions += self.state_infos.version - before
        self._origin_orgs[self.pki_id] = self.org
        self._publish_pending = True
        return self._maybe_publish(now) if self._started and publish else []

    def _maybe_publish(self, now: float) -> list[Effect]:
        if not self._publish_pending or (self._next_publish is not None and now < self._next_publish):
            return []
        return self._publish(now)

    def _publish(self, now: float) -> list[Effect]:
        if self._own_state is None:
            return []
        self._next_publish = now + self.config.publish_state_info_interval
        # Keep publishing until someone could have heard it; the snapshot pulls do the rest.
        if any(m.org in self.orgs for m in self._membership.alive_members()):
            self._publish_pending = False
        self.stats.state_info_published += 1
        return self._push(self._own_state, self, (self.pki_id,), now)

    def _request_state_info(self) -> list[Effect]:
        candidates = sorted((m for m in self._membership.alive_members() if m.org in self.orgs), key=lambda m: m.pki_id)
        if not candidates:
            return []
        chosen = self._rng.sample(candidates, min(self.config.pull_peer_num, len(candidates)))
        request = wire.seal(wire.state_info_pull_request(self.mac, self._rng.getrandbits(64)))
        return [Send(request, tuple(RemotePeer(m.pki_id, m.preferred_endpoint) for m in chosen))]

    # --- incoming messages ------------------------------------------------------------------------

    def _sender_org(self, msg: ReceivedMessage) -> bytes | None:
        identity = msg.sender_identity
        if identity in self._orgs_of:
            return self._orgs_of[identity]
        try:
            org: bytes | None = self._advisor.org_of(identity)
        except CryptoError:
            org = None
        if len(self._orgs_of) >= MAC_CACHE_SIZE:
            self._orgs_of.clear()
        self._orgs_of[identity] = org
        return org

    def _deny(self, msg: ReceivedMessage, now: float, reason: str) -> list[Effect]:
        self.stats.access_denied += 1
        self._tracer.event(
            "channel_access_denied",
            now,
            channel=self.name,
            sender=msg.sender,
            kind=wire.kind_of(msg.message),
            reason=reason,
        )
        return []

    def on_message(self, msg: ReceivedMessage, now: float) -> list[Effect]:
        """Handle a message the node routed to this channel."""
        org = self._sender_org(msg)
        if org is None or org not in self.orgs:
            return self._deny(msg, now, "sender's org is not in the channel")
        kind = msg.message.WhichOneof("content")
        if kind == "state_info_pull_req":
            if msg.message.state_info_pull_req.channel_MAC != self.mac_of(msg.sender):
                return self._deny(msg, now, "state info request with a foreign MAC")
            return self._answer_state_request(msg, org)
        if kind == "state_snapshot":
            for element in msg.message.state_snapshot.elements:
                if element.payload not in self._held_payloads:
                    self._on_state_info(element, None, msg, now, from_snapshot=True)
            return []
        if kind == "state_info":
            if msg.envelope.payload in self._held_payloads:
                return []  # the very StateInfo we hold: a repeat (most pushed StateInfos are)
            return self._on_state_info(msg.envelope, msg.message, msg, now, from_snapshot=False)
        if kind == "data_msg":
            return self._on_block(msg, now)
        if kind == "leadership_msg":
            return self._on_leadership(msg, org, now)
        if kind in wire.PULL_KINDS:
            if self.left:
                return []
            if org != self.org or not self.is_channel_peer(NetworkMember(msg.sender, "", org=org)):
                return self._deny(msg, now, "block pull from a peer not of our org in the channel")
            if self.enhanced is not None:
                handled = self.enhanced.on_message(msg, now)
                if handled is not None:
                    return handled
            return self.pull.on_message(msg, now)
        return []

    def _answer_state_request(self, msg: ReceivedMessage, requester_org: bytes) -> list[Effect]:
        elements: list[pb.Envelope] = []
        for item in self.state_infos:
            origin = _pki_of_state(item)
            if requester_org != self.org and self._origin_orgs.get(origin) == self.org:
                # A peer of ours that other orgs cannot reach must stay unknown to them.
                member = self._membership.lookup(origin)
                if member is None or not member.endpoint:
                    continue
            elements.append(item.envelope)
        snapshot = wire.state_info_snapshot(elements, msg.message.nonce)
        snapshot.channel = self.name_bytes  # the requester's org is in the channel: it may know the name
        return [Send(wire.seal(snapshot), (RemotePeer(msg.sender, msg.sender_endpoint),))]

    def _org_allowed(self, item: SignedMessage) -> bool:
        return self._origin_orgs.get(_pki_of_state(item)) in self.orgs

    def validate_state_info(self, envelope: pb.Envelope, message: pb.GossipMessage, now: float) -> str | None:
        """Why a StateInfo is not acceptable for this channel, or None when it is."""
        if message.WhichOneof("content") != "state_info":
            return "not a state info"
        info = message.state_info
        if info.channel_MAC != self.mac_of(info.pki_id):
            return "MAC does not match the channel"
        identity = self._identities.get(info.pki_id, now)
        if identity is None:
            return "origin's identity unknown"
        try:
            org = self._advisor.org_of(identity)
            if org not in self.orgs:
                return "origin's org is not in the channel"
            if not envelope.signature:
                return "unsigned"
            wire.verify_envelope(envelope, identity, self._mcs)
        except CryptoError as exc:
            return f"bad signature: {exc}"
        self._origin_orgs[info.pki_id] = org
        return None

    def accept_state_info(self, item: SignedMessage, now: float) -> bool | str:
        """Validate and store a StateInfo: True if new, False if known or stale, else why it was refused."""
        origin = _pki_of_state(item)
        if origin == self.pki_id:
            return False
        if not self.state_infos.check_valid(item):
            return False
        problem = self.validate_state_info(item.envelope, item.message, now)
        if problem is not None:
            self.stats.state_info_rejected += 1
            self._tracer.event("state_info_rejected", now, channel=self.name, pki_id=origin, reason=problem)
            return problem
        if not self._store_state(item, now):
            return False
        self.stats.state_info_accepted += 1
        return True

    def _on_state_info(
        self,
        envelope: pb.Envelope,
        message: pb.GossipMessage | None,
        msg: ReceivedMessage,
        now: float,
        *,
        from_snapshot: bool,
    ) -> list[Effect]:
        if message is None:
            try:
                message = wire.open_envelope(envelope)
            except wire.InvalidMessage:
                self.stats.state_info_rejected += 1
                return []
            if message.WhichOneof("content") != "state_info":
                self.stats.state_info_rejected += 1
                return []
            if self._membership.lookup(message.state_info.pki_id) is None:
                return []  # a peer membership does not know (expired): no use keeping its state
        item = SignedMessage(envelope, message)
        if self.accept_state_info(item, now) is not True or from_snapshot:
            return []
        return self._push(item, self, (msg.sender, message.state_info.pki_id), now)

    def _on_leadership(self, msg: ReceivedMessage, org: bytes, now: float) -> list[Effect]:
        lead = msg.message.leadership_msg
        if org != self.org or lead.pki_id == self.pki_id:
            return []
        item = SignedMessage(msg.envelope, msg.message)
        if not self.leaders.check_valid(item):
            return []
        identity = self._identities.get(lead.pki_id, now)
        try:
            if identity is None or self._advisor.org_of(identity) != self.org or not msg.envelope.signature:
                raise CryptoError("leadership message of an unknown or foreign peer")
            wire.verify_envelope(msg.envelope, identity, self._mcs)
        except CryptoError as exc:
            self._tracer.event("leadership_rejected", now, channel=self.name, pki_id=lead.pki_id, reason=str(exc))
            return []
        if not self.leaders.add(item, now):
            return []
        return [Deliver(msg), *self._push(item, self, (msg.sender, lead.pki_id), now)]

    # --- blocks -----------------------------------------------------------------------------------

    def _verify_block(self, message: pb.GossipMessage, sender: bytes, now: float) -> bool:
        payload = message.data_msg.payload
        try:
            self._mcs.verify_block(self.name, payload.seq_num, payload.data)
        except CryptoError as exc:
            self.stats.blocks_rejected += 1
            fields = {"channel": self.name, "seq_num": payload.seq_num, "from": sender, "reason": str(exc)}
            self._tracer.event("block_rejected", now, **fields)
            return False
        return True

    def _received(self, msg: ReceivedMessage, now: float, via: str) -> None:
        fields = {"channel": self.name, "seq_num": msg.message.data_msg.payload.seq_num, "from": msg.sender}
        self._tracer.event("block_received", now, via=via, **fields)

    def _on_block(self, msg: ReceivedMessage, now: float) -> list[Effect]:
        if self.left or not msg.message.data_msg.HasField("payload"):
            return []
        item = SignedMessage(msg.envelope, msg.message)
        if not self._block_is_new(msg.message.data_msg.payload.seq_num):
            self.stats.blocks_duplicate += 1
            return []
        if not self._verify_block(msg.message, msg.sender, now):
            return []
        self._store_block(item, now)
        self.stats.blocks_received += 1
        self._received(msg, now, "push")
        effects: list[Effect] = [Deliver(msg)]
        if self.enhanced is not None:
            spread = self.enhanced.on_block(msg, item, now) if self.forwarding else self.enhanced.held(item, now)
            if spread is not None:
                return effects + spread
        if self.forwarding:
            effects += self._push(item, self, (msg.sender,), now)
        return effects

    def spread_own_block(self, item: SignedMessage, now: float) -> list[Effect] | None:
        """Enhanced dissemination: the effects of pushing our own new block at once (None in Fabric mode)."""
        if self.enhanced is None:
            return None
        return self.enhanced.originate(item, now)

    def add_own_block(self, item: SignedMessage, now: float) -> bool:
        """Store a block this peer gossips itself (it is not delivered back to us); True if new."""
        return self._store_block(item, now)

    def _store_block(self, item: SignedMessage, now: float) -> bool:
        added = self.blocks.add(item, now)
        if added:
            self._newest_block = max(self._newest_block, item.message.data_msg.payload.seq_num)
        return added

    def _block_is_new(self, seq: int) -> bool:
        """Whether the store would take block ``seq`` (``blocks.check_valid``), without its scan of every
        held block when none can be far enough ahead to make this one stale."""
        if block_digest(seq) in self.blocks:
            return False
        if seq + self.config.max_block_count_to_store >= self._newest_block:
            return True
        probe = wire.data_message(self.name_bytes, seq, b"")
        return self.blocks.check_valid(SignedMessage(pb.Envelope(), probe))

    def add_own_leadership(self, item: SignedMessage, now: float) -> bool:
        return self.leaders.add(item, now)

    # --- block pull adapter -----------------------------------------------------------------------

    def pull_candidates(self) -> Sequence[NetworkMember]:
        return list(self._org_peers())

    def _org_peers(self) -> list[NetworkMember]:
        """Our org's peers of the channel; the same list until membership or StateInfos change."""
        version = getattr(self._membership, "members_version", None)
        key = (version, self._others_states_version(), self.orgs, self.left) if version is not None else None
        cached = self._org_peers_cache
        if key is not None and cached is not None and cached[0] == key:
            return cached[1]
        out = [m for m in self.peers_of_channel() if m.org == self.org]
        if key is not None:
            self._org_peers_cache = (key, out)
        return out

    # --- enhanced dissemination adapter -----------------------------------------------------------

    def enhanced_targets(self) -> Sequence[NetworkMember]:
        return self._org_peers()

    def held_block(self, seq: int) -> SignedMessage | None:
        return self.blocks.get(block_digest(seq))

    def accept_requested(
        self, envelope: pb.Envelope, item: pb.GossipMessage, source: ReceivedMessage, now: float
    ) -> list[Effect] | None:
        return self._accept(envelope, item, source, now, "advert")

    def digests_for(self, requester: ReceivedMessage) -> list[bytes]:
        return [_key_of_block(item) for item in self.blocks]

    def items_for(self, digests: Sequence[bytes], requester: ReceivedMessage) -> list[pb.Envelope]:
        out: list[pb.Envelope] = []
        for digest in digests:
            item = self.blocks.get(digest)
            if item is not None:
                out.append(item.envelope)
        return out

    def wants(self, digest: bytes) -> bool:
        try:
            seq = int(digest.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            return False
        return seq >= 0 and seq >= self.ledger_height and self._block_is_new(seq)

    def digest_of(self, item: pb.GossipMessage) -> bytes | None:
        if item.WhichOneof("content") != "data_msg" or item.channel != self.name_bytes:
            return None
        return block_digest(item.data_msg.payload.seq_num)

    def accept(
        self, envelope: pb.Envelope, item: pb.GossipMessage, source: ReceivedMessage, now: float
    ) -> list[Effect] | None:
        return self._accept(envelope, item, source, now, "pull")

    def _accept(
        self, envelope: pb.Envelope, item: pb.GossipMessage, source: ReceivedMessage, now: float, via: str
    ) -> list[Effect] | None:
        signed = SignedMessage(envelope, item)
        if self.left or not self._block_is_new(item.data_msg.payload.seq_num):
            return []
        if not self._verify_block(item, source.sender, now):
            return None
        self._store_block(signed, now)
        self.stats.blocks_received += 1
        if via == "pull":
            self.stats.blocks_pulled += 1
        pulled = ReceivedMessage(
            sender=source.sender,
            sender_endpoint=source.sender_endpoint,
            sender_identity=source.sender_identity,
            envelope=envelope,
            message=item,
            proof=source.proof,
        )
        self._received(pulled, now, via)
        effects: list[Effect] = [Deliver(pulled)]
        if self.enhanced is not None and via == "pull":
            effects += self.enhanced.held(signed, now)
        return effects
