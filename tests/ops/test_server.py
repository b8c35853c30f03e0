"""The operations endpoint over real HTTP on loopback."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import aiohttp
import pytest

from rumor.ops.metrics import PeerMetrics
from rumor.ops.server import LogSpecError, OperationsServer, parse_logspec


@pytest.fixture
async def server() -> AsyncIterator[OperationsServer]:
    metrics = PeerMetrics()
    metrics.state_height.labels("mychannel").set(42)
    metrics.comm_messages_sent.inc(7)
    problems: dict[str, str | None] = {"ledger": None}
    ops = OperationsServer(
        "127.0.0.1:0",
        status=lambda: {"peer_id": "peer0", "channels": {"mychannel": {"height": 42}}},
        metrics=metrics,
        health_checks={"ledger": lambda: problems["ledger"]},
        admin_token="s3cret",
    )
    ops.problems = problems  # type: ignore[attr-defined]
    await ops.start()
    yield ops
    await ops.stop()
    logging.getLogger("rumor").setLevel(logging.NOTSET)
    logging.getLogger("rumor.comm").setLevel(logging.NOTSET)


async def get(ops: OperationsServer, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(f"http://{ops.address}{path}") as resp:
        return resp.status, await resp.text()


async def test_health_reports_failed_checks(server: OperationsServer) -> None:
    assert await get(server, "/healthz") == (200, '{"status": "OK"}')
    server.problems["ledger"] = "disk full"  # type: ignore[attr-defined]
    status, body = await get(server, "/healthz")
    assert status == 503 and "disk full" in body and "ledger" in body


async def test_metrics_use_fabric_names(server: OperationsServer) -> None:
    status, body = await get(server, "/metrics")
    assert status == 200
    assert 'gossip_state_height{channel="mychannel"} 42.0' in body
    assert "gossip_comm_messages_sent_total 7.0" in body
    for name in ("gossip_comm_overflow_count", "gossip_membership_total_peers_known", "gossip_leader_election_leader"):
        assert name in body
    # the defences against hostile peers (their series appear once counted, except the unlabelled ones)
    for name in ("gossip_comm_write_timeouts_total", "gossip_membership_identify_dials_throttled_total"):
        assert name in body


async def test_status_json(server: OperationsServer) -> None:
    async with aiohttp.ClientSession() as session, session.get(f"http://{server.address}/api/status") as resp:
        assert resp.status == 200
        assert (await resp.json())["channels"]["mychannel"]["height"] == 42


async def test_logspec_changes_levels_at_run_time(server: OperationsServer) -> None:
    admin = {"Authorization": "Bearer s3cret"}
    async with aiohttp.ClientSession() as session:
        url = f"http://{server.address}/logspec"
        async with session.put(url, json={"spec": "rumor.comm=debug:warning"}, headers=admin) as r:
            assert r.status == 200
        assert logging.getLogger("rumor.comm").level == logging.DEBUG
        async with session.put(url, json={"spec": "loud"}, headers=admin) as r:
            assert r.status == 400 and "bad log specification" in (await r.json())["error"]
        async with session.get(url) as r:
            assert (await r.json())["spec"] == "rumor.comm=debug:warning"


async def test_logspec_is_an_admin_call(server: OperationsServer) -> None:
    """Finding: anyone who reached the port could PUT /logspec {"spec": "error"} and hide every warning."""
    async with aiohttp.ClientSession() as session:
        url = f"http://{server.address}/logspec"
        async with session.put(url, json={"spec": "error"}) as r:
            assert r.status == 401 and "Bearer" in (await r.json())["error"]
        async with session.put(url, json={"spec": "error"}, headers={"Authorization": "Bearer guess"}) as r:
            assert r.status == 403
        async with session.get(url) as r:
            assert (await r.json())["spec"] == "info"
    assert logging.getLogger("rumor").level != logging.ERROR


async def test_hostile_bodies_get_a_clear_answer(server: OperationsServer) -> None:
    admin = {"Authorization": "Bearer s3cret", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as session:
        url = f"http://{server.address}/logspec"
        async with session.put(url, data="[" * 60_000, headers=admin) as r:  # nested deeper than any parser allows
            assert r.status == 400 and "nested too deeply" in (await r.json())["error"]
        async with session.put(url, data='{"spec": "' + "x" * 100_000 + '"}', headers=admin) as r:
            assert r.status == 413
        async with session.put(url, data="[1, 2]", headers=admin) as r:
            assert r.status == 400
        async with session.get(f"http://{server.address}/healthz") as r:
            assert r.status == 200


def test_parse_logspec() -> None:
    assert parse_logspec("debug") == (logging.DEBUG, {})
    assert parse_logspec("rumor.comm,rumor.state=error:info") == (
        logging.INFO,
        {"rumor.comm": logging.ERROR, "rumor.state": logging.ERROR},
    )
    for bad in ("", "=debug", "rumor.comm=loud", "verbose"):
        with pytest.raises(LogSpecError):
            parse_logspec(bad)
