"""Under CI=true a skipped test fails the run; elsewhere it is just a skip."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


def run_pytest(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    shutil.copy(Path(__file__).parent / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_needs_a_browser.py").write_text(
        "import pytest\n\ndef test_browser():\n    pytest.skip('chromium is not installed')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )


def test_skip_fails_under_ci(tmp_path: Path) -> None:
    result = run_pytest(tmp_path, "true")
    assert result.returncode == 1
    assert "skipped under CI=true" in result.stdout and "chromium is not installed" in result.stdout


def test_skip_is_a_skip_outside_ci(tmp_path: Path) -> None:
    result = run_pytest(tmp_path, None)
    assert result.returncode == 0
    assert "1 skipped" in result.stdout
