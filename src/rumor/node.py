"""``Peer``: a rumor peer, the composition root and the public async API.

    comm (gRPC, TLS, handshake) ──verified messages──> PeerCore (sans-IO) ──effects──> executed here:
        Send -> comm.send          Handshake / Probe -> a task that reports back to the core
        Disconnect -> comm         Committed -> commit stream, metrics
        Deliver -> subscribers     LeadershipChanged -> start / stop pulling from the ordering service
    one timer task wakes the core at its next deadline; presumed-dead peers are reported to it;
    the ledger (SQLite), the peer list (SQLite) and the operations endpoint live beside it.

A disk that fills up (or fails) while the peer runs does not stop it: the core keeps the blocks it could not
store out of the ledger and retries every ``peer.gossip.state.storeRetryInterval``; /healthz fails the "ledger"
check with the reason, the log says so at most once a minute (``ledger_store_failures_total`` counts every
attempt), and the first commit that succeeds makes the peer healthy again. A peer that starts on a disk that
takes no writes refuses to start, with one line naming the path: see docs/operations.md.

Every call into the core happens on the event loop's thread, one at a time, so
the core needs no locks. ``now`` is ``time.monotonic()``; the wall clock enters
the core only as the incarnation number and the offset used for certificate
expiry.

    async with Peer(load_config("core.yaml")) as peer:
        await peer.join_channel(Path("mychannel.block").read_bytes())
        async for block in peer.blocks("mychannel"):
            ...

The public API (``from rumor import Peer, Member``) is described, with an example, in docs/api.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import logging
import os
import random
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from rumor import channelconfig, configtx
from rumor.comm.comm import Comm
from rumor.comm.config import CommConfig
from rumor.config import Config
from rumor.core.node import GossipNode
from rumor.core.peer import PeerCore
from rumor.core.peerstore import SqlitePeerStore
from rumor.core.types import (
    Committed,
    Deliver,
    Disconnect,
    Effect,
    Handshake,
    HandshakeResult,
    LeadershipChanged,
    NetworkMember,
    Probe,
    ReceivedMessage,
    RemotePeer,
    Send,
)
from rumor.crypto.api import CryptoError
from rumor.crypto.identity import SigningIdentity, deserialize_identity, read_pem_certificates, serialize_identity
from rumor.crypto.mcs import X509CryptoService
from rumor.crypto.msp import OrgRegistry
from rumor.ledger import Ledger, LedgerError
from rumor.ledger.health import StorageHealth
from rumor.ledger.store import LedgerStorageError
from rumor.lockfile import DirectoryLock, DirectoryLocked
from rumor.ops.metrics import PeerMetrics
from rumor.ops.rejections import RejectionLog
from rumor.ops.server import OperationsServer
from rumor.orderer.client import ClientTLS, DeliverClient, DeliverError, Keepalive
from rumor.preflight import PreflightError, check_peer
from rumor.wire.pb.common import common_pb2

log = logging.getLogger("rumor.peer")


class PeerError(Exception):
    """A peer that cannot start or an API call that cannot be carried out; the message says why."""


@dataclass(frozen=True, slots=True)
class Member:
    """A peer of the network as this peer's membership sees it (what ``Peer.peers()`` and ``Peer.leader()``
    return).

    ``org`` is its MSP ID (``"Org1MSP"``); ``endpoint`` the HOST:PORT this peer dials it at (its internal endpoint
    when it is of our org, else its external one; empty when not known); ``pki_id`` its PKI-ID, hex-encoded (the
    SHA-256 of its MSP ID and certificate, as ``status()`` and the logs show it); ``alive`` whether membership
    counts it alive now; ``name`` its name where known: our own ``peer.id``, or the common name of its certificate
    (with cryptogen's layout and ``rumor network init``, its peer id: ``peer0.org1.example.com``), None while its
    identity is unknown.
    """

    org: str
    endpoint: str
    pki_id: str
    alive: bool
    name: str | None = None


@dataclass
class _Subscriber:
    predicate: Callable[[ReceivedMessage], bool]
    queue: asyncio.Queue[ReceivedMessage]
    dropped: int = 0


RECENT_EVENTS = frozenset(
    {
        "peer_alive",
        "peer_dead",
        "leader_changed",
        "block_rejected",
        "bootstrap_refused",
        "channel_access_denied",
        "peer_penalized",
        "peer_distrusted",
        "leadership_rejected",
    }
)
"""Tracer events kept for ``status()["events"]`` (the rare ones an operator wants to see)."""

RECENT_COMMITS = 50
"""Commit times kept per channel for ``status()``, from which the dashboard computes time-to-all-peers."""


class MetricsTracer:
    """Turns the core's and comm's tracer events into Prometheus metrics and a short event log."""

    def __init__(self, metrics: PeerMetrics, keep: int = 200) -> None:
        self.metrics = metrics
        self.recent: list[tuple[float, str, dict[str, object]]] = []
        self.keep = keep
        self.listeners: list[Callable[[str, float, dict[str, object]], None]] = []
        self.rejections = RejectionLog(lambda reason: metrics.messages_rejected.labels(reason).inc(), time.monotonic)

    def event(self, name: str, now: float, **fields: object) -> None:
        self.rejections.event(name, fields)
        if name == "block_rejected":
            self.metrics.blocks_rejected.labels(str(fields.get("channel", ""))).inc()
        if name in RECENT_EVENTS:
            self.recent.append((time.time(), name, fields))
            del self.recent[: -self.keep]
        for listener in self.listeners:
            listener(name, now, fields)


class Peer:
    """A rumor peer. ``async with Peer(config) as peer:`` starts it and stops it cleanly.

    ``config`` is the peer's configuration (``rumor.load_config("core.yaml")``). ``operations=False`` serves no
    operations endpoint even when ``operations.listenAddress`` is set. ``seed`` fixes the gossip core's random
    choices (for tests and benchmarks; None draws one from the OS).

    Every method is called from the event loop the peer was started on. Besides the calls below, a started peer
    exposes its parts for embedding and tests: ``config``, ``metrics`` (its Prometheus metrics), ``ledger``,
    ``comm`` (the gRPC transport), ``core`` (the sans-IO protocol core) and ``ops`` (the operations server, or
    None); these are not a stable API.
    """

    def __init__(self, config: Config, *, operations: bool = True, seed: int | None = None) -> None:
        self.config = config
        self.operations_enabled = operations
        self._seed = seed
        self.metrics = PeerMetrics()
        self.tracer = MetricsTracer(self.metrics)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._deliverers: dict[str, asyncio.Task[None]] = {}
        self._subscribers: list[_Subscriber] = []
        self._commit_events: dict[str, asyncio.Event] = {}
        self._recent_commits: dict[str, deque[tuple[int, float]]] = {}
        self._wake = asyncio.Event()
        self._started = False
        self._stopping = False
        self._channel_configs: dict[str, channelconfig.ChannelConfig] = {}
        self.signer: SigningIdentity
        self.registry: OrgRegistry
        self.mcs: X509CryptoService
        self.ledger: Ledger
        self.comm: Comm
        self.core: PeerCore
        self.ops: OperationsServer | None = None
        self._comm_counts: dict[str, int] = {}
        retry = config.peer.gossip.state.store_retry_interval
        self.storage = StorageHealth(
            log, note=f"retrying every {retry:g}s; /healthz reports unhealthy until it succeeds"
        )
        """Whether the ledger stores: the "ledger" health check, and the log lines about a disk that refuses."""
        self.tracer.listeners.append(self._on_storage_event)

    # --- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> Peer:
        """Start the peer (``start``) and return it."""
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Stop the peer (``stop``), whether the block ended normally or by an exception."""
        await self.stop()

    async def start(self) -> None:
        """Load identity and ledger, listen, join the channels the ledger holds, start gossiping.

        Raises PeerError, with one line saying why, when the peer cannot start (its material is missing or
        invalid, its data directory is locked by another peer or on a full disk, a port is taken...).
        """
        if self._started:
            raise PeerError("peer already started")
        peer = self.config.peer
        data_dir = Path(peer.file_system_path)
        self._lock = DirectoryLock(data_dir, "rumor peer")
        try:
            self._lock.acquire()
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise PeerError(f"peer.fileSystemPath: disk full at {data_dir}; {_FREE_SPACE}") from None
            raise PeerError(f"peer.fileSystemPath: {exc}") from None
        except DirectoryLocked as exc:
            raise PeerError(f"peer.fileSystemPath: {exc}") from None
        try:
            await self._start(data_dir)
        except BaseException:
            if not self._started:
                self._lock.release()
            raise

    async def _start(self, data_dir: Path) -> None:
        peer = self.config.peer
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PeerError(f"peer.fileSystemPath: {exc}") from None
        try:
            material = check_peer(self.config)
        except PreflightError as exc:
            raise PeerError(str(exc)) from None
        self.signer, own_org = material.signer, material.org
        recover = (
            f"stop the peer, move {data_dir / 'ledger.sqlite'} aside and start it again with --join <the channel's "
            "genesis block>: it then fetches every block from its peers"
        )
        try:
            self.ledger = Ledger(data_dir / "ledger.sqlite")
        except LedgerStorageError as exc:
            raise PeerError(f"ledger: {exc}; {_FREE_SPACE}") from None
        except LedgerError as exc:
            raise PeerError(f"{exc}; {recover}") from None
        try:
            self.ledger.check()
            # A peer that cannot write would gossip, and say it is up, while every block it gets is lost to it:
            # an operator restarting it on a full disk learns it here, in one line, rather than from /healthz.
            self.ledger.probe()
        except LedgerStorageError as exc:
            self.ledger.close()
            raise PeerError(f"ledger: {exc}; {_FREE_SPACE}") from None
        except LedgerError as exc:
            self.ledger.close()
            raise PeerError(f"{exc}; {recover}") from None
        self.registry = OrgRegistry([own_org])
        self.mcs = X509CryptoService(self.signer, self.registry)
        for channel in self.ledger.channels():
            try:
                self._adopt_channel_config(channelconfig.latest_config(self.ledger, channel))
            except (channelconfig.ChannelConfigError, PeerError) as exc:
                self.ledger.close()
                raise PeerError(f"ledger {self.ledger.path}: {exc}") from None
        extra_roots = [pem for cfg in self._channel_configs.values() for pem in cfg.tls_roots]
        try:
            comm_config = CommConfig.from_config(self.config, extra_root_cas_pem=extra_roots)
        except (OSError, ValueError) as exc:
            raise PeerError(f"peer.tls: {exc}") from None
        self.comm = Comm(
            comm_config,
            self.mcs,
            self.mcs,
            self.signer.identity,
            tracer=self.tracer,
            identity_of=lambda pki_id: self.core.node.identities.peek(pki_id) if hasattr(self, "core") else None,
        )
        try:
            await self.comm.start()
        except Exception as exc:
            self.ledger.close()
            raise PeerError(str(exc)) from None
        gossip = peer.gossip
        endpoint = gossip.endpoint or _reachable(peer.address, self.comm.endpoint)
        rng = random.Random(self._seed if self._seed is not None else os.urandom(16))
        node = GossipNode(
            gossip,
            self.signer.identity,
            self.mcs,
            self.mcs,
            rng=rng,
            start_time_ns=time.time_ns(),
            endpoint=endpoint,
            external_endpoint=gossip.external_endpoint,
            peer_store=SqlitePeerStore(data_dir / "peers.sqlite"),
            tracer=self.tracer,
            clock_offset=time.time() - time.monotonic(),
        )
        self.core = PeerCore(
            node,
            TimedLedger(self.ledger, self.metrics),
            state_config=gossip.state,
            election_config=gossip.election,
            use_leader_election=gossip.use_leader_election,
            static_leader=gossip.org_leader,
            rng=random.Random(rng.getrandbits(64)),
            tracer=self.tracer,
        )
        now = self._now()
        effects: list[Effect] = []
        for name, cfg in self._channel_configs.items():
            effects += self.core.join_channel(name, _orgs(cfg), _anchors(cfg), now=now)
        effects += self.core.start(now)
        self._started = True
        self._apply(effects)
        self._spawn(self._receive_loop(), "receive")
        self._spawn(self._presumed_dead_loop(), "presumed-dead")
        self._spawn(self._timer_loop(), "timer")
        self._spawn(self._membership_tracker_loop(), "membership-tracker")
        if self.operations_enabled and self.config.operations.listen_address:
            ops = self.config.operations
            try:
                ssl_context = _operations_ssl(ops)
            except (OSError, ssl.SSLError, ValueError) as exc:
                await self.stop()
                raise PeerError(f"operations.tls: {exc}") from None
            host = ops.listen_address.rpartition(":")[0].strip("[]")
            if ops.admin_token and ssl_context is None and host not in ("127.0.0.1", "localhost", "::1"):
                await self.stop()
                raise PeerError(
                    f"operations.adminToken over plain HTTP needs a loopback listenAddress (not {ops.listen_address}); "
                    "enable operations.tls"
                )
            self.ops = OperationsServer(
                ops.listen_address,
                status=self.status,
                metrics=self.metrics,
                health_checks={
                    "comm": lambda: None if self._started and not self._stopping else "stopped",
                    "ledger": self.storage.problem,
                },
                ssl_context=ssl_context,
                admin_token=ops.admin_token,
                admin_check=self._admin_problem,
                join_channel=self.join_channel,
            )
            self.metrics.refresh = self._refresh_metrics
            try:
                await self.ops.start()
            except OSError as exc:
                await self.stop()
                raise PeerError(f"operations.listenAddress {self.config.operations.listen_address}: {exc}") from None
        log.info("peer %s (%s) of network %s up at %s", peer.id, peer.local_msp_id, peer.network_id, self.endpoint)

    async def stop(self) -> None:
        """Say goodbye to peers, stop every task, close connections, ledger and endpoints (idempotent)."""
        if not self._started or self._stopping:
            return
        self._stopping = True
        with contextlib.suppress(Exception):
            self._apply(self.core.stop(self._now()))
        tasks = list(self._tasks) + list(self._deliverers.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._deliverers.clear()
        await self.comm.stop()
        if self.ops is not None:
            await self.ops.stop()
        self.ledger.close()
        self._lock.release()
        for event in self._commit_events.values():
            event.set()
        self._started = False
        log.info("peer %s stopped", self.config.peer.id)

    # --- queries --------------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """The gossip endpoint (HOST:PORT) this peer advertises to its peers."""
        return self.core.node.endpoint

    @property
    def pki_id(self) -> bytes:
        """This peer's PKI-ID (raw bytes; ``Member.pki_id`` is the same, hex-encoded)."""
        return self.signer.pki_id

    @property
    def org(self) -> str:
        """This peer's MSP ID (``peer.localMspId``)."""
        return self.config.peer.local_msp_id

    @property
    def operations_address(self) -> str | None:
        """HOST:PORT of the operations endpoint (/healthz, /metrics, /api/status, the dashboard), None when
        there is none."""
        return None if self.ops is None else self.ops.address

    def channels(self) -> list[str]:
        """Names of the channels this peer has joined, sorted."""
        return sorted(self.core.channels)

    def height(self, channel: str) -> int:
        """The ledger height of ``channel``: the number of the next block to commit (0 for an unknown channel)."""
        return self.ledger.height(channel)

    async def get_block(self, channel: str, number: int) -> common_pb2.Block | None:
        """Block ``number`` of ``channel`` from the ledger (a ``rumor.Block``), None when not committed."""
        raw = self.ledger.get_block(channel, number)
        return None if raw is None else common_pb2.Block.FromString(raw)

    def me(self) -> Member:
        """This peer, as its peers see it in their ``peers()``."""
        return Member(self.org, self.endpoint, self.pki_id.hex(), alive=True, name=self.config.peer.id)

    def peers(self, *, include_dead: bool = False) -> list[Member]:
        """The other peers membership knows, alive ones only unless ``include_dead``, sorted by org and endpoint."""
        members = [self._member(m, alive=True) for m in self.core.node.peers()]
        if include_dead:
            members += [self._member(m, alive=False) for m in self.core.node.discovery.dead_members()]
        return sorted(members, key=_member_order)

    def peers_of_channel(self, channel: str) -> list[Member]:
        """The alive peers that have joined ``channel`` (as their signed state info says), sorted like ``peers()``;
        empty for a channel this peer has not joined."""
        return sorted(
            (self._member(m, alive=True) for m in self.core.node.peers_of_channel(channel)), key=_member_order
        )

    def leader(self, channel: str) -> Member | None:
        """The peer believed to lead our org on ``channel`` (``me()`` when it is this peer), None when there is
        none yet (election still running, or static leadership with ``orgLeader: false``)."""
        pki_id = self.core.leader(channel)
        if pki_id is None:
            return None
        if pki_id == self.pki_id:
            return self.me()
        known = self.core.node.discovery.lookup(pki_id)
        if known is None:
            # Elected by peers whose alive message has not reached us yet: a leader is always of our own org.
            return Member(self.org, "", pki_id.hex(), alive=False, name=self._name_of(pki_id))
        return self._member(known, alive=self.core.node.discovery.is_alive(pki_id))

    def is_leader(self, channel: str) -> bool:
        """Whether this peer leads its org on ``channel`` (and so pulls blocks from the ordering service)."""
        return self.core.is_leader(channel)

    def _member(self, member: NetworkMember, *, alive: bool) -> Member:
        return Member(
            org=member.org.decode(errors="replace"),
            endpoint=member.preferred_endpoint,
            pki_id=member.pki_id.hex(),
            alive=alive,
            name=self._name_of(member.pki_id),
        )

    def _name_of(self, pki_id: bytes) -> str | None:
        if pki_id == self.pki_id:
            return self.config.peer.id
        identity = self.core.node.identities.peek(pki_id)
        return None if identity is None else _common_name(identity)

    async def blocks(self, channel: str, start: int = 0) -> AsyncIterator[common_pb2.Block]:
        """Every block of ``channel`` from ``start`` on, in order: first those committed, then each new one as it
        is committed (``async for block in peer.blocks(channel)``). The iteration ends when the peer stops."""
        number = start
        event = self._commit_events.setdefault(channel, asyncio.Event())
        while not self._stopping:
            height = self.ledger.height(channel)
            while number < height:
                for raw in self.ledger.get_blocks(channel, number, min(height, number + 100) - 1):
                    yield common_pb2.Block.FromString(raw)
                    number += 1
            event.clear()
            if self.ledger.height(channel) > number:
                continue
            await event.wait()

    def subscribe(
        self, predicate: Callable[[ReceivedMessage], bool], maxsize: int = 1024
    ) -> asyncio.Queue[ReceivedMessage]:
        """A queue of the messages the gossip core accepted and passes on (blocks, leadership, private data...)
        for which ``predicate`` is true; each is a ``rumor.core.types.ReceivedMessage`` (``.message`` the gossip
        message, ``.sender`` the PKI-ID its connection authenticated).

        Delivery never blocks the peer: when the queue (``maxsize``) is full the message is dropped.
        """
        sub = _Subscriber(predicate, asyncio.Queue(maxsize))
        self._subscribers.append(sub)
        return sub.queue

    def status(self) -> dict[str, Any]:
        """The peer's view, as ``GET /api/status`` serves it and ``rumor status`` shows it: identity, channels
        (height, leader, buffer, state-transfer and gossip counters, recent commits), membership, open
        connections, comm counters and recent events. A dict of JSON values."""
        channels = {}
        for name in self.channels():
            leader = self.core.leader(name)
            state = self.core.channels[name].state
            channels[name] = {
                "height": self.ledger.height(name),
                "leader": self.core.is_leader(name),
                "leader_pki_id": leader.hex() if leader else None,
                "peers": len(self.core.node.peers_of_channel(name)),
                # the in-order payload buffer: now, and the most it held since start (bounded by blockBufferSize)
                "buffer_size": len(state.buffer),
                "buffer_high_water": state.stats.buffer_high_water,
                "block_buffer_size": state.config.block_buffer_size,
                # why the ledger refuses to store this channel's blocks (disk full...), None while it stores
                "store_problem": state.store_problem,
                "state": dataclasses.asdict(state.stats),
                "gossip": _stats_dict(self.core.node.channels.get(name)),
                # [block number, wall-clock commit time] of the latest commits: exact propagation latencies
                "recent_commits": [list(item) for item in self._recent_commits.get(name, ())],
            }
        membership = [dataclasses.asdict(m) for m in self.peers(include_dead=True)]
        return {
            "peer_id": self.config.peer.id,
            "network_id": self.config.peer.network_id,
            "org": self.org,
            "endpoint": self.endpoint,
            "pki_id": self.pki_id.hex(),
            "channels": channels,
            "membership": membership,
            # what discovery saw and refused: unsolicited, oversized or forged membership, throttled dials
            "discovery": dataclasses.asdict(self.core.node.discovery.stats),
            "connections": [c.pki_id.hex() for c in self.comm.connections()],
            "comm": self.comm.metrics.as_dict(),
            "events": [
                {"time": t, "event": n, **{k: _jsonable(v) for k, v in f.items()}}
                for t, n, f in self.tracer.recent[-50:]
            ],
        }

    # --- the application's calls ----------------------------------------------------------------

    async def join_channel(self, genesis: bytes | common_pb2.Block) -> str:
        """Join the channel whose genesis block this is (raw bytes or a ``rumor.Block``; idempotent); returns the
        channel's name. Raises PeerError when it is not a genesis block, our org is not a member, or the ledger
        holds another genesis block for that channel."""
        raw = genesis.SerializeToString() if isinstance(genesis, common_pb2.Block) else genesis
        cfg = check_genesis_for(raw, self.signer)
        existing = self.ledger.get_block(cfg.name, 0)
        if existing is not None and common_pb2.Block.FromString(existing) != common_pb2.Block.FromString(raw):
            raise PeerError(
                f"channel {cfg.name}: the ledger holds a different genesis block (another channel of that name); "
                f"start without --join to serve the channel the ledger holds, or stop the peer and move "
                f"{self.ledger.path} aside to join this one"
            )
        # A genesis block is trusted because the operator hands it over (Fabric does not verify it either; a
        # configtxgen genesis carries no signature at all); read_genesis checked its hashes and its config.
        if existing is None:
            self._adopt_channel_config(cfg)
            try:
                self.ledger.commit(cfg.name, raw)
            except LedgerError as exc:
                raise PeerError(f"channel {cfg.name}: cannot join: {exc}") from None
        else:
            cfg = self._channel_configs.get(cfg.name, cfg)
        self._apply(self.core.join_channel(cfg.name, _orgs(cfg), _anchors(cfg), now=self._now()))
        self._commit_events.setdefault(cfg.name, asyncio.Event()).set()
        return cfg.name

    async def add_payload(self, channel: str, block: bytes | common_pb2.Block) -> None:
        """Add a block from the application (its own block source): verified, gossiped and committed.

        The block (raw bytes or a ``rumor.Block``) must carry the signature the channel's BlockValidation policy
        asks for (the ordering org's, see ``rumor.sign_block``); raises PeerError when it does not verify."""
        raw = block.SerializeToString() if isinstance(block, common_pb2.Block) else block
        number = common_pb2.Block.FromString(raw).header.number
        try:
            self._apply(self.core.add_block(channel, number, raw, now=self._now()))
        except CryptoError as exc:
            raise PeerError(f"channel {channel}: block {number} does not verify: {exc}") from None

    # --- internals ------------------------------------------------------------------------------

    def _now(self) -> float:
        return time.monotonic()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name=f"rumor-peer-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None and not self._stopping:
            log.error("peer task %s failed", task.get_name(), exc_info=task.exception())

    def _on_storage_event(self, name: str, now: float, fields: dict[str, object]) -> None:
        """The core's word on the ledger's writes: feeds the "ledger" health check, its metric and its log."""
        if name == "ledger_store_failed":
            channel = str(fields.get("channel", ""))
            self.metrics.ledger_store_failures.labels(channel).inc()
            self.storage.failed(channel, str(fields.get("reason", "")), now)
        elif name == "ledger_store_recovered":
            self.storage.stored(str(fields.get("channel", "")))

    def _adopt_channel_config(self, cfg: channelconfig.ChannelConfig) -> None:
        configs = [c for name, c in self._channel_configs.items() if name != cfg.name] + [cfg]
        try:
            merged = channelconfig.org_registry(configs)
        except channelconfig.ChannelConfigError as exc:
            raise PeerError(str(exc)) from None
        local = self.config.peer.local_msp_id
        for org in merged.orgs.values():
            existing = self.registry.orgs.get(org.mspid)
            if org.mspid == local and existing is not None:
                # our own MSP stays as loaded from disk, plus any CRL the channels publish for it
                have = {crl.fingerprint(hashes.SHA256()) for crl in existing.crls}
                extra = tuple(crl for crl in org.crls if crl.fingerprint(hashes.SHA256()) not in have)
                if extra:
                    self.registry.add_org(dataclasses.replace(existing, crls=existing.crls + extra))
            elif existing != org:
                self.registry.add_org(org)
        for mspid in sorted(self.registry.mspids - merged.mspids - {local}):
            self.registry.remove_org(mspid)  # no channel admits this org any more
        self._channel_configs[cfg.name] = cfg
        self.mcs.register_channel_config(cfg)

    def _on_config_block(self, channel: str, raw: bytes) -> None:
        """A committed block: when it is a config block, check its update and let the new configuration take effect.

        A config transaction that fails the checks stays in the ledger (the orderer cut it, and the chain must not
        have a hole) but changes nothing, as a Fabric peer marks it INVALID_CONFIG_TRANSACTION.
        """
        try:
            block = common_pb2.Block.FromString(raw)
        except Exception:
            return
        opened = channelconfig.config_block_envelope(block)
        current = self._channel_configs.get(channel)
        if opened is None or current is None:
            return
        try:
            envelope = channelconfig.read_config_envelope(opened)
            cfg = configtx.apply_config_envelope(current, envelope, self.mcs.resolver(channel))
            self._adopt_channel_config(cfg)
        except (configtx.ConfigUpdateError, channelconfig.ChannelConfigError, PeerError) as exc:
            self.tracer.event("config_rejected", self._now(), channel=channel, seq_num=block.header.number)
            log.error("channel %s: config block %d does not take effect: %s", channel, block.header.number, exc)
            return
        log.info("channel %s: configuration %d in force from block %d", channel, cfg.sequence, block.header.number)
        self.tracer.event("config_updated", self._now(), channel=channel, seq_num=block.header.number)
        if set(cfg.tls_roots) != set(current.tls_roots):
            # gRPC fixes a server's trust roots when it starts; the connections to peers of new TLS CAs wait for it
            log.warning(
                "channel %s: the TLS root certificates changed; they take effect when the peer restarts", channel
            )
        self._apply(self.core.join_channel(channel, _orgs(cfg), _anchors(cfg), now=self._now()))
        self._cut_off_invalid_peers()
        moved = (cfg.orderer_endpoints, cfg.orderer_tls_roots) != (current.orderer_endpoints, current.orderer_tls_roots)
        if moved and channel in self._deliverers:
            # The ordering service moved: follow it from the new endpoints. Called from the deliver task itself,
            # so the restart runs once the current step is done.
            asyncio.get_running_loop().call_soon(self._restart_deliverer, channel)

    def _restart_deliverer(self, channel: str) -> None:
        if self._stopping or channel not in self._deliverers or not self.core.is_leader(channel):
            return
        self._on_leadership(LeadershipChanged(channel, True, self.pki_id))

    def _cut_off_invalid_peers(self) -> None:
        """Close the connections of peers whose identity the configuration no longer admits (revoked, org removed)."""
        for connection in self.comm.connections():
            identity = self.core.node.identities.peek(connection.pki_id)
            if identity is None:
                continue
            try:
                self.mcs.validate_identity(identity)
            except CryptoError as exc:
                log.warning("disconnecting %s: %s", connection.endpoint, exc)
                self.comm.disconnect(connection.pki_id)

    def _admin_problem(self, der: bytes) -> str | None:
        """None when the client certificate ``der`` is an admin of this peer's own org, else why not."""
        local = self.config.peer.local_msp_id
        try:
            cert = x509.load_der_x509_certificate(der)
            pem = cert.public_bytes(serialization.Encoding.PEM)
            self.registry.validate(serialize_identity(local, pem))
        except (CryptoError, ValueError) as exc:
            return f"not a valid identity of {local}: {exc}"
        org = self.registry.orgs.get(local)
        ous = {str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)}
        if org is not None and org.node_ous is not None and org.node_ous.admin and org.node_ous.admin in ous:
            return None
        admins = Path(self.config.peer.msp_config_path) / "admincerts"
        with contextlib.suppress(CryptoError):
            if any(c == cert for c in read_pem_certificates(admins)):
                return None
        return f"{cert.subject.rfc4514_string()} is a member of {local}, not an admin"

    def _apply(self, effects: list[Effect]) -> None:
        """Carry out the core's effects; none of them waits."""
        for effect in effects:
            if isinstance(effect, Send):
                self.comm.send(effect.envelope, effect.to)
            elif isinstance(effect, Handshake):
                self._spawn(self._handshake(effect.endpoint), "handshake")
            elif isinstance(effect, Probe):
                self._spawn(self._probe(effect.peer), "probe")
            elif isinstance(effect, Disconnect):
                self.comm.disconnect(effect.pki_id)
            elif isinstance(effect, Deliver):
                self._deliver(effect.message)
            elif isinstance(effect, Committed):
                self.metrics.state_height.labels(effect.channel).set(effect.seq_num + 1)
                self.metrics.state_blocks_committed.labels(effect.channel).inc()
                sent_at = _newest_envelope_time(effect.block)
                if sent_at is not None:
                    self.metrics.block_propagation.labels(effect.channel).observe(max(0.0, time.time() - sent_at))
                recent = self._recent_commits.setdefault(effect.channel, deque(maxlen=RECENT_COMMITS))
                recent.append((effect.seq_num, time.time()))
                self._commit_events.setdefault(effect.channel, asyncio.Event()).set()
                self._on_config_block(effect.channel, effect.block)
            elif isinstance(effect, LeadershipChanged):
                self._on_leadership(effect)
        self._wake.set()

    def _deliver(self, message: ReceivedMessage) -> None:
        for sub in self._subscribers:
            if sub.predicate(message):
                try:
                    sub.queue.put_nowait(message)
                except asyncio.QueueFull:
                    sub.dropped += 1

    def _on_leadership(self, change: LeadershipChanged) -> None:
        self.metrics.leader_election_leader.labels(change.channel).set(1 if change.is_leader else 0)
        self.metrics.leader_election_changes.labels(change.channel).inc()
        log.info("channel %s: %s", change.channel, "now leading our org" if change.is_leader else "no longer leading")
        task = self._deliverers.pop(change.channel, None)
        if task is not None:
            task.cancel()
        if change.is_leader and not self._stopping:
            cfg = self._channel_configs.get(change.channel)
            if cfg is not None and cfg.orderer_endpoints:
                task = asyncio.get_running_loop().create_task(
                    self._pull_from_orderer(change.channel, cfg), name=f"rumor-deliver-{change.channel}"
                )
                task.add_done_callback(self._task_done)
                self._deliverers[change.channel] = task

    async def _pull_from_orderer(self, channel: str, cfg: channelconfig.ChannelConfig) -> None:
        """As leader: stream blocks from the ordering service from our height on, and gossip them."""
        endpoints = cfg.orderer_endpoints
        tls = None
        peer_tls = self.config.peer.tls
        if peer_tls.enabled:
            roots = b"".join(cfg.orderer_tls_roots)
            cert = Path(peer_tls.client_cert_file or peer_tls.cert_file).read_bytes()
            key = Path(peer_tls.client_key_file or peer_tls.key_file).read_bytes()
            tls = ClientTLS(root_certs=roots, cert=cert, key=key)
        keepalive = self.config.peer.keepalive
        client = DeliverClient(
            endpoints,
            self.signer,
            tls=tls,
            keepalive=Keepalive(keepalive.delivery_client_interval, keepalive.delivery_client_timeout),
        )
        try:
            async for block in client.deliver(channel, start=self.ledger.height(channel)):
                raw = block.SerializeToString()
                try:
                    self._apply(self.core.add_block(channel, block.header.number, raw, now=self._now()))
                except CryptoError as exc:
                    self.tracer.event("block_rejected", self._now(), channel=channel, seq_num=block.header.number)
                    log.warning("channel %s: block %d from the orderer rejected: %s", channel, block.header.number, exc)
        except DeliverError as exc:
            log.warning("channel %s: the ordering service refuses us (%s); yielding leadership", channel, exc)
            self._apply(self.core.yield_leadership(channel, now=self._now()))

    async def _handshake(self, endpoint: str) -> None:
        try:
            info = await self.comm.handshake(endpoint)
            result = HandshakeResult(endpoint, info.pki_id, info.identity)
        except Exception as exc:  # any failure to reach or authenticate is reported to the core the same way
            result = HandshakeResult(endpoint, error=str(exc) or type(exc).__name__)
        if not self._stopping:
            self._apply(self.core.on_handshake(result, self._now()))

    async def _probe(self, peer: RemotePeer) -> None:
        try:
            await self.comm.probe(peer.endpoint)
            alive = True
        except Exception:
            alive = False
        if not self._stopping:
            self._apply(self.core.on_probe(peer, alive, self._now()))

    async def _receive_loop(self) -> None:
        sub = self.comm.subscribe(backpressure=True)
        try:
            async for message in sub:
                try:
                    effects = self.core.on_message(message, self._now())
                except Exception:  # a bug must not kill the peer: log it and keep serving
                    log.exception("failed to handle a %s message", message.message.WhichOneof("content"))
                    continue
                self._apply(effects)
        finally:
            sub.close()

    async def _presumed_dead_loop(self) -> None:
        feed = self.comm.presumed_dead()
        try:
            async for pki_id in feed:
                self._apply(self.core.on_connection_lost(pki_id, self._now()))
        finally:
            feed.close()

    async def _membership_tracker_loop(self) -> None:
        """Every membershipTrackerInterval, one line per channel whose membership changed since the last look
        (as Fabric's membership tracker reports it): who went online, who went offline, how many are in view."""
        views: dict[str, dict[bytes, str]] = {}
        interval = self.config.peer.gossip.membership_tracker_interval
        while not self._stopping:
            await asyncio.sleep(interval)  # a reporting period, not a synchronization
            for channel in self.ledger.channels():
                view = {m.pki_id: m.internal_endpoint or m.endpoint for m in self.core.node.peers_of_channel(channel)}
                before = views.get(channel, {})
                if view != before:
                    online = sorted(view[p] for p in view.keys() - before.keys())
                    offline = sorted(before[p] for p in before.keys() - view.keys())
                    log.info(
                        "channel %s: membership changed: online [%s], offline [%s]; %d peers in view",
                        channel,
                        " ".join(online),
                        " ".join(offline),
                        len(view),
                    )
                views[channel] = view

    async def _timer_loop(self) -> None:
        while not self._stopping:
            deadline = self.core.next_deadline()
            delay = None if deadline is None else max(0.0, deadline - self._now())
            # asyncio.timeout, not wait_for: in 3.11 wait_for loses a cancellation that races with the wake-up
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            self._wake.clear()
            deadline = self.core.next_deadline()
            if deadline is not None and self._now() >= deadline:
                try:
                    effects = self.core.on_tick(self._now())
                except Exception:
                    log.exception("timer step failed")
                    await asyncio.sleep(0.1)  # back off from a failing step instead of spinning on it
                    continue
                self._apply(effects)

    def _refresh_metrics(self) -> None:
        counts = self.comm.metrics.as_dict()
        m = self.metrics
        for key, counter in (
            ("comm_messages_sent", m.comm_messages_sent),
            ("comm_messages_received", m.comm_messages_received),
            ("comm_overflow_count", m.comm_overflow_count),
            ("comm_bytes_sent", m.comm_bytes_sent),
            ("comm_bytes_received", m.comm_bytes_received),
            ("comm_handshakes_failed", m.comm_handshakes_failed),
            ("comm_write_timeouts", m.comm_write_timeouts),
        ):
            self._advance(counter, key, counts.get(key, 0))
        discovery = self.core.node.discovery.stats
        for reason, value in (
            ("unsolicited", discovery.responses_unsolicited),
            ("oversized", discovery.responses_oversized),
            ("forged", discovery.responses_cut_short),
        ):
            self._advance(m.membership_responses_refused.labels(reason), f"responses_{reason}", value)
        self._advance(m.membership_identify_dials_throttled, "identify_throttled", discovery.identify_throttled)
        m.comm_connections.set(len(self.comm.connections()))
        m.membership_total_peers_known.set(len(self.core.node.peers()))
        m.membership_dead_peers.set(len(self.core.node.dead_peers()))
        for name, runtime in self.core.channels.items():
            m.payload_buffer_size.labels(name).set(len(runtime.state.buffer))
            m.state_height.labels(name).set(self.ledger.height(name))
            stats = runtime.state.stats
            for counter, value, what in (
                (m.state_requests_sent, stats.requests_sent, "sent"),
                (m.state_requests_served, stats.requests_served, "served"),
                (m.state_requests_throttled, stats.requests_throttled, "throttled"),
                (m.state_peers_distrusted, stats.peers_distrusted, "distrusted"),
            ):
                self._advance(counter.labels(name), f"state_{what}/{name}", value)

    def _advance(self, counter: Any, key: str, value: int) -> None:
        """Move a Prometheus counter up to ``value``, a total kept elsewhere (the core's and comm's stats)."""
        delta = value - self._comm_counts.get(key, 0)
        if delta > 0:
            counter.inc(delta)
        self._comm_counts[key] = value


class TimedLedger:
    """The ledger as the core sees it, each commit timed into gossip_state_commit_duration (Fabric's metric: the
    seconds one block takes to commit; a batch's time is shared by its blocks)."""

    def __init__(self, ledger: Ledger, metrics: PeerMetrics) -> None:
        self._ledger = ledger
        self._metrics = metrics

    def height(self, channel: str) -> int:
        return self._ledger.height(channel)

    def get_blocks(self, channel: str, start: int, end: int) -> list[bytes]:
        return self._ledger.get_blocks(channel, start, end)

    def commit_many(self, channel: str, blocks: Sequence[bytes]) -> None:
        started = time.perf_counter()
        self._ledger.commit_many(channel, blocks)
        if blocks:
            each = (time.perf_counter() - started) / len(blocks)
            histogram = self._metrics.state_commit_duration.labels(channel)
            for _ in blocks:
                histogram.observe(each)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ledger, name)


