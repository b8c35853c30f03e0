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

__all__ = ["FIGURES_DOC", "plot", "rows", "table_markdown", "table_text", "to_json", "write_json"]

FIGURES_DOC = 'bench/results/README.md, section "The figures"'
"""Where the repository defines the numbered figures, what each measures and the bound beside it."""


def _s(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.3f}"


def _pct(x: float) -> str:
    return "-" if math.isnan(x) else f"{x * 100:.1f} %"


def rows(results: Sequence[SimResult]) -> list[tuple[str, list[str], str]]:
    """(figure, one value per run, bound) for every line of the table."""
    data = [r.to_json() for r in results]
    bounds = results[0].bounds()
    hop_ms = bounds["hop_s"] * 1000
    sf = bounds["store_and_forward_s"]
    lines: list[tuple[str, list[str], str]] = []

    def add(name: str, values: list[str], bound: str = "") -> None:
        lines.append((name, values, bound))

    add(
        "1 time to all p50 (s)",
        [_s(d["time_to_all_p50_s"]) for d in data],
        f">= {sf:.3f} ({bounds['telephone_rounds']:.0f} rounds x {hop_ms:.1f} ms)",
    )
    add("1 time to all p99 (s)", [_s(d["time_to_all_p99_s"]) for d in data], f">= {sf:.3f}")
    add("1 time to all max (s)", [_s(d["time_to_all_max_s"]) for d in data])
    add("1 block latency p50 over peers (s)", [_s(d["block_latency_p50_s"]) for d in data], "median over blocks")
    add("1 block latency p99 over peers (s)", [_s(d["block_latency_p99_s"]) for d in data], "median over blocks")
    add(
        "  commit latency p50 / p99 (s)",
        [f"{_s(d['commit_latency_p50_s'])} / {_s(d['commit_latency_p99_s'])}" for d in data],
    )
    add(
        "2 push coverage (blocks reaching all by push)",
        [_pct(r.push_coverage) for r in results],
        f"push-only gossip: {bounds['push_only_rounds']:.1f} rounds",
    )
    add("2 ... by push or advertisement (no pull)", [_pct(r.gossip_coverage) for r in results])
    add(
        "2 peers per block by advert / pull / state",
        [
            f"{d['advertised_per_block']:.1f} / {d['pulled_per_block']:.1f} / {d['transferred_per_block']:.1f}"
            for d in data
        ],
        "fanout-3 infect-and-die misses ~6 %",
    )
    add("3 payload amplification", [f"{r.amplification:.2f}" for r in results], ">= 1.0")
    add("3 all bytes on the wire per block (MB)", [f"{d['wire_bytes_per_block'] / 1e6:.2f}" for d in data])
    add("3   of which control (MB)", [f"{d['control_bytes_per_block'] / 1e6:.2f}" for d in data])
    add("4 duplicates per peer per block", [f"{r.duplicates_per_peer:.2f}" for r in results], ">= 0")
    add("  incomplete blocks", [str(d["incomplete_blocks"]) for d in data])
    add("  virtual time / wall time (s)", [f"{d['virtual_s']:.0f} / {d['wall_s']:.0f}" for d in data])
    return lines


def _header(results: Sequence[SimResult]) -> list[str]:
    first = results[0]
    sc = first.scenario
    return [
        f"{sc.name}: {sc.describe()}",
        f"machine: {first.machine}; commit {first.commit}; crypto {sc.crypto}",
    ]


def table_text(results: Sequence[SimResult]) -> str:
    """The figures as an aligned text table, one column per run."""
    lines = rows(results)
    names = [r.mode for r in results]
    width0 = max(len(n) for n, _, _ in lines)
    widths = [max(len(names[i]), *(len(v[i]) for _, v, _ in lines)) for i in range(len(results))]
    out = _header(results)
    out.append("")
    head = "figure".ljust(width0) + "  " + "  ".join(n.rjust(w) for n, w in zip(names, widths, strict=True))
    out.append(head + "  bound")
    out.append("-" * (len(head) + 7))
    for name, values, bound in lines:
        cells = "  ".join(v.rjust(w) for v, w in zip(values, widths, strict=True))
        out.append(f"{name.ljust(width0)}  {cells}  {bound}".rstrip())
    out.append("")
    out.append(f"figures 1-4 and their bounds are defined in {FIGURES_DOC}")
    return "\n".join(out)


def table_markdown(results: Sequence[SimResult]) -> str:
    """The figures as a Markdown table (for bench/results/README.md)."""
    names = [r.mode for r in results]
    out = [f"*{line}*  " for line in _header(results)]
    out.append("")
    out.append("| figure | " + " | ".join(names) + " | bound |")
    out.append("|---|" + "---:|" * len(names) + "---|")
    for name, values, bound in rows(results):
        out.append(f"| {name.strip()} | " + " | ".join(values) + f" | {bound} |")
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sc = results[0].scenario
    prefix = prefix or f"{sc.name}-seed{sc.seed}"
    out_dir.mkdir(parents=True, exist_ok=True)
    title = f"{sc.name}: {sc.peers} peers, {format_size(sc.block_size)} blocks, seed {sc.seed}"
    paths: list[Path] = []

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in results:
        lat = sorted(r.latencies())
        if lat:
            ys = [(i + 1) / len(lat) for i in range(len(lat))]
            ax.plot(lat, ys, label=f"{r.mode} (p50 {percentile(lat, 50):.3f}s)", drawstyle="steps-post")
    sf = results[0].bounds()["store_and_forward_s"]
    ax.axvline(sf, color="grey", linestyle=":", label=f"store-and-forward bound {sf:.3f}s")
    ax.set_xscale("log")
    ax.set_xlabel("receive latency after the leader holds the block (s)")
    ax.set_ylabel("share of (peer, block) pairs")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    path = out_dir / f"{prefix}-latency-cdf.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in results:
        seqs = [b.seq for b in r.blocks]
        tta = [b.time_to_all if b.time_to_all is not None else math.nan for b in r.blocks]
        ax.plot(seqs, tta, marker=".", linewidth=0.8, label=r.mode)
    ax.axhline(sf, color="grey", linestyle=":", label="store-and-forward bound")
    ax.set_yscale("log")
    ax.set_xlabel("block")
    ax.set_ylabel("time to all peers (s)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3, which="both")
    ax.legend()
    path = out_dir / f"{prefix}-time-to-all.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)
    return paths


def plots_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


Printer = Callable[[str], None]
