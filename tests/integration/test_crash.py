"""Issue 5: a peer's ledger survives kill -9 in the middle of commits.

While the orderer cuts a steady stream of blocks, one peer is killed with SIGKILL again and again, each time while
its height is moving: first while it follows the stream by gossip, then each time soon after its restart, while it
commits the batches it catches up by state transfer. After each kill its SQLite ledger, opened as the kill left it,
holds an intact chain (its height equals the blocks stored, every block in order, chained to the one before and
signed by the orderer: no partial block); after each restart the peer catches up again. In the end every peer
holds the same chain.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

from polling import wait_for
from procnet import Cluster, Load, block_hash, make_network, orderer_height, read_chain, verify_chain

from rumor.network import NetworkLayout

KILLS = 4


async def test_ledger_survives_repeated_kill9_mid_commit(
    clusters: Callable[[NetworkLayout], Cluster], tmp_path: Path
) -> None:
    layout = make_network(tmp_path / "net", orgs=1, peers_per_org=3, max_message_count=1, batch_timeout=0.05)
    cluster = clusters(layout)
    await cluster.start_orderer()
    await cluster.start_peers()
    await cluster.wait_converged(cluster.peers, 40)
    leader = await cluster.leader_of("Org1MSP", 30)
    victim = next(p for p in cluster.peers if p != leader)

    async def victim_height() -> int | None:
        return (await cluster.heights([victim]))[victim.id]

    load = Load(layout).start()
    on_disk: list[int] = []
    try:
        for kill in range(KILLS):
            start = await wait_for(victim_height, 30, f"{victim.id} answers")

            async def grew(start: int = start) -> bool:
                height = await victim_height()
                return height is not None and height > start

            await wait_for(grew, 60, f"{victim.id} commits before kill {kill + 1}")
            cluster.kill9(victim.id)
            chain = read_chain(victim, layout.channel)  # fails unless the chain on disk is whole and chained
            verify_chain(layout, chain)
            assert len(chain) > start
            on_disk.append(len(chain))
            await cluster.start_peer(victim, join=[])
            status = await cluster.status(victim)
            assert status is not None and status["channels"][layout.channel]["height"] >= len(chain)
    finally:
        submitted = await load.stop()

    final = await orderer_height(layout, submitted)
    await cluster.wait_heights(cluster.peers, final, 90)
    print(f"\nkill -9 of {victim.id} at ledger heights {on_disk}; final height {final}")

    for peer in cluster.peers:
        await cluster.stop(peer.id, signal.SIGTERM)
    await cluster.stop("orderer")
    chains = [read_chain(peer, layout.channel) for peer in cluster.peers]
    assert all(len(chain) == final for chain in chains)
    verify_chain(layout, chains[0])
    assert len({tuple(block_hash(raw) for raw in chain) for chain in chains}) == 1
