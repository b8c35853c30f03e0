"""Two processes on one peer directory: the second is refused before it touches the ledger, naming the first."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from procnet import Cluster, make_network
from rumor_processes import RUMOR, clean_env

from rumor.network import NetworkLayout, free_base_port


async def test_a_second_peer_on_the_same_directory_is_refused(
    clusters: Callable[[NetworkLayout], Cluster], tmp_path: Path
) -> None:
    """Finding: the same core.yaml with other listen addresses (by env) ran beside the first, same identity, same
    SQLite ledger, and elected itself leader."""
    layout = make_network(tmp_path / "net", orgs=1, peers_per_org=1)
    cluster = clusters(layout)
    peer = layout.peers[0]
    first = await cluster.start_peer(peer)
    base = free_base_port(2)
    second = subprocess.run(
        [RUMOR, "peer", "start", "--config", str(peer.config)],
        env=clean_env(
            RUMOR_PEER_LISTENADDRESS=f"127.0.0.1:{base}",
            RUMOR_PEER_ADDRESS=f"127.0.0.1:{base}",
            RUMOR_OPERATIONS_LISTENADDRESS=f"127.0.0.1:{base + 1}",
        ),
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    assert second.returncode != 0
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in second.stderr, second.stderr
    assert f"is in use by another rumor peer (PID {first.pid})" in lines[0], lines[0]
    assert first.running()
    # Once the first one is gone, the directory is free again (the kernel drops the lock even on kill -9).
    cluster.kill9(peer.id)
    await cluster.start_peer(peer, join=[])


async def test_the_ready_line_names_the_address_bound(tmp_path: Path) -> None:
    """Finding: with the listen address overridden, the ready line printed peer.address, not where it listened."""
    layout = make_network(tmp_path / "net", orgs=1, peers_per_org=1)
    peer = layout.peers[0]
    base = free_base_port(2)
    proc = subprocess.Popen(
        [RUMOR, "peer", "start", "--config", str(peer.config), "--join", str(layout.genesis)],
        env=clean_env(
            RUMOR_PEER_LISTENADDRESS=f"127.0.0.1:{base}", RUMOR_OPERATIONS_LISTENADDRESS=f"127.0.0.1:{base + 1}"
        ),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
    finally:
        proc.terminate()
        proc.wait(30)
    assert line == (
        f"peer ready on 127.0.0.1:{base} (operations on 127.0.0.1:{base + 1}); advertised as {peer.endpoint}"
    ), line
