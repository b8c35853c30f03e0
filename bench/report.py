"""Render bench/results/README.md from bench/README.template.md and the result files the benchmarks wrote.

    python bench/report.py [--results bench/results] [--template bench/README.template.md]

The template is Markdown with directives in double braces:

    {{include NAME}}    the file NAME of the results directory as it is: the Markdown tables of bench/sim.py,
                        loopback.py, gossipsub.py, loopback_ops.py and comm.py, each starting with an italic
                        line that names the machine, the commit, the scenario and the seed
    {{include_text NAME}}  the file NAME of the results directory as it is, inside a ```text fence (for plain
                        text such as profile-peer.txt of bench/profile_peer.py)
    {{comm_table}}      figure 9 from comm.json: envelope size, transport, messages/s, MB/s, against raw TCP
    {{bounds_table}}    the bounds of the figures ("The figures" of the page) beside sim-100.json, sim-1000.json and
                        loopback.json, one row per bound, scenario and mode ({{bounds_table A.json B.json}}:
                        other files)
    {{profile}}         the first 40 lines of profile-sim.txt (bench/profile_sim.py --out ...), fenced;
                        {{profile N}}: the first N lines

The results never make the rendering fail: a missing or unreadable input renders as a visible line that says
so. Every image the text references (![...](file.png), relative to the results directory) is checked, and
each missing one is a warning on stderr, as is each *.md of the results that no {{include}} names. A footer
lists the result files used and when they were last written (UTC). Writes README.md into the results
directory and prints its path.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
TEMPLATE = HERE / "README.template.md"
OUTPUT = "README.md"
PROFILE = "profile-sim.txt"
PROFILE_LINES = 40
BOUNDS_INPUTS = ("sim-100.json", "sim-1000.json", "loopback.json")

DIRECTIVE = re.compile(r"\{\{\s*([A-Za-z_]+)((?:\s+[^\s{}]+)*)\s*\}\}")
IMAGE = re.compile(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def _unreached_share(fanout: int) -> float:
    """Share of peers that push-only infect-and-die gossip with ``fanout`` never reaches, for large N: the
    smallest root of s = exp(-fanout (1 - s)) (every informed peer sends once, to ``fanout`` random peers)."""
    share = 0.0
    for _ in range(200):
        share = math.exp(-fanout * (1 - share))
    return share


INFECT_AND_DIE_FANOUT = 3
UNREACHED = _unreached_share(INFECT_AND_DIE_FANOUT)
"""About 6 % (5.95 %) for Fabric's push fanout of 3."""


@dataclass
class Rendered:
    """What the template became: the text, the warnings for stderr, and the result files looked at."""

    text: str
    warnings: list[str]
    used: dict[str, Path | None]
    """File name (relative to the results directory) -> its path, or None when it was missing."""


@dataclass
class _Context:
    results: Path
    shown: str
    """How the results directory is named in the text, e.g. bench/results."""
    warnings: list[str] = field(default_factory=list)
    used: dict[str, Path | None] = field(default_factory=dict)
    included: set[str] = field(default_factory=set)

    def path(self, name: str) -> Path:
        return self.results / name

    def shown_path(self, name: str) -> str:
        return f"{self.shown}/{name}"

    def look(self, name: str) -> Path | None:
        """The file's path if it exists (recorded for the footer either way)."""
        path = self.path(name)
        found = path if path.is_file() else None
        if self.used.get(name) is None:
            self.used[name] = found
        return found

    def read_text(self, name: str) -> tuple[str | None, str]:
        """(the file's text, "") or (None, why not, as a sentence for the reader)."""
        path = self.look(name)
        if path is None:
            return None, f"{self.shown_path(name)} is missing"
        try:
            return path.read_text(encoding="utf-8"), ""
        except (OSError, UnicodeDecodeError) as exc:
            problem = f"{self.shown_path(name)} could not be read ({exc})"
            self.warnings.append(f"warning: {problem}")
            return None, problem

    def read_json(self, name: str) -> tuple[Any, str]:
        text, problem = self.read_text(name)
        if text is None:
            return None, problem
        try:
            return json.loads(text), ""
        except json.JSONDecodeError as exc:
            problem = f"{self.shown_path(name)} is not valid JSON ({exc})"
            self.warnings.append(f"warning: {problem}")
            return None, problem


def not_measured(problem: str, how: str = "run make bench") -> str:
    return f"*not measured in this run: {problem} ({how})*"


