"""Whole simulated networks of rumor peers: PeerCores on cheap crypto, a simulated ordering service.

    cluster = Cluster(seed=1)
    for org in ("Org1MSP", "Org2MSP"):
        for i in range(3):
            cluster.add_peer(org, f"peer{i}")
    cluster.create_channel("ch", ["Org1MSP", "Org2MSP"])
    cluster.ordering.submit("ch", 50)           # 50 blocks cut by the ordering service
    cluster.net.run_until_true(lambda: cluster.all_at_height("ch", 51), timeout=120)

Each peer keeps its ledger and its persisted peer list across ``crash``/``restart``
as a disk would. The ordering service delivers to whichever peers lead their
org, as a deliver client on a leader would: from the peer's ledger height on.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace

from rumor.config import GossipConfig
from rumor.core.election import ElectionConfig
from rumor.core.node import GossipNode
from rumor.core.peer import PeerCore
from rumor.core.peerstore import MemoryPeerStore
from rumor.core.state import StateConfig
from rumor.core.types import RecordingTracer, Tracer
from rumor.crypto.blocks import block_header_hash, new_block, sign_block
from rumor.crypto.cheap import CheapCryptoService, CheapRegistry
from rumor.crypto.mcs import X509CryptoService
from rumor.ledger import MemoryLedger
from rumor.sim.network import BandwidthModel, LatencyModel, SimNetwork
from rumor.sim.x509 import X509Material

ORDERER_ORG = "OrdererMSP"


class SharedBlockLedger(MemoryLedger):
    """A MemoryLedger whose blocks share one copy per distinct block across the peers of a cluster.

    Each peer receives its own copy of a block's bytes (a decoded message hands out fresh bytes); a
    thousand peers would keep a thousand copies of every block. The pool keeps one (it costs a hash and a
    compare per block committed).
    """

    def __init__(self, pool: dict[bytes, bytes]) -> None:
        super().__init__()
        self._pool = pool

    def commit_many(self, channel: str, blocks: Sequence[bytes]) -> None:
        super().commit_many(channel, [self._pool.setdefault(raw, raw) for raw in blocks])


@dataclass
class SimPeerSpec:
    """Everything that survives a simulated peer's crash: who it is and what it stored."""

    name: str
    org: str
    endpoint: str
    mcs: CheapCryptoService | X509CryptoService
    ledger: MemoryLedger = field(default_factory=MemoryLedger)
    peer_store: MemoryPeerStore = field(default_factory=MemoryPeerStore)
    bootstrap: tuple[str, ...] = ()
    anchor: bool = False
    external: bool = True
    incarnation: int = 0


