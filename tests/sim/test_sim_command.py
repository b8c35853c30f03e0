"""`rumor sim`: scenarios from flags or YAML, the table, the JSON figures and the plots; runs repeat per seed.

Only small networks, and never a timing: the figures are checked for sanity, not for speed.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from rumor.cli import app
from rumor.core.types import RemotePeer, Send
from rumor.sim.command import SimProgress, build_scenario
from rumor.sim.network import SimNetwork
from rumor.sim.report import FIGURES, figures, table_markdown, table_text
from rumor.sim.runner import BlockFigures, RunProgress, SimResult, run_modes, run_scenario
from rumor.sim.scenario import (
    Scenario,
    ScenarioError,
    default_text,
    load_scenario,
    parse_bandwidth,
    parse_latency,
    parse_size,
    scenario_from_mapping,
    scenario_reference,
)
from rumor.wire import messages as m

REQUIRED = (
    "peers",
    "blocks",
    "mode",
    "seed",
    "time_to_all_p50_s",
    "time_to_all_p99_s",
    "time_to_all_max_s",
    "push_coverage",
    "amplification",
    "duplicates_per_peer",
    "wall_s",
)
SMALL = {"peers": 12, "blocks": 4, "block_size": "4KB", "block_interval": "0.5s", "warmup": "8s", "drain": "20s"}


def test_units() -> None:
    assert parse_size("100KB") == 100_000 and parse_size("1MiB") == 1024**2 and parse_size(512) == 512
    assert parse_bandwidth("100Mbit") == 12.5e6 and parse_bandwidth("12.5MB/s") == 12.5e6
    assert parse_bandwidth("0") is None and parse_bandwidth("1Gbps") == 125e6
    assert parse_latency("25ms±10%") == pytest.approx((0.025, 0.1))
    assert parse_latency("25ms+-10%") == pytest.approx((0.025, 0.1)) and parse_latency("0.01") == (0.01, 0.0)
    for bad in ("10 parsecs", "-5KB"):
        with pytest.raises(ScenarioError):
            parse_size(bad)
    with pytest.raises(ScenarioError, match="unknown scenario key"):
        scenario_from_mapping({"peerz": 3})
    with pytest.raises(ScenarioError, match=r"not a peer\.gossip setting"):
        scenario_from_mapping({"gossip": {"pullIntervall": "1s"}})


def test_scenario_file_with_events(tmp_path: Path) -> None:
    path = tmp_path / "crashy.yaml"
    path.write_text(
        "peers: 6\nblocks: 2\nlatency: 5ms±10%\ngossip: {pullInterval: 2s}\n"
        "events:\n  - {at: 1s, crash: [peer2.org1]}\n  - {at: 3s, restart: peer2.org1}\n"
    )
    scenario = load_scenario(path)
    assert scenario.name == "crashy" and scenario.peers == 6 and scenario.latency == 0.005
    assert [e.action for e in scenario.events] == ["crash", "restart"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("peers: 3\nevents:\n  - {at: 1s, crash: [peer9.org1]}\n")
    with pytest.raises(ScenarioError, match="unknown peers"):
        load_scenario(bad)


def test_uplink_serializes_sends_and_counts_bytes() -> None:
    net = SimNetwork(latency=0.01, bandwidth=1000.0)  # 1000 bytes/s: a 500-byte message takes half a second

    class Sink:
        def __init__(self) -> None:
            self.at: list[float] = []

        def start(self, now: float) -> list:
            return []

        def on_message(self, msg: object, now: float) -> list:
            self.at.append(now)
            return []

        def on_tick(self, now: float) -> list:
            return []

        def next_deadline(self) -> None:
            return None

    a, b = Sink(), Sink()
    net.add("a:1", b"A", b"id-a", a)  # type: ignore[arg-type]
    net.add("b:1", b"B", b"id-b", b)  # type: ignore[arg-type]
    envelope = m.seal(m.data_message(b"ch", 1, b"x" * 480))
    size = envelope.ByteSize()
    net._apply(
        net.peers["a:1"], [Send(envelope, (RemotePeer(b"B", "b:1"),)), Send(envelope, (RemotePeer(b"B", "b:1"),))]
    )
    net.run_for(5)
    assert b.at == pytest.approx([size / 1000 + 0.01, 2 * size / 1000 + 0.01])  # the second waited for the first
    assert net.peers["a:1"].bytes_sent == 2 * size and net.stats.bytes_by_kind["data_msg"] == 2 * size


def test_same_seed_same_figures_and_sane_values() -> None:
    scenario = scenario_from_mapping({**SMALL, "mode": "enhanced", "seed": 3})
    first, again = run_scenario(scenario), run_scenario(scenario)
    a, b = first.to_json(), again.to_json()
    for volatile in ("wall_s",):
        a.pop(volatile), b.pop(volatile)
    assert a == b
    assert a["incomplete_blocks"] == 0 and a["receivers"] == 11
    assert 0 < a["time_to_all_p50_s"] <= a["time_to_all_p99_s"] <= a["time_to_all_max_s"]
    assert a["amplification"] >= 1.0 and a["duplicates_per_peer"] >= 0 and 0 <= a["push_coverage"] <= 1
    other = run_scenario(scenario_from_mapping({**SMALL, "mode": "enhanced", "seed": 4})).to_json()
    assert other["sim_events"] != a["sim_events"] or other["time_to_all_max_s"] != a["time_to_all_max_s"]


def test_crash_and_restart_events_run_and_the_peer_catches_up() -> None:
    scenario = Scenario(
        peers=8,
        blocks=6,
        block_size=2000,
        block_interval=0.5,
        warmup=8.0,
        drain=40.0,
        latency=0.005,
        jitter=0.0,
        events=scenario_from_mapping(
            {"events": [{"at": "0.2s", "crash": ["peer3.org1"]}, {"at": "2s", "restart": ["peer3.org1"]}]}
        ).events,
    )
    result = run_scenario(scenario).to_json()
    assert result["incomplete_blocks"] == 0 and result["receivers"] == 7


def test_command_prints_table_and_writes_json_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "sim.json"
    plots = tmp_path / "plots"
    args = ["sim", "--peers", "10", "--blocks", "3", "--block-size", "2KB", "--block-interval", "0.5s"]
    args += ["--latency", "10ms±10%", "--bandwidth", "100Mbit", "--mode", "both", "--seed", "2", "--warmup", "8s"]
    args += ["--json", str(out), "--plots", str(plots), "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "time to all p50" in result.output and "fabric" in result.output and "enhanced" in result.output
    data = json.loads(out.read_text())
    assert data["mode"] == "both" and data["peers"] == 10 and data["seed"] == 2
    assert [run["mode"] for run in data["runs"]] == ["fabric", "enhanced"]
    for run in data["runs"]:
        assert all(key in run for key in REQUIRED)
        assert run["peers"] == 10 and run["blocks"] == 3 and run["seed"] == 2
    pngs = sorted(p.name for p in plots.iterdir())
    assert pngs == ["custom-seed2-latency-cdf.png", "custom-seed2-time-to-all.png"]
    assert all((plots / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for name in pngs)


def test_command_reports_a_bad_flag_in_one_line() -> None:
    result = CliRunner().invoke(app, ["sim", "--latency", "fast", "--no-plots"])
    assert result.exit_code == 2
    assert "latency" in result.output


def test_real_crypto_on_request() -> None:
    scenario = scenario_from_mapping({**SMALL, "peers": 5, "blocks": 2, "crypto": "x509", "mode": "enhanced"})
    result = run_scenario(scenario).to_json()
    assert result["crypto"] == "x509" and result["incomplete_blocks"] == 0 and result["receivers"] == 4


def test_simulated_peers_routine_logs_stay_out_of_the_output_unless_debugging() -> None:
    args = ["sim", "--peers", "6", "--blocks", "1", "--block-size", "1KB", "--warmup", "3s", "--no-plots", "--quiet"]
    command = [sys.executable, "-c", "from rumor.cli import main; main()"]
    quiet = subprocess.run([*command, *args], capture_output=True, text=True, timeout=120, check=False)
    assert quiet.returncode == 0, quiet.stderr
    assert "time to all p50" in quiet.stdout
    assert "new peer" not in quiet.stderr  # a 1,000-peer run would print a million of these
    debug = subprocess.run(
        [*command, "--log-level", "debug", *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert debug.returncode == 0, debug.stderr
    assert "new peer" in debug.stderr


# --- the operator's view: figure names, plots, help, progress --------------------------------------------------


def synthetic_result(mode: str = "fabric") -> SimResult:
    """A run's figures without running it: latencies from 30 ms to 3 s, across two decades."""
    scenario = Scenario(peers=10, blocks=3, block_size=4000, warmup=1.0)
    blocks = [
        BlockFigures(seq, t0=float(seq), wire_size=4100, latencies=lats, missing=0, pushed=9, advertised=0,
                     pulled=0, transferred=0)
        for seq, lats in ((1, [0.03 * (1 + i) for i in range(9)]), (2, [0.1] * 9), (3, [0.2, 0.4, 3.0] * 3))
    ]  # fmt: skip
    return SimResult(
        scenario=scenario, mode=mode, blocks=blocks, receivers=9, commit_latencies=[0.1, 0.2],
        payload_bytes=3 * 9 * 4100, wire_bytes=200_000, bytes_by_kind={}, messages_by_kind={}, copies_received=27,
        blocks_held=27, warmup_s=1.0, virtual_s=10.0, wall_s=1.0, events=100, machine="test", commit="test",
    )  # fmt: skip


