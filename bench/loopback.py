"""Figures 1-4 on real processes over loopback: N peers (2 orgs, TLS on), Fabric's dissemination and rumor's.

    python bench/loopback.py [--peers 8,16] [--sizes 10KB,100KB,1MB] [--blocks 20] [--rate 2]
                             [--modes fabric,enhanced] [--out bench/results]

For every N and block size, one network per mode, the modes interleaved (fabric, enhanced, fabric, ...
across the sizes) so that drifts of the machine hit both alike. Each network: `rumor network init` into a
temporary directory (one envelope per block, leader election with a 2 s startup grace period, every other
gossip setting Fabric's), the orderer as a child process, each peer a child process running rumor.node.Peer
(bench/loopback_peer.py) that reports its receive and commit times on the shared wall clock. When every peer
sees all others in the channel, blocks of the chosen size go to the orderer at --rate per second; the run
ends when every peer committed them all (or after 60 s).

Time zero of a block is the first moment any peer held it (its org leader, fed by the orderer). Figures as in
rumor.sim (time to all, receive latency, push coverage, amplification, duplicates), plus CPU seconds per peer.
"Loopback bytes" are all bytes the lo interface carried meanwhile (TLS, HTTP/2, TCP/IP headers, and the
orderer's deliveries to the two org leaders included). Writes bench/results/loopback.json and loopback.md.
Timings on a 2-core machine running 16 Python peers measure CPU contention as much as the protocol: read
them beside the simulator's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rumor.netup import LoadGenerator, rumor_command
from rumor.network import NetworkLayout, PeerEntry, free_base_port, init_network
from rumor.sim.runner import git_commit, machine, percentile
from rumor.sim.scenario import format_size, parse_size

HERE = Path(__file__).resolve().parent
BLOCK_KINDS = ("data_msg", "data_update", "state_response")


def loopback_bytes() -> int:
    """Bytes sent over the loopback interface so far, by every process (TCP/IP headers included)."""
    for line in Path("/proc/net/dev").read_text().splitlines():
        name, _, counters = line.partition(":")
        if name.strip() == "lo":
            return int(counters.split()[8])
    return 0


@dataclass
class PeerProc:
    """One peer process and what it reported so far (bench/loopback_peer.py's lines)."""

    name: str
    proc: asyncio.subprocess.Process
    spawned: float = 0.0
    """time.time() just before the process was spawned."""
    recv: dict[int, tuple[float, str]] = field(default_factory=dict)
    commit: dict[int, float] = field(default_factory=dict)
    stat: dict[str, Any] = field(default_factory=dict)
    final: dict[str, Any] | None = None
    ready: bool = False
    pki: str = ""
    alive: list[tuple[float, str]] = field(default_factory=list)
    """(time, PKI-ID hex) of each peer this one came to list alive (new, or back from dead)."""
    dead: list[tuple[float, str, str]] = field(default_factory=list)
    """(time, PKI-ID hex, reason) of each peer this one declared dead."""
    ready_at: float = 0.0
    reader: asyncio.Task[None] | None = None

    async def read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            ev = line.get("ev")
            if ev == "recv":
                self.recv.setdefault(int(line["seq"]), (float(line["t"]), str(line["via"])))
            elif ev == "commit":
                self.commit.setdefault(int(line["seq"]), float(line["t"]))
            elif ev == "stat":
                self.stat = line
            elif ev == "alive":
                self.alive.append((float(line["t"]), str(line["pki"])))
            elif ev == "dead":
                self.dead.append((float(line["t"]), str(line["pki"]), str(line.get("reason", ""))))
            elif ev == "ready":
                self.ready = True
                self.ready_at = time.time()
                self.pki = str(line.get("pki", ""))
            elif ev == "bytes":
                self.final = line


PEER_ENV = {**os.environ, "GRPC_VERBOSITY": "NONE"}


async def start_orderer(layout: NetworkLayout, logs: Path) -> asyncio.subprocess.Process:
    """The network's orderer as a child process, once it is listening (it prints a line then)."""
    orderer = await asyncio.create_subprocess_exec(
        *rumor_command(),
        "--log-level",
        "warning",
        "orderer",
        "start",
        "--config",
        str(layout.orderer_config),
        stdout=asyncio.subprocess.PIPE,
        stderr=(logs / "orderer.log").open("ab"),
        env=PEER_ENV,
    )
    assert orderer.stdout is not None
    try:
        await asyncio.wait_for(orderer.stdout.readline(), 30)
    except BaseException:
        await stop_process(orderer)
        raise
    return orderer


async def start_peer(entry: PeerEntry, layout: NetworkLayout, logs: Path) -> PeerProc:
    """One peer (bench/loopback_peer.py) as a child process, its stdout read into a PeerProc; its log (stderr)
    is appended to ``logs/<peer id>.log``. The child gets SIGTERM if this process dies."""
    spawned = time.time()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HERE / "loopback_peer.py"),
        str(entry.config),
        str(layout.genesis),
        str(os.getpid()),
        stdout=asyncio.subprocess.PIPE,
        stderr=(logs / f"{entry.id}.log").open("ab"),
        env=PEER_ENV,
    )
    peer = PeerProc(entry.id, proc, spawned=spawned)
    peer.reader = asyncio.create_task(peer.read())
    return peer


