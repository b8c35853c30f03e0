"""rumor's built-in ordering service: Fabric's AtomicBroadcast on grpc.aio, one node, blocks on SQLite.

::

    Broadcast(envelope) -> decode, known channel, size, creator's org in the channel, /Channel/Writers
                           (signature checked by the policy) -> BroadcastResponse
                           accepted: cutter.ordered(envelope, now) -> batches -> channel's write queue
    timer task           : sleeps until the earliest cutter deadline, then cutter.on_tick(now) -> batches
    writer task (1/chan) : batches -> new_block(height, last_hash) -> Fabric's metadata (signed
                           OrdererBlockMetadata with LAST_CONFIG) -> Ledger.commit_many
                           -> wake the Deliver streams of the channel
    Deliver(seek)        -> decode, DELIVER_SEEK_INFO, known channel, /Channel/Readers, TLS certificate hash
                           bound under mutual TLS, timestamp within 15 minutes -> blocks [start, height) from
                           the ledger, then each new block as it is committed, until stop -> status SUCCESS

A block's data entries are the submitted envelopes, serialized. SUCCESS on Broadcast means durable: the envelope
is in the ledger's pending queue (one transaction and one fsync per burst of envelopes, whatever stream they came
on) and survives kill -9; after a restart the pending envelopes are cut first, and a block's commit takes its
envelopes off the queue in the same transaction, so none is lost and none ordered twice. The block follows within
batch_timeout. A channel is served from its genesis block
(block 0 of the ledger, Fabric's format), whose configuration gives its orgs, policies and batch settings;
the orderer's own identity must belong to one of the channel's orderer orgs.

Ordering is serialized per channel without locks: the cutter runs synchronously inside the event loop, and
its batches go through one queue to one writer, which is the only code that appends to the channel's chain.
The ledger's SQLite calls run in worker threads so an fsync never stalls the event loop.

Stopping: new RPCs are refused, open streams end (Deliver with SERVICE_UNAVAILABLE), envelopes already
accepted are cut into a last block and committed, and every task is awaited, so an envelope answered
SUCCESS is never lost by a clean shutdown.

A full disk (or an I/O error: the ledger's LedgerStorageError) stops nothing for good. Envelopes the pending
queue could not take are answered SERVICE_UNAVAILABLE with the reason, never SUCCESS. Blocks the ledger could not
take stay in the writer, which tries them again every ``store_retry`` seconds (their envelopes are durable in
the pending queue meanwhile); until it succeeds the channel answers every envelope SERVICE_UNAVAILABLE, so what
waits in memory is bounded by what was accepted before. The log says so at most once a minute, and once more
when the ledger stores again. An orderer whose ledger takes no writes at start refuses to start, in one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from google.protobuf.message import DecodeError

from rumor.channelconfig import (
    CHANNEL_READERS,
    CHANNEL_WRITERS,
    ChannelConfig,
    ChannelConfigError,
    EnvelopeError,
    OpenedEnvelope,
    last_config_index,
    latest_config,
    load_block,
    open_envelope,
    orderer_block_metadata,
    org_registry,
    read_genesis,
)
from rumor.config import _HOST_PORT
from rumor.crypto.api import CryptoError, InvalidIdentity
from rumor.crypto.blocks import block_header_hash, decode_block, new_block, sign_block
from rumor.crypto.identity import SigningIdentity, decode_identity, load_signing_identity
from rumor.crypto.mcs import X509CryptoService
from rumor.ledger import Ledger, LedgerError
from rumor.ledger.health import StorageHealth
from rumor.ledger.store import LedgerStorageError
from rumor.lockfile import DirectoryLock, DirectoryLocked
from rumor.orderer.config import EtcdConsensusConfig, OrdererConfig, OrdererKeepaliveConfig
from rumor.orderer.cutter import BatchSettings, BlockCutter, EnvelopeTooLarge
from rumor.orderer.etcd import EtcdClient, EtcdTLS
from rumor.orderer.etcdorder import TXN_OVERHEAD, EtcdOrdering, QueueFull
from rumor.policies import PolicyError
from rumor.wire.pb.common import common_pb2
from rumor.wire.pb.orderer import ab_pb2

__all__ = ["MAX_BLOCK_NUMBER", "SERVICE_NAME", "Orderer", "OrdererError", "ServerTLS"]

log = logging.getLogger("rumor.orderer")

SERVICE_NAME = "orderer.AtomicBroadcast"
MAX_BLOCK_NUMBER = 2**64 - 1
"""A SeekInfo stop at this number streams forever."""
MiB = 1024 * 1024
# Fabric's deliver service rejects seek requests stamped further than this from its clock, so that a
# recorded request cannot be replayed much later.
SEEK_TIME_WINDOW = 15 * 60.0
_READ_BATCH = 64
_IN_FLIGHT = 1024  # envelopes of one Broadcast stream read ahead of their answers
STORE_RETRY = 5.0
"""Seconds between two attempts to commit blocks the ledger could not store (disk full...)."""
_PENDING = "pending queue"  # the StorageHealth key of the envelopes' queue (the others are channel names)
_FREE_SPACE = "free space on that file system and start the orderer again"

Status = common_pb2.Status
_NOT_ORDERABLE = {
    common_pb2.CONFIG: "config transactions cannot be submitted (the channel config is fixed by its genesis block)",
    common_pb2.CONFIG_UPDATE: "config updates are not supported by rumor's orderer",
    common_pb2.ORDERER_TRANSACTION: "orderer transactions are not supported by rumor's orderer",
    common_pb2.DELIVER_SEEK_INFO: "a seek request belongs on Deliver, not Broadcast",
}


class OrdererError(Exception):
    """The orderer cannot start: bad material, a genesis block that does not fit, an address in use, ..."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.splitlines()))