def test_the_table_names_each_figure_beside_its_number() -> None:
    text = table_text([synthetic_result("fabric"), synthetic_result("enhanced")])
    starts = [line.split("  ")[0] for line in text.splitlines()]
    for number, name in FIGURES.items():
        assert f"{number} {name}" in starts, text
    markdown = table_markdown([synthetic_result()])
    assert "| 3 payload amplification | payload sent / ((N-1) x block) | 1.00 |" in markdown


def test_log_axes_are_labelled_with_plain_numbers() -> None:
    """Finding: the log axes read 10^-1, 10^0 (mathtext), and labelled only the decades."""
    import matplotlib.pyplot as plt

    for name, fig in figures([synthetic_result("fabric"), synthetic_result("enhanced")]):
        fig.canvas.draw()
        (ax,) = fig.axes
        axis = ax.xaxis if name == "latency-cdf" else ax.yaxis
        assert axis.get_scale() == "log", name
        labels = [t.get_text() for t in axis.get_ticklabels(which="both") if t.get_text()]
        plt.close(fig)
        assert len(labels) >= 4, (name, labels)
        for label in labels:
            assert "$" not in label and "^" not in label, (name, labels)
            float(label)  # a plain number
        assert {"0.1", "0.2", "0.5", "1"} <= set(labels), (name, labels)


