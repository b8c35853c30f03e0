"""Issue 4: on real gRPC, five peer processes converge and disseminate the orderer's blocks to every one of them."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

from procnet import (
    Cluster,
    block_hash,
    make_network,
    payloads_of,
    read_chain,
    submit_direct,
    verify_chain,
    wait_for,
)

from rumor.network import NetworkLayout


async def test_five_peers_converge_and_disseminate(
    clusters: Callable[[NetworkLayout], Cluster], tmp_path: Path
) -> None:
    # One envelope per block, so that N submitted payloads make exactly N blocks.
    layout = make_network(tmp_path / "net", orgs=1, peers_per_org=5, max_message_count=1)
    cluster = clusters(layout)
    await cluster.start_orderer()
    await cluster.start_peers()
    await cluster.wait_converged(cluster.peers, 40)
    leader = await cluster.leader_of("Org1MSP", 30)

    first = [f"block {i:03d}" for i in range(20)]
    await cluster.submit(first)
    await cluster.wait_heights(cluster.peers, 21, 60)

    # A figure for the report, not an assertion: 50 more blocks, submitted from this process, from the first
    # envelope sent to the last peer at height (heights polled every 50 ms).
    more = [f"block {i:03d}" for i in range(20, 70)]
    started = time.monotonic()
    await submit_direct(layout, [p.encode() for p in more])
    submitted = time.monotonic()
    heights: dict[str, int | None] = {}

    async def all_there() -> bool:
        heights.update(await cluster.heights(cluster.peers))
        return all(h == 71 for h in heights.values())

    await wait_for(all_there, 60, "height 71 everywhere", describe=lambda: str(heights), interval=0.05)
    print(
        f"\nFIGURE 50 blocks (1 envelope each) to all 5 peers (1 org x 5, TLS): {time.monotonic() - started:.2f} s "
        f"from the first envelope sent to the last peer at height 71 (submission took {submitted - started:.2f} s)"
    )

    # each peer reports its latest commits with their times, which the dashboard turns into time-to-all
    for peer in cluster.peers:
        status = await cluster.status(peer)
        assert status is not None
        recent = status["channels"][layout.channel]["recent_commits"]
        assert [number for number, _ in recent] == list(range(71 - len(recent), 71))
        assert [when for _, when in recent] == sorted(when for _, when in recent)

    for peer in cluster.peers:
        await cluster.stop(peer.id, signal.SIGINT if peer == leader else signal.SIGTERM)
    await cluster.stop("orderer")

    chains = {peer.id: read_chain(peer, layout.channel) for peer in cluster.peers}
    reference = chains[leader.id]
    assert len(reference) == 71
    verify_chain(layout, reference)
    assert [p for raw in reference[1:] for p in payloads_of(raw)] == [p.encode() for p in first + more]
    for peer_id, chain in chains.items():
        assert [block_hash(b) for b in chain] == [block_hash(b) for b in reference], peer_id
        assert chain == reference, peer_id