async def stop_process(proc: asyncio.subprocess.Process, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds; returns once the process is gone."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(proc.wait(), timeout)
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


async def stop_peers(peers: list[PeerProc], timeout: float = 20.0) -> None:
    """Stop every peer (SIGTERM all at once, so they write their final line; SIGKILL after ``timeout``),
    then let their readers finish."""
    for p in peers:
        if p.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                p.proc.terminate()
    await asyncio.gather(*(stop_process(p.proc, timeout) for p in peers))
    for p in peers:
        if p.reader is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(p.reader, 5)


def converged(peers: list[PeerProc], n: int, leaders: int = 2) -> bool:
    """Every peer sees the N - 1 others in the channel, and each org has its leader."""
    elected = sum(1 for p in peers if p.stat.get("leader"))
    return all(p.stat.get("channel_peers", 0) >= n - 1 for p in peers) and elected == leaders


def held(peers: list[PeerProc], seq: int) -> dict[str, float]:
    """When each peer first held block ``seq`` (received from gossip or committed; inf if never)."""
    return {p.name: min(p.recv.get(seq, (math.inf, ""))[0], p.commit.get(seq, math.inf)) for p in peers}


@dataclass
class Flowing:
    """What run_one's ``during`` callback is given the moment the load generator starts."""

    orderer: asyncio.subprocess.Process
    peers: list[PeerProc]
    load: LoadGenerator
    """Its ``blocks`` counts the blocks submitted so far (the orderer cuts one per submission)."""
    started: float
    """time.time() when the load generator was started."""


async def run_one(
    n: int,
    size: int,
    mode: str,
    blocks: int,
    rate: float,
    during: Callable[[Flowing], Coroutine[Any, Any, object]] | None = None,
) -> dict[str, Any]:
    """One network of ``n`` peers fed ``blocks`` blocks of ``size`` bytes at ``rate`` per second: its figures.

    ``during``, if given, runs as a task beside the load from the moment the load starts (given the processes
    and the load generator); the network stays up until it returned (after the blocks drained), and it is
    cancelled if the run fails. Its exceptions propagate."""
    with tempfile.TemporaryDirectory(prefix="rumor-loopback-") as tmp:
        root = Path(tmp) / "net"
        overrides: dict[str, object] = {"dissemination": mode, "election.startupGracePeriod": "2s"}
        layout = init_network(
            root,
            orgs=2,
            peers_per_org=n // 2,
            base_port=free_base_port(n),
            max_message_count=1,
            batch_timeout=0.05,
            gossip_overrides=overrides,
        )
        logs = root / "logs"
        logs.mkdir()
        orderer = await start_orderer(layout, logs)
        peers: list[PeerProc] = []
        side: asyncio.Task[object] | None = None
        try:
            for entry in layout.peers:
                peers.append(await start_peer(entry, layout, logs))
            started = time.time()
            while not converged(peers, n):
                if time.time() - started > 120:
                    raise SystemExit(f"N={n} {mode}: peers did not converge in 120 s (logs in {logs})")
                await asyncio.sleep(0.25)
            converge_s = time.time() - started
            await asyncio.sleep(1.0)
            lo_before = loopback_bytes()
            load = LoadGenerator(root, layout.channel, rate, size)
            load_task = asyncio.create_task(load.run())
            if during is not None:
                side = asyncio.create_task(during(Flowing(orderer, peers, load, time.time())))
            while load.blocks < blocks:
                await asyncio.sleep(0.01)
            load_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await load_task
            last = blocks  # the genesis block is 0
            deadline = time.time() + 60
            while time.time() < deadline and not all(last in p.commit for p in peers):
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)
            lo_bytes = loopback_bytes() - lo_before
            if side is not None:
                await side
        finally:
            if side is not None and not side.done():
                side.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await side
            await stop_peers(peers)
            await stop_process(orderer)
    row = figures(n, size, mode, blocks, rate, peers, converge_s)
    row["loopback_bytes_per_block"] = round(lo_bytes / blocks)
    return row