def sim_command() -> Any:
    import typer.main

    return typer.main.get_command(app).commands["sim"]  # type: ignore[attr-defined]


def test_sim_help_shows_every_default() -> None:
    import typer.core

    shown: dict[str, str] = {}
    for param in sim_command().params:
        if not isinstance(param, typer.core.TyperOption) or param.is_flag:
            continue
        match = re.search(r"\\\[default: ([^\]]+)\]", param.help or "")
        assert match is not None or param.default is not None, f"{param.opts[0]} shows no default"
        if match is not None:
            shown[param.name] = match.group(1)
    # The defaults shown for the scenario flags are what runs when they are not given.
    flags = {k: v for k, v in shown.items() if k not in ("preset", "json_path")}
    assert set(flags) == {"peers", "orgs", "blocks", "block_size", "block_interval", "latency", "bandwidth", "loss",
                          "mode", "seed", "crypto", "warmup"}  # fmt: skip
    assert build_scenario(None, None, flags) == replace(build_scenario(None, None, {}), name="custom")


def test_sim_help_documents_every_scenario_key_with_its_true_default() -> None:
    result = CliRunner().invoke(app, ["sim", "--help"], env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
    assert result.exit_code == 0, result.output
    keys = [f.name for f in dataclasses.fields(Scenario) if f.name != "jitter"]
    for key in keys:
        line = f"{key}: {default_text(Scenario(), key)}"
        assert line in result.output, line
    # The reference is YAML: read back, its defaults are the scenario a file without keys gets.
    data = yaml.safe_load(scenario_reference())
    assert data.pop("preset") == "none" and set(data) == set(keys)
    assert scenario_from_mapping(data) == Scenario()
    assert "crash: [peer3.org1]" in result.output and "heal: true" in result.output  # rich markup left intact


def feed(display: SimProgress, clock: list[float], mode: str, blocks: int, upto: int) -> None:
    display(RunProgress(mode, "building", 0, blocks, clock[0]))
    display(RunProgress(mode, "warming up", 0, blocks, clock[0]))
    display(RunProgress(mode, "blocks", 0, blocks, clock[0]))
    for cut in range(1, upto + 1):
        clock[0] += 1.0  # a block per second of wall time
        display(RunProgress(mode, "blocks", cut, blocks, clock[0], eta_s=float(blocks - cut)))


def test_progress_on_a_terminal_is_a_bar_with_the_time_remaining() -> None:
    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    clock = [100.0]
    with SimProgress(console, ["fabric", "enhanced"], 10, clock=lambda: clock[0]) as display:
        assert display.interactive
        feed(display, clock, "fabric", 10, 5)
        snapshot = Console(file=io.StringIO(), width=120, record=True)  # what the bars show now
        snapshot.print(display.bar.get_renderable())
    fabric, enhanced = snapshot.export_text().splitlines()
    assert fabric.startswith("fabric: blocks") and "━" in fabric, fabric
    assert " 5/10 blocks" in fabric and "eta 0:00:05" in fabric, fabric  # 5 left at one a second
    assert enhanced.startswith("enhanced: starting") and " 0/10 blocks" in enhanced, enhanced


def test_progress_elsewhere_is_a_line_now_and_then_with_the_time_left() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=120)
    clock = [0.0]
    with SimProgress(console, ["fabric"], 20, clock=lambda: clock[0]) as display:
        feed(display, clock, "fabric", 20, 20)
        display(RunProgress("fabric", "draining", 20, 20, clock[0]))
        display(RunProgress("fabric", "done", 20, 20, clock[0]))
    lines = out.getvalue().splitlines()
    assert lines[:3] == ["[fabric] building, 0.0s wall", "[fabric] warming up, 0.0s wall",
                         "[fabric] 0/20 blocks cut, 0.0s wall"]  # fmt: skip
    assert "[fabric] 10/20 blocks cut, 10.0s wall, about 10s left" in lines
    assert len([line for line in lines if "blocks cut" in line]) == 11  # one a tenth of the blocks, not 20
    assert lines[-2:] == ["[fabric] draining, 20.0s wall", "[fabric] done, 20.0s wall"]


