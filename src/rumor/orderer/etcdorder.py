"""The etcd ordering service: several orderers, one order per channel, kept by an etcd cluster.

Keys, under ``<KeyPrefix>/<channel>/``::

    q/<node>.<boot>.<counter>   one admitted envelope (the channel's queue); its create revision orders it
    b/<number>                  a BlockRecord: block <number> without its data, and the queue keys of its envelopes
    leader                      the cutter's node ID, attached to its lease (the election)
    stored/<node>               the height that orderer has stored in its own ledger
    genesis                     header hash of block 0: every orderer must serve the same channel

Broadcast, on any orderer: admitted envelopes -> one etcd Txn putting their q/ keys (as many per Txn as fit
    MaxTxnOps and MaxRequestBytes) -> SUCCESS only once etcd answered, i.e. a quorum has it on disk.
Every orderer, per channel:
    sync     range the prefix at revision R, then watch it from R+1: the queue (key -> create revision, envelope),
             the block records, the leader, the stored heights; resumes on the next member when one fails
    apply    while the record of block <height> is known and its envelopes are in the queue: rebuild the block,
             check its data hash, commit it to the SQLite ledger (which checks number and previous hash), wake
             Deliver, then put stored/<node> = height
    campaign Txn(leader absent -> put leader = node, with my lease); lost -> wait for the leader key's deletion
The cutter, the leader of term T (T = create revision of its leader key):
    wait until sync has seen every revision up to the campaign's, so it knows every block earlier cutters wrote;
    tip = newest record; feed the queue entries after the tip's cursor, in (create revision, key) order, to a
    BlockCutter, then each new entry as the watch brings it (a timer cuts on batch timeout)
    write block N: Txn(leader created at T AND b/N absent -> put b/N), one at a time, in order
        refused: a later term exists (my lease expired while I was paused or cut off) -> step down, drop the cut
        no answer: step down as well; the next campaign reads back what etcd has and goes on from there
    gc       records below min(stored heights) and their queue entries leave etcd (the newest record stays, as
             the cursor); past RetainBytes the oldest go even when an orderer has not stored them
             (that orderer then reports the channel behind: docs/ordering.md, limits)

Why the fencing holds: a record is written only by a Txn whose compare names the writer's own leader key by its
create revision. That key disappears when the lease does, and a new leader's key has a new revision, so once a
lease has expired at etcd no Txn of its holder can succeed, whatever the holder believes; and b/N absent makes
two writes of the same block impossible even within one term. The queue cursor of a block (the create revision
and key of its last envelope) says exactly which entries are in blocks: those at or before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from rumor.crypto.blocks import block_data_hash, block_header_hash, decode_block
from rumor.ledger import Ledger, LedgerError
from rumor.orderer.cutter import BatchSettings, BlockCutter
from rumor.orderer.etcd import (
    EtcdClient,
    EtcdError,
    EtcdUnavailable,
    WatchCompacted,
    created_at,
    delete_op,
    get_op,
    put_op,
)
from rumor.wire.pb.common import common_pb2
from rumor.wire.pb.etcdserverpb import rpc_pb2 as pb
from rumor.wire.pb.rumorpb import etcdorder_pb2

__all__ = ["ChannelStatus", "EtcdOrdering", "QueueFull"]

log = logging.getLogger("rumor.orderer.etcd")

# Bytes of a Txn besides the envelopes: keys, framing, compares. The envelopes of one Txn stay below
# MaxRequestBytes minus this.
TXN_OVERHEAD = 8 * 1024
# Bytes of envelopes in one Txn at most, whatever MaxRequestBytes allows: etcd replicates a Txn as one Raft entry,
# and entries of many MB stall its log (bench/ordering.py, 100 KB envelopes, etcd-3 on 2 cores: 21 envelopes/s in
# Txns of up to 12 MB, 62 in Txns of 1 MiB, 100 in Txns of 256 KiB). A larger envelope goes alone.
GROUP_BYTES = 256 * 1024
GC_INTERVAL = 1.0  # seconds between two garbage collections of a cutter
RETRY = 0.5  # seconds before a failed campaign, lease grant or watch is tried again

MakeBlock = Callable[[str, int, bytes, list[bytes]], common_pb2.Block]
Committed = Callable[[str], None]

Cursor = tuple[int, bytes]  # (create revision, key) of a queue entry: the order of the queue


class QueueFull(Exception):
    """The channel's queue in etcd holds MaxQueueBytes: Broadcast answers SERVICE_UNAVAILABLE."""


