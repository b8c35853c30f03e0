"""Whole peers (gossip + state transfer + election) on the simulator, fed by a simulated ordering service."""

from __future__ import annotations

from rumor.core.peer import PeerCore
from rumor.core.types import RemotePeer
from rumor.sim.cluster import Cluster
from rumor.wire import messages as m
from rumor.wire.pb.gossip import message_pb2 as pb

CH = "mychannel"
ORGS = ("Org1MSP", "Org2MSP")


def two_orgs(seed: int, per_org: int = 3, record: bool = False) -> Cluster:
    cluster = Cluster(seed=seed, record=record)
    for org in ORGS:
        for i in range(per_org):
            cluster.add_peer(org, f"peer{i}", anchor=(i == 0))
    cluster.create_channel(CH, ORGS)
    return cluster


def one_leader_per_org(cluster: Cluster) -> bool:
    return all(len(cluster.leaders(CH, org)) == 1 for org in ORGS)


def same_ledgers(cluster: Cluster, names: list[str] | None = None) -> bool:
    specs = [cluster.specs[n] for n in names] if names else cluster.members(CH)
    chains = {tuple(s.ledger.get_blocks(CH, 0, 10_000)) for s in specs}
    return len(chains) == 1


def test_blocks_reach_every_peer_in_order_and_each_org_elects_its_lowest_peer() -> None:
    cluster = two_orgs(seed=1)
    assert cluster.net.run_until_true(lambda: one_leader_per_org(cluster), timeout=60)
    for org in ORGS:
        lowest = min((s for s in cluster.specs.values() if s.org == org), key=lambda s: s.mcs.pki_id)
        assert cluster.leaders(CH, org) == [lowest.name]
    cluster.ordering.submit(CH, 50, size=1000)
    assert cluster.net.run_until_true(lambda: cluster.all_at_height(CH, 51), timeout=60)
    assert same_ledgers(cluster)
    assert cluster.specs["peer0.org1msp"].ledger.get_blocks(CH, 0, 50) == cluster.ordering.chains[CH]


def test_leader_crash_re_election_and_catch_up_by_state_transfer() -> None:
    cluster = two_orgs(seed=2)
    assert cluster.net.run_until_true(lambda: one_leader_per_org(cluster), timeout=60)
    cluster.ordering.submit(CH, 50)
    assert cluster.net.run_until_true(lambda: cluster.all_at_height(CH, 51), timeout=60)
    (old,) = cluster.leaders(CH, "Org1MSP")
    cluster.crash(old)
    cluster.ordering.submit(CH, 50)
    live = [s for s in cluster.members(CH) if s.name != old]
    assert cluster.net.run_until_true(lambda: cluster.all_at_height(CH, 101, live), timeout=120)
    assert cluster.net.run_until_true(lambda: len(cluster.leaders(CH, "Org1MSP")) == 1, timeout=60)
    (new,) = cluster.leaders(CH, "Org1MSP")
    assert new != old
    assert cluster.specs[old].ledger.height(CH) == 51
    cluster.restart(old)
    assert cluster.net.run_until_true(lambda: cluster.all_at_height(CH, 101), timeout=120)
    restarted = cluster.core(old)
    assert isinstance(restarted, PeerCore)
    assert restarted.channels[CH].state.stats.requests_sent > 0  # it caught up by state transfer
    assert same_ledgers(cluster)


def test_peer_down_for_500_blocks_catches_up_within_its_buffer_bound() -> None:
    cluster = two_orgs(seed=3, per_org=2)
    assert cluster.net.run_until_true(lambda: one_leader_per_org(cluster), timeout=60)
    leaders = cluster.leaders(CH, "Org2MSP")
    follower = next(s for s in cluster.specs.values() if s.org == "Org2MSP" and s.name not in leaders)
    cluster.crash(follower.name)
    for _ in range(10):
        cluster.ordering.submit(CH, 50, size=200)
        cluster.net.run_for(1)
    others = [s for s in cluster.members(CH) if s is not follower]
    assert cluster.net.run_until_true(lambda: cluster.all_at_height(CH, 501, others), timeout=60)
    cluster.restart(follower.name)
    core = cluster.core(follower.name)
    assert isinstance(core, PeerCore)
    cluster.ordering.submit(CH, 5)  # gossip keeps flowing while it catches up
    assert cluster.net.run_until_true(lambda: cluster.all_at_height(CH, 506), timeout=300)
    state = core.channels[CH].state
    assert state.stats.buffer_high_water <= state.config.block_buffer_size
    assert same_ledgers(cluster)


def test_org_outside_the_channel_gets_no_block_by_any_path() -> None:
    cluster = Cluster(seed=4)
    for org in (*ORGS, "Org3MSP"):
        for i in range(2):
            cluster.add_peer(org, f"peer{i}", anchor=(i == 0))
    outsiders = {s.endpoint for s in cluster.specs.values() if s.org == "Org3MSP"}
    seen: list[tuple[str, str, bytes]] = []  # (kind, pull type, channel) of every message to the outsider org

    def wiretap(_src: str, dst: str, msg: pb.GossipMessage) -> bool:
        if dst in outsiders:
            kind = m.kind_of(msg)
            pull = m.PullMsgType.Name(getattr(msg, kind).msg_type) if kind in m.PULL_KINDS else ""
            seen.append((kind, pull, msg.channel))
        return False

    cluster.net.drop_rules.append(wiretap)
    cluster.create_channel(CH, ORGS)
    assert cluster.net.run_until_true(lambda: one_leader_per_org(cluster), timeout=60)
    cluster.ordering.submit(CH, 20)
    assert cluster.net.run_until_true(lambda: cluster.all_at_height(CH, 21), timeout=60)
    outsider = cluster.specs["peer0.org3msp"]
    insider = cluster.specs["peer0.org1msp"]
    # the outsider asks a channel peer for blocks directly
    request = m.state_request(CH.encode(), 0, 10, nonce=99)
    target = RemotePeer(insider.mcs.pki_id, insider.endpoint)
    cluster.net.invoke(outsider.endpoint, lambda c: c.node.send(request, [target]))
    cluster.net.run_for(30)
    kinds = {kind for kind, _, _ in seen}
    assert {"alive_msg", "mem_req"} <= kinds, "the outsider org is part of the network"
    leaks = [item for item in seen if item[2] or item[1] == "BLOCK_MSG" or item[0] in {"data_msg", "state_response"}]
    assert leaks == []
    assert outsider.ledger.height(CH) == 0
