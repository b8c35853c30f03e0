"""`rumor network up` and the operator commands (status, peers, channel list, block get) as real processes."""

from __future__ import annotations

import contextlib
import http.server
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections import deque
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent / "browser"))

from netup_proc import UpProcess, alive, network_up
from polling import wait_until
from rumor_processes import RUMOR, clean_env

from rumor.etcdnet import etcd_binary
from rumor.netup import NetworkPlan, NetworkUp, UpOptions, describe_exit
from rumor.network import NetworkLayout, free_base_port, init_network
from rumor.ops.dashboard import Dashboard


def run(*args: str, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RUMOR, *args],
        capture_output=True,
        text=True,
        env=env or clean_env(),
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def one_line_error(result: subprocess.CompletedProcess[str], code: int, *fragments: str) -> str:
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def small_network(tmp_path: Path) -> Path:
    """A network of 2 orgs × 1 peer, initialised but not running."""
    root = tmp_path / "net"
    init_network(root, orgs=2, peers_per_org=1, base_port=free_base_port(2))
    return root


# --------------------------------------------------------------------------------------------------
# Help


def test_every_command_says_what_it_does_with_an_example() -> None:
    import typer.main

    from rumor import cli

    def walk(command: object, path: list[str]) -> list[tuple[str, str]]:
        found = [(" ".join(path), getattr(command, "help", None) or "")]
        for name, sub in getattr(command, "commands", {}).items():
            found += walk(sub, [*path, name])
        return found

    commands = walk(typer.main.get_command(cli.app), ["rumor"])
    names = {name for name, _ in commands}
    for wanted in ("rumor network up", "rumor status", "rumor peers", "rumor block get", "rumor channel list"):
        assert wanted in names
    for name, text in commands:
        assert text.strip(), f"{name} has no help"
        assert "Example:" in text, f"{name}'s help has no example"


def test_network_up_help() -> None:
    result = run("network", "up", "--help")
    assert result.returncode == 0
    for option in ("--dir", "--orgs", "--peers-per-org", "--channel", "--rate", "--duration", "--dashboard-port"):
        assert option in result.stdout
    assert "Example:" in result.stdout


# --------------------------------------------------------------------------------------------------
# Errors: one line each


