"""The systemd units in deploy/ are valid for systemd and run commands that exist with these arguments."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUMOR = Path(sys.executable).parent / "rumor"
UNITS = sorted((ROOT / "deploy").glob("*.service"))


def test_units_exist_and_the_docs_walk_through_them() -> None:
    assert [u.name for u in UNITS] == ["rumor-orderer.service", "rumor-peer@.service"]
    page = (ROOT / "docs" / "multi-host.md").read_text()
    for unit in UNITS:
        assert unit.name in page


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_unit_is_valid_and_its_command_parses(unit: Path, tmp_path: Path) -> None:
    text = unit.read_text().replace("/opt/rumor/venv/bin/rumor", str(RUMOR))
    exec_start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    argv = shlex.split(exec_start.removeprefix("ExecStart=").replace("%i", "peer0.org1.example.com"))
    # The same command line with --help instead of its config: every option it passes exists.
    helped = subprocess.run(
        [*argv[: argv.index("--config")], "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert helped.returncode == 0, helped.stderr
    analyze = shutil.which("systemd-analyze")
    if analyze is None:  # systemd's own check needs systemd; the command line was checked above
        return
    copy = tmp_path / unit.name.replace("@.", "@peer0.org1.example.com.")
    copy.write_text(text)
    verified = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False)
    problems = [
        line for line in (verified.stdout + verified.stderr).splitlines() if str(copy) in line or "Unknown" in line
    ]
    assert verified.returncode == 0 and not problems, verified.stdout + verified.stderr
