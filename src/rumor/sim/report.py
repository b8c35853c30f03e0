"""Show the figures of simulation runs: a table (text or Markdown), a JSON object, PNG plots.

Several runs of one scenario (one per dissemination mode) go side by side, with the bounds of the figures
(bench/results/README.md, "The figures") beside them: telephone-model broadcast ⌈log2 N⌉ rounds, store-and-forward time
⌈log2 N⌉ × (latency + size / bandwidth), push-only random gossip log2 N + ln N rounds, amplification ≥ 1.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rumor.sim.runner import SimResult, percentile
from rumor.sim.scenario import format_size

__all__ = [
    "FIGURES",
    "FIGURES_DOC",
    "figure_label",
    "figures",
    "plot",
    "rows",
    "table_markdown",
    "table_text",
    "to_json",
    "write_json",
]

FIGURES_DOC = 'bench/results/README.md, section "The figures"'
"""Where the repository defines the numbered figures, what each measures and the bound beside it."""


def _s(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.3f}"


def _pct(x: float) -> str:
    return "-" if math.isnan(x) else f"{x * 100:.1f} %"


FIGURES: dict[int, str] = {
    1: "block latency",
    2: "push coverage",
    3: "payload amplification",
    4: "duplicates",
}
"""The figures of BENCHMARKS.md that a simulation measures, by the number the table shows beside each name."""


def figure_label(number: int) -> str:
    """``1 block latency``: a figure's number and name, as the tables show them."""
    return f"{number} {FIGURES[number]}"


Row = tuple[str, str, list[str], str]
"""(figure, what is measured, one value per run, bound); the figure is "run" for what describes the run itself."""


def rows(results: Sequence[SimResult]) -> list[Row]:
    """Every line of the table, in the order of the figures."""
    data = [r.to_json() for r in results]
    bounds = results[0].bounds()
    hop_ms = bounds["hop_s"] * 1000
    sf = bounds["store_and_forward_s"]
    lines: list[Row] = []

    def add(figure: int | None, measure: str, values: list[str], bound: str = "") -> None:
        lines.append((figure_label(figure) if figure is not None else "run", measure, values, bound))

    add(
        1,
        "time to all p50 (s)",
        [_s(d["time_to_all_p50_s"]) for d in data],
        f">= {sf:.3f} ({bounds['telephone_rounds']:.0f} rounds x {hop_ms:.1f} ms)",
    )
    add(1, "time to all p99 (s)", [_s(d["time_to_all_p99_s"]) for d in data], f">= {sf:.3f}")
    add(1, "time to all max (s)", [_s(d["time_to_all_max_s"]) for d in data])
    add(1, "p50 over peers (s)", [_s(d["block_latency_p50_s"]) for d in data], "median over blocks")
    add(1, "p99 over peers (s)", [_s(d["block_latency_p99_s"]) for d in data], "median over blocks")
    add(
        1,
        "commit latency p50 / p99 (s)",
        [f"{_s(d['commit_latency_p50_s'])} / {_s(d['commit_latency_p99_s'])}" for d in data],
    )
    add(
        2,
        "blocks reaching all by push",
        [_pct(r.push_coverage) for r in results],
        f"push-only gossip: {bounds['push_only_rounds']:.1f} rounds",
    )
    add(2, "... by push or advertisement (no pull)", [_pct(r.gossip_coverage) for r in results])
    add(
        2,
        "peers per block by advert / pull / state",
        [
            f"{d['advertised_per_block']:.1f} / {d['pulled_per_block']:.1f} / {d['transferred_per_block']:.1f}"
            for d in data
        ],
        "fanout-3 infect-and-die misses ~6 %",
    )
    add(3, "payload sent / ((N-1) x block)", [f"{r.amplification:.2f}" for r in results], ">= 1.0")
    add(3, "all bytes on the wire per block (MB)", [f"{d['wire_bytes_per_block'] / 1e6:.2f}" for d in data])
    add(3, "  of which control (MB)", [f"{d['control_bytes_per_block'] / 1e6:.2f}" for d in data])
    add(4, "extra copies per peer per block", [f"{r.duplicates_per_peer:.2f}" for r in results], ">= 0")
    add(None, "incomplete blocks", [str(d["incomplete_blocks"]) for d in data])
    add(None, "virtual time / wall time (s)", [f"{d['virtual_s']:.0f} / {d['wall_s']:.0f}" for d in data])
    return lines


def _header(results: Sequence[SimResult]) -> list[str]:
    first = results[0]
    sc = first.scenario
    return [
        f"{sc.name}: {sc.describe()}",
        f"machine: {first.machine}; commit {first.commit}; crypto {sc.crypto}",
    ]


def table_text(results: Sequence[SimResult]) -> str:
    """The figures as an aligned text table, one column per run; each figure's number and name head its lines."""
    lines = rows(results)
    names = [r.mode for r in results]
    width_figure = max(len("figure"), *(len(f) for f, _, _, _ in lines))
    width_measure = max(len(m) for _, m, _, _ in lines)
    widths = [max(len(names[i]), *(len(v[i]) for _, _, v, _ in lines)) for i in range(len(results))]
    out = _header(results)
    out.append("")
    head = "figure".ljust(width_figure) + "  " + "".ljust(width_measure) + "  "
    head += "  ".join(n.rjust(w) for n, w in zip(names, widths, strict=True))
    out.append(head + "  bound")
    out.append("-" * (len(head) + 7))
    previous = ""
    for figure, measure, values, bound in lines:
        shown = figure if figure != previous else ""  # the name once, on the first line of its figure
        previous = figure
        cells = "  ".join(v.rjust(w) for v, w in zip(values, widths, strict=True))
        out.append(f"{shown.ljust(width_figure)}  {measure.ljust(width_measure)}  {cells}  {bound}".rstrip())
    out.append("")
    out.append(f"figures 1-4 and their bounds are defined in {FIGURES_DOC}")
    return "\n".join(out)