def test_dir_holding_something_else(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("my notes")
    result = run("network", "up", "--dir", str(tmp_path), "--duration", "1")
    one_line_error(result, 2, str(tmp_path), "holds something else", "network.yaml")
    assert (tmp_path / "notes.txt").read_text() == "my notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_missing_crypto(small_network: Path) -> None:
    import shutil

    shutil.rmtree(small_network / "crypto" / "peerOrganizations" / "org2.example.com" / "peers")
    result = run("network", "up", "--dir", str(small_network), "--duration", "1")
    one_line_error(result, 2, "missing crypto material", "peer0.org2.example.com")


def test_missing_crypto_directory(small_network: Path) -> None:
    import shutil

    shutil.rmtree(small_network / "crypto")
    result = run("network", "up", "--dir", str(small_network), "--duration", "1")
    one_line_error(result, 2, "missing crypto material", str(small_network / "crypto"))


def test_port_in_use(small_network: Path) -> None:
    from rumor.network import load_layout

    layout = load_layout(small_network)
    port = int(layout.peers[1].endpoint.rsplit(":", 1)[1])
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        result = run("network", "up", "--dir", str(small_network), "--duration", "1")
    one_line_error(result, 2, f"port {port} is in use", "peer0.org2.example.com")
    assert not (small_network / "logs").exists(), "nothing may start when a port is taken"


def test_port_in_use_for_a_new_network_leaves_no_directory(tmp_path: Path) -> None:
    base = free_base_port(2)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", base))
        squatter.listen()
        result = run(
            "network", "up", "--dir", str(tmp_path / "new"), "--orgs", "2", "--peers-per-org", "1",
            "--base-port", str(base), "--duration", "1",
        )  # fmt: skip
    one_line_error(result, 2, f"port {base} is in use", "orderer")
    assert not (tmp_path / "new").exists()


def test_dashboard_port_in_use(small_network: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        result = run("network", "up", "--dir", str(small_network), "--dashboard-port", str(port), "--duration", "1")
    one_line_error(result, 2, f"dashboard port {port}", "--dashboard-port")


def test_child_dying_at_start_shows_its_last_log_lines(small_network: Path) -> None:
    ledger = small_network / "peers" / "peer0.org2.example.com" / "data" / "ledger.sqlite"
    ledger.parent.mkdir(parents=True)
    ledger.write_bytes(b"this is no database " * 100)
    # Also: without --dashboard-port, a taken 8080 makes the dashboard fall back to a free port.
    with contextlib.ExitStack() as stack:
        squatter = stack.enter_context(socket.socket())
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port in TIME_WAIT is not "taken"
        with contextlib.suppress(OSError):  # already taken by someone else: just as good
            squatter.bind(("127.0.0.1", 8080))
            squatter.listen()
        up = UpProcess("--dir", str(small_network), "--rate", "0", env=clean_env())
        code = up.proc.wait(120)
    try:
        for reader in up._readers:
            reader.join(5)
        assert any("port 8080 is in use; the dashboard takes a free port" in line for line in up.lines), up.output()
        assert not any(line.startswith(("Dashboard:", "stopped")) for line in up.lines), up.output()
        assert code == 1, up.output()
        assert up.errors, up.output()
        first = up.errors[0]
        assert first.startswith("error: peer0.org2.example.com exited at start"), up.output()
        assert str(small_network / "logs" / "peer0.org2.example.com.log") in first
        details = up.errors[1:]
        assert details and all(line.startswith("    ") for line in details), up.output()
        assert any("ledger" in line.lower() or "database" in line.lower() for line in details), up.output()
        assert "Traceback" not in "\n".join(up.errors[:1])
        # the peer that did start and the orderer were stopped again
        assert not [pid for pid in _descendants_of_log(small_network) if alive(pid)]
    finally:
        up.cleanup()


def _descendants_of_log(root: Path) -> list[int]:
    """PIDs of processes whose command line names this network directory (any leftover child)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(root) in cmdline and "start" in cmdline:
                found.append(int(entry.name))
    return found


# --------------------------------------------------------------------------------------------------
# A running network: the operator commands, SIGINT, resume


def test_up_serves_commands_stops_on_sigint_and_resumes(tmp_path: Path) -> None:
    root = tmp_path / "net"
    base = free_base_port(2)
    common = ["--dir", str(root), "--rate", "5", "--dashboard-port", "0"]
    with network_up(*common, "--orgs", "2", "--peers-per-org", "1", "--base-port", str(base)) as up:
        up.wait_ready()
        assert any(line.startswith("creating a network") for line in up.lines)
        children = up.children()
        assert set(children) == {"orderer", "peer0.org1.example.com", "peer0.org2.example.com"}
        heights = wait_until(lambda: (h := up.heights()) and min(h.values()) >= 4 and h, 90, "blocks on every peer")
        assert set(heights) == {"peer0.org1.example.com", "peer0.org2.example.com"}

        ops = f"127.0.0.1:{base + 101}"
        status = run("status", "--peer", ops)
        assert status.returncode == 0, status.stderr
        for text in ("peer0.org1.example.com", "Org1MSP", "mychannel", "membership", "alive"):
            assert text in status.stdout
        as_json = json.loads(run("status", "--peer", ops, "--json").stdout)
        assert as_json["peer_id"] == "peer0.org1.example.com"
        # its membership names the other peer as its certificate does (a peer's own dashboard shows that name)
        other = next(m for m in as_json["membership"] if m["org"] == "Org2MSP")
        assert other["name"] == "peer0.org2.example.com" and other["endpoint"] == f"127.0.0.1:{base + 2}"

        peers = run("peers", "--network", str(root))
        assert peers.returncode == 0, peers.stderr
        assert "peer0.org1.example.com" in peers.stdout and "peer0.org2.example.com" in peers.stdout
        assert "running" in peers.stdout
        seen = run("peers", "--network", str(root), "--peer", "peer0.org2.example.com")
        assert seen.returncode == 0 and f"127.0.0.1:{base + 1}" in seen.stdout  # peer0.org2 sees peer0.org1

        channels = run("channel", "list", "--peer", ops)
        assert channels.returncode == 0 and "mychannel" in channels.stdout

        block = run("block", "get", "2", "-C", "mychannel", "--network", str(root), "--json")
        assert block.returncode == 0, block.stderr
        info = json.loads(block.stdout)
        assert info["number"] == 2 and info["envelopes"]
        assert info["envelopes"][0]["type"] == "MESSAGE"
        assert info["envelopes"][0]["data_preview"].startswith("rumor load block")
        table = run(
            "block",
            "get",
            "last",
            "-C",
            "mychannel",
            "--config",
            str(root / "peers" / "peer0.org2.example.com" / "core.yaml"),
        )
        assert table.returncode == 0 and "envelopes" in table.stdout

        code = up.interrupt()
        assert code == 0, up.output()
        assert any("stopped 2 peers and the orderer" in line for line in up.lines), up.output()
        leftovers = [pid for pid in up.seen_children if alive(pid)]
        assert not leftovers, f"children left behind: {leftovers}"
        before = max(heights.values())

    with network_up(*common) as again:  # same DIR: the same ledgers
        again.wait_ready()
        assert not any(line.startswith("creating a network") for line in again.lines)
        resumed = again.heights()
        assert min(resumed.values()) >= before, (resumed, before)
        assert again.interrupt() == 0
        assert not [pid for pid in again.seen_children if alive(pid)]


def test_status_of_an_unreachable_peer_is_one_line() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = run("status", "--peer", f"127.0.0.1:{port}")
    one_line_error(result, 1, f"127.0.0.1:{port}", "operations")


def test_peers_and_status_of_a_network_that_is_down(small_network: Path) -> None:
    """Finding: `rumor peers --network DIR` of a stopped network showed empty org and endpoint columns and exited 0."""
    from rumor.network import load_layout

    layout = load_layout(small_network)
    result = run("peers", "--network", str(small_network))
    one_line_error(result, 1, f"no peer of {small_network} answers (2 peers down)", "rumor network up --dir")
    rows = [line for line in result.stdout.splitlines() if ".example.com" in line]
    assert len(rows) == 2, result.stdout
    for entry, row in zip(layout.peers, rows, strict=True):
        for cell in (entry.id, entry.org, entry.endpoint, entry.operations, "down"):
            assert cell in row, (cell, row)
    status = run("status", "--network", str(small_network))
    one_line_error(status, 1, f"no peer of {small_network} answers (2 peers down)")
    one_line_error(run("status", "--network", str(small_network), "--peer", "peer0.org2"), 1, "is down")


class _StubStatus(http.server.BaseHTTPRequestHandler):
    """An operations endpoint that serves a fixed /api/status (``self.server.status``)."""

    def do_GET(self) -> None:
        body = json.dumps(self.server.status).encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return None


def test_peers_and_status_of_a_network_partly_down(small_network: Path) -> None:
    from rumor.network import load_layout

    down, up = load_layout(small_network).peers
    host, port = up.operations.rsplit(":", 1)
    status = {"peer_id": up.id, "org": up.org, "endpoint": up.endpoint, "channels": {"mychannel": {"height": 7}}}
    with http.server.ThreadingHTTPServer((host, int(port)), _StubStatus) as server:
        server.status = status  # type: ignore[attr-defined]
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            result = run("peers", "--network", str(small_network))
            assert result.returncode == 0, result.stderr
            *table, summary = result.stdout.splitlines()
            assert summary == f"1 of 2 peers down: {down.id}"
            (down_row,) = [line for line in table if down.id in line]
            assert down.org in down_row and down.endpoint in down_row and "down" in down_row
            (up_row,) = [line for line in table if up.id in line]
            assert "running" in up_row and "mychannel (7)" in up_row
            # status --network alone skips the first peer, which is down, for the one that answers
            shown = run("status", "--network", str(small_network), "--json")
            assert shown.returncode == 0, shown.stderr
            assert json.loads(shown.stdout)["peer_id"] == up.id
        finally:
            server.shutdown()
            thread.join()


def test_commands_need_a_target(small_network: Path) -> None:
    one_line_error(run("status"), 2, "--peer")
    one_line_error(run("peers", "--network", str(small_network), "--peer", "nosuchpeer"), 2, "no such peer")
    result = run("block", "get", "0", "-C", "mychannel", "--network", str(small_network))
    one_line_error(result, 2, "no ledger yet")


def test_children_die_with_a_killed_network_up(tmp_path: Path) -> None:
    """kill -9 of network up (no chance to clean up): the kernel ends every child, restarted ones included."""
    base = free_base_port(2)
    args = ["--dir", str(tmp_path / "net"), "--rate", "0", "--dashboard-port", "0", "--base-port", str(base)]
    with network_up(*args, "--orgs", "1", "--peers-per-org", "2") as up:
        up.wait_ready()
        victim = "peer1.org1.example.com"
        up.post(f"api/peers/{victim}/stop")
        wait_until(lambda: victim not in up.children(), 30, "the peer to stop")
        up.post(f"api/peers/{victim}/start")  # a child spawned late, once network up runs threads
        wait_until(lambda: victim in up.children(), 60, "the peer to run again")
        children = set(up.children().values())
        assert len(children) == 3
        up.proc.kill()
        up.proc.wait(30)
        wait_until(lambda: not any(alive(pid) for pid in children), 30, "every child to end")


@pytest.mark.skipif(etcd_binary() is None, reason="etcd is not installed (make test installs etcd-server as root)")
def test_up_runs_an_etcd_ordering_service_of_three_orderers(tmp_path: Path) -> None:
    root = tmp_path / "net"
    base = free_base_port(1, orderers=3, etcd=3)
    init = run(
        "network", "init", "--out", str(root), "--orgs", "1", "--peers-per-org", "1", "--base-port", str(base),
        "--orderers", "3", "--consensus", "etcd",
    )  # fmt: skip
    assert init.returncode == 0, init.stderr
    assert "etcd2" in init.stdout and "orderer2.example.com" in init.stdout
    with network_up("--dir", str(root), "--rate", "5", "--dashboard-port", "0") as up:
        up.wait_ready()
        children = up.children()
        wanted = {"etcd0", "etcd1", "etcd2", "orderer.example.com", "orderer1.example.com", "orderer2.example.com"}
        assert wanted <= set(children), children
        wait_until(lambda: (h := up.heights()) and min(h.values()) >= 4, 90, "blocks on the peer")
        # the dashboard's ordering card: the cutter of the channel, every orderer's stored height, etcd's health
        orderers = {"orderer.example.com", "orderer1.example.com", "orderer2.example.com"}

        def ordering() -> dict | None:
            o = up.get("api/dashboard").get("ordering") or {}
            healthy = [m for m in o.get("etcd", []) if m.get("healthy")]
            stored = [n for n in o.get("orderers", []) if n.get("stored", {}).get("mychannel")]
            cutter = (o.get("cutters") or {}).get("mychannel")
            return o if cutter in orderers and len(healthy) == 3 and len(stored) == 3 else None

        card = wait_until(ordering, 30, "the dashboard shows the cutter, the orderers and etcd")
        assert card["consensus"] == "etcd"
        assert sum(1 for m in card["etcd"] if m.get("leader")) == 1
        assert up.interrupt() == 0, up.output()
        assert any("stopped 1 peers and 3 orderers and 3 etcd members" in line for line in up.lines), up.output()
        assert not [pid for pid in up.seen_children if alive(pid)]


# --------------------------------------------------------------------------------------------------
# How a peer ended, and the status line


def test_an_exit_by_signal_is_named_by_the_signal() -> None:
    assert describe_exit(-9) == "killed by SIGKILL"
    assert describe_exit(-int(signal.SIGTERM)) == "killed by SIGTERM"
    assert describe_exit(-200) == "killed by signal 200"
    assert describe_exit(3) == "exited on its own (exit code 3)"
    assert describe_exit(1, context="at start") == "exited at start (exit code 1)"


def test_a_peer_killed_by_sigkill_is_reported_so_with_its_last_log_line_apart(tmp_path: Path) -> None:
    base = free_base_port(1)
    args = ["--dir", str(tmp_path / "net"), "--rate", "0", "--dashboard-port", "0", "--base-port", str(base)]
    with network_up(*args, "--orgs", "1", "--peers-per-org", "1") as up:
        up.wait_ready()
        victim = "peer0.org1.example.com"
        os.kill(up.children()[victim], signal.SIGKILL)  # as an operator's kill -9 (or the OOM killer) would

        def killed_event() -> dict[str, Any] | None:
            events = up.get("api/dashboard")["events"]
            return next((e for e in events if e["event"] == "peer_killed"), None)

        event = wait_until(killed_event, 30, "the dashboard to log the kill")
        assert event["text"] == f"{victim} killed by SIGKILL", event
        assert event["exit_code"] == -9
        assert event["last_log"] and event["last_log"] not in event["text"], event
        (node,) = [n for n in up.get("api/dashboard")["nodes"] if n["id"] == victim]
        assert node["state"] == "dead" and node["reason"] == "killed" and node["process"] == "killed", node
        up.wait_for_line(rf"^{victim} killed by SIGKILL; see ")
        assert up.interrupt() == 0, up.output()


def test_the_status_line_gives_times_under_a_second_in_ms(tmp_path: Path) -> None:
    up = NetworkUp(UpOptions(dir=tmp_path), out=io.StringIO())
    layout = NetworkLayout(tmp_path, "mychannel", "127.0.0.1:7050", tmp_path / "orderer.yaml", ())
    up.plan = NetworkPlan(layout, "127.0.0.1:7050")

    async def no_statuses() -> dict[str, Any]:
        return {}

    up.dashboard = Dashboard(no_statuses, view="network", title="t")
    model = up.dashboard.model
    model.latencies["mychannel"] = deque([0.038, 0.041, 0.044])  # gossip on loopback: tens of ms
    model.update(1.0, {"p": {"pki_id": "aa", "channels": {"mychannel": {"height": 1}}}})
    assert "time to all peers (median) 41 ms" in up._summary_line()


def test_the_status_line_counts_peers_the_others_know(tmp_path: Path) -> None:
    """Finding: it counted processes that answer, so a peer nobody had found yet counted too (while an org had
    two leaders)."""
    up = NetworkUp(UpOptions(dir=tmp_path), out=io.StringIO())
    layout = NetworkLayout(tmp_path, "mychannel", "127.0.0.1:7050", tmp_path / "orderer.yaml", ())
    up.plan = NetworkPlan(layout, "127.0.0.1:7050")

    async def no_statuses() -> dict[str, Any]:
        return {}

    up.dashboard = Dashboard(no_statuses, view="network", title="t")
    member = {"org": "Org1MSP", "endpoint": "e", "alive": True}
    statuses = {
        "p": {"pki_id": "aa", "channels": {}, "membership": [{**member, "pki_id": "bb"}]},
        "q": {"pki_id": "bb", "channels": {}, "membership": []},  # q has not found p yet
    }
    up.dashboard.model.update(1.0, statuses)
    assert "peers 1/" in up._summary_line() and "(2 running)" in up._summary_line(), up._summary_line()
    statuses["q"]["membership"] = [{**member, "pki_id": "aa"}]
    up.dashboard.model.update(2.0, statuses)
    assert "peers 2/" in up._summary_line(), up._summary_line()
