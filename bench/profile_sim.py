"""Where the simulator's time goes: messages per kind and per virtual second, and a profile of the run.

    python bench/profile_sim.py [--preset sim-100] [--peers N] [--mode enhanced] [--seconds 10] [--top 25]
                                [--out bench/results/profile-sim.txt]

Builds the preset (warm start, settle), then runs --seconds of virtual time with blocks flowing, under
cProfile. Prints: wall seconds per virtual second, simulator events per virtual second, messages delivered
per virtual second by kind (what the N^2 control traffic looks like), and the functions with the most
cumulative and own time. This is the evidence behind the speed notes in bench/results/README.md: with --out,
the same output also goes to that file, whose first lines bench/report.py shows there.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import pstats
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TextIO

from rumor.sim.runner import _Run, git_commit, machine
from rumor.sim.scenario import PRESETS


class Tee(io.TextIOBase):
    """Writes to the terminal and to a file at once (stdout of this script under --out)."""

    def __init__(self, *streams: TextIO) -> None:
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="sim-100")
    parser.add_argument("--peers", type=int, default=None)
    parser.add_argument("--mode", default="enhanced")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", type=Path, default=None, help="also write the output to this file")
    args = parser.parse_args()
    if args.out is None:
        profile(args)
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w") as file, contextlib.redirect_stdout(Tee(sys.stdout, file)):
        profile(args)
    print(f"wrote {args.out}")


def profile(args: argparse.Namespace) -> None:
    scenario = replace(PRESETS[args.preset], mode=args.mode)
    if args.peers:
        scenario = replace(scenario, peers=args.peers)
    print(f"machine: {machine()}; commit {git_commit()}; seed {scenario.seed}; crypto {scenario.crypto}", flush=True)
    run = _Run(scenario, args.mode, None)
    began = time.perf_counter()
    run.build()
    run.warm_up()
    net = run.cluster.net
    ready = time.perf_counter() - began
    print(f"{scenario.name} ({scenario.peers} peers, {args.mode}): built and warmed up in {ready:.1f} s")
    start = net.now
    blocks = int(args.seconds / scenario.block_interval)
    for i in range(blocks):
        net.at(start + i * scenario.block_interval, lambda seq=i + 1: run._cut_block(seq))
    kinds_before = dict(net.stats.by_kind)
    events_before = net.events_processed
    run.measuring = True
    profiler = cProfile.Profile()
    began = time.perf_counter()
    profiler.enable()
    net.run_for(args.seconds)
    profiler.disable()
    wall = time.perf_counter() - began
    events = net.events_processed - events_before
    per = wall / args.seconds
    print(f"{args.seconds:g} virtual s in {wall:.1f} wall s under cProfile: {per:.2f} wall s per virtual s")
    print(f"simulator events: {events / args.seconds:,.0f} per virtual s ({wall / max(events, 1) * 1e6:.0f} µs each)")
    print("messages per virtual s by kind:")
    for kind, count in sorted(net.stats.by_kind.items(), key=lambda kv: -kv[1]):
        rate = (count - kinds_before.get(kind, 0)) / args.seconds
        if rate:
            print(f"  {kind:22s} {rate:12,.0f}")
    for order in ("cumulative", "tottime"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats(order).print_stats(args.top)
        print(f"\n--- by {order} time ---")
        print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[:8000])


if __name__ == "__main__":
    main()