def test_progress_of_runs_in_worker_processes_reaches_the_caller() -> None:
    seen: list[RunProgress] = []
    results = run_modes(scenario_from_mapping({**SMALL, "mode": "both"}), progress=seen.append, jobs=2)
    assert [r.mode for r in results] == ["fabric", "enhanced"]
    for mode in ("fabric", "enhanced"):
        mine = [p for p in seen if p.mode == mode]
        assert [p.phase for p in mine][:2] == ["building", "warming up"] and mine[-1].phase == "done"
        assert [p.blocks_cut for p in mine if p.phase == "blocks"] == [0, 1, 2, 3, 4]
        assert all(p.eta_s is not None for p in mine if p.phase == "blocks" and p.blocks_cut)


def test_sim_without_quiet_reports_progress_on_stderr_only() -> None:
    args = ["sim", "--peers", "6", "--blocks", "2", "--block-size", "1KB", "--warmup", "3s", "--no-plots"]
    command = [sys.executable, "-c", "from rumor.cli import main; main()"]
    done = subprocess.run([*command, *args], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "[fabric] 2/2 blocks cut" in done.stderr and "left" in done.stderr and "[fabric] done" in done.stderr
    assert "blocks cut" not in done.stdout and "1 block latency" in done.stdout


def test_warm_start_hands_every_peer_the_whole_membership(caplog: pytest.LogCaptureFixture) -> None:
    """The warm start's membership responses are read (a peer reads only responses it expects): every peer knows
    every other one at once, and no peer logs an unsolicited response."""
    from rumor.sim.runner import _Run
    from rumor.sim.scenario import Scenario

    run = _Run(Scenario(peers=12, orgs=2, blocks=1), "fabric", None)
    run.build()
    caplog.set_level(logging.WARNING)
    run.warm_start()
    cores = [run.cluster.core(spec.name) for spec in run.cluster.specs.values()]
    assert all(core is not None and len(core.node.peers()) == 11 for core in cores)
    assert not [r for r in caplog.records if "membership response" in r.getMessage()]
