"""The simulated network delivers, delays, partitions, crashes and times exactly as it says."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from rumor.core.types import (
    Effect,
    Handshake,
    HandshakeResult,
    Probe,
    ReceivedMessage,
    RemotePeer,
    Send,
)
from rumor.sim.network import SimNetwork
from rumor.wire import messages as m


@dataclass
class EchoNode:
    """Answers every data message with the next sequence number, and ticks at a fixed period."""

    me: RemotePeer
    period: float | None = None
    received: list[tuple[float, bytes, int]] = field(default_factory=list)
    handshakes: list[HandshakeResult] = field(default_factory=list)
    probes: list[tuple[RemotePeer, bool]] = field(default_factory=list)
    lost: list[bytes] = field(default_factory=list)
    ticks: list[float] = field(default_factory=list)
    echo: bool = True
    _next: float | None = None

    def start(self, now: float) -> list[Effect]:
        if self.period is not None:
            self._next = now + self.period
        return []

    def on_message(self, msg: ReceivedMessage, now: float) -> list[Effect]:
        seq = msg.message.data_msg.payload.seq_num
        self.received.append((now, msg.sender, seq))
        if not self.echo:
            return []
        reply = m.seal(m.data_message(b"ch", seq + 1, b"x"))
        return [Send(reply, (RemotePeer(msg.sender, msg.sender_endpoint),))]

    def on_tick(self, now: float) -> list[Effect]:
        self.ticks.append(now)
        assert self.period is not None
        self._next = now + self.period
        return []

    def next_deadline(self) -> float | None:
        return self._next

    def on_handshake(self, result: HandshakeResult, now: float) -> list[Effect]:
        self.handshakes.append(result)
        return []

    def on_probe(self, peer: RemotePeer, alive: bool, now: float) -> list[Effect]:
        self.probes.append((peer, alive))
        return []

    def on_connection_lost(self, pki_id: bytes, now: float) -> list[Effect]:
        self.lost.append(pki_id)
        return []

    def stop(self, now: float) -> list[Effect]:
        return []


def two_nodes(net: SimNetwork, echo_b: bool = True) -> tuple[EchoNode, EchoNode]:
    a = EchoNode(RemotePeer(b"A", "a:1"), echo=False)
    b = EchoNode(RemotePeer(b"B", "b:1"), echo=echo_b)
    net.add("a:1", b"A", b"id-A", a)
    net.add("b:1", b"B", b"id-B", b)
    return a, b


def send(net: SimNetwork, src: str, dst: RemotePeer, seq: int) -> None:
    net._apply(net.peers[src], [Send(m.seal(m.data_message(b"ch", seq, b"x")), (dst,))])


def test_delivery_after_latency_with_proven_sender() -> None:
    net = SimNetwork(latency=0.1)
    a, b = two_nodes(net)
    send(net, "a:1", b.me, 1)
    net.run_until(0.05)
    assert b.received == []
    net.run_until(0.15)
    assert b.received == [(0.1, b"A", 1)]
    net.run_until(1.0)
    assert a.received == [(0.2, b"B", 2)]


def test_wrong_pki_id_at_endpoint_and_self_send_are_dropped() -> None:
    net = SimNetwork(latency=0.01)
    a, b = two_nodes(net)
    send(net, "a:1", RemotePeer(b"someone-else", "b:1"), 1)
    send(net, "a:1", a.me, 1)
    net.run_for(1)
    assert b.received == [] and a.received == []
    assert net.stats.dropped == 2


def test_partition_and_heal() -> None:
    net = SimNetwork(latency=0.01)
    a, b = two_nodes(net, echo_b=False)
    net.partition(["a:1"], ["b:1"])
    send(net, "a:1", b.me, 1)
    net._apply(net.peers["a:1"], [Handshake("b:1"), Probe(b.me)])
    net.run_for(5)
    assert b.received == []
    assert a.handshakes[0].error and a.handshakes[0].pki_id is None
    assert a.probes == [(b.me, False)]
    net.heal()
    send(net, "a:1", b.me, 2)
    net._apply(net.peers["a:1"], [Handshake("b:1")])
    net.run_for(1)
    assert [seq for _, _, seq in b.received] == [2]
    assert a.handshakes[1] == HandshakeResult("b:1", b"B", b"id-B")


def test_crash_reports_lost_connection_and_restart_runs_a_new_node() -> None:
    net = SimNetwork(latency=0.01)
    a, b = two_nodes(net, echo_b=False)
    send(net, "a:1", b.me, 1)
    net.run_for(1)
    net.crash("b:1")
    net.run_for(1)
    assert a.lost == [b"B"]
    send(net, "a:1", b.me, 2)
    net._apply(net.peers["a:1"], [Probe(b.me)])
    net.run_for(1)
    assert a.probes == [(b.me, False)]
    fresh = EchoNode(b.me, echo=False)
    net.restart("b:1", fresh)
    send(net, "a:1", b.me, 3)
    net.run_for(1)
    assert [seq for _, _, seq in fresh.received] == [3]
    assert [seq for _, _, seq in b.received] == [1]


def test_timers_fire_at_deadlines_and_stop_after_crash() -> None:
    net = SimNetwork()
    node = EchoNode(RemotePeer(b"T", "t:1"), period=0.5)
    net.add("t:1", b"T", b"id", node)
    net.run_until(2.0)
    assert node.ticks == [0.5, 1.0, 1.5, 2.0]
    net.crash("t:1")
    net.run_until(5.0)
    assert len(node.ticks) == 4


def test_message_in_flight_from_crashed_sender_is_lost() -> None:
    net = SimNetwork(latency=0.5)
    _, b = two_nodes(net)
    send(net, "a:1", b.me, 1)
    net.run_for(0.1)
    net.crash("a:1")
    net.run_for(1)
    assert b.received == []


def _random_run(seed: int) -> list[tuple[float, str, str, str, str]]:
    net = SimNetwork(seed=seed, latency=lambda _a, _b, rng: rng.uniform(0.01, 0.05), loss=0.2, record=True)
    nodes = [EchoNode(RemotePeer(bytes([i]), f"n{i}:1")) for i in range(5)]
    for i, node in enumerate(nodes):
        net.add(f"n{i}:1", bytes([i]), b"id", node)
    for i in range(5):
        for j in range(5):
            if i != j:
                send(net, f"n{i}:1", nodes[j].me, i * 10 + j)
    net.run_for(2)
    return net.log


def test_same_seed_same_trace() -> None:
    first, second = _random_run(7), _random_run(7)
    assert first and first == second
    assert _random_run(8) != first


@dataclass
class StuckNode(EchoNode):
    """A buggy node whose timer never moves past now."""

    def on_tick(self, now: float) -> list[Effect]:
        self.ticks.append(now)
        return []


def test_timer_livelock_is_reported_not_hung() -> None:
    net = SimNetwork()
    net.add("s:1", b"S", b"id", StuckNode(RemotePeer(b"S", "s:1"), period=0.5))
    with pytest.raises(RuntimeError, match="timer livelock"):
        net.run_until(1.0)
