"""GossipNode as a whole: its API, no echo of its own messages, no leaks across orgs, restart by pull.

Mirrors Fabric's gossip/gossip/gossip_test.go: TestLeaveChannel, TestDisseminateAll2All's
"no message back to its origin", TestMembershipConvergence, TestIdentityExpiration-style
checks of what crosses org boundaries, and channel_test.go's TestInterOrgExternalEndpointDisclosure.
"""

from __future__ import annotations

import pytest
from gossipnet import GossipNet, build

from rumor.core.channel import channel_mac
from rumor.core.node import GossipNode, Subscriptions, is_block_of
from rumor.core.types import Deliver, ReceivedMessage, RemotePeer, Send
from rumor.crypto.cheap import CheapCryptoService
from rumor.wire import messages as wire
from rumor.wire.pb.gossip import message_pb2 as pb

ORG1, ORG2, ORG3 = "Org1MSP", "Org2MSP", "Org3MSP"


def leaders(g: GossipNet) -> list[str]:
    return [ep for ep in g.endpoints() if ep.startswith("p0.")]


def test_a_node_never_gets_its_own_messages_back() -> None:
    g = build([(ORG1, 5), (ORG2, 5)], channels=[("ch", [ORG1, ORG2])], spy=True)
    assert g.run_until_converged("ch", g.endpoints())
    for seq in range(10):
        for ep in leaders(g):
            g.publish(ep, "ch", seq)
        g.net.run_for(0.5)
    g.net.run_for(10.0)
    for ep, spy in g.spies.items():
        me = g.nodes[ep].pki_id
        sends = [e for e in spy.effects if isinstance(e, Send)]
        assert sends, ep
        assert all(p.pki_id != me for s in sends for p in s.to), f"{ep} sent to itself"
    for ep in leaders(g):
        assert g.delivered_blocks(ep, "ch") == [], "a leader's own blocks are not delivered back to it"
    for ep in g.endpoints():
        if ep not in leaders(g):
            assert sorted(g.delivered_blocks(ep, "ch")) == list(range(10))
    # Its own StateInfo, relayed back by others, is never taken for news (it would be re-forwarded).
    for node in g.nodes.values():
        assert node.channel("ch").stats.state_info_accepted == len(node.peers_of_channel("ch"))


def test_channel_names_and_hidden_peers_do_not_leak_to_other_orgs() -> None:
    hidden = {"p1.org1msp:7051", "p2.org1msp:7051", "p3.org1msp:7051"}
    g = build(
        [(ORG1, 4), (ORG2, 3), (ORG3, 3)],
        channels=[("secret-ch", [ORG1, ORG2]), ("public", [ORG1, ORG2, ORG3])],
        external=lambda ep: ep not in hidden,
        spy=True,
    )
    assert g.run_until_converged("public", [ep for ep in g.endpoints() if ep not in hidden])
    g.net.run_for(20.0)
    for seq in range(5):
        for ep in ("p0.org1msp:7051", "p0.org2msp:7052"):
            g.publish(ep, "secret-ch", seq)
        for ep in leaders(g):
            g.publish(ep, "public", seq)
        g.net.run_for(0.5)
    g.net.run_for(10.0)

    # The test means something: channels formed, blocks flowed, hidden peers took part in their org.
    org2_view = {m.pki_id for m in g.nodes["p1.org2msp:7052"].peers_of_channel("secret-ch")}
    assert g.nodes["p0.org1msp:7051"].pki_id in org2_view
    assert {g.nodes[ep].pki_id for ep in hidden}.isdisjoint(org2_view)
    assert g.nodes["p1.org1msp:7051"].pki_id in {m.pki_id for m in g.nodes["p0.org1msp:7051"].peers()}
    for ep in hidden:
        assert sorted(g.delivered_blocks(ep, "secret-ch")) == list(range(5))
    assert sorted(g.delivered_blocks("p2.org3msp:7053", "public")) == list(range(5))

    secrets = [ep.encode() for ep in hidden] + [g.nodes[ep].pki_id for ep in hidden]
    for src, spy in g.spies.items():
        for effect in spy.effects:
            if not isinstance(effect, Send):
                continue
            raw = effect.envelope.SerializeToString()
            msg = wire.open_envelope(effect.envelope)
            for target in effect.to:
                org = g.orgs[target.endpoint]
                if org != ORG1:
                    leaked = [s for s in secrets if s in raw]
                    assert not leaked, f"{src} told {target.endpoint} about a hidden peer: {msg}"
                if org == ORG3:
                    assert b"secret-ch" not in raw, f"{src} sent {target.endpoint} the channel's name"
                    if msg.HasField("state_info"):
                        info = msg.state_info
                        assert info.channel_MAC != channel_mac(info.pki_id, "secret-ch")
                    for element in msg.state_snapshot.elements:
                        info = wire.open_envelope(element).state_info
                        assert info.channel_MAC != channel_mac(info.pki_id, "secret-ch")
                    if msg.HasField("state_info_pull_req"):
                        assert msg.state_info_pull_req.channel_MAC != channel_mac(g.nodes[src].pki_id, "secret-ch")


