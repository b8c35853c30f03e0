"""Scaffolding for a whole network on one machine: ``rumor network init``.

    DIR/crypto/                    crypto material in cryptogen's layout
    DIR/orderer/orderer.yaml       the ordering service (port P), with ``orderers=1`` (Consensus.Type solo)
    DIR/orderers/<id>/orderer.yaml with ``orderers=N``: orderers 1..N-1 on ports P+200+k, Consensus.Type etcd
    DIR/etcd/<member>/etcd.yaml    with ``consensus="etcd"``: one etcd member each (client port P+220+2k,
                                   peer port P+221+2k), as many members as orderers
    DIR/peers/<peer id>/core.yaml  one per peer: gossip port P+1+k, operations port P+101+k
    DIR/channels/<channel>.block   the channel's genesis block (every org a member, unless ``channel_orgs``)
    DIR/network.yaml               what was generated, read back by ``network up`` and the clients

Every peer runs leader election (``useLeaderElection: true``, ``orgLeader: false``),
bootstraps from the first peer of its org, and advertises an external endpoint;
the first peer of each org is its org's anchor peer. Paths inside the YAML files
are relative to the file, so the directory can be moved as a whole.

``hosts`` places nodes on other hosts, by node host name and IP address
(``{"peer0.org1.example.com": "10.0.1.11", "orderer.example.com": "10.0.0.5"}``): such a
node listens on that address (its gossip or service port and its operations port), announces
it (gossip endpoint, external endpoint, anchor peer, the orderer endpoint of the genesis
block), and its TLS certificate names it, so that the others can dial it by that address.
Its operations endpoint listens there too (so that ``rumor peers --network`` reaches it), with
no admin token (one would travel in clear: admin calls there need ``operations.tls``).
Ports stay those of the layout; the other nodes stay on 127.0.0.1.

``gossip_overrides`` replaces keys of every peer's ``peer.gossip`` section, by their
core.yaml names (``{"election.startupGracePeriod": "2s", "pullInterval": "1s"}``): the
tests use it to shorten Fabric's timings, which are made for networks that live for months.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import secrets
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from rumor import channelconfig
from rumor.config import (
    Config,
    ConfigError,
    GossipConfig,
    OperationsConfig,
    PeerConfig,
    TLSConfig,
    config_to_yaml,
    load_config,
)
from rumor.crypto.identity import load_signing_identity
from rumor.crypto.material import NetworkSpec, default_spec, generate
from rumor.etcdnet import ETCD_MAX_REQUEST_BYTES, EtcdMember, write_cluster
from rumor.orderer.config import (
    ConsensusConfig,
    EtcdConsensusConfig,
    FileLedgerConfig,
    GeneralConfig,
    OrdererConfig,
    OrdererTLSConfig,
    orderer_config_to_yaml,
)

DEFAULT_BASE_PORT = 7050
MANIFEST = "network.yaml"


class NetworkInitError(Exception):
    """The network cannot be written; the message says why."""


@dataclass(frozen=True)
class PeerEntry:
    """One peer of a network written by ``init_network``: its ``id`` (``peer0.org1.example.com``), ``org`` (MSP
    ID), gossip ``endpoint`` and ``operations`` address (HOST:PORT), and the path of its core.yaml (``config``)."""

    id: str
    org: str
    endpoint: str
    operations: str
    config: Path


@dataclass(frozen=True)
class OrdererEntry:
    id: str
    endpoint: str
    config: Path


@dataclass(frozen=True)
class EtcdEntry:
    name: str
    endpoint: str
    config: Path


@dataclass(frozen=True)
class NetworkLayout:
    """What ``init_network`` wrote (and ``load_layout`` reads back)."""

    root: Path
    channel: str
    orderer_endpoint: str
    orderer_config: Path
    peers: tuple[PeerEntry, ...]
    channel_orgs: tuple[str, ...] = ()
    """MSP IDs of the channel's member orgs; empty when every org is a member."""
    orderers: tuple[OrdererEntry, ...] = ()
    """Every orderer (the first is ``orderer_endpoint``/``orderer_config``); empty in a manifest of before."""
    etcd: tuple[EtcdEntry, ...] = ()
    """The etcd members of an etcd ordering service; empty with solo."""

    @property
    def consensus(self) -> str:
        return "etcd" if self.etcd else "solo"

    @property
    def orderer_endpoints(self) -> list[str]:
        return [o.endpoint for o in self.orderers] or [self.orderer_endpoint]

    @property
    def genesis(self) -> Path:
        return self.root / "channels" / f"{self.channel}.block"

    def in_channel(self, peer: PeerEntry) -> bool:
        """Whether ``peer``'s org is a member of the channel (and so may join it)."""
        return not self.channel_orgs or peer.org in self.channel_orgs