def figures(
    n: int, size: int, mode: str, blocks: int, rate: float, peers: list[PeerProc], converge_s: float
) -> dict[str, Any]:
    # The org leaders take every block from the orderer: they hold it from time zero (about), not by gossip.
    leaders = {p.name for p in peers if p.stat.get("leader")}
    tta: list[float] = []
    lat: list[float] = []
    pushed_all = gossip_all = 0
    pulled = transferred = incomplete = 0
    for seq in range(1, blocks + 1):
        times_held = held(peers, seq)
        t0 = min(times_held.values())
        if math.isinf(t0):
            incomplete += 1
            continue
        first = min(times_held, key=lambda k: times_held[k])
        times = [t - t0 for name, t in times_held.items() if name != first and not math.isinf(t)]
        if len(times) < n - 1:
            incomplete += 1
        else:
            tta.append(max(times))
        lat.extend(times)
        vias = []
        for p in peers:
            if p.name == first or p.name in leaders:
                continue
            got = p.recv.get(seq)
            commit = p.commit.get(seq, math.inf)
            via = "state" if got is None or commit < got[0] else got[1]
            vias.append(via)
        pushed_all += all(v == "push" for v in vias)
        gossip_all += all(v in ("push", "advert") for v in vias)
        pulled += vias.count("pull")
        transferred += vias.count("state")
    finals = [p.final or {} for p in peers]
    by_kind: dict[str, int] = {}
    for f in finals:
        for kind, count in (f.get("by_kind") or {}).items():
            by_kind[kind] = by_kind.get(kind, 0) + count
    payload = sum(by_kind.get(k, 0) for k in BLOCK_KINDS)
    wire_total = sum(by_kind.values())
    copies = sum(int(f.get("copies", 0)) for f in finals)
    cpu = [float(f.get("cpu_s", math.nan)) for f in finals]
    block_wire = size + 600  # envelope, header and orderer signature around the payload
    receivers = n - max(len(leaders), 1)
    return {
        "scenario": "loopback",
        "peers": n,
        "orgs": 2,
        "block_size": size,
        "blocks": blocks,
        "rate_per_s": rate,
        "mode": mode,
        "seed": None,
        "tls": True,
        "converge_s": round(converge_s, 2),
        "time_to_all_p50_s": round(percentile(tta, 50), 4) if tta else None,
        "time_to_all_p99_s": round(percentile(tta, 99), 4) if tta else None,
        "time_to_all_max_s": round(max(tta), 4) if tta else None,
        "receive_latency_p50_s": round(percentile(lat, 50), 4) if lat else None,
        "receive_latency_p99_s": round(percentile(lat, 99), 4) if lat else None,
        "incomplete_blocks": incomplete,
        "push_coverage": round(pushed_all / blocks, 4),
        "gossip_coverage": round(gossip_all / blocks, 4),
        "pulled_per_block": round(pulled / blocks, 3),
        "transferred_per_block": round(transferred / blocks, 3),
        "amplification": round(payload / (blocks * receivers * block_wire), 3),
        "wire_bytes_per_block": round(wire_total / blocks),
        "control_bytes_per_block": round((wire_total - payload) / blocks),
        "bytes_by_kind": dict(sorted(by_kind.items())),
        "duplicates_per_peer": round(max(0, copies - blocks * receivers) / (blocks * receivers), 3),
        "leaders": sorted(leaders),
        "cpu_s_per_peer_mean": round(statistics.mean(cpu), 2) if cpu else None,
        "cpu_s_per_peer_max": round(max(cpu), 2) if cpu else None,
        "machine": machine(),
        "commit": git_commit(),
    }


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| N | block | mode | time to all p50 / p99 / max (s) | receive p50 / p99 (s) | push / gossip coverage "
        "| pulled / state per block | amplification | MB on wire per block | duplicates per peer | CPU s per peer |"
    )
    out = [head, "|" + "---|" * 11]

    def s(x: Any) -> str:
        return "-" if x is None else f"{x:.3f}"

    for r in rows:
        out.append(
            f"| {r['peers']} | {format_size(r['block_size'])} | {r['mode']} | "
            f"{s(r['time_to_all_p50_s'])} / {s(r['time_to_all_p99_s'])} / {s(r['time_to_all_max_s'])} | "
            f"{s(r['receive_latency_p50_s'])} / {s(r['receive_latency_p99_s'])} | "
            f"{r['push_coverage'] * 100:.0f} % / {r['gossip_coverage'] * 100:.0f} % | "
            f"{r['pulled_per_block']:.2f} / {r['transferred_per_block']:.2f} | {r['amplification']:.2f} | "
            f"{r['wire_bytes_per_block'] / 1e6:.2f} | {r['duplicates_per_peer']:.2f} | {r['cpu_s_per_peer_mean']} |"
        )
    return "\n".join(out)


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    modes = args.modes.split(",")
    for n in (int(x) for x in args.peers.split(",")):
        for index, size in enumerate(parse_size(x) for x in args.sizes.split(",")):
            order = modes if index % 2 == 0 else list(reversed(modes))
            for mode in order:
                began = time.time()
                row = await run_one(n, size, mode, args.blocks, args.rate)
                row["wall_s"] = round(time.time() - began, 1)
                rows.append(row)
                print(
                    f"N={n} {format_size(size)} {mode}: time to all p50 {row['time_to_all_p50_s']} s, "
                    f"p99 {row['time_to_all_p99_s']} s, amplification {row['amplification']}, "
                    f"incomplete {row['incomplete_blocks']} ({row['wall_s']} s)",
                    flush=True,
                )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", default="8,16")
    parser.add_argument("--sizes", default="10KB,100KB,1MB")
    parser.add_argument("--blocks", type=int, default=20)
    parser.add_argument("--rate", type=float, default=2.0, help="blocks per second")
    parser.add_argument("--modes", default="fabric,enhanced")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    rows = asyncio.run(main_async(args))
    header = f"machine: {machine()}; commit {git_commit()}; loopback, TLS on, 2 orgs"
    header += f"; {args.blocks} blocks at {args.rate}/s"
    print()
    print(header)
    print(table(rows))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "loopback.json").write_text(json.dumps({"runs": rows}, indent=2) + "\n")
    (args.out / "loopback.md").write_text(f"*{header}*\n\n" + table(rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
