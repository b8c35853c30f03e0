"""Enhanced dissemination (peer.gossip.dissemination: enhanced) on the simulator.

Behaviour only, never timings: every block reaches every peer, mostly without the periodic pull;
whole blocks travel only the first pushTTL hops, then digests; peers of both modes share one network;
a Fabric-mode peer ignores advertisements; a forged block offered after an advertisement goes nowhere.
"""

from __future__ import annotations

from dataclasses import replace

from rumor.config import GossipConfig
from rumor.sim.cluster import Cluster, SimPeerSpec
from rumor.wire import messages as m
from rumor.wire.pb.gossip import message_pb2 as pb

CH = "ch"
ORG = "Org1MSP"


def one_org(
    seed: int, peers: int, *, mode: str = "enhanced", enhanced_if: object = None, **gossip: object
) -> tuple[Cluster, list[pb.GossipMessage]]:
    """One org; peer0 is its static leader. Returns the cluster and a tap of every block-carrying message."""

    def configure(spec: SimPeerSpec, config: GossipConfig) -> GossipConfig:
        chosen = mode
        if callable(enhanced_if):
            chosen = "enhanced" if enhanced_if(spec.name) else "fabric"
        return replace(config, dissemination=chosen, **gossip)  # type: ignore[arg-type]

    cluster = Cluster(
        seed=seed,
        latency=0.01,
        use_leader_election=False,
        org_leaders={"peer0.org1msp"},
        configure=configure,
        ordering_interval=None,
    )
    for i in range(peers):
        cluster.add_peer(ORG, f"peer{i}")
    cluster.create_channel(CH, [ORG])
    seen: list[pb.GossipMessage] = []

    def tap(_src: str, _dst: str, msg: pb.GossipMessage) -> bool:
        if msg.WhichOneof("content") in ("data_msg", "data_dig", "data_req", "data_update") and msg.channel:
            seen.append(msg)
        return False

    cluster.net.drop_rules.append(tap)
    return cluster, seen


def converge(cluster: Cluster, peers: int) -> None:
    def done() -> bool:
        return all(
            len(c.node.channel(CH).pull_candidates()) == peers - 1 for s in cluster.up() if (c := cluster.core(s.name))
        )

    assert cluster.net.run_until_true(done, timeout=60, step=0.5)


def cut(cluster: Cluster, count: int, every: float = 0.5) -> None:
    for _ in range(count):
        cluster.ordering.submit(CH, 1, size=2000)
        cluster.ordering.pump()
        cluster.net.run_for(every)


def received_via(cluster: Cluster) -> dict[str, int]:
    counts: dict[str, int] = {}
    for tracer in cluster.tracers.values():
        for fields in tracer.named("block_received"):  # type: ignore[attr-defined]
            via = str(fields["via"])
            counts[via] = counts.get(via, 0) + 1
    return counts


def test_every_block_reaches_every_peer_by_push_then_advertisement() -> None:
    cluster, seen = one_org(seed=1, peers=30)
    converge(cluster, 30)
    cut(cluster, 10)
    assert cluster.net.run_until_true(lambda: cluster.all_at_height(CH, 11), timeout=30)
    via = received_via(cluster)
    assert via.get("push", 0) > 0 and via.get("advert", 0) > 0  # pushed first, then fetched after digests
    assert via.get("pull", 0) <= 3  # the periodic pull is a fallback, hardly needed
    blocks = [msg for msg in seen if msg.HasField("data_msg")]
    # Whole blocks are pushed for one hop only in a channel of 30 (a second hop of fanout 4 would reach 20 of
    # 30, most copies landing where the block is): 4 pushes per block, the rest after digests.
    assert all(msg.data_msg.HasField("push_ttl") and msg.data_msg.push_ttl == 0 for msg in blocks)
    assert len(blocks) == 10 * 4
    adverts = [msg for msg in seen if msg.HasField("data_dig") and msg.data_dig.HasField("advertise_ttl")]
    assert adverts and all(msg.data_dig.advertise_ttl < 7 for msg in adverts)