def table_markdown(results: Sequence[SimResult]) -> str:
    """The figures as a Markdown table (for bench/results/README.md)."""
    names = [r.mode for r in results]
    out = [f"*{line}*  " for line in _header(results)]
    out.append("")
    out.append("| figure | measure | " + " | ".join(names) + " | bound |")
    out.append("|---|---|" + "---:|" * len(names) + "---|")
    for figure, measure, values, bound in rows(results):
        out.append(f"| {figure} | {measure.strip()} | " + " | ".join(values) + f" | {bound} |")
    return "\n".join(out)


def to_json(results: Sequence[SimResult]) -> dict[str, Any]:
    """One run: its object. Several (one per mode): the scenario's keys and ``runs``, one object per mode."""
    if len(results) == 1:
        return results[0].to_json()
    runs = [r.to_json() for r in results]
    first = runs[0]
    keys = ("scenario", "peers", "orgs", "blocks", "block_size", "seed", "machine", "commit")
    return {
        **{k: first[k] for k in keys},
        "mode": "both",
        "runs": runs,
        "wall_s": round(sum(r["wall_s"] for r in runs), 3),
    }


def write_json(results: Sequence[SimResult], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_json(results), indent=2) + "\n")


def plot(results: Sequence[SimResult], out_dir: Path, prefix: str | None = None) -> list[Path]:
    """Write ``<prefix>-latency-cdf.png`` (receive latency CDF per mode) and ``<prefix>-time-to-all.png``
    (time to all per block, per mode); returns their paths. Needs matplotlib (``pip install rumor[sim]``)."""
    import matplotlib.pyplot as plt

    sc = results[0].scenario
    prefix = prefix or f"{sc.name}-seed{sc.seed}"
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for suffix, fig in figures(results):
        path = out_dir / f"{prefix}-{suffix}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def figures(results: Sequence[SimResult]) -> list[tuple[str, Any]]:
    """The plots as matplotlib figures, each with the suffix of its file name (``plot`` saves them)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sc = results[0].scenario
    title = f"{sc.name}: {sc.peers} peers, {format_size(sc.block_size)} blocks, seed {sc.seed}"
    sf = results[0].bounds()["store_and_forward_s"]
    out: list[tuple[str, Any]] = []

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in results:
        lat = sorted(r.latencies())
        if lat:
            ys = [(i + 1) / len(lat) for i in range(len(lat))]
            ax.plot(lat, ys, label=f"{r.mode} (p50 {percentile(lat, 50):.3f}s)", drawstyle="steps-post")
    ax.axvline(sf, color="grey", linestyle=":", label=f"store-and-forward bound {sf:.3f}s")
    ax.set_xscale("log")
    _plain_log_labels(ax.xaxis)
    ax.set_xlabel("receive latency after the leader holds the block (s)")
    ax.set_ylabel("share of (peer, block) pairs")
    ax.set_title(f"{title}; figure {figure_label(1)}")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    out.append(("latency-cdf", fig))

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in results:
        seqs = [b.seq for b in r.blocks]
        tta = [b.time_to_all if b.time_to_all is not None else math.nan for b in r.blocks]
        ax.plot(seqs, tta, marker=".", linewidth=0.8, label=r.mode)
    ax.axhline(sf, color="grey", linestyle=":", label="store-and-forward bound")
    ax.set_yscale("log")
    _plain_log_labels(ax.yaxis)
    ax.set_xlabel("block")
    ax.set_ylabel("time to all peers (s)")
    ax.set_title(f"{title}; figure {figure_label(1)}")
    ax.grid(True, alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    out.append(("time-to-all", fig))
    return out


PLAIN_LOG_DECADES = 3.0
"""A log axis spanning at most this many decades also labels its 2s and 5s (0.2, 0.5, 2, 5...)."""


def _plain_log_labels(axis: Any) -> None:
    """Label a log axis with plain numbers (0.05, 0.1, 0.2) instead of matplotlib's 10^x mathtext, which takes a
    moment to read for every tick. The ticks matplotlib labels keep their label, in plain text; on an axis of a
    few decades the 2s and 5s between get one too, as 10^-1 and 10^0 alone say little about a latency."""
    from matplotlib.ticker import Formatter

    class PlainLabels(Formatter):
        def __init__(self, chooser: Formatter, *, two_and_five: bool) -> None:
            self.chooser = chooser
            self.two_and_five = two_and_five

        def set_axis(self, axis: Any) -> None:
            super().set_axis(axis)
            self.chooser.set_axis(axis)

        def set_locs(self, locs: Any) -> None:
            super().set_locs(locs)
            self.chooser.set_locs(locs)

        def __call__(self, x: float, pos: int | None = None) -> str:
            if x <= 0:
                return ""
            if self.chooser(x, pos):
                return f"{x:g}"
            if self.two_and_five and self.axis is not None:
                low, high = sorted(self.axis.get_view_interval())
                few = low > 0 and math.log10(high / low) <= PLAIN_LOG_DECADES
                if few and round(x / 10 ** math.floor(math.log10(x) + 1e-9), 6) in (2.0, 5.0):
                    return f"{x:g}"
            return ""

    axis.set_major_formatter(PlainLabels(axis.get_major_formatter(), two_and_five=False))
    axis.set_minor_formatter(PlainLabels(axis.get_minor_formatter(), two_and_five=True))


def plots_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


Printer = Callable[[str], None]
