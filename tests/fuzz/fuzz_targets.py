"""The fuzz targets by name, and each one's share of the long run (``make fuzz``)."""

from __future__ import annotations

from collections.abc import Callable

from fuzz_common import Target
from fuzz_fabric import BlockTarget, ConfigBlockTarget, ConfigUpdateTarget, IdentityTarget, PolicyTarget
from fuzz_peer import HandshakeTarget, PeerTarget, WireTarget


def _peer(crypto: str, dissemination: str, ledger: str) -> Callable[[int], Target]:
    def make(seed: int) -> Target:
        return PeerTarget(seed, crypto=crypto, dissemination=dissemination, ledger=ledger)

    return make


TARGETS: dict[str, Callable[[int], Target]] = {
    "wire": WireTarget,
    "handshake": HandshakeTarget,
    # The peer daemon's SQLite ledger, except in enhanced mode: the simulator's MemoryLedger stands in there.
    "peer-cheap-fabric": _peer("cheap", "fabric", "sqlite"),
    "peer-cheap-enhanced": _peer("cheap", "enhanced", "memory"),
    "peer-x509-fabric": _peer("x509", "fabric", "sqlite"),
    "block": BlockTarget,
    "config-block": ConfigBlockTarget,
    "config-update": ConfigUpdateTarget,
    "policies": PolicyTarget,
    "identity": IdentityTarget,
}
"""Each factory takes a seed and returns a fresh target (its own peer, its own state)."""

SHARES: dict[str, int] = {
    "wire": 14,
    "handshake": 5,
    "peer-cheap-fabric": 26,
    "peer-cheap-enhanced": 14,
    "peer-x509-fabric": 5,
    "block": 10,
    "config-block": 7,
    "config-update": 7,
    "policies": 4,
    "identity": 8,
}
"""Percent of the long run's inputs per target: most go to the core's handlers, where the state is."""

assert set(SHARES) == set(TARGETS) and sum(SHARES.values()) == 100