def test_ledger_height_metadata_and_leaving_are_seen_by_peers() -> None:
    g = build([(ORG1, 3), (ORG2, 3)], channels=[("ch", [ORG1, ORG2])])
    assert g.run_until_converged("ch", g.endpoints())
    a, b = "p1.org1msp:7051", "p2.org2msp:7052"
    pki_a = g.nodes[a].pki_id
    g.call(a, lambda n: n.update_ledger_height("ch", 42, now=g.net.now))
    g.nodes[a].update_metadata(b"hello")

    def height_seen() -> int | None:
        for m in g.nodes[b].peers_of_channel("ch"):
            if m.pki_id == pki_a and m.properties is not None:
                return m.properties.ledger_height
        return None

    assert g.net.run_until_true(lambda: height_seen() == 42, 15)
    assert g.net.run_until_true(lambda: any(m.metadata == b"hello" for m in g.nodes[b].peers()), 15)
    g.call(a, lambda n: n.leave_channel("ch", now=g.net.now))
    assert g.nodes[a].peers_of_channel("ch") == []
    assert g.net.run_until_true(lambda: height_seen() is None, 15)
    assert pki_a in {m.pki_id for m in g.nodes[b].peers()}, "left the channel, not the network"


def test_send_goes_straight_to_the_peers_and_pass_through_kinds_are_delivered() -> None:
    g = build([(ORG1, 3)], channels=[("ch", [ORG1])])
    assert g.run_until_converged("ch", g.endpoints())
    a, b = "p1.org1msp:7051", "p2.org1msp:7051"
    node_a, node_b = g.nodes[a], g.nodes[b]
    request = wire.state_request(b"ch", 0, 9, nonce=77)
    to = [RemotePeer(node_b.pki_id, b), RemotePeer(node_a.pki_id, a)]
    effects = node_a.send(request, to)
    assert len(effects) == 1 and isinstance(effects[0], Send) and effects[0].to == (to[0],), "never to itself"
    g.call(a, lambda n: n.send(request, to))
    g.net.run_for(1.0)
    got = [m for _, m in g.net.peers[b].delivered if m.message.HasField("state_request")]
    assert len(got) == 1 and got[0].sender == node_a.pki_id and got[0].message.nonce == 77


def test_gossip_checks_tags_and_channels() -> None:
    g = build([(ORG1, 2)], channels=[("ch", [ORG1])])
    node = g.nodes["p0.org1msp:7051"]
    bad = wire.data_message(b"ch", 1, g.block("ch", 1))
    bad.tag = wire.EMPTY
    with pytest.raises(wire.InvalidMessage):
        node.gossip(bad, 0.0)
    with pytest.raises(KeyError):
        node.gossip(wire.data_message(b"other", 1, b""), 0.0)
    assert node.gossip(wire.data_message(b"ch", 1, g.block("ch", 1)), 0.0) == []  # batched, nobody known yet
    assert node.gossip(wire.data_message(b"ch", 1, g.block("ch", 1)), 0.0) == [], "already gossiped"
    assert b"1" in node.channel("ch").blocks


