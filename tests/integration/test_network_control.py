"""`rumor network status` and `rumor network down` on a network whose processes were started by hand, or by
`rumor network up`: found by the PIDs in their lock files, stopped cleanly, ledgers kept."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from polling import wait_for
from procnet import Cluster, make_network
from rumor_processes import RUMOR, clean_env

from rumor.network import NetworkLayout, free_base_port


def rumor(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RUMOR, *args], env=clean_env(COLUMNS="200"), capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip


async def test_status_and_down_find_processes_started_by_hand(
    clusters: Callable[[NetworkLayout], Cluster], tmp_path: Path
) -> None:
    layout = make_network(tmp_path / "net", orgs=1, peers_per_org=2)
    cluster = clusters(layout)
    first, second = layout.peers
    orderer = await cluster.start_orderer()
    proc = await cluster.start_peer(first)

    status = rumor("network", "status", "--dir", str(layout.root), "--json")
    assert status.returncode == 1, status.stdout + status.stderr  # the second peer is not running
    rows = {row["node"]: row for row in map(json.loads, status.stdout.splitlines())}
    assert rows[first.id]["state"] == "running" and rows[first.id]["pid"] == proc.pid, rows
    assert rows[first.id]["height"] == 1 and rows[first.id]["org"] == first.org, rows
    assert rows[second.id]["state"] == "stopped" and rows[second.id]["endpoint"] == second.endpoint, rows
    assert rows["orderer"]["state"] == "running" and rows["orderer"]["pid"] == orderer.pid, rows
    table = rumor("network", "status", "--dir", str(layout.root))
    assert first.id in table.stdout and "stopped" in table.stdout

    down = rumor("network", "down", "--dir", str(layout.root))
    assert down.returncode == 0, down.stderr
    assert "stopped 2 node(s)" in down.stdout, down.stdout
    assert await proc.wait_exit(10) == 0 and await orderer.wait_exit(10) == 0  # SIGTERM: clean stops
    assert rumor("network", "status", "--dir", str(layout.root)).returncode == 1
    cluster.running.clear()
    # The ledgers are kept: the peer starts again from its own.
    await cluster.start_peer(first, join=[])


async def test_down_stops_network_up_which_stops_its_children(tmp_path: Path) -> None:
    root = tmp_path / "net"
    base = free_base_port(2)
    up = subprocess.Popen(
        [RUMOR, "network", "up", "--dir", str(root), "--orgs", "1", "--peers-per-org", "2", "--base-port", str(base),
         "--rate", "0", "--dashboard-port", "0"],
        env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert up.stdout is not None
        lines: list[str] = []
        for line in up.stdout:
            lines.append(line)
            if "Ctrl-C stops it" in line:
                break
        else:
            raise AssertionError("".join(lines))
        status = rumor("network", "status", "--dir", str(root), "--json")
        assert status.returncode == 0, status.stdout
        rows = {row["node"]: row for row in map(json.loads, status.stdout.splitlines())}
        assert rows["network up"]["pid"] == up.pid, rows
        # ps names each child: `python -m rumor ... peer start`.
        children = [
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            for pid in os.listdir("/proc")
            if pid.isdigit() and _parent(int(pid)) == up.pid
        ]
        assert sum("-m rumor" in c and "peer start" in c for c in children) == 2, children
        down = rumor("network", "down", "--dir", str(root))
        assert down.returncode == 0, down.stdout + down.stderr
        assert up.wait(30) == 0
        await wait_for(lambda: rumor("network", "status", "--dir", str(root)).returncode == 1, 10, "all stopped")
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


assert sys.platform.startswith("linux")


async def test_channel_join_on_a_running_peer(clusters: Callable[[NetworkLayout], Cluster], tmp_path: Path) -> None:
    """`rumor channel join` is an admin call: the running peer joins a second channel, keeps it across a restart;
    a wrong token and a file that is not a genesis block are refused with why."""
    layout = make_network(tmp_path / "net", orgs=1, peers_per_org=1)
    cluster = clusters(layout)
    peer = layout.peers[0]
    await cluster.start_peer(peer)
    crypto = layout.root / "crypto"
    block = tmp_path / "second.block"
    org_msp = crypto / "peerOrganizations" / "org1.example.com" / "msp"
    orderer_msp = crypto / "ordererOrganizations" / "example.com" / "msp"
    created = rumor(
        "channel", "create", "-C", "second", "-o", str(block), "--org", f"Org1MSP={org_msp}@{peer.endpoint}",
        "--orderer-org", f"OrdererMSP={orderer_msp}@{layout.orderer_endpoint}",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr

    wrong = rumor("channel", "join", "-b", str(block), "--peer", peer.operations, "--token", "not-the-token")
    assert wrong.returncode == 1 and "wrong admin token" in wrong.stderr, wrong.stderr
    junk = tmp_path / "junk.block"
    junk.write_bytes(b"\x00\x01 not a block")
    refused = rumor("channel", "join", "-b", str(junk), "--network", str(layout.root))
    assert refused.returncode == 2 and f"--block {junk}: not a" in refused.stderr, refused.stderr

    joined = rumor("channel", "join", "-b", str(block), "--network", str(layout.root), "--peer", peer.id)
    assert joined.returncode == 0, joined.stderr
    assert joined.stdout.strip() == f"{peer.id} joined channel second"
    status = await cluster.status(peer)
    assert status is not None and set(status["channels"]) == {layout.channel, "second"}
    await cluster.stop(peer.id)
    await cluster.start_peer(peer, join=[])
    status = await wait_for(lambda: cluster.status(peer), 10, "status after restart")
    assert set(status["channels"]) == {layout.channel, "second"}
