"""Blocks spread to every peer of their channel and to nobody else, by push and by pull, reproducibly.

Mirrors Fabric's gossip/gossip/gossip_test.go: TestDissemination (every block reaches every peer),
TestDataLeakage (blocks of channels A and B reach only their members), TestPull (forwarding off,
blocks spread by pull), TestGossipStateInfo-style membership of channels; and, for the byzantine
side, channel_test.go's TestChannelBadBlocks / TestChannelPulledBadBlocks at network scale.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from gossipnet import GossipNet, build

from rumor.core.channel import channel_mac

ORG1, ORG2, ORG3 = "Org1MSP", "Org2MSP", "Org3MSP"


def leaders(g: GossipNet, *orgs: str) -> list[str]:
    return [ep for ep in g.endpoints() if ep.startswith("p0.") and g.orgs[ep] in orgs]


def publish_all(g: GossipNet, channel: str, publishers: list[str], count: int, every: float) -> None:
    for seq in range(count):
        for ep in publishers:
            g.publish(ep, channel, seq)
        g.net.run_for(every)


def sent_kinds(g: GossipNet, kind: str) -> list[tuple[str, str]]:
    return [(src, dst) for _, src, dst, msg in g.tap.seen if msg.WhichOneof("content") == kind]


def test_blocks_of_channels_a_and_b_reach_only_their_members() -> None:
    only = {"p2.org2msp:7052": "A", "p3.org2msp:7052": "B"}  # the rest of Org2 joins both
    g = build(
        [(ORG1, 4), (ORG2, 4), (ORG3, 4)],
        channels=[("A", [ORG1, ORG2]), ("B", [ORG2, ORG3])],
        members=lambda ep, ch: only.get(ep, ch) == ch,
    )
    members = {
        ch: [ep for ep in g.endpoints() if ch in g.nodes[ep].channels and not g.nodes[ep].channel(ch).left]
        for ch in ("A", "B")
    }
    assert len(members["A"]) == 7 and len(members["B"]) == 7
    assert g.run_until_converged("A", members["A"]) and g.run_until_converged("B", members["B"])
    publish_all(g, "A", leaders(g, ORG1, ORG2), 10, 0.5)
    publish_all(g, "B", leaders(g, ORG2, ORG3), 10, 0.5)
    for ch in ("A", "B"):
        receivers = [ep for ep in members[ch] if not ep.startswith("p0.")]
        assert g.net.run_until_true(lambda ch=ch, r=receivers: g.has_all(r, ch, 10), 30)
        for ep in g.endpoints():
            if ep not in members[ch]:
                assert g.delivered_blocks(ep, ch) == [], f"{ep} got blocks of {ch}"
    # Not only not delivered: never even sent to a non-member.
    for _, _src, dst, msg in g.tap.seen:
        kind = msg.WhichOneof("content")
        if kind == "data_msg" or (kind in ("hello", "data_dig", "data_req", "data_update") and msg.channel):
            assert dst in members[msg.channel.decode()], f"{kind} of {msg.channel!r} sent to {dst}"
    # StateInfo of A never reaches Org3, nor B's Org1 (their orgs are not in the channel).
    for _, _src, dst, msg in g.tap.seen:
        if msg.HasField("state_info"):
            info = msg.state_info
            if g.orgs[dst] == ORG3:
                assert info.channel_MAC != channel_mac(info.pki_id, "A")
            if g.orgs[dst] == ORG1:
                assert info.channel_MAC != channel_mac(info.pki_id, "B")


def test_every_block_reaches_every_channel_peer_with_forwarding_on() -> None:
    g = build([(ORG1, 6), (ORG2, 6)], channels=[("ch", [ORG1, ORG2])])
    assert g.run_until_converged("ch", g.endpoints())
    publish_all(g, "ch", leaders(g, ORG1, ORG2), 20, 0.5)
    receivers = [ep for ep in g.endpoints() if not ep.startswith("p0.")]
    assert g.net.run_until_true(lambda: g.has_all(receivers, "ch", 20), 20)
    for ep in receivers:
        assert sorted(g.delivered_blocks(ep, "ch")) == list(range(20)), "each block delivered exactly once"
    forwarders = {src for src, _ in sent_kinds(g, "data_msg")} - set(leaders(g, ORG1, ORG2))
    assert forwarders, "received blocks were pushed on"


def test_every_block_reaches_every_channel_peer_through_pull_with_forwarding_off() -> None:
    g = build([(ORG1, 6), (ORG2, 6)], channels=[("ch", [ORG1, ORG2])], forwarding=False)
    assert g.run_until_converged("ch", g.endpoints())
    publish_all(g, "ch", leaders(g, ORG1, ORG2), 20, 1.0)
    receivers = [ep for ep in g.endpoints() if not ep.startswith("p0.")]
    assert g.net.run_until_true(lambda: g.has_all(receivers, "ch", 20), 30)
    assert {src for src, _ in sent_kinds(g, "data_msg")} == set(leaders(g, ORG1, ORG2)), "no peer forwards"
    via = [f["via"] for _, f in g.events("block_received")]
    # A leader pushes each block to propagatePeerNum (3) of its 5 peers; the other 2 must pull it.
    assert via.count("pull") >= 2 * 2 * 20
    for _, src, dst, msg in g.tap.seen:
        if msg.HasField("data_update") and msg.channel:
            assert g.orgs[src] == g.orgs[dst], "block pull stays within the org"


def test_tampered_block_is_rejected_everywhere_and_the_genuine_one_still_arrives() -> None:
    g = build([(ORG1, 8)], channels=[("ch", [ORG1])])
    assert g.run_until_converged("ch", g.endpoints())
    leader, rogue = "p0.org1msp:7051", "p1.org1msp:7051"
    publish_all(g, "ch", [leader], 3, 0.5)
    g.publish(rogue, "ch", 3, tamper=True)
    g.net.run_for(0.5)
    g.publish(leader, "ch", 3)
    honest = [ep for ep in g.endpoints() if ep not in (leader, rogue)]
    assert g.net.run_until_true(lambda: g.has_all(honest, "ch", 4), 20)
    rejected = [f for _, f in g.events("block_rejected")]
    assert rejected, "the rogue's push was caught"
    # Pushed or offered in pulls, the forgery only ever comes from the rogue, and never gets further.
    assert all(f["seq_num"] == 3 and f["from"] == g.nodes[rogue].pki_id for f in rejected)
    genuine = g.block("ch", 3)
    for ep in honest:
        (block3,) = [m for m in g.delivered(ep, "ch") if m.message.data_msg.payload.seq_num == 3]
        assert block3.message.data_msg.payload.data == genuine


def test_fifty_peers_hundred_blocks_all_delivered() -> None:
    # Fabric's defaults throughout; blocks come every half second from each org's leader.
    g = build([(ORG1, 25), (ORG2, 25)], channels=[("ch", [ORG1, ORG2])], seed=3)
    assert g.run_until_converged("ch", g.endpoints())
    publish_all(g, "ch", leaders(g, ORG1, ORG2), 100, 0.5)
    receivers = [ep for ep in g.endpoints() if not ep.startswith("p0.")]
    assert g.net.run_until_true(lambda: g.has_all(receivers, "ch", 100), 30, step=0.5)
    assert sum(len(g.delivered_blocks(ep, "ch")) for ep in receivers) == 48 * 100


# --- determinism ---------------------------------------------------------------------------------


def _trace(seed: int) -> str:
    """A digest of everything observable in a small run: tracer events and deliveries of every peer."""
    g = build([(ORG1, 4), (ORG2, 4)], channels=[("ch", [ORG1, ORG2])], seed=seed, loss=0.05)
    g.net.run_for(15.0)
    publish_all(g, "ch", leaders(g, ORG1, ORG2), 10, 0.3)
    g.net.run_for(10.0)
    h = hashlib.sha256()
    for ep in g.endpoints():
        for name, now, fields in g.tracers[ep].events:
            h.update(repr((ep, name, round(now, 9), sorted(fields.items()))).encode())
        for now, m in g.net.peers[ep].delivered:
            h.update(repr((ep, round(now, 9), m.sender, m.envelope.payload)).encode())
    h.update(repr(g.net.stats).encode())
    return h.hexdigest()


def test_same_seed_same_run_whatever_the_hash_seed() -> None:
    here = _trace(5)
    assert here == _trace(5)
    assert here != _trace(6)
    sim_dir = Path(__file__).resolve().parent
    root = sim_dir.parents[1]
    code = (
        f"import sys; sys.path[:0] = [{str(root)!r}, {str(sim_dir)!r}]; "
        "from test_dissemination import _trace; print(_trace(5))"
    )
    for hash_seed in ("0", "987"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == here
