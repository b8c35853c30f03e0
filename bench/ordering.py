"""Ordering throughput and cutter failover: solo against the etcd ordering service of 3 orderers on 3 etcd members.

    python bench/ordering.py [--sizes 1KB,100KB] [--seconds 10] [--writers 6] [--failovers 5] [--out bench/results]

Each network is written by `rumor network init` into a temporary directory (1 org, TLS on, no peer started: the
figure is the ordering service's), every orderer and etcd member a child process on loopback, batches of at most
500 envelopes or 200 ms (Fabric's count, a shorter timeout). The envelopes are signed before the clock starts, so
the client's signing is not measured; --writers Broadcast streams (spread over the orderers) keep up to 256
envelopes in flight each and count the SUCCESS answers.

- throughput, per payload size: envelopes/s acknowledged over --seconds, and blocks/s cut over the same time
  (heights read through Deliver from the first orderer when the clock starts and when it stops).
- failover (etcd only, lease TTL 2 s, etcd's smallest): a light load runs (one writer, one envelope at a time, so
  that blocks keep coming); the cutter (its key in etcd) is killed with SIGKILL; measured from the kill until
  (a) another orderer holds the leader key and (b) the first block the new cutter wrote is served by Deliver.
  Repeated --failovers times, the killed orderer restarted between rounds.

On a 2-core machine the 3 etcd members, 3 Python orderers and the client share two cores: the figures measure CPU
contention as much as the design. JSON and Markdown into --out (ordering.json, ordering.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from rumor.channelconfig import new_envelope  # noqa: E402
from rumor.crypto.identity import load_signing_identity  # noqa: E402
from rumor.etcdnet import EtcdProcess, etcd_binary  # noqa: E402
from rumor.network import NetworkLayout, free_base_port, init_network  # noqa: E402
from rumor.orderer.client import newest_block  # noqa: E402
from rumor.orderer.etcd import EtcdClient, EtcdError  # noqa: E402
from rumor.orderer.netdir import network_target  # noqa: E402
from rumor.sim.runner import git_commit, machine  # noqa: E402
from rumor.wire.pb.common import common_pb2  # noqa: E402
from rumor.wire.pb.orderer import ab_pb2  # noqa: E402
from rumor.wire.pb.rumorpb import etcdorder_pb2  # noqa: E402

RUMOR = str(Path(sys.executable).parent / "rumor")
IN_FLIGHT = 256


def parse_size(text: str) -> int:
    text = text.strip().upper()
    for suffix, factor in (("KB", 1024), ("MB", 1024 * 1024), ("B", 1)):
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * factor)
    return int(text)


class Net:
    """One network's processes (etcd members, orderers), started from its directory; killed by ``close``."""

    def __init__(self, layout: NetworkLayout) -> None:
        self.layout = layout
        self.etcd = [EtcdProcess(m.config) for m in layout.etcd]
        self.orderers: dict[str, subprocess.Popen[bytes]] = {}
        target = network_target(layout.root, layout.channel)
        self.tls = target.tls
        self.signer = load_signing_identity(target.msp_dir, target.mspid)
        self.etcd_client = EtcdClient([m.endpoint for m in layout.etcd], request_timeout=3) if layout.etcd else None

    @property
    def endpoints(self) -> list[str]:
        return self.layout.orderer_endpoints

    async def start(self) -> None:
        for member in self.etcd:
            member.start()
        if self.etcd_client is not None:
            await _until(self._etcd_up, 30, "etcd answers")
        for entry in self.layout.orderers:
            await self.start_orderer(entry.id)

    async def _etcd_up(self) -> bool:
        assert self.etcd_client is not None
        try:
            await self.etcd_client.get(b"/probe")
            return True
        except EtcdError:
            return False

    async def start_orderer(self, node: str) -> None:
        entry = next(o for o in self.layout.orderers if o.id == node)
        log = open(self.layout.root / f"{node}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [RUMOR, "--log-level", "warning", "orderer", "start", "--config", str(entry.config)],
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        assert proc.stdout is not None
        line = await asyncio.to_thread(proc.stdout.readline)
        if not line.startswith(b"orderer ready on"):
            raise RuntimeError(f"{node} did not start: {line!r}; see {self.layout.root / f'{node}.log'}")
        self.orderers[node] = proc

    def kill(self, node: str) -> None:
        proc = self.orderers.pop(node)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    async def height(self) -> int:
        return 1 + await newest_block(self.endpoints[0], self.signer, self.layout.channel, tls=self.tls)

    async def leader(self) -> str | None:
        assert self.etcd_client is not None
        kv = await self.etcd_client.get(f"/rumor/orderer/{self.layout.channel}/leader".encode())
        return kv.value.decode() if kv is not None else None

    async def close(self) -> None:
        for node in list(self.orderers):
            self.kill(node)
        for member in self.etcd:
            member.kill()
        if self.etcd_client is not None:
            await self.etcd_client.close()


async def _until(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise RuntimeError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.02)  # polling a condition


def _channel(endpoint: str, net: Net) -> grpc.aio.Channel:
    options = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]
    if net.tls is None:
        return grpc.aio.insecure_channel(endpoint, options=options)
    return grpc.aio.secure_channel(endpoint, net.tls.credentials(), options=options)


