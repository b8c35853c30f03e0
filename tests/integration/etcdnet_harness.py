"""Harness of the etcd ordering tests: a network of 3 etcd members and 3 orderer processes, a load of clients that
records every answer, and a Jepsen-style checker over every orderer's ledger and every acknowledgement.

The load: ``writers`` tasks, each sending one envelope at a time on its own Broadcast stream to one orderer (writer
k starts on orderer k mod 3 and moves to the next when its stream breaks). Every payload is distinct and sent
once, never resent, so the checker can be exact: a payload answered SUCCESS must be in the chain exactly once;
any other payload (refused, or no answer because the orderer died) at most once; nothing else may be there.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from polling import wait_for
from procnet import Cluster, Proc

from rumor.channelconfig import new_envelope, open_envelope
from rumor.crypto.identity import load_signing_identity
from rumor.etcdnet import EtcdProcess
from rumor.network import NetworkLayout, OrdererEntry
from rumor.orderer.client import DeliverClient, newest_block
from rumor.orderer.etcd import EtcdClient, EtcdError
from rumor.orderer.netdir import NetworkTarget, network_target
from rumor.wire.pb.common import common_pb2
from rumor.wire.pb.orderer import ab_pb2
from rumor.wire.pb.rumorpb import etcdorder_pb2

PREFIX = b"/rumor/orderer/"
ALL_SENT: set[bytes] = set()
"""Every payload any Load of this test process sent (the chain of a module's network holds several loads')."""
_LOADS = itertools.count(1)


@dataclass
class EtcdNet:
    """The processes of one etcd ordering network; ``close()`` kills what is left."""

    cluster: Cluster
    layout: NetworkLayout
    etcd: list[EtcdProcess] = field(default_factory=list)
    orderers: dict[str, Proc] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.etcd = [EtcdProcess(member.config) for member in self.layout.etcd]
        self.target: NetworkTarget = network_target(self.layout.root, self.layout.channel)
        self.signer = load_signing_identity(self.target.msp_dir, self.target.mspid)
        self.client = EtcdClient([m.endpoint for m in self.layout.etcd], request_timeout=3.0)

    @property
    def entries(self) -> tuple[OrdererEntry, ...]:
        return self.layout.orderers

    def entry(self, node: str) -> OrdererEntry:
        return next(o for o in self.entries if o.id == node)

    async def start_etcd(self, index: int | None = None) -> None:
        for i, member in enumerate(self.etcd):
            if (index is None or i == index) and not member.running:
                member.start()

        async def healthy() -> bool:
            try:
                await self.client.get(b"/health-probe")
                return True
            except EtcdError:
                return False

        await wait_for(healthy, 30, "etcd answers")

    async def start_orderer(self, node: str) -> Proc:
        proc = self.cluster.spawn(node, "orderer", "start", "--config", str(self.entry(node).config))
        await self.cluster._ready(proc, "orderer ready on")
        self.orderers[node] = proc
        return proc

    async def start_all(self) -> None:
        await self.start_etcd()
        # one after another: each python process is CPU-bound while it imports
        for entry in self.entries:
            await self.start_orderer(entry.id)

    def kill_orderer(self, node: str) -> None:
        self.orderers.pop(node).kill9()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.client.close()
        for member in self.etcd:
            member.signal(signal.SIGCONT)
            member.kill()

    # --- what etcd says ---------------------------------------------------------------------------

    def key(self, name: str) -> bytes:
        return PREFIX + f"{self.layout.channel}/{name}".encode()

    async def leader(self) -> str | None:
        kv = await self.client.get(self.key("leader"))
        return kv.value.decode() if kv is not None else None

    async def wait_leader(self, *, other_than: str | None = None, timeout: float = 30) -> str:
        async def found() -> str | None:
            try:
                node = await self.leader()
            except EtcdError:
                return None
            return node if node is not None and node != other_than else None

        return str(await wait_for(found, timeout, f"a cutter other than {other_than}"))

    async def etcd_keys(self) -> tuple[int, int]:
        """(block records, queue entries) of the channel in etcd now."""
        records = await self.client.range(self.key("b/"), self.key("b0"), count_only=True)
        queue = await self.client.range(self.key("q/"), self.key("q0"), count_only=True)
        return records.count, queue.count

    # --- what the orderers serve --------------------------------------------------------------------

    async def chain(self, node: str) -> list[common_pb2.Block]:
        """Every block orderer ``node`` serves now, read through Deliver (oldest to newest)."""
        endpoint = self.entry(node).endpoint
        newest = await newest_block(endpoint, self.signer, self.layout.channel, tls=self.target.tls)
        client = DeliverClient(endpoint, self.signer, tls=self.target.tls)
        out: list[common_pb2.Block] = []
        async with contextlib.aclosing(client.deliver(self.layout.channel, 0, stop=newest)) as blocks:
            async for block in blocks:
                out.append(block)
        return out

    async def converged(self, nodes: list[str] | None = None, timeout: float = 60) -> list[common_pb2.Block]:
        """Wait until every orderer (``nodes``) serves the same chain and that chain holds every envelope of etcd's
        queue (see ``wait_converged``); that chain."""
        nodes = nodes or [e.id for e in self.entries]
        return await wait_converged(nodes, self.chain, self.queue_state, timeout)

    async def queue_state(self) -> QueueState:
        """The channel's queue in etcd now, read at one revision: its entries no block record lists, and the
        number of the newest record."""
        kvs, _ = await self.client.range_all(self.key(""))
        queued = {kv.key for kv in kvs if kv.key.startswith(self.key("q/"))}
        listed: set[bytes] = set()
        newest = 0
        for kv in kvs:
            if kv.key.startswith(self.key("b/")):
                listed.update(etcdorder_pb2.BlockRecord.FromString(kv.value).keys)
                newest = max(newest, int(kv.key[len(self.key("b/")) :]))
        return QueueState(uncut=len(queued - listed), newest=newest)


@dataclass(frozen=True)
class QueueState:
    uncut: int
    """Queue entries that no block record lists (not cut yet)."""
    newest: int
    """Number of the newest block record in etcd (0 when there is none: only the genesis block)."""


async def wait_converged(
    nodes: Sequence[str],
    chain: Callable[[str], Awaitable[list[common_pb2.Block]]],
    queue_state: Callable[[], Awaitable[QueueState]],
    timeout: float,
) -> list[common_pb2.Block]:
    """Wait until every node's ``chain`` is the same and holds everything etcd's queue held; that chain.

    etcd is read first, the chains after. Read the other way round, a block cut between the two reads (the last
    batch of a stopped load, cut on its batch timeout while the chains are being read) lists the last envelopes,
    so the queue has nothing uncut, and yet the chains just read lack that block: the checker then finds
    acknowledged envelopes in no block. In this order, an etcd read with nothing uncut fixes what the chains must
    hold, every block up to the newest record: every envelope still queued is listed by one of those, and every
    one garbage collection deleted was in a block every orderer had stored. The chains read afterwards must reach
    that block. (The load must be stopped: an envelope admitted after the etcd read would not be waited for.)
    """
    state: dict[str, object] = {}

    async def same() -> list[common_pb2.Block] | None:
        try:
            queue = await queue_state()
            state["queue"] = queue
            if queue.uncut:
                return None
            chains = [await chain(n) for n in nodes]
        except Exception as exc:
            state["last"] = repr(exc)
            return None
        state["heights"] = [len(c) for c in chains]
        first = [b.SerializeToString(deterministic=True) for b in chains[0]]
        if any([b.SerializeToString(deterministic=True) for b in c] != first for c in chains[1:]):
            return None
        return chains[0] if len(chains[0]) > queue.newest else None

    result = await wait_for(same, timeout, "every orderer serves the same, complete chain", describe=lambda: str(state))
    return list(result)


# --- the load -------------------------------------------------------------------------------------


@dataclass
class Load:
    """Writers sending distinct payloads one at a time and recording each answer (see the module docstring)."""

    net: EtcdNet
    writers: int = 6
    size: int = 200
    acked: set[bytes] = field(default_factory=set)
    refused: Counter[str] = field(default_factory=Counter)
    unknown: set[bytes] = field(default_factory=set)
    sent: set[bytes] = field(default_factory=set)
    unavailable_after: dict[str, int] = field(default_factory=dict)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _seq: int = 0
    tag: str = field(default_factory=lambda: f"L{next(_LOADS)}")

    def start(self) -> Load:
        self._stop = asyncio.Event()
        self._tasks = [asyncio.create_task(self._writer(k)) for k in range(self.writers)]
        return self

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.wait_for(asyncio.gather(*self._tasks), 60)

    def _payload(self, writer: int) -> bytes:
        self._seq += 1
        payload = f"{self.tag}-w{writer}-{self._seq:08d} ".encode().ljust(self.size, b".")
        ALL_SENT.add(payload)
        return payload

    async def _writer(self, k: int) -> None:
        entries = self.net.entries
        index = k % len(entries)
        channel_name = self.net.layout.channel
        while not self._stop.is_set():
            endpoint = entries[index].endpoint
            tls = self.net.target.tls
            channel = (
                grpc.aio.secure_channel(endpoint, tls.credentials()) if tls else grpc.aio.insecure_channel(endpoint)
            )
            try:
                call = channel.stream_stream(
                    "/orderer.AtomicBroadcast/Broadcast",
                    request_serializer=common_pb2.Envelope.SerializeToString,
                    response_deserializer=ab_pb2.BroadcastResponse.FromString,
                )()
                while not self._stop.is_set():
                    payload = self._payload(k)
                    self.sent.add(payload)
                    self.unknown.add(payload)  # until an answer says otherwise
                    await call.write(new_envelope(self.net.signer, channel_name, common_pb2.MESSAGE, payload))
                    async with asyncio.timeout(15):
                        reply = await call.read()
                    if reply is grpc.aio.EOF:
                        break
                    self.unknown.discard(payload)
                    if reply.status == common_pb2.SUCCESS:
                        self.acked.add(payload)
                    else:
                        name = common_pb2.Status.Name(reply.status)
                        self.refused[name] += 1
                        self.unavailable_after.setdefault(name, len(self.acked))
                        # a refusal is an answer: the payload may still be ordered (an etcd timeout is ambiguous)
                        self.unknown.add(payload)
                        await self._pause(0.05)  # the pace of a refused client, not a synchronization
            except (grpc.aio.AioRpcError, TimeoutError, grpc.aio.UsageError):
                pass
            finally:
                await channel.close()
            index = (index + 1) % len(entries)
            await self._pause(0.1)  # the pace of reconnecting

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stop.wait()

    async def wait_acks(self, more: int, timeout: float = 60) -> None:
        target = len(self.acked) + more
        await wait_for(lambda: len(self.acked) >= target, timeout, f"{target} acknowledged envelopes")


def check(chain: list[common_pb2.Block], load: Load) -> None:
    """The Jepsen-style verdict over one chain (every orderer's, once they are equal) and every answer."""
    ordered = Counter(open_envelope(raw).payload.data for block in chain[1:] for raw in block.data.data)
    twice = [p for p, n in ordered.items() if n > 1]
    assert not twice, f"{len(twice)} payloads ordered more than once, e.g. {twice[:3]}"
    lost = load.acked - set(ordered)
    assert not lost, f"{len(lost)} acknowledged payloads are in no block, e.g. {sorted(lost)[:3]}"
    foreign = set(ordered) - ALL_SENT
    assert not foreign, f"{len(foreign)} payloads in blocks were never sent, e.g. {sorted(foreign)[:3]}"
    for number, block in enumerate(chain):
        assert block.header.number == number
    assert load.acked, "nothing was acknowledged"


def read_ledger(path: Path) -> list[bytes]:
    from rumor.ledger import Ledger

    ledger = Ledger(path)
    try:
        return list(ledger.iter_blocks(ledger.channels()[0]))
    finally:
        ledger.close()
