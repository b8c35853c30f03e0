"""The long fuzz run (``make fuzz``): a million mutated inputs over every target of tests/fuzz.

    .venv/bin/python tools/fuzz.py                       # 1,000,000 inputs, 2 processes, seed 1
    .venv/bin/python tools/fuzz.py --inputs 20000 --targets wire,block
    .venv/bin/python tools/fuzz.py --replay peer-cheap-fabric:1:3:1234   # re-run one input, with its traceback

The targets and their mutators are those of the pytest suite (tests/fuzz); here a seeded ``random.Random`` drives
them instead of hypothesis, which is about a hundred times faster. Inputs run in episodes of ``--episode`` inputs:
each episode starts a fresh target (a fresh peer for the core's targets, whose state builds up over the episode)
from a seed derived from (seed, target, episode), so a crash is reproduced by replaying its episode up to its
index. Each input runs under a watchdog: one running longer than ``--hang`` seconds (wall time) is a hang,
reported and skipped. Prints per target inputs, inputs/s, crashes, hangs and the slowest input (CPU time); exits 1 on
any crash or hang.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import platform
import random
import sys
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fuzz"))

from fuzz_common import HANG_SECONDS, Hang, watchdog
from fuzz_mutate import RandomChooser
from fuzz_targets import SHARES, TARGETS


@dataclass
class Unit:
    """One episode of one target."""

    target: str
    seed: int
    episode: int
    inputs: int


@dataclass
class Result:
    target: str
    inputs: int = 0
    seconds: float = 0.0
    outcomes: Counter[str] = field(default_factory=Counter)
    crashes: dict[str, dict[str, object]] = field(default_factory=dict)  # signature -> count, first example
    hangs: list[str] = field(default_factory=list)
    slowest: float = 0.0  # CPU seconds of the slowest input
    slowest_at: str = ""

    def merge(self, other: Result) -> None:
        self.inputs += other.inputs
        self.seconds += other.seconds
        self.outcomes.update(other.outcomes)
        for signature, crash in other.crashes.items():
            mine = self.crashes.setdefault(
                signature, {"count": 0, "first": crash["first"], "traceback": crash["traceback"]}
            )
            mine["count"] = int(mine["count"]) + int(crash["count"])  # type: ignore[call-overload]
        self.hangs += other.hangs
        if other.slowest > self.slowest:
            self.slowest, self.slowest_at = other.slowest, other.slowest_at


def _chooser(unit: Unit) -> RandomChooser:
    return RandomChooser(random.Random(f"{unit.seed}:{unit.target}:{unit.episode}"))


def _signature(exc: BaseException) -> str:
    """Where a crash comes from: its type and the innermost frame in rumor's own code (or the harness)."""
    frames = traceback.extract_tb(exc.__traceback__)
    inner = next((f for f in reversed(frames) if "/src/rumor/" in f.filename), frames[-1] if frames else None)
    where = f"{Path(inner.filename).name}:{inner.lineno}" if inner is not None else "?"
    return f"{type(exc).__name__} at {where}: {str(exc)[:160]}"


def run_unit(unit: Unit, hang: float = HANG_SECONDS) -> Result:
    logging.disable(logging.CRITICAL)  # the core logs every refusal; a million of them say nothing
    result = Result(unit.target)
    target = TARGETS[unit.target](unit.seed * 1_000_003 + unit.episode)
    chooser = _chooser(unit)
    started = time.perf_counter()
    for index in range(unit.inputs):
        at = f"{unit.target}:{unit.seed}:{unit.episode}:{index}"
        # CPU time, not wall time: on a shared machine an input's wall time says more about the neighbours.
        began = time.process_time()
        try:
            with watchdog(hang):
                result.outcomes[target.run(chooser)] += 1
        except Hang:
            result.hangs.append(at)
            # The target's state may be half-updated: go on from a fresh one, with the same chooser.
            target = TARGETS[unit.target](unit.seed * 1_000_003 + unit.episode + 7919 * (index + 1))
        except Exception as exc:
            signature = _signature(exc)
            crash = result.crashes.setdefault(
                signature, {"count": 0, "first": at, "traceback": "".join(traceback.format_exception(exc))}
            )
            crash["count"] = int(crash["count"]) + 1  # type: ignore[call-overload]
            target = TARGETS[unit.target](unit.seed * 1_000_003 + unit.episode + 7919 * (index + 1))
        took = time.process_time() - began
        if took > result.slowest:
            result.slowest, result.slowest_at = took, at
        result.inputs += 1
    result.seconds = time.perf_counter() - started
    return result


def replay(spec: str) -> int:
    """Run episode ``target:seed:episode`` up to input ``index`` and let that input raise."""
    name, seed, episode, index = spec.split(":")
    unit = Unit(name, int(seed), int(episode), int(index) + 1)
    logging.disable(logging.CRITICAL)
    target = TARGETS[name](unit.seed * 1_000_003 + unit.episode)
    chooser = _chooser(unit)
    for i in range(unit.inputs):
        if i < unit.inputs - 1:
            try:
                target.run(chooser)
            except Exception:
                print(f"input {i} of the episode fails too; replay that one first", file=sys.stderr)
                raise
        else:
            logging.disable(logging.NOTSET)
            logging.basicConfig(level=logging.DEBUG)
            print(f"input {i}: {target.run(chooser)}")
    return 0