async def _writer(net: Net, endpoint: str, envelopes: list[bytes], stop_at: float, acked: list[int]) -> None:
    """Pipelined Broadcast: up to IN_FLIGHT envelopes unanswered; counts SUCCESS answers before ``stop_at``."""
    async with _channel(endpoint, net) as channel:
        call = channel.stream_stream(
            "/orderer.AtomicBroadcast/Broadcast",
            request_serializer=lambda b: b,
            response_deserializer=ab_pb2.BroadcastResponse.FromString,
        )()
        window = asyncio.Semaphore(IN_FLIGHT)
        done = asyncio.Event()

        async def read() -> None:
            while True:
                reply = await call.read()
                if reply is grpc.aio.EOF:
                    return
                window.release()
                if reply.status == common_pb2.SUCCESS and time.monotonic() < stop_at:
                    acked[0] += 1
                if time.monotonic() >= stop_at:
                    done.set()
                    return

        reader = asyncio.create_task(read())
        i = 0
        while not done.is_set() and time.monotonic() < stop_at:
            await window.acquire()
            await call.write(envelopes[i % len(envelopes)])
            i += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(reader, 10)
        call.cancel()


def _envelopes(net: Net, size: int, count: int) -> list[bytes]:
    # A pool each writer sends round-robin: an envelope sent twice is ordered twice, which a throughput figure
    # does not mind; signing fresh ones would measure the client's ECDSA instead of the ordering service.
    return [
        new_envelope(
            net.signer, net.layout.channel, common_pb2.MESSAGE, os.urandom(8) + b"." * (size - 8)
        ).SerializeToString()
        for _ in range(count)
    ]


async def throughput(net: Net, size: int, seconds: float, writers: int) -> dict[str, Any]:
    count = max(200, min(4000, int(400 * 1024 * 1024 / (size * max(1, writers)) / 4)))
    pools = [_envelopes(net, size, count) for _ in range(writers)]
    await asyncio.sleep(1.0)  # let the cutter settle after start: not a synchronization, a warm-up
    before = await net.height()
    acked = [0]
    start = time.monotonic()
    stop_at = start + seconds
    endpoints = net.endpoints

    async def height_at_stop() -> int:
        # read when the clock stops: envelopes still in flight then are cut later, and are not counted either
        await asyncio.sleep(max(0.0, stop_at - time.monotonic()))
        return await net.height()

    heights = asyncio.create_task(height_at_stop())
    await asyncio.gather(
        *(_writer(net, endpoints[k % len(endpoints)], pools[k], stop_at, acked) for k in range(writers))
    )
    elapsed = seconds
    after = await heights
    return {
        "payload_bytes": size,
        "seconds": elapsed,
        "envelopes": acked[0],
        "envelopes_per_s": acked[0] / elapsed,
        "blocks": after - before,
        "blocks_per_s": (after - before) / elapsed,
        "mb_per_s": acked[0] * size / elapsed / 1e6,
    }