# --- {{include NAME}} ------------------------------------------------------------------------------------


def _included_text(ctx: _Context, directive: str, args: Sequence[str]) -> tuple[str | None, str]:
    """(the named result file's text, "") or (None, what to render instead) for {{include}} and {{include_text}}."""
    if len(args) != 1:
        return None, _bad_directive(ctx, directive, args, "expected one file name")
    name = args[0]
    if name != Path(name).name or name.startswith("."):
        return None, _bad_directive(ctx, directive, args, "expected a file name inside the results directory")
    ctx.included.add(name)
    text, problem = ctx.read_text(name)
    if text is None:
        return None, not_measured(problem)
    return text, ""


def fenced(text: str) -> str:
    """``text`` inside a ```text fence, longer than any run of backticks it holds."""
    fence = "`" * max([3, *(len(m) + 1 for m in re.findall(r"`{3,}", text))])
    return "\n".join([f"{fence}text", text, fence])


def _include(ctx: _Context, args: Sequence[str]) -> str:
    text, instead = _included_text(ctx, "include", args)
    return instead if text is None else text.strip("\n")


def _include_text(ctx: _Context, args: Sequence[str]) -> str:
    text, instead = _included_text(ctx, "include_text", args)
    return instead if text is None else fenced(text.strip("\n"))


# --- {{comm_table}} --------------------------------------------------------------------------------------


def _num(value: Any, spec: str, suffix: str = "") -> str:
    if isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value):
        return f"{value:{spec}}{suffix}"
    return "-"


def comm_markdown(data: Mapping[str, Any]) -> str:
    """Figure 9 as Markdown: an italic header line (machine, commit, rounds), the table of comm.json's medians,
    and the decode cost per envelope. Keys a comm.json lacks show as "not recorded" or "-"."""
    machine = data.get("machine") or "not recorded"
    commit = data.get("commit") or "not recorded"
    rounds = data.get("rounds")
    rounds_text = f"median of {rounds} interleaved rounds" if rounds is not None else "rounds: not recorded"
    out = [
        f"*machine: {machine}; commit: {commit}; figure 9, loopback, one connection per transport, sender and "
        f"receiver separate processes; {rounds_text}*",
        "",
        "| envelope (bytes) | transport | messages | msgs/s | MB/s | vs raw TCP |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for row in data.get("medians") or []:
        out.append(
            f"| {_num(row.get('envelope_bytes'), 'd')} | {row.get('transport', '-')} "
            f"| {_num(row.get('messages'), 'd')} | {_num(row.get('msgs_per_s'), '.0f')} "
            f"| {_num(row.get('mb_per_s'), '.2f')} | {_num(row.get('vs_raw_tcp'), '.2f', 'x')} |"
        )
    decode = data.get("decode_us") or {}
    if decode:
        costs = ", ".join(f"{size} bytes {_num(us, '.1f')} µs" for size, us in decode.items())
        out += ["", f"Decode and tag check of one envelope (the receiver's work per message): {costs}."]
    return "\n".join(out)


def _comm_table(ctx: _Context, args: Sequence[str]) -> str:
    if args:
        return _bad_directive(ctx, "comm_table", args, "takes no arguments")
    ctx.included.add("comm.md")  # bench/comm.py's Markdown of the same table
    data, problem = ctx.read_json("comm.json")
    if not isinstance(data, Mapping):
        return not_measured(problem or f"{ctx.shown_path('comm.json')} holds no JSON object")
    return comm_markdown(data)


# --- {{bounds_table}} ------------------------------------------------------------------------------------


@dataclass
class _Run:
    file: str
    where: str
    """The file as the notes name it, e.g. bench/results/loopback.json."""
    label: str
    data: Mapping[str, Any]

    @property
    def mode(self) -> str:
        return str(self.data.get("mode", "?"))

    def get(self, key: str) -> float | None:
        value = self.data.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value):
            return float(value)
        return None

    def bound(self, key: str) -> float | None:
        bounds = self.data.get("bounds")
        value = bounds.get(key) if isinstance(bounds, Mapping) else None
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    def receivers(self) -> int | None:
        """Peers per block that must be reached by gossip (the org leaders get blocks from the orderer)."""
        if isinstance(self.data.get("receivers"), int):
            return int(self.data["receivers"])
        leaders = self.data.get("leaders")
        peers = self.data.get("peers")
        if isinstance(leaders, list) and isinstance(peers, int):
            return peers - max(len(leaders), 1)
        return None


