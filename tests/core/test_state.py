"""State transfer: in-order commits from a bounded buffer, anti-entropy that cannot be fooled."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import pytest

from rumor.core.state import GAP_PATIENCE, StateConfig, StateProvider
from rumor.core.types import Committed, ReceivedMessage, RecordingTracer, RemotePeer, Send
from rumor.crypto.blocks import block_header_hash, new_block, sign_block
from rumor.crypto.cheap import CheapCryptoService, CheapRegistry
from rumor.ledger import LedgerStorageError, MemoryLedger
from rumor.wire import messages as m
from rumor.wire.pb.common import common_pb2
from rumor.wire.pb.gossip import message_pb2 as pb

CH = "ch"
A = RemotePeer(b"A" * 32, "a:7051")
B = RemotePeer(b"B" * 32, "b:7051")
C = RemotePeer(b"C" * 32, "c:7051")


@pytest.fixture
def registry() -> CheapRegistry:
    reg = CheapRegistry()
    reg.register_channel(CH, ["OrdererMSP"])
    return reg


@pytest.fixture
def blocks(registry: CheapRegistry) -> list[bytes]:
    orderer = CheapCryptoService.for_peer("OrdererMSP", "orderer", registry)
    out, prev = [], b""
    for number in range(60):
        block = sign_block(new_block(number, prev, [b"tx%d" % number]), orderer, nonce=b"n")
        prev = block_header_hash(block.header)
        out.append(block.SerializeToString())
    return out


def provider(registry: CheapRegistry, seed: int = 0, **overrides: object) -> StateProvider:
    config = StateConfig(**overrides)  # type: ignore[arg-type]
    mcs = CheapCryptoService.for_peer("Org1MSP", f"peer{seed}", registry)
    state = StateProvider(CH, config, MemoryLedger(), mcs, random.Random(seed))
    state.start(0.0)
    return state


def received(send: Send, sender: RemotePeer) -> ReceivedMessage:
    return ReceivedMessage(sender.pki_id, sender.endpoint, b"", send.envelope, m.open_envelope(send.envelope))


def only_send(effects: list) -> Send:
    sends = [e for e in effects if isinstance(e, Send)]
    assert len(sends) == 1, effects
    return sends[0]


def test_out_of_order_blocks_commit_in_order(registry: CheapRegistry, blocks: list[bytes]) -> None:
    state = provider(registry)
    assert state.add_payload(2, blocks[2], 1.0) == []
    assert state.add_payload(1, blocks[1], 1.0) == []
    committed = state.add_payload(0, blocks[0], 1.0)
    assert [c.seq_num for c in committed] == [0, 1, 2]
    assert all(isinstance(c, Committed) and c.block == blocks[c.seq_num] for c in committed)
    assert state.height == 3 and state.buffer == {}
    assert state.add_payload(1, blocks[1], 1.0) == []
    assert state.stats.duplicates == 1


def test_blocks_too_far_ahead_are_dropped(registry: CheapRegistry, blocks: list[bytes]) -> None:
    state = provider(registry, block_buffer_size=5)
    assert state.add_payload(5, blocks[5], 1.0) == []
    assert state.stats.too_far_ahead == 1 and state.buffer == {}
    state.add_payload(4, blocks[4], 1.0)
    assert list(state.buffer) == [4]


def test_a_block_that_does_not_chain_is_rejected_and_never_committed(
    registry: CheapRegistry, blocks: list[bytes]
) -> None:
    state = provider(registry)
    orderer = CheapCryptoService.for_peer("OrdererMSP", "orderer", registry)
    fork = sign_block(new_block(1, b"wrong-previous-hash", [b"evil"]), orderer, nonce=b"n").SerializeToString()
    state.add_payload(2, blocks[2], 1.0)
    state.add_payload(1, fork, 1.0)
    committed = state.add_payload(0, blocks[0], 1.0)
    assert [c.seq_num for c in committed] == [0]
    assert state.height == 1 and state.stats.rejected == 1
    assert list(state.buffer) == [2]  # waits for a block 1 that chains
    assert [c.seq_num for c in state.add_payload(1, blocks[1], 2.0)] == [1, 2]


def test_a_block_too_far_ahead_starts_anti_entropy_at_once_even_without_known_heights(
    registry: CheapRegistry, blocks: list[bytes]
) -> None:
    """A follower that missed a burst must not wait for the next checkInterval, nor for StateInfos."""
    source = provider(registry, seed=1)
    for seq in range(30):
        source.add_payload(seq, blocks[seq], 0.0)
    lagging = provider(registry, seed=2, block_buffer_size=5)
    assert lagging.next_deadline() == lagging.config.check_interval
    assert lagging.add_payload(29, blocks[29], 1.0, source=A) == []  # pushed by A, far beyond the buffer
    assert lagging.next_deadline() == 1.0
    request = only_send(lagging.on_tick(1.0, []))  # no StateInfo shows anyone higher: ask A, who held it
    assert request.to == (A,)
    asked = m.open_envelope(request.envelope).state_request
    assert (asked.start_seq_num, asked.end_seq_num) == (0, lagging.config.batch_size - 1)
    effects = lagging.on_response(received(only_send(source.on_request(received(request, B), 1.0)), A), 1.0, [])
    assert lagging.height == lagging.config.batch_size
    assert only_send(effects).to == (A,)  # still behind: the next batch from the same peer at once
    assert lagging.next_deadline() == 1.0 + lagging.config.response_timeout


def test_a_block_too_far_ahead_waits_for_the_outstanding_request(registry: CheapRegistry, blocks: list[bytes]) -> None:
    lagging = provider(registry, seed=2, block_buffer_size=5)
    only_send(lagging.on_tick(lagging.config.check_interval, [(B, 30)]))
    lagging.add_payload(29, blocks[29], 11.0, source=A)
    assert lagging.on_tick(11.0, [(B, 30)]) == []  # one request at a time


def catch_up(lagging: StateProvider, source: StateProvider, now: float) -> int:
    """Run anti-entropy between two providers until the lagging one stops asking; returns round trips."""
    trips = 0
    effects = lagging.on_tick(now, [(A, source.height)])
    while effects:
        request = only_send(effects)
        assert request.to == (A,)
        reply = only_send(source.on_request(received(request, B), now))
        effects = [e for e in lagging.on_response(received(reply, A), now, [(A, source.height)]) if isinstance(e, Send)]
        trips += 1
        assert len(lagging.buffer) <= lagging.config.block_buffer_size
    return trips


def test_anti_entropy_catches_up_in_batches(registry: CheapRegistry, blocks: list[bytes]) -> None:
    source = provider(registry, seed=1)
    source.add_payload(0, blocks[0], 0.0)
    for seq in range(1, 55):
        source.add_payload(seq, blocks[seq], 0.0)
    lagging = provider(registry, seed=2)
    assert lagging.on_tick(5.0, [(A, 55)]) == []  # not time to check yet
    trips = catch_up(lagging, source, 10.0)
    assert lagging.height == 55
    assert trips == 6  # ceil(55 / batchSize)
    assert lagging.ledger.get_blocks(CH, 0, 54) == blocks[:55]


def test_request_is_capped_at_batch_size(registry: CheapRegistry, blocks: list[bytes]) -> None:
    source = provider(registry, seed=1)
    for seq in range(30):
        source.add_payload(seq, blocks[seq], 0.0)
    greedy = Send(m.seal(m.state_request(CH.encode(), 0, 1_000_000, 7)), (A,))
    reply = only_send(source.on_request(received(greedy, B), 1.0))
    payloads = m.open_envelope(reply.envelope).state_response.payloads
    assert [p.seq_num for p in payloads] == list(range(10))
    assert reply.to == (B,)


def test_responses_that_were_not_asked_for_inject_nothing(registry: CheapRegistry, blocks: list[bytes]) -> None:
    lagging = provider(registry, seed=3)
    request = only_send(lagging.on_tick(10.0, [(A, 30)]))
    nonce = m.open_envelope(request.envelope).nonce
    payloads = [pb.Payload(seq_num=seq, data=blocks[seq]) for seq in range(10)]
    wrong_nonce = Send(m.seal(m.state_response(CH.encode(), payloads, nonce + 1)), (B,))
    assert lagging.on_response(received(wrong_nonce, A), 10.1, [(A, 30)]) == []
    wrong_peer = Send(m.seal(m.state_response(CH.encode(), payloads, nonce)), (B,))
    assert lagging.on_response(received(wrong_peer, C), 10.1, [(A, 30)]) == []
    assert lagging.height == 0 and lagging.stats.responses_ignored == 2
    block = common_pb2.Block()
    block.ParseFromString(blocks[0])
    block.data.data[0] = b"forged"
    forged = [pb.Payload(seq_num=0, data=block.SerializeToString()), pb.Payload(seq_num=40, data=blocks[40])]
    reply = Send(m.seal(m.state_response(CH.encode(), forged, nonce)), (B,))
    assert lagging.on_response(received(reply, A), 10.2, [(A, 30)]) == []
    assert lagging.height == 0 and lagging.stats.rejected == 2


def test_timeout_retries_another_peer_then_gives_up_until_next_check(registry: CheapRegistry) -> None:
    lagging = provider(registry, seed=4, max_retries=2)
    heights = [(A, 30), (C, 30)]
    first = only_send(lagging.on_tick(10.0, heights))
    assert lagging.next_deadline() == 13.0
    second = only_send(lagging.on_tick(13.0, heights))
    assert second.to != first.to  # another peer on retry
    assert lagging.on_tick(16.0, heights) == []  # max retries reached
    assert lagging.stats.timeouts == 2
    assert lagging.next_deadline() == 20.0
    assert len([e for e in lagging.on_tick(20.0, heights) if isinstance(e, Send)]) == 1


def test_disabled_state_transfer_never_asks(registry: CheapRegistry) -> None:
    state = provider(registry, enabled=False)
    assert state.next_deadline() is None
    assert state.on_tick(100.0, [(A, 30)]) == []


def test_a_gap_left_open_starts_anti_entropy_after_the_gap_patience(
    registry: CheapRegistry, blocks: list[bytes]
) -> None:
    lagging = provider(registry, seed=2)
    lagging.add_payload(0, blocks[0], 1.0)
    assert lagging.next_deadline() == lagging.config.check_interval  # no gap: the periodic check
    lagging.add_payload(2, blocks[2], 1.0, source=A)  # block 1 missing
    assert lagging.next_deadline() == 1.0 + GAP_PATIENCE
    assert only_send(lagging.on_tick(1.0 + GAP_PATIENCE, [])).to == (A,)


def test_a_peer_claiming_a_height_it_does_not_serve_is_not_asked_again(
    registry: CheapRegistry, blocks: list[bytes]
) -> None:
    """Finding: a StateInfo claiming height 10^12 made the victim keep asking for blocks that do not exist."""
    lagging = provider(registry, seed=1, distrust_period=60.0)
    liar, honest = A, C
    request = only_send(lagging.on_tick(10.0, [(liar, 10**12)]))
    assert request.to == (liar,)
    empty = m.seal(m.state_response(CH.encode(), [], m.open_envelope(request.envelope).nonce))
    lagging.on_response(ReceivedMessage(liar.pki_id, liar.endpoint, b"", empty, m.open_envelope(empty)), 10.5, [])
    assert lagging.stats.peers_distrusted == 1
    assert lagging.on_tick(20.0, [(liar, 10**12)]) == []  # not asked while distrusted
    assert only_send(lagging.on_tick(30.0, [(liar, 10**12), (honest, 5)])).to == (honest,)
    assert only_send(lagging.on_tick(71.0, [(liar, 10**12)])).to == (liar,)  # believed again after the period


def test_a_peer_that_lets_requests_time_out_is_asked_last(registry: CheapRegistry) -> None:
    lagging = provider(registry, seed=3, max_retries=1)
    first = only_send(lagging.on_tick(10.0, [(A, 30)]))
    assert first.to == (A,)
    assert lagging.on_tick(13.0, [(A, 30)]) == []  # timed out, no retry left
    assert only_send(lagging.on_tick(20.0, [(A, 30), (C, 30)])).to == (C,)  # the prompt peer first
    assert lagging.on_tick(23.0, [(A, 30), (C, 30)]) == []
    assert only_send(lagging.on_tick(30.0, [(A, 30), (C, 30)])).to in ((A,), (C,))  # both slow: still asked


def test_serving_is_bounded_in_bytes_per_second_per_peer(registry: CheapRegistry, blocks: list[bytes]) -> None:
    """Finding: 250 small requests for ten 1 MB blocks each, never read, took 2 GB of the victim's memory."""
    source = provider(registry, seed=5, serve_bytes_per_second=3 * len(blocks[1]) * 10)
    for raw in blocks[:60]:
        source.ledger.commit_many(CH, [raw])
    ask = m.seal(m.state_request(CH.encode(), 0, 9, 1))
    hog = ReceivedMessage(B.pki_id, B.endpoint, b"", ask, m.open_envelope(ask))
    served = [bool(source.on_request(hog, 1.0)) for _ in range(250)]
    assert sum(served) <= 4 and source.stats.requests_throttled >= 246
    other = ReceivedMessage(C.pki_id, C.endpoint, b"", ask, m.open_envelope(ask))
    assert source.on_request(other, 1.0)  # another peer has its own budget
    assert source.on_request(hog, 3.0)  # and the hog's refills with time


