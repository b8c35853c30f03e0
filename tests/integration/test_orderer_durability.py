"""SUCCESS means durable: an orderer killed with SIGKILL at random moments under load loses no envelope it
acknowledged, and orders none twice (finding: 9 of 121 acknowledged envelopes were in no block)."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import grpc
from procnet import Cluster, make_network

from rumor import channelconfig as cc
from rumor.crypto.identity import load_signing_identity
from rumor.network import NetworkLayout
from rumor.orderer.client import DeliverClient
from rumor.orderer.netdir import network_target
from rumor.wire.pb.common import common_pb2
from rumor.wire.pb.orderer import ab_pb2


async def _flood(
    address: str, tls, signer, channel: str, count: int, stop_after: int, kill: Callable[[], None]
) -> list[str]:  # type: ignore[no-untyped-def]
    """Pipeline ``count`` envelopes on one Broadcast stream; kill the orderer after ``stop_after`` answers.
    The tx ids answered SUCCESS (the i-th answer is the i-th envelope's)."""
    envelopes = [cc.new_envelope(signer, channel, common_pb2.MESSAGE, f"load {i}".encode()) for i in range(count)]
    tx_ids = [cc.open_envelope(e).tx_id for e in envelopes]
    acked: list[str] = []
    channel_ = grpc.aio.secure_channel(address, tls.credentials()) if tls else grpc.aio.insecure_channel(address)
    try:
        call = channel_.stream_stream(
            "/orderer.AtomicBroadcast/Broadcast",
            request_serializer=common_pb2.Envelope.SerializeToString,
            response_deserializer=ab_pb2.BroadcastResponse.FromString,
        )()

        async def write() -> None:
            with contextlib.suppress(Exception):
                for envelope in envelopes:
                    await call.write(envelope)

        writer = asyncio.ensure_future(write())
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
            async with asyncio.timeout(60):
                while len(acked) < count:
                    reply = await call.read()
                    if reply is grpc.aio.EOF:
                        break
                    if reply.status != common_pb2.SUCCESS:
                        break
                    acked.append(tx_ids[len(acked)])
                    if len(acked) == stop_after:
                        kill()
        writer.cancel()
        call.cancel()
    finally:
        await channel_.close()
    return acked


async def test_orderer_killed_under_load_loses_no_acknowledged_envelope(
    clusters: Callable[[NetworkLayout], Cluster], tmp_path: Path
) -> None:
    layout = make_network(tmp_path / "net", orgs=1, peers_per_org=1)
    cluster = clusters(layout)
    target = network_target(layout.root, layout.channel)
    signer = load_signing_identity(target.msp_dir, target.mspid)
    rng = random.Random(7)
    acknowledged: list[str] = []
    for _round in range(4):
        await cluster.start_orderer()
        acked = await _flood(
            target.endpoint, target.tls, signer, layout.channel, 600, rng.randint(20, 400),
            lambda: cluster.kill9("orderer"),
        )  # fmt: skip
        assert acked, "the orderer acknowledged nothing before it was killed"
        acknowledged += acked
    await cluster.start_orderer()
    # Every acknowledged envelope reaches a block (those recovered from the pending queue are cut at start).
    reader = DeliverClient(target.endpoint, signer, tls=target.tls)
    seen: Counter[str] = Counter()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(60), contextlib.aclosing(reader.deliver(layout.channel, 1)) as blocks:
            async for block in blocks:
                for data in block.data.data:
                    seen[cc.open_envelope(data).tx_id] += 1
                if all(tx in seen for tx in acknowledged):
                    break
    missing = [tx for tx in acknowledged if tx not in seen]
    assert missing == [], f"{len(missing)} of {len(acknowledged)} acknowledged envelopes lost"
    twice = [tx for tx, n in seen.items() if n > 1]
    assert twice == [], f"{len(twice)} envelopes ordered twice"
