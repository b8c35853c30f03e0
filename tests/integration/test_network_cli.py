"""Issue 5 and the operator's path: ``rumor network init``, ``rumor orderer start``, one ``rumor peer start`` per
peer and ``rumor submit``, exactly as a user types them, give a network (2 orgs x 3 peers + orderer) that
delivers every submitted payload to every peer in order; it survives kill -9 of an org's leader (another peer of
the org takes over and resumes from its ledger height, so no block is lost), and the killed peer, restarted,
catches up by state transfer."""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

from procnet import (
    Cluster,
    block_hash,
    orderer_height,
    payloads_of,
    read_chain,
    rumor_network_init,
    speed_up,
    verify_chain,
    wait_for,
)

from rumor import channelconfig
from rumor.crypto.identity import load_signing_identity
from rumor.network import NetworkLayout, free_base_port


async def test_cli_network_delivers_in_order_and_survives_losing_a_leader(
    clusters: Callable[[NetworkLayout], Cluster], tmp_path: Path
) -> None:
    base = free_base_port(6)
    layout = await rumor_network_init(tmp_path / "net", "--orgs", "2", "--peers-per-org", "3", "--base-port", str(base))
    layout = speed_up(layout)  # shorter gossip timings in each core.yaml, see procnet.FAST_GOSSIP
    cluster = clusters(layout)
    await cluster.start_orderer()  # rumor orderer start --config DIR/orderer/orderer.yaml
    await cluster.start_peers()  # rumor peer start --config DIR/peers/<id>/core.yaml --join DIR/channels/...
    await cluster.wait_converged(cluster.peers, 40)

    first = [f"first-{i:03d}" for i in range(50)]
    started = time.monotonic()
    await cluster.submit(first)  # rumor submit --network DIR -C mychannel first-000 ...
    h1 = await orderer_height(layout, 50)
    await cluster.wait_heights(cluster.peers, h1, 60)
    print(
        f"\nFIGURE 50 payloads ({h1 - 1} blocks) to all 6 peers (2 orgs x 3, TLS): "
        f"{time.monotonic() - started:.2f} s from submit start"
    )

    # kill -9 the leader of org1: another peer of org1 must lead, pull from the orderer from its own height on,
    # and every live peer must get the next 50 payloads.
    org = "Org1MSP"
    victim = await cluster.leader_of(org, 30)
    cluster.kill9(victim.id)
    second = [f"second-{i:03d}" for i in range(50)]
    await cluster.submit(second)
    h2 = await orderer_height(layout, 100)
    successor = await cluster.leader_of(org, 60, other_than=victim.id)
    assert successor.id != victim.id
    live = [p for p in cluster.peers if p.id != victim.id]
    await cluster.wait_heights(live, h2, 60)

    # Restarted (no --join: it rejoins from its ledger), the killed peer catches up. No block is cut after its
    # restart, so nothing reaches it by push: what it missed comes by state transfer (or, as long as the
    # blocks are still in its peers' gossip stores, by block pull; test_catchup covers a long gap).
    await cluster.start_peer(victim, join=[])
    await cluster.wait_heights(cluster.peers, h2, 60)
    status = await cluster.status(victim)
    assert status is not None
    chan = status["channels"][layout.channel]
    assert chan["state"]["requests_sent"] + chan["gossip"]["blocks_pulled"] > 0, chan

    # Every process stops cleanly on SIGINT or SIGTERM, leaders (with their deliver clients) included.
    leaders = {successor.id, (await cluster.leader_of("Org2MSP", 30)).id}
    for peer in cluster.peers:
        await cluster.stop(peer.id, signal.SIGINT if peer.id in leaders else signal.SIGTERM)
    await cluster.stop("orderer", signal.SIGINT)

    chains = {peer.id: read_chain(peer, layout.channel) for peer in cluster.peers}
    reference = chains[successor.id]
    assert len(reference) == h2
    verify_chain(layout, reference)
    assert [p for raw in reference[1:] for p in payloads_of(raw)] == [p.encode() for p in first + second]
    hashes = [block_hash(raw) for raw in reference]
    for peer_id, chain in chains.items():
        assert [block_hash(raw) for raw in chain] == hashes, peer_id


