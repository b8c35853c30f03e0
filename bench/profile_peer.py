"""Where a real peer's time goes at a sustained block rate: py-spy on the processes of one loopback network.

    python bench/profile_peer.py [--peers 8] [--size 100KB] [--mode fabric] [--rate 24] [--seconds 40]
                                 [--delay 10] [--duration 20] [--sample-rate 50]
                                 [--out bench/results/profile-peer.txt] [--raw DIR]

One network as bench/loopback.py builds and feeds it (run_one: N peer processes in 2 orgs, TLS on, the
orderer, blocks of --size at --rate per second for about --seconds). --delay seconds after the first block
was submitted, while blocks flow, `py-spy record --idle` samples at once the org leaders (the peers whose
stat line says leader), one follower and the orderer, for --duration seconds. Each raw profile is then
summarised over its main thread only (the stacks that start at "<module>", i.e. the asyncio event loop):
the share of samples idle in the loop's selector (waiting for I/O or a timer), the functions with the most
own time among the busy samples, and the rumor functions (frames of rumor/...) with the most inclusive time.
The report (machine, commit, scenario, the run's figure-1 row, one section per process) goes to stdout and
to --out. py-spy must be installed (make bench installs it into the venv); without it this exits with 2.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loopback import Flowing, PeerProc, run_one

from rumor.sim.runner import git_commit, machine
from rumor.sim.scenario import format_size, parse_size

HERE = Path(__file__).resolve().parent
FRAME = re.compile(r"^(?P<name>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def find_py_spy() -> Path | None:
    """py-spy beside this interpreter (the venv's), else on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    if beside.is_file():
        return beside
    found = shutil.which("py-spy")
    return Path(found) if found else None


# --- reading py-spy's raw output -------------------------------------------------------------------------


def split_frame(frame: str) -> tuple[str, str, str]:
    """("Ledger.commit_many", "rumor/ledger/store.py", "98") from "Ledger.commit_many (rumor/ledger/store.py:98)"
    (the line is "" when py-spy gave none)."""
    match = FRAME.match(frame)
    if match is None:
        return frame, "", ""
    return match.group("name"), match.group("file"), match.group("line") or ""


def function_of(frame: str) -> str:
    """The frame without its line number: samples of one function add up whatever line they were on."""
    name, file, _ = split_frame(frame)
    return f"{name} ({file})" if file else name


def is_idle(frame: str) -> bool:
    """A leaf frame in the event loop's selector (EpollSelector.select, select of selectors.py): waiting."""
    _, file, _ = split_frame(frame)
    return Path(file).name == "selectors.py"


def is_rumor(frame: str) -> bool:
    return "rumor/" in split_frame(frame)[1]


@dataclass
class Profile:
    """One process's raw profile, summarised: main-thread samples, idle ones, own and inclusive counts."""

    main: int = 0
    idle: int = 0
    own: Counter[str] = field(default_factory=Counter)
    """Busy main-thread samples per leaf function (any code)."""
    own_lines: Counter[tuple[str, str]] = field(default_factory=Counter)
    """The same per (leaf function, line): which line of a function the time went to."""
    inclusive: Counter[str] = field(default_factory=Counter)
    """Main-thread samples per rumor function anywhere on the stack (once per sample, recursion or not)."""
    other: int = 0
    """Samples of the other threads (not counted above)."""
    other_leaf: Counter[str] = field(default_factory=Counter)

    @property
    def busy(self) -> int:
        return self.main - self.idle


def summarise(raw: str) -> Profile:
    """Summarise py-spy's ``-f raw`` output: one stack per line, root first, frames joined by ";", then the
    number of samples."""
    out = Profile()
    for line in raw.splitlines():
        stack_text, _, count_text = line.rstrip().rpartition(" ")
        if not stack_text or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack_text.split(";")
        if not frames[0].startswith("<module>"):
            out.other += count
            out.other_leaf[function_of(frames[-1])] += count
            continue
        out.main += count
        if is_idle(frames[-1]):
            out.idle += count
            continue
        leaf = function_of(frames[-1])
        out.own[leaf] += count
        out.own_lines[leaf, split_frame(frames[-1])[2]] += count
        for function in {function_of(f) for f in frames if is_rumor(f)}:
            out.inclusive[function] += count
    return out


# --- sampling while blocks flow --------------------------------------------------------------------------


@dataclass
class Target:
    role: str
    """"leader", "follower" or "orderer"."""
    name: str
    pid: int
    peer: PeerProc | None = None
    raw: Path | None = None
    error: str = ""


@dataclass
class Window:
    """What happened while the profiles were taken (filled in by the ``during`` callback)."""

    targets: list[Target] = field(default_factory=list)
    first_block: float = 0.0
    start: float = 0.0
    end: float = 0.0
    blocks_at_start: int = 0
    blocks_at_end: int = 0
    load_done: bool = False


def pick_targets(flow: Flowing) -> list[Target]:
    """The org leaders (as their last stat line says), one follower, and the orderer."""
    leaders = [p for p in flow.peers if p.stat.get("leader")]
    followers = [p for p in flow.peers if not p.stat.get("leader")]
    targets = [Target("leader", p.name, p.proc.pid, p) for p in leaders]
    targets += [Target("follower", p.name, p.proc.pid, p) for p in followers[:1]]
    targets.append(Target("orderer", "orderer", flow.orderer.pid))
    return targets


async def record(py_spy: Path, target: Target, out: Path, rate: int, seconds: int) -> None:
    """``py-spy record --idle`` on one process into ``out``; a failure is noted on the target."""
    proc = await asyncio.create_subprocess_exec(
        str(py_spy),
        "record",
        "--idle",
        "-r",
        str(rate),
        "-d",
        str(seconds),
        "-f",
        "raw",
        "-o",
        str(out),
        "-p",
        str(target.pid),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), seconds + 60)
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    if proc.returncode != 0 or not out.is_file():
        lines = err.decode(errors="replace").strip().splitlines()
        target.error = f"py-spy exited with {proc.returncode}: {lines[-1] if lines else 'no message'}"
        return
    target.raw = out


