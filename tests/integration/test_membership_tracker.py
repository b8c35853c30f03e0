"""membershipTrackerInterval: a peer reports, per channel, who came into its view and who left it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import yaml
from polling import wait_for
from procnet import Cluster, make_network

from rumor.network import NetworkLayout


async def test_membership_changes_are_logged_per_channel(
    clusters: Callable[[NetworkLayout], Cluster], tmp_path: Path
) -> None:
    layout = make_network(
        tmp_path / "net", orgs=1, peers_per_org=2, gossip_overrides={"membershipTrackerInterval": "1s"}
    )
    cluster = clusters(layout)
    first, second = layout.peers
    watcher = await cluster.start_peer(first)
    await cluster.start_peer(second)
    channel = layout.channel

    def reported(kind: str) -> bool:
        return any(
            f"channel {channel}: membership changed" in line and f"{kind} [{second.endpoint}]" in line
            for line in watcher.stderr().splitlines()
        )

    await wait_for(lambda: reported("online"), 30, f"{first.id} reports {second.id} online", describe=watcher.tail)
    # Log lines name peers by their certificate's name, not by PKI-ID alone.
    log = watcher.stderr()
    assert f"new peer {second.id} (" in log and "connected " in log and f"({second.id}, " in log, log
    cluster.kill9(second.id)
    await wait_for(lambda: reported("offline"), 40, f"{first.id} reports {second.id} offline", describe=watcher.tail)


async def test_peer_start_takes_logging_from_core_yaml(
    clusters: Callable[[NetworkLayout], Cluster], tmp_path: Path
) -> None:
    """Finding: core.yaml's logging.level and logging.format were documented and read nowhere."""
    layout = make_network(tmp_path / "net", orgs=1, peers_per_org=1)
    peer = layout.peers[0]
    config = yaml.safe_load(peer.config.read_text())
    config["logging"] = {"level": "debug", "format": "json"}
    peer.config.write_text(yaml.safe_dump(config))
    cluster = clusters(layout)
    proc = await cluster.start_peer(peer)
    await cluster.stop(peer.id)
    records = [json.loads(line) for line in proc.stderr().splitlines() if line.strip()]
    assert records, proc.tail()
    assert any(r.get("level", "").lower() == "debug" for r in records), records[:5]
