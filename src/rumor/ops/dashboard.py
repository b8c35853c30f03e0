"""The live dashboard: a model of what the peers report, a WebSocket broadcast hub, and the HTTP routes.

    peers' GET /api/status ──poll──> DashboardModel.update() ──snapshot──> Hub.broadcast() ──WebSocket──> page
         (or one peer's own status)        │ heights over time -> block propagation latency
                                           │ comm counters over time -> messages/s, bytes/s
                                           └ tracer events (peer_alive, peer_dead, leader_changed, block_rejected)

The same page serves two views: ``network`` (``rumor network up`` polls every peer it runs, and can stop and
start them) and ``peer`` (a peer's operations endpoint shows its own view of the network). A node of the
membership graph is known by its PKI-ID; a peer the model polls is "observed", every other one is known
only from the observers' membership lists.

Block propagation latency: for block ``n`` of a channel, the time from the first poll that saw some peer at a
height above ``n`` to the first poll that saw every reachable peer there, so its resolution is the poll
interval (the page says so). When every peer's status lists its recent commits with their times
(``channels[ch]["recent_commits"] = [[number, unix_time], ...]``), the latency is exact instead: the last
commit time minus the first. Only blocks that appear while the dashboard runs are measured.

A page that opens gets the first state (``Dashboard.first_state``: the latest snapshot, the recent events and
the traffic of the last ``traffic_window`` seconds) as the first WebSocket message and from ``GET /api/dashboard``,
which the page also reads while its WebSocket is not open.

The model is pure (time comes in as ``now``, wall-clock ``wall``), so tests drive it without a network.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from aiohttp import WSMsgType, web

log = logging.getLogger("rumor.ops.dashboard")

STATIC_DIR = Path(str(resources.files("rumor.ops") / "static"))
"""index.html, dashboard.js, dashboard.css: plain files, no build step."""

EVENT_KINDS = frozenset({"peer_alive", "peer_dead", "leader_changed", "block_rejected", "bootstrap_refused"})

PROCESS_REASONS = frozenset({"stopped", "exited", "killed"})
"""Process states (of ``Controls.processes``) that say why an observed peer does not answer: shown as they are."""


def format_duration(seconds: float) -> str:
    """``41 ms`` under a second, ``2.3 s`` from there on: one decimal of a second would say 0.0 s for gossip."""
    if seconds < 1.0:
        return f"{round(seconds * 1000)} ms"
    return f"{seconds:.1f} s"


# --------------------------------------------------------------------------------------------------
# The broadcast hub


class Client(Protocol):
    """What the hub sends to: an aiohttp ``WebSocketResponse`` or a test double."""

    async def send_str(self, data: str) -> None: ...

    async def close(self) -> Any: ...


class Hub:
    """Fans each message out to every registered client; a client that fails or stalls is dropped."""

    def __init__(self, send_timeout: float = 2.0) -> None:
        self.clients: set[Client] = set()
        self.send_timeout = send_timeout
        self.sent = 0

    def register(self, client: Client) -> None:
        self.clients.add(client)

    def unregister(self, client: Client) -> None:
        self.clients.discard(client)

    async def broadcast(self, message: Mapping[str, Any]) -> None:
        """Send ``message`` (as JSON) to every client at once; returns when each has taken it or been dropped."""
        if not self.clients:
            return
        text = json.dumps(message, separators=(",", ":"))
        clients = list(self.clients)
        results = await asyncio.gather(*(self._send(c, text) for c in clients), return_exceptions=True)
        for client, result in zip(clients, results, strict=True):
            if isinstance(result, BaseException):
                log.debug("dropping a dashboard client: %r", result)
                self.unregister(client)
                with contextlib.suppress(Exception):
                    await client.close()
        self.sent += 1

    async def _send(self, client: Client, text: str) -> None:
        async with asyncio.timeout(self.send_timeout):
            await client.send_str(text)

    async def close(self) -> None:
        clients, self.clients = list(self.clients), set()
        for client in clients:
            with contextlib.suppress(Exception):
                await client.close()


# --------------------------------------------------------------------------------------------------
# The model


@dataclass
class _Counters:
    when: float
    values: dict[str, int]


@dataclass
class _NodeInfo:
    key: str
    own_name: str = ""
    """The peer id the peer reports itself (its status), or the name network up runs it under."""
    cert_name: str = ""
    """The peer id another peer's membership gives it (the CN of its certificate)."""
    org: str = ""
    endpoint: str = ""
    pki_id: str = ""

    @property
    def name(self) -> str:
        """Its own word first, then its certificate's, then where it listens: an endpoint names no one."""
        return self.own_name or self.cert_name or self.endpoint or self.key[:16]


