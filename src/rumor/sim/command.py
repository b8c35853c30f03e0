"""What ``rumor sim`` does, apart from parsing its flags (which ``rumor.cli`` does)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from rumor.sim.report import plot, plots_available, table_text, write_json
from rumor.sim.runner import SimResult, run_modes, stderr_progress
from rumor.sim.scenario import PRESETS, Scenario, ScenarioError, load_scenario, scenario_from_mapping

__all__ = ["build_scenario", "run_sim"]


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
        results = run_modes(scenario, progress=None if quiet else stderr_progress, jobs=jobs)
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
