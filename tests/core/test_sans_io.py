"""The protocol core does no I/O, reads no clock and draws no module-level randomness (docs/architecture.md).

Checked on the source itself, so a change that slips an ``await`` or a ``time.time()`` into
``rumor.core`` fails here rather than in a flaky simulation.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "src" / "rumor" / "core"
MODULES = sorted(CORE.glob("*.py"))

FORBIDDEN_IMPORTS = {"asyncio", "socket", "selectors", "threading", "time", "grpc", "aiohttp", "ssl", "subprocess"}
CLOCK_CALLS = {("time", "time"), ("time", "monotonic"), ("time", "time_ns"), ("time", "perf_counter")}
ALLOWED_RANDOM = {"Random"}  # an injected generator is built from random.Random; nothing else from the module


def _violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        where = f"{path.name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Await | ast.AsyncFunctionDef | ast.AsyncFor | ast.AsyncWith):
            found.append(f"{where}: async code")
        elif isinstance(node, ast.Import):
            found += [f"{where}: imports {a.name}" for a in node.names if a.name.split(".")[0] in FORBIDDEN_IMPORTS]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in FORBIDDEN_IMPORTS:
                found.append(f"{where}: imports from {node.module}")
            if node.module == "random":
                found += [f"{where}: imports random.{a.name}" for a in node.names if a.name not in ALLOWED_RANDOM]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if (node.value.id, node.attr) in CLOCK_CALLS:
                found.append(f"{where}: reads the clock ({node.value.id}.{node.attr})")
            if node.value.id == "random" and node.attr not in ALLOWED_RANDOM:
                found.append(f"{where}: module-level random.{node.attr}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "open":
            found.append(f"{where}: opens a file")
    return found


def test_core_modules_exist() -> None:
    assert {p.stem for p in MODULES} >= {"discovery", "pull", "emitter", "msgstore", "channel", "election", "state"}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_module_is_sans_io(path: Path) -> None:
    assert _violations(path) == []


def test_the_checker_catches_what_it_should(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import time\nimport random\nasync def f():\n    await g()\n"
        "def h():\n    return time.time() + random.random()\n"
    )
    found = " ".join(_violations(bad))
    for expected in ("imports time", "async code", "reads the clock", "module-level random.random"):
        assert expected in found
