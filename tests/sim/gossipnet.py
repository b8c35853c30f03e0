"""Builds simulated networks of GossipNodes on cheap crypto, for the dissemination and node tests."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from rumor.core.node import GossipNode
from rumor.core.types import Effect, HandshakeResult, ReceivedMessage, RecordingTracer, RemotePeer
from rumor.crypto.blocks import block_header_hash, decode_block, new_block, sign_block
from rumor.crypto.cheap import CheapCryptoService, CheapRegistry
from rumor.sim.network import SimNetwork
from rumor.wire import messages as wire
from rumor.wire.pb.gossip import message_pb2 as pb

ORDERER_ORG = "OrdererMSP"


class Spy:
    """Stands between the simulator and a node, keeping every effect the node returned."""

    def __init__(self, node: GossipNode) -> None:
        self.node = node
        self.effects: list[Effect] = []

    def _keep(self, effects: list[Effect]) -> list[Effect]:
        self.effects.extend(effects)
        return effects

    def start(self, now: float) -> list[Effect]:
        return self._keep(self.node.start(now))

    def on_message(self, msg: ReceivedMessage, now: float) -> list[Effect]:
        return self._keep(self.node.on_message(msg, now))

    def on_tick(self, now: float) -> list[Effect]:
        return self._keep(self.node.on_tick(now))

    def next_deadline(self) -> float | None:
        return self.node.next_deadline()

    def on_handshake(self, result: HandshakeResult, now: float) -> list[Effect]:
        return self._keep(self.node.on_handshake(result, now))

    def on_probe(self, peer: RemotePeer, alive: bool, now: float) -> list[Effect]:
        return self._keep(self.node.on_probe(peer, alive, now))

    def on_connection_lost(self, pki_id: bytes, now: float) -> list[Effect]:
        return self._keep(self.node.on_connection_lost(pki_id, now))

    def stop(self, now: float) -> list[Effect]:
        return self._keep(self.node.stop(now))


@dataclass
class Wiretap:
    """Every message the network was about to deliver: (time, from endpoint, to endpoint, message)."""

    seen: list[tuple[float, str, str, pb.GossipMessage]] = field(default_factory=list)


@dataclass
class GossipNet:
    """A SimNetwork of GossipNodes plus the orderer that signs the blocks gossiped into it."""

    net: SimNetwork
    registry: CheapRegistry
    orderer: CheapCryptoService
    nodes: dict[str, GossipNode] = field(default_factory=dict)
    spies: dict[str, Spy] = field(default_factory=dict)
    orgs: dict[str, str] = field(default_factory=dict)  # endpoint -> mspid
    tracers: dict[str, RecordingTracer] = field(default_factory=dict)
    chain: dict[str, list[bytes]] = field(default_factory=dict)  # channel -> serialized blocks
    tap: Wiretap = field(default_factory=Wiretap)

    def endpoints(self, org: str | None = None) -> list[str]:
        return [ep for ep, o in self.orgs.items() if org is None or o == org]

    def call(self, endpoint: str, action: Callable[[GossipNode], list[Effect]]) -> None:
        """Run ``action`` on the node at ``endpoint`` now and let the network carry out its effects."""
        self.net.invoke(endpoint, lambda _: action(self.nodes[endpoint]))

    def block(self, channel: str, seq: int, tamper: bool = False) -> bytes:
        """Block ``seq`` of ``channel`` (made once, signed by the orderer); ``tamper`` alters its data after."""
        blocks = self.chain.setdefault(channel, [])
        while len(blocks) <= seq:
            number = len(blocks)
            previous = b"" if number == 0 else block_header_hash(decode_block(blocks[-1]).header)
            made = new_block(number, previous, [f"{channel}/tx{number}".encode()])
            sign_block(made, self.orderer, nonce=number.to_bytes(24, "big"))
            blocks.append(made.SerializeToString(deterministic=True))
        if not tamper:
            return blocks[seq]
        forged = decode_block(blocks[seq])
        forged.data.data[0] = b"forged"
        return forged.SerializeToString(deterministic=True)

    def publish(self, endpoint: str, channel: str, seq: int, tamper: bool = False) -> None:
        """Have the peer at ``endpoint`` (its org's leader) gossip block ``seq`` of ``channel``."""
        message = wire.data_message(channel.encode(), seq, self.block(channel, seq, tamper))
        self.call(endpoint, lambda n: n.gossip(message, self.net.now))

    def delivered(self, endpoint: str, channel: str) -> list[ReceivedMessage]:
        name = channel.encode()
        return [
            m
            for _, m in self.net.peers[endpoint].delivered
            if m.message.HasField("data_msg") and m.message.channel == name
        ]

    def delivered_blocks(self, endpoint: str, channel: str) -> list[int]:
        return [m.message.data_msg.payload.seq_num for m in self.delivered(endpoint, channel)]

    def has_all(self, endpoints: Iterable[str], channel: str, count: int) -> bool:
        return all(set(self.delivered_blocks(ep, channel)) >= set(range(count)) for ep in endpoints)

    def events(self, name: str) -> list[tuple[str, dict[str, object]]]:
        return [(ep, fields) for ep, tracer in self.tracers.items() for fields in tracer.named(name)]

    def run_until_converged(self, channel: str, members: Sequence[str], timeout: float = 60.0) -> bool:
        """Until each of ``members`` sees every other one (at least) as a peer of ``channel``."""
        want = {self.nodes[ep].pki_id for ep in members}

        def converged() -> bool:
            for ep in members:
                seen = {m.pki_id for m in self.nodes[ep].peers_of_channel(channel)}
                if not seen >= want - {self.nodes[ep].pki_id}:
                    return False
            return True

        return self.net.run_until_true(converged, timeout, step=0.5)


def build(
    layout: Sequence[tuple[str, int]],
    *,
    seed: int = 1,
    external: Callable[[str], bool] | bool = True,
    channels: Iterable[tuple[str, Sequence[str]]] = (),
    members: Callable[[str, str], bool] | None = None,
    latency: float = 0.005,
    loss: float = 0.0,
    forwarding: bool = True,
    spy: bool = False,
    **overrides: object,
) -> GossipNet:
    """Peers of each (mspid, count) org, named ``p<i>.<mspid lowercased>``; each org's p0 is the others' bootstrap.

    ``channels`` are (name, member mspids); each peer of a member org joins (with the orgs' p0 as anchor
    peers) unless ``members(endpoint, channel)`` says otherwise. ``external(endpoint)`` decides who has an
    external endpoint (p0 always has: it is the anchor). ``overrides`` change GossipConfig fields.
    """
    registry = CheapRegistry()
    registry.add_org(ORDERER_ORG)
    orderer = CheapCryptoService.for_peer(ORDERER_ORG, "orderer0", registry)
    channels = list(channels)
    for name, _ in channels:
        registry.register_channel(name, [ORDERER_ORG])
    gnet = GossipNet(SimNetwork(seed=seed, latency=latency, loss=loss), registry, orderer)
    first = {mspid: f"p0.{mspid.lower()}:{7051 + index}" for index, (mspid, _) in enumerate(layout)}

    def tap(src: str, dst: str, message: pb.GossipMessage) -> bool:
        gnet.tap.seen.append((gnet.net.now, src, dst, message))
        return False

    gnet.net.drop_rules.append(tap)
    for org_index, (mspid, count) in enumerate(layout):
        for i in range(count):
            endpoint = f"p{i}.{mspid.lower()}:{7051 + org_index}"
            reachable = i == 0 or (external(endpoint) if callable(external) else external)
            tracer = RecordingTracer()
            node = GossipNode.create(
                CheapCryptoService.for_peer(mspid, f"p{i}", registry),
                endpoint=endpoint,
                external_endpoint=endpoint if reachable else "",
                bootstrap=[] if i == 0 else [first[mspid]],
                seed=seed,
                start_time_ns=1_000 + i,
                tracer=tracer,
                forwarding=forwarding,
                **overrides,
            )
            for name, orgs in channels:
                if mspid in orgs and (members is None or members(endpoint, name)):
                    anchors = {o: [first[o]] for o in orgs if o in first and first[o] != endpoint}
                    node.join_channel(name, orgs, anchors, now=0.0)
            gnet.nodes[endpoint] = node
            gnet.orgs[endpoint] = mspid
            gnet.tracers[endpoint] = tracer
            driven: GossipNode | Spy = node
            if spy:
                driven = gnet.spies[endpoint] = Spy(node)
            gnet.net.add(endpoint, node.pki_id, node.identity, driven)
    return gnet
