"""The options of ``init_network`` the integration tests rely on (in-process; no process is started)."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

import pytest
from cryptography import x509

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


def test_hosts_place_nodes_on_their_addresses_and_name_them_in_tls(tmp_path: Path) -> None:
    hosts = {
        "orderer.example.com": "10.0.0.5",
        "peer0.org1.example.com": "10.0.1.11",
        "peer0.org2.example.com": "fd00::7",
    }
    layout = init_network(tmp_path / "net", orgs=2, peers_per_org=2, base_port=17050, hosts=hosts)
    assert layout.orderer_endpoint == "10.0.0.5:17050"
    assert [(p.id, p.endpoint, p.operations) for p in layout.peers] == [
        ("peer0.org1.example.com", "10.0.1.11:17051", "10.0.1.11:17151"),
        ("peer1.org1.example.com", "127.0.0.1:17052", "127.0.0.1:17152"),
        ("peer0.org2.example.com", "[fd00::7]:17053", "[fd00::7]:17153"),
        ("peer1.org2.example.com", "127.0.0.1:17054", "127.0.0.1:17154"),
    ]
    peer0 = load_config(layout.peers[0].config, env={}).peer
    assert peer0.listen_address == peer0.gossip.endpoint == peer0.gossip.external_endpoint == "10.0.1.11:17051"
    assert load_config(layout.peers[1].config, env={}).peer.gossip.bootstrap == ("10.0.1.11:17051",)
    # An admin token over plain HTTP is for loopback only (a peer refuses it elsewhere): only the local peers get one.
    tokens = [bool(load_config(p.config, env={}).operations.admin_token) for p in layout.peers]
    assert tokens == [False, True, False, True]
    genesis = channelconfig.read_genesis(layout.genesis.read_bytes())
    assert genesis.anchor_peers == {"Org1MSP": ["10.0.1.11:17051"], "Org2MSP": ["[fd00::7]:17053"]}
    assert genesis.orderer_endpoints == ["10.0.0.5:17050"]
    assert load_layout(layout.root) == layout

    def sans(node: str) -> list[str]:
        org = "ordererOrganizations/example.com/orderers" if node.startswith("orderer") else (
            f"peerOrganizations/{node.split('.', 1)[1]}/peers"
        )  # fmt: skip
        pem = (layout.root / "crypto" / org / node / "tls" / "server.crt").read_bytes()
        ext = x509.load_pem_x509_certificate(pem).extensions.get_extension_for_class(x509.SubjectAlternativeName)
        return [str(name.value) for name in ext.value]

    assert sans("peer0.org1.example.com") == [
        "peer0.org1.example.com", "peer0", "localhost", "127.0.0.1", "10.0.1.11",
    ]  # fmt: skip
    assert sans("orderer.example.com")[-1] == "10.0.0.5" and sans("peer0.org2.example.com")[-1] == "fd00::7"
    assert sans("peer1.org1.example.com")[-1] == "127.0.0.1"

    with pytest.raises(NetworkInitError, match=r"peer7\.org1\.example\.com: no such node"):
        init_network(tmp_path / "bad1", orgs=1, peers_per_org=1, hosts={"peer7.org1.example.com": "10.0.0.1"})
    with pytest.raises(NetworkInitError, match="expected an IP address"):
        init_network(tmp_path / "bad2", orgs=1, peers_per_org=1, hosts={"peer0.org1.example.com": "host-a"})
    assert not (tmp_path / "bad1").exists() and not (tmp_path / "bad2").exists()