@dataclass
class _Pending:
    first_seen: float
    wall: float


@dataclass
class DashboardModel:
    """Turns successive status reports into snapshots for the page. ``view`` is ``network`` or ``peer``."""

    view: str = "network"
    title: str = "rumor"
    poll_interval: float = 0.5
    keep_latencies: int = 200
    keep_events: int = 300
    pending_limit: float = 120.0
    """A block not on every peer after this many seconds is no longer waited for (counted as incomplete)."""
    rate_window: float = 5.0
    """Messages/s and bytes/s are averaged over this many seconds."""
    traffic_window: float = 120.0
    """How much of the traffic chart's past is kept, so that a page opened now draws it at once."""
    rates: dict[str, dict[str, float]] = field(default_factory=dict)
    latencies: dict[str, deque[float]] = field(default_factory=dict)
    incomplete: dict[str, int] = field(default_factory=dict)
    exact: dict[str, bool] = field(default_factory=dict)
    """Channels whose latencies come from the peers' own commit timestamps rather than from polling."""
    events: deque[dict[str, Any]] = field(default_factory=deque)
    traffic: deque[dict[str, float]] = field(default_factory=deque)
    """{"t": wall time, "msgs": messages/s, "bytes": bytes/s} sent by the observed peers, one per update."""
    _counters: dict[str, deque[_Counters]] = field(default_factory=dict)
    _nodes: dict[str, _NodeInfo] = field(default_factory=dict)
    _keys: dict[str, str] = field(default_factory=dict)  # observed peer's name -> its node's key
    _pending: dict[str, dict[int, _Pending]] = field(default_factory=dict)
    _baseline: dict[str, int] = field(default_factory=dict)
    _seen_events: set[tuple[Any, ...]] = field(default_factory=set)
    _seen_order: deque[tuple[Any, ...]] = field(default_factory=deque)
    _last: dict[str, Any] = field(default_factory=dict)
    _new_events: list[dict[str, Any]] = field(default_factory=list)

    def update(
        self,
        now: float,
        statuses: Mapping[str, Mapping[str, Any] | None],
        *,
        wall: float | None = None,
        processes: Mapping[str, str] | None = None,
        controllable: bool = False,
        load: Mapping[str, Any] | None = None,
        ordering: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Take one round of polls and return the snapshot.

        ``statuses`` maps each observed peer's name to its ``/api/status`` (None: unreachable); ``processes``
        maps the same names to the state of its process when the caller runs it (running, stopped, ...).
        """
        wall = time.time() if wall is None else wall
        processes = processes or {}
        reachable = {name: s for name, s in statuses.items() if s is not None}
        observed_keys: dict[str, str] = {}
        for name, status in reachable.items():
            key = str(status.get("pki_id") or f"name:{name}")
            observed_keys[name] = key
            self._keys[name] = key
            info = self._nodes.setdefault(key, _NodeInfo(key))
            info.own_name = str(status.get("peer_id") or name)
            info.org = str(status.get("org") or info.org)
            info.endpoint = str(status.get("endpoint") or info.endpoint)
            info.pki_id = str(status.get("pki_id") or "")
            self._update_rates(key, now, status.get("comm") or {})
        for status in reachable.values():
            for member in status.get("membership") or []:
                key = str(member.get("pki_id") or "")
                if not key:
                    continue
                info = self._nodes.setdefault(key, _NodeInfo(key, pki_id=key))
                info.org = info.org or str(member.get("org") or "")
                info.endpoint = info.endpoint or str(member.get("endpoint") or "")
                info.cert_name = info.cert_name or str(member.get("name") or member.get("peer_id") or "")
        # Observed peers that did not answer: keep them under the key they had last time, or (never reached) under
        # that of the member whose certificate bears their name, so that they are one node rather than two.
        for name in statuses:
            if name not in reachable:
                key = self._keys.get(name) or self._key_named(name) or f"name:{name}"
                observed_keys[name] = key
                self._nodes.setdefault(key, _NodeInfo(key, own_name=name))
                self.rates.pop(key, None)
                self._counters.pop(key, None)
        for name, status in reachable.items():  # once every node has its name, so events can say who
            self._take_events(self._nodes[observed_keys[name]].name, status.get("events") or [])

        self._record_traffic(wall, [observed_keys[name] for name in reachable])

        channels = sorted({ch for s in reachable.values() for ch in (s.get("channels") or {})})
        if self.view == "network":  # one peer's own heights say nothing about reaching every peer
            self._track_latency(now, wall, channels, reachable)
        snapshot = self._snapshot(now, wall, channels, statuses, observed_keys, processes, controllable, load)
        # the ordering service as its runner sees it (network up: orderers, each channel's cutter, etcd members)
        snapshot["ordering"] = dict(ordering) if ordering is not None else None
        self._last = snapshot
        return snapshot

    # --- pieces of update -----------------------------------------------------------------------

    def _key_named(self, name: str) -> str | None:
        return next((key for key, info in self._nodes.items() if info.cert_name == name), None)

    def _update_rates(self, key: str, now: float, comm: Mapping[str, Any]) -> None:
        """Rates over the last ``rate_window`` seconds (gossip is bursty: one poll interval would flicker)."""
        values = {k: int(v) for k, v in comm.items() if isinstance(v, int | float)}
        history = self._counters.setdefault(key, deque())
        if history and values.get("comm_messages_sent", 0) < history[-1].values.get("comm_messages_sent", 0):
            history.clear()  # the peer restarted: its counters begin again from zero
        history.append(_Counters(now, values))
        while len(history) > 2 and now - history[1].when >= self.rate_window:
            history.popleft()
        oldest = history[0]
        span = now - oldest.when
        if span <= 0:
            self.rates.setdefault(key, {"msg_out": 0.0, "msg_in": 0.0, "bytes_out": 0.0, "bytes_in": 0.0})
            return

        def rate(name: str) -> float:
            return max(0.0, (values.get(name, 0) - oldest.values.get(name, 0)) / span)

        self.rates[key] = {
            "msg_out": rate("comm_messages_sent"),
            "msg_in": rate("comm_messages_received"),
            "bytes_out": rate("comm_bytes_sent"),
            "bytes_in": rate("comm_bytes_received"),
        }

    def _record_traffic(self, wall: float, keys: list[str]) -> None:
        rates = [self.rates.get(key, {}) for key in keys]
        point = {
            "t": wall,
            "msgs": sum(r.get("msg_out", 0.0) for r in rates),
            "bytes": sum(r.get("bytes_out", 0.0) for r in rates),
        }
        self.traffic.append(point)
        while self.traffic and wall - self.traffic[0]["t"] > self.traffic_window:
            self.traffic.popleft()

    def traffic_history(self) -> list[dict[str, float]]:
        """The traffic points of the last ``traffic_window`` seconds, oldest first."""
        return list(self.traffic)

    def _take_events(self, observer: str, events: list[Mapping[str, Any]]) -> None:
        for event in events:
            kind = str(event.get("event", ""))
            if kind not in EVENT_KINDS:
                continue
            identity = (observer, event.get("time"), kind, event.get("pki_id"), event.get("channel"))
            if identity in self._seen_events:
                continue
            self._seen_events.add(identity)
            self._seen_order.append(identity)
            while len(self._seen_order) > 5000:
                self._seen_events.discard(self._seen_order.popleft())
            self.add_event(self._describe(observer, event), time=float(event.get("time") or time.time()))

    def add_event(self, entry: Mapping[str, Any], *, time: float | None = None) -> dict[str, Any]:
        """Log an event (``{"event": kind, "text": ..., ...}``); it goes out with the next snapshot."""
        record = {"time": time if time is not None else _wall(), **entry}
        self.events.append(record)
        while len(self.events) > self.keep_events:
            self.events.popleft()
        self._new_events.append(record)
        return record

    def take_new_events(self) -> list[dict[str, Any]]:
        """Events logged since the last call, oldest first (sorted by time)."""
        new, self._new_events = self._new_events, []
        return sorted(new, key=lambda e: e["time"])

    def _name_of(self, pki_id: Any, endpoint: Any = None) -> str:
        info = self._nodes.get(str(pki_id or ""))
        if info is not None and info.name:
            return info.name
        return str(endpoint or (str(pki_id)[:16] if pki_id else "?"))

    def _describe(self, observer: str, event: Mapping[str, Any]) -> dict[str, Any]:
        kind = str(event["event"])
        subject = self._name_of(event.get("pki_id"), event.get("endpoint"))
        if kind == "peer_alive":
            text = f"{observer}: {subject} joined" if event.get("new") else f"{observer}: {subject} is alive again"
            kind = "peer_joined" if event.get("new") else "peer_alive"
        elif kind == "peer_dead":
            text = f"{observer}: declared {subject} dead"
            if event.get("reason"):
                text += f" ({event['reason']})"
        elif kind == "leader_changed":
            verb = "now leads" if event.get("is_leader") else "no longer leads"
            text = f"{observer} {verb} its org on {event.get('channel', '?')}"
        elif kind == "block_rejected":
            text = f"{observer}: rejected block {event.get('seq_num', '?')} on {event.get('channel', '?')}"
            if event.get("reason"):
                text += f": {event['reason']}"
        else:
            text = f"{observer}: {kind.replace('_', ' ')} {subject}"
        return {"event": kind, "peer": observer, "subject": subject if "pki_id" in event else None, "text": text}

    def _track_latency(
        self, now: float, wall: float, channels: list[str], reachable: Mapping[str, Mapping[str, Any]]
    ) -> None:
        for channel in channels:
            heights = [
                int(s["channels"][channel].get("height", 0))
                for s in reachable.values()
                if channel in (s.get("channels") or {})
            ]
            if not heights:
                continue
            top, bottom = max(heights), min(heights)
            pending = self._pending.setdefault(channel, {})
            if channel not in self._baseline:
                self._baseline[channel] = top  # blocks committed before we looked are not measured
                continue
            for number in range(max(self._baseline[channel], max(pending, default=-1) + 1), top):
                pending[number] = _Pending(now, wall)
            self._baseline[channel] = max(self._baseline[channel], top)
            samples = self.latencies.setdefault(channel, deque(maxlen=self.keep_latencies))
            commits = _commit_times(channel, reachable)
            for number in sorted(pending):
                entry = pending[number]
                if number < bottom:
                    times = [t for peer in commits if (t := peer.get(number)) is not None]
                    if commits and len(times) == len(commits):  # every peer says when: exact
                        samples.append(max(times) - min(times))
                        self.exact[channel] = True
                    else:
                        samples.append(now - entry.first_seen)
                    del pending[number]
                elif now - entry.first_seen > self.pending_limit:
                    self.incomplete[channel] = self.incomplete.get(channel, 0) + 1
                    del pending[number]

    def _snapshot(
        self,
        now: float,
        wall: float,
        channels: list[str],
        statuses: Mapping[str, Mapping[str, Any] | None],
        observed_keys: Mapping[str, str],
        processes: Mapping[str, str],
        controllable: bool,
        load: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        reachable = {name: s for name, s in statuses.items() if s is not None}
        leaders: dict[str, set[str]] = {}  # pki_id -> channels it leads
        dead_votes: dict[str, int] = {}
        alive_votes: dict[str, int] = {}
        edges: set[tuple[str, str]] = set()
        for name, status in reachable.items():
            me = observed_keys[name]
            for channel, info in (status.get("channels") or {}).items():
                if info.get("leader"):
                    leaders.setdefault(me, set()).add(channel)
                if info.get("leader_pki_id"):
                    leaders.setdefault(str(info["leader_pki_id"]), set()).add(channel)
            for member in status.get("membership") or []:
                key = str(member.get("pki_id") or "")
                votes = alive_votes if member.get("alive") else dead_votes
                votes[key] = votes.get(key, 0) + 1
            for other in status.get("connections") or []:
                a, b = sorted((me, str(other)))
                edges.add((a, b))
        observed = {key: name for name, key in observed_keys.items()}
        nodes = []
        for key, info in self._nodes.items():
            node: dict[str, Any] = {
                "key": key,
                "id": info.name or key[:16],
                "org": info.org,
                "endpoint": info.endpoint,
                "pki_id": info.pki_id,
                "observed": key in observed,
                "leader": sorted(leaders.get(key, ())),
                "dead_votes": dead_votes.get(key, 0),
                "alive_votes": alive_votes.get(key, 0),
            }
            if key in observed:
                name = observed[key]
                status = statuses.get(name)
                node["process"] = processes.get(name)
                node["controllable"] = controllable
                node["control_id"] = name
                if status is None:
                    node["state"] = "dead"
                    process = processes.get(name) or ""
                    node["reason"] = process if process in PROCESS_REASONS else "unreachable"
                    node["heights"] = {}
                else:
                    node["state"] = "alive"
                    node["heights"] = {ch: int(v.get("height", 0)) for ch, v in (status.get("channels") or {}).items()}
                    node["rates"] = self.rates.get(key, {})
                    node["known_peers"] = len(status.get("membership") or [])
                    node["connections"] = len(status.get("connections") or [])
            else:
                votes_dead, votes_alive = dead_votes.get(key, 0), alive_votes.get(key, 0)
                if votes_dead == 0 and votes_alive == 0:
                    continue  # forgotten by everyone we poll
                node["state"] = "dead" if votes_dead > votes_alive else "alive"
                node["reason"] = "declared dead" if node["state"] == "dead" else ""
                node["heights"] = {}
            nodes.append(node)
        nodes.sort(key=lambda n: (n["org"], n["id"]))
        known = {n["key"] for n in nodes}
        latency = {
            ch: {
                "samples_ms": [round(x * 1000) for x in self.latencies.get(ch, ())],
                "incomplete": self.incomplete.get(ch, 0),
                "pending": len(self._pending.get(ch, {})),
                "exact": self.exact.get(ch, False),
            }
            for ch in channels
        }
        return {
            "type": "snapshot",
            "view": self.view,
            "title": self.title,
            "time": wall,
            "poll_interval_ms": round(self.poll_interval * 1000),
            "channels": channels,
            "nodes": nodes,
            "edges": sorted([a, b] for a, b in edges if a in known and b in known),
            "latency": latency,
            "controllable": controllable,
            "load": dict(load) if load is not None else None,
            "traffic": dict(self.traffic[-1]) if self.traffic else None,
        }

    @property
    def last(self) -> dict[str, Any]:
        """The latest snapshot ({} before the first update)."""
        return self._last


def _wall() -> float:
    return time.time()


def _commit_times(channel: str, reachable: Mapping[str, Mapping[str, Any]]) -> list[dict[int, float]]:
    """Per peer, {block number: wall-clock commit time} when every peer's status lists its recent commits
    (``channels[ch]["recent_commits"] = [[number, unix_time], ...]``); [] when any does not."""
    found = []
    for status in reachable.values():
        recent = ((status.get("channels") or {}).get(channel) or {}).get("recent_commits")
        if not isinstance(recent, list):
            return []
        found.append({int(n): float(t) for n, t in recent})
    return found


# --------------------------------------------------------------------------------------------------
# The feed: poll, update, broadcast


StatusSource = Callable[[], Awaitable[Mapping[str, Mapping[str, Any] | None]]]


class Controls(Protocol):
    """What the page's buttons do, when the dashboard runs the network (``network up``)."""

    async def stop_peer(self, name: str) -> None: ...

    async def start_peer(self, name: str) -> None: ...

    def set_load_paused(self, paused: bool) -> None: ...

    def processes(self) -> Mapping[str, str]: ...

    def load_state(self) -> Mapping[str, Any] | None: ...


class ControlError(Exception):
    """A button that cannot be carried out (unknown peer, ...); the message says why."""


class Dashboard:
    """The hub, the model and the task that feeds them every ``interval`` seconds.

    ``source`` returns the statuses of this round; ``only_when_watched`` makes the feed idle while no page is
    open (a peer's own dashboard costs nothing unless someone looks).
    """

    def __init__(
        self,
        source: StatusSource,
        *,
        view: str,
        title: str,
        interval: float = 0.5,
        controls: Controls | None = None,
        only_when_watched: bool = False,
    ) -> None:
        self.source = source
        self.interval = interval
        self.controls = controls
        self.only_when_watched = only_when_watched
        self.model = DashboardModel(view=view, title=title, poll_interval=interval)
        self.hub = Hub()
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.rounds = 0
        self._refreshed = float("-inf")  # time.monotonic() of the last round

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="rumor-dashboard")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.hub.close()

    def poke(self) -> None:
        """Poll now rather than at the next tick (after a button press)."""
        self._wake.set()

    async def refresh(self) -> dict[str, Any]:
        """One round: poll, update the model, broadcast the snapshot and the new events."""
        statuses = await self.source()
        controls = self.controls
        snapshot = self.model.update(
            time.monotonic(),
            statuses,
            processes=controls.processes() if controls else None,
            controllable=controls is not None,
            load=controls.load_state() if controls else None,
            ordering=ordering() if (ordering := getattr(controls, "ordering_state", None)) else None,
        )
        events = self.model.take_new_events()
        if events:
            await self.hub.broadcast({"type": "events", "events": events})
        await self.hub.broadcast(snapshot)
        self.rounds += 1
        self._refreshed = time.monotonic()
        return snapshot

    def first_state(self) -> dict[str, Any]:
        """What a page that has just opened needs to draw everything at once: the latest snapshot with the
        recent events and the traffic of the last minutes (later snapshots bring one traffic point each)."""
        return {
            **self.model.last,
            "events": list(self.model.events)[-200:],
            "traffic_history": self.model.traffic_history(),
        }

    async def _run(self) -> None:
        while True:
            if not self.only_when_watched or self.hub.clients:
                try:
                    await self.refresh()
                except Exception:  # one bad round must not end the dashboard
                    log.exception("dashboard refresh failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()
            self._wake.clear()

    # --- HTTP -----------------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        """``/`` the page, ``/static/*`` its assets, ``/ws`` the live feed, ``/api/dashboard`` one snapshot;
        with controls: ``POST /api/peers/{name}/stop|start`` and ``POST /api/load/pause|resume``."""
        app.router.add_get("/", self._index)
        app.router.add_get("/dashboard", self._index)
        app.router.add_static("/static/", STATIC_DIR, name="dashboard-static")
        app.router.add_get("/ws", self._websocket)
        app.router.add_get("/api/dashboard", self._snapshot)
        if self.controls is not None:
            app.router.add_post("/api/peers/{name}/{action}", self._peer_action)
            app.router.add_post("/api/load/{action}", self._load_action)

    async def _index(self, _request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    async def _snapshot(self, _request: web.Request) -> web.Response:
        # An idle feed (a peer's own dashboard with no WebSocket open) holds a snapshot from whenever someone last
        # looked: a page that reads this over HTTP (its WebSocket blocked) must see the peer as it is now.
        idle = self.only_when_watched and not self.hub.clients
        if not self.model.last or (idle and time.monotonic() - self._refreshed >= self.interval):
            await self.refresh()
        return web.json_response(self.first_state())

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=20)
        await ws.prepare(request)
        try:
            await ws.send_str(json.dumps({"type": "events", "events": list(self.model.events)[-200:]}))
            if self.model.last:
                await ws.send_str(json.dumps({**self.first_state(), "events": []}))  # the events went just before
            self.hub.register(ws)
            self.poke()
            async for message in ws:  # the page sends nothing we act on; this waits for the close
                if message.type == WSMsgType.ERROR:
                    break
        finally:
            self.hub.unregister(ws)
        return ws

    async def _peer_action(self, request: web.Request) -> web.Response:
        assert self.controls is not None
        name, action = request.match_info["name"], request.match_info["action"]
        try:
            if action == "stop":
                await self.controls.stop_peer(name)
            elif action in ("start", "restart"):
                await self.controls.start_peer(name)
            else:
                return web.json_response({"error": f"unknown action {action!r}: expected stop or start"}, status=404)
        except ControlError as exc:
            return web.json_response({"error": str(exc)}, status=409)
        self.poke()
        return web.json_response({"peer": name, "action": action, "ok": True})

    async def _load_action(self, request: web.Request) -> web.Response:
        assert self.controls is not None
        action = request.match_info["action"]
        if action not in ("pause", "resume"):
            return web.json_response({"error": f"unknown action {action!r}: expected pause or resume"}, status=404)
        self.controls.set_load_paused(action == "pause")
        self.poke()
        return web.json_response({"load": action, "ok": True})
