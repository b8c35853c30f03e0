"""``Comm``: the network shell of a peer. gRPC server and dialer, handshake, connection store, fan-out.

Accepting (the gossip.Gossip service on a grpc.aio server):

    GossipStream opened -> send our ConnEstablish -> read theirs (connTimeout) -> verify
        -> probe? close. else register and serve the stream until it ends.

Dialing (when ``send`` finds no connection, or on ``connect``/``handshake``):

    [TLS: learn and pin the server certificate, see tls.py] -> channel ready (dialTimeout)
        -> Ping (connTimeout) -> open GossipStream -> send our ConnEstablish -> read theirs -> verify
        -> an unexpected PKI-ID is accepted only from the same org (an identity renewal) -> register.

Connection store: one connection per PKI-ID. A newer connection replaces an older
one, except when the two were established within ``duplicate_window`` of each other
in opposite directions: that is two peers dialing each other at once, and both
keep the connection dialed by the peer with the lower PKI-ID, so they agree without
talking. Frames queued on the loser move to the winner; the loser is retired: it takes
no new frames but keeps reading for ``duplicate_window`` (what the remote wrote on it
before switching still arrives), then closes without a presumed-dead report.

Sending never waits: a frame goes to the connection's bounded queue (or to the
pending dial's), and is dropped and counted when that is full. Receiving: each
frame is size-checked, decoded and tag-checked (a bad one is counted and dropped,
and a connection producing too many is closed); acks complete ``send_with_ack``
waiters; everything else becomes a ``ReceivedMessage`` offered to every matching
subscription without waiting. A connection that ends for a reason we did not cause
(EOF, error) reports its peer on ``presumed_dead`` after a short grace, unless a new
connection to that peer has appeared by then; so does a dial that fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc import aio

from rumor.comm import tls as tlsmod
from rumor.comm.config import CommConfig
from rumor.comm.connection import (
    ClientStream,
    Connection,
    Ending,
    EndReason,
    ServerStream,
    StreamBroken,
    describe_rpc_error,
)
from rumor.comm.feed import Feed, Subscription
from rumor.comm.handshake import (
    CommError,
    ConnectionInfo,
    HandshakeError,
    UnreachableError,
    VerifiedConn,
    certificate_hash,
    conn_establish_envelope,
    first_certificate_der,
    verify_conn_establish,
)
from rumor.core.types import NullTracer, ReceivedMessage, RemotePeer, Tracer
from rumor.crypto.api import CryptoError, MessageCryptoService, SecurityAdvisor
from rumor.wire import messages
from rumor.wire.pb.gossip import message_pb2 as pb

log = logging.getLogger("rumor.comm")

SERVICE = "gossip.Gossip"
GOSSIP_STREAM = f"/{SERVICE}/GossipStream"
PING = f"/{SERVICE}/Ping"
PRESUMED_DEAD_BUFFER = 1000


@dataclass
class CommMetrics:
    """Counters of one Comm. ``as_dict`` gives the Fabric metric names for the ones Fabric has."""

    messages_sent: int = 0
    messages_received: int = 0
    overflow_count: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    handshakes_failed: int = 0
    write_timeouts: int = 0
    """Connections ended because a write outlasted writeTimeout (a peer that stopped reading)."""
    dropped: Counter[str] = field(default_factory=Counter)
    """Outgoing messages dropped, by reason (overflow, unreachable, oversized, closed, stopped)."""
    invalid_frames: Counter[str] = field(default_factory=Counter)
    """Incoming frames rejected, by reason (oversized, undecodable, invalid, unexpected)."""
    subscriber_drops: Counter[str] = field(default_factory=Counter)
    """Received messages a full subscription could not take, by message kind."""

    def as_dict(self) -> dict[str, int]:
        return {
            "comm_messages_sent": self.messages_sent,
            "comm_messages_received": self.messages_received,
            "comm_overflow_count": self.overflow_count,
            "comm_bytes_sent": self.bytes_sent,
            "comm_bytes_received": self.bytes_received,
            "comm_handshakes_failed": self.handshakes_failed,
            "comm_write_timeouts": self.write_timeouts,
            "comm_invalid_frames": sum(self.invalid_frames.values()),
            "comm_subscriber_drops": sum(self.subscriber_drops.values()),
        }


@dataclass(frozen=True)
class AckResults:
    """Outcome of ``send_with_ack``, per peer."""

    acked: tuple[bytes, ...]
    failed: dict[bytes, str]
    """Peers that answered with an error, could not be sent to, or did not answer within the timeout."""
    unanswered: tuple[bytes, ...] = ()
    """Peers still silent when ``min_ack`` acknowledgements had arrived (not waited for, not failures)."""

    @property
    def ack_count(self) -> int:
        return len(self.acked)

    @property
    def nack_count(self) -> int:
        return len(self.failed)


@dataclass
class _PendingDial:
    peer: RemotePeer
    frames: deque[bytes]
    task: asyncio.Task[Connection | CommError] | None = None


def _random_nonce() -> int:
    return secrets.randbits(64) or 1


def _peer_address(peer: str) -> str:
    """'ipv4:127.0.0.1:5000' -> '127.0.0.1:5000'; 'ipv6:[::1]:5000' -> '[::1]:5000'."""
    for prefix in ("ipv4:", "ipv6:"):
        if peer.startswith(prefix):
            return peer[len(prefix) :]
    return peer


def _short(pki_id: bytes) -> str:
    return pki_id.hex()[:16]


class Comm:
    """The comm layer of one peer. Create, ``await start()``, use, ``await stop()``.

    ``mcs`` validates identities and checks signatures, ``advisor`` names their orgs;
    ``identity`` is this peer's serialized identity (its PKI-ID follows from it).
    ``identity_of`` (optional) looks up the identity of a PKI-ID known to membership;
    it decides whether a peer that shows up with a new PKI-ID renewed its identity
    within its org. Every method must be called from the event loop that started it.
    """

    def __init__(
        self,
        config: CommConfig,
        mcs: MessageCryptoService,
        advisor: SecurityAdvisor,
        identity: bytes,
        *,
        tracer: Tracer | None = None,
        identity_of: Callable[[bytes], bytes | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.metrics = CommMetrics()
        self._mcs = mcs
        self._advisor = advisor
        self.identity = identity
        self.pki_id = mcs.pki_id_of(identity)
        self._tracer: Tracer = tracer if tracer is not None else NullTracer()
        self._identity_lookup = identity_of
        self._clock = clock
        self._known_identities: dict[bytes, bytes] = {}
        self._conns: dict[bytes, Connection] = {}
        self._live: set[Connection] = set()
        self._pending: dict[bytes, _PendingDial] = {}
        self._ack_waiters: dict[bytes, dict[int, asyncio.Future[str]]] = {}
        self._subscriptions: list[Subscription[ReceivedMessage]] = []
        self._dead_feeds: list[Feed[bytes]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._timers: set[asyncio.TimerHandle] = set()
        self._server: aio.Server | None = None
        self._ssl_context: Any = None
        self._dial_frame = b""
        self._probe_frame = b""
        self._accept_frame = b""
        self._started = False
        self._stopping = False
        self.port = 0

    # --- lifecycle -------------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """host:port the server listens on (the real port when the config asked for port 0)."""
        host = tlsmod.split_endpoint(self.config.listen_address)[0]
        if host in ("", "0.0.0.0", "::"):
            host = "127.0.0.1"
        return f"{host}:{self.port}"

    async def start(self) -> None:
        """Bind the server and start accepting connections."""
        if self._started:
            raise CommError("comm already started")
        cfg = self.config
        if cfg.tls is not None:
            self._ssl_context = tlsmod.client_ssl_context(cfg.tls)
            dial_hash = tlsmod.own_client_cert_hash(cfg.tls)
            accept_hash = tlsmod.own_server_cert_hash(cfg.tls)
        else:
            dial_hash = accept_hash = b""
        sign = self._mcs.sign
        self._dial_frame = conn_establish_envelope(self.pki_id, self.identity, dial_hash, sign).SerializeToString()
        self._probe_frame = conn_establish_envelope(
            self.pki_id, self.identity, dial_hash, sign, probe=True
        ).SerializeToString()
        self._accept_frame = conn_establish_envelope(self.pki_id, self.identity, accept_hash, sign).SerializeToString()

        server = aio.server(options=self._server_options())
        handlers = {
            "GossipStream": grpc.stream_stream_rpc_method_handler(self._serve_stream),
            "Ping": grpc.unary_unary_rpc_method_handler(
                self._serve_ping,
                request_deserializer=pb.Empty.FromString,
                response_serializer=pb.Empty.SerializeToString,
            ),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        try:
            if cfg.tls is not None:
                self.port = server.add_secure_port(cfg.listen_address, tlsmod.server_credentials(cfg.tls))
            else:
                self.port = server.add_insecure_port(cfg.listen_address)
        except RuntimeError as exc:
            problem = _bind_problem(cfg.listen_address) or str(exc)
            raise CommError(f"cannot listen on {cfg.listen_address}: {problem}") from None
        if self.port == 0:
            problem = _bind_problem(cfg.listen_address)
            raise CommError(f"cannot listen on {cfg.listen_address}" + (f": {problem}" if problem else ""))
        await server.start()
        self._server = server
        self._started = True
        log.info("comm of %s listening on %s (TLS %s)", _short(self.pki_id), self.endpoint, "on" if cfg.tls else "off")

    async def stop(self) -> None:
        """Stop accepting, close every connection, cancel dials, end feeds; return when all of it is done."""
        if not self._started or self._stopping:
            return
        self._stopping = True
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        for pending in list(self._pending.values()):
            if pending.task is not None:
                pending.task.cancel()
        for conn in list(self._live):
            conn.close(Ending(EndReason.CLOSED, "comm stopping"))
        for waiters in self._ack_waiters.values():
            for fut in waiters.values():
                if not fut.done():
                    fut.set_result("comm stopped")
        if self._server is not None:
            await self._server.stop(self.config.stop_grace)
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._handlers:
            # Handlers cancelled by the remote just before stop() may still be unwinding.
            await asyncio.wait(set(self._handlers), timeout=self.config.stop_grace + self.config.conn_timeout)
        for _ in range(3):
            await asyncio.sleep(0)  # let gRPC's own wrapper of each handler see it finish
        for sub in list(self._subscriptions):
            sub.close()
        for feed in list(self._dead_feeds):
            feed.close()
        self._server = None
        log.info("comm of %s stopped", _short(self.pki_id))

    async def __aenter__(self) -> Comm:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- public API -----------------------------------------------------------------------------

    def send(self, envelope: pb.Envelope, peers: Iterable[RemotePeer]) -> None:
        """Queue ``envelope`` for each peer, dialing those without a connection; never waits.

        A message that cannot be queued (full queue, comm stopped, too large) is dropped and counted.
        """
        frame = envelope.SerializeToString()
        for peer in peers:
            self._send_frame(peer, frame)

    async def send_with_ack(
        self,
        message: pb.GossipMessage,
        peers: Iterable[RemotePeer],
        min_ack: int,
        timeout: float,
        *,
        sign: bool | None = None,
    ) -> AckResults:
        """Send ``message`` with a fresh nonce (unless it has one) and wait for Acknowledgements.

        Returns once ``min_ack`` peers acknowledged, every peer answered or failed, or ``timeout`` passed.
        The message is signed when ``sign`` says so (by default: when its kind is signed on the wire).
        """
        targets = list({p.pki_id: p for p in peers}.values())
        msg = pb.GossipMessage()
        msg.CopyFrom(message)
        if msg.nonce == 0:
            msg.nonce = _random_nonce()
        nonce = msg.nonce
        if sign is None:
            sign = msg.WhichOneof("content") in messages.SIGNED_KINDS
        frame = messages.seal(msg, self._mcs.sign if sign else None).SerializeToString()
        loop = asyncio.get_running_loop()
        futures: dict[bytes, asyncio.Future[str]] = {}
        for peer in targets:
            fut: asyncio.Future[str] = loop.create_future()
            self._ack_waiters.setdefault(peer.pki_id, {})[nonce] = fut
            futures[peer.pki_id] = fut
        timed_out = False
        try:
            for peer in targets:
                error = self._send_frame(peer, frame)
                if error and not futures[peer.pki_id].done():
                    futures[peer.pki_id].set_result(error)
            deadline = loop.time() + timeout
            while True:
                acked = sum(1 for f in futures.values() if f.done() and f.result() == "")
                waiting = [f for f in futures.values() if not f.done()]
                if acked >= min_ack or not waiting:
                    break
                remaining = deadline - loop.time()
                if remaining <= 0:
                    timed_out = True
                    break
                await asyncio.wait(waiting, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pki_id in futures:
                waiters = self._ack_waiters.get(pki_id)
                if waiters is not None:
                    waiters.pop(nonce, None)
                    if not waiters:
                        del self._ack_waiters[pki_id]
        acked_ids: list[bytes] = []
        failed: dict[bytes, str] = {}
        unanswered: list[bytes] = []
        for pki_id, fut in futures.items():
            if fut.done():
                error = fut.result()
                if error:
                    failed[pki_id] = error
                else:
                    acked_ids.append(pki_id)
            elif timed_out:
                failed[pki_id] = f"no acknowledgement within {timeout:g}s"
            else:
                unanswered.append(pki_id)
        return AckResults(tuple(acked_ids), failed, tuple(unanswered))

    def ack(self, received: ReceivedMessage, error: str = "") -> bool:
        """Acknowledge ``received`` (by its nonce) to its sender, with ``error`` when it was refused."""
        frame = messages.seal(messages.ack(received.message.nonce, error)).SerializeToString()
        conn = self._conns.get(received.sender)
        if conn is None or conn.closing:
            self._count_drop(received.sender, "closed", len(frame))
            return False
        return conn.enqueue(frame)

    async def connect(self, peer: RemotePeer) -> ConnectionInfo:
        """Return the connection to ``peer``, dialing it if needed. Raises CommError when that fails."""
        conn = self._conns.get(peer.pki_id)
        if conn is not None and not conn.closing:
            return conn.info
        pending = self._pending_dial(peer)
        assert pending.task is not None
        result = await asyncio.shield(pending.task)
        if isinstance(result, CommError):
            raise result
        return result.info

    async def probe(self, endpoint: str) -> None:
        """Ping ``endpoint`` (connect within dialTimeout, Ping within connTimeout). Raises CommError."""
        self._check_running()
        cfg = self.config
        if cfg.tls is not None:
            channel = aio.secure_channel(endpoint, tlsmod.channel_credentials(cfg.tls), options=self._channel_options())
        else:
            channel = aio.insecure_channel(endpoint, options=self._channel_options())
        try:
            await self._wait_ready(channel)
            await self._ping(channel)
        finally:
            await channel.close()

    async def handshake(self, endpoint: str) -> ConnectionInfo:
        """Authenticate the peer at ``endpoint`` over a probe connection, close it, and say who it is."""
        self._check_running()
        channel, call, verified = await self._dial_handshake(endpoint, probe=True)
        call.cancel()
        await channel.close()
        self._known_identities[verified.pki_id] = verified.identity
        return ConnectionInfo(
            pki_id=verified.pki_id,
            identity=verified.identity,
            endpoint=endpoint,
            proof=verified.envelope,
            outbound=True,
            probe=True,
        )

    def subscribe(
        self,
        predicate: Callable[[ReceivedMessage], bool] | None = None,
        maxsize: int | None = None,
        *,
        backpressure: bool = False,
    ) -> Subscription[ReceivedMessage]:
        """Receive the messages ``predicate`` selects (all when None) as an async iterator; ``close()`` it after.

        With ``backpressure`` (the peer's own handler), a connection stops reading while recvBuffSize of its
        messages wait in this subscription; other subscriptions drop messages when full instead, so one that is
        not read never stalls a connection."""
        sub: Subscription[ReceivedMessage] = Subscription(
            predicate or (lambda _m: True),
            maxsize or self.config.subscription_buff_size,
            on_close=self._forget_subscription,
            backpressure=backpressure,
        )
        self._subscriptions.append(sub)
        return sub

    def presumed_dead(self, maxsize: int = PRESUMED_DEAD_BUFFER) -> Feed[bytes]:
        """PKI-IDs of peers whose connection broke or could not be opened, as an async iterator."""
        feed: Feed[bytes] = Feed(maxsize, on_close=self._forget_dead_feed)
        self._dead_feeds.append(feed)
        return feed

    def connections(self) -> list[ConnectionInfo]:
        return [c.info for c in self._conns.values() if not c.closing]

    def connection(self, pki_id: bytes) -> ConnectionInfo | None:
        conn = self._conns.get(pki_id)
        return conn.info if conn is not None and not conn.closing else None

    def disconnect(self, pki_id: bytes) -> None:
        """Close the connection to ``pki_id`` (no presumed-dead report: we chose to)."""
        conn = self._conns.get(pki_id)
        if conn is not None:
            conn.close(Ending(EndReason.CLOSED, "disconnected on request"))

    def queued(self, pki_id: bytes) -> int:
        """Messages waiting in the outgoing queue to ``pki_id``."""
        conn = self._conns.get(pki_id)
        if conn is not None:
            return conn.queued
        pending = self._pending.get(pki_id)
        return len(pending.frames) if pending is not None else 0

    def queued_bytes(self, pki_id: bytes) -> int:
        """Bytes waiting in the outgoing queue to ``pki_id`` (bounded by send_buff_bytes plus one message)."""
        conn = self._conns.get(pki_id)
        if conn is not None:
            return conn.queued_bytes
        pending = self._pending.get(pki_id)
        return sum(len(f) for f in pending.frames) if pending is not None else 0

    async def writable(self, pki_id: bytes) -> None:
        """Wait until the outgoing queue to ``pki_id`` is at most half full (for senders that want pacing)."""
        conn = self._conns.get(pki_id)
        if conn is not None:
            await conn.writable()

    def identity_of(self, pki_id: bytes) -> bytes | None:
        if self._identity_lookup is not None:
            found = self._identity_lookup(pki_id)
            if found:
                return found
        return self._known_identities.get(pki_id)

    # --- sending --------------------------------------------------------------------------------

    def _check_running(self) -> None:
        if not self._started:
            raise CommError("comm not started")
        if self._stopping:
            raise CommError("comm stopped")

    def _send_frame(self, peer: RemotePeer, frame: bytes) -> str:
        """Queue one frame; returns "" or why it was dropped."""
        if not self._started or self._stopping:
            self._count_drop(peer.pki_id, "stopped", len(frame))
            return "comm stopped"
        if len(frame) > self.config.max_send_message_size:
            self._count_drop(peer.pki_id, "oversized", len(frame))
            log.warning(
                "not sending a %d-byte message to %s: larger than %d bytes",
                len(frame),
                peer.endpoint,
                self.config.max_send_message_size,
            )
            return "message too large"
        if peer.pki_id == self.pki_id:
            self._count_drop(peer.pki_id, "self", len(frame))
            return "cannot send to ourselves"
        conn = self._conns.get(peer.pki_id)
        if conn is not None and not conn.closing:
            return "" if conn.enqueue(frame) else "outgoing queue full"
        pending = self._pending_dial(peer)
        queued_bytes = sum(len(f) for f in pending.frames)
        if len(pending.frames) >= self.config.send_buff_size or (
            pending.frames and queued_bytes + len(frame) > self.config.send_buff_bytes
        ):
            self._overflow(peer.pki_id, len(frame))
            return "outgoing queue full"
        pending.frames.append(frame)
        return ""

    def _pending_dial(self, peer: RemotePeer) -> _PendingDial:
        pending = self._pending.get(peer.pki_id)
        if pending is None:
            self._check_running()
            pending = _PendingDial(peer, deque())
            self._pending[peer.pki_id] = pending
            pending.task = self._spawn(self._dial_for(pending))
        return pending

    async def _dial_for(self, pending: _PendingDial) -> Connection | CommError:
        peer = pending.peer
        try:
            try:
                conn = await self._establish(peer.endpoint, peer.pki_id)
            except (CommError, asyncio.CancelledError):
                raise
            except Exception as exc:
                log.exception("dialing %s failed unexpectedly", peer.endpoint)
                raise CommError(f"dial failed: {type(exc).__name__}: {exc}") from exc
        except CommError as exc:
            self._pending.pop(peer.pki_id, None)
            for frame in pending.frames:
                self._count_drop(peer.pki_id, "unreachable", len(frame))
            pending.frames.clear()
            self._fail_waiters(peer.pki_id, f"unreachable: {exc}")
            if not self._stopping:
                self._presume_dead(peer.pki_id)
            return exc
        except asyncio.CancelledError:
            self._pending.pop(peer.pki_id, None)
            raise
        self._pending.pop(peer.pki_id, None)
        # No await between registration and here, so these frames go out before any sent since.
        for frame in pending.frames:
            conn.enqueue(frame)
        pending.frames.clear()
        return conn

    def _overflow(self, pki_id: bytes, size: int) -> None:
        self.metrics.overflow_count += 1
        self._count_drop(pki_id, "overflow", size)

    def _count_drop(self, pki_id: bytes, reason: str, size: int) -> None:
        self.metrics.dropped[reason] += 1
        self._tracer.event("dropped", self._clock(), peer=pki_id, reason=reason, size=size, direction="out")

    # --- dialing --------------------------------------------------------------------------------

    def _channel_options(self) -> list[tuple[str, Any]]:
        cfg = self.config
        options: list[tuple[str, Any]] = [
            ("grpc.max_send_message_length", cfg.grpc_send_limit),
            ("grpc.max_receive_message_length", cfg.grpc_receive_limit),
            ("grpc.keepalive_time_ms", int(cfg.keepalive_interval * 1000)),
            ("grpc.keepalive_timeout_ms", int(cfg.keepalive_timeout * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
            # Each connection owns its TCP connection: closing one must not affect another to the same address.
            ("grpc.use_local_subchannel_pool", 1),
            ("grpc.enable_retries", 0),
        ]
        if cfg.tls is not None and cfg.tls.server_name_override:
            options.append(("grpc.ssl_target_name_override", cfg.tls.server_name_override))
        return options

    def _server_options(self) -> list[tuple[str, Any]]:
        cfg = self.config
        return [
            ("grpc.max_send_message_length", cfg.grpc_send_limit),
            ("grpc.max_receive_message_length", cfg.grpc_receive_limit),
            ("grpc.keepalive_time_ms", int(cfg.keepalive_interval * 1000)),
            ("grpc.keepalive_timeout_ms", int(cfg.keepalive_timeout * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            # Accept the clients' keepalive pings (gRPC's default policy would answer them with GOAWAY).
            ("grpc.http2.min_ping_interval_without_data_ms", int(cfg.keepalive_interval * 500)),
            ("grpc.http2.max_ping_strikes", 0),
            # Fail loudly when the port is taken instead of sharing it with another process.
            ("grpc.so_reuseport", 0),
        ]

    async def _wait_ready(self, channel: aio.Channel, deadline: float | None = None) -> None:
        """Wait for the channel to connect by ``deadline`` (default: dialTimeout from now); a failed attempt is
        left for the Ping to report, with gRPC's reason."""
        loop = asyncio.get_running_loop()
        if deadline is None:
            deadline = loop.time() + self.config.dial_timeout
        state = channel.get_state(try_to_connect=True)
        while state != grpc.ChannelConnectivity.READY:
            if state in (grpc.ChannelConnectivity.TRANSIENT_FAILURE, grpc.ChannelConnectivity.SHUTDOWN):
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise UnreachableError(f"no connection within dialTimeout ({self.config.dial_timeout:g}s)")
            try:
                await asyncio.wait_for(channel.wait_for_state_change(state), remaining)
            except TimeoutError:
                raise CommError(f"no connection within dialTimeout ({self.config.dial_timeout:g}s)") from None
            state = channel.get_state()

    async def _ping(self, channel: aio.Channel) -> None:
        ping = channel.unary_unary(
            PING, request_serializer=pb.Empty.SerializeToString, response_deserializer=pb.Empty.FromString
        )
        try:
            await ping(pb.Empty(), timeout=self.config.conn_timeout)
        except aio.AioRpcError as exc:
            raise CommError(f"Ping failed: {describe_rpc_error(exc)}") from None

    async def _dial_handshake(self, endpoint: str, *, probe: bool) -> tuple[aio.Channel, Any, VerifiedConn]:
        """Connect, Ping, open the stream and authenticate the acceptor. Logs and raises on failure."""
        try:
            return await self._dial_handshake_inner(endpoint, probe=probe)
        except CommError as exc:
            self.metrics.handshakes_failed += 1
            log.log(
                logging.DEBUG if isinstance(exc, UnreachableError) else logging.WARNING,
                "handshake with %s failed: %s",
                endpoint,
                exc,
            )
            raise

    async def _dial_handshake_inner(self, endpoint: str, *, probe: bool) -> tuple[aio.Channel, Any, VerifiedConn]:
        cfg = self.config
        expected_hash: bytes | None = None
        tlsmod.split_endpoint(endpoint)
        # Learning the server certificate and connecting the channel share one dialTimeout.
        deadline = asyncio.get_running_loop().time() + cfg.dial_timeout
        if cfg.tls is not None:
            server_der = await tlsmod.fetch_server_certificate(
                endpoint, self._ssl_context, cfg.tls.server_name_override, cfg.dial_timeout
            )
            expected_hash = certificate_hash(server_der)
            creds = tlsmod.pinned_channel_credentials(cfg.tls, server_der)
            channel = aio.secure_channel(endpoint, creds, options=self._channel_options())
        else:
            channel = aio.insecure_channel(endpoint, options=self._channel_options())
        try:
            await self._wait_ready(channel, deadline)
            await self._ping(channel)
            call = channel.stream_stream(GOSSIP_STREAM)()
            try:
                async with asyncio.timeout(cfg.conn_timeout):
                    await call.write(self._probe_frame if probe else self._dial_frame)
                    frame = await call.read()
            except TimeoutError:
                raise HandshakeError(f"no ConnEstablish within connTimeout ({cfg.conn_timeout:g}s)") from None
            except (aio.AioRpcError, asyncio.InvalidStateError) as exc:
                raise HandshakeError(f"stream failed during the handshake: {describe_rpc_error(exc)}") from None
            if frame is aio.EOF:
                raise HandshakeError("the remote ended the stream without sending a ConnEstablish")
            verified = verify_conn_establish(
                frame,
                mcs=self._mcs,
                expected_tls_hash=expected_hash,
                own_pki_id=self.pki_id,
                advisor=self._advisor,
            )
            return channel, call, verified
        except BaseException:
            await channel.close()
            raise

    async def _establish(self, endpoint: str, expected: bytes | None) -> Connection:
        channel, call, verified = await self._dial_handshake(endpoint, probe=False)
        try:
            if expected is not None and verified.pki_id != expected:
                self._check_renewal(endpoint, expected, verified)
        except HandshakeError as exc:
            self.metrics.handshakes_failed += 1
            log.warning("handshake with %s failed: %s", endpoint, exc)
            call.cancel()
            await channel.close()
            raise
        if self._stopping:
            call.cancel()
            await channel.close()
            raise CommError("comm stopped")
        info = ConnectionInfo(
            pki_id=verified.pki_id,
            identity=verified.identity,
            endpoint=endpoint,
            proof=verified.envelope,
            outbound=True,
        )
        conn = self._new_connection(info, ClientStream(channel, call))
        winner = self._register(conn)
        self._spawn(self._serve_outbound(conn))
        return winner

    def _check_renewal(self, endpoint: str, expected: bytes, verified: VerifiedConn) -> None:
        old_identity = self.identity_of(expected)
        if old_identity is None:
            raise HandshakeError(
                f"expected pki_id {_short(expected)} but the remote is {_short(verified.pki_id)}, "
                "and without the expected identity the org cannot be compared"
            )
        try:
            old_org = self._advisor.org_of(old_identity)
            new_org = self._advisor.org_of(verified.identity)
        except CryptoError as exc:
            raise HandshakeError(f"cannot compare orgs of expected and actual identity: {exc}") from None
        if old_org != new_org:
            raise HandshakeError(
                f"expected pki_id {_short(expected)} of org {old_org.decode(errors='replace')} but the remote is "
                f"{_short(verified.pki_id)} of org {new_org.decode(errors='replace')}"
            )
        log.info(
            "peer at %s renewed its identity: pki_id %s -> %s (org %s)",
            endpoint,
            _short(expected),
            _short(verified.pki_id),
            new_org.decode(errors="replace"),
        )

    async def _serve_outbound(self, conn: Connection) -> None:
        ending = Ending(EndReason.CLOSED)
        try:
            ending = await conn.run()
        finally:
            self._on_end(conn, conn.ending or ending)

    # --- accepting ------------------------------------------------------------------------------

    def _track_handler(self) -> None:
        # gRPC runs each handler in a task of its own; stop() waits for them so none outlives it.
        task = asyncio.current_task()
        if task is not None and task not in self._handlers:
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)

    async def _serve_ping(self, request: pb.Empty, context: aio.ServicerContext) -> pb.Empty:
        self._track_handler()
        return pb.Empty()

    async def _serve_stream(self, request_iterator: Any, context: aio.ServicerContext) -> None:
        self._track_handler()
        if self._stopping:
            return
        endpoint = _peer_address(context.peer())
        expected_hash: bytes | None = None
        if self.config.tls is not None:
            certs = context.auth_context().get("x509_pem_cert") or []
            expected_hash = b""
            if certs:
                try:
                    expected_hash = certificate_hash(first_certificate_der(certs[0]))
                except CommError as exc:
                    self._accept_failed(endpoint, f"unreadable client certificate: {exc}")
                    return
        stream = ServerStream(context)
        try:
            async with asyncio.timeout(self.config.conn_timeout):
                await stream.write(self._accept_frame)
                frame = await stream.read()
            if frame is None:
                raise HandshakeError("the remote ended the stream without sending a ConnEstablish")
            verified = verify_conn_establish(
                frame,
                mcs=self._mcs,
                expected_tls_hash=expected_hash,
                own_pki_id=self.pki_id,
                advisor=self._advisor,
            )
        except TimeoutError:
            self._accept_failed(endpoint, f"no ConnEstablish within connTimeout ({self.config.conn_timeout:g}s)")
            return
        except StreamBroken as exc:
            self._accept_failed(endpoint, f"stream failed during the handshake: {exc}")
            return
        except HandshakeError as exc:
            self._accept_failed(endpoint, str(exc))
            return
        self._known_identities[verified.pki_id] = verified.identity
        if verified.probe or self._stopping:
            log.debug("probe handshake from %s (%s) done", endpoint, _short(verified.pki_id))
            return
        info = ConnectionInfo(
            pki_id=verified.pki_id,
            identity=verified.identity,
            endpoint=endpoint,
            proof=verified.envelope,
            outbound=False,
        )
        conn = self._new_connection(info, stream)
        self._register(conn)
        try:
            await conn.run()
        finally:
            self._on_end(conn, conn.ending or Ending(EndReason.CLOSED))

    def _accept_failed(self, endpoint: str, reason: str) -> None:
        self.metrics.handshakes_failed += 1
        log.warning("handshake with %s failed: %s", endpoint, reason)

    # --- connection store -----------------------------------------------------------------------

    def _new_connection(self, info: ConnectionInfo, stream: Any) -> Connection:
        self._known_identities[info.pki_id] = info.identity
        conn = Connection(
            info,
            stream,
            send_buff_size=self.config.send_buff_size,
            send_buff_bytes=self.config.send_buff_bytes,
            write_timeout=self.config.write_timeout,
            recv_buff_size=self.config.recv_buff_size,
            established_at=self._clock(),
            on_frame=self._on_frame,
            on_sent=self._on_sent,
            on_overflow=lambda c, frame: self._overflow(c.pki_id, len(frame)),
        )
        self._live.add(conn)
        return conn

    def _register(self, conn: Connection) -> Connection:
        """Make ``conn`` the connection to its peer unless an existing one wins; returns the one kept."""
        pki_id = conn.pki_id
        old = self._conns.get(pki_id)
        if old is None or old.closing:
            self._install(conn)
            return conn
        simultaneous = (
            old.info.outbound != conn.info.outbound
            and conn.established_at - old.established_at <= self.config.simultaneous_window
        )
        if simultaneous:
            # Both peers run this same rule on the same pair of connections, so both keep the same one.
            def initiator(c: Connection) -> bytes:
                return self.pki_id if c.info.outbound else c.pki_id

            winner, loser = (old, conn) if initiator(old) < initiator(conn) else (conn, old)
        else:
            winner, loser = conn, old
        if winner is conn:
            self._install(conn)
        self._retire(loser)
        for frame in loser.take_queued():
            winner.enqueue(frame)
        kept = "dialed" if winner.info.outbound else "accepted"
        log.debug("two connections with %s: keeping the one %s", _short(pki_id), kept)
        return winner

    def _retire(self, conn: Connection) -> None:
        # Nothing new goes to a retired connection, but it keeps reading for a while: the remote may still have
        # frames in flight on it until it, too, has seen both connections and switched to the same winner.
        conn.retired = True
        self._call_later(
            self.config.simultaneous_window, conn.close, Ending(EndReason.SUPERSEDED, "replaced by another connection")
        )

    def _call_later(self, delay: float, callback: Callable[..., object], *args: object) -> None:
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle | None = None

        def fire() -> None:
            if handle is not None:
                self._timers.discard(handle)
            callback(*args)

        handle = loop.call_later(delay, fire)
        self._timers.add(handle)

    def _install(self, conn: Connection) -> None:
        self._conns[conn.pki_id] = conn
        conn.registered = True
        self._tracer.event(
            "connected", self._clock(), peer=conn.pki_id, endpoint=conn.info.endpoint, outbound=conn.info.outbound
        )
        name = self._advisor.name_of(conn.info.identity) if hasattr(self._advisor, "name_of") else ""
        log.info(
            "connected %s %s (%s)",
            "to" if conn.info.outbound else "from",
            conn.info.endpoint,
            f"{name}, {_short(conn.pki_id)}" if name else _short(conn.pki_id),
        )

    def _on_end(self, conn: Connection, ending: Ending) -> None:
        self._live.discard(conn)
        pki_id = conn.pki_id
        if conn.write_timed_out:
            self.metrics.write_timeouts += 1
        for frame in conn.take_queued():
            self._count_drop(pki_id, "closed", len(frame))
        if self._conns.get(pki_id) is conn:
            del self._conns[pki_id]
        if not conn.registered:
            return
        if conn.retired and ending.reason is not EndReason.SUPERSEDED:
            ending = Ending(EndReason.SUPERSEDED, f"retired, then {ending}")
        self._tracer.event("disconnected", self._clock(), peer=pki_id, endpoint=conn.info.endpoint, reason=str(ending))
        # A remote that ends the stream cleanly (EOF) stopped or closed it on purpose, as we do on a clean stop:
        # worth a line, not a warning. A broken stream (an error, a cancellation, a lost connection) is one.
        level = logging.WARNING if ending.reason is EndReason.BROKEN else logging.INFO
        log.log(level, "connection with %s (%s) ended: %s", conn.info.endpoint, _short(pki_id), ending)
        if ending.reason is EndReason.SUPERSEDED or self._stopping:
            return
        self._fail_waiters(pki_id, f"connection lost: {ending}")
        if ending.reason.remote_caused:
            self._call_later(self.config.presumed_dead_grace, self._presume_dead, pki_id)

    def _presume_dead(self, pki_id: bytes) -> None:
        if self._stopping:
            return
        conn = self._conns.get(pki_id)
        if (conn is not None and not conn.closing) or pki_id in self._pending:
            return
        self._tracer.event("presumed_dead", self._clock(), peer=pki_id)
        for feed in self._dead_feeds:
            if not feed.offer(pki_id):
                log.warning("presumed-dead feed full: dropping notice for %s", _short(pki_id))

    def _fail_waiters(self, pki_id: bytes, reason: str) -> None:
        for fut in self._ack_waiters.get(pki_id, {}).values():
            if not fut.done():
                fut.set_result(reason)

    # --- receiving ------------------------------------------------------------------------------

    def _on_sent(self, conn: Connection, frame: bytes) -> None:
        self.metrics.messages_sent += 1
        self.metrics.bytes_sent += len(frame)
        self._tracer.event("sent", self._clock(), peer=conn.pki_id, size=len(frame))

    def _on_frame(self, conn: Connection, frame: bytes) -> None:
        size = len(frame)
        if size > self.config.max_message_size:
            self._invalid(conn, "oversized", f"{size}-byte message exceeds {self.config.max_message_size} bytes")
            return
        envelope = pb.Envelope()
        try:
            envelope.ParseFromString(frame)
        except DecodeError:
            self._invalid(conn, "undecodable", "undecodable envelope")
            return
        try:
            msg = messages.open_envelope(envelope)
        except messages.InvalidMessage as exc:
            self._invalid(conn, "invalid", str(exc))
            return
        kind = msg.WhichOneof("content") or ""
        if kind == "conn":
            self._invalid(conn, "unexpected", "ConnEstablish after the handshake")
            return
        now = self._clock()
        self.metrics.messages_received += 1
        self.metrics.bytes_received += size
        self._tracer.event("received", now, peer=conn.pki_id, kind=kind, size=size)
        if kind == "ack":
            waiters = self._ack_waiters.get(conn.pki_id)
            fut = waiters.get(msg.nonce) if waiters is not None else None
            if fut is not None and not fut.done():
                fut.set_result(msg.ack.error)
            return
        received = ReceivedMessage(
            sender=conn.pki_id,
            sender_endpoint=conn.info.endpoint,
            sender_identity=conn.info.identity,
            envelope=envelope,
            message=msg,
            proof=conn.info.proof,
        )
        for sub in self._subscriptions:
            try:
                wanted = sub.predicate(received)
            except Exception:
                log.exception("subscription predicate failed")
                continue
            if not wanted:
                continue
            if sub.backpressure:
                release = conn.hold()
                offered = sub.offer_held(received, release)
                if not offered:
                    release()
            else:
                offered = sub.offer(received)
            if not offered:
                self.metrics.subscriber_drops[kind] += 1
                self._tracer.event(
                    "dropped", now, peer=conn.pki_id, kind=kind, reason="subscriber full", direction="in"
                )

    def _invalid(self, conn: Connection, category: str, detail: str) -> None:
        now = self._clock()
        self.metrics.invalid_frames[category] += 1
        self._tracer.event("dropped", now, peer=conn.pki_id, reason=f"invalid: {detail}", direction="in")
        window_start = now - self.config.invalid_frame_window
        times = conn.invalid_times
        times.append(now)
        while times and times[0] < window_start:
            times.popleft()
        first = len(times) == 1
        log.log(
            logging.WARNING if first else logging.DEBUG,
            "dropped a message from %s (%s): %s",
            conn.info.endpoint,
            _short(conn.pki_id),
            detail,
        )
        if len(times) > self.config.max_invalid_frames and not conn.closing:
            log.warning(
                "disconnecting %s (%s): %d invalid messages within %gs",
                conn.info.endpoint,
                _short(conn.pki_id),
                len(times),
                self.config.invalid_frame_window,
            )
            conn.close(Ending(EndReason.CLOSED, "too many invalid messages"))

    # --- bookkeeping ----------------------------------------------------------------------------

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _forget_subscription(self, sub: Feed[ReceivedMessage]) -> None:
        with contextlib.suppress(ValueError):
            self._subscriptions.remove(sub)  # type: ignore[arg-type]

    def _forget_dead_feed(self, feed: Feed[bytes]) -> None:
        with contextlib.suppress(ValueError):
            self._dead_feeds.remove(feed)


def _bind_problem(address: str) -> str | None:
    """Why ``address`` cannot be bound, in the system's words ("Address already in use"), or None: gRPC only
    says that binding failed."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except (OSError, ValueError) as exc:
        return str(exc)
    for family, kind, proto, _name, sockaddr in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                return exc.strerror or str(exc)
    return None