def _newest_envelope_time(raw: bytes) -> float | None:
    """The newest channel-header timestamp among a block's envelopes (seconds since the epoch), None if none."""
    block = common_pb2.Block()
    try:
        block.ParseFromString(raw)
    except Exception:  # protobuf raises DecodeError and, for some inputs, other errors
        return None
    newest: float | None = None
    for data in block.data.data:
        try:
            payload = common_pb2.Payload.FromString(common_pb2.Envelope.FromString(data).payload)
            stamp = common_pb2.ChannelHeader.FromString(payload.header.channel_header).timestamp
        except Exception:  # an envelope that does not decode has no time; the block is valid all the same
            continue
        if stamp.seconds:
            when = stamp.seconds + stamp.nanos / 1e9
            newest = when if newest is None else max(newest, when)
    return newest


_FREE_SPACE = "free space on that file system and start the peer again"


def _operations_ssl(ops: Any) -> ssl.SSLContext | None:
    """The operations server's TLS, as operations.tls says (None: plain HTTP)."""
    tls = ops.tls
    if not tls.enabled:
        return None
    if not tls.cert_file or not tls.key_file:
        raise ValueError("enabled without cert.file and key.file")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.client_root_cas_files:
        for path in tls.client_root_cas_files:
            context.load_verify_locations(cafile=path)
        context.verify_mode = ssl.CERT_REQUIRED if tls.client_auth_required else ssl.CERT_OPTIONAL
    elif tls.client_auth_required:
        raise ValueError("clientAuthRequired without clientRootCAs.files")
    return context