def _runs_of(data: Any) -> list[Mapping[str, Any]]:
    """The per-mode runs of a result file: {"runs": [...]} (rumor.sim.report.write_json of several modes,
    bench/loopback.py), one run object, a list of runs, or an object of runs keyed by mode."""
    if isinstance(data, Mapping):
        if isinstance(data.get("runs"), list):
            return [r for r in data["runs"] if isinstance(r, Mapping)]
        if "mode" in data and "time_to_all_p50_s" in data:
            return [data]
        return [r for r in data.values() if isinstance(r, Mapping) and "mode" in r]
    if isinstance(data, list):
        return [r for r in data if isinstance(r, Mapping)]
    return []


def _size(size: Any) -> str:
    if not isinstance(size, int):
        return "?"
    for unit, factor in (("MB", 1000**2), ("KB", 1000)):
        if size >= factor:
            return f"{size / factor:g}{unit}"
    return f"{size}B"


MODE_ORDER = {"fabric": 0, "enhanced": 1}


def _collect(ctx: _Context, files: Sequence[str], notes: list[str]) -> list[_Run]:
    runs: list[_Run] = []
    for name in files:
        data, problem = ctx.read_json(name)
        if data is None:
            notes.append(f"{problem}: its rows are left out")
            continue
        found = _runs_of(data)
        if not found:
            notes.append(f"{ctx.shown_path(name)} holds no runs: its rows are left out")
            continue
        stem = name.removesuffix(".json")
        keys = [(str(r.get("scenario", stem)), str(r.get("mode"))) for r in found]
        several = len(set(keys)) < len(keys)  # e.g. loopback.json: one run per N, block size and mode
        mine: list[tuple[tuple[int, int, int, int], _Run]] = []
        for position, run in enumerate(found):
            label = str(run.get("scenario", stem))
            if several:
                label += f" N={run.get('peers', '?')}, {_size(run.get('block_size'))}"
            peers = run.get("peers") if isinstance(run.get("peers"), int) else 0
            size = run.get("block_size") if isinstance(run.get("block_size"), int) else 0
            order = (peers, size, MODE_ORDER.get(str(run.get("mode")), 2), position) if several else (0, 0, 0, 0)
            mine.append((order, _Run(name, ctx.shown_path(name), label, run)))
        runs.extend(run for _, run in sorted(mine, key=lambda item: item[0]))
    return runs


Cells = tuple[str, str, str]
"""A row's bound, measured value and measured / bound (the bound's name, scenario and mode go before them)."""


def _no_link_model(run: _Run) -> str:
    return f"{run.where}: no link model (no bounds with latency and bandwidth), so no time bounds: rows left out"


def _time_row(run: _Run, key: str, notes: list[str]) -> Cells | None:
    hop = run.bound("hop_s")
    if key == "store_and_forward_s":
        bound = run.bound("store_and_forward_s")
        rounds = run.bound("telephone_rounds")
        if bound is None:
            notes.append(_no_link_model(run))
            return None
        detail = f" ({rounds:.0f} rounds × {hop * 1000:.1f} ms)" if rounds is not None and hop is not None else ""
        bound_text = f"≥ {bound:.3f} s{detail}"
    else:
        rounds = run.bound("push_only_rounds")
        if rounds is None or hop is None:
            notes.append(_no_link_model(run))
            return None
        bound = rounds * hop
        bound_text = f"{rounds:.2f} rounds × {hop * 1000:.1f} ms = {bound:.3f} s"
    p50, p99 = run.get("time_to_all_p50_s"), run.get("time_to_all_p99_s")
    if p50 is None or bound <= 0:
        notes.append(f"{run.label} {run.mode}: no block reached every peer, no time to all")
        return None
    measured = f"time to all p50 {p50:.3f} s"
    ratio = f"p50 {p50 / bound:.2f}"
    if p99 is not None:
        measured += f", p99 {p99:.3f} s"
        ratio += f", p99 {p99 / bound:.2f}"
    return bound_text, measured, ratio


