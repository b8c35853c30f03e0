"""PeerCore: a whole peer's protocol, sans-IO: gossip, state transfer and leader election per channel.

    GossipNode ── Deliver(new block) ─────────> StateProvider.add_payload ──> ledger ──> Committed
               ── Deliver(state request) ─────> StateProvider.on_request (sender's org already checked)
               ── Deliver(state response) ────> StateProvider.on_response
               ── Deliver(leadership message) ─> LeaderElection.on_message ──> gossip our answer
    Committed ──> GossipNode.update_ledger_height (peers learn our height from StateInfo)
    add_block (the leader's block from the ordering service, or the application's own)
               ──> verify ──> gossip it + StateProvider.add_payload
    LeaderElection: became / stopped being leader ──> LeadershipChanged (the shell starts or
               stops its deliver client towards the ordering service)

With ``static_leader`` (Fabric's orgLeader) the peer always leads and runs no
election; with neither, it only follows. The same object runs inside
``rumor.node.Peer`` over gRPC and inside the simulator.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from rumor.core.election import ElectionConfig, LeaderElection, Outgoing
from rumor.core.node import GossipNode
from rumor.core.state import LedgerPort, StateConfig, StateProvider
from rumor.core.types import (
    Committed,
    Deliver,
    Effect,
    HandshakeResult,
    LeadershipChanged,
    NullTracer,
    ReceivedMessage,
    RemotePeer,
    Tracer,
)
from rumor.crypto.api import CryptoError
from rumor.wire import messages as wire

CONSUMED_KINDS = frozenset({"data_msg", "state_request", "state_response", "leadership_msg"})


@dataclass
class ChannelRuntime:
    """What the peer keeps per joined channel beside the gossip core's own channel state."""

    name: str
    state: StateProvider
    election: LeaderElection | None
    leading: bool = False
    leadership_seq: int = 0
    orgs: tuple[bytes, ...] = field(default_factory=tuple)


