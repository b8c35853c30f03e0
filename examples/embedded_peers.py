"""Two rumor peers inside one Python program: the application is the block source, gossip does the rest.

    .venv/bin/python examples/embedded_peers.py [--blocks 5] [--keep DIR]

What it does:
  1. writes a throwaway network (crypto material, core.yaml per peer, a channel's genesis block) with
     ``rumor.network.init_network``, one org of two peers;
  2. starts both peers in this process with ``async with Peer(config)`` and joins them to the channel;
  3. makes blocks signed by the ordering org's identity (as an ordering service would) and hands them to
     alice with ``add_payload``; gossip carries them to bob, who reads them with ``async for block in
     peer.blocks(channel)``;
  4. prints what each peer knows: heights, members, the channel's peers.

Both peers run with ``useLeaderElection: false`` and ``orgLeader: false`` (set here through ``RUMOR_*``
overrides), so neither pulls from an ordering service: the application feeds the blocks. With a real
ordering service (``rumor orderer start``), leave the generated core.yaml as it is and the elected leader of
each org pulls the blocks itself.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from rumor import (
    HeaderType,
    Peer,
    block_header_hash,
    free_base_port,
    init_network,
    load_config,
    load_orderer_config,
    load_signing_identity,
    new_block,
    new_envelope,
    read_genesis,
    sign_block,
)

# Fabric's timings suit networks that run for months; an example wants answers within seconds.
OVERRIDES = {
    "RUMOR_PEER_GOSSIP_USELEADERELECTION": "false",
    "RUMOR_PEER_GOSSIP_ORGLEADER": "false",
    "RUMOR_PEER_GOSSIP_PULLINTERVAL": "1s",
    "RUMOR_PEER_GOSSIP_PUBLISHSTATEINFOINTERVAL": "1s",
    "RUMOR_PEER_GOSSIP_REQUESTSTATEINFOINTERVAL": "1s",
    "RUMOR_PEER_GOSSIP_STATE_CHECKINTERVAL": "2s",
}


async def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """Poll ``predicate`` until it is true (membership forms over a few gossip rounds), at most ``timeout`` s."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.1)
    print(f"  ok: {what}")


async def run(directory: Path, count: int) -> None:
    layout = init_network(directory, orgs=1, peers_per_org=2, base_port=free_base_port(2))
    genesis = layout.genesis.read_bytes()
    channel = read_genesis(genesis).name
    orderer = load_orderer_config(layout.orderer_config).general
    block_signer = load_signing_identity(Path(orderer.local_msp_dir), orderer.local_msp_id)
    alice_config, bob_config = (load_config(p.config, env=OVERRIDES) for p in layout.peers)

    async with Peer(alice_config) as alice, Peer(bob_config) as bob:
        for name, peer in (("alice", alice), ("bob", bob)):
            print(f"{name}: {peer.endpoint} ({peer.org}), dashboard on http://{peer.operations_address}/")
        await alice.join_channel(genesis)
        await bob.join_channel(genesis)
        await wait_for(lambda: bob.peers() and alice.peers(), 30, "alice and bob know each other")
        await wait_for(lambda: alice.peers_of_channel(channel), 30, f"alice sees bob in channel {channel}")

        previous = await alice.get_block(channel, 0)
        assert previous is not None
        for number in range(1, count + 1):
            envelope = new_envelope(block_signer, channel, HeaderType.MESSAGE, f"hello number {number}".encode())
            block = new_block(number, block_header_hash(previous.header), [envelope.SerializeToString()])
            sign_block(block, block_signer)  # what makes the peers accept it: the ordering org's signature
            await alice.add_payload(channel, block)
            previous = block
        print(f"alice added blocks 1..{count}; her height is {alice.height(channel)}")

        async with asyncio.timeout(60):
            async for block in bob.blocks(channel, start=1):
                print(f"  bob received block {block.header.number} ({len(block.data.data)} envelope)")
                if block.header.number == count:
                    break
        print(f"bob's height is {bob.height(channel)}")
        for name, peer in (("alice", alice), ("bob", bob)):
            members = ", ".join(
                f"{m.name or '(unnamed)'} at {m.endpoint} ({m.org}, pki id {m.pki_id[:16]})" for m in peer.peers()
            )
            leader = peer.leader(channel)
            print(
                f"{name} knows {members}; channel peers: {len(peer.peers_of_channel(channel))}; "
                f"leader: {leader.name if leader else 'none (static leadership, the application feeds blocks)'}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=5, help="how many blocks to make (default 5)")
    parser.add_argument("--keep", type=Path, help="write the network to this (empty) directory and keep it")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    directory = args.keep or Path(tempfile.mkdtemp(prefix="rumor-example-")) / "net"
    try:
        asyncio.run(run(directory, args.blocks))
    finally:
        if args.keep is None:
            shutil.rmtree(directory.parent, ignore_errors=True)
    print("done")


if __name__ == "__main__":
    main()
