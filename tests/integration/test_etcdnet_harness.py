"""The etcd ordering tests' harness itself, in this process: ``wait_converged`` must never return a chain that lacks
a block etcd's queue already counts as cut.

The race it once lost (test_etcd_ordering.py, after a load stopped): the chains were read, then the cutter's batch
timeout wrote the record of the last block, then the queue was read and had nothing uncut; the chains returned
lacked that block and the checker reported its acknowledged envelopes in no block.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest
from etcdnet_harness import QueueState, wait_converged

from rumor.wire.pb.common import common_pb2

NODES = ("orderer0", "orderer1")
STORED = 5  # blocks 0-4 are in every ledger and have records in etcd; the last batch is still pending


def _block(number: int) -> common_pb2.Block:
    block = common_pb2.Block()
    block.header.number = number
    block.data.data.append(f"envelope of block {number}".encode())
    return block


@dataclass
class _Service:
    """An ordering service that moves on by one step after each read the harness makes, as the real one moves on
    while the harness reads it: the cutter writes the record of block STORED (the pending batch, cut on its
    timeout) after read number ``cut_after``; node k stores that block in its ledger after read ``stored_after[k]``.
    """

    cut_after: int
    stored_after: dict[str, int]
    reads: int = 0
    newest: int = STORED - 1
    uncut: int = 1
    heights: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.heights = dict.fromkeys(NODES, STORED)

    def _step(self) -> None:
        if self.reads == self.cut_after:
            self.newest, self.uncut = STORED, 0
        for node, after in self.stored_after.items():
            if self.reads == after:
                self.heights[node] = STORED + 1
        self.reads += 1

    async def chain(self, node: str) -> list[common_pb2.Block]:
        blocks = [_block(n) for n in range(self.heights[node])]
        self._step()
        return blocks

    async def queue_state(self) -> QueueState:
        state = QueueState(uncut=self.uncut, newest=self.newest)
        self._step()
        return state


SCHEDULES = [
    pytest.param(cut, {NODES[0]: cut + a, NODES[1]: cut + b}, id=f"cut-after-{cut}-stored-{a}-{b}-reads-later")
    for cut in range(4)
    for a, b in itertools.product(range(3), repeat=2)
]


@pytest.mark.parametrize(("cut_after", "stored_after"), SCHEDULES)
async def test_the_chain_returned_holds_the_block_cut_while_the_chains_were_read(
    cut_after: int, stored_after: dict[str, int]
) -> None:
    service = _Service(cut_after, stored_after)
    chain = await wait_converged(NODES, service.chain, service.queue_state, timeout=30)
    assert [b.header.number for b in chain] == list(range(STORED + 1))