def _member_order(member: Member) -> tuple[str, str, str]:
    return member.org, member.endpoint, member.pki_id


@lru_cache(maxsize=4096)
def _common_name(identity: bytes) -> str | None:
    """The subject common name of a serialized identity's certificate (cached: status() asks for every member
    each time, and a PKI-ID's identity never changes)."""
    try:
        _, cert = deserialize_identity(identity)
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except (CryptoError, ValueError):
        return None
    return str(names[0].value) if names else None


def _reachable(address: str, listening: str) -> str:
    """The endpoint to advertise: ``peer.address``, with a wildcard host or port 0 filled in from the listener."""
    host, _, port = address.rpartition(":")
    real_host, _, real_port = listening.rpartition(":")
    if host in ("", "0.0.0.0", "::"):
        host = real_host
    if port in ("", "0"):
        port = real_port
    return f"{host}:{port}"


def _orgs(cfg: channelconfig.ChannelConfig) -> list[str]:
    return [o.mspid for o in cfg.orgs]


def _anchors(cfg: channelconfig.ChannelConfig) -> dict[str, list[str]]:
    return cfg.anchor_peers


def _stats_dict(component: object) -> dict[str, Any]:
    stats = getattr(component, "stats", None)
    return dataclasses.asdict(stats) if dataclasses.is_dataclass(stats) and not isinstance(stats, type) else {}


