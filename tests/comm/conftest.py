"""Fixtures for the comm tests: generated crypto material (once per session) and a factory of comms."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from rumor.comm import Comm
from rumor.core.types import Tracer
from rumor.crypto import GeneratedMaterial, default_spec, generate

sys.path.insert(0, str(Path(__file__).parent))

from comm_helpers import KNOWN_ORGS, PeerFiles, make_comm, peer_files


@pytest.fixture(scope="session")
def material(tmp_path_factory: pytest.TempPathFactory) -> GeneratedMaterial:
    return generate(default_spec(3, 2), tmp_path_factory.mktemp("comm-material") / "crypto-config")


@pytest.fixture(scope="session")
def files(material: GeneratedMaterial) -> Callable[[str], PeerFiles]:
    def get(host: str) -> PeerFiles:
        return peer_files(material, host, KNOWN_ORGS)

    return get


@pytest.fixture
async def comms(files: Callable[[str], PeerFiles]) -> AsyncIterator[Callable[..., Comm]]:
    """A factory of started comms (``await comms(host, tls=..., **config)``), all stopped after the test."""
    started: list[Comm] = []

    async def start(host: str, *, tls: bool = True, tracer: Tracer | None = None, **config: object) -> Comm:
        comm = make_comm(files(host), tls=tls, tracer=tracer, **config)
        await comm.start()
        started.append(comm)
        return comm

    yield start  # type: ignore[misc]
    for comm in reversed(started):
        await comm.stop()
