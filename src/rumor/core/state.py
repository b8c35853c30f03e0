"""State transfer for one channel: the in-order payload buffer and anti-entropy (sans-IO).

Blocks reach a peer out of order (push, pull, state transfer) and the ledger
takes them only in order. The provider sits between:

    block n arrives ──> n < height: duplicate, dropped
                        n >= height + blockBufferSize: too far ahead, dropped (counted)
                        else: buffered; the run height, height+1, ... is committed at once
                              (one ledger transaction), each block announced as Committed

    every checkInterval (at once when a block arrives too far ahead for the buffer, and
    GAP_PATIENCE after a gap opened in the buffer):
        if a channel peer's StateInfo shows a height above ours (or, failing that, the peer
        that sent the too-far block), send RemoteStateRequest[height, height+batchSize-1] (end inclusive, capped at
        the highest known height) to a random such peer, with a fresh nonce
    response: only the peer asked, only under the nonce asked, only blocks in the range
        asked, each passing verify_block; buffered and committed; still behind -> ask
        for the next batch at once (catch-up runs at the speed of round trips)
    no response within responseTimeout -> ask another higher peer; after maxRetries
        give up until the next check

    RemoteStateRequest from a peer -> reply with at most batchSize blocks from the ledger, within a
    token bucket of serveBytesPerSecond per requester (beyond it the request is dropped, counted): a peer
    asking for large blocks without reading the answers costs us bounded disk reads and memory.
    Whether the requester may read the channel is decided by the caller, from the
    identity its connection's handshake proved.

    A StateInfo may claim any height, and the claim is believed only while the peer lives up to it: a peer that
    answers a request with none of the blocks asked is not asked again for distrustPeriod, and one that lets a
    request time out is asked only when no other peer is higher, for as long.

A block that verifies but does not chain onto the ledger is dropped and counted;
nothing unverified ever reaches the ledger.

    the ledger cannot store (LedgerStorageError: disk full, I/O error) -> the run stays in the buffer, nothing of
        it is committed and the height stays; ``store_problem`` says why, a ``ledger_store_failed`` event is
        traced; the commit is retried every storeRetryInterval (not at each arriving block), blocks beyond the
        buffer are dropped as too far ahead, and no state-transfer request is sent: what we cannot store is
        fetched again once we can. A retry that commits clears the problem (``ledger_store_recovered``) and
        runs anti-entropy at once.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from rumor.config import StateConfig
from rumor.core.types import Committed, Effect, NullTracer, ReceivedMessage, RemotePeer, Send, Tracer
from rumor.crypto.api import CryptoError, MessageCryptoService
from rumor.ledger.store import LedgerError, LedgerStorageError
from rumor.wire import messages as m
from rumor.wire.pb.gossip import message_pb2 as pb

__all__ = ["LedgerPort", "StateConfig", "StateProvider", "StateStats"]

log = logging.getLogger("rumor.state")

GAP_PATIENCE = 5.0
"""Seconds a gap in the buffer may stay open before anti-entropy runs (rather than at the next checkInterval):
longer than Fabric's 4 s pull interval, so that pull gets its round first."""


class LedgerPort(Protocol):
    """The slice of a ledger the state provider uses (``Ledger`` and ``MemoryLedger`` both fit)."""

    def height(self, channel: str) -> int: ...

    def commit_many(self, channel: str, blocks: Sequence[bytes]) -> None: ...

    def get_blocks(self, channel: str, start: int, end: int) -> list[bytes]: ...


@dataclass
class StateStats:
    committed: int = 0
    duplicates: int = 0
    too_far_ahead: int = 0
    rejected: int = 0
    requests_sent: int = 0
    requests_served: int = 0
    requests_throttled: int = 0
    peers_distrusted: int = 0
    responses_ignored: int = 0
    timeouts: int = 0
    buffer_high_water: int = 0
    store_failures: int = 0


@dataclass
class _Outstanding:
    nonce: int
    peer: RemotePeer
    start: int
    end: int
    deadline: float
    attempts: int
    tried: set[bytes] = field(default_factory=set)


