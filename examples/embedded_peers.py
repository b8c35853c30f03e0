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
import socket
import tempfile
from pathlib import Path

from rumor.channelconfig import new_envelope, read_genesis
from rumor.config import load_config
from rumor.crypto.blocks import block_header_hash, new_block, sign_block
from rumor.crypto.identity import load_signing_identity
from rumor.network import init_network
from rumor.node import Peer
from rumor.orderer.config import load_orderer_config
from rumor.wire.pb.common import common_pb2

# Fabric's timings suit networks that run for months; an example wants answers within seconds.
OVERRIDES = {
    "RUMOR_PEER_GOSSIP_USELEADERELECTION": "false",
    "RUMOR_PEER_GOSSIP_ORGLEADER": "false",
    "RUMOR_PEER_GOSSIP_PULLINTERVAL": "1s",
    "RUMOR_PEER_GOSSIP_PUBLISHSTATEINFOINTERVAL": "1s",
    "RUMOR_PEER_GOSSIP_REQUESTSTATEINFOINTERVAL": "1s",
    "RUMOR_PEER_GOSSIP_STATE_CHECKINTERVAL": "2s",
}


def free_base_port() -> int:
    """A base port whose network-init ports (base..base+2, base+101..base+102) are free."""
    for base in range(27050, 60000, 250):
        ports = [base, base + 1, base + 2, base + 101, base + 102]
        try:
            for port in ports:
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free ports")


async def wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.1)
    print(f"  ok: {what}")


async def run(directory: Path, count: int) -> None:
    layout = init_network(directory, orgs=1, peers_per_org=2, base_port=free_base_port())
    genesis = layout.genesis.read_bytes()
    channel = read_genesis(genesis).name
    orderer = load_orderer_config(layout.orderer_config).general
    block_signer = load_signing_identity(Path(orderer.local_msp_dir), orderer.local_msp_id)
    alice_config, bob_config = (load_config(p.config, env=OVERRIDES) for p in layout.peers)

    async with Peer(alice_config) as alice, Peer(bob_config) as bob:
        print(f"alice: {alice.endpoint} ({alice.org}), operations and dashboard on http://{alice.ops.address}/")
        print(f"bob:   {bob.endpoint} ({bob.org}), operations and dashboard on http://{bob.ops.address}/")
        await alice.join_channel(genesis)
        await bob.join_channel(genesis)
        await wait_for(lambda: bob.peers() and alice.peers(), 30, "alice and bob know each other")
        await wait_for(lambda: alice.peers_of_channel(channel), 30, f"alice sees bob in channel {channel}")

        previous = await alice.get_block(channel, 0)
        assert previous is not None
        for number in range(1, count + 1):
            envelope = new_envelope(block_signer, channel, common_pb2.MESSAGE, f"hello number {number}".encode())
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
            members = ", ".join(f"{m.preferred_endpoint} ({m.org.decode()})" for m in peer.peers())
            print(
                f"{name} knows {members}; channel peers: {len(peer.peers_of_channel(channel))}; "
                f"leader: {peer.leader(channel).hex()[:16] if peer.leader(channel) else 'none (static)'}"
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