@dataclass(frozen=True)
class ServerTLS:
    """The server's TLS certificate and key, and what it asks of clients."""

    cert_pem: bytes
    key_pem: bytes = field(repr=False)
    client_root_cas_pem: bytes | None = None
    client_auth_required: bool = False

    @classmethod
    def from_files(
        cls,
        cert: Path | str,
        key: Path | str,
        client_root_cas: Iterable[Path | str] = (),
        *,
        client_auth_required: bool = False,
    ) -> ServerTLS:
        roots = b"".join(_read(path, "client root CA") for path in client_root_cas)
        return cls(
            cert_pem=_read(cert, "TLS certificate"),
            key_pem=_read(key, "TLS private key"),
            client_root_cas_pem=roots or None,
            client_auth_required=client_auth_required,
        )

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.key_pem, self.cert_pem)],
            root_certificates=self.client_root_cas_pem,
            require_client_auth=self.client_auth_required,
        )


def _read(path: Path | str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise OrdererError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None


@dataclass(eq=False)
class _Channel:
    name: str
    config: ChannelConfig
    cutter: BlockCutter
    last_config: int = 0  # number of the newest config block, recorded in every block's metadata
    # Batches cut and waiting for the writer, each with the pending sequence number of its last envelope.
    queue: asyncio.Queue[tuple[list[bytes], int] | None] = field(default_factory=asyncio.Queue)
    # Pending sequence numbers of the envelopes in the cutter, in order (the cutter keeps their order).
    seqs: deque[int] = field(default_factory=deque)
    # Replaced by a fresh event after each commit: a waiter takes the current one, then re-checks the height.
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    writer: asyncio.Task[None] | None = None
    failure: str | None = None
    # Why the ledger refuses this channel's blocks (disk full...), until a retry stores them.
    store_problem: str | None = None

    def notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


LAST_CONFIG_INDEX = common_pb2.BlockMetadataIndex.Value("LAST_CONFIG")
_Admitted = tuple[_Channel, bytes, "asyncio.Future[ab_pb2.BroadcastResponse]"]


def _tls_binding_problem(opened: OpenedEnvelope, context: grpc.aio.ServicerContext | None) -> str | None:
    """Fabric's binding check: under mutual TLS, a seek request names the hash of the client's TLS certificate,
    so a request recorded from one client cannot be replayed by another."""
    if context is None:
        return None
    auth = context.auth_context() or {}
    pems = auth.get("x509_pem_cert") or []
    if not pems:
        return None
    try:
        der = x509.load_pem_x509_certificate(pems[0]).public_bytes(serialization.Encoding.DER)
    except ValueError:
        return "the client's TLS certificate does not decode"
    if opened.channel_header.tls_cert_hash != hashlib.sha256(der).digest():
        return "the seek request's TLS certificate hash is not that of the client's TLS certificate"
    return None


def _status_name(status: int) -> str:
    return common_pb2.Status.Name(status) if status in common_pb2.Status.values() else str(status)


def _broadcast_reply(status: int, info: str = "") -> ab_pb2.BroadcastResponse:
    return ab_pb2.BroadcastResponse(status=status, info=info)  # type: ignore[arg-type]


def _status_reply(status: int) -> bytes:
    return ab_pb2.DeliverResponse(status=status).SerializeToString()  # type: ignore[arg-type]


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if not value:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


_BLOCK_FIELD_TAG = bytes([(2 << 3) | 2])  # DeliverResponse.block: field 2, length-delimited


def _block_reply(raw_block: bytes, header_only: bool) -> bytes:
    if header_only:
        block = common_pb2.Block.FromString(raw_block)
        block.ClearField("data")
        raw_block = block.SerializeToString(deterministic=True)
    # The block is stored serialized; framing it by hand spares a parse and a re-serialization per block.
    return _BLOCK_FIELD_TAG + _varint(len(raw_block)) + raw_block


_T = TypeVar("_T")


def _keepalive_options(keepalive: OrdererKeepaliveConfig) -> list[tuple[str, int]]:
    """gRPC server options for General.Keepalive, as Fabric's orderer applies them: it pings a silent client after
    ServerInterval, drops it after ServerTimeout without an answer, and accepts the clients' own pings (a peer's
    deliver client sends one after peer.keepalive.deliveryClient.interval of silence) down to ServerMinInterval
    apart, with or without a call open; gRPC's default policy (5 minutes) would answer them with GOAWAY."""
    return [
        ("grpc.keepalive_time_ms", int(keepalive.server_interval * 1000)),
        ("grpc.keepalive_timeout_ms", int(keepalive.server_timeout * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", int(keepalive.server_min_interval * 1000)),
    ]


class Orderer:
    """A single-node ordering service for the channels in ``ledger`` and ``genesis_blocks``.

    ``clock`` (monotonic seconds) drives the batch timeouts; ``wall_clock`` (Unix seconds) checks certificate
    validity and seek timestamps. ``close_ledger`` makes ``stop`` close the ledger (``from_config`` sets it).
    """

    def __init__(
        self,
        signer: SigningIdentity,
        ledger: Ledger,
        *,
        genesis_blocks: Iterable[bytes] = (),
        listen_address: str = "127.0.0.1:0",
        tls: ServerTLS | None = None,
        max_recv_msg_size: int = 100 * MiB,
        max_send_msg_size: int = 100 * MiB,
        keepalive: OrdererKeepaliveConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        close_ledger: bool = False,
        stop_grace: float = 5.0,
        store_retry: float = STORE_RETRY,
        etcd: EtcdConsensusConfig | None = None,
    ) -> None:
        match = _HOST_PORT.fullmatch(listen_address)
        if match is None:
            raise OrdererError(f"listen address {listen_address!r} is not host:port")
        self._signer = signer
        self._ledger = ledger
        self._genesis_blocks = list(genesis_blocks)
        self._listen_address = listen_address
        self._host = match["v6"] or match["host"]
        self._tls = tls
        self._options = [
            # Without this, gRPC binds with SO_REUSEPORT and a second orderer on the same port starts silently.
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", max_recv_msg_size),
            ("grpc.max_send_message_length", max_send_msg_size),
            *_keepalive_options(keepalive or OrdererKeepaliveConfig()),
        ]
        self._clock = clock
        self._wall_clock = wall_clock
        self._close_ledger = close_ledger
        self._stop_grace = stop_grace
        self._store_retry = store_retry
        self.storage = StorageHealth(
            log,
            note=f"envelopes are answered SERVICE_UNAVAILABLE until it stores (blocks retried every {store_retry:g}s)",
        )
        """What the ledger refuses to store (disk full...): ``storage.problem()``, logged at most once a minute."""
        self._channels: dict[str, _Channel] = {}
        self._new_genesis: dict[str, bytes] = {}
        self._mcs: X509CryptoService | None = None
        self._server: grpc.aio.Server | None = None
        self._port: int | None = None
        self._timer: asyncio.Task[None] | None = None
        self._timer_wakeup: asyncio.Event | None = None
        self._stopping: asyncio.Event | None = None
        self._stopped = False
        self._to_persist: list[tuple[_Channel, bytes, asyncio.Future[ab_pb2.BroadcastResponse]]] = []
        self._persist_wakeup: asyncio.Event | None = None
        self._persister: asyncio.Task[None] | None = None
        self._persist_done = False
        self._etcd_config = etcd
        self.etcd: EtcdOrdering | None = None
        """With ``Consensus.Type: etcd``, the etcd side (its ``status(channel)``: cutter, queue, heights)."""

    @classmethod
    def from_config(cls, config: OrdererConfig) -> Orderer:
        """An orderer as orderer.yaml describes it; OrdererError names the setting that does not work."""
        general = config.general
        try:
            signer = load_signing_identity(Path(general.local_msp_dir), general.local_msp_id)
        except (CryptoError, OSError) as exc:
            raise OrdererError(f"General.LocalMSPDir: {exc}") from None
        genesis: list[bytes] = []
        for path in config.channels:
            try:
                genesis.append(load_block(path))
            except ChannelConfigError as exc:
                raise OrdererError(f"Channels: {exc}") from None
        tls = None
        if general.tls.enabled:
            tls = ServerTLS.from_files(
                general.tls.certificate,
                general.tls.private_key,
                general.tls.client_root_cas,
                client_auth_required=general.tls.client_auth_required,
            )
        try:
            ledger = Ledger(config.file_ledger.ledger_path)
        except LedgerStorageError as exc:
            raise OrdererError(f"FileLedger.Location: {exc}; {_FREE_SPACE}") from None
        except (LedgerError, OSError) as exc:
            raise OrdererError(f"FileLedger.Location: {exc}") from None
        return cls(
            signer,
            ledger,
            genesis_blocks=genesis,
            listen_address=general.listen_address,
            tls=tls,
            max_recv_msg_size=general.max_recv_msg_size,
            max_send_msg_size=general.max_send_msg_size,
            keepalive=general.keepalive,
            close_ledger=True,
            etcd=config.consensus.etcd if config.consensus.type == "etcd" else None,
        )

    # ----------------------------------------------------------------------------------------------
    # Public state

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the orderer has not started")
        return self._port

    @property
    def address(self) -> str:
        """host:port to dial: the bound port, with a wildcard listen host replaced by the loopback address."""
        host = self._host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        return f"{host}:{self.port}"

    @property
    def channels(self) -> list[str]:
        return sorted(self._channels)

    def channel_config(self, channel: str) -> ChannelConfig:
        return self._channels[channel].config

    def height(self, channel: str) -> int:
        return self._ledger.height(channel)

    @property
    def ledger(self) -> Ledger:
        return self._ledger

    # ----------------------------------------------------------------------------------------------
    # Lifecycle

    async def __aenter__(self) -> Orderer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Load the channels, bind and serve; OrdererError when any of it fails (nothing is left running)."""
        if self._server is not None or self._stopped:
            raise RuntimeError("an Orderer starts once")
        server: grpc.aio.Server | None = None
        ledger_path = Path(self._ledger.path)
        self._lock = DirectoryLock(ledger_path.parent, "rumor orderer", name=f"{ledger_path.name}.lock")
        try:
            self._lock.acquire()
        except (DirectoryLocked, OSError) as exc:
            self._stopped = True
            if self._close_ledger:
                self._ledger.close()
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise OrdererError(f"FileLedger.Location: disk full at {ledger_path.parent}; {_FREE_SPACE}") from None
            raise OrdererError(f"FileLedger.Location: {exc}") from None
        try:
            try:
                # An orderer that cannot write would answer every envelope SERVICE_UNAVAILABLE: an operator
                # starting it on a full disk learns it here, in one line.
                self._ledger.probe()
            except LedgerStorageError as exc:
                raise OrdererError(f"FileLedger.Location: {exc}; {_FREE_SPACE}") from None
            self._load_channels()
            self._stopping = asyncio.Event()
            self._timer_wakeup = asyncio.Event()
            server = grpc.aio.server(options=self._options)
            server.add_generic_rpc_handlers((self._handlers(),))
            try:
                if self._tls is not None:
                    port = server.add_secure_port(self._listen_address, self._tls.credentials())
                else:
                    port = server.add_insecure_port(self._listen_address)
            except RuntimeError:
                raise OrdererError(
                    f"cannot listen on {self._listen_address}: the address is in use or not available"
                ) from None
            # Only once the port is ours does the ledger change: a start that fails leaves it as it was.
            self._create_channels()
            await server.start()
        except BaseException:
            self._stopped = True
            if server is not None:
                await server.stop(None)
            if self._close_ledger:
                self._ledger.close()
            self._lock.release()
            raise
        self._server, self._port = server, port
        if self._etcd_config is not None:
            self.etcd = self._new_etcd(self._etcd_config)
            for channel in self._channels.values():
                self.etcd.add_channel(channel.name, channel.cutter.settings)
            await self.etcd.start()
        now = self._clock()
        for channel in self._channels.values() if self.etcd is None else ():
            # Envelopes acknowledged before a crash and in no block yet are cut first, in their order.
            recovered = self._ledger.pending(channel.name)
            for seq, raw in recovered:
                self._cut(channel, raw, seq, now)
            if recovered:
                log.info(
                    "channel %s: %d acknowledged envelopes recovered from the pending queue",
                    channel.name,
                    len(recovered),
                )
            channel.writer = asyncio.create_task(self._write_blocks(channel), name=f"orderer-writer-{channel.name}")
        self._persist_wakeup = asyncio.Event()
        self._persister = asyncio.create_task(self._persist(), name="orderer-persist")
        self._timer = asyncio.create_task(self._run_timer(), name="orderer-timer")
        log.info(
            "orderer %s listening on %s (%s, %s), channels: %s",
            self._signer.mspid,
            self.address,
            "TLS" if self._tls else "plaintext",
            "solo" if self.etcd is None else f"etcd node {self.etcd.node_id} on {','.join(self.etcd.client.endpoints)}",
            ", ".join(f"{name} (height {self.height(name)})" for name in self.channels),
        )

    async def stop(self, grace: float | None = None) -> None:
        """Stop serving, commit what was accepted, and return once no task of the orderer is left."""
        if self._server is None or self._stopping is None or self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        for channel in self._channels.values():
            channel.notify()
        await self._server.stop(self._stop_grace if grace is None else grace)
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
        if self._persister is not None:
            # envelopes being stored finish (and get their answers) before the last cut
            self._persist_done = True
            assert self._persist_wakeup is not None
            self._persist_wakeup.set()
            with contextlib.suppress(asyncio.CancelledError):
                await self._persister
        if self.etcd is not None:
            # what was acknowledged is in etcd: the next cutter (or this node's next start) cuts it
            await self.etcd.stop()
        for channel in self._channels.values() if self.etcd is None else ():
            rest = channel.cutter.cut()
            if rest:
                channel.queue.put_nowait(self._batch(channel, rest))
            channel.queue.put_nowait(None)
        await asyncio.gather(*(c.writer for c in self._channels.values() if c.writer is not None))
        if self._close_ledger:
            self._ledger.close()
        self._lock.release()
        log.info("orderer stopped")

    # ----------------------------------------------------------------------------------------------
    # Channels

    def _load_channels(self) -> None:
        configs: dict[str, ChannelConfig] = {}
        new_genesis: dict[str, bytes] = {}
        for raw in self._genesis_blocks:
            try:
                config = read_genesis(raw)
            except ChannelConfigError as exc:
                raise OrdererError(f"genesis block: {exc}") from None
            name = config.name
            if name in configs:
                raise OrdererError(f"channel {name}: more than one genesis block given")
            configs[name] = config
            existing = self._ledger.get_block(name, 0)
            if existing is None:
                new_genesis[name] = raw
            elif block_header_hash(decode_block(existing).header) != block_header_hash(decode_block(raw).header):
                raise OrdererError(
                    f"channel {name}: the genesis block given differs from block 0 in the ledger {self._ledger.path}"
                )
        for name in self._ledger.channels():
            if name not in configs:
                try:
                    configs[name] = latest_config(self._ledger, name)
                except ChannelConfigError as exc:
                    raise OrdererError(f"channel {name} in ledger {self._ledger.path}: {exc}") from None
        if not configs:
            raise OrdererError("no channels: give the genesis block of at least one channel (Channels in orderer.yaml)")
        try:
            registry = org_registry(configs.values(), now=self._wall_clock)
        except ChannelConfigError as exc:
            raise OrdererError(str(exc)) from None
        try:
            registry.validate(self._signer.identity)
        except InvalidIdentity as exc:
            raise OrdererError(f"the orderer's own identity is not valid in its channels: {exc}") from None
        for name, config in configs.items():
            orderer_orgs = frozenset(o.mspid for o in config.orderer_orgs)
            if self._signer.mspid not in orderer_orgs:
                raise OrdererError(
                    f"channel {name}: the orderer's MSP ID {self._signer.mspid} is not one of its orderer orgs "
                    f"{sorted(orderer_orgs)}"
                )
        self._new_genesis = new_genesis
        self._mcs = X509CryptoService(self._signer, registry)
        for name, config in sorted(configs.items()):
            self._mcs.register_channel_config(config)
            self._channels[name] = _Channel(
                name=name,
                config=config,
                cutter=BlockCutter(BatchSettings.from_config(config.batch)),
                last_config=self._last_config(name),
            )

    def _create_channels(self) -> None:
        for name, raw in self._new_genesis.items():
            try:
                self._ledger.commit(name, raw)
            except LedgerStorageError as exc:
                raise OrdererError(f"{exc}; {_FREE_SPACE}") from None
            except LedgerError as exc:
                raise OrdererError(str(exc)) from None
            log.info("channel %s created from its genesis block", name)
        self._new_genesis = {}

    def _last_config(self, channel: str) -> int:
        height = self._ledger.height(channel)
        if height == 0:
            return 0
        raw = self._ledger.get_block(channel, height - 1)
        index = last_config_index(decode_block(raw)) if raw is not None else None
        return index if index is not None and index < height else 0

    async def _write_blocks(self, channel: _Channel) -> None:
        held: list[tuple[list[bytes], int]] = []  # batches cut, not stored yet: the ledger refused them
        done = False
        while not done:
            batches: list[tuple[list[bytes], int] | None] = []
            if held:
                # Retry at a bounded rate, whatever arrives meanwhile; the stop signal ends the wait.
                deadline = asyncio.get_running_loop().time() + self._store_retry
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(deadline):
                        while (item := await channel.queue.get()) is not None:
                            batches.append(item)
                        batches.append(None)
            else:
                batches.append(await channel.queue.get())
            while not channel.queue.empty():
                batches.append(channel.queue.get_nowait())
            done = None in batches
            todo = held + [b for b in batches if b is not None and b[0]]
            held = []
            if todo and channel.failure is None:
                held = await self._store(channel, todo, last=done)

    async def _store(
        self, channel: _Channel, batches: list[tuple[list[bytes], int]], *, last: bool
    ) -> list[tuple[list[bytes], int]]:
        """Commit ``batches``; those to try again when the ledger could not store them (none when ``last``)."""
        try:
            await self._commit(channel, batches)
        except LedgerStorageError as exc:
            channel.store_problem = str(exc)
            self.storage.failed(channel.name, channel.store_problem, self._clock())
            if last:
                # Stopping: their envelopes are durable in the pending queue, and the next start cuts them first.
                log.error(
                    "channel %s: %d envelopes stay in the pending queue, to be ordered at the next start",
                    channel.name,
                    sum(len(b) for b, _ in batches),
                )
                return []
            return batches
        except Exception as exc:  # the chain can no longer be extended safely; stop taking envelopes
            channel.failure = f"channel {channel.name}: cannot commit blocks: {exc}"
            log.exception("channel %s: cannot commit blocks; refusing further envelopes", channel.name)
            return []
        if channel.store_problem is not None:
            channel.store_problem = None
            self.storage.stored(channel.name)
        return []

    def _make_block(self, channel: _Channel, number: int, previous: bytes, batch: list[bytes]) -> common_pb2.Block:
        block = new_block(number, previous, batch)
        # Fabric v2's metadata: the signed OrdererBlockMetadata names the newest config block, and the
        # LAST_CONFIG slot repeats it unsigned for older readers; TRANSACTIONS_FILTER is the committer's.
        sign_block(block, self._signer, value=orderer_block_metadata(channel.last_config))
        block.metadata.metadata[LAST_CONFIG_INDEX] = common_pb2.Metadata(
            value=common_pb2.LastConfig(index=channel.last_config).SerializeToString(deterministic=True)
        ).SerializeToString(deterministic=True)
        return block

    async def _commit(self, channel: _Channel, batches: list[tuple[list[bytes], int]]) -> None:
        number = self._ledger.height(channel.name)
        previous = self._ledger.last_hash(channel.name)
        raws: list[bytes] = []
        consumed = max(seq for _, seq in batches)
        for batch, _ in batches:
            block = self._make_block(channel, number, previous, batch)
            raws.append(block.SerializeToString(deterministic=True))
            previous = block_header_hash(block.header)
            number += 1
        # Several batches queued up behind one fsync are written in one transaction, which also takes their
        # envelopes off the pending queue.
        await asyncio.to_thread(self._ledger.commit_many, channel.name, raws, consumed_through=consumed)
        channel.notify()
        log.debug(
            "channel %s: committed blocks %d..%d (%d envelopes)",
            channel.name,
            number - len(raws),
            number - 1,
            sum(len(b) for b in batches),
        )

    async def _run_timer(self) -> None:
        assert self._timer_wakeup is not None
        while True:
            now = self._clock()
            earliest: float | None = None
            for channel in self._channels.values():
                for batch in channel.cutter.on_tick(now):
                    channel.queue.put_nowait(self._batch(channel, batch))
                deadline = channel.cutter.deadline
                if deadline is not None and (earliest is None or deadline < earliest):
                    earliest = deadline
            self._timer_wakeup.clear()
            timeout = None if earliest is None else max(0.0, earliest - self._clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._timer_wakeup.wait(), timeout)

    # ----------------------------------------------------------------------------------------------
    # RPCs

    def _handlers(self) -> grpc.GenericRpcHandler:
        # Requests arrive as raw bytes so that an envelope which does not decode gets a BAD_REQUEST answer
        # instead of a gRPC-level error.
        return grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {
                "Broadcast": grpc.stream_stream_rpc_method_handler(
                    self._broadcast, response_serializer=ab_pb2.BroadcastResponse.SerializeToString
                ),
                "Deliver": grpc.stream_stream_rpc_method_handler(self._deliver),
            },
        )

    async def _until_stopped(self, requests: AsyncIterator[_T]) -> AsyncIterator[_T]:
        """The requests of a stream, ending early when the orderer stops."""
        assert self._stopping is not None
        stop = asyncio.ensure_future(self._stopping.wait())
        read: asyncio.Future[_T] | None = None
        try:
            while True:
                read = asyncio.ensure_future(anext(requests))
                await asyncio.wait({read, stop}, return_when=asyncio.FIRST_COMPLETED)
                if not read.done():
                    return
                try:
                    item = read.result()
                except StopAsyncIteration:
                    return
                read = None
                yield item
        finally:
            stop.cancel()
            if read is not None:
                # The read may have finished (the client hung up) just as this stream was cancelled; awaiting it
                # here collects its outcome either way, so asyncio has no unretrieved exception to complain of.
                read.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration, Exception):
                    await read

    async def _broadcast(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[ab_pb2.BroadcastResponse]:
        """Answer each envelope in order; SUCCESS only once it is durable in the pending queue.

        A reader takes envelopes ahead (at most ``_IN_FLIGHT`` per stream) so that a pipelining client's burst
        shares one fsync; the answers follow in the order the envelopes came.
        """
        answers: asyncio.Queue[asyncio.Future[ab_pb2.BroadcastResponse] | None] = asyncio.Queue(_IN_FLIGHT)

        async def read() -> None:
            try:
                async for raw in self._until_stopped(requests):
                    await answers.put(self._admit(raw))
            finally:
                await answers.put(None)

        reader = asyncio.ensure_future(read())
        try:
            while (answer := await answers.get()) is not None:
                reply = await answer
                if reply.status != Status.SUCCESS:
                    log.debug("broadcast refused: %s: %s", _status_name(reply.status), reply.info)
                yield reply
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    def _admit(self, raw: bytes) -> asyncio.Future[ab_pb2.BroadcastResponse]:
        """The answer to one envelope: at once when it is refused, after the group commit when it is taken."""
        answer: asyncio.Future[ab_pb2.BroadcastResponse] = asyncio.get_running_loop().create_future()
        try:
            reply = self._check(raw)
        except Exception:
            log.exception("broadcast: unexpected error")
            reply = _broadcast_reply(Status.INTERNAL_SERVER_ERROR, "internal error in the orderer")
        if isinstance(reply, _Channel):
            self._to_persist.append((reply, raw, answer))
            assert self._persist_wakeup is not None
            self._persist_wakeup.set()
        else:
            answer.set_result(reply)
        return answer

    async def _persist(self) -> None:
        """Group commit: every envelope taken since the last round goes to the pending queue in one transaction,
        then into the cutters, then each waiting stream hears SUCCESS."""
        assert self._persist_wakeup is not None and self._timer_wakeup is not None
        while True:
            if not self._to_persist:
                if self._persist_done:
                    return
                await self._persist_wakeup.wait()
                self._persist_wakeup.clear()
                continue
            items, self._to_persist = self._to_persist, []
            if self.etcd is not None:
                await self._persist_etcd(items)
                continue
            try:
                seqs = await asyncio.to_thread(self._ledger.add_pending, [(c.name, raw) for c, raw, _ in items])
            except Exception as exc:  # nothing was stored: every envelope of the round is refused, none lost
                if isinstance(exc, LedgerStorageError):
                    self.storage.failed(_PENDING, str(exc), self._clock())  # logged at most once a minute
                else:
                    log.error("cannot store %d envelopes: %s", len(items), exc)
                for _, _, answer in items:
                    if not answer.done():
                        answer.set_result(_broadcast_reply(Status.SERVICE_UNAVAILABLE, f"{exc}; try again later"))
                continue
            self.storage.stored(_PENDING)
            now = self._clock()
            rearm = False
            for (channel, raw, answer), seq in zip(items, seqs, strict=True):
                rearm |= self._cut(channel, raw, seq, now)
                if not answer.done():
                    answer.set_result(_broadcast_reply(Status.SUCCESS))
            if rearm:
                self._timer_wakeup.set()

    async def _persist_etcd(self, items: list[_Admitted]) -> None:
        """SUCCESS once etcd committed the envelope to the channel's queue; SERVICE_UNAVAILABLE when it did not
        answer (the envelope may then be ordered all the same: the client cannot tell, as with any timeout)."""
        assert self.etcd is not None
        results = await self.etcd.append([(c.name, raw) for c, raw, _ in items])
        for (_, _, answer), problem in zip(items, results, strict=True):
            if answer.done():
                continue
            if problem is None:
                answer.set_result(_broadcast_reply(Status.SUCCESS))
            else:
                answer.set_result(_broadcast_reply(Status.SERVICE_UNAVAILABLE, f"{problem}; try again later"))

    def _new_etcd(self, config: EtcdConsensusConfig) -> EtcdOrdering:
        tls = None
        if config.tls.enabled:
            try:
                tls = EtcdTLS(
                    b"".join(_read(p, "etcd CA") for p in config.tls.root_cas),
                    _read(config.tls.certificate, "etcd client certificate") if config.tls.certificate else None,
                    _read(config.tls.private_key, "etcd client key") if config.tls.private_key else None,
                )
            except OrdererError as exc:
                raise OrdererError(f"Consensus.Etcd.TLS: {exc}") from None
        client = EtcdClient(
            config.endpoints,
            tls=tls,
            request_timeout=config.request_timeout,
            max_message_bytes=max(64 * MiB, 2 * config.max_request_bytes),
        )
        node_id = config.node_id or f"{socket.gethostname()}:{self.port}"
        return EtcdOrdering(
            client,
            self._ledger,
            node_id=node_id,
            key_prefix=config.key_prefix,
            lease_ttl=config.lease_ttl,
            max_request_bytes=config.max_request_bytes,
            max_txn_ops=config.max_txn_ops,
            max_queue_bytes=config.max_queue_bytes,
            retain_bytes=config.retain_bytes,
            make_block=lambda name, number, previous, batch: self._make_block(
                self._channels[name], number, previous, batch
            ),
            committed=lambda name: self._channels[name].notify(),
            clock=self._clock,
        )

    def _cut(self, channel: _Channel, raw: bytes, seq: int, now: float) -> bool:
        """Give a durable envelope to the channel's cutter; whether its batch deadline changed."""
        armed = channel.cutter.deadline
        channel.seqs.append(seq)
        for batch in channel.cutter.ordered(raw, now):
            channel.queue.put_nowait(self._batch(channel, batch))
        return channel.cutter.deadline != armed

    def _batch(self, channel: _Channel, batch: list[bytes]) -> tuple[list[bytes], int]:
        last = 0
        for _ in batch:
            last = channel.seqs.popleft()
        return batch, last

    def _check(self, raw: bytes) -> ab_pb2.BroadcastResponse | _Channel:
        """The channel an envelope may be ordered on, or the reply refusing it."""
        assert self._stopping is not None
        if self._stopping.is_set():
            return _broadcast_reply(Status.SERVICE_UNAVAILABLE, "the orderer is shutting down")
        try:
            opened = open_envelope(raw)
        except EnvelopeError as exc:
            return _broadcast_reply(Status.BAD_REQUEST, str(exc))
        header_type = opened.channel_header.type
        if header_type in _NOT_ORDERABLE:
            return _broadcast_reply(Status.BAD_REQUEST, _NOT_ORDERABLE[header_type])
        if not opened.channel_id:
            return _broadcast_reply(Status.BAD_REQUEST, "the channel header names no channel")
        channel = self._channels.get(opened.channel_id)
        if channel is None:
            return _broadcast_reply(Status.NOT_FOUND, f"channel {opened.channel_id!r} does not exist on this orderer")
        if channel.failure is not None:
            return _broadcast_reply(Status.SERVICE_UNAVAILABLE, channel.failure)
        if channel.store_problem is not None:
            # The blocks already accepted wait for space: more would only pile up in memory.
            return _broadcast_reply(Status.SERVICE_UNAVAILABLE, f"{channel.store_problem}; try again later")
        try:
            channel.cutter.check_size(raw)
        except EnvelopeTooLarge as exc:
            return _broadcast_reply(Status.REQUEST_ENTITY_TOO_LARGE, str(exc))
        if self.etcd is not None:
            if len(raw) > self.etcd.max_envelope_bytes():
                return _broadcast_reply(
                    Status.REQUEST_ENTITY_TOO_LARGE,
                    f"envelope of {len(raw)} bytes does not fit one etcd request "
                    f"(Consensus.Etcd.MaxRequestBytes {self.etcd.max_envelope_bytes() + TXN_OVERHEAD})",
                )
            problem = self.etcd.status(channel.name).problem
            if problem is not None:
                return _broadcast_reply(Status.SERVICE_UNAVAILABLE, problem)
            try:
                self.etcd.check_room(channel.name)
            except QueueFull as exc:
                return _broadcast_reply(Status.SERVICE_UNAVAILABLE, str(exc))
        problem = self._authorize(opened, channel, CHANNEL_WRITERS)
        if problem is not None:
            return _broadcast_reply(Status.FORBIDDEN, problem)
        return channel

    def _authorize(self, opened: OpenedEnvelope, channel: _Channel, policy: str) -> str | None:
        """Why the envelope's creator does not satisfy the channel's ``policy``, or None when it does.

        The cheap checks come first (the creator decodes, its org is in the channel); the policy then validates
        the identity and verifies the signature only for a principal it could satisfy.
        """
        assert self._mcs is not None
        try:
            mspid, _ = decode_identity(opened.creator)
        except InvalidIdentity as exc:
            return f"creator: {exc}"
        if channel.config.org(mspid) is None:
            return f"{mspid} is not an org of channel {channel.name}"
        try:
            self._mcs.validate_identity(opened.creator)
        except InvalidIdentity as exc:
            return f"creator's identity is not valid: {exc}"
        try:
            channel.config.policies.evaluate(policy, [opened.signed_data()], self._mcs.resolver(channel.name))
        except PolicyError as exc:
            return f"{exc} (or the envelope signature is invalid)"
        return None

    async def _deliver(self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        async for raw in self._until_stopped(requests):
            try:
                async for reply in self._serve_seek(raw, context):
                    yield reply
            except (asyncio.CancelledError, GeneratorExit):
                raise
            except Exception:
                log.exception("deliver: unexpected error")
                yield _status_reply(Status.INTERNAL_SERVER_ERROR)
                return

    def _resolve(self, position: ab_pb2.SeekPosition, height: int, what: str) -> int | str:
        kind = position.WhichOneof("Type")
        if kind == "oldest":
            return 0
        if kind == "newest":
            return height - 1
        if kind == "specified":
            return position.specified.number
        if kind == "next_commit":
            return height
        return f"seek {what} position is not set"

    async def _serve_seek(self, raw: bytes, context: grpc.aio.ServicerContext | None = None) -> AsyncIterator[bytes]:
        assert self._stopping is not None and self._mcs is not None

        def refuse(status: int, info: str, level: int = logging.INFO) -> bytes:
            # DeliverResponse has no room for a reason, so the log is the only place it shows.
            log.log(level, "deliver refused: %s: %s", _status_name(status), info)
            return _status_reply(status)

        try:
            opened = open_envelope(raw)
        except EnvelopeError as exc:
            yield refuse(Status.BAD_REQUEST, str(exc))
            return
        if opened.channel_header.type != common_pb2.DELIVER_SEEK_INFO:
            yield refuse(Status.BAD_REQUEST, f"header type {opened.channel_header.type}, expected DELIVER_SEEK_INFO")
            return
        channel = self._channels.get(opened.channel_id)
        if channel is None:
            yield refuse(Status.NOT_FOUND, f"channel {opened.channel_id!r} does not exist")
            return
        problem = self._authorize(opened, channel, CHANNEL_READERS)
        if problem is not None:
            yield refuse(Status.FORBIDDEN, problem)
            return
        problem = _tls_binding_problem(opened, context)
        if problem is not None:
            yield refuse(Status.FORBIDDEN, problem)
            return
        stamp = opened.channel_header.timestamp.ToNanoseconds() / 1e9
        if abs(stamp - self._wall_clock()) > SEEK_TIME_WINDOW:
            yield refuse(Status.BAD_REQUEST, "seek request timestamp is more than 15 minutes from the orderer's clock")
            return
        seek = ab_pb2.SeekInfo()
        try:
            seek.ParseFromString(opened.payload.data)
        except (DecodeError, ValueError, TypeError) as exc:
            yield refuse(Status.BAD_REQUEST, f"seek info does not decode: {exc}")
            return
        height = self._ledger.height(channel.name)
        start = self._resolve(seek.start, height, "start")
        stop = self._resolve(seek.stop, height, "stop")
        if isinstance(start, str) or isinstance(stop, str):
            yield refuse(Status.BAD_REQUEST, start if isinstance(start, str) else str(stop))
            return
        if start > stop:
            yield refuse(Status.BAD_REQUEST, f"seek start {start} is after its stop {stop}")
            return
        header_only = seek.content_type == ab_pb2.SeekInfo.HEADER_WITH_SIG
        fail_if_not_ready = seek.behavior == ab_pb2.SeekInfo.FAIL_IF_NOT_READY
        expiry = self._mcs.expiration(opened.creator)
        log.debug("deliver %s: blocks %d..%d", channel.name, start, stop)

        number = start
        while number <= stop:
            if self._stopping.is_set():
                yield refuse(Status.SERVICE_UNAVAILABLE, "the orderer is shutting down", logging.DEBUG)
                return
            if expiry is not None and self._wall_clock() >= expiry:
                yield refuse(Status.FORBIDDEN, "the requester's certificate has expired")
                return
            changed = channel.changed
            height = self._ledger.height(channel.name)
            if number < height:
                last = min(stop, height - 1, number + _READ_BATCH - 1)
                blocks = await asyncio.to_thread(self._ledger.get_blocks, channel.name, number, last)
                if not blocks:
                    yield refuse(Status.INTERNAL_SERVER_ERROR, f"block {number} is missing from the ledger")
                    return
                for block in blocks:
                    yield _block_reply(block, header_only)
                number += len(blocks)
                continue
            if fail_if_not_ready:
                yield refuse(Status.NOT_FOUND, f"block {number} is not available yet (height {height})", logging.DEBUG)
                return
            await changed.wait()
        yield _status_reply(Status.SUCCESS)
