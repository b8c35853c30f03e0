"""The dashboard's broadcast hub, its model (pure, explicit time) and its HTTP/WebSocket routes on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from polling import wait_for

from rumor.ops.dashboard import ControlError, Dashboard, DashboardModel, Hub, format_duration
from rumor.ops.metrics import PeerMetrics
from rumor.ops.server import OperationsServer

# --------------------------------------------------------------------------------------------------
# Hub


class FakeClient:
    def __init__(self, fail: bool = False, stall: bool = False) -> None:
        self.received: list[dict[str, Any]] = []
        self.fail = fail
        self.stall = stall
        self.closed = False

    async def send_str(self, data: str) -> None:
        if self.fail:
            raise ConnectionResetError("gone")
        if self.stall:
            await asyncio.Event().wait()
        self.received.append(json.loads(data))

    async def close(self) -> None:
        self.closed = True


async def test_hub_broadcasts_to_every_registered_client() -> None:
    hub = Hub()
    a, b = FakeClient(), FakeClient()
    hub.register(a)
    hub.register(b)
    await hub.broadcast({"type": "snapshot", "n": 1})
    hub.unregister(b)
    await hub.broadcast({"type": "snapshot", "n": 2})
    assert [m["n"] for m in a.received] == [1, 2]
    assert [m["n"] for m in b.received] == [1]


async def test_hub_drops_failing_and_stalled_clients() -> None:
    hub = Hub(send_timeout=0.05)
    good, broken, stalled = FakeClient(), FakeClient(fail=True), FakeClient(stall=True)
    for client in (good, broken, stalled):
        hub.register(client)
    await hub.broadcast({"n": 1})
    assert hub.clients == {good}
    assert broken.closed and stalled.closed
    await hub.broadcast({"n": 2})
    assert [m["n"] for m in good.received] == [1, 2]


async def test_hub_close_closes_every_client() -> None:
    hub = Hub()
    clients = [FakeClient(), FakeClient()]
    for client in clients:
        hub.register(client)
    await hub.close()
    assert not hub.clients and all(c.closed for c in clients)


# --------------------------------------------------------------------------------------------------
# Model

PKI = {"p0": "aa" * 32, "p1": "bb" * 32, "q0": "cc" * 32}
ORG = {"p0": "Org1MSP", "p1": "Org1MSP", "q0": "Org2MSP"}


def status(
    name: str,
    height: int,
    *,
    leader: bool = False,
    leader_of_org: str | None = None,
    sent: int = 0,
    dead: tuple[str, ...] = (),
    events: list[dict[str, Any]] | None = None,
    member_ids: bool = False,
) -> dict[str, Any]:
    """``member_ids``: the membership names each member by its certificate's CN, as a rumor peer's now does."""
    others = [n for n in PKI if n != name]
    return {
        "peer_id": f"{name}.example.com",
        "org": ORG[name],
        "endpoint": f"127.0.0.1:{7051 + list(PKI).index(name)}",
        "pki_id": PKI[name],
        "channels": {
            "mychannel": {
                "height": height,
                "leader": leader,
                "leader_pki_id": PKI[leader_of_org] if leader_of_org else None,
                "peers": 2,
            }
        },
        "membership": [
            {
                "pki_id": PKI[o],
                "endpoint": f"127.0.0.1:{7051 + list(PKI).index(o)}",
                "org": ORG[o],
                "alive": o not in dead,
                **({"peer_id": f"{o}.example.com"} if member_ids else {}),
            }
            for o in others
        ],
        "connections": [PKI[o] for o in others if o not in dead],
        "comm": {"comm_messages_sent": sent, "comm_messages_received": sent, "comm_bytes_sent": sent * 100},
        "events": events or [],
    }


def node(snapshot: Mapping[str, Any], name: str) -> dict[str, Any]:
    return next(n for n in snapshot["nodes"] if n["id"] == f"{name}.example.com")


def test_model_builds_nodes_edges_leaders_and_rates() -> None:
    model = DashboardModel()
    model.update(0.0, {"p0": status("p0", 3), "p1": status("p1", 3), "q0": status("q0", 3)}, wall=100.0)
    snap = model.update(
        2.0,
        {
            "p0": status("p0", 3, leader=True, leader_of_org="p0", sent=40),
            "p1": status("p1", 3, leader_of_org="p0", sent=10),
            "q0": status("q0", 3, leader=True, leader_of_org="q0"),
        },
        wall=102.0,
        processes={"p0": "running", "p1": "running", "q0": "running"},
        controllable=True,
    )
    assert [n["id"] for n in snap["nodes"]] == ["p0.example.com", "p1.example.com", "q0.example.com"]
    assert all(n["state"] == "alive" and n["observed"] for n in snap["nodes"])
    assert node(snap, "p0")["leader"] == ["mychannel"] and node(snap, "q0")["leader"] == ["mychannel"]
    assert node(snap, "p1")["leader"] == []
    assert len(snap["edges"]) == 3  # a triangle, each connection once
    assert node(snap, "p0")["rates"]["msg_out"] == pytest.approx(20.0)
    assert node(snap, "p0")["rates"]["bytes_out"] == pytest.approx(2000.0)
    assert node(snap, "p0")["heights"] == {"mychannel": 3}
    assert snap["controllable"] and node(snap, "p1")["control_id"] == "p1"


def test_model_marks_stopped_and_unreachable_peers_dead() -> None:
    model = DashboardModel()
    model.update(0.0, {"p0": status("p0", 1), "p1": status("p1", 1), "q0": status("q0", 1)})
    snap = model.update(
        1.0,
        {"p0": status("p0", 1, dead=("p1",)), "p1": None, "q0": None},
        processes={"p0": "running", "p1": "stopped", "q0": "running"},
    )
    assert node(snap, "p1")["state"] == "dead" and node(snap, "p1")["reason"] == "stopped"
    assert node(snap, "q0")["state"] == "dead" and node(snap, "q0")["reason"] == "unreachable"
    assert node(snap, "p1")["dead_votes"] == 1
    assert node(snap, "p0")["state"] == "alive"
    assert all(node(snap, "p1")["key"] not in edge for edge in snap["edges"])


def test_model_says_how_a_peers_process_ended() -> None:
    model = DashboardModel()
    model.update(0.0, {n: status(n, 1) for n in PKI})
    snap = model.update(
        1.0,
        {"p0": status("p0", 1), "p1": None, "q0": None},
        processes={"p0": "running", "p1": "killed", "q0": "exited"},
    )
    assert node(snap, "p1")["reason"] == "killed" and node(snap, "p1")["process"] == "killed"
    assert node(snap, "q0")["reason"] == "exited"


def test_a_peer_never_reached_is_one_node_with_the_member_its_certificate_names() -> None:
    model = DashboardModel()
    snap = model.update(
        0.0,
        {"p0.example.com": status("p0", 1, member_ids=True), "p1.example.com": None},
        processes={"p0.example.com": "running", "p1.example.com": "killed"},
    )
    named = [n for n in snap["nodes"] if n["id"] == "p1.example.com"]
    assert len(named) == 1, snap["nodes"]
    assert named[0]["observed"] and named[0]["reason"] == "killed" and named[0]["endpoint"] == "127.0.0.1:7052"


def test_model_measures_time_to_all_peers() -> None:
    model = DashboardModel()
    everyone = ("p0", "p1", "q0")
    model.update(0.0, {n: status(n, 5) for n in everyone})  # blocks 0..4 predate the dashboard
    model.update(1.0, {"p0": status("p0", 7), "p1": status("p1", 6), "q0": status("q0", 5)})
    model.update(1.5, {"p0": status("p0", 7), "p1": status("p1", 7), "q0": status("q0", 6)})
    snap = model.update(3.0, {n: status(n, 7) for n in everyone})
    # block 5: first seen at 1.0, on every peer at 1.5; block 6: first seen at 1.0, everywhere at 3.0
    assert snap["latency"]["mychannel"]["samples_ms"] == [500, 2000]
    assert snap["latency"]["mychannel"]["pending"] == 0
    # a stopped peer does not hold the measurement up
    model.update(4.0, {"p0": status("p0", 8), "p1": status("p1", 7), "q0": None})
    snap = model.update(4.5, {"p0": status("p0", 8), "p1": status("p1", 8), "q0": None})
    assert snap["latency"]["mychannel"]["samples_ms"][-1] == 500


def test_model_uses_the_peers_commit_times_when_they_report_them() -> None:
    def with_commits(name: str, height: int, commits: dict[int, float]) -> dict[str, Any]:
        s = status(name, height)
        s["channels"]["mychannel"]["recent_commits"] = [[n, t] for n, t in commits.items()]
        return s

    model = DashboardModel()
    model.update(0.0, {"p0": with_commits("p0", 5, {}), "p1": with_commits("p1", 5, {})})
    snap = model.update(
        1.0,
        {"p0": with_commits("p0", 6, {5: 1000.010}), "p1": with_commits("p1", 6, {5: 1000.042})},
    )
    assert snap["latency"]["mychannel"]["samples_ms"] == [32]
    assert snap["latency"]["mychannel"]["exact"]


def test_model_turns_peer_events_into_one_log_entry_each() -> None:
    joined = {"time": 50.0, "event": "peer_alive", "pki_id": PKI["q0"], "endpoint": "127.0.0.1:7053", "new": True}
    dead = {"time": 51.0, "event": "peer_dead", "pki_id": PKI["p1"], "endpoint": "x", "reason": "expired"}
    lead = {"time": 52.0, "event": "leader_changed", "channel": "mychannel", "is_leader": True}
    noise = {"time": 53.0, "event": "message_rejected", "sender": "x"}
    model = DashboardModel()
    model.update(0.0, {"p0": status("p0", 1, events=[joined, dead]), "p1": status("p1", 1)})
    first = model.take_new_events()
    model.update(1.0, {"p0": status("p0", 1, events=[joined, dead, lead, noise]), "p1": status("p1", 1)})
    second = model.take_new_events()
    assert [e["event"] for e in first] == ["peer_joined", "peer_dead"]
    assert [e["event"] for e in second] == ["leader_changed"]
    assert "p0.example.com" in first[0]["text"] and "joined" in first[0]["text"]
    assert "declared p1.example.com dead" in first[1]["text"] and "expired" in first[1]["text"]
    assert "now leads" in second[0]["text"]
    model.add_event({"event": "peer_stopped", "text": "operator stopped p1"})
    assert model.take_new_events()[0]["text"] == "operator stopped p1"
    assert len(model.events) == 4


def test_peer_view_shows_members_from_one_peers_membership() -> None:
    model = DashboardModel(view="peer")
    snap = model.update(0.0, {"p0": status("p0", 4, leader_of_org="p1", dead=("q0",))})
    assert [n["id"] for n in snap["nodes"] if n["observed"]] == ["p0.example.com"]
    assert len(snap["nodes"]) == 3
    assert node(snap, "p0")["heights"] == {"mychannel": 4}
    others = {n["endpoint"]: n for n in snap["nodes"] if not n["observed"]}
    assert others["127.0.0.1:7052"]["state"] == "alive" and others["127.0.0.1:7052"]["leader"] == ["mychannel"]
    assert others["127.0.0.1:7053"]["state"] == "dead" and others["127.0.0.1:7053"]["reason"] == "declared dead"
    assert len(snap["edges"]) == 1
    assert snap["latency"]["mychannel"]["samples_ms"] == []


def test_peer_view_names_members_by_the_peer_id_their_certificate_gives() -> None:
    dead = {"time": 51.0, "event": "peer_dead", "pki_id": PKI["q0"], "endpoint": "127.0.0.1:7053", "reason": "expired"}
    model = DashboardModel(view="peer")
    snap = model.update(0.0, {"p0": status("p0", 4, dead=("q0",), member_ids=True, events=[dead])})
    assert {n["id"]: n["endpoint"] for n in snap["nodes"]} == {
        "p0.example.com": "127.0.0.1:7051",
        "p1.example.com": "127.0.0.1:7052",
        "q0.example.com": "127.0.0.1:7053",
    }
    assert model.take_new_events()[0]["text"] == "p0.example.com: declared q0.example.com dead (expired)"
    # a membership from before (no peer ids) still names them by endpoint
    older = DashboardModel(view="peer").update(0.0, {"p0": status("p0", 4)})
    assert sorted(n["id"] for n in older["nodes"] if not n["observed"]) == ["127.0.0.1:7052", "127.0.0.1:7053"]


def test_model_keeps_the_traffic_of_the_last_minutes() -> None:
    model = DashboardModel(traffic_window=120.0)
    for i in range(100):  # one round every 2 s for 200 s, each peer sending 10 messages a second
        model.update(2.0 * i, {n: status(n, 1, sent=20 * i) for n in PKI}, wall=1000.0 + 2 * i)
    history = model.traffic_history()
    assert history[0]["t"] >= 1198.0 - 120 and history[-1]["t"] == 1198.0
    assert len(history) == 61
    assert history[-1]["msgs"] == pytest.approx(30.0) and history[-1]["bytes"] == pytest.approx(3000.0)
    assert model.last["traffic"] == history[-1]


def test_durations_under_a_second_are_in_ms() -> None:
    assert format_duration(0.041) == "41 ms"
    assert format_duration(0.0004) == "0 ms"
    assert format_duration(0.9994) == "999 ms"
    assert format_duration(1.0) == "1.0 s"
    assert format_duration(10.26) == "10.3 s"


# --------------------------------------------------------------------------------------------------
# HTTP and WebSocket


class FakeControls:
    def __init__(self) -> None:
        self.running = {"p0": "running", "p1": "running"}
        self.paused = False

    async def stop_peer(self, name: str) -> None:
        if self.running.get(name) != "running":
            raise ControlError(f"{name} is not running")
        self.running[name] = "stopped"

    async def start_peer(self, name: str) -> None:
        if name not in self.running:
            raise ControlError(f"no peer {name!r}")
        self.running[name] = "running"

    def set_load_paused(self, paused: bool) -> None:
        self.paused = paused

    def processes(self) -> Mapping[str, str]:
        return self.running

    def load_state(self) -> Mapping[str, Any] | None:
        return {"rate": 2, "paused": self.paused, "blocks": 0, "error": None}


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, Dashboard, FakeControls]]:
    controls = FakeControls()

    async def source() -> dict[str, Any]:
        return {n: status(n, 2) if s == "running" else None for n, s in controls.running.items()}

    dashboard = Dashboard(source, view="network", title="test", interval=0.05, controls=controls)
    app = web.Application()
    dashboard.add_routes(app)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    dashboard.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", dashboard, controls
    finally:
        await dashboard.stop()
        await runner.cleanup()


async def test_page_and_assets_are_served(served: tuple[str, Dashboard, FakeControls]) -> None:
    url, _, _ = served
    async with aiohttp.ClientSession() as session:
        async with session.get(url + "/") as resp:
            assert resp.status == 200 and "text/html" in resp.headers["Content-Type"]
            html = await resp.text()
        assert "static/dashboard.js" in html and 'id="graph"' in html
        for asset in ("dashboard.js", "dashboard.css"):
            async with session.get(f"{url}/static/{asset}") as resp:
                assert resp.status == 200


async def test_websocket_feeds_snapshots_and_buttons_act(served: tuple[str, Dashboard, FakeControls]) -> None:
    url, _, controls = served
    async with aiohttp.ClientSession() as session, session.ws_connect(url + "/ws") as ws:

        async def next_snapshot(predicate: Any) -> dict[str, Any]:
            async with asyncio.timeout(10):
                while True:
                    message = json.loads((await ws.receive()).data)
                    if message["type"] == "snapshot" and predicate(message):
                        return message

        first = await next_snapshot(lambda m: len(m["nodes"]) == 3)
        assert first["view"] == "network" and first["controllable"]
        async with session.post(url + "/api/peers/p1/stop") as resp:
            assert resp.status == 200
        stopped = await next_snapshot(lambda m: node(m, "p1")["state"] == "dead")
        assert node(stopped, "p1")["reason"] == "stopped"
        async with session.post(url + "/api/peers/p1/stop") as resp:
            assert resp.status == 409 and "not running" in (await resp.json())["error"]
        async with session.post(url + "/api/peers/nobody/start") as resp:
            assert resp.status == 409
        async with session.post(url + "/api/load/pause") as resp:
            assert resp.status == 200
        paused = await next_snapshot(lambda m: m["load"]["paused"])
        assert paused["load"]["rate"] == 2
        async with session.post(url + "/api/load/explode") as resp:
            assert resp.status == 404
    assert controls.paused


async def test_the_first_state_brings_the_traffic_history(served: tuple[str, Dashboard, FakeControls]) -> None:
    url, dashboard, _ = served
    await wait_for(lambda: dashboard.rounds >= 4, what="a few rounds of the feed")
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url + "/ws") as ws:
            async with asyncio.timeout(10):
                while (first := json.loads((await ws.receive()).data))["type"] != "snapshot":
                    pass
        assert len(first["traffic_history"]) >= 4
        assert first["traffic_history"][-1] == first["traffic"]
        async with session.get(url + "/api/dashboard") as resp:
            over_http = await resp.json()
        assert over_http["type"] == "snapshot" and len(over_http["traffic_history"]) >= 4
        assert "events" in over_http


async def test_an_idle_peer_dashboard_answers_api_dashboard_with_the_peer_as_it_is_now() -> None:
    """A page reading /api/dashboard over HTTP (its WebSocket blocked) opens no WebSocket: the feed of a peer's own
    dashboard is idle then, and the snapshot must still follow the peer."""
    height = {"now": 3}
    ops = OperationsServer(
        "127.0.0.1:0", status=lambda: status("p0", height["now"]), metrics=PeerMetrics(), dashboard_interval=0.05
    )
    await ops.start()
    try:
        async with aiohttp.ClientSession() as session:

            async def shown_height() -> int:
                async with session.get(f"http://{ops.address}/api/dashboard") as resp:
                    return int(node(await resp.json(), "p0")["heights"]["mychannel"])

            assert await shown_height() == 3
            height["now"] = 10
            await wait_for(lambda: _equals(shown_height(), 10), what="the snapshot to show the new height")
    finally:
        await ops.stop()


async def _equals(value: Any, wanted: Any) -> bool:
    return (await value) == wanted


async def test_a_peers_operations_endpoint_serves_its_own_view() -> None:
    ops = OperationsServer("127.0.0.1:0", status=lambda: status("p0", 9, dead=("q0",)), metrics=PeerMetrics())
    await ops.start()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://{ops.address}/") as resp:
                assert resp.status == 200 and 'id="graph"' in await resp.text()
            async with session.ws_connect(f"http://{ops.address}/ws") as ws:
                async with asyncio.timeout(10):
                    while True:
                        message = json.loads((await ws.receive()).data)
                        if message["type"] == "snapshot":
                            break
            assert message["view"] == "peer" and not message["controllable"]
            assert message["title"] == "peer p0.example.com"
            assert node(message, "p0")["heights"] == {"mychannel": 9}
            assert len(message["nodes"]) == 3
            async with session.post(f"http://{ops.address}/api/peers/p0/stop") as resp:
                assert resp.status in (404, 405)  # a peer's own endpoint has no controls
    finally:
        await ops.stop()