def _unreached_row(run: _Run, notes: list[str]) -> Cells | None:
    receivers = run.receivers()
    if not receivers:
        notes.append(
            f"{run.where}: its runs record neither `receivers` nor `leaders` (written before bench/loopback.py "
            "left the org leaders out of the count: their blocks from the orderer counted as state transfer); "
            "the unreached-by-push rows are left out until it is run again"
        )
        return None
    pulled, transferred = run.get("pulled_per_block"), run.get("transferred_per_block")
    if pulled is None or transferred is None:
        notes.append(f"{run.label} {run.mode}: no pulled/transferred_per_block, unreached-by-push row left out")
        return None
    late = (pulled + transferred) / receivers
    bound_text = f"~6 % ({UNREACHED * 100:.2f} % for large N)"
    if run.mode != "enhanced":
        measured = (
            f"{late * 100:.2f} % by pull or state transfer ({pulled:.2f} + {transferred:.2f} of {receivers} per block)"
        )
        return bound_text, measured, f"{late / UNREACHED:.2f}"
    advertised = run.get("advertised_per_block")
    if advertised is None:
        notes.append(f"{run.label} enhanced: no advertised_per_block in {run.where}, unreached-by-push row left out")
        return None
    share = advertised / receivers
    measured = (
        f"advertisement share {share * 100:.2f} % ({advertised:.2f} of {receivers} per block); pull or state "
        f"transfer {late * 100:.2f} %"
    )
    return bound_text, measured, f"{(share + late) / UNREACHED:.2f} (advertisement + pull/state)"


def _amplification_row(run: _Run, notes: list[str]) -> Cells | None:
    value = run.get("amplification")
    if value is None:
        notes.append(f"{run.label} {run.mode}: no amplification, row left out")
        return None
    return "≥ 1.0", f"{value:.2f}", f"{value:.2f}"


BOUNDS: tuple[tuple[str, Callable[[_Run, list[str]], Cells | None]], ...] = (
    (
        "telephone model: ⌈log2 N⌉ store-and-forward rounds",
        lambda run, notes: _time_row(run, "store_and_forward_s", notes),
    ),
    (
        "push-only random gossip: log2 N + ln N rounds",
        lambda run, notes: _time_row(run, "push_only", notes),
    ),
    ("infect-and-die, fanout 3: ~6 % unreached by push", _unreached_row),
    ("payload amplification ≥ 1.0", _amplification_row),
)


def _inputs_line(ctx: _Context, files: Sequence[str], runs: Sequence[_Run]) -> str:
    parts: list[str] = []
    for name in files:
        mine = [r for r in runs if r.file == name]
        if not mine:
            continue
        commits = list(dict.fromkeys(str(r.data.get("commit") or "not recorded") for r in mine))
        machines = list(dict.fromkeys(str(r.data.get("machine") or "not recorded") for r in mine))
        seeds = list(dict.fromkeys("none" if r.data.get("seed") is None else str(r.data["seed"]) for r in mine))
        parts.append(
            f"{name} (machine: {', '.join(machines)}; commit{'s' if len(commits) > 1 else ''} {', '.join(commits)}; "
            f"seed {', '.join(seeds)})"
        )
    return (
        "*each bound of the figures (see The figures) beside what was measured; measured / bound to 2 decimals; "
        "inputs: " + "; ".join(parts) + "*"
    )


def bounds_markdown(ctx: _Context, files: Sequence[str]) -> str:
    notes: list[str] = []
    runs = _collect(ctx, files, notes)
    rows: list[str] = []
    for name, make in BOUNDS:
        for run in runs:
            cells = make(run, notes)
            if cells is not None:
                rows.append(f"| {name} | {run.label} | {run.mode} | {cells[0]} | {cells[1]} | {cells[2]} |")
    out: list[str] = []
    if rows:
        out += [
            _inputs_line(ctx, files, runs),
            "",
            "| which bound | scenario | mode | bound | measured | measured / bound |",
            "|---|---|---|---|---|---|",
            *rows,
        ]
    else:
        out.append(not_measured(f"none of {', '.join(ctx.shown_path(f) for f in files)} has figures to compare"))
    notes = list(dict.fromkeys(notes))
    if notes:
        out += ["", "Left out:", "", *(f"- {note}" for note in notes)]
    return "\n".join(out)


def _bounds_table(ctx: _Context, args: Sequence[str]) -> str:
    return bounds_markdown(ctx, list(args) or list(BOUNDS_INPUTS))


# --- {{profile}} -----------------------------------------------------------------------------------------


