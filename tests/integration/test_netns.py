"""The namespaces of netns.py: each host reachable at its address from the others and from the test's process,
a partition cuts a group off both ways (inside the group and towards the test's process everything still
flows), heal() restores it, and nothing of the subnet outlives it."""

from __future__ import annotations

import socket
import subprocess
import sys

from netns import Host, Subnet

# A TCP server inside a namespace, answering each connection with its host's name; the test reads its port
# from the server's first line of output.
SERVE = """
import socket, sys
server = socket.create_server((sys.argv[1], 0))
print(server.getsockname()[1], flush=True)
while True:
    conn, _ = server.accept()
    conn.sendall(sys.argv[2].encode())
    conn.close()
"""

# Connect from inside a namespace; exit 0 with what was read, 1 when the connection did not get through.
DIAL = """
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])) as conn:
        print(conn.recv(64).decode())
except OSError as exc:
    print(type(exc).__name__)
    sys.exit(1)
"""


def serve(host: Host) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [*host.wrap(), sys.executable, "-c", SERVE, host.address, host.name], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def dial(source: Host, target: Host, port: int, timeout: float = 10) -> str | None:
    """What ``target`` answers ``source``, or None when no connection gets through within ``timeout``."""
    done = source.run(sys.executable, "-c", DIAL, target.address, str(port), str(timeout), check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def test_hosts_reach_each_other_partitions_cut_and_heal(subnet: Subnet) -> None:
    a, b, c = (subnet.add_host(name) for name in ("a", "b", "c"))
    assert len({a.address, b.address, c.address, subnet.gateway}) == 4
    servers = {h.name: serve(h) for h in (a, b, c)}
    try:
        port = {name: p for name, (_, p) in servers.items()}
        assert dial(b, a, port["a"]) == "a" and dial(a, c, port["c"]) == "c"
        with socket.create_connection((a.address, port["a"]), timeout=10) as conn:  # from the test's process
            assert conn.recv(64) == b"a"

        subnet.partition([a, b])
        # A dropped packet is indistinguishable from a slow one: a short timeout here only bounds the wait.
        assert dial(c, a, port["a"], timeout=1) is None and dial(a, c, port["c"], timeout=1) is None
        assert dial(b, c, port["c"], timeout=1) is None
        assert dial(a, b, port["b"]) == "b"  # the group stays connected inside
        with socket.create_connection((a.address, port["a"]), timeout=10) as conn:  # the test still observes
            assert conn.recv(64) == b"a"

        subnet.heal()
        assert dial(c, a, port["a"]) == "a" and dial(b, c, port["c"]) == "c"
    finally:
        for proc, _ in servers.values():
            proc.kill()
            proc.wait()


def test_close_leaves_nothing_and_kills_what_still_runs(netns_available: None) -> None:
    with Subnet.create() as net:
        host = net.add_host("peer0.org1.example.com")
        proc, _ = serve(host)
        assert any(o.startswith("netns ") for o in net.leftovers())
    assert proc.wait(timeout=30) != 0  # killed by close(), which found it still running in the namespace
    assert net.leftovers() == []
