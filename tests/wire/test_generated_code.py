"""The committed generated modules are what proto/ produces today (`make proto` refreshes them)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "src" / "rumor" / "wire" / "pb"


def _files(base: Path) -> dict[str, str]:
    return {
        str(p.relative_to(base)): p.read_text()
        for p in sorted(base.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_committed_generated_code_is_current(tmp_path: Path) -> None:
    out = tmp_path / "pb"
    subprocess.run([sys.executable, str(ROOT / "tools" / "genproto.py"), str(out)], check=True)
    fresh, committed = _files(out), _files(COMMITTED)
    assert sorted(fresh) == sorted(committed), "generated file set differs: run `make proto`"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale generated code in {stale}: run `make proto`"