def _profile(ctx: _Context, args: Sequence[str]) -> str:
    lines = PROFILE_LINES
    if args:
        if len(args) != 1 or not args[0].isdigit():
            return _bad_directive(ctx, "profile", args, "expected a number of lines")
        lines = int(args[0])
    text, problem = ctx.read_text(PROFILE)
    if text is None:
        return not_measured(problem, f"run `python bench/profile_sim.py --out {ctx.shown_path(PROFILE)}`")
    all_lines = text.rstrip("\n").splitlines()
    shown = all_lines[:lines]
    if len(all_lines) > lines:
        shown.append(f"... ({len(all_lines) - lines} more lines in {PROFILE})")
    return fenced("\n".join(shown))


# --- rendering -------------------------------------------------------------------------------------------


def _bad_directive(ctx: _Context, name: str, args: Sequence[str], why: str) -> str:
    directive = "{{" + " ".join([name, *args]) + "}}"
    ctx.warnings.append(f"warning: template directive {directive}: {why}")
    return f"*template directive `{directive}` not rendered: {why}*"


DIRECTIVES: dict[str, Callable[[_Context, Sequence[str]], str]] = {
    "include": _include,
    "include_text": _include_text,
    "comm_table": _comm_table,
    "bounds_table": _bounds_table,
    "profile": _profile,
}


def _check_images(ctx: _Context, text: str) -> None:
    for target in dict.fromkeys(IMAGE.findall(text)):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith(("/", "#")):
            continue  # a URL or an absolute path: not a result file
        if ctx.look(target) is None:
            ctx.warnings.append(f"warning: image {ctx.shown_path(target)} is referenced but missing")


def _modified(path: Path | None) -> str:
    if path is None:
        return "missing"
    try:
        return f"{datetime.fromtimestamp(path.stat().st_mtime, UTC):%Y-%m-%d %H:%M:%S}"
    except OSError:
        return "missing"


def _footer(ctx: _Context, source: str, now: datetime) -> str:
    out = [
        "---",
        "",
        f"*Rendered {now.astimezone(UTC):%Y-%m-%d %H:%M} UTC by `bench/report.py` from `{source}` (edit that, "
        "not this file). Result files used:*",
        "",
        "| file | last written (UTC) |",
        "|---|---|",
    ]
    for name, path in ctx.used.items():
        out.append(f"| `{name}` | {_modified(path)} |")
    return "\n".join(out)


def render(
    template: str,
    results: Path,
    *,
    shown: str | None = None,
    source: str = "bench/README.template.md",
    now: datetime | None = None,
) -> Rendered:
    """The template with its directives replaced by what the results directory holds, checked images, a footer.

    ``shown`` names the results directory in the text (default: its path); ``source`` names the template in the
    footer; ``now`` is the rendering time the footer gives (default: now)."""
    ctx = _Context(results, shown if shown is not None else str(results))

    def replace(match: re.Match[str]) -> str:
        name, args = match.group(1), match.group(2).split()
        handler = DIRECTIVES.get(name)
        if handler is None:
            return _bad_directive(ctx, name, args, f"unknown (known: {', '.join(DIRECTIVES)})")
        return handler(ctx, args)

    body = DIRECTIVE.sub(replace, template).rstrip("\n")
    _check_images(ctx, body)
    if results.is_dir():
        for path in sorted(results.glob("*.md")):
            if path.name != OUTPUT and path.name not in ctx.included:
                ctx.warnings.append(f"warning: {ctx.shown_path(path.name)} is not included by the template")
    header = f"<!-- Generated by bench/report.py from {source}: edit the template, not this file. -->"
    text = "\n\n".join([header, body, _footer(ctx, source, now or datetime.now(UTC))]) + "\n"
    return Rendered(text, ctx.warnings, dict(ctx.used))


def _display(path: Path) -> str:
    """``path`` relative to the repository (bench/results) when it lies inside, else as given."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS, help="the benchmarks' output directory")
    parser.add_argument("--template", type=Path, default=TEMPLATE)
    args = parser.parse_args(argv)
    try:
        template = args.template.read_text(encoding="utf-8")
    except OSError as exc:
        print(f"report: cannot read the template {args.template}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    rendered = render(template, args.results, shown=_display(args.results), source=_display(args.template))
    for warning in rendered.warnings:
        print(warning, file=sys.stderr)
    args.results.mkdir(parents=True, exist_ok=True)
    out = args.results / OUTPUT
    out.write_text(rendered.text, encoding="utf-8")
    print(_display(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