class FullDisk(MemoryLedger):
    """A ledger whose disk is full while ``full`` holds: every commit raises LedgerStorageError, as SQLite's does."""

    def __init__(self) -> None:
        super().__init__()
        self.full = False
        self.attempts = 0

    def commit_many(self, channel: str, blocks: Sequence[bytes]) -> None:
        if self.full and blocks:
            self.attempts += 1
            height = self.height(channel)
            raise LedgerStorageError(
                f"cannot store block {height} of channel {channel}: disk full at /data/ledger.sqlite",
                "disk full",
                Path("/data/ledger.sqlite"),
            )
        super().commit_many(channel, blocks)


def test_blocks_the_disk_cannot_take_wait_in_the_buffer_and_are_retried_at_a_bounded_rate(
    registry: CheapRegistry, blocks: list[bytes]
) -> None:
    ledger = FullDisk()
    tracer = RecordingTracer()
    config = StateConfig(store_retry_interval=5.0, block_buffer_size=10)
    state = StateProvider(
        CH, config, ledger, CheapCryptoService.for_peer("Org1MSP", "p", registry), random.Random(0), tracer
    )
    state.start(0.0)
    state.add_payload(0, blocks[0], 0.5)
    ledger.full = True

    assert state.add_payload(1, blocks[1], 1.0) == []
    assert state.height == 1 and list(state.buffer) == [1]  # nothing stored, nothing lost, height unchanged
    assert state.store_problem == "cannot store block 1 of channel ch: disk full at /data/ledger.sqlite"
    assert tracer.named("ledger_store_failed")[0]["seq_num"] == 1
    assert state.stats.rejected == 0  # the blocks are good: they are not counted as refused
    attempts = ledger.attempts
    for seq in range(2, 15):  # arriving blocks do not make it retry; beyond the buffer they are dropped
        assert state.add_payload(seq, blocks[seq], 2.0) == []
    assert ledger.attempts == attempts
    assert sorted(state.buffer) == list(range(1, 11)) and state.stats.too_far_ahead == 4
    assert state.next_deadline() == 2.0  # a block too far ahead: anti-entropy is due at once...
    assert state.on_tick(2.0, [(A, 40)]) == []  # ...but asks nothing: what it fetched could not be stored either
    assert state.next_deadline() == 6.0 and ledger.attempts == attempts
    assert state.on_tick(6.0, [(A, 40)]) == [] and state.store_problem is not None
    assert ledger.attempts > attempts and state.next_deadline() == 11.0

    ledger.full = False  # space is back: the next retry stores the buffer, and anti-entropy runs at once
    effects = state.on_tick(11.0, [(A, 40)])
    assert [c.seq_num for c in effects if isinstance(c, Committed)] == list(range(1, 11))
    assert state.height == 11 and state.store_problem is None and state.buffer == {}
    assert [e[0] for e in tracer.events].count("ledger_store_recovered") == 1
    assert m.open_envelope(only_send(effects).envelope).state_request.start_seq_num == 11


def test_a_disk_that_takes_part_of_a_run_keeps_the_rest_for_the_retry(
    registry: CheapRegistry, blocks: list[bytes]
) -> None:
    class Tight(FullDisk):
        def commit_many(self, channel: str, blocks: Sequence[bytes]) -> None:
            self.full = len(blocks) > 1 or self.height(channel) >= 3  # room for blocks 0-2, one at a time
            super().commit_many(channel, blocks)

    ledger = Tight()
    state = StateProvider(
        CH, StateConfig(), ledger, CheapCryptoService.for_peer("Org1MSP", "p", registry), random.Random(0)
    )
    state.start(0.0)
    for seq in range(1, 6):
        state.add_payload(seq, blocks[seq], 1.0)
    committed = state.add_payload(0, blocks[0], 1.0)
    assert [c.seq_num for c in committed] == [0, 1, 2]
    assert state.height == 3 and sorted(state.buffer) == [3, 4, 5] and state.store_problem is not None
