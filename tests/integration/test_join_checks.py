"""`rumor peer start --join` checks each block before it binds a port or opens the ledger, and says which file is
wrong and why; a port already taken is reported in the system's words."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from procnet import ledger_path, make_network
from rumor_processes import RUMOR, clean_env

from rumor.network import PeerEntry


def start(peer: PeerEntry, *join: Path) -> subprocess.CompletedProcess[str]:
    args = [RUMOR, "peer", "start", "--config", str(peer.config)]
    for block in join:
        args += ["--join", str(block)]
    return subprocess.run(
        args, env=clean_env(), capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "peer ready on" not in result.stdout
    return lines[0]


def test_a_file_that_is_not_a_block_is_named_and_nothing_is_bound(tmp_path: Path) -> None:
    layout = make_network(tmp_path / "net", orgs=1, peers_per_org=1)
    peer = layout.peers[0]
    junk = tmp_path / "notes.txt"
    junk.write_text("this is not a block\n")
    line = one_line_error(start(peer, layout.genesis, junk))
    assert line.startswith(f"error: --join {junk}: not a "), line
    assert not ledger_path(peer).exists()


def test_the_genesis_block_of_another_network_is_refused_before_joining(tmp_path: Path) -> None:
    """Same MSP IDs, other CAs: our certificate is not valid in that channel. Before, the block was joined and
    stored, and the next start failed without a hint."""
    ours = make_network(tmp_path / "ours", orgs=1, peers_per_org=1)
    theirs = make_network(tmp_path / "theirs", orgs=1, peers_per_org=1)
    peer = ours.peers[0]
    line = one_line_error(start(peer, theirs.genesis))
    assert line.startswith(f"error: --join {theirs.genesis}: channel {theirs.channel}: "), line
    assert "this peer's certificate is not valid in the channel's Org1MSP" in line, line
    assert "another network" in line, line
    assert not ledger_path(peer).exists()


def test_a_taken_gossip_port_says_already_in_use(tmp_path: Path) -> None:
    layout = make_network(tmp_path / "net", orgs=1, peers_per_org=1)
    peer = layout.peers[0]
    host, _, port = peer.endpoint.rpartition(":")
    with socket.socket() as squatter:
        squatter.bind((host, int(port)))
        squatter.listen()
        line = one_line_error(start(peer, layout.genesis))
    assert f"cannot listen on {peer.endpoint}" in line and "already in use" in line.lower(), line