class SimOrderingService:
    """Cuts signed blocks and feeds them to the peers that lead their org on a channel."""

    def __init__(self, cluster: Cluster, interval: float | None = 0.05) -> None:
        self.cluster = cluster
        self.mcs = cluster.crypto_for(ORDERER_ORG, "orderer", role="orderer")
        self.chains: dict[str, list[bytes]] = {}
        self.cut_times: dict[str, list[float]] = {}
        if interval is not None:
            cluster.net.every(interval, self.pump)

    def genesis(self, channel: str) -> bytes:
        block = sign_block(new_block(0, b"", [b"genesis:" + channel.encode()]), self.mcs, nonce=b"genesis")
        raw = block.SerializeToString()
        self.chains[channel] = [raw]
        self.cut_times[channel] = [self.cluster.net.now]
        return raw

    def submit(self, channel: str, count: int = 1, size: int = 64) -> None:
        """Cut ``count`` blocks of ``size`` payload bytes each, now."""
        chain = self.chains[channel]
        for _ in range(count):
            prev = new_block(0, b"", [])
            prev.ParseFromString(chain[-1])
            number = len(chain)
            payload = number.to_bytes(8, "big") * (max(size, 8) // 8)
            block = sign_block(new_block(number, block_header_hash(prev.header), [payload]), self.mcs, nonce=b"n")
            chain.append(block.SerializeToString())
            self.cut_times[channel].append(self.cluster.net.now)

    def pump(self) -> None:
        """Deliver to each leader the blocks it lacks, as its deliver stream would."""
        for channel, chain in self.chains.items():
            for spec in self.cluster.specs.values():
                core = self.cluster.core(spec.name)
                if core is None or channel not in core.channels or not core.is_leader(channel):
                    continue
                height = core.height(channel)
                if height >= len(chain):
                    continue
                blocks = chain[height:]

                def feed(c: PeerCore, ch: str = channel, start: int = height, items: list[bytes] = blocks) -> list:
                    effects: list = []
                    for offset, raw in enumerate(items):
                        effects += c.add_block(ch, start + offset, raw, now=self.cluster.net.now)
                    return effects

                self.cluster.net.invoke(spec.endpoint, feed)  # type: ignore[arg-type]


class Cluster:
    """A simulated network of PeerCores, with helpers to build, break and inspect it."""

    def __init__(
        self,
        seed: int = 0,
        latency: float | LatencyModel = 0.005,
        gossip: GossipConfig | None = None,
        state: StateConfig | None = None,
        election: ElectionConfig | None = None,
        use_leader_election: bool = True,
        record: bool = False,
        *,
        bandwidth: float | BandwidthModel | None = None,
        loss: float = 0.0,
        org_leaders: Collection[str] | None = None,
        tracer_factory: Callable[[str], Tracer] | None = None,
        configure: Callable[[SimPeerSpec, GossipConfig], GossipConfig] | None = None,
        ordering_interval: float | None = 0.05,
        crypto: str = "cheap",
        keep_effects: bool = True,
    ) -> None:
        """``bandwidth`` and ``loss`` go to the SimNetwork. Without leader election every peer leads its
        org (orgLeader), unless ``org_leaders`` names the peers that do (the others only follow).
        ``tracer_factory(name)`` makes each peer's tracer (default: a RecordingTracer), and
        ``configure(spec, config)`` may change one peer's gossip settings (e.g. mix dissemination modes).
        The ordering service delivers every ``ordering_interval`` seconds (None: only when ``pump`` is called).
        ``crypto`` is "cheap" (HMAC stand-ins) or "x509" (real certificates and ECDSA, see rumor.sim.x509).
        """
        if crypto not in ("cheap", "x509"):
            raise ValueError(f"crypto {crypto!r}: expected cheap or x509")
        self.seed = seed
        self.net = SimNetwork(
            seed=seed, latency=latency, record=record, bandwidth=bandwidth, loss=loss, keep_effects=keep_effects
        )
        self.registry = CheapRegistry(now=lambda: self.net.now)
        self.registry.add_org(ORDERER_ORG)
        self.x509 = X509Material() if crypto == "x509" else None
        self.gossip = gossip or GossipConfig()
        self.state = state or StateConfig()
        self.election = election or ElectionConfig()
        self.use_leader_election = use_leader_election
        self.org_leaders = frozenset(org_leaders) if org_leaders is not None else None
        self.tracer_factory = tracer_factory
        self.configure = configure
        self.specs: dict[str, SimPeerSpec] = {}
        self._block_pool: dict[bytes, bytes] = {}
        self.tracers: dict[str, Tracer] = {}
        self.channels: dict[str, tuple[str, ...]] = {}
        self.ordering = SimOrderingService(self, interval=ordering_interval)
        self._rng = random.Random(seed)

    # --- building -------------------------------------------------------------------------------

    def crypto_for(self, org: str, name: str, role: str = "peer") -> CheapCryptoService | X509CryptoService:
        """The crypto service of a new node ``name`` of ``org``: cheap, or real X.509 with crypto="x509"."""
        if self.x509 is not None:
            return self.x509.service(org, name, role)
        return CheapCryptoService.for_peer(org, name, self.registry)

    def add_peer(
        self, org: str, name: str, bootstrap: Sequence[str] = (), anchor: bool = False, external: bool = True
    ) -> SimPeerSpec:
        """Add (and start) a peer; with no ``bootstrap`` it bootstraps from the first peer of its org.

        ``external`` False gives it no external endpoint: other orgs never learn of it.
        """
        full = f"{name}.{org.lower()}"
        endpoint = f"{full}:7051"
        if not bootstrap:
            bootstrap = [s.endpoint for s in self.specs.values() if s.org == org][:1]
        spec = SimPeerSpec(
            full,
            org,
            endpoint,
            self.crypto_for(org, full),
            ledger=SharedBlockLedger(self._block_pool),
            bootstrap=tuple(bootstrap),
            anchor=anchor,
            external=external,
        )
        self.specs[full] = spec
        self.net.add(endpoint, spec.mcs.pki_id, spec.mcs.identity, self._make_core(spec), start=True)
        return spec

    def _make_core(self, spec: SimPeerSpec) -> PeerCore:
        spec.incarnation += 1
        tracer = self.tracers.get(spec.name)
        if tracer is None:
            tracer = self.tracers[spec.name] = (
                self.tracer_factory(spec.name) if self.tracer_factory is not None else RecordingTracer()
            )
        external = spec.endpoint if spec.external else ""
        config = replace(self.gossip, endpoint=spec.endpoint, external_endpoint=external, bootstrap=spec.bootstrap)
        if self.configure is not None:
            config = self.configure(spec, config)
        node = GossipNode(
            config,
            spec.mcs.identity,
            spec.mcs,
            spec.mcs,
            rng=random.Random(f"{self.seed}:{spec.name}:{spec.incarnation}"),
            start_time_ns=1_000_000_000 * spec.incarnation + int(self.net.now * 1e9),
            peer_store=spec.peer_store,
            tracer=tracer,
        )
        core = PeerCore(
            node,
            spec.ledger,
            state_config=self.state,
            election_config=self.election,
            use_leader_election=self.use_leader_election,
            static_leader=not self.use_leader_election and (self.org_leaders is None or spec.name in self.org_leaders),
            rng=random.Random(f"{self.seed}:{spec.name}:{spec.incarnation}:core"),
            tracer=tracer,
        )
        for channel, orgs in self.channels.items():
            if spec.org in orgs:
                self._join(core, spec, channel, orgs)
        return core

    def _join(self, core: PeerCore, spec: SimPeerSpec, channel: str, orgs: Iterable[str]) -> list:
        if spec.ledger.height(channel) == 0:
            spec.ledger.commit(channel, self.ordering.chains[channel][0])
        anchors = {o: [s.endpoint for s in self.specs.values() if s.org == o and s.anchor] for o in orgs}
        return core.join_channel(channel, list(orgs), anchors, now=self.net.now)

    def create_channel(self, channel: str, orgs: Sequence[str]) -> None:
        """Make the channel's genesis block and have every peer of its orgs join it."""
        self.registry.register_channel(channel, [ORDERER_ORG])
        if self.x509 is not None:
            self.x509.register_channel(channel, [ORDERER_ORG])
        self.ordering.genesis(channel)
        self.channels[channel] = tuple(orgs)
        for spec in self.specs.values():
            if spec.org in orgs and self.core(spec.name) is not None:
                self.net.invoke(spec.endpoint, lambda c, s=spec: self._join(c, s, channel, orgs))  # type: ignore[arg-type]

    # --- breaking -------------------------------------------------------------------------------

    def crash(self, name: str) -> None:
        self.net.crash(self.specs[name].endpoint)

    def restart(self, name: str) -> None:
        spec = self.specs[name]
        self.net.restart(spec.endpoint, self._make_core(spec))

    # --- inspecting -----------------------------------------------------------------------------

    def core(self, name: str) -> PeerCore | None:
        node = self.net.peers[self.specs[name].endpoint].node
        return node if isinstance(node, PeerCore) else None

    def up(self) -> list[SimPeerSpec]:
        return [s for s in self.specs.values() if self.core(s.name) is not None]

    def members(self, channel: str) -> list[SimPeerSpec]:
        return [s for s in self.specs.values() if s.org in self.channels.get(channel, ())]

    def all_at_height(self, channel: str, height: int, specs: Iterable[SimPeerSpec] | None = None) -> bool:
        chosen = specs if specs is not None else [s for s in self.members(channel) if self.core(s.name)]
        return all(s.ledger.height(channel) >= height for s in chosen)

    def leaders(self, channel: str, org: str) -> list[str]:
        return [s.name for s in self.up() if s.org == org and self.core(s.name).is_leader(channel)]  # type: ignore[union-attr]
