"""The options of ``init_network`` the integration tests rely on (in-process; no process is started)."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

import pytest

from rumor import channelconfig
from rumor.config import load_config
from rumor.network import (
    NetworkInitError,
    apply_gossip_overrides,
    free_base_port,
    init_network,
    layout_ports,
    load_layout,
)


def test_gossip_overrides_reach_every_core_yaml_and_are_validated(tmp_path: Path) -> None:
    layout = init_network(
        tmp_path / "net",
        orgs=1,
        peers_per_org=2,
        base_port=17050,
        gossip_overrides={"pullInterval": "1s", "election.startupGracePeriod": "2s", "state.batchSize": 5},
    )
    for peer in layout.peers:
        text = peer.config.read_text()
        assert text.startswith(f"# rumor peer {peer.id} of Org1MSP\n")
        gossip = load_config(peer.config, env={}).peer.gossip
        assert gossip.pull_interval == 1.0
        assert gossip.election.startup_grace_period == 2.0
        assert gossip.state.batch_size == 5
        assert gossip.use_leader_election and not gossip.org_leader  # the rest is as init_network writes it

    config = layout.peers[0].config
    with pytest.raises(NetworkInitError, match="no such key"):
        apply_gossip_overrides(config, {"election.noSuchKey": "1s"})
    with pytest.raises(NetworkInitError, match="pullInterval"):
        apply_gossip_overrides(config, {"pullInterval": "soon"})


def test_channel_orgs_and_max_message_count(tmp_path: Path) -> None:
    layout = init_network(
        tmp_path / "net", orgs=3, peers_per_org=1, base_port=17050, channel_orgs=["Org1MSP", "Org3MSP"],
        max_message_count=1,
    )  # fmt: skip
    genesis = channelconfig.read_genesis(layout.genesis.read_bytes())
    assert [o.mspid for o in genesis.orgs] == ["Org1MSP", "Org3MSP"]
    assert genesis.batch.max_message_count == 1
    assert [layout.in_channel(p) for p in layout.peers] == [True, False, True]
    assert load_layout(layout.root) == layout

    with pytest.raises(NetworkInitError, match="no org Org9MSP"):
        init_network(tmp_path / "other", orgs=2, peers_per_org=1, channel_orgs=["Org9MSP"])
    assert not (tmp_path / "other").exists()
    everyone = init_network(tmp_path / "all", orgs=2, peers_per_org=1, base_port=17050)
    assert everyone.channel_orgs == () and all(everyone.in_channel(p) for p in everyone.peers)
    assert load_layout(everyone.root) == everyone


def test_free_base_port_gives_a_layout_whose_every_port_binds() -> None:
    base = free_base_port(3)
    ports = layout_ports(base, 3)
    assert ports == [base, base + 1, base + 2, base + 3, base + 101, base + 102, base + 103]
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert max(ports) < low  # below the ephemeral range: no outgoing connection takes one meanwhile
    with contextlib.ExitStack() as bound:
        for port in ports:
            sock = bound.enter_context(socket.socket())
            sock.bind(("127.0.0.1", port))
