"""The docs that are generated or runnable: the configuration reference and the Python API example."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from rumor.config import iter_keys
from rumor.ops.configdoc import render

ROOT = Path(__file__).resolve().parents[2]


def test_configuration_reference_is_up_to_date() -> None:
    page = ROOT / "docs" / "configuration.md"
    assert page.is_file(), "docs/configuration.md is missing: run `make docs`"
    assert page.read_text() == render(), "docs/configuration.md is stale: run `make docs` and commit the result"


def test_configuration_reference_lists_every_key_with_default_and_doc() -> None:
    page = render()
    for key in iter_keys():
        line = next((ln for ln in page.splitlines() if ln.startswith(f"| `{key.path}` |")), None)
        assert line is not None, key.path
        assert key.env in line and key.doc.split("|")[0][:30] in line


def test_python_api_example_runs() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "embedded_peers.py"), "--blocks", "3"],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "bob received block 3" in result.stdout
    assert result.stdout.strip().endswith("done")


def test_readme_has_the_quickstart_and_links_the_docs() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "rumor network up" in readme
    for linked in ("docs/configuration.md", "docs/multi-host.md", "examples/embedded_peers.py"):
        assert linked in readme, linked
        assert (ROOT / linked).exists(), linked
