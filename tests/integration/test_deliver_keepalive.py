"""A leader whose connection to the orderer died silently resumes pulling blocks once the network heals.

Finding of the faults test on several hosts (test_several_hosts.py, seed 4): an org's leader cut off from every
other node for 60 s got nothing more from the orderer after the partition healed, and when the other org was cut
off next, its org fell 60 s behind. While the partition dropped its packets, the orderer gave up the connection
(gRPC servers give up after 20 s of unanswered sends) and its reset was lost; the peer's side stayed ESTABLISHED
and silent, and with nothing to send, its TCP never found out. The deliver stream waited forever. The fix is
Fabric's: the deliver client pings a silent orderer (peer.keepalive.deliveryClient, 60 s and 20 s by default, 5 s
here) and drops an unanswered connection, which makes the client reconnect; the orderer accepts such pings
(General.Keepalive.ServerMinInterval).

Here a single peer (its org's leader, with no other peer to get blocks from) is cut off until the orderer has no
connection from it left; after healing, it must reach the orderer's height.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from netns import Host, Subnet
from polling import wait_for
from procnet import Cluster, Load, fast_keepalive, orderer_tip, rumor_network_init, speed_up

from rumor.network import NetworkLayout


def connections_from(orderer: Host, peer: Host, port: int) -> list[str]:
    """The orderer's TCP connections on ``port`` with ``peer``'s address, as ``ss`` lists them."""
    listed = orderer.run("ss", "-Htn", "state", "all", f"( sport = :{port} )").stdout.splitlines()
    return [line for line in listed if f"{peer.address}]:" in line or f" {peer.address}:" in line]


def quiet(peer: Host, port: int) -> bool:
    """``peer``'s connection to the orderer's ``port`` holds no byte unsent or unacknowledged."""
    listed = peer.run("ss", "-Htni", "state", "established", f"( dport = :{port} )").stdout
    lines = listed.splitlines()
    return bool(lines) and lines[0].split()[1] == "0" and "unacked" not in listed


async def test_leader_resumes_after_its_orderer_connection_died_in_a_partition(
    subnet: Subnet, clusters: Callable[[NetworkLayout], Cluster], tmp_path: Path
) -> None:
    orderer, peer_host = subnet.add_host("orderer.example.com"), subnet.add_host("peer0.org1.example.com")
    layout = await rumor_network_init(
        tmp_path / "net", "--orgs", "1", "--peers-per-org", "1",
        "--host", f"orderer.example.com={orderer.address}", "--host", f"peer0.org1.example.com={peer_host.address}",
    )  # fmt: skip
    layout = speed_up(layout)
    fast_keepalive(layout)
    cluster = clusters(layout)
    cluster.wrappers.update({"orderer": orderer.wrap(), "peer0.org1.example.com": peer_host.wrap()})
    (peer,) = layout.peers
    port = int(layout.orderer_endpoint.rsplit(":", 1)[1])
    await cluster.start_orderer()
    await cluster.start_peer(peer)
    load = Load(layout, per_round=1, pause=0.2).start()
    try:
        # It leads, and pulls over a connection of its own.
        await wait_for(lambda: connections_from(orderer, peer_host, port), 60, f"{peer.id} connects to the orderer")
        await cluster.wait_heights([peer], max(2, await orderer_tip(layout)), 60)
        # Quiet first: the load stopped, every block received, nothing of the peer's unacknowledged. A peer with a
        # segment in flight when the cut comes would resend it after healing, be answered with a reset and
        # reconnect by luck; with nothing to send, only a keepalive ping can find the connection dead.
        await load.stop()
        await cluster.wait_heights([peer], await orderer_tip(layout), 60)
        await wait_for(lambda: quiet(peer_host, port), 30, f"{peer.id} has nothing unacknowledged")
        subnet.partition([peer_host])
        load = Load(layout, per_round=1, pause=0.2).start()  # blocks for the cut-off peer: the orderer's sends

        async def given_up() -> bool:
            return not connections_from(orderer, peer_host, port)

        # Until the orderer has dropped the peer's connection (its reset lost in the partition); blocks go on.
        await wait_for(given_up, 120, "the orderer gives up the partitioned peer's connection")
        subnet.heal()
        target = await orderer_tip(layout)
        seen: dict[str, int | None] = {}

        async def caught_up() -> bool:
            seen.update(await cluster.heights([peer]))
            return (seen[peer.id] or 0) >= target

        await wait_for(caught_up, 60, f"{peer.id} pulls again up to {target}", describe=lambda: str(seen))
    finally:
        await load.stop()
