"""A peer whose ledger file was damaged on disk refuses to start with one line that says so and how to recover,
instead of serving or extending a broken chain."""

from __future__ import annotations

import subprocess
from pathlib import Path

from procnet import ledger_path, make_network
from rumor_processes import RUMOR, clean_env

from rumor.crypto.blocks import block_header_hash, new_block
from rumor.ledger import Ledger


def test_a_peer_with_a_damaged_ledger_refuses_to_start(tmp_path: Path) -> None:
    layout = make_network(tmp_path / "net", orgs=1, peers_per_org=1)
    peer = layout.peers[0]
    path = ledger_path(peer)
    path.parent.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(path)
    genesis = layout.genesis.read_bytes()
    ledger.commit(layout.channel, genesis)
    previous = ledger.last_hash(layout.channel)
    blocks = []
    for number in range(1, 301):
        block = new_block(number, previous, [bytes([number % 256]) * 2048])
        previous = block_header_hash(block.header)
        blocks.append(block.SerializeToString())
    ledger.commit_many(layout.channel, blocks)
    ledger.close()
    size = path.stat().st_size
    assert size > 256 * 1024, size
    with path.open("r+b") as f:
        f.seek(size // 2)
        f.write(b"\xa5" * 32 * 1024)

    started = subprocess.run(
        [RUMOR, "peer", "start", "--config", str(peer.config)],
        env=clean_env(), capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    assert started.returncode != 0
    lines = started.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in started.stderr, started.stderr
    assert "is damaged" in lines[0] and "move" in lines[0] and "--join" in lines[0], lines[0]
    assert "peer ready on" not in started.stdout