def profiler(
    args: argparse.Namespace, py_spy: Path, scratch: Path, window: Window
) -> Callable[[Flowing], Coroutine[Any, Any, None]]:
    """The ``during`` callback for run_one: wait for the first block, then --delay s, then sample at once."""

    async def during(flow: Flowing) -> None:
        while flow.load.blocks < 1:
            await asyncio.sleep(0.05)
        window.first_block = time.time()
        await asyncio.sleep(args.delay)
        window.targets = pick_targets(flow)
        names = ", ".join(f"{t.role} {t.name}" for t in window.targets)
        print(f"profiling {names} for {args.duration} s", flush=True)
        window.start = time.time()
        window.blocks_at_start = flow.load.blocks
        await asyncio.gather(
            *(record(py_spy, t, scratch / f"{t.name}.raw", args.sample_rate, args.duration) for t in window.targets)
        )
        window.end = time.time()
        window.blocks_at_end = flow.load.blocks
        window.load_done = flow.load.blocks >= args.blocks

    return during


# --- the report ------------------------------------------------------------------------------------------


def pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:5.1f} %" if whole else "    - "


def ranked(counts: Counter[str], whole: int, top: int) -> list[str]:
    return [f"    {pct(n, whole)}  {n:6d}  {name}" for name, n in counts.most_common(top)]


def lines_of(prof: Profile, function: str, top: int = 2) -> str:
    """Where in ``function`` its own samples were: " at line 98 (89 %), 97 (9 %)" (its busiest lines)."""
    lines = Counter({line: n for (f, line), n in prof.own_lines.items() if f == function and line})
    total = prof.own[function]
    shown = [f"{line} ({pct(n, total).strip()})" for line, n in lines.most_common(top)]
    return f" at line {', '.join(shown)}" if shown else ""


def ranked_own(prof: Profile, top: int) -> list[str]:
    return [f"    {pct(n, prof.main)}  {n:6d}  {name}{lines_of(prof, name)}" for name, n in prof.own.most_common(top)]


def figure_line(row: dict[str, Any]) -> str:
    def s(value: Any) -> str:
        return "-" if value is None else f"{value:.3f} s"

    return (
        f"figure 1 (this run): time to all p50 {s(row['time_to_all_p50_s'])}, p99 {s(row['time_to_all_p99_s'])}, "
        f"max {s(row['time_to_all_max_s'])}; receive p50 {s(row['receive_latency_p50_s'])}, "
        f"p99 {s(row['receive_latency_p99_s'])}; incomplete blocks {row['incomplete_blocks']} of {row['blocks']}; "
        f"pulled / state per block {row['pulled_per_block']:.2f} / {row['transferred_per_block']:.2f}; "
        f"CPU s per peer {row['cpu_s_per_peer_mean']} (max {row['cpu_s_per_peer_max']})"
    )


