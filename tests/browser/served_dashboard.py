"""A real Dashboard (rumor.ops.dashboard) fed scripted statuses, served on a free loopback port from an event
loop in a thread of its own, for the browser tests that need a given state of the page rather than a network.

The model can be driven directly (``call``): updates at chosen wall-clock times, latency samples, events.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any, TypeVar

from aiohttp import web

from rumor.ops.dashboard import Controls, Dashboard

T = TypeVar("T")

ORGS = {"p0": "Org1MSP", "p1": "Org1MSP", "q0": "Org2MSP", "q1": "Org2MSP"}
PKI = {name: f"{i + 10:02x}" * 32 for i, name in enumerate(ORGS)}


def peer_id(name: str) -> str:
    return f"peer{name[1]}.org{1 if name[0] == 'p' else 2}.example.com"


def endpoint(name: str) -> str:
    return f"127.0.0.1:{7051 + list(ORGS).index(name)}"


def status(
    name: str,
    height: int = 5,
    *,
    sent: int = 0,
    members: tuple[str, ...] | None = None,
    member_ids: bool = True,
    channels: tuple[str, ...] = ("mychannel",),
) -> dict[str, Any]:
    """What ``name``'s GET /api/status would say; ``member_ids`` says whether its membership names peers by
    their certificate's CN (a rumor peer from this change on) or only by endpoint (before)."""
    others = [o for o in (members if members is not None else ORGS) if o != name]
    return {
        "peer_id": peer_id(name),
        "org": ORGS[name],
        "endpoint": endpoint(name),
        "pki_id": PKI[name],
        "channels": {ch: {"height": height, "leader": name in ("p0", "q0"), "peers": 2} for ch in channels},
        "membership": [
            {
                "pki_id": PKI[o],
                "endpoint": endpoint(o),
                "org": ORGS[o],
                "alive": True,
                **({"name": peer_id(o)} if member_ids else {}),
            }
            for o in others
        ],
        "connections": [PKI[o] for o in others],
        "comm": {"comm_messages_sent": sent, "comm_messages_received": sent, "comm_bytes_sent": sent * 300},
        "events": [],
    }


class FakeControls:
    """The buttons of network up, over a dict of process states."""

    def __init__(self, processes: Mapping[str, str], load: Mapping[str, Any] | None = None) -> None:
        self.states = dict(processes)
        self.load = dict(load or {"rate": 2, "paused": False, "blocks": 0, "error": None})

    async def stop_peer(self, name: str) -> None:
        self.states[name] = "stopped"

    async def start_peer(self, name: str) -> None:
        self.states[name] = "running"

    def set_load_paused(self, paused: bool) -> None:
        self.load["paused"] = paused

    def processes(self) -> Mapping[str, str]:
        return self.states

    def load_state(self) -> Mapping[str, Any] | None:
        return self.load


class ServedDashboard:
    """``with ServedDashboard(source, ...) as served:`` serves the page at ``served.url`` until the block ends."""

    def __init__(
        self,
        source: Callable[[], Mapping[str, Mapping[str, Any] | None]],
        *,
        view: str = "network",
        title: str = "test",
        interval: float = 0.5,
        controls: Controls | None = None,
        only_when_watched: bool = False,
    ) -> None:
        self._source = source
        self._kwargs: dict[str, Any] = {
            "view": view,
            "title": title,
            "interval": interval,
            "controls": controls,
            "only_when_watched": only_when_watched,
        }
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="served-dashboard", daemon=True)
        self.dashboard: Dashboard
        self._runner: web.AppRunner
        self.url = ""

    def __enter__(self) -> ServedDashboard:
        self._thread.start()
        self._run(self._start()).result(30)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._run(self._stop()).result(30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(30)
            self.loop.close()

    def _run(self, coro: Any) -> Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    async def _start(self) -> None:
        async def source() -> Mapping[str, Mapping[str, Any] | None]:
            return self._source()

        self.dashboard = Dashboard(source, **self._kwargs)
        app = web.Application()
        self.dashboard.add_routes(app)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/"
        self.dashboard.start()

    async def _stop(self) -> None:
        await self.dashboard.stop()
        await self._runner.cleanup()

    def call(self, fn: Callable[[Dashboard], T]) -> T:
        """Run ``fn(dashboard)`` in the dashboard's own loop (the model is not thread-safe) and return its result."""

        async def run() -> T:
            return fn(self.dashboard)

        result: T = self._run(run()).result(30)
        return result

    def refresh(self) -> dict[str, Any]:
        """One round now (poll, update, broadcast); returns the snapshot."""
        snapshot: dict[str, Any] = self._run(self.dashboard.refresh()).result(30)
        return snapshot