class Fenced(Exception):
    """etcd refused a write of this cutter: it is no longer the leader of its term."""


@dataclass
class _Record:
    number: int
    record: etcdorder_pb2.BlockRecord
    header: common_pb2.BlockHeader

    @property
    def cursor(self) -> Cursor:
        return (self.record.last_revision, self.record.keys[-1])


@dataclass(frozen=True)
class ChannelStatus:
    """What the dashboard and the tests read of one channel."""

    leader: str | None
    is_leader: bool
    term: int
    height: int
    queue_entries: int
    queue_bytes: int
    etcd_blocks: int
    stored: dict[str, int]
    problem: str | None


@dataclass(eq=False)
class _Cutting:
    """The state of this node's term as cutter of one channel."""

    term: int
    cutter: BlockCutter
    number: int
    previous: bytes
    fed: Cursor
    entries: deque[Cursor] = field(default_factory=deque)  # parallel to the cutter's pending envelopes
    batches: asyncio.Queue[list[tuple[Cursor, bytes]]] = field(default_factory=asyncio.Queue)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(eq=False)
class _Chan:
    name: str
    prefix: bytes
    settings: BatchSettings
    genesis_hash: bytes
    queue: dict[bytes, tuple[int, bytes]] = field(default_factory=dict)
    queue_bytes: int = 0
    records: dict[int, _Record] = field(default_factory=dict)
    leader: str | None = None
    leader_rev: int = 0
    stored: dict[str, int] = field(default_factory=dict)
    synced: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    cutting: _Cutting | None = None
    cut_task: asyncio.Task[None] | None = None
    problem: str | None = None
    refused: bool = False  # its genesis block is not the cluster's: not served through etcd at all
    applied_put: int = -1  # the height last put as stored/<node>

    def key(self, *parts: str) -> bytes:
        return self.prefix + "/".join(parts).encode()

    def notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


def _block_key(number: int) -> str:
    return f"b/{number:020d}"


