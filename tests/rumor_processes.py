"""What every test that runs rumor as a real process needs: the console script and a clean environment."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def rumor_script() -> str:
    """The ``rumor`` console script of the interpreter running the tests (else the one on PATH)."""
    beside = Path(sys.executable).parent / "rumor"
    if beside.exists():
        return str(beside)
    found = shutil.which("rumor")
    assert found, "the rumor console script is not installed"
    return found


RUMOR = rumor_script()


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without the caller's RUMOR_/ORDERER_ variables (they would change the configuration
    or be refused as unknown keys), wide enough for tables, unbuffered; plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("RUMOR_", "ORDERER_"))}
    env["COLUMNS"] = "160"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env
