"""The crashes the fuzzer found, replayed through the peer's core as a hostile peer would send them.

The fixes have unit tests beside the code they changed (tests/ledger, tests/orderer); these check the path from the
wire to the fix, with the peer daemon's own SQLite ledger.
"""

from __future__ import annotations

from fuzz_peer import CHANNEL, PeerWorld

from rumor.wire import messages as wire
from rumor.wire.pb.gossip import message_pb2 as pb


def _responses(world: PeerWorld, start: int, end: int) -> list[pb.GossipMessage]:
    q1 = world.actors[2]  # of Org2, a member org of the channel: allowed to ask for its blocks
    world.outbox[q1.pki_id].clear()
    request = wire.state_request(CHANNEL.encode(), start, end, nonce=99)
    assert world.deliver(q1, world.seal(request, None)) == "delivered"  # raised OverflowError before the fix
    return [m for m in world.outbox[q1.pki_id] if m.HasField("state_response")]


def test_a_state_request_beyond_sqlite_integers_gets_no_blocks() -> None:
    world = PeerWorld(0, ledger="sqlite")
    assert world.ledger.height(CHANNEL) == 1
    for start, end in ((2**63, 2**63 + 9), (2**63 - 5, 2**63 + 4), (2**64 - 10, 2**64 - 1)):
        for response in _responses(world, start, end):
            assert list(response.state_response.payloads) == []
    # and an ordinary request is still served
    (response,) = _responses(world, 0, 5)
    assert [p.seq_num for p in response.state_response.payloads] == [0]