def _event_json(when: float, name: str, fields: dict[str, object]) -> dict[str, object]:
    return {"time": when, "event": name, **{k: _jsonable(v) for k, v in fields.items()}}


def _jsonable(value: object) -> object:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def check_genesis_for(raw: bytes, signer: SigningIdentity) -> channelconfig.ChannelConfig:
    """The channel config of genesis block ``raw`` if ``signer`` may join it: the block is a genesis block, the
    signer's org is a member, and the signer's certificate is valid under that org's MSP as the channel defines
    it (a block of another network with the same MSP IDs but other CAs is refused here, not at the next start).
    Raises PeerError saying which of these fails."""
    try:
        cfg = channelconfig.read_genesis(raw)
    except channelconfig.ChannelConfigError as exc:
        raise PeerError(str(exc) if str(exc).startswith("not a") else f"not a genesis block: {exc}") from None
    mspid = signer.mspid
    if mspid not in {o.mspid for o in cfg.orgs}:
        members = ", ".join(sorted(o.mspid for o in cfg.orgs)) or "none"
        raise PeerError(f"channel {cfg.name}: org {mspid} is not a member (members: {members})")
    try:
        channelconfig.org_registry([cfg]).validate(signer.identity)
    except (CryptoError, channelconfig.ChannelConfigError) as exc:
        raise PeerError(
            f"channel {cfg.name}: this peer's certificate is not valid in the channel's {mspid} ({exc}): "
            "the block was made for another network or with other CAs"
        ) from None
    return cfg
