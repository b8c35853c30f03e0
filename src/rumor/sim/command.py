"""What ``rumor sim`` does, apart from parsing its flags (which ``rumor.cli`` does)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from rumor.sim.report import plot, plots_available, table_text, write_json
from rumor.sim.runner import RunProgress, SimResult, progress_line, run_modes
from rumor.sim.scenario import PRESETS, Scenario, ScenarioError, load_scenario, scenario_from_mapping

__all__ = ["SimProgress", "build_scenario", "run_sim"]


class SimProgress:
    """Shows how far the runs are, on ``console`` (stderr): on a terminal a bar per mode with the blocks cut, the
    time elapsed and the time remaining; otherwise (a log, CI) a line now and then, as a bar cannot redraw there.

    The time remaining is rich's estimate from the rate at which blocks were cut lately, so it settles after the
    first blocks; warm-up, whose length nobody knows in advance, shows none.
    """

    def __init__(
        self, console: Console, modes: Sequence[str], blocks: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.console = console
        self.interactive = console.is_terminal
        self.bar = Progress(  # the bars (shown only on a terminal)
            TextColumn("{task.description:<22}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("blocks"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            get_time=clock,
            transient=False,
        )
        self._tasks: dict[str, TaskID] = {}
        for mode in modes:
            self._tasks[mode] = self.bar.add_task(f"{mode}: starting", total=blocks)

    def __enter__(self) -> SimProgress:
        if self.interactive:
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.interactive:
            self.bar.stop()

    def __call__(self, progress: RunProgress) -> None:
        if not self.interactive:
            line = progress_line(progress)
            if line is not None:
                self.console.print(line, markup=False, highlight=False)
            return
        if progress.note:
            self.bar.console.print(f"{progress.mode}: {progress.note}", markup=False, highlight=False)
        task = self._tasks.get(progress.mode)
        if task is None:
            return
        self.bar.update(
            task, description=f"{progress.mode}: {progress.phase}", completed=progress.blocks_cut, total=progress.blocks
        )


def build_scenario(file: Path | None, preset: str | None, flags: Mapping[str, Any]) -> Scenario:
    """The scenario of a file or preset (default sim-100), with the flags that were given laid over it."""
    if file is not None and preset is not None:
        raise ScenarioError("give a scenario file or --preset, not both")
    if file is not None:
        base = load_scenario(file)
    elif preset is not None:
        if preset not in PRESETS:
            raise ScenarioError(f"preset {preset!r}: expected one of {', '.join(PRESETS)}")
        base = PRESETS[preset]
    else:
        base = PRESETS["sim-100"]
    given = {k: v for k, v in flags.items() if v is not None}
    scenario = scenario_from_mapping(given, base=base)
    if file is None and preset is None and given and "name" not in given:
        scenario = replace(scenario, name="custom")
    return scenario


def run_sim(
    scenario: Scenario,
    *,
    json_path: Path | None,
    plots_dir: Path | None,
    quiet: bool = False,
    jobs: int = 1,
) -> list[SimResult]:
    """Run every mode of ``scenario`` (``jobs`` at once), print the table, write the JSON and the plots."""
    # The simulated peers log what a real peer logs (a 1,000-peer warm start alone is a million "new peer"
    # lines): keep their routine lines out of a simulation's output unless the user is debugging.
    peers_logger = logging.getLogger("rumor")
    quieted = not logging.getLogger().isEnabledFor(logging.DEBUG) and peers_logger.level < logging.WARNING
    previous = peers_logger.level
    if quieted:
        peers_logger.setLevel(logging.WARNING)
    try:
        if quiet:
            results = run_modes(scenario, progress=None, jobs=jobs)
        else:
            with SimProgress(Console(stderr=True), scenario.modes, scenario.blocks) as display:
                results = run_modes(scenario, progress=display, jobs=jobs)
    finally:
        if quieted:
            peers_logger.setLevel(previous)
    print(table_text(results))
    if json_path is not None:
        write_json(results, json_path)
        print(f"wrote {json_path}")
    if plots_dir is not None:
        if plots_available():
            for path in plot(results, plots_dir):
                print(f"wrote {path}")
        else:
            print("plots skipped: matplotlib is not installed (pip install 'rumor[sim]')", file=sys.stderr)
    return results
