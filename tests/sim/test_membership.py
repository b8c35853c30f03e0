"""Membership of many peers on the simulated network: convergence, failures, restarts, cut-offs.

Discovery runs here on its own (it implements the node interface itself), with the cheap crypto service
and virtual time only. Counterparts in Fabric: TestMembershipConvergence (gossip_test.go), TestConvergence
and TestPeerIsolation (discovery_test.go), TestIdentityExpiration (gossip_test.go).
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from rumor.config import GossipConfig
from rumor.core.discovery import Discovery
from rumor.core.peerstore import MemoryPeerStore
from rumor.core.types import RecordingTracer
from rumor.crypto.cheap import CheapCryptoService, CheapRegistry
from rumor.sim.network import SimNetwork

TIMEOUT = GossipConfig().alive_expiration_timeout
CHECK = TIMEOUT / 10


@dataclass
class Cluster:
    """Discovery nodes on one simulated network; each endpoint keeps its tracer and store across restarts."""

    seed: int = 0
    net: SimNetwork = field(init=False)
    reg: CheapRegistry = field(init=False)
    nodes: dict[str, Discovery] = field(default_factory=dict)
    mcs: dict[str, CheapCryptoService] = field(default_factory=dict)
    tracers: dict[str, RecordingTracer] = field(default_factory=dict)
    stores: dict[str, MemoryPeerStore] = field(default_factory=dict)
    settings: dict[str, GossipConfig] = field(default_factory=dict)
    anchors: dict[str, tuple[str, ...]] = field(default_factory=dict)
    generation: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.net = SimNetwork(seed=self.seed, latency=lambda _a, _b, rng: rng.uniform(0.002, 0.02), record=True)
        self.reg = CheapRegistry(now=lambda: self.net.now)

    def add(
        self,
        name: str,
        org: str = "Org1MSP",
        bootstrap: Iterable[str] = (),
        external: bool = True,
        store: bool = False,
        anchors: Iterable[str] = (),
        expires_at: float | None = None,
    ) -> str:
        endpoint = f"{name}:7051"
        self.mcs[endpoint] = CheapCryptoService.for_peer(org, name, self.reg)
        if expires_at is not None:
            self.reg.set_expiration(self.mcs[endpoint].identity, expires_at)
        self.settings[endpoint] = GossipConfig(
            bootstrap=tuple(f"{b}:7051" for b in bootstrap),
            endpoint=endpoint,
            external_endpoint=f"{name}.ext:7051" if external else "",
        )
        self.anchors[endpoint] = tuple(f"{a}.ext:7051" for a in anchors)
        self.tracers[endpoint] = RecordingTracer()
        if store:
            self.stores[endpoint] = MemoryPeerStore()
        self.generation[endpoint] = 0
        mcs = self.mcs[endpoint]
        self.net.add(endpoint, mcs.pki_id, mcs.identity, self._node(endpoint), aliases=(f"{name}.ext:7051",))
        return endpoint

    def _node(self, endpoint: str, bootstrap: tuple[str, ...] | None = None) -> Discovery:
        config = self.settings[endpoint]
        if bootstrap is not None:
            config = GossipConfig(
                bootstrap=bootstrap, endpoint=config.endpoint, external_endpoint=config.external_endpoint
            )
        mcs = self.mcs[endpoint]
        node = Discovery(
            config,
            mcs.identity,
            mcs,
            mcs,
            inc_num=int(self.net.now * 1e9) + 1,
            rng=random.Random(f"{self.seed}/{endpoint}/{self.generation[endpoint]}"),
            tracer=self.tracers[endpoint],
            peer_store=self.stores.get(endpoint),
        )
        node.add_anchor_peers(self.anchors[endpoint])
        self.nodes[endpoint] = node
        return node

    def restart(self, endpoint: str, bootstrap: tuple[str, ...] | None = None) -> Discovery:
        self.generation[endpoint] += 1
        node = self._node(endpoint, bootstrap)
        self.net.restart(endpoint, node)
        return node

    def pki(self, endpoint: str) -> bytes:
        return self.mcs[endpoint].pki_id

    def view(self, endpoint: str) -> set[bytes]:
        return {m.pki_id for m in self.nodes[endpoint].alive_members()}

    def up(self) -> list[str]:
        return [ep for ep, p in self.net.peers.items() if p.up]

    def converged(self, endpoints: Iterable[str] | None = None) -> bool:
        group = list(self.up() if endpoints is None else endpoints)
        return all(self.view(ep) == {self.pki(o) for o in group if o != ep} for ep in group)

    def events(self, endpoint: str, name: str, pki: bytes | None = None) -> list[float]:
        return [t for n, t, f in self.tracers[endpoint].events if n == name and (pki is None or f.get("pki_id") == pki)]


def test_twenty_peers_converge_from_one_bootstrap_peer() -> None:
    """TestMembershipConvergence."""
    c = Cluster(seed=1)
    for i in range(20):
        c.add(f"p{i}", bootstrap=["p0"])
    assert c.net.run_until_true(c.converged, timeout=30)
    c.net.run_for(60)  # and it stays so, certificates no longer in alive messages
    assert c.converged()
    for ep in c.up():
        assert c.events(ep, "peer_dead") == []
        assert c.nodes[ep].stats.alive_forged == 0


def test_isolated_groups_joined_by_a_bridge_then_bridge_crashes() -> None:
    """TestConvergence: three groups, each with its own bootstrap peer, joined by one peer bootstrapping to all."""
    c = Cluster(seed=2)
    groups = [[c.add(f"g{g}p{i}", bootstrap=[f"g{g}p0"]) for i in range(5)] for g in range(3)]
    c.net.run_for(20)
    for group in groups:
        assert c.converged(group)
        assert all(len(c.view(ep)) == 4 for ep in group)  # nobody knows the other groups
    bridge = c.add("bridge", bootstrap=["g0p0", "g1p0", "g2p0"])
    assert c.net.run_until_true(c.converged, timeout=30)

    crashed_at = c.net.now
    c.net.crash(bridge)
    others = [ep for group in groups for ep in group]
    c.net.run_for(TIMEOUT + CHECK + 0.1)
    for ep in others:
        first_dead = c.events(ep, "peer_dead", c.pki(bridge))
        assert first_dead and first_dead[0] - crashed_at <= TIMEOUT + CHECK + 0.1
    c.net.run_for(60)
    assert all(not c.nodes[ep].is_alive(c.pki(bridge)) for ep in others)
    assert c.converged(others)


def test_isolated_peer_marked_dead_within_timeout_then_alive_after_heal() -> None:
    """TestPeerIsolation: no lost connection to tell them, only silence."""
    c = Cluster(seed=3)
    eps = [c.add(f"p{i}", bootstrap=["p0"]) for i in range(8)]
    assert c.net.run_until_true(c.converged, timeout=30)
    lonely = eps[5]
    cut_at = c.net.now
    c.net.partition([lonely])
    c.net.run_for(TIMEOUT + CHECK + 0.1)
    for ep in eps:
        if ep != lonely:
            (first_dead, *_) = c.events(ep, "peer_dead", c.pki(lonely))
            assert first_dead - cut_at <= TIMEOUT + CHECK + 0.1  # its last heartbeat may predate the cut
    assert c.view(lonely) == set()  # and it thinks the same of everyone else
    c.net.heal()
    assert c.net.run_until_true(c.converged, timeout=TIMEOUT + 5)  # the reconnect rounds find each other


def test_crashed_peer_dead_then_alive_again_after_restart() -> None:
    c = Cluster(seed=4)
    eps = [c.add(f"p{i}", bootstrap=["p0"]) for i in range(8)]
    assert c.net.run_until_true(c.converged, timeout=30)
    victim = eps[3]
    crashed_at = c.net.now
    c.net.crash(victim)
    others = [ep for ep in eps if ep != victim]
    assert c.net.run_until_true(
        lambda: all(not c.nodes[ep].is_alive(c.pki(victim)) for ep in others), timeout=TIMEOUT + CHECK + 0.1
    )
    c.net.run_for(30)
    for ep in others:
        assert c.events(ep, "peer_dead", c.pki(victim))[0] - crashed_at <= TIMEOUT + CHECK + 0.1
    restarted_at = c.net.now
    c.restart(victim)
    assert c.net.run_until_true(c.converged, timeout=10)
    for ep in others:
        assert c.events(ep, "peer_alive", c.pki(victim))[-1] >= restarted_at


def test_restarted_peer_rejoins_with_its_stored_peers_and_no_bootstrap() -> None:
    c = Cluster(seed=5)
    eps = [c.add(f"p{i}", bootstrap=["p0"], store=True) for i in range(8)]
    c.net.run_for(10)  # past the first ticks; peers meet their reconnect rounds at 25 s, 50 s, ...
    assert c.converged()
    returning = eps[6]
    assert len(c.stores[returning].load()) == 7
    c.net.crash(returning)
    c.net.run_for(30)
    assert all(not c.nodes[ep].is_alive(c.pki(returning)) for ep in eps if ep != returning)
    c.restart(returning, bootstrap=())
    # Well before anyone's next reconnect round (at 50 s) could find it.
    assert c.net.now < 45
    assert c.net.run_until_true(c.converged, timeout=3)

    c.net.run_for(2)  # let the last answers to its dials arrive

    # Without a store, a peer nobody knows (a new identity at the same place) stays alone.
    c.net.crash(eps[7])
    c.net.run_for(1)
    fresh = CheapCryptoService.for_peer("Org1MSP", "p7-renewed", c.reg)
    c.mcs[eps[7]] = fresh
    del c.stores[eps[7]]
    c.generation[eps[7]] += 1
    c.net.restart(eps[7], c._node(eps[7], bootstrap=()), pki_id=fresh.pki_id, identity=fresh.identity)
    c.net.run_for(60)
    assert c.view(eps[7]) == set()


def test_anchor_peers_join_orgs_and_unexposed_peers_stay_inside() -> None:
    c = Cluster(seed=6)
    org1 = [c.add("a0", "Org1MSP", anchors=["b0"])]
    org1 += [c.add(f"a{i}", "Org1MSP", bootstrap=["a0"], external=i != 3) for i in range(1, 4)]
    org2 = [c.add("b0", "Org2MSP", anchors=["a0"])]
    org2 += [c.add(f"b{i}", "Org2MSP", bootstrap=["b0"], external=i != 3) for i in range(1, 4)]
    c.net.run_for(40)
    hidden = {"a3:7051", "b3:7051"}
    for mine, theirs in ((org1, org2), (org2, org1)):
        for ep in mine:
            expected = {c.pki(o) for o in mine if o != ep}
            if ep not in hidden:
                expected |= {c.pki(o) for o in theirs if o not in hidden}
            assert c.view(ep) == expected, ep
            for o in theirs:
                member = c.nodes[ep].lookup(c.pki(o))
                assert member is None or member.internal_endpoint == ""  # never another org's internal endpoint
    # Misconfigured: a bootstrap peer of another org is refused.
    wrong = c.add("a9", "Org1MSP", bootstrap=["b1"])
    c.net.run_for(5)
    assert c.tracers[wrong].named("bootstrap_refused")
    assert c.view(wrong) == set()


def test_revoked_identity_is_cut_off() -> None:
    """TestIdentityExpiration (revocation half): every peer revalidates; the revoked one is dropped for good."""
    c = Cluster(seed=7)
    eps = [c.add(f"p{i}", bootstrap=["p0"]) for i in range(8)]
    assert c.net.run_until_true(c.converged, timeout=30)
    revoked = eps[4]
    c.reg.revoke(c.mcs[revoked].identity)
    others = [ep for ep in eps if ep != revoked]
    for ep in others:
        # as the peer's shell does on a configuration update
        c.net.invoke(ep, lambda n: n.revalidate_identities(c.net.now))  # type: ignore[attr-defined]
    c.net.run_for(90)
    for ep in others:
        assert c.nodes[ep].lookup(c.pki(revoked)) is None
        assert c.events(ep, "peer_forgotten", c.pki(revoked))
    assert c.view(revoked) == set()
    assert c.converged(others)


def test_expired_identity_is_cut_off_at_expiry() -> None:
    """TestIdentityExpiration (expiry half)."""
    c = Cluster(seed=8)
    eps = [c.add(f"p{i}", bootstrap=["p0"], expires_at=30.0 if i == 2 else None) for i in range(8)]
    assert c.net.run_until_true(c.converged, timeout=25)
    c.net.run_until(30.5)
    expiring = eps[2]
    others = [ep for ep in eps if ep != expiring]
    for ep in others:
        assert c.nodes[ep].lookup(c.pki(expiring)) is None
        (forgotten,) = c.events(ep, "peer_forgotten", c.pki(expiring))
        assert forgotten == 30.0
    c.net.run_for(60)
    assert all(c.nodes[ep].lookup(c.pki(expiring)) is None for ep in others)
    assert c.view(expiring) == set()
    assert c.converged(others)


# --- determinism ---------------------------------------------------------------------------------


def _trace(seed: int) -> str:
    c = Cluster(seed=seed)
    eps = [c.add(f"p{i}", bootstrap=["p0"]) for i in range(8)]
    c.net.run_for(20)
    c.net.crash(eps[3])
    c.net.run_for(40)
    digest = hashlib.sha256(repr(c.net.log).encode())
    for ep in eps:
        digest.update(repr(c.tracers[ep].events).encode())
    return digest.hexdigest()


def test_same_seed_same_trace_whatever_the_hash_seed() -> None:
    here = _trace(11)
    assert here == _trace(11)
    assert here != _trace(12)
    root = str(Path(__file__).resolve().parents[2])
    code = f"import sys; sys.path.insert(0, {root!r}); from tests.sim.test_membership import _trace; print(_trace(11))"
    for hash_seed in ("1", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, cwd=root
        )
        assert out.stdout.strip() == here
