"""Simulation of many rumor peers in one process, on a virtual clock.

``rumor.sim.network.SimNetwork`` drives unmodified protocol-core objects: it
delivers their Send effects after a modelled latency, answers their
handshakes and probes, and calls their timers when virtual time reaches them.

The names below are loaded on first use: ``rumor sim --help`` reads the scenario defaults from
``rumor.sim.scenario`` on every start of the command line, which must not import the protocol core for it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["SimNetwork", "SimNode", "SimPeer"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'rumor.sim' has no attribute {name!r}")
    value = getattr(importlib.import_module("rumor.sim.network"), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from rumor.sim.network import SimNetwork, SimNode, SimPeer