def test_signed_kinds_are_signed_when_gossiped() -> None:
    g = build([(ORG1, 2)], channels=[("ch", [ORG1])])
    assert g.run_until_converged("ch", g.endpoints())
    node = g.nodes["p0.org1msp:7051"]
    lead = wire.leadership(b"ch", node.pki_id, 1, 1, True)
    effects = node.gossip(lead, g.net.now) + node.emitter.flush(g.net.now)
    (send,) = [e for e in effects if isinstance(e, Send)]
    node.mcs.verify(node.identity, send.envelope.signature, send.envelope.payload)


def test_restarted_peer_gets_recent_blocks_by_pull() -> None:
    g = build([(ORG1, 5)], channels=[("ch", [ORG1])])
    assert g.run_until_converged("ch", g.endpoints())
    victim = "p3.org1msp:7051"
    g.net.crash(victim)
    for seq in range(5):
        g.publish("p0.org1msp:7051", "ch", seq)
        g.net.run_for(0.5)
    fresh = GossipNode.create(
        CheapCryptoService.for_peer(ORG1, "p3", g.registry),
        endpoint=victim,
        external_endpoint=victim,
        bootstrap=["p0.org1msp:7051"],
        start_time_ns=10**12,
        tracer=g.tracers[victim],
    )
    fresh.join_channel("ch", [ORG1], now=g.net.now)
    g.nodes[victim] = fresh
    g.net.restart(victim, fresh)
    assert g.net.run_until_true(lambda: set(g.delivered_blocks(victim, "ch")) >= set(range(5)), 30)
    assert any(f["via"] == "pull" for f in g.tracers[victim].named("block_received"))


def test_subscriptions_fan_out_deliveries() -> None:
    def delivered(channel: bytes, seq: int) -> Deliver:
        env = wire.seal(wire.data_message(channel, seq, b"x"))
        return Deliver(ReceivedMessage(b"s", "s:1", b"", env, wire.open_envelope(env)))

    subs = Subscriptions(maxlen=3)
    blocks_a = subs.subscribe(is_block_of("a"))
    everything = subs.subscribe(lambda m: True, maxlen=10)
    other = Send(pb.Envelope(), ())
    rest = subs.dispatch([delivered(b"a", 1), other, delivered(b"b", 2), delivered(b"a", 3)])
    assert rest == [other]
    assert [m.message.data_msg.payload.seq_num for m in blocks_a.pop_all()] == [1, 3]
    assert len(everything.queue) == 3
    subs.dispatch([delivered(b"a", n) for n in range(5)])
    assert [m.message.data_msg.payload.seq_num for m in blocks_a.queue] == [2, 3, 4] and blocks_a.dropped == 2
    subs.unsubscribe(everything)
    subs.dispatch([delivered(b"a", 9)])
    assert everything.closed and len(everything.queue) == 8


def test_channel_bound_pass_through_kinds_only_from_orgs_of_the_channel() -> None:
    g = build([(ORG1, 2)], channels=[("ch", [ORG1])])
    g.net.run_for(1.0)
    node = g.nodes["p1.org1msp:7051"]
    outsider = CheapCryptoService.for_peer(ORG2, "x", g.registry)
    insider = CheapCryptoService.for_peer(ORG1, "y", g.registry)

    def from_(svc: CheapCryptoService, message: pb.GossipMessage) -> ReceivedMessage:
        env = wire.seal(message)
        return ReceivedMessage(svc.pki_id, "x:1", svc.identity, env, wire.open_envelope(env))

    request = wire.state_request(b"ch", 0, 9, nonce=1)
    assert node.on_message(from_(outsider, request), g.net.now) == []
    assert node.on_message(from_(insider, wire.state_request(b"nope", 0, 9, nonce=1)), g.net.now) == []
    (effect,) = node.on_message(from_(insider, request), g.net.now)
    assert isinstance(effect, Deliver)
    (ack,) = node.on_message(from_(outsider, wire.ack(5)), g.net.now)
    assert isinstance(ack, Deliver), "no channel, nothing to guard"