class EtcdOrdering:
    """The etcd side of one orderer: submits envelopes, cuts when elected, stores every block in ``ledger``.

    ``make_block(channel, number, previous_hash, envelopes)`` builds and signs a block (the Orderer's metadata);
    ``committed(channel)`` is called after blocks were stored (the Orderer wakes its Deliver streams).
    """

    def __init__(
        self,
        client: EtcdClient,
        ledger: Ledger,
        *,
        node_id: str,
        key_prefix: str,
        lease_ttl: float,
        max_request_bytes: int,
        max_txn_ops: int,
        max_queue_bytes: int,
        retain_bytes: int,
        make_block: MakeBlock,
        committed: Committed,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.node_id = node_id
        self._ledger = ledger
        self._prefix = key_prefix.rstrip("/") + "/"
        self._ttl = max(1, int(-(-lease_ttl // 1)))
        self._max_request_bytes = max_request_bytes
        self._max_txn_ops = max_txn_ops
        self._max_queue_bytes = max_queue_bytes
        self._retain_bytes = retain_bytes
        self._make_block = make_block
        self._committed = committed
        self._clock = clock
        self._channels: dict[str, _Chan] = {}
        self._boot = os.urandom(4).hex()
        self._counter = 0
        self._lease: int | None = None
        self._lease_changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._submit_lock = asyncio.Lock()
        self._stopping = False
        self.fenced_writes = 0
        """Block writes etcd refused because this node's term had ended (a paused or cut-off cutter)."""
        self.blocks_cut = 0

    # ----------------------------------------------------------------------------------------------
    # Lifecycle

    def add_channel(self, name: str, settings: BatchSettings) -> None:
        genesis = self._ledger.get_block(name, 0)
        assert genesis is not None, f"channel {name} has no block 0"
        self._channels[name] = _Chan(
            name=name,
            prefix=f"{self._prefix}{name}/".encode(),
            settings=settings,
            genesis_hash=block_header_hash(decode_block(genesis).header),
        )

    async def start(self) -> None:
        """Start the background tasks; they connect to etcd and retry for as long as it does not answer."""
        self._tasks.append(asyncio.create_task(self._keep_lease(), name="etcd-lease"))
        for chan in self._channels.values():
            self._tasks.append(asyncio.create_task(self._sync(chan), name=f"etcd-sync-{chan.name}"))
            self._tasks.append(asyncio.create_task(self._apply(chan), name=f"etcd-apply-{chan.name}"))
            self._tasks.append(asyncio.create_task(self._campaign(chan), name=f"etcd-campaign-{chan.name}"))
            self._tasks.append(asyncio.create_task(self._report_stored(chan), name=f"etcd-stored-{chan.name}"))

    async def stop(self) -> None:
        """Stop every task; the lease is revoked so that another orderer takes the channels over at once."""
        self._stopping = True
        for chan in self._channels.values():
            self._step_down(chan, "stopping")
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._lease is not None:
            with contextlib.suppress(EtcdError):
                await asyncio.wait_for(self.client.revoke(self._lease), 2.0)
        await self.client.close()

    # ----------------------------------------------------------------------------------------------
    # Status

    def status(self, channel: str) -> ChannelStatus:
        chan = self._channels[channel]
        return ChannelStatus(
            leader=chan.leader,
            is_leader=chan.cutting is not None,
            term=chan.cutting.term if chan.cutting else chan.leader_rev,
            height=self._ledger.height(channel),
            queue_entries=len(chan.queue),
            queue_bytes=chan.queue_bytes,
            etcd_blocks=len(chan.records),
            stored=dict(chan.stored),
            problem=chan.problem,
        )

    # ----------------------------------------------------------------------------------------------
    # Broadcast

    def max_envelope_bytes(self) -> int:
        return self._max_request_bytes - TXN_OVERHEAD

    def check_room(self, channel: str) -> None:
        chan = self._channels[channel]
        if chan.queue_bytes >= self._max_queue_bytes:
            raise QueueFull(
                f"channel {channel}: its queue in etcd holds {chan.queue_bytes} bytes "
                f"(Consensus.Etcd.MaxQueueBytes {self._max_queue_bytes}); try again later"
            )

    async def append(self, items: Sequence[tuple[str, bytes]]) -> list[str | None]:
        """Put envelopes (channel, envelope) into their queues in etcd, in order, as few Txns as the limits allow;
        per envelope None once etcd committed it, else why not (then it may or may not be in the queue)."""
        results: list[str | None] = []
        # One submission at a time per orderer: the Txns commit in the order of the envelopes.
        async with self._submit_lock:
            start = 0
            while start < len(items):
                end, size = start, 0
                while end < len(items) and end - start < self._max_txn_ops:
                    size += len(items[end][1]) + 64
                    if end > start and size > min(GROUP_BYTES, self._max_request_bytes - TXN_OVERHEAD):
                        break
                    end += 1
                ops = []
                for channel, raw in items[start:end]:
                    self._counter += 1
                    key = self._channels[channel].key(f"q/{self.node_id}.{self._boot}.{self._counter:016x}")
                    ops.append(put_op(key, raw))
                try:
                    await self.client.txn(success=ops)
                    results.extend([None] * (end - start))
                except EtcdError as exc:
                    results.extend([f"etcd: {exc}"] * (end - start))
                start = end
        return results

    # ----------------------------------------------------------------------------------------------
    # Lease

    async def _keep_lease(self) -> None:
        while True:
            try:
                lease, ttl = await self.client.grant(self._ttl)
            except EtcdError as exc:
                log.debug("no lease yet: %s", exc)
                await asyncio.sleep(RETRY)
                continue
            self._lease = lease
            self._lease_changed.set()
            log.info("node %s: lease %x granted (TTL %ds)", self.node_id, lease, ttl)
            expires = self._clock() + ttl
            while True:
                try:
                    async for left in self.client.keepalive(lease, ttl):
                        if left <= 0:
                            raise EtcdUnavailable("lease expired")
                        expires = self._clock() + left
                except EtcdError as exc:
                    if self._clock() < expires and "expired" not in str(exc):
                        log.debug("keepalive: %s; retrying", exc)
                        await asyncio.sleep(min(RETRY, max(0.0, expires - self._clock())))
                        continue
                    log.warning("node %s: lease %x lost (%s)", self.node_id, lease, exc)
                    break
            # The lease is gone (or may be): every term held with it is over, whatever etcd still says.
            self._lease = None
            self._lease_changed.set()
            for chan in self._channels.values():
                self._step_down(chan, "lease lost")

    async def _lease_ready(self) -> int:
        while self._lease is None:
            self._lease_changed.clear()
            await self._lease_changed.wait()
        return self._lease

    # ----------------------------------------------------------------------------------------------
    # Sync: a view of the channel's keys

    async def _sync(self, chan: _Chan) -> None:
        if not await self._check_genesis(chan):
            chan.refused = True
            chan.notify()
            return
        revision = 0
        while True:
            try:
                if revision == 0:
                    revision = await self._load(chan)
                async for response in self.client.watch(chan.prefix, revision + 1):
                    events = list(response.events)
                    if events:
                        self._apply_events(chan, events)
                        revision = max(revision, max(e.kv.mod_revision for e in events))
                    else:
                        revision = max(revision, response.header.revision)
                    chan.synced = revision
                    chan.notify()
            except WatchCompacted as exc:
                log.info("channel %s: watch behind compaction (%s); reading the keys again", chan.name, exc)
                revision = 0
                self._step_down(chan, "resync")
            except EtcdError as exc:
                log.debug("channel %s: watch: %s; resuming", chan.name, exc)
                await asyncio.sleep(RETRY)

    async def _check_genesis(self, chan: _Chan) -> bool:
        key = chan.key("genesis")
        while True:
            try:
                response = await self.client.txn([created_at(key, 0)], [put_op(key, chan.genesis_hash)], [get_op(key)])
                break
            except EtcdError as exc:
                log.debug("channel %s: %s", chan.name, exc)
                await asyncio.sleep(RETRY)
        if not response.succeeded:
            kvs = response.responses[0].response_range.kvs
            if kvs and kvs[0].value != chan.genesis_hash:
                chan.problem = (
                    f"channel {chan.name}: its genesis block differs from the one the other orderers of this etcd "
                    "cluster serve"
                )
                log.error("%s", chan.problem)
                return False
        return True

    async def _load(self, chan: _Chan) -> int:
        kvs, revision = await self.client.range_all(chan.prefix)
        chan.queue.clear()
        chan.queue_bytes = 0
        chan.records.clear()
        chan.stored.clear()
        chan.leader, chan.leader_rev = None, 0
        events = [pb.Event(type=pb.Event.PUT, kv=kv) for kv in sorted(kvs, key=lambda kv: kv.create_revision)]
        self._apply_events(chan, events)
        chan.synced = revision
        chan.notify()
        return revision

    def _apply_events(self, chan: _Chan, events: list[pb.Event]) -> None:
        n = len(chan.prefix)
        new_entries: list[tuple[Cursor, bytes]] = []
        for event in events:
            kv = event.kv
            name = kv.key[n:]
            put = event.type == pb.Event.PUT
            if name.startswith(b"q/"):
                old = chan.queue.pop(kv.key, None)
                if old is not None:
                    chan.queue_bytes -= len(old[1])
                if put:
                    chan.queue[kv.key] = (kv.create_revision, kv.value)
                    chan.queue_bytes += len(kv.value)
                    if old is None:
                        new_entries.append(((kv.create_revision, kv.key), kv.value))
            elif name.startswith(b"b/"):
                number = int(name[2:])
                if put:
                    record = etcdorder_pb2.BlockRecord.FromString(kv.value)
                    block = common_pb2.Block.FromString(record.block)
                    chan.records[number] = _Record(number, record, block.header)
                else:
                    chan.records.pop(number, None)
            elif name == b"leader":
                if put:
                    chan.leader, chan.leader_rev = kv.value.decode(), kv.create_revision
                else:
                    chan.leader, chan.leader_rev = None, 0
                cutting = chan.cutting
                if cutting is not None and (not put or kv.create_revision != cutting.term):
                    self._step_down(chan, "leader key gone")
            elif name.startswith(b"stored/"):
                node = name[7:].decode()
                if put:
                    chan.stored[node] = int(kv.value)
                else:
                    chan.stored.pop(node, None)
        cutting = chan.cutting
        if cutting is not None and new_entries:
            new_entries.sort()
            self._feed(chan, cutting, new_entries)

    # ----------------------------------------------------------------------------------------------
    # Apply: blocks from etcd into the ledger

    async def _apply(self, chan: _Chan) -> None:
        while True:
            changed = chan.changed
            height = self._ledger.height(chan.name)
            raws: list[bytes] = []
            number = height
            while (record := chan.records.get(number)) is not None:
                try:
                    raw = self._rebuild(chan, record)
                except LedgerError as exc:  # a record that does not match its envelopes: never stored
                    if chan.problem is None:
                        chan.problem = str(exc)
                        log.error("%s", exc)
                    raw = None
                if raw is None:
                    break
                raws.append(raw)
                number += 1
                if len(raws) >= 64:
                    break
            if raws:
                try:
                    await asyncio.to_thread(self._ledger.commit_many, chan.name, raws)
                except LedgerError as exc:
                    # a disk full is retried; anything else is a block that does not chain (never expected)
                    log.error("channel %s: cannot store blocks %d-%d: %s", chan.name, height, number - 1, exc)
                    await asyncio.sleep(RETRY)
                    continue
                self._committed(chan.name)
                chan.notify()
                continue
            if chan.records and min(chan.records) > height and chan.problem is None:
                chan.problem = (
                    f"channel {chan.name}: blocks {height}-{min(chan.records) - 1} are no longer in etcd "
                    "(this orderer was behind by more than Consensus.Etcd.RetainBytes)"
                )
                log.error("%s", chan.problem)
            await changed.wait()

    def _rebuild(self, chan: _Chan, record: _Record) -> bytes | None:
        envelopes = []
        for key in record.record.keys:
            entry = chan.queue.get(key)
            if entry is None:
                return None  # not seen yet (or gone: see _apply)
            envelopes.append(entry[1])
        block = common_pb2.Block.FromString(record.record.block)
        block.data.data.extend(envelopes)
        if block_data_hash(block.data) != block.header.data_hash:
            raise LedgerError(f"channel {chan.name}: block {record.number} in etcd does not match its envelopes")
        return block.SerializeToString(deterministic=True)

    async def _report_stored(self, chan: _Chan) -> None:
        key = chan.key(f"stored/{self.node_id}")
        await self._wait(chan, lambda: chan.synced > 0 or chan.refused)
        if chan.refused:
            return
        while True:
            changed = chan.changed
            height = self._ledger.height(chan.name)
            if height != chan.applied_put:
                try:
                    await self.client.put(key, str(height).encode())
                    chan.applied_put = height
                except EtcdError:
                    await asyncio.sleep(RETRY)
                continue
            await changed.wait()

    # ----------------------------------------------------------------------------------------------
    # Election and cutting

    async def _campaign(self, chan: _Chan) -> None:
        key = chan.key("leader")
        while True:
            await self._wait(chan, lambda: chan.synced > 0 or chan.refused)
            if chan.refused:
                return
            lease = await self._lease_ready()
            try:
                response = await self.client.txn(
                    [created_at(key, 0)], [put_op(key, self.node_id.encode(), lease)], [get_op(key)]
                )
                term = response.header.revision
                if not response.succeeded:
                    kvs = response.responses[0].response_range.kvs
                    if not kvs:
                        continue
                    kv = kvs[0]
                    if kv.lease != lease:
                        # another node cuts: wait until the watch has seen its key, then until that key goes
                        seen_at, held = term, kv.create_revision
                        await self._wait(chan, lambda s=seen_at, h=held: chan.synced >= s and chan.leader_rev != h)
                        continue
                    # still ours from a term this node stepped down from: touch it, so the watch brings an event
                    # at a revision past every write made so far
                    term = kv.create_revision
                    touched = await self.client.txn(
                        [created_at(key, term)], [put_op(key, self.node_id.encode(), lease)]
                    )
                    if not touched.succeeded:
                        continue
                    seen = touched.header.revision
                else:
                    seen = term
            except EtcdError as exc:
                log.debug("channel %s: campaign: %s", chan.name, exc)
                await asyncio.sleep(RETRY)
                continue
            await self._wait(chan, lambda s=seen: chan.synced >= s)
            if self._lease != lease or chan.leader_rev != term:
                continue
            chan.cut_task = asyncio.current_task()  # type: ignore[assignment]
            try:
                await self._cut(chan, term)
            except asyncio.CancelledError:
                if self._stopping:
                    raise
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
            except Fenced as exc:
                log.warning("channel %s: no longer the cutter (term %d): %s", chan.name, term, exc)
            except EtcdError as exc:
                log.warning("channel %s: stepping down (term %d): %s", chan.name, term, exc)
                await asyncio.sleep(RETRY)
            finally:
                chan.cutting = None
                chan.cut_task = None

    async def _wait(self, chan: _Chan, condition: Callable[[], bool]) -> None:
        while not condition():
            await chan.changed.wait()

    def _step_down(self, chan: _Chan, why: str) -> None:
        task = chan.cut_task
        if task is not None and chan.cutting is not None:
            log.info("channel %s: stepping down as cutter: %s", chan.name, why)
            chan.cutting = None
            task.cancel()

    async def _cut(self, chan: _Chan, term: int) -> None:
        """Cut blocks for as long as this node holds term ``term``."""
        if chan.records:
            tip = chan.records[max(chan.records)]
            number, previous, fed = tip.number + 1, block_header_hash(tip.header), tip.cursor
        else:
            number, previous, fed = 1, chan.genesis_hash, (0, b"")
        cutting = _Cutting(term=term, cutter=BlockCutter(chan.settings), number=number, previous=previous, fed=fed)
        chan.cutting = cutting
        log.info("node %s cuts channel %s from block %d (term %d)", self.node_id, chan.name, number, term)
        backlog = sorted(((rev, key), raw) for key, (rev, raw) in chan.queue.items() if (rev, key) > fed)
        self._feed(chan, cutting, backlog)
        timer = asyncio.create_task(self._timer(cutting))
        gc = asyncio.create_task(self._gc_loop(chan, cutting))
        try:
            while True:
                batch = await cutting.batches.get()
                await self._write(chan, cutting, batch)
        finally:
            timer.cancel()
            gc.cancel()
            for task in (timer, gc):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    def _feed(self, chan: _Chan, cutting: _Cutting, entries: list[tuple[Cursor, bytes]]) -> None:
        now = self._clock()
        armed = cutting.cutter.deadline
        for cursor, raw in entries:
            if cursor <= cutting.fed:
                continue
            cutting.fed = cursor
            cutting.entries.append(cursor)
            for batch in cutting.cutter.ordered(raw, now):
                self._queue_batch(cutting, batch)
        if cutting.cutter.deadline != armed:
            cutting.wakeup.set()

    def _queue_batch(self, cutting: _Cutting, batch: list[bytes]) -> None:
        cursors = [cutting.entries.popleft() for _ in batch]
        cutting.batches.put_nowait(list(zip(cursors, batch, strict=True)))

    async def _timer(self, cutting: _Cutting) -> None:
        while True:
            for batch in cutting.cutter.on_tick(self._clock()):
                self._queue_batch(cutting, batch)
            cutting.wakeup.clear()
            deadline = cutting.cutter.deadline
            timeout = None if deadline is None else max(0.0, deadline - self._clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(cutting.wakeup.wait(), timeout)

    async def _write(self, chan: _Chan, cutting: _Cutting, batch: list[tuple[Cursor, bytes]]) -> None:
        envelopes = [raw for _, raw in batch]
        block = self._make_block(chan.name, cutting.number, cutting.previous, envelopes)
        header_hash = block_header_hash(block.header)
        block.ClearField("data")
        record = etcdorder_pb2.BlockRecord(
            block=block.SerializeToString(deterministic=True),
            keys=[key for (_, key), _ in batch],
            last_revision=batch[-1][0][0],
            writer=self.node_id,
            term=cutting.term,
        )
        key = chan.key(_block_key(cutting.number))
        response = await self.client.txn(
            [created_at(chan.key("leader"), cutting.term), created_at(key, 0)],
            [put_op(key, record.SerializeToString())],
        )
        if not response.succeeded:
            self.fenced_writes += 1
            raise Fenced(f"etcd refused block {cutting.number}: term {cutting.term} is over or the block exists")
        self.blocks_cut += 1
        log.debug("channel %s: block %d written (%d envelopes)", chan.name, cutting.number, len(batch))
        cutting.number += 1
        cutting.previous = header_hash

    async def _gc_loop(self, chan: _Chan, cutting: _Cutting) -> None:
        while True:
            await asyncio.sleep(GC_INTERVAL)
            try:
                await self._gc(chan, cutting)
            except EtcdError as exc:
                log.debug("channel %s: gc: %s", chan.name, exc)

    async def _gc(self, chan: _Chan, cutting: _Cutting) -> None:
        """Delete what every orderer has stored (and, past RetainBytes, the oldest blocks regardless)."""
        if len(chan.records) < 2:
            return
        numbers = sorted(chan.records)[:-1]  # the newest record stays: it is the cursor of the next cutter
        everyone = min(chan.stored.values()) if chan.stored else 0
        retained = 0
        sizes: dict[int, int] = {}
        for number in numbers:
            size = sum(len(chan.queue.get(k, (0, b""))[1]) for k in chan.records[number].record.keys)
            sizes[number] = size
            if number >= everyone:
                retained += size
        doomed = []
        for number in numbers:
            if number < everyone:
                doomed.append(number)
            elif retained > self._retain_bytes:
                doomed.append(number)
                retained -= sizes[number]
        if not doomed:
            return
        ops: list[pb.RequestOp] = []
        leader = created_at(chan.key("leader"), cutting.term)
        for number in doomed:
            record = chan.records[number].record
            ops.extend(delete_op(k) for k in record.keys)
            ops.append(delete_op(chan.key(_block_key(number))))
        step = max(1, self._max_txn_ops)
        for start in range(0, len(ops), step):
            response = await self.client.txn([leader], ops[start : start + step])
            if not response.succeeded:
                raise Fenced("gc refused")
        log.debug("channel %s: %d blocks left etcd (stored everywhere up to %d)", chan.name, len(doomed), everyone)
