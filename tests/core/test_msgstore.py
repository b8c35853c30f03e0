"""The message store keeps what is newest per origin, drops duplicates and old blocks, and expires on time.

Mirrors Fabric's gossip/msgstore/msgs_test.go (TestSize, TestNewMessagesInvalidates,
TestNewMessagesInvalidated, TestMessagesGet, TestExpiration) and the comparator tests of
protoext (alive, state info, leadership, data and identity message comparisons).
"""

from __future__ import annotations

from rumor.core.msgstore import (
    Invalidation,
    MessageStore,
    block_digest,
    block_policy,
    gossip_policy,
    origin_of,
)
from rumor.wire import messages as wire
from rumor.wire.pb.gossip import message_pb2 as pb

A, B = b"A" * 32, b"B" * 32


def block(seq: int) -> pb.GossipMessage:
    return wire.data_message(b"ch", seq, b"block")


def alive(pki: bytes, inc: int, seq: int) -> pb.GossipMessage:
    return wire.alive("p:1", pki, inc, seq)


def state(pki: bytes, inc: int, seq: int, mac: bytes = b"mac") -> pb.GossipMessage:
    return wire.state_info(mac, pki, inc, seq, ledger_height=seq)


def leader(pki: bytes, inc: int, seq: int) -> pb.GossipMessage:
    return wire.leadership(b"ch", pki, inc, seq, is_declaration=True)


def block_store(max_blocks: int = 3, **kw: object) -> MessageStore[pb.GossipMessage]:
    return MessageStore(
        gossip_policy(max_blocks),
        key=lambda m: m.data_msg.payload.seq_num,
        **kw,  # type: ignore[arg-type]
    )


def origin_store(**kw: object) -> MessageStore[pb.GossipMessage]:
    return MessageStore(gossip_policy(0), key=lambda m: (m.WhichOneof("content"), origin_of(m)), **kw)  # type: ignore[arg-type]


def test_same_block_number_is_a_duplicate() -> None:
    store = block_store()
    assert store.add(block(5), 0.0)
    assert not store.add(block(5), 1.0)
    assert not store.check_valid(block(5))
    assert len(store) == 1


def test_blocks_too_far_behind_are_evicted_and_refused() -> None:
    invalidated: list[int] = []
    store = block_store(3, on_invalidate=lambda m: invalidated.append(m.data_msg.payload.seq_num))
    for seq in range(1, 5):
        assert store.add(block(seq), 0.0)
    assert sorted(store.keys()) == [1, 2, 3, 4]  # 4 - 1 = 3: still within the window
    assert store.add(block(6), 0.0)
    assert sorted(store.keys()) == [3, 4, 6]
    assert invalidated == [1, 2]
    assert not store.check_valid(block(2))  # older than what the window allows
    assert not store.add(block(2), 0.0)
    assert store.add(block(5), 0.0)  # a gap inside the window is welcome
    assert sorted(store.keys()) == [3, 4, 5, 6]


def test_block_policy_matches_gossip_policy() -> None:
    fast = block_policy(3, of=lambda m: m)
    slow = gossip_policy(3)
    for a in range(10):
        for b in range(10):
            assert fast(block(a), block(b)) is slow(block(a), block(b))


def test_newer_peer_time_replaces_older_per_origin() -> None:
    store = origin_store()
    assert store.add(alive(A, 1, 1), 0.0)
    assert store.add(alive(B, 1, 1), 0.0)
    assert store.add(alive(A, 1, 2), 0.0)
    assert len(store) == 2
    assert store.get(("alive_msg", A)).alive_msg.timestamp.seq_num == 2  # type: ignore[union-attr]
    assert not store.add(alive(A, 1, 2), 0.0), "same PeerTime is a duplicate"
    assert not store.add(alive(A, 1, 1), 0.0), "older PeerTime is refused"
    assert store.add(alive(A, 2, 0), 0.0), "a restart (higher inc_num) wins over any seq_num"
    assert store.get(("alive_msg", A)).alive_msg.timestamp.inc_num == 2  # type: ignore[union-attr]