def test_push_hops_follow_pushttl_but_stop_before_most_copies_would_be_duplicates() -> None:
    cluster, _ = one_org(seed=6, peers=3)
    core = cluster.core("peer0.org1msp")
    assert core is not None
    enhanced = core.node.channel(CH).enhanced
    assert enhanced is not None and enhanced.fanout == 4 and enhanced.push_ttl == 2
    assert [enhanced.push_hops(n) for n in (4, 16, 31, 32, 100, 1000)] == [1, 1, 1, 2, 2, 2]


def test_fewer_copies_than_fabric_mode_for_the_same_blocks() -> None:
    copies: dict[str, int] = {}
    for mode in ("fabric", "enhanced"):
        cluster, seen = one_org(seed=2, peers=20, mode=mode)
        converge(cluster, 20)
        cut(cluster, 5)
        assert cluster.net.run_until_true(lambda c=cluster: c.all_at_height(CH, 6), timeout=30)
        copies[mode] = sum(1 for msg in seen if msg.HasField("data_msg")) + sum(
            len(msg.data_update.data) for msg in seen if msg.HasField("data_update")
        )
    # Fabric pushes each block to 3 peers from every peer that gets it; enhanced about once per peer.
    assert copies["enhanced"] * 2 < copies["fabric"]
    assert copies["enhanced"] <= 5 * 19 * 1.2


def test_fabric_and_enhanced_peers_share_one_network() -> None:
    enhanced = {f"peer{i}.org1msp" for i in range(0, 24, 2)}  # the leader and every other peer
    cluster, _ = one_org(seed=3, peers=24, enhanced_if=lambda name: name in enhanced)
    converge(cluster, 24)
    cut(cluster, 8)
    assert cluster.net.run_until_true(lambda: cluster.all_at_height(CH, 9), timeout=60)
    # Fabric-mode peers forward the TTL-carrying blocks unchanged and count advertisements as stray digests.
    fabric_cores = [cluster.core(s.name) for s in cluster.specs.values() if s.name not in enhanced]
    assert any(c is not None and c.node.channel(CH).pull.stats.unexpected for c in fabric_cores)
    assert all(c is not None and c.node.channel(CH).enhanced is None for c in fabric_cores)


def test_peer_lacking_a_block_asks_the_next_advertiser_when_one_stays_silent() -> None:
    cluster, _ = one_org(seed=4, peers=20)
    converge(cluster, 20)
    silent = cluster.specs["peer3.org1msp"].endpoint

    def mute(src: str, _dst: str, msg: pb.GossipMessage) -> bool:
        return src == silent and msg.HasField("data_update")  # peer3 advertises but never answers

    cluster.net.drop_rules.append(mute)
    cut(cluster, 6)
    assert cluster.net.run_until_true(lambda: cluster.all_at_height(CH, 7), timeout=60)
    timeouts = sum(
        c.node.channel(CH).enhanced.stats.request_timeouts  # type: ignore[union-attr]
        for s in cluster.up()
        if (c := cluster.core(s.name)) is not None
    )
    assert timeouts > 0


def test_forged_block_after_an_advertisement_is_rejected() -> None:
    cluster, _ = one_org(seed=5, peers=12)
    converge(cluster, 12)
    rogues = {s.endpoint: s.mcs.pki_id for s in cluster.specs.values() if int(s.name[4:].split(".")[0]) % 2}

    def forge(src: str, _dst: str, msg: pb.GossipMessage) -> bool:
        if src in rogues and msg.HasField("data_update") and msg.data_update.msg_type == m.BLOCK_MSG:
            for envelope in msg.data_update.data:
                inner = m.open_envelope(envelope)
                block = bytearray(inner.data_msg.payload.data)
                block[-1] ^= 0xFF
                inner.data_msg.payload.data = bytes(block)
                envelope.payload = inner.SerializeToString()
        return False

    cluster.net.drop_rules.insert(0, forge)
    cut(cluster, 5)
    assert cluster.net.run_until_true(lambda: cluster.all_at_height(CH, 6), timeout=120)
    rejected = [f for t in cluster.tracers.values() for f in t.named("block_rejected")]  # type: ignore[attr-defined]
    assert rejected and all(f["from"] in rogues.values() for f in rejected)
    chains = {tuple(s.ledger.get_blocks(CH, 0, 100)) for s in cluster.specs.values()}
    assert chains == {tuple(cluster.ordering.chains[CH])}