async def test_cli_peer_refuses_a_channel_of_other_orgs_and_rejoins_from_its_ledger(
    clusters: Callable[[NetworkLayout], Cluster], tmp_path: Path
) -> None:
    """`rumor peer start --join` of a genesis block whose channel does not admit the peer's org fails in one
    line with exit code 2; and a peer that joined once needs no --join again."""
    layout = await rumor_network_init(
        tmp_path / "net", "--orgs", "1", "--peers-per-org", "1", "--base-port", str(free_base_port(1))
    )
    cluster = clusters(speed_up(layout))
    peer = cluster.peers[0]

    # A channel of another org only (a genesis block made with the orderer's key, as `network init` makes them).
    crypto = layout.root / "crypto"
    org_msp = crypto / "peerOrganizations" / "org1.example.com" / "msp"
    orderer_msp = crypto / "ordererOrganizations" / "example.com" / "msp"
    other = channelconfig.channel_config(
        "otherchannel",
        [channelconfig.org_config("OtherMSP", org_msp)],
        [channelconfig.orderer_org_config("OrdererMSP", orderer_msp, [layout.orderer_endpoint])],
    )
    signer = load_signing_identity(
        crypto / "ordererOrganizations" / "example.com" / "orderers" / "orderer.example.com" / "msp", "OrdererMSP"
    )
    block = channelconfig.save_block(tmp_path / "other.block", channelconfig.genesis_block(other, signer))
    refused = cluster.spawn("refused", "peer", "start", "--config", str(peer.config), "--join", str(block))
    assert await refused.wait_exit(60) == 2
    lines = refused.stderr().strip().splitlines()
    assert lines[-1].startswith(f"error: --join {block}: channel otherchannel: org Org1MSP is not a member"), lines

    await cluster.start_peer(peer)
    await cluster.stop(peer.id, signal.SIGINT)
    await cluster.start_peer(peer, join=[])
    status = await wait_for(lambda: cluster.status(peer), 10, "status")
    assert status["channels"][layout.channel]["height"] == 1
    await cluster.stop(peer.id, signal.SIGTERM)


async def test_submit_wait_then_block_find_by_tx_id(
    clusters: Callable[[NetworkLayout], Cluster], tmp_path: Path
) -> None:
    """Where did my payload go: `rumor submit --wait` names the block, `rumor block find --tx` finds it again in
    a peer's ledger by its index."""
    layout = await rumor_network_init(
        tmp_path / "net", "--orgs", "1", "--peers-per-org", "1", "--base-port", str(free_base_port(1))
    )
    cluster = clusters(speed_up(layout))
    peer = cluster.peers[0]
    await cluster.start_orderer()
    await cluster.start_peer(peer)
    out = await cluster.run("submit", "--network", str(layout.root), "-C", layout.channel, "--wait", "one", "two")
    placed = dict(re.findall(r"^tx ([0-9a-f]{64}) in block (\d+)$", out, re.M))
    assert len(placed) == 2, out
    await cluster.wait_heights([peer], max(int(n) for n in placed.values()) + 1, 30)
    for tx_id, number in placed.items():
        found = await cluster.run("block", "find", "--tx", tx_id, "-C", layout.channel, "--network", str(layout.root))
        assert found.strip().startswith(f"tx {tx_id} in block {number} (envelope "), found
    missing = cluster.spawn(
        "find", "block", "find", "--tx", "ab" * 32, "-C", layout.channel, "--network", str(layout.root)
    )
    assert await missing.wait_exit(60) == 1
    assert "is not in the" in missing.stderr()