class PeerCore:
    """Composes a GossipNode with per-channel state transfer and leader election."""

    def __init__(
        self,
        node: GossipNode,
        ledger: LedgerPort,
        *,
        state_config: StateConfig | None = None,
        election_config: ElectionConfig | None = None,
        use_leader_election: bool = True,
        static_leader: bool = False,
        rng: random.Random | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        if use_leader_election and static_leader:
            raise ValueError("useLeaderElection and orgLeader are exclusive: pick one")
        self.node = node
        self.ledger = ledger
        self.state_config = state_config or StateConfig()
        self.election_config = election_config or ElectionConfig()
        self.use_leader_election = use_leader_election
        self.static_leader = static_leader
        self.rng = rng or random.Random(node.pki_id)
        self.tracer = tracer or node.tracer or NullTracer()
        self.channels: dict[str, ChannelRuntime] = {}
        self._started = False
        self._now = 0.0

    # --- queries --------------------------------------------------------------------------------

    @property
    def pki_id(self) -> bytes:
        return self.node.pki_id

    def height(self, channel: str) -> int:
        return self.ledger.height(channel)

    def is_leader(self, channel: str) -> bool:
        runtime = self.channels.get(channel)
        return runtime is not None and runtime.leading

    def leader(self, channel: str) -> bytes | None:
        """PKI-ID of the peer believed to lead our org on ``channel`` (None when unknown)."""
        runtime = self.channels.get(channel)
        if runtime is None:
            return None
        if runtime.election is not None:
            return runtime.election.leader
        return self.pki_id if runtime.leading else None

    # --- the application's calls ----------------------------------------------------------------

    def join_channel(
        self,
        name: str,
        orgs: Iterable[bytes | str],
        anchor_peers: Mapping[bytes | str, Sequence[str]] | Sequence[str] = (),
        *,
        now: float,
    ) -> list[Effect]:
        """Join ``name`` (member orgs by MSP ID); the ledger may already hold its blocks."""
        org_ids = tuple(o.encode() if isinstance(o, str) else o for o in orgs)
        effects = self.node.join_channel(name, org_ids, anchor_peers, now=now)  # type: ignore[arg-type]
        if name in self.channels:
            self.channels[name].orgs = org_ids
            return self._follow_up(effects, now)
        state = StateProvider(
            name, self.state_config, self.ledger, self.node.mcs, random.Random(self.rng.getrandbits(64)), self.tracer
        )
        election = LeaderElection(self.pki_id, self.election_config) if self.use_leader_election else None
        runtime = ChannelRuntime(name, state, election, orgs=org_ids)
        self.channels[name] = runtime
        effects += self.node.update_ledger_height(name, self.ledger.height(name), now=now)
        if self._started:
            effects += self._start_channel(runtime, now)
        return self._follow_up(effects, now)

    def leave_channel(self, name: str, *, now: float) -> list[Effect]:
        runtime = self.channels.pop(name)
        effects = self.node.leave_channel(name, now=now)
        if runtime.leading:
            effects.append(LeadershipChanged(name, False, None))
        return self._follow_up(effects, now)

    def add_block(self, channel: str, seq_num: int, block: bytes, *, now: float) -> list[Effect]:
        """A block from the ordering service (or the application as its own block source).

        It is verified, gossiped to the channel and committed in order. Raises CryptoError for a
        block that does not verify.
        """
        runtime = self.channels[channel]
        self.node.mcs.verify_block(channel, seq_num, block)
        effects: list[Effect] = []
        if seq_num >= self.ledger.height(channel):
            effects += self.node.gossip(wire.data_message(channel.encode(), seq_num, block), now)
        effects += runtime.state.add_payload(seq_num, block, now)
        return self._follow_up(effects, now)

    def yield_leadership(self, channel: str, *, now: float) -> list[Effect]:
        """Our block source failed: let another peer of the org lead for a while."""
        runtime = self.channels[channel]
        if runtime.election is None:
            return []
        runtime.election.yield_leadership(now)
        return self._follow_up(self._sync_leadership(runtime), now)

    # --- the node interface ---------------------------------------------------------------------

    def start(self, now: float) -> list[Effect]:
        self._started = True
        effects = self.node.start(now)
        for runtime in self.channels.values():
            effects += self._start_channel(runtime, now)
        return self._follow_up(effects, now)

    def stop(self, now: float) -> list[Effect]:
        self._started = False
        return self.node.stop(now)

    def next_deadline(self) -> float | None:
        times = [self.node.next_deadline()]
        for runtime in self.channels.values():
            times.append(runtime.state.next_deadline())
            if runtime.election is not None:
                times.append(runtime.election.next_deadline())
        present = [t for t in times if t is not None]
        return min(present) if present else None

    def on_tick(self, now: float) -> list[Effect]:
        effects = self.node.on_tick(now)
        for runtime in list(self.channels.values()):
            due = runtime.state.next_deadline()
            if due is not None and now >= due:  # the heights cost a walk over the channel's peers
                effects += runtime.state.on_tick(now, self._peer_heights(runtime.name))
            if runtime.election is not None:
                deadline = runtime.election.next_deadline()
                if deadline is not None and now >= deadline:
                    out = runtime.election.on_tick(now, self._org_peer_count(runtime.name))
                    effects += self._send_leadership(runtime, out, now)
                    effects += self._sync_leadership(runtime)
        return self._follow_up(effects, now)

    def on_message(self, msg: ReceivedMessage, now: float) -> list[Effect]:
        return self._follow_up(self.node.on_message(msg, now), now)

    def on_handshake(self, result: HandshakeResult, now: float) -> list[Effect]:
        return self._follow_up(self.node.on_handshake(result, now), now)

    def on_probe(self, peer: RemotePeer, alive: bool, now: float) -> list[Effect]:
        return self._follow_up(self.node.on_probe(peer, alive, now), now)

    def on_connection_lost(self, pki_id: bytes, now: float) -> list[Effect]:
        return self._follow_up(self.node.on_connection_lost(pki_id, now), now)

    # --- internals ------------------------------------------------------------------------------

    def _start_channel(self, runtime: ChannelRuntime, now: float) -> list[Effect]:
        runtime.state.start(now)
        if runtime.election is not None:
            runtime.election.start(now, self._org_peer_count(runtime.name))
            return []
        if self.static_leader and not runtime.leading:
            runtime.leading = True
            return [LeadershipChanged(runtime.name, True, self.pki_id)]
        return []

    def _follow_up(self, effects: list[Effect], now: float) -> list[Effect]:
        """Consume the deliveries meant for state transfer and election; tell peers our new heights."""
        self._now = now
        out: list[Effect] = []
        pending = deque(effects)
        grown: dict[str, None] = {}  # channels whose ledger grew, in order
        while pending or grown:
            if not pending:
                channel = next(iter(grown))
                del grown[channel]
                pending.extend(self.node.update_ledger_height(channel, self.ledger.height(channel), now=now))
                continue
            effect = pending.popleft()
            if isinstance(effect, Deliver) and effect.message.message.WhichOneof("content") in CONSUMED_KINDS:
                pending.extendleft(reversed(self._consume(effect.message, now)))
                continue
            if isinstance(effect, Committed) and effect.channel in self.channels:
                grown[effect.channel] = None
            out.append(effect)
        return out

    def _consume(self, msg: ReceivedMessage, now: float) -> list[Effect]:
        m = msg.message
        kind = m.WhichOneof("content")
        try:
            channel = m.channel.decode()
        except UnicodeDecodeError:
            return []
        runtime = self.channels.get(channel)
        if runtime is None:
            return []
        if kind == "data_msg":
            source = RemotePeer(msg.sender, msg.sender_endpoint) if msg.sender else None
            return runtime.state.add_payload(m.data_msg.payload.seq_num, m.data_msg.payload.data, now, source)
        if kind == "state_request":
            return runtime.state.on_request(msg, now)
        if kind == "state_response":
            return runtime.state.on_response(msg, now, self._peer_heights(channel))
        if kind == "leadership_msg" and runtime.election is not None:
            lead = m.leadership_msg
            if not self._same_org(lead.pki_id):
                return []
            out = runtime.election.on_message(lead.pki_id, lead.is_declaration, now)
            return self._send_leadership(runtime, out, now) + self._sync_leadership(runtime)
        return []

    def _same_org(self, pki_id: bytes) -> bool:
        member = self.node.discovery.lookup(pki_id)
        return member is not None and member.org == self.node.org

    def _send_leadership(self, runtime: ChannelRuntime, out: list[Outgoing], now: float) -> list[Effect]:
        effects: list[Effect] = []
        for item in out:
            runtime.leadership_seq += 1
            msg = wire.leadership(
                runtime.name.encode(), self.pki_id, self.node.inc_num, runtime.leadership_seq, item.is_declaration
            )
            try:
                effects += self.node.gossip(msg, now)
            except (KeyError, CryptoError):
                continue
        return effects

    def _sync_leadership(self, runtime: ChannelRuntime) -> list[Effect]:
        if runtime.election is None:
            return []
        leading = runtime.election.is_leader
        if leading == runtime.leading:
            return []
        runtime.leading = leading
        self.tracer.event("leader_changed", self._now, channel=runtime.name, is_leader=leading)
        return [LeadershipChanged(runtime.name, leading, runtime.election.leader)]

    def _peer_heights(self, channel: str) -> list[tuple[RemotePeer, int]]:
        out = []
        for member in self.node.peers_of_channel(channel):
            if member.properties is not None and not member.properties.left_channel:
                out.append((RemotePeer(member.pki_id, member.preferred_endpoint), member.properties.ledger_height))
        return out

    def _org_peer_count(self, channel: str) -> int:
        return sum(1 for member in self.node.peers_of_channel(channel) if member.org == self.node.org)