def test_state_info_and_leadership_follow_the_same_rule() -> None:
    store = origin_store()
    assert store.add(state(A, 1, 1), 0.0)
    assert store.add(leader(A, 1, 1), 0.0), "different kinds of one origin do not interact"
    assert store.add(state(A, 1, 3), 0.0)
    assert not store.add(state(A, 1, 2), 0.0)
    assert store.add(leader(A, 1, 2), 0.0)
    assert not store.add(leader(A, 1, 2), 0.0)
    assert len(store) == 2
    policy = gossip_policy(0)
    assert policy(state(A, 1, 2, mac=b"x"), state(A, 1, 1, mac=b"y")) is Invalidation.NONE


def test_identity_messages_are_kept_first_come() -> None:
    policy = gossip_policy(0)
    first = wire.peer_identity(A, b"cert1")
    assert policy(wire.peer_identity(A, b"cert2"), first) is Invalidation.INVALIDATED
    assert policy(wire.peer_identity(B, b"cert"), first) is Invalidation.NONE


def test_scoped_store_behaves_like_the_scan() -> None:
    scoped = MessageStore(gossip_policy(0), key=origin_of, scope=origin_of)
    plain = MessageStore(gossip_policy(0), key=origin_of)
    sequence = [state(A, 1, 1), state(B, 1, 5), state(A, 1, 3), state(A, 1, 2), state(B, 2, 1), state(B, 1, 9)]
    assert [scoped.add(m, 0.0) for m in sequence] == [plain.add(m, 0.0) for m in sequence]
    assert [m.state_info.timestamp.seq_num for m in scoped] == [3, 1]


def test_expiry_calls_back_in_order_and_sets_the_deadline() -> None:
    expired: list[int] = []
    store = block_store(100, ttl=10.0, on_expire=lambda m: expired.append(m.data_msg.payload.seq_num))
    assert store.next_deadline() is None
    store.add(block(1), 0.0)
    store.add(block(2), 4.0)
    store.add(block(3), 8.0)
    assert store.next_deadline() == 10.0
    assert store.expire(9.9) == []
    assert [m.data_msg.payload.seq_num for m in store.expire(14.0)] == [1, 2]
    assert expired == [1, 2]
    assert store.next_deadline() == 18.0
    assert sorted(store.keys()) == [3]


def test_expiry_skips_what_was_invalidated_or_removed() -> None:
    expired: list[pb.GossipMessage] = []
    store = MessageStore(gossip_policy(0), key=origin_of, ttl=5.0, on_expire=expired.append)
    store.add(alive(A, 1, 1), 0.0)
    store.add(alive(B, 1, 1), 1.0)
    store.add(alive(A, 1, 2), 2.0)  # replaces A's first message, which must not expire later
    store.remove(B)
    assert store.next_deadline() == 7.0
    store.expire(100.0)
    assert [(origin_of(m), m.alive_msg.timestamp.seq_num) for m in expired] == [(A, 2)]
    assert len(store) == 0 and store.next_deadline() is None


def test_get_remove_purge_and_check_valid_do_not_mutate() -> None:
    store = block_store(10)
    for seq in range(5):
        store.add(block(seq), 0.0)
    assert store.check_valid(block(7))
    assert 7 not in store
    assert store.get(3) is not None and store.get(9) is None
    assert store.remove(3) is not None and store.remove(3) is None
    assert [m.data_msg.payload.seq_num for m in store.purge(lambda m: m.data_msg.payload.seq_num % 2 == 0)] == [
        0,
        2,
        4,
    ]
    assert [m.data_msg.payload.seq_num for m in store.items()] == [1]


def test_block_digest_is_decimal() -> None:
    assert block_digest(0) == b"0"
    assert block_digest(1234) == b"1234"