def plan(total: int, seed: int, names: list[str], episode: int) -> list[Unit]:
    share = sum(SHARES[n] for n in names)
    units: list[Unit] = []
    for name in names:
        count = -(-total * SHARES[name] // share)
        for number in range(-(-count // episode)):
            units.append(Unit(name, seed, number, min(episode, count - number * episode)))
    # Interleaved, so that every target progresses from the start and the two processes stay busy to the end.
    units.sort(key=lambda u: (u.episode, names.index(u.target)))
    return units


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=1_000_000, help="inputs in all (split by the targets' shares)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2, help="worker processes")
    parser.add_argument("--episode", type=int, default=5000, help="inputs per fresh target")
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated target names")
    parser.add_argument("--hang", type=float, default=HANG_SECONDS, help="seconds after which an input is a hang")
    parser.add_argument("--json", type=Path, help="write the figures here as JSON")
    parser.add_argument("--replay", metavar="TARGET:SEED:EPISODE:INDEX", help="re-run one input and show its error")
    args = parser.parse_args(argv)
    if args.replay:
        return replay(args.replay)
    names = [n for n in args.targets.split(",") if n]
    unknown = sorted(set(names) - set(TARGETS))
    if unknown:
        parser.error(f"unknown targets {unknown}; known: {', '.join(TARGETS)}")
    units = plan(args.inputs, args.seed, names, args.episode)
    totals = {name: Result(name) for name in names}
    started = time.perf_counter()
    done = 0
    print(f"fuzzing {args.inputs:,} inputs over {len(names)} targets in {len(units)} episodes, {args.jobs} processes")
    context = multiprocessing.get_context("fork")
    with context.Pool(args.jobs) as pool:
        for result in pool.imap_unordered(_run, [(u, args.hang) for u in units]):
            totals[result.target].merge(result)
            done += result.inputs
            elapsed = time.perf_counter() - started
            crashes = sum(int(c["count"]) for r in totals.values() for c in r.crashes.values())  # type: ignore[call-overload]
            hangs = sum(len(r.hangs) for r in totals.values())
            print(
                f"[{elapsed:7.0f} s] {done:>9,} inputs ({done / elapsed:,.0f}/s)  crashes {crashes}  hangs {hangs}  "
                f"last: {result.target} {result.inputs / result.seconds:,.0f}/s",
                flush=True,
            )
    wall = time.perf_counter() - started
    return report(totals, wall, args)


def _run(job: tuple[Unit, float]) -> Result:
    return run_unit(*job)


def report(totals: dict[str, Result], wall: float, args: argparse.Namespace) -> int:
    print()
    print(f"{'target':<22}{'inputs':>11}{'inputs/s':>10}{'crashes':>9}{'hangs':>7}{'slowest':>11}  outcomes")
    for name, r in totals.items():
        crashes = sum(int(c["count"]) for c in r.crashes.values())  # type: ignore[call-overload]
        rate = r.inputs / r.seconds if r.seconds else 0.0
        top = ", ".join(f"{k} {v}" for k, v in r.outcomes.most_common(4))
        print(f"{name:<22}{r.inputs:>11,}{rate:>10,.0f}{crashes:>9}{len(r.hangs):>7}{r.slowest * 1000:>9.1f}ms  {top}")
    inputs = sum(r.inputs for r in totals.values())
    crashes = sum(int(c["count"]) for r in totals.values() for c in r.crashes.values())  # type: ignore[call-overload]
    hangs = sum(len(r.hangs) for r in totals.values())
    slowest = max(totals.values(), key=lambda r: r.slowest)
    cpus = os.cpu_count()
    print(
        f"{'total':<22}{inputs:>11,}{inputs / wall:>10,.0f}{crashes:>9}{hangs:>7}{slowest.slowest * 1000:>9.1f}ms"
        f"  in {wall:.0f} s on {cpus} cores ({platform.python_implementation()} {platform.python_version()}),"
        f" seed {args.seed}; slowest input (CPU time) {slowest.slowest_at}"
    )
    for r in totals.values():
        for signature, crash in r.crashes.items():
            print(
                f"\nCRASH {r.target} x{crash['count']}: {signature}\n  replay: tools/fuzz.py --replay {crash['first']}"
            )
            print(crash["traceback"])
        for at in r.hangs[:5]:
            print(f"HANG {at}: replay with tools/fuzz.py --replay {at}")
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "seed": args.seed,
                    "wall_seconds": round(wall, 1),
                    "cpus": cpus,
                    "python": platform.python_version(),
                    "inputs": inputs,
                    "crashes": crashes,
                    "hangs": hangs,
                    "targets": {
                        name: {
                            "inputs": r.inputs,
                            "seconds": round(r.seconds, 1),  # its episodes' wall time, in their processes
                            "crashes": {s: c["count"] for s, c in r.crashes.items()},
                            "hangs": r.hangs,
                            "slowest_cpu_ms": round(r.slowest * 1000, 1),
                            "slowest_at": r.slowest_at,
                            "outcomes": dict(r.outcomes),
                        }
                        for name, r in totals.items()
                    },
                },
                indent=2,
            )
            + "\n"
        )
    return 1 if crashes or hangs else 0


if __name__ == "__main__":
    sys.exit(main())
