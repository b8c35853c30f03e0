"""rumor beside py-libp2p gossipsub on loopback: same N, same payloads, each node its own process.

    python bench/gossipsub.py [--peers 8,16] [--sizes 10KB,100KB,1MB] [--messages 20] [--rate 2]
                              [--rumor-modes fabric,enhanced] [--out bench/results]

py-libp2p (PyPI libp2p 0.8.1) goes into its own virtual environment, bench/.venv-libp2p, made on first use
with the ordinary pip client. For each N and size the systems run one after the other, in alternating order
(rumor fabric, rumor enhanced, gossipsub, then the reverse for the next size), in this one invocation.

gossipsub: node 0 publishes --messages messages of the size at --rate per second (paced: py-libp2p's
publish() never blocks and drops silently past 32 queued messages per peer); every node subscribes to the
topic. Each node dials every earlier node; the mesh settles for 3 heartbeats before the first message. Its
settings are those bench/results/README.md names (see bench/gossipsub_node.py). Time zero is the publish call.
rumor: as bench/loopback.py (2 orgs, TLS on, one block per message; time zero is the first peer holding it).

Figures per run: delivered fraction, time until all nodes hold a message (p50/p99 over messages, over the
messages every node got), bytes on the wire per message, CPU seconds per node (whole run: start, mesh or
membership, messages). Bytes on the wire: everything the loopback interface carried while the messages
flowed (/proc/net/dev), so encryption (noise / TLS), framing (yamux / HTTP/2), TCP/IP headers and control
traffic are all in, for both systems alike; rumor's also holds the orderer's delivery of each block to the
two org leaders. Ratios are gossipsub / rumor enhanced.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from loopback import loopback_bytes
from loopback import run_one as run_rumor
from loopback import table as loopback_table

from rumor.sim.runner import git_commit, machine, percentile
from rumor.sim.scenario import format_size, parse_size

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv-libp2p"
LIBP2P = "libp2p==0.8.1"


def libp2p_python() -> Path:
    """The interpreter of bench/.venv-libp2p, made (and libp2p installed) when missing."""
    python = VENV / "bin" / "python"
    if not python.exists():
        print(f"installing {LIBP2P} into {VENV} (once)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", LIBP2P], check=True)
    return python


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Node:
    def __init__(self, index: int, proc: asyncio.subprocess.Process) -> None:
        self.index = index
        self.proc = proc
        self.recv: dict[int, float] = {}
        self.published: dict[int, float] = {}
        self.addr = ""
        self.done: dict[str, Any] | None = None
        self.printed = 0
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            self.printed += len(raw)
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            ev = line.get("ev")
            if ev == "recv":
                self.recv.setdefault(int(line["seq"]), float(line["t"]))
            elif ev == "published":
                self.published[int(line["seq"])] = float(line["t"])
            elif ev == "done":
                self.done = line
            else:
                await self.events.put(line)

    def tell(self, obj: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(obj) + "\n").encode())


async def run_gossipsub(python: Path, n: int, size: int, messages: int, rate: float) -> dict[str, Any]:
    nodes: list[Node] = []
    readers = []
    logs = HERE / "results" / "gossipsub-logs"
    logs.mkdir(parents=True, exist_ok=True)
    try:
        for i in range(n):
            proc = await asyncio.create_subprocess_exec(
                str(python),
                str(HERE / "gossipsub_node.py"),
                str(i),
                str(free_port()),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=(logs / f"node{i}.log").open("wb"),
            )
            node = Node(i, proc)
            nodes.append(node)
            readers.append(asyncio.create_task(node.read()))
        for node in nodes:
            node.addr = (await asyncio.wait_for(node.events.get(), 60))["addr"]
        for node in nodes:
            node.tell({"connect": [other.addr for other in nodes[: node.index]]})
        for node in nodes:
            await asyncio.wait_for(node.events.get(), 60)
        await asyncio.sleep(3.0)  # three heartbeats: the mesh settles
        lo_before = loopback_bytes()
        nodes[0].tell({"publish": messages, "size": size, "rate": rate})
        deadline = time.time() + messages / rate + 30
        others = nodes[1:]
        while time.time() < deadline and not all(len(node.recv) >= messages for node in others):
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        lo_bytes = loopback_bytes() - lo_before
        for node in nodes:
            node.tell({"stop": True})
        for node in nodes:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(node.proc.wait(), 15)
    finally:
        for node in nodes:
            if node.proc.returncode is None:
                node.proc.kill()
        for task in readers:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(task, 5)
    published = nodes[0].published
    tta: list[float] = []
    lat: list[float] = []
    delivered = 0
    for seq, t0 in published.items():
        times = [node.recv[seq] - t0 for node in others if seq in node.recv]
        delivered += len(times)
        lat.extend(times)
        if len(times) == len(others):
            tta.append(max(times))
    cpu = [float((node.done or {}).get("cpu_s", math.nan)) for node in nodes]
    return {
        "system": "gossipsub",
        "peers": n,
        "block_size": size,
        "messages": messages,
        "rate_per_s": rate,
        "delivered_fraction": round(delivered / max(1, messages * len(others)), 4),
        "time_to_all_p50_s": round(percentile(tta, 50), 4) if tta else None,
        "time_to_all_p99_s": round(percentile(tta, 99), 4) if tta else None,
        "receive_latency_p50_s": round(percentile(lat, 50), 4) if lat else None,
        "wire_bytes_per_message": round(lo_bytes / max(1, len(published))),
        "cpu_s_per_node_mean": round(statistics.mean(cpu), 2),
        "libp2p": LIBP2P,
        "settings": "D=6 D_lo=4 D_hi=12 heartbeat 1s, /meshsub/1.1.0, signing on; spam protection, adaptive "
        "gossip and eclipse protection off",
    }


def rumor_row(n: int, size: int, mode: str, messages: int, rate: float) -> dict[str, Any]:
    row = asyncio.run(run_rumor(n, size, mode, messages, rate))
    delivered = 1.0 - row["incomplete_blocks"] / messages if row["incomplete_blocks"] else 1.0
    return {
        "system": f"rumor {mode}",
        "peers": n,
        "block_size": size,
        "messages": messages,
        "rate_per_s": rate,
        "delivered_fraction": round(delivered, 4),
        "time_to_all_p50_s": row["time_to_all_p50_s"],
        "time_to_all_p99_s": row["time_to_all_p99_s"],
        "receive_latency_p50_s": row["receive_latency_p50_s"],
        "wire_bytes_per_message": row["loopback_bytes_per_block"],
        "envelope_bytes_per_message": row["wire_bytes_per_block"],
        "cpu_s_per_node_mean": row["cpu_s_per_peer_mean"],
        "amplification": row["amplification"],
        "loopback": row,
    }


def table(rows: list[dict[str, Any]]) -> str:
    out = [
        "| N | size | system | delivered | time to all p50 / p99 (s) | receive p50 (s) | MB on wire per message "
        "| CPU s per node |",
        "|---|---|---|---:|---|---:|---:|---:|",
    ]

    def s(x: Any) -> str:
        return "-" if x is None else f"{x:.3f}"

    for r in rows:
        out.append(
            f"| {r['peers']} | {format_size(r['block_size'])} | {r['system']} | "
            f"{r['delivered_fraction'] * 100:.1f} % | "
            f"{s(r['time_to_all_p50_s'])} / {s(r['time_to_all_p99_s'])} | {s(r['receive_latency_p50_s'])} | "
            f"{r['wire_bytes_per_message'] / 1e6:.2f} | {r['cpu_s_per_node_mean']} |"
        )
    return "\n".join(out)


def ratios(rows: list[dict[str, Any]]) -> list[str]:
    lines = []
    for n in sorted({r["peers"] for r in rows}):
        for size in sorted({r["block_size"] for r in rows}):
            group = {r["system"]: r for r in rows if r["peers"] == n and r["block_size"] == size}
            gs, rumor = group.get("gossipsub"), group.get("rumor enhanced")
            if not gs or not rumor:
                continue

            def ratio(key: str, gs: dict[str, Any] = gs, rumor: dict[str, Any] = rumor) -> str:
                a, b = gs.get(key), rumor.get(key)
                return f"{a / b:.2f}x" if a and b else "-"

            lines.append(
                f"N={n} {format_size(size)}: gossipsub / rumor enhanced: "
                f"time to all p50 {ratio('time_to_all_p50_s')}, "
                f"p99 {ratio('time_to_all_p99_s')}, bytes per message {ratio('wire_bytes_per_message')}, "
                f"CPU per node {ratio('cpu_s_per_node_mean')}"
            )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", default="8,16")
    parser.add_argument("--sizes", default="10KB,100KB,1MB")
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--rate", type=float, default=2.0)
    parser.add_argument("--rumor-modes", default="fabric,enhanced")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    python = libp2p_python()
    systems = [f"rumor {m}" for m in args.rumor_modes.split(",") if m] + ["gossipsub"]
    rows: list[dict[str, Any]] = []
    for n in (int(x) for x in args.peers.split(",")):
        for index, size in enumerate(parse_size(x) for x in args.sizes.split(",")):
            order = systems if index % 2 == 0 else list(reversed(systems))
            for system in order:
                began = time.time()
                if system == "gossipsub":
                    row = asyncio.run(run_gossipsub(python, n, size, args.messages, args.rate))
                else:
                    row = rumor_row(n, size, system.split()[1], args.messages, args.rate)
                row["wall_s"] = round(time.time() - began, 1)
                rows.append(row)
                print(
                    f"N={n} {format_size(size)} {system}: delivered {row['delivered_fraction'] * 100:.1f} %, "
                    f"time to all p50 {row['time_to_all_p50_s']} s, p99 {row['time_to_all_p99_s']} s "
                    f"({row['wall_s']} s)",
                    flush=True,
                )
    header = f"machine: {machine()}; commit {git_commit()}; loopback; {args.messages} messages at {args.rate}/s"
    print()
    print(header)
    print(table(rows))
    for line in ratios(rows):
        print(line)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gossipsub.json").write_text(json.dumps({"runs": rows, "ratios": ratios(rows)}, indent=2) + "\n")
    md = f"*{header}*\n\n{table(rows)}\n\n" + "\n".join(f"- {line}" for line in ratios(rows)) + "\n"
    (args.out / "gossipsub.md").write_text(md)
    # The rumor runs hold figures 1-4 on loopback too (as bench/loopback.py writes them).
    loop = [r["loopback"] for r in rows if "loopback" in r]
    if loop:
        (args.out / "loopback.json").write_text(json.dumps({"runs": loop}, indent=2) + "\n")
        head = f"machine: {machine()}; commit {git_commit()}; loopback, TLS on, 2 orgs"
        head += f"; {args.messages} blocks at {args.rate}/s"
        (args.out / "loopback.md").write_text(f"*{head}*\n\n{loopback_table(loop)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
