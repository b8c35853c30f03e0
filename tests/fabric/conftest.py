"""The Fabric fixture's tests: skipped (a failure under CI) when ../shared/fabric is not beside the repository."""

from __future__ import annotations

from pathlib import Path

import pytest
from fabric_fixture import FABRIC, block_bytes

from rumor import channelconfig as cc


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if not FABRIC.is_dir():
        skip = pytest.mark.skip(reason=f"{FABRIC} (the Fabric fixture beside the repository) is missing")
        for item in items:
            if str(item.fspath).startswith(str(Path(__file__).parent)):
                item.add_marker(skip)


@pytest.fixture(scope="session")
def genesis_config() -> cc.ChannelConfig:
    return cc.read_genesis(block_bytes(0))