def layout_ports(base_port: int, peers: int, orderers: int = 1, etcd: int = 0) -> list[int]:
    """The ports a network of ``peers`` peers takes from ``base_port`` on: the orderer's, then each peer's
    gossip port (base + 1 + k) and operations port (base + 101 + k); further orderers at base + 200 + k, etcd
    members' client and peer ports at base + 220 + 2k and base + 221 + 2k."""
    return [
        base_port,
        *(base_port + 1 + k for k in range(peers)),
        *(base_port + 101 + k for k in range(peers)),
        *(base_port + 200 + k for k in range(1, orderers)),
        *(base_port + 220 + j for j in range(2 * etcd)),
    ]


def free_base_port(peers: int, rng: random.Random | None = None, *, orderers: int = 1, etcd: int = 0) -> int:
    """A base port whose ``layout_ports`` are all free on 127.0.0.1 now (for tests and benchmarks).

    Drawn below the kernel's ephemeral range, so that outgoing connections of other processes cannot take
    one of the ports between this check and the listeners' binds.
    """
    low = 32768
    with contextlib.suppress(OSError, ValueError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    top = max(low, 12000) - 250
    rng = rng or random.Random(os.urandom(8))
    for _ in range(200):
        base = rng.randrange(10000, top)
        if all(_port_free(port) for port in layout_ports(base, peers, orderers, etcd)):
            return base
    raise NetworkInitError("no free range of ports found on 127.0.0.1")


def free_ports(count: int, rng: random.Random | None = None) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 now, below the ephemeral range (for etcd members in tests)."""
    low = 32768
    with contextlib.suppress(OSError, ValueError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    top = max(low, 12000) - 1
    rng = rng or random.Random(os.urandom(8))
    ports: list[int] = []
    for _ in range(50 * count):
        port = rng.randrange(10000, top)
        if port not in ports and _port_free(port):
            ports.append(port)
            if len(ports) == count:
                return ports
    raise NetworkInitError("no free ports found on 127.0.0.1")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _rel(path: Path, start: Path) -> str:
    return os.path.relpath(path, start)


def init_network(
    out: Path,
    *,
    orgs: int = 2,
    peers_per_org: int = 3,
    channel: str = "mychannel",
    base_port: int = DEFAULT_BASE_PORT,
    tls: bool = True,
    batch_timeout: float = 0.5,
    max_message_count: int | None = None,
    spec: NetworkSpec | None = None,
    channel_orgs: Sequence[str] | None = None,
    gossip_overrides: Mapping[str, object] | None = None,
    orderers: int = 1,
    consensus: str = "solo",
    lease_ttl: float = 5.0,
    hosts: Mapping[str, str] | None = None,
) -> NetworkLayout:
    """Write a complete network under ``out`` (which must be empty or absent).

    ``orderers`` > 1 needs ``consensus="etcd"``: an etcd cluster of as many members as orderers is written too,
    and every orderer is one node of the etcd ordering service (``lease_ttl``: Consensus.Etcd.LeaseTTL).

    ``max_message_count`` caps the envelopes per block (the orderer's default otherwise);
    ``channel_orgs`` names the MSP IDs of the channel's member orgs (default: all; the
    peers of the others get a core.yaml but may not join); ``hosts`` and ``gossip_overrides``
    see above.
    """
    out = Path(out).resolve()
    if out.exists() and any(out.iterdir()):
        raise NetworkInitError(f"{out} is not empty; choose an empty directory (or remove it)")
    if not 1 <= base_port <= 65535 - 240:
        raise NetworkInitError(f"--base-port {base_port}: expected a port between 1 and 65295")
    if consensus not in ("solo", "etcd"):
        raise NetworkInitError(f"--consensus {consensus}: expected solo or etcd")
    if not 1 <= orderers <= 9:
        raise NetworkInitError(f"--orderers {orderers}: expected 1 to 9")
    if orderers > 1 and consensus != "etcd":
        raise NetworkInitError(f"--orderers {orderers}: several orderers need --consensus etcd (solo is one node)")
    spec = spec or default_spec(orgs, peers_per_org)
    if orderers > len(spec.orderer_orgs[0].orderers):
        first = spec.orderer_orgs[0]
        names = (*first.orderers, *(f"orderer{i}" for i in range(len(first.orderers), orderers)))
        spec = replace(spec, orderer_orgs=(replace(first, orderers=names), *spec.orderer_orgs[1:]))
    all_mspids = [o.mspid for o in spec.peer_orgs]
    members = tuple(channel_orgs) if channel_orgs is not None else ()
    unknown = sorted(set(members) - set(all_mspids))
    if unknown:
        raise NetworkInitError(f"channel_orgs: no org {', '.join(unknown)} (orgs: {', '.join(all_mspids)})")
    if channel_orgs is not None and not members:
        raise NetworkInitError("channel_orgs: a channel needs at least one member org")
    orderer_org = spec.orderer_orgs[0]
    orderer_hosts = [f"{name}.{orderer_org.domain}" for name in orderer_org.orderers[:orderers]]
    orderer_host = orderer_hosts[0]
    nodes = [*(f"{n}.{o.domain}" for o in spec.peer_orgs for n in o.peers), *orderer_hosts]
    addresses = _host_addresses(hosts or {}, nodes)
    crypto = out / "crypto"
    material = generate(spec, crypto, extra_sans={host: [address] for host, address in addresses.items()})
    del material
    orderer_dir = crypto / "ordererOrganizations" / orderer_org.domain / "orderers" / orderer_host

    def at(host: str, port: int) -> str:
        address = ipaddress.ip_address(addresses.get(host, "127.0.0.1"))
        return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"

    orderer_endpoints = [at(h, base_port if k == 0 else base_port + 200 + k) for k, h in enumerate(orderer_hosts)]
    orderer_endpoint = orderer_endpoints[0]

    all_tls_cas = [
        crypto / "peerOrganizations" / o.domain / "tlsca" / f"tlsca.{o.domain}-cert.pem" for o in spec.peer_orgs
    ]
    orderer_tls_ca = (
        crypto / "ordererOrganizations" / orderer_org.domain / "tlsca" / f"tlsca.{orderer_org.domain}-cert.pem"
    )

    peers: list[PeerEntry] = []
    org_configs = []
    k = 0
    for org in spec.peer_orgs:
        org_msp = crypto / "peerOrganizations" / org.domain / "msp"
        first = at(f"{org.peers[0]}.{org.domain}", base_port + 1 + k)
        if not members or org.mspid in members:
            org_configs.append(channelconfig.org_config(org.mspid, org_msp, anchor_peers=[first]))
        for name in org.peers:
            host = f"{name}.{org.domain}"
            peer_dir = out / "peers" / host
            peer_dir.mkdir(parents=True)
            endpoint = at(host, base_port + 1 + k)
            operations = at(host, base_port + 101 + k)
            node_dir = crypto / "peerOrganizations" / org.domain / "peers" / host
            config = Config(
                peer=PeerConfig(
                    id=host,
                    network_id="rumor",
                    listen_address=endpoint,
                    address=endpoint,
                    file_system_path="data",
                    msp_config_path=_rel(node_dir / "msp", peer_dir),
                    local_msp_id=org.mspid,
                    tls=TLSConfig(
                        enabled=tls,
                        cert_file=_rel(node_dir / "tls" / "server.crt", peer_dir),
                        key_file=_rel(node_dir / "tls" / "server.key", peer_dir),
                        rootcert_file=_rel(node_dir / "tls" / "ca.crt", peer_dir),
                        client_root_cas_files=tuple(_rel(p, peer_dir) for p in [*all_tls_cas, orderer_tls_ca]),
                    ),
                    gossip=replace(
                        GossipConfig(),
                        bootstrap=() if endpoint == first else (first,),
                        endpoint=endpoint,
                        external_endpoint=endpoint,
                        use_leader_election=True,
                        org_leader=False,
                    ),
                ),
                # A fresh secret per peer for its admin calls (operations.adminToken), readable only by its owner.
                # Not for a peer on another host: its operations endpoint listens on its address, where a token
                # would cross the network in clear (the peer refuses that); admin calls there need operations.tls.
                operations=OperationsConfig(
                    listen_address=operations, admin_token="" if host in addresses else secrets.token_hex(16)
                ),
            )
            config_path = peer_dir / "core.yaml"
            config_path.write_text(config_to_yaml(config, header=f"rumor peer {host} of {org.mspid}"))
            config_path.chmod(0o600)
            if gossip_overrides:
                apply_gossip_overrides(config_path, gossip_overrides)
            peers.append(PeerEntry(host, org.mspid, endpoint, operations, config_path))
            k += 1

    orderer_cfg = channelconfig.orderer_org_config(
        orderer_org.mspid, crypto / "ordererOrganizations" / orderer_org.domain / "msp", orderer_endpoints
    )
    batch = (
        channelconfig.batch_config(batch_timeout=batch_timeout)
        if max_message_count is None
        else channelconfig.batch_config(batch_timeout=batch_timeout, max_message_count=max_message_count)
    )
    # ConsensusType names how the orderers agree; a Fabric peer does not read it.
    config_msg = channelconfig.channel_config(channel, org_configs, [orderer_cfg], batch, consensus_type=consensus)
    signer = load_signing_identity(orderer_dir / "msp", orderer_org.mspid)
    genesis = channelconfig.genesis_block(config_msg, signer)
    block_path = out / "channels" / f"{channel}.block"
    block_path.parent.mkdir(parents=True)
    channelconfig.save_block(block_path, genesis)

    etcd_entries: list[EtcdEntry] = []
    etcd_config = None
    if consensus == "etcd":
        etcd_members = [
            EtcdMember(f"etcd{k}", "127.0.0.1", base_port + 220 + 2 * k, base_port + 221 + 2 * k)
            for k in range(orderers)
        ]
        paths = write_cluster(out / "etcd", etcd_members)
        etcd_entries = [EtcdEntry(m.name, m.client_endpoint, p) for m, p in zip(etcd_members, paths, strict=True)]
        etcd_config = EtcdConsensusConfig(
            endpoints=tuple(m.client_endpoint for m in etcd_members),
            lease_ttl=lease_ttl,
            max_request_bytes=ETCD_MAX_REQUEST_BYTES,
        )
    orderer_entries: list[OrdererEntry] = []
    for k, (host, endpoint) in enumerate(zip(orderer_hosts, orderer_endpoints, strict=True)):
        node_dir = crypto / "ordererOrganizations" / orderer_org.domain / "orderers" / host
        # the first one where a single orderer lives (`rumor submit --network` finds it there)
        orderer_home = out / "orderer" if k == 0 else out / "orderers" / host
        orderer_home.mkdir(parents=True)
        consensus_config = ConsensusConfig()
        if etcd_config is not None:
            # each orderer lists its own member first: its requests go there while it is up
            own = (*etcd_config.endpoints[k:], *etcd_config.endpoints[:k])
            consensus_config = ConsensusConfig(type="etcd", etcd=replace(etcd_config, endpoints=own, node_id=host))
        orderer_config = OrdererConfig(
            general=GeneralConfig(
                listen_address=endpoint,
                local_msp_dir=_rel(node_dir / "msp", orderer_home),
                local_msp_id=orderer_org.mspid,
                tls=OrdererTLSConfig(
                    enabled=tls,
                    certificate=_rel(node_dir / "tls" / "server.crt", orderer_home),
                    private_key=_rel(node_dir / "tls" / "server.key", orderer_home),
                    root_cas=(_rel(node_dir / "tls" / "ca.crt", orderer_home),),
                ),
            ),
            file_ledger=FileLedgerConfig(location="data"),
            channels=(_rel(block_path, orderer_home),),
            consensus=consensus_config,
        )
        config_path = orderer_home / "orderer.yaml"
        config_path.write_text(orderer_config_to_yaml(orderer_config, header=f"rumor ordering service: {host}"))
        orderer_entries.append(OrdererEntry(host, endpoint, config_path))
    orderer_config_path = orderer_entries[0].config

    layout = NetworkLayout(
        out,
        channel,
        orderer_endpoint,
        orderer_config_path,
        tuple(peers),
        members,
        tuple(orderer_entries),
        tuple(etcd_entries),
    )
    manifest: dict[str, object] = {
        "channel": channel,
        "orderer": {"endpoint": orderer_endpoint, "config": _rel(orderer_config_path, out)},
        "orderers": [{"id": o.id, "endpoint": o.endpoint, "config": _rel(o.config, out)} for o in orderer_entries],
        "peers": [
            {
                "id": p.id,
                "org": p.org,
                "endpoint": p.endpoint,
                "operations": p.operations,
                "config": _rel(p.config, out),
            }
            for p in peers
        ],
    }
    if members:
        manifest["channel_orgs"] = list(members)
    if etcd_entries:
        manifest["etcd"] = [
            {"name": e.name, "endpoint": e.endpoint, "config": _rel(e.config, out)} for e in etcd_entries
        ]
    (out / MANIFEST).write_text(yaml.safe_dump(manifest, sort_keys=False))
    return layout


def _host_addresses(hosts: Mapping[str, str], nodes: Sequence[str]) -> dict[str, str]:
    """``hosts`` checked: every key a node of the network, every value an IP address (normalized)."""
    unknown = sorted(set(hosts) - set(nodes))
    if unknown:
        raise NetworkInitError(f"host {', '.join(unknown)}: no such node (nodes: {', '.join(nodes)})")
    out: dict[str, str] = {}
    for host, address in hosts.items():
        try:
            out[host] = str(ipaddress.ip_address(address))
        except ValueError:
            raise NetworkInitError(f"host {host}={address}: expected an IP address, e.g. 10.0.1.11") from None
    return out


def apply_gossip_overrides(core_yaml: Path, overrides: Mapping[str, object]) -> None:
    """Replace keys of the ``peer.gossip`` section of ``core_yaml`` in place, by core.yaml name (dotted for
    ``election``, ``state``, ``pvtData``): ``{"aliveTimeInterval": "1s"}``. The file must hold every key
    (as ``init_network`` writes it); comment lines at its top are kept. Raises NetworkInitError for an unknown
    key or a bad value.
    """
    core_yaml = Path(core_yaml)
    text = core_yaml.read_text()
    header = "".join(line + "\n" for line in text.splitlines() if line.startswith("#"))
    tree = yaml.safe_load(text)
    for key, value in overrides.items():
        node = tree["peer"]["gossip"]
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or leaf not in node:
            raise NetworkInitError(f"gossip override {key!r}: no such key in peer.gossip")
        node[leaf] = value
    core_yaml.write_text(header + yaml.safe_dump(tree, sort_keys=False, default_flow_style=False, width=1000))
    try:
        load_config(core_yaml, env={})
    except ConfigError as exc:
        raise NetworkInitError(f"gossip overrides: {exc}") from None


def load_layout(root: Path) -> NetworkLayout:
    """Read back what ``init_network`` wrote under ``root``."""
    root = Path(root).resolve()
    path = root / MANIFEST
    if not path.is_file():
        raise NetworkInitError(f"{root} holds no rumor network (no {MANIFEST}); run `rumor network init` first")
    try:
        data = yaml.safe_load(path.read_text())
        peers = tuple(
            PeerEntry(p["id"], p["org"], p["endpoint"], p["operations"], root / p["config"]) for p in data["peers"]
        )
        return NetworkLayout(
            root,
            data["channel"],
            data["orderer"]["endpoint"],
            root / data["orderer"]["config"],
            peers,
            tuple(data.get("channel_orgs") or ()),
            tuple(OrdererEntry(o["id"], o["endpoint"], root / o["config"]) for o in data.get("orderers") or ()),
            tuple(EtcdEntry(e["name"], e["endpoint"], root / e["config"]) for e in data.get("etcd") or ()),
        )
    except (KeyError, TypeError, yaml.YAMLError) as exc:
        raise NetworkInitError(f"{path} is damaged: {exc}") from None
