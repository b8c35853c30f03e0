"""Simulation of many rumor peers in one process, on a virtual clock.

``rumor.sim.network.SimNetwork`` drives unmodified protocol-core objects: it
delivers their Send effects after a modelled latency, answers their
handshakes and probes, and calls their timers when virtual time reaches them.
"""

from rumor.sim.network import SimNetwork, SimNode, SimPeer

__all__ = ["SimNetwork", "SimNode", "SimPeer"]
