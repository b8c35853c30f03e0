"""Fixtures of the integration tests: ``clusters`` makes a ``Cluster`` per network and tears every one down;
``subnet`` gives a test its own bridge and network namespaces (netns.py) and removes them afterwards."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from pathlib import Path

import aiohttp
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from netns import Subnet, unavailable
from procnet import Cluster

from rumor.network import NetworkLayout


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, None, None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.stash[_FAILED] = report.failed


_FAILED = pytest.StashKey[bool]()


@pytest.fixture
async def clusters(request: pytest.FixtureRequest) -> AsyncIterator[Callable[[NetworkLayout], Cluster]]:
    """``clusters(layout)`` gives a Cluster on that network; afterwards every process it started is killed
    (process group), and the test fails if any is left. The logs' tails are printed when the test failed."""
    made: list[Cluster] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:

        def make(layout: NetworkLayout) -> Cluster:
            cluster = Cluster(layout, http)
            made.append(cluster)
            return cluster

        try:
            yield make
        finally:
            if request.node.stash.get(_FAILED, False):
                for cluster in made:
                    print(cluster.logs())
            for cluster in made:
                await cluster.close()


@pytest.fixture
def netns_available() -> None:
    """Skip unless network namespaces can be made here (root, ip and nft): a failure under CI=true, whose
    machines are root and get the tools from ``make test``."""
    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture
def subnet(netns_available: None) -> Iterator[Subnet]:
    """A bridge and namespaces of this test only (``subnet.add_host(name)``), all gone after it, however it ends."""
    with Subnet.create() as net:
        yield net