class StateProvider:
    """Orders one channel's blocks into the ledger and fetches the ones it misses."""

    def __init__(
        self,
        channel: str,
        config: StateConfig,
        ledger: LedgerPort,
        mcs: MessageCryptoService,
        rng: random.Random,
        tracer: Tracer | None = None,
    ) -> None:
        self.channel = channel
        self.channel_bytes = channel.encode()
        self.config = config
        self.ledger = ledger
        self.mcs = mcs
        self.rng = rng
        self.tracer = tracer or NullTracer()
        self.buffer: dict[int, bytes] = {}
        self.stats = StateStats()
        self._next_check: float | None = None
        self._outstanding: _Outstanding | None = None
        self._ahead_hint: tuple[RemotePeer, int] | None = None  # a peer that held a block too far ahead, +1
        # Per requester: (bytes it may still be served, when that was computed). Bounded: oldest dropped first.
        self._serve_budget: dict[bytes, tuple[float, float]] = {}
        # Peers that answered a request with none of the blocks their height promised, until when: not asked.
        self._distrusted: dict[bytes, float] = {}
        # Peers that let a request time out, until when: asked only when no other peer is higher (a busy
        # honest peer must not stall catch-up; a silent liar then costs one request per check).
        self._slow: dict[bytes, float] = {}
        self.store_problem: str | None = None
        """Why the ledger refused the last commit (disk full...), until a commit succeeds again."""
        self._store_retry_at = 0.0

    @property
    def height(self) -> int:
        return self.ledger.height(self.channel)

    def start(self, now: float) -> None:
        self._next_check = now + self.config.check_interval if self.config.enabled else None

    def next_deadline(self) -> float | None:
        times = [t for t in (self._next_check, self._outstanding and self._outstanding.deadline) if t is not None]
        if self.store_problem is not None and self.buffer:
            times.append(self._store_retry_at)
        return min(times) if times else None

    # --- blocks in ------------------------------------------------------------------------------

    def add_payload(self, seq_num: int, block: bytes, now: float, source: RemotePeer | None = None) -> list[Effect]:
        """A verified block from gossip (or the application); commits whatever became contiguous.

        A block too far ahead for the buffer proves that we are behind: anti-entropy runs at the next
        tick rather than at the next checkInterval (and GAP_PATIENCE after a gap opened in the buffer), and
        may ask ``source`` (which held that block) when no StateInfo shows a higher peer yet. Gossip's store
        keeps such a block, so pull never offers it again: without this the peer would wait for the
        periodic check, and with stale heights longer.
        """
        height = self.height
        if seq_num < height or seq_num in self.buffer:
            self.stats.duplicates += 1
            return []
        if seq_num >= height + self.config.block_buffer_size:
            self.stats.too_far_ahead += 1
            self._note_ahead(source, seq_num)
            self._check_by(now)
            return []
        self.buffer[seq_num] = block
        self.stats.buffer_high_water = max(self.stats.buffer_high_water, len(self.buffer))
        effects = self._commit_ready(now)
        if self.buffer and seq_num >= self.height:
            # A gap: blocks wait for one we miss. Push or pull usually fill it within a round; if it is
            # still open GAP_PATIENCE later, anti-entropy fetches it rather than at the next checkInterval.
            self._note_ahead(source, seq_num)
            self._check_by(now + GAP_PATIENCE)
        return effects

    def _note_ahead(self, source: RemotePeer | None, seq_num: int) -> None:
        if source is not None and (self._ahead_hint is None or seq_num >= self._ahead_hint[1]):
            self._ahead_hint = (source, seq_num + 1)

    def _check_by(self, at: float) -> None:
        if self._next_check is not None and self._outstanding is None:
            self._next_check = min(self._next_check, at)

    def _commit_ready(self, now: float) -> list[Effect]:
        if self.store_problem is not None and now < self._store_retry_at:
            return []  # the ledger refused the last attempt: the blocks wait in the buffer for the retry
        height = self.height
        run: list[bytes] = []
        while height + len(run) in self.buffer:
            run.append(self.buffer.pop(height + len(run)))
        if not run:
            return []
        try:
            self.ledger.commit_many(self.channel, run)
            committed = run
            if self.store_problem is not None:
                self._store_recovered(now)
        except LedgerError:
            # One by one: a bad block then costs only itself, and a nearly full disk takes the blocks that fit.
            committed = self._commit_one_by_one(run, now)
        if not committed:
            return []
        self.stats.committed += len(committed)
        self.tracer.event("block_committed", now, channel=self.channel, height=height + len(committed))
        return [Committed(self.channel, height + i, raw) for i, raw in enumerate(committed)]

    def _commit_one_by_one(self, run: list[bytes], now: float) -> list[bytes]:
        """Commit the good prefix of a run whose batch commit failed; drop the block that broke it, or keep the
        rest of the run in the buffer when the ledger could not store it."""
        done: list[bytes] = []
        for i, raw in enumerate(run):
            seq = self.height
            try:
                self.ledger.commit_many(self.channel, [raw])
            except LedgerStorageError as exc:
                for j, rest in enumerate(run[i:]):
                    self.buffer[seq + j] = rest
                self._store_failed(seq, exc, now)
                return done
            except LedgerError as exc:
                self.stats.rejected += 1
                log.warning("channel %s: block %d rejected by the ledger: %s", self.channel, seq, exc)
                self.tracer.event("block_rejected", now, channel=self.channel, seq_num=seq, reason=str(exc))
                # the blocks after the bad one wait in the buffer until anti-entropy brings a block that chains
                for j, rest in enumerate(run[i + 1 :]):
                    self.buffer[seq + 1 + j] = rest
                break
            done.append(raw)
        if done and self.store_problem is not None:
            self._store_recovered(now)
        return done

    def _store_failed(self, seq: int, exc: LedgerStorageError, now: float) -> None:
        self.stats.store_failures += 1
        self.store_problem = str(exc)
        self._store_retry_at = now + self.config.store_retry_interval
        self.tracer.event("ledger_store_failed", now, channel=self.channel, seq_num=seq, reason=str(exc))

    def _store_recovered(self, now: float) -> None:
        self.store_problem = None
        self.tracer.event("ledger_store_recovered", now, channel=self.channel, height=self.height)
        # Blocks that came while we could not store them were dropped: fetch them now, not at the next check.
        self._check_by(now)

    # --- anti-entropy ---------------------------------------------------------------------------

    def on_tick(self, now: float, peer_heights: Sequence[tuple[RemotePeer, int]]) -> list[Effect]:
        """Retry a timed-out request, and every checkInterval ask a higher peer for what we miss; retry a commit
        the ledger refused."""
        effects: list[Effect] = []
        if self.store_problem is not None and self.buffer and now >= self._store_retry_at:
            effects += self._commit_ready(now)
            if self.store_problem is not None and self._store_retry_at <= now:
                # nothing could be tried (no run at the height): not again at once, or the timer would spin
                self._store_retry_at = now + self.config.store_retry_interval
        out = self._outstanding
        if out is not None and now >= out.deadline:
            self.stats.timeouts += 1
            self._outstanding = None
            self._slow[out.peer.pki_id] = now + self.config.distrust_period
            if out.attempts < self.config.max_retries:
                effects += self._request(now, peer_heights, attempts=out.attempts + 1, tried=out.tried)
        if self._next_check is not None and now >= self._next_check:
            self._next_check = now + self.config.check_interval
            if self._outstanding is None:
                effects += self._request(now, peer_heights, attempts=1, tried=set())
        return effects

    def _request(
        self, now: float, peer_heights: Sequence[tuple[RemotePeer, int]], attempts: int, tried: set[bytes]
    ) -> list[Effect]:
        if self.store_problem is not None:
            return []  # blocks fetched now could not be stored either
        height = self.height
        for marks in (self._distrusted, self._slow):
            for pki_id, until in list(marks.items()):
                if now >= until:
                    del marks[pki_id]
        higher = [(p, h) for p, h in peer_heights if h > height and p.pki_id not in self._distrusted]
        prompt = [(p, h) for p, h in higher if p.pki_id not in self._slow]
        higher = prompt or higher
        hint = self._ahead_hint
        if hint is not None and hint[0].pki_id in self._distrusted:
            hint = None
        if hint is not None and hint[1] <= height:
            hint = self._ahead_hint = None
        if not higher and hint is not None:
            higher = [hint]
        if not higher:
            return []
        fresh = [(p, h) for p, h in higher if p.pki_id not in tried] or higher
        peer, peer_height = self.rng.choice(sorted(fresh, key=lambda item: item[0].pki_id))
        start = height
        end = min(start + self.config.batch_size - 1, peer_height - 1)
        nonce = self.rng.getrandbits(64)
        self._outstanding = _Outstanding(
            nonce, peer, start, end, now + self.config.response_timeout, attempts, tried | {peer.pki_id}
        )
        self.stats.requests_sent += 1
        return [Send(m.seal(m.state_request(self.channel_bytes, start, end, nonce)), (peer,))]

    def on_request(self, msg: ReceivedMessage, now: float) -> list[Effect]:
        """Serve a RemoteStateRequest (the caller has checked the requester may read this channel)."""
        req = msg.message.state_request
        start, end = req.start_seq_num, req.end_seq_num
        if end < start:
            return []
        end = min(end, start + self.config.batch_size - 1)  # nobody gets more than a batch per request
        rate = float(self.config.serve_bytes_per_second)
        tokens, at = self._serve_budget.get(msg.sender, (rate, now))
        tokens = min(rate, tokens + (now - at) * rate)
        if tokens <= 0:
            self.stats.requests_throttled += 1
            self._serve_budget[msg.sender] = (tokens, now)
            return []
        blocks = self.ledger.get_blocks(self.channel, start, end)
        # Charged after reading (the size is known only then), so the budget may go below zero: the next
        # requests then wait until it refilled.
        self._serve_budget.pop(msg.sender, None)
        self._serve_budget[msg.sender] = (tokens - sum(len(b) for b in blocks), now)
        if len(self._serve_budget) > 4096:
            del self._serve_budget[next(iter(self._serve_budget))]
        payloads = [pb.Payload(seq_num=start + i, data=raw) for i, raw in enumerate(blocks)]
        self.stats.requests_served += 1
        reply = m.state_response(self.channel_bytes, payloads, msg.message.nonce)
        return [Send(m.seal(reply), (RemotePeer(msg.sender, msg.sender_endpoint),))]

    def on_response(
        self, msg: ReceivedMessage, now: float, peer_heights: Sequence[tuple[RemotePeer, int]]
    ) -> list[Effect]:
        """Take the blocks of an answer to our outstanding request; ask for more if still behind."""
        out = self._outstanding
        if out is None or msg.message.nonce != out.nonce or msg.sender != out.peer.pki_id:
            self.stats.responses_ignored += 1
            return []
        self._outstanding = None
        effects: list[Effect] = []
        got = 0
        for payload in msg.message.state_response.payloads:
            seq = payload.seq_num
            if not out.start <= seq <= out.end:
                self.stats.rejected += 1
                continue
            try:
                self.mcs.verify_block(self.channel, seq, payload.data)
            except CryptoError as exc:
                self.stats.rejected += 1
                self.tracer.event("block_rejected", now, channel=self.channel, seq_num=seq, reason=str(exc))
                continue
            got += 1
            effects += self.add_payload(seq, payload.data, now)
        if got:
            effects += self._request(now, peer_heights, attempts=1, tried=set())
        else:
            self._distrust(out.peer, now, f"answered a request for blocks {out.start}-{out.end} with none of them")
        return effects

    def _distrust(self, peer: RemotePeer, now: float, why: str) -> None:
        if peer.pki_id not in self._distrusted:
            self.stats.peers_distrusted += 1
            log.info(
                "channel %s: not asking %s for blocks for %.0fs: it %s",
                self.channel,
                peer.endpoint or peer.pki_id.hex()[:16],
                self.config.distrust_period,
                why,
            )
            self.tracer.event("peer_distrusted", now, channel=self.channel, pki_id=peer.pki_id, reason=why)
        self._distrusted[peer.pki_id] = now + self.config.distrust_period
