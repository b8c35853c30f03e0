"""/metrics serves what a Fabric operator expects (Fabric's gossip families, observed, not only declared) and
rumor's own beside them: propagation, state transfer, comm bytes, connections, election changes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from procnet import Cluster, make_network

from rumor.network import NetworkLayout


async def test_metrics_move_with_the_network(clusters: Callable[[NetworkLayout], Cluster], tmp_path: Path) -> None:
    layout = make_network(tmp_path / "net", orgs=1, peers_per_org=2)
    cluster = clusters(layout)
    await cluster.start_orderer()
    await cluster.start_peers()
    channel = layout.channel
    leader = await cluster.leader_of("Org1MSP", 30)
    await cluster.submit(count=6)
    await cluster.wait_heights(layout.peers, 2, 30)
    for peer in layout.peers:
        committed = await cluster.metric(peer, "gossip_state_blocks_committed_total", channel=channel)
        assert committed >= 1
        # Fabric's commit-duration histogram was declared and never observed.
        assert await cluster.metric(peer, "gossip_state_commit_duration_count", channel=channel) >= committed
        assert await cluster.metric(peer, "gossip_block_propagation_seconds_count", channel=channel) >= 1
        assert await cluster.metric(peer, "gossip_comm_bytes_sent_total") > 0
        assert await cluster.metric(peer, "gossip_comm_bytes_received_total") > 0
        assert await cluster.metric(peer, "gossip_comm_connections") >= 1
        assert await cluster.metric(peer, "gossip_membership_total_peers_known") >= 1
    assert await cluster.metric(leader, "gossip_leader_election_changes_total", channel=channel) >= 1
    assert await cluster.metric(leader, "gossip_leader_election_leader", channel=channel) == 1
