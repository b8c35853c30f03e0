"""``Peer``: a rumor peer, the composition root and the public async API.

    comm (gRPC, TLS, handshake) ──verified messages──> PeerCore (sans-IO) ──effects──> executed here:
        Send -> comm.send          Handshake / Probe -> a task that reports back to the core
        Disconnect -> comm         Committed -> commit stream, metrics
        Deliver -> subscribers     LeadershipChanged -> start / stop pulling from the ordering service
    one timer task wakes the core at its next deadline; presumed-dead peers are reported to it;
    the ledger (SQLite), the peer list (SQLite) and the operations endpoint live beside it.

Every call into the core happens on the event loop's thread, one at a time, so
the core needs no locks. ``now`` is ``time.monotonic()``; the wall clock enters
the core only as the incarnation number and the offset used for certificate
expiry.

    async with Peer(load_config("core.yaml")) as peer:
        await peer.join_channel(Path("mychannel.block").read_bytes())
        async for block in peer.blocks("mychannel"):
            ...
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import random
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
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
    Probe,
    ReceivedMessage,
    RemotePeer,
    Send,
)
from rumor.crypto.api import CryptoError
from rumor.crypto.identity import SigningIdentity, load_signing_identity, read_pem_certificates, serialize_identity
from rumor.crypto.mcs import X509CryptoService
from rumor.crypto.msp import OrgRegistry, load_org
from rumor.ledger import Ledger, LedgerError
from rumor.lockfile import DirectoryLock, DirectoryLocked
from rumor.ops.metrics import PeerMetrics
from rumor.ops.server import OperationsServer
from rumor.orderer.client import ClientTLS, DeliverClient, DeliverError
from rumor.wire.pb.common import common_pb2

log = logging.getLogger("rumor.peer")


class PeerError(Exception):
    """A peer that cannot start or an API call that cannot be carried out; the message says why."""


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

    def event(self, name: str, now: float, **fields: object) -> None:
        if name == "block_rejected":
            self.metrics.blocks_rejected.labels(str(fields.get("channel", ""))).inc()
        if name in RECENT_EVENTS:
            self.recent.append((time.time(), name, fields))
            del self.recent[: -self.keep]
        for listener in self.listeners:
            listener(name, now, fields)


class Peer:
    """A rumor peer. ``async with Peer(config) as peer:`` starts it and stops it cleanly."""

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
        self._copied_counts: dict[str, int] = {}  # the counts kept elsewhere, as last copied into /metrics

    # --- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> Peer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Load identity and ledger, listen, join the channels the ledger holds, start gossiping."""
        if self._started:
            raise PeerError("peer already started")
        peer = self.config.peer
        data_dir = Path(peer.file_system_path)
        self._lock = DirectoryLock(data_dir, "rumor peer")
        try:
            self._lock.acquire()
        except (DirectoryLocked, OSError) as exc:
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
            self.signer = load_signing_identity(Path(peer.msp_config_path), peer.local_msp_id)
            own_org = load_org(Path(peer.msp_config_path), peer.local_msp_id)
        except (OSError, CryptoError) as exc:
            raise PeerError(f"cannot load the peer's identity from {peer.msp_config_path}: {exc}") from None
        recover = (
            f"stop the peer, move {data_dir / 'ledger.sqlite'} aside and start it again with --join <the channel's "
            "genesis block>: it then fetches every block from its peers"
        )
        try:
            self.ledger = Ledger(data_dir / "ledger.sqlite")
        except LedgerError as exc:
            raise PeerError(f"{exc}; {recover}") from None
        try:
            self.ledger.check()
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
            self.ledger,
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
                health_checks={"comm": lambda: None if self._started and not self._stopping else "stopped"},
                ssl_context=ssl_context,
                admin_token=ops.admin_token,
                admin_check=self._admin_problem,
            )
            self.metrics.refresh = self._refresh_metrics
            try:
                await self.ops.start()
            except OSError as exc:
                await self.stop()
                raise PeerError(f"operations.listenAddress {self.config.operations.listen_address}: {exc}") from None
        log.info("peer %s (%s) up at %s", peer.id, peer.local_msp_id, self.endpoint)

    async def stop(self) -> None:
        """Say goodbye to peers, stop every task, close connections, ledger and endpoints."""
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
        return self.core.node.endpoint

    @property
    def pki_id(self) -> bytes:
        return self.signer.pki_id

    @property
    def org(self) -> str:
        return self.config.peer.local_msp_id

    def channels(self) -> list[str]:
        return sorted(self.core.channels)

    def height(self, channel: str) -> int:
        return self.ledger.height(channel)

    async def get_block(self, channel: str, number: int) -> common_pb2.Block | None:
        raw = self.ledger.get_block(channel, number)
        return None if raw is None else common_pb2.Block.FromString(raw)

    def peers(self) -> list[Any]:
        return self.core.node.peers()

    def peers_of_channel(self, channel: str) -> list[Any]:
        return self.core.node.peers_of_channel(channel)

    def leader(self, channel: str) -> bytes | None:
        return self.core.leader(channel)

    def is_leader(self, channel: str) -> bool:
        return self.core.is_leader(channel)

    async def blocks(self, channel: str, start: int = 0) -> AsyncIterator[common_pb2.Block]:
        """Every block of ``channel`` from ``start`` on, in order: first those committed, then each new one."""
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
        """Messages the gossip core accepted and passes on (blocks, leadership, private data...).

        Delivery never blocks the peer: when the queue is full the message is dropped.
        """
        sub = _Subscriber(predicate, asyncio.Queue(maxsize))
        self._subscribers.append(sub)
        return sub.queue

    def status(self) -> dict[str, Any]:
        """The peer's view, as ``GET /api/status`` serves it."""
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
                "state": dataclasses.asdict(state.stats),
                "gossip": _stats_dict(self.core.node.channels.get(name)),
                # [block number, wall-clock commit time] of the latest commits: exact propagation latencies
                "recent_commits": [list(item) for item in self._recent_commits.get(name, ())],
            }
        membership = [
            {"pki_id": m.pki_id.hex(), "endpoint": m.preferred_endpoint, "org": m.org.decode(), "alive": True}
            for m in self.core.node.peers()
        ]
        membership += [
            {"pki_id": m.pki_id.hex(), "endpoint": m.preferred_endpoint, "org": m.org.decode(), "alive": False}
            for m in self.core.node.discovery.dead_members()
        ]
        return {
            "peer_id": self.config.peer.id,
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
        """Join the channel whose genesis block this is (idempotent); returns the channel's name."""
        raw = genesis.SerializeToString() if isinstance(genesis, common_pb2.Block) else genesis
        try:
            cfg = channelconfig.read_genesis(raw)
        except channelconfig.ChannelConfigError as exc:
            raise PeerError(str(exc) if str(exc).startswith("not a") else f"not a genesis block: {exc}") from None
        if self.config.peer.local_msp_id not in {o.mspid for o in cfg.orgs}:
            raise PeerError(f"channel {cfg.name}: org {self.config.peer.local_msp_id} is not a member")
        existing = self.ledger.get_block(cfg.name, 0)
        if existing is not None and common_pb2.Block.FromString(existing) != common_pb2.Block.FromString(raw):
            raise PeerError(f"channel {cfg.name}: the ledger holds a different genesis block")
        # A genesis block is trusted because the operator hands it over (Fabric does not verify it either; a
        # configtxgen genesis carries no signature at all); read_genesis checked its hashes and its config.
        if existing is None:
            self._adopt_channel_config(cfg)
            self.ledger.commit(cfg.name, raw)
        else:
            cfg = self._channel_configs.get(cfg.name, cfg)
        self._apply(self.core.join_channel(cfg.name, _orgs(cfg), _anchors(cfg), now=self._now()))
        self._commit_events.setdefault(cfg.name, asyncio.Event()).set()
        return cfg.name

    async def add_payload(self, channel: str, block: bytes | common_pb2.Block) -> None:
        """Add a block from the application (its own block source): verified, gossiped and committed."""
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
        client = DeliverClient(endpoints, self.signer, tls=tls)
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
        sub = self.comm.subscribe()
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
            ("comm_write_timeouts", m.comm_write_timeouts),
        ):
            self._advance(key, counter, counts.get(key, 0))
        discovery = self.core.node.discovery.stats
        for reason, value in (
            ("unsolicited", discovery.responses_unsolicited),
            ("oversized", discovery.responses_oversized),
            ("forged", discovery.responses_cut_short),
        ):
            self._advance(f"responses_{reason}", m.membership_responses_refused.labels(reason), value)
        self._advance("identify_throttled", m.membership_identify_dials_throttled, discovery.identify_throttled)
        m.membership_total_peers_known.set(len(self.core.node.peers()))
        for name, runtime in self.core.channels.items():
            m.payload_buffer_size.labels(name).set(len(runtime.state.buffer))
            m.state_height.labels(name).set(self.ledger.height(name))
            stats = runtime.state.stats
            self._advance(f"{name}/throttled", m.state_requests_throttled.labels(name), stats.requests_throttled)
            self._advance(f"{name}/distrusted", m.state_peers_distrusted.labels(name), stats.peers_distrusted)

    def _advance(self, key: str, counter: Any, value: int) -> None:
        """Move a Prometheus counter up to a count kept elsewhere (counters only go up; a count only grows)."""
        delta = value - self._copied_counts.get(key, 0)
        if delta > 0:
            counter.inc(delta)
        self._copied_counts[key] = value


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
