"""Every key documented in docs/configuration.md does something: its setting is read outside the schema.

Finding: six keys were documented as doing something and read nowhere (membershipTrackerInterval,
recvBuffSize, pvtData.*). A key rumor does not act on belongs in FABRIC_KEYS_IGNORED, listed as such."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import rumor
from rumor.config import Config

SRC = Path(rumor.__file__).parent
SCHEMA_FILES = {SRC / "config.py", SRC / "ops" / "configdoc.py"}


def _leaves(cls: type, prefix: str = "") -> list[tuple[str, str]]:
    out = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(f.type if isinstance(f.type, type) else None):
            out += _leaves(f.type, f"{prefix}{f.name}.")  # type: ignore[arg-type]
        elif f.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(f.default_factory):
            out += _leaves(f.default_factory, f"{prefix}{f.name}.")  # type: ignore[arg-type]
        else:
            out.append((f"{prefix}{f.name}", f.name))
    return out


def test_every_documented_key_is_read_somewhere() -> None:
    code = "\n".join(p.read_text() for p in SRC.rglob("*.py") if p not in SCHEMA_FILES and "/pb/" not in str(p))
    unread = [path for path, attr in _leaves(Config) if not re.search(rf"\.{attr}\b", code)]
    assert not unread, f"documented but read nowhere (act on them, or list them in FABRIC_KEYS_IGNORED): {unread}"
