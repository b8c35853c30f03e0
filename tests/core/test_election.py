"""Leader election on the simulated network (Fabric's election_test scenarios)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from rumor.core.election import ElectionConfig, LeaderElection, Phase
from rumor.core.types import Effect, HandshakeResult, ReceivedMessage, RemotePeer, Send
from rumor.sim.network import SimNetwork
from rumor.wire import messages as m

CONFIG = ElectionConfig(
    startup_grace_period=15.0, membership_sample_interval=1.0, leader_alive_threshold=10.0, leader_election_duration=5.0
)


@dataclass
class ElectionNode:
    """Runs one LeaderElection and floods its messages to a fixed list of peers."""

    me: RemotePeer
    others: list[RemotePeer]
    election: LeaderElection = field(init=False)
    seq: int = 0

    def __post_init__(self) -> None:
        self.election = LeaderElection(self.me.pki_id, CONFIG)

    def _out(self, outgoing: list) -> list[Effect]:
        effects: list[Effect] = []
        for item in outgoing:
            self.seq += 1
            msg = m.leadership(b"ch", self.me.pki_id, 1, self.seq, item.is_declaration)
            effects.append(Send(m.seal(msg), tuple(self.others)))
        return effects

    def start(self, now: float) -> list[Effect]:
        return self._out(self.election.start(now, len(self.others)))

    def on_message(self, msg: ReceivedMessage, now: float) -> list[Effect]:
        lm = msg.message.leadership_msg
        return self._out(self.election.on_message(lm.pki_id, lm.is_declaration, now))

    def on_tick(self, now: float) -> list[Effect]:
        return self._out(self.election.on_tick(now, len(self.others)))

    def next_deadline(self) -> float | None:
        return self.election.next_deadline()

    def on_handshake(self, result: HandshakeResult, now: float) -> list[Effect]:
        return []

    def on_probe(self, peer: RemotePeer, alive: bool, now: float) -> list[Effect]:
        return []

    def on_connection_lost(self, pki_id: bytes, now: float) -> list[Effect]:
        return []

    def stop(self, now: float) -> list[Effect]:
        return []


def peers(n: int) -> list[RemotePeer]:
    # PKI-IDs in an order unrelated to endpoint order, so "lowest" is not "first added"
    return [RemotePeer(bytes([(7 * i + 3) % 11]) * 4, f"p{i}:7051") for i in range(n)]


def make(net: SimNetwork, everyone: list[RemotePeer], peer: RemotePeer) -> ElectionNode:
    return ElectionNode(peer, [p for p in everyone if p != peer])


def leaders(net: SimNetwork) -> set[bytes]:
    return {p.pki_id for p in net.peers.values() if p.node is not None and p.node.election.is_leader}


def views(net: SimNetwork) -> set[bytes | None]:
    return {p.node.election.leader for p in net.peers.values() if p.node is not None}


def test_peers_starting_together_elect_the_lowest_pki_id() -> None:
    net = SimNetwork(seed=1, latency=0.01)
    everyone = peers(5)
    for p in everyone:
        net.add(p.endpoint, p.pki_id, b"", make(net, everyone, p))
    assert net.run_until_true(lambda: len(leaders(net)) == 1 and len(views(net)) == 1, timeout=60)
    assert leaders(net) == {min(p.pki_id for p in everyone)}
    net.run_for(60)
    assert leaders(net) == {min(p.pki_id for p in everyone)}  # stable, no flapping


def test_peers_starting_apart_follow_the_first() -> None:
    net = SimNetwork(seed=2, latency=0.01)
    everyone = peers(4)
    first = max(everyone, key=lambda p: p.pki_id)  # the highest PKI-ID starts alone and leads
    net.add(first.endpoint, first.pki_id, b"", make(net, everyone, first))
    assert net.run_until_true(lambda: leaders(net) == {first.pki_id}, timeout=60)
    for p in everyone:
        if p != first:
            net.add(p.endpoint, p.pki_id, b"", make(net, everyone, p))
    net.run_for(120)
    assert leaders(net) == {first.pki_id}
    assert views(net) == {first.pki_id}


def test_re_election_after_leader_crash() -> None:
    net = SimNetwork(seed=3, latency=0.01)
    everyone = peers(5)
    for p in everyone:
        net.add(p.endpoint, p.pki_id, b"", make(net, everyone, p))
    assert net.run_until_true(lambda: len(leaders(net)) == 1, timeout=60)
    (old,) = leaders(net)
    net.crash(next(p.endpoint for p in everyone if p.pki_id == old))
    survivors = [p.pki_id for p in everyone if p.pki_id != old]
    assert net.run_until_true(lambda: leaders(net) == {min(survivors)} and views(net) == {min(survivors)}, timeout=60)


def test_each_partition_elects_then_reconverges_after_heal() -> None:
    net = SimNetwork(seed=4, latency=0.01)
    everyone = peers(6)
    for p in everyone:
        net.add(p.endpoint, p.pki_id, b"", make(net, everyone, p))
    assert net.run_until_true(lambda: len(leaders(net)) == 1, timeout=60)
    left, right = everyone[:3], everyone[3:]
    net.partition([p.endpoint for p in left], [p.endpoint for p in right])
    want = {min(p.pki_id for p in left), min(p.pki_id for p in right)}
    assert net.run_until_true(lambda: leaders(net) == want, timeout=120)
    net.heal()
    lowest = min(p.pki_id for p in everyone)
    assert net.run_until_true(lambda: leaders(net) == {lowest} and views(net) == {lowest}, timeout=120)


def test_yield_hands_leadership_to_another_peer() -> None:
    net = SimNetwork(seed=5, latency=0.01)
    everyone = peers(3)
    for p in everyone:
        net.add(p.endpoint, p.pki_id, b"", make(net, everyone, p))
    assert net.run_until_true(lambda: len(leaders(net)) == 1, timeout=60)
    (old,) = leaders(net)
    node = next(p.node for p in net.peers.values() if p.pki_id == old)
    node.election.yield_leadership(net.now)
    assert node.election.phase is Phase.FOLLOWER
    assert net.run_until_true(lambda: len(leaders(net)) == 1 and old not in leaders(net), timeout=60)


def test_own_messages_are_ignored() -> None:
    election = LeaderElection(b"\x01", CONFIG)
    election.start(0.0, 0)
    assert election.on_message(b"\x01", True, 1.0) == []
    assert election.leader is None


@pytest.mark.parametrize("size_changes", [True, False])
def test_settling_waits_for_a_stable_membership(size_changes: bool) -> None:
    election = LeaderElection(b"\x05", CONFIG)
    election.start(0.0, 1)
    sizes = iter(range(2, 100)) if size_changes else iter([1] * 100)
    t = 0.0
    while election.phase is Phase.SETTLING:
        t = election.next_deadline() or t
        election.on_tick(t, next(sizes))
    assert election.phase is Phase.CAMPAIGN
    assert t == (15.0 if size_changes else 1.0)