def section(target: Target, window: Window, args: argparse.Namespace) -> list[str]:
    head = f"== {target.role} {target.name} (pid {target.pid})"
    if target.peer is not None:
        committed = sum(1 for t in target.peer.commit.values() if window.start <= t <= window.end)
        head += f": committed {committed} blocks in the window"
    if target.raw is None:
        return [head, f"    no profile: {target.error or 'py-spy wrote nothing'}"]
    prof = summarise(target.raw.read_text(errors="replace"))
    out = [
        head,
        f"main thread: {prof.main} samples, idle in the selector {pct(prof.idle, prof.main).strip()}, "
        f"busy {pct(prof.busy, prof.main).strip()}",
        f"  own time, busy main-thread samples by leaf function (% of all main-thread samples; its busiest "
        f"lines), top {args.top_own}:",
        *ranked_own(prof, args.top_own),
        f"  inclusive time of rumor functions (% of all main-thread samples), top {args.top_inclusive}:",
        *ranked(prof.inclusive, prof.main, args.top_inclusive),
    ]
    if prof.other:
        leaves = ", ".join(f"{name} {pct(n, prof.other).strip()}" for name, n in prof.other_leaf.most_common(3))
        out.append(f"  other threads (not counted above): {prof.other} samples, idle or not; most at: {leaves}")
    return out


def report(args: argparse.Namespace, row: dict[str, Any], window: Window) -> list[str]:
    span = max(window.end - window.start, 1e-9)
    cut = window.blocks_at_end - window.blocks_at_start
    scenario = (
        f"scenario: loopback, N={args.peers} (2 orgs, TLS on), {format_size(args.size)} blocks, {args.mode} mode, "
        f"{args.blocks} blocks at {args.rate:g}/s; py-spy record --idle -r {args.sample_rate} -d {args.duration} "
        f"on {len(window.targets)} processes at once, from {window.start - window.first_block:.1f} s after the "
        f"first block was submitted"
    )
    out = [
        f"machine: {machine()}; commit {git_commit()}",
        scenario,
        figure_line(row),
        f"profile window: {span:.1f} s, {cut} blocks submitted to the orderer meanwhile ({cut / span:.1f}/s)"
        + ("; the load ended before the window did" if window.load_done else ""),
    ]
    for target in window.targets:
        out += ["", *section(target, window, args)]
    return out


# --- main ------------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", type=int, default=8)
    parser.add_argument("--size", type=parse_size, default=parse_size("100KB"), help="block payload, e.g. 100KB")
    parser.add_argument("--mode", default="fabric", choices=("fabric", "enhanced"))
    parser.add_argument("--rate", type=float, default=24.0, help="blocks per second")
    parser.add_argument("--seconds", type=float, default=40.0, help="how long the load lasts (blocks = this × rate)")
    parser.add_argument("--blocks", type=int, default=None, help="blocks to feed (default: --seconds × --rate)")
    parser.add_argument("--delay", type=float, default=10.0, help="seconds after the first block before sampling")
    parser.add_argument("--duration", type=int, default=20, help="seconds of sampling (py-spy -d)")
    parser.add_argument("--sample-rate", type=int, default=50, help="samples per second (py-spy -r)")
    parser.add_argument("--top-own", type=int, default=12)
    parser.add_argument("--top-inclusive", type=int, default=15)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "profile-peer.txt")
    parser.add_argument("--raw", type=Path, default=None, help="also keep py-spy's raw profiles in this directory")
    args = parser.parse_args()
    if args.blocks is None:
        args.blocks = max(1, round(args.seconds * args.rate))
    py_spy = find_py_spy()
    if py_spy is None:
        print("profile_peer: py-spy is missing (make bench installs it into the venv)", file=sys.stderr)
        return 2
    window = Window()
    with tempfile.TemporaryDirectory(prefix="rumor-profile-") as tmp:
        scratch = Path(tmp)
        print(
            f"N={args.peers} {format_size(args.size)} {args.mode}: {args.blocks} blocks at {args.rate:g}/s",
            flush=True,
        )
        during = profiler(args, py_spy, scratch, window)
        row = asyncio.run(run_one(args.peers, args.size, args.mode, args.blocks, args.rate, during=during))
        if not window.targets:
            print("profile_peer: the profiles were never taken", file=sys.stderr)
            return 1
        if args.raw is not None:
            args.raw.mkdir(parents=True, exist_ok=True)
            for target in window.targets:
                if target.raw is not None:
                    shutil.copy(target.raw, args.raw / target.raw.name)
        lines = report(args, row, window)
    text = "\n".join(lines) + "\n"
    print()
    print(text, end="")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
