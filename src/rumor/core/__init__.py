"""rumor's protocol core: the gossip algorithms as objects that do no I/O.

Each component takes what happens to it (a verified message, a tick of the
clock) with an explicit ``now`` and returns effects for a shell to carry out.
The real peer (``rumor.node``) and the simulator (``rumor.sim``) drive the very
same objects.
"""
