"""Issue 5: a peer stopped while 500 blocks were cut catches up by state transfer after its restart, and its
in-order payload buffer never holds more than blockBufferSize blocks, though new blocks keep being pushed to it
far ahead of its ledger while it catches up."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

from polling import wait_for
from procnet import Cluster, Load, block_hash, make_network, orderer_height, read_chain

from rumor.network import NetworkLayout

BEHIND = 500


async def test_restarted_peer_catches_up_500_blocks_within_its_buffer_bound(
    clusters: Callable[[NetworkLayout], Cluster], tmp_path: Path
) -> None:
    layout = make_network(tmp_path / "net", orgs=1, peers_per_org=3, max_message_count=1, batch_timeout=0.05)
    cluster = clusters(layout)
    await cluster.start_orderer()
    await cluster.start_peers()
    await cluster.wait_converged(cluster.peers, 40)
    leader = await cluster.leader_of("Org1MSP", 30)
    laggard = next(p for p in cluster.peers if p != leader)
    others = [p for p in cluster.peers if p != laggard]

    await cluster.submit(count=3)
    await cluster.wait_heights(cluster.peers, 4, 30)
    await cluster.stop(laggard.id, signal.SIGTERM)
    await cluster.submit(count=BEHIND)
    behind_height = 4 + BEHIND
    await cluster.wait_heights(others, behind_height, 120)

    await cluster.start_peer(laggard, join=[])
    # New blocks keep coming while it catches up: pushed to it far ahead of its ledger, they must be dropped,
    # not buffered.
    load = Load(layout, per_round=1, pause=0.05).start()
    samples: list[tuple[float, int]] = []  # (time, height) of the laggard
    high_water: list[int] = []
    bound: list[int] = []

    async def caught_up() -> bool:
        status = await cluster.status(laggard)
        if status is None:
            return False
        chan = status["channels"][layout.channel]
        samples.append((time.monotonic(), chan["height"]))
        high_water.append(chan["buffer_high_water"])
        bound.append(chan["block_buffer_size"])
        assert chan["buffer_size"] <= chan["block_buffer_size"], chan
        gauge = await cluster.metric(laggard, "gossip_payload_buffer_size", channel=layout.channel)
        assert gauge <= chan["block_buffer_size"]
        return bool(chan["height"] >= behind_height)

    try:
        await wait_for(
            caught_up,
            120,
            f"{laggard.id} catches up to {behind_height}",
            describe=lambda: str(samples[-1:]),
            interval=0.05,
        )
    finally:
        submitted = await load.stop()
    final = await orderer_height(layout, 3 + BEHIND + submitted)
    await cluster.wait_heights(cluster.peers, final, 60)
    assert await caught_up()

    status = await cluster.status(laggard)
    assert status is not None
    state = status["channels"][layout.channel]["state"]
    assert bound[0] == 20  # state.blockBufferSize, the default
    assert max(high_water) <= bound[0], high_water
    assert state["buffer_high_water"] <= bound[0]
    assert state["requests_sent"] >= BEHIND // 10  # batches of state.batchSize (10) blocks

    # A figure for the report: the catch-up rate, from the first sample above the restart height to the first at
    # or above the target (heights polled every 50 ms).
    t0, h0 = next((t, h) for t, h in samples if h > 4)
    t1, h1 = next((t, h) for t, h in samples if h >= behind_height)
    print(
        f"\nFIGURE catch-up by state transfer (1 org x 3, TLS, batchSize 10): {h1 - h0} blocks in {t1 - t0:.2f} s "
        f"= {(h1 - h0) / (t1 - t0):.0f} blocks/s, {BEHIND} behind at restart, while ~20 blocks/s kept coming; "
        f"buffer high-water {max(high_water)} of {bound[0]}; pushed blocks dropped as too far ahead: "
        f"{state['too_far_ahead']}"
    )

    for peer in cluster.peers:
        await cluster.stop(peer.id)
    await cluster.stop("orderer")
    chains = [read_chain(peer, layout.channel) for peer in cluster.peers]
    assert all(len(chain) == final for chain in chains)
    assert len({tuple(block_hash(raw) for raw in chain) for chain in chains}) == 1