async def failover(net: Net, rounds: int) -> list[dict[str, float]]:
    assert net.etcd_client is not None
    results = []
    stop = asyncio.Event()

    async def light_load() -> None:
        envelopes = _envelopes(net, 256, 50)
        i = 0
        while not stop.is_set():
            for endpoint in net.endpoints:
                if stop.is_set():
                    return
                with contextlib.suppress(grpc.aio.AioRpcError, TimeoutError):
                    async with _channel(endpoint, net) as channel:
                        call = channel.stream_stream(
                            "/orderer.AtomicBroadcast/Broadcast",
                            request_serializer=lambda b: b,
                            response_deserializer=ab_pb2.BroadcastResponse.FromString,
                        )()
                        while not stop.is_set():
                            await call.write(envelopes[i % len(envelopes)])
                            i += 1
                            async with asyncio.timeout(10):
                                reply = await call.read()
                            if reply is grpc.aio.EOF:
                                break

    records_key = f"/rumor/orderer/{net.layout.channel}/b/".encode()
    load = asyncio.create_task(light_load())
    try:
        for _ in range(rounds):
            cutter = await _until(net.leader, 30, "a cutter")
            await asyncio.sleep(1.0)  # a steady state before the kill (pace, not synchronization)
            killed_at = time.monotonic()
            net.kill(cutter)

            async def new_leader(cutter: str = cutter) -> str | None:
                try:
                    node = await net.leader()
                except EtcdError:
                    return None
                return node if node and node != cutter else None

            successor = await _until(new_leader, 60, "a new cutter")
            elected = time.monotonic() - killed_at

            async def new_block(successor: str = successor) -> bool:
                try:
                    kvs, _ = await net.etcd_client.range_all(records_key)  # type: ignore[union-attr]
                except EtcdError:
                    return False
                return any(etcdorder_pb2.BlockRecord.FromString(kv.value).writer == successor for kv in kvs)

            await _until(new_block, 60, "a block of the new cutter")
            first_block = time.monotonic() - killed_at
            results.append({"elected_s": elected, "first_block_s": first_block})
            print(f"  failover: new cutter after {elected:.2f}s, its first block after {first_block:.2f}s", flush=True)
            await net.start_orderer(cutter)
    finally:
        stop.set()
        load.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await load
    return results


def make(root: Path, consensus: str) -> NetworkLayout:
    etcd = 3 if consensus == "etcd" else 0
    return init_network(
        root,
        orgs=1,
        peers_per_org=1,
        base_port=free_base_port(1, orderers=max(1, etcd), etcd=etcd),
        orderers=3 if consensus == "etcd" else 1,
        consensus=consensus,
        lease_ttl=2,
        batch_timeout=0.2,
        max_message_count=500,
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1KB,100KB")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--writers", type=int, default=6)
    parser.add_argument("--failovers", type=int, default=5)
    parser.add_argument("--consensus", default="solo,etcd", help="which services to measure (solo, etcd)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    if etcd_binary() is None:
        raise SystemExit("etcd is not installed (apt-get install etcd-server)")
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    report: dict[str, Any] = {"machine": machine(), "commit": git_commit(), "throughput": [], "failover": []}
    for consensus in args.consensus.split(","):
        for size in sizes:
            tmp = Path(tempfile.mkdtemp(prefix=f"rumor-bench-ordering-{consensus}-"))
            net = Net(make(tmp / "net", consensus))
            try:
                await net.start()
                row = await throughput(net, size, args.seconds, args.writers)
                row["consensus"] = "solo" if consensus == "solo" else "etcd-3"
                report["throughput"].append(row)
                print(
                    f"{row['consensus']:6} {size // 1024:4d} KB: {row['envelopes_per_s']:8.0f} envelopes/s "
                    f"{row['blocks_per_s']:6.1f} blocks/s {row['mb_per_s']:6.1f} MB/s",
                    flush=True,
                )
            finally:
                await net.close()
                shutil.rmtree(tmp, ignore_errors=True)
    if args.failovers:
        tmp = Path(tempfile.mkdtemp(prefix="rumor-bench-failover-"))
        net = Net(make(tmp / "net", "etcd"))
        try:
            await net.start()
            report["failover"] = await failover(net, args.failovers)
        finally:
            await net.close()
            shutil.rmtree(tmp, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ordering.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "ordering.md").write_text(markdown(report))
    print(markdown(report))


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"machine: {report['machine']}; commit {report['commit']}; loopback, TLS on; batches of at most 500 envelopes, "
        "512 KB or 200 ms; the client signs before the clock starts",
        "",
        "| ordering service | payload | envelopes/s | blocks/s | MB/s |",
        "|---|---|---|---|---|",
    ]
    for row in report["throughput"]:
        lines.append(
            f"| {row['consensus']} | {row['payload_bytes'] // 1024} KB | {row['envelopes_per_s']:.0f} | "
            f"{row['blocks_per_s']:.1f} | {row['mb_per_s']:.1f} |"
        )
    runs = report["failover"]
    if runs:
        elected = [r["elected_s"] for r in runs]
        first = [r["first_block_s"] for r in runs]
        lines += [
            "",
            f"Cutter failover, etcd-3, lease TTL 2 s, SIGKILL of the cutter under a light load, {len(runs)} runs:",
            "",
            "| from the kill until | median | min | max |",
            "|---|---|---|---|",
            f"| another orderer holds the leader key | {statistics.median(elected):.2f} s | {min(elected):.2f} s | "
            f"{max(elected):.2f} s |",
            f"| the new cutter's first block is in etcd | {statistics.median(first):.2f} s | {min(first):.2f} s | "
            f"{max(first):.2f} s |",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    asyncio.run(main())
