"""Issue 3: two ``rumor peer start`` processes of two orgs, with generated crypto, complete the gossip handshake
over mutual TLS on loopback; and SIGINT / SIGTERM end a peer with exit code 0."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from polling import wait_for
from procnet import Cluster, make_network

from rumor.config import load_config
from rumor.network import NetworkLayout
from rumor.wire.pb.gossip import message_pb2 as pb


async def test_two_peers_handshake_over_tls(clusters: Callable[[NetworkLayout], Cluster], tmp_path: Path) -> None:
    cluster = clusters(make_network(tmp_path / "net", orgs=2, peers_per_org=1))
    first, second = cluster.peers
    assert first.org != second.org
    assert all(load_config(p.config, env={}).peer.tls.enabled for p in cluster.peers)
    await cluster.start_orderer()
    await cluster.start_peers()

    # Each learned the other (through the channel's anchor peers), holds it alive and has a connection to it.
    seen: dict[str, object] = {}

    async def each_knows_the_other() -> bool:
        statuses = await cluster.statuses(cluster.peers)
        seen.update(statuses)
        if any(s is None for s in statuses.values()):
            return False
        for me, other in ((first, second), (second, first)):
            mine, theirs = statuses[me.id], statuses[other.id]
            assert mine is not None and theirs is not None
            alive = [m for m in mine["membership"] if m["alive"] and m["pki_id"] == theirs["pki_id"]]
            if not alive or theirs["pki_id"] not in mine["connections"]:
                return False
            assert alive[0]["endpoint"] == other.endpoint and alive[0]["org"] == other.org
        return True

    await wait_for(
        each_knows_the_other, 30, "each peer holds the other alive and connected", describe=lambda: str(seen)
    )

    # The gossip port speaks TLS only: a plaintext client does not even get a Ping through.
    async with grpc.aio.insecure_channel(first.endpoint) as channel:
        ping = channel.unary_unary(
            "/gossip.Gossip/Ping",
            request_serializer=pb.Empty.SerializeToString,
            response_deserializer=pb.Empty.FromString,
        )
        with pytest.raises(grpc.aio.AioRpcError):
            await ping(pb.Empty(), timeout=5)

    # SIGINT and SIGTERM both stop a peer cleanly: exit code 0, no traceback (Cluster.stop checks both).
    await cluster.stop(first.id, signal.SIGINT)
    await cluster.stop(second.id, signal.SIGTERM)
    await cluster.stop("orderer", signal.SIGINT)
    for peer in cluster.peers:
        assert f"peer {peer.id} stopped" in next(p for p in cluster.procs if p.name == peer.id).stderr()
