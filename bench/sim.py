"""Figures 1-4 in the simulator: sim-100 and sim-1000, Fabric's dissemination beside rumor's enhanced one.

    python bench/sim.py [--scenarios sim-100,sim-1000] [--seed 1] [--jobs 2] [--out bench/results]

Each scenario runs once per mode with the same seed (the two modes in parallel processes with --jobs 2),
prints the table and writes under --out: <scenario>.json (both runs, every figure), <scenario>.md (the
table in Markdown, for README.md) and the plots <scenario>-seed<S>-latency-cdf.png and -time-to-all.png.
The scenarios are rumor.sim.scenario.PRESETS; `rumor sim --preset NAME --mode both` runs the same.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

from rumor.sim.report import plot, plots_available, table_markdown, table_text, write_json
from rumor.sim.runner import run_modes, stderr_progress
from rumor.sim.scenario import PRESETS

GB_PER_1000_PEERS = 8.0
"""Memory one simulated run holds per 1,000 peers (about 7 GB measured at 1,000 peers, cheap crypto)."""


def affordable_jobs(peers: int, jobs: int) -> int:
    """``jobs``, or fewer when that many runs of ``peers`` peers at once would not fit the available memory."""
    try:
        meminfo = Path("/proc/meminfo").read_text()
        available_kb = int(next(line.split()[1] for line in meminfo.splitlines() if line.startswith("MemAvailable")))
    except (OSError, StopIteration, ValueError):
        return jobs
    per_run_gb = max(peers / 1000 * GB_PER_1000_PEERS, 0.1)
    return max(1, min(jobs, int(available_kb / 1024 / 1024 / per_run_gb)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", default="sim-100,sim-1000", help="comma-separated presets")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2, help="modes run at once, one process each")
    parser.add_argument("--blocks", type=int, default=None, help="override the presets' block count")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.scenarios.split(","):
        scenario = replace(PRESETS[name.strip()], mode="both", seed=args.seed)
        if args.blocks is not None:
            scenario = replace(scenario, blocks=args.blocks)
        started = time.perf_counter()
        jobs = affordable_jobs(scenario.peers, args.jobs)
        if jobs < args.jobs:
            print(f"({name}: {jobs} run(s) at once, not {args.jobs}: not enough free memory)", file=sys.stderr)
        results = run_modes(scenario, progress=stderr_progress, jobs=jobs)
        print(table_text(results))
        print(f"({name}: {time.perf_counter() - started:.0f} s wall for both modes)\n", flush=True)
        write_json(results, args.out / f"{name}.json")
        (args.out / f"{name}.md").write_text(table_markdown(results) + "\n")
        if plots_available():
            plot(results, args.out)
        else:
            print("plots skipped: matplotlib is not installed (pip install 'rumor[sim]')", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
