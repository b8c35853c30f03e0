"""Clients of the ordering service: submit envelopes (Broadcast) and follow a channel's blocks (Deliver).

``BroadcastClient.submit(channel, data)`` wraps ``data`` in an envelope signed by the client's identity,
sends it on a long-lived Broadcast stream and returns the transaction ID once the orderer answers SUCCESS;
any other answer raises ``BroadcastError`` with the orderer's status and reason. ``submit_many`` pipelines a
run of envelopes on the stream. When the stream breaks, the client moves to the next endpoint and resends
what was not yet answered; an envelope the orderer took but could not confirm may then be ordered twice,
as with Fabric's clients (transactions carry an ID for that reason).

``DeliverClient.deliver(channel, start)`` yields the channel's blocks in order from ``start``, forever or up
to ``stop``. It signs a seek request, checks that each block has the expected number and chains to the one
before it (and runs an optional ``verify`` hook), and on any failure (connection lost, orderer restarting,
bad block) reconnects with exponential backoff, rotating through the endpoints, resuming from the first
block it has not yielded: nothing is lost or yielded twice. It gives up (``DeliverError``) only when every
endpoint in turn refuses the request itself (BAD_REQUEST, FORBIDDEN, NOT_FOUND). Close the generator (or
cancel its consumer) to stop; ``contextlib.aclosing`` does it on leaving a block::

    async with contextlib.aclosing(DeliverClient([addr], user, tls=tls).deliver("mychannel", 1)) as blocks:
        async for block in blocks:
            ...

Both take ``tls=None`` for plaintext or a ``ClientTLS`` (root certificates, optional client certificate).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from rumor.channelconfig import new_envelope, open_envelope
from rumor.crypto.blocks import BlockSigner, block_header_hash
from rumor.orderer.service import MAX_BLOCK_NUMBER, SERVICE_NAME
from rumor.wire.pb.common import common_pb2
from rumor.wire.pb.orderer import ab_pb2

__all__ = [
    "Backoff",
    "BroadcastClient",
    "BroadcastError",
    "ClientTLS",
    "DeliverClient",
    "DeliverError",
    "Keepalive",
    "OrdererClientError",
    "newest_block",
    "seek_envelope",
]

log = logging.getLogger("rumor.orderer.client")
# How long close() waits for the orderer to end a half-closed Broadcast stream before cancelling it.
_GRACEFUL_CLOSE_SECONDS = 2.0

MiB = 1024 * 1024
Status = common_pb2.Status


def status_name(status: int) -> str:
    return common_pb2.Status.Name(status) if status in common_pb2.Status.values() else str(status)


class OrdererClientError(Exception):
    """The orderer refused a request or could not be reached; ``status`` is a common.Status value."""

    def __init__(self, status: int, info: str) -> None:
        super().__init__(f"{status_name(status)}: {info}" if info else status_name(status))
        self.status = status
        self.info = info


class BroadcastError(OrdererClientError):
    """An envelope was not accepted (SERVICE_UNAVAILABLE: no orderer could be reached)."""


class DeliverError(OrdererClientError):
    """Every orderer refused the seek request."""


@dataclass(frozen=True)
class ClientTLS:
    """Trust roots for the orderer's TLS certificate, and an optional client certificate (PEM)."""

    root_certs: bytes
    cert: bytes | None = None
    key: bytes | None = field(default=None, repr=False)
    server_name: str | None = None  # check the server certificate against this name instead of the dialed host

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise ValueError("a client TLS certificate needs its key and the other way round")

    @classmethod
    def from_files(
        cls,
        root_cas: Iterable[Path | str],
        cert: Path | str | None = None,
        key: Path | str | None = None,
        *,
        server_name: str | None = None,
    ) -> ClientTLS:
        roots = b"".join(Path(p).read_bytes() for p in root_cas)
        if not roots:
            raise ValueError("no TLS root certificate given")
        return cls(
            root_certs=roots,
            cert=Path(cert).read_bytes() if cert is not None else None,
            key=Path(key).read_bytes() if key is not None else None,
            server_name=server_name,
        )

    @property
    def cert_hash(self) -> bytes:
        """SHA-256 of the client certificate's DER (empty without one): what a seek request binds itself to."""
        if self.cert is None:
            return b""
        der = x509.load_pem_x509_certificate(self.cert).public_bytes(serialization.Encoding.DER)
        return hashlib.sha256(der).digest()

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.root_certs, private_key=self.key, certificate_chain=self.cert
        )


def _open_channel(
    endpoint: str, tls: ClientTLS | None, max_message_size: int, keepalive: Keepalive | None = None
) -> grpc.aio.Channel:
    options: list[tuple[str, str | int]] = [
        ("grpc.max_receive_message_length", max_message_size),
        ("grpc.max_send_message_length", max_message_size),
    ]
    if keepalive is not None:
        options += [
            ("grpc.keepalive_time_ms", int(keepalive.interval * 1000)),
            ("grpc.keepalive_timeout_ms", int(keepalive.timeout * 1000)),
            # A deliver stream carries no data from us after its seek request; gRPC's default of 2 pings
            # without data sent would end the pinging just when the orderer falls silent.
            ("grpc.http2.max_pings_without_data", 0),
        ]
    if tls is None:
        return grpc.aio.insecure_channel(endpoint, options=options)
    if tls.server_name:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    return grpc.aio.secure_channel(endpoint, tls.credentials(), options=options)


@dataclass(frozen=True)
class Keepalive:
    """gRPC keepalive of a client's connection: a ping after ``interval`` seconds of silence, and the connection
    dropped when ``timeout`` seconds pass without its answer (Fabric's peer.keepalive.deliveryClient)."""

    interval: float = 60.0
    timeout: float = 20.0

    def __post_init__(self) -> None:
        if self.interval <= 0 or self.timeout <= 0:
            raise ValueError("keepalive interval and timeout must be positive")


def _endpoints(endpoints: str | Sequence[str]) -> list[str]:
    result = [endpoints] if isinstance(endpoints, str) else list(endpoints)
    if not result:
        raise ValueError("no orderer endpoint given")
    return result


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc) or type(exc).__name__


class _StreamBroken(Exception):
    """The stream ended or misbehaved; try again, elsewhere."""


# --------------------------------------------------------------------------------------------------
# Broadcast


class BroadcastClient:
    """Submits envelopes to the ordering service over one Broadcast stream at a time.

    ``header_type`` is the ChannelHeader type of the envelopes (MESSAGE by default; a Fabric transaction
    would be ENDORSER_TRANSACTION). ``timeout`` bounds each submission, retries included.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str],
        signer: BlockSigner,
        *,
        tls: ClientTLS | None = None,
        timeout: float = 30.0,
        header_type: int = common_pb2.MESSAGE,
        max_message_size: int = 100 * MiB,
    ) -> None:
        self._endpoints = _endpoints(endpoints)
        self._signer = signer
        self._tls = tls
        self._timeout = timeout
        self._header_type = header_type
        self._max_message_size = max_message_size
        self._index = 0
        self._channel: grpc.aio.Channel | None = None
        self._call: grpc.aio.StreamStreamCall | None = None
        self._lock = asyncio.Lock()

    @property
    def endpoint(self) -> str:
        """The endpoint in use (or tried next)."""
        return self._endpoints[self._index]

    async def __aenter__(self) -> BroadcastClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        async with self._lock:
            await self._disconnect(graceful=True)

    async def submit(self, channel: str, data: bytes) -> str:
        """Submit ``data`` to ``channel``; the transaction ID, or BroadcastError with the status and reason."""
        return (await self.submit_many(channel, [data]))[0]

    async def submit_many(self, channel: str, items: Iterable[bytes]) -> list[str]:
        """Submit each item as its own envelope, pipelined; their transaction IDs in order.

        Raises BroadcastError for the first item refused (the items before it were accepted, those after it
        may have been).
        """
        envelopes = [new_envelope(self._signer, channel, self._header_type, data) for data in items]
        async with self._lock:
            try:
                async with asyncio.timeout(self._timeout):
                    replies = await self._exchange(envelopes)
            except TimeoutError:
                await self._disconnect()
                raise BroadcastError(
                    Status.SERVICE_UNAVAILABLE, f"no answer from the orderer within {self._timeout:g}s"
                ) from None
        for i, reply in enumerate(replies):
            if reply.status != Status.SUCCESS:
                where = f" (item {i + 1} of {len(replies)})" if len(replies) > 1 else ""
                raise BroadcastError(reply.status, reply.info + where)
        return [open_envelope(env).channel_header.tx_id for env in envelopes]

    async def _exchange(self, envelopes: list[common_pb2.Envelope]) -> list[ab_pb2.BroadcastResponse]:
        replies: list[ab_pb2.BroadcastResponse] = []
        problems: list[str] = []
        for _ in range(len(self._endpoints)):
            try:
                call = await self._connect()
                await self._pipeline(call, envelopes[len(replies) :], replies)
                return replies
            except (grpc.aio.AioRpcError, _StreamBroken, grpc.aio.UsageError) as exc:
                problems.append(f"{self.endpoint}: {_describe(exc)}")
                log.debug("broadcast to %s failed (%s); trying the next orderer", self.endpoint, _describe(exc))
                await self._disconnect()
                self._index = (self._index + 1) % len(self._endpoints)
        raise BroadcastError(Status.SERVICE_UNAVAILABLE, "no orderer reachable: " + "; ".join(problems))

    async def _connect(self) -> grpc.aio.StreamStreamCall:
        if self._call is None or self._call.done():
            await self._disconnect()
            self._channel = _open_channel(self.endpoint, self._tls, self._max_message_size)
            self._call = self._channel.stream_stream(
                f"/{SERVICE_NAME}/Broadcast",
                request_serializer=common_pb2.Envelope.SerializeToString,
                response_deserializer=ab_pb2.BroadcastResponse.FromString,
            )()
        return self._call

    async def _pipeline(
        self,
        call: grpc.aio.StreamStreamCall,
        envelopes: list[common_pb2.Envelope],
        replies: list[ab_pb2.BroadcastResponse],
    ) -> None:
        async def write_all() -> None:
            for envelope in envelopes:
                await call.write(envelope)

        # Writing and reading concurrently: a writer that waited for all its writes before reading could
        # deadlock once both directions' flow-control windows fill up.
        writer = asyncio.create_task(write_all())
        try:
            for _ in envelopes:
                reply = await call.read()
                if reply is grpc.aio.EOF:
                    if writer.done() and writer.exception() is not None:
                        raise _StreamBroken(_describe(writer.exception()))  # type: ignore[arg-type]
                    raise _StreamBroken("the orderer closed the stream")
                replies.append(reply)
            await writer
        finally:
            if not writer.done():
                writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError, grpc.aio.UsageError):
                await writer

    async def _disconnect(self, *, graceful: bool = False) -> None:
        call, channel = self._call, self._channel
        self._call = self._channel = None
        if call is not None and graceful and not call.done():
            # Half-close and let the orderer end the stream: a cancelled stream is logged by a Fabric orderer
            # as a warning ("Error reading from ...: context canceled") for every client that leaves.
            with contextlib.suppress(grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.TimeoutError):
                await call.done_writing()
                await asyncio.wait_for(_drain(call), _GRACEFUL_CLOSE_SECONDS)
        if call is not None:
            call.cancel()
        if channel is not None:
            await channel.close()


async def _drain(call: grpc.aio.StreamStreamCall) -> None:
    while await call.read() is not grpc.aio.EOF:
        pass


# --------------------------------------------------------------------------------------------------
# Deliver


def seek_envelope(
    signer: BlockSigner,
    channel: str,
    start: int,
    stop: int = MAX_BLOCK_NUMBER,
    *,
    behavior: int = ab_pb2.SeekInfo.BLOCK_UNTIL_READY,
    content_type: int = ab_pb2.SeekInfo.BLOCK,
    now: float | None = None,
    tls_cert_hash: bytes = b"",
) -> common_pb2.Envelope:
    """A signed request for blocks ``start`` through ``stop`` (MAX_BLOCK_NUMBER: forever), as Fabric's deliver
    client writes it: no tx id, and under mutual TLS the SHA-256 of the client's TLS certificate (DER)."""
    seek = ab_pb2.SeekInfo(
        start=ab_pb2.SeekPosition(specified=ab_pb2.SeekSpecified(number=start)),
        stop=ab_pb2.SeekPosition(specified=ab_pb2.SeekSpecified(number=stop)),
        behavior=behavior,  # type: ignore[arg-type]
        content_type=content_type,  # type: ignore[arg-type]
    )
    return new_envelope(
        signer,
        channel,
        common_pb2.DELIVER_SEEK_INFO,
        seek.SerializeToString(deterministic=True),
        now=now,
        tls_cert_hash=tls_cert_hash,
        tx_id=False,
    )


async def newest_block(
    endpoints: str | Sequence[str],
    signer: BlockSigner,
    channel: str,
    *,
    tls: ClientTLS | None = None,
    max_message_size: int = 100 * MiB,
) -> int:
    """The number of the channel's newest block (one seek for the newest header, tried on each endpoint)."""
    seek = ab_pb2.SeekInfo(
        start=ab_pb2.SeekPosition(newest=ab_pb2.SeekNewest()),
        stop=ab_pb2.SeekPosition(newest=ab_pb2.SeekNewest()),
        behavior=ab_pb2.SeekInfo.FAIL_IF_NOT_READY,
        content_type=ab_pb2.SeekInfo.HEADER_WITH_SIG,
    )
    problems: list[str] = []
    for endpoint in _endpoints(endpoints):
        envelope = new_envelope(
            signer,
            channel,
            common_pb2.DELIVER_SEEK_INFO,
            seek.SerializeToString(deterministic=True),
            tls_cert_hash=tls.cert_hash if tls is not None else b"",
            tx_id=False,
        )
        grpc_channel = _open_channel(endpoint, tls, max_message_size)
        try:
            call = grpc_channel.stream_stream(
                f"/{SERVICE_NAME}/Deliver",
                request_serializer=common_pb2.Envelope.SerializeToString,
                response_deserializer=ab_pb2.DeliverResponse.FromString,
            )()
            await call.write(envelope)
            await call.done_writing()
            async for reply in call:
                if reply.WhichOneof("Type") == "block":
                    return reply.block.header.number
                problems.append(f"{endpoint}: {status_name(reply.status)}")
                break
        except grpc.aio.AioRpcError as exc:
            problems.append(f"{endpoint}: {_describe(exc)}")
        finally:
            await grpc_channel.close()
    raise DeliverError(Status.SERVICE_UNAVAILABLE, "; ".join(problems) or "no answer")


@dataclass(frozen=True)
class Backoff:
    """Waits between reconnection attempts: ``initial`` growing by ``factor`` up to ``maximum``, ± ``jitter``."""

    initial: float = 0.1
    maximum: float = 5.0
    factor: float = 2.0
    jitter: float = 0.2  # fraction of each delay, so that many clients of one orderer do not retry in step

    def delays(self, rng: random.Random) -> Iterator[float]:
        delay = self.initial
        while True:
            yield delay * (1 + self.jitter * (2 * rng.random() - 1))
            delay = min(self.maximum, delay * self.factor)


class DeliverClient:
    """Follows a channel's blocks from the ordering service, surviving orderer restarts and failovers.

    ``verify(block)`` may raise to reject a block (for example ``X509CryptoService.verify_block``): the
    client then drops that orderer and asks the next one. ``keepalive`` pings a silent orderer (Fabric's
    defaults, 60 s and 20 s): an orderer that dropped the connection while the network between lost its reset
    leaves the stream open here, silent forever, and only a ping finds that out; None turns it off.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str],
        signer: BlockSigner,
        *,
        tls: ClientTLS | None = None,
        backoff: Backoff | None = None,
        verify: Callable[[common_pb2.Block], None] | None = None,
        rng: random.Random | None = None,
        max_message_size: int = 100 * MiB,
        keepalive: Keepalive | None = Keepalive(),  # frozen: one shared default instance is harmless
    ) -> None:
        self._endpoints = _endpoints(endpoints)
        self._signer = signer
        self._tls = tls
        self._keepalive = keepalive
        self._backoff = backoff or Backoff()
        self._verify = verify
        self._rng = rng or random.Random()
        self._max_message_size = max_message_size
        self._index = 0
        self._tls_hash = tls.cert_hash if tls is not None else b""
        self.reconnects = 0
        """How many times a stream was re-established after a failure (for tests and metrics)."""

    @property
    def endpoint(self) -> str:
        return self._endpoints[self._index]

    async def deliver(self, channel: str, start: int = 0, stop: int | None = None) -> AsyncIterator[common_pb2.Block]:
        """Blocks ``start``..``stop`` of ``channel`` in order (``stop=None``: forever)."""
        last = MAX_BLOCK_NUMBER if stop is None else stop
        number = start
        previous_hash: bytes | None = None
        refusals: dict[str, OrdererClientError] = {}
        delays = self._backoff.delays(self._rng)
        while number <= last:
            endpoint = self.endpoint
            grpc_channel = _open_channel(endpoint, self._tls, self._max_message_size, self._keepalive)
            call = grpc_channel.stream_stream(
                f"/{SERVICE_NAME}/Deliver",
                request_serializer=common_pb2.Envelope.SerializeToString,
                response_deserializer=ab_pb2.DeliverResponse.FromString,
            )()
            try:
                await call.write(seek_envelope(self._signer, channel, number, last, tls_cert_hash=self._tls_hash))
                await call.done_writing()
                while True:
                    reply = await call.read()
                    if reply is grpc.aio.EOF:
                        raise _StreamBroken("the orderer closed the stream without a status")
                    if reply.WhichOneof("Type") == "status":
                        if reply.status == Status.SUCCESS and number > last:
                            return
                        refusal = DeliverError(reply.status, f"from {endpoint}")
                        if reply.status in (Status.BAD_REQUEST, Status.FORBIDDEN, Status.NOT_FOUND):
                            refusals[endpoint] = refusal
                            if len(refusals) == len(self._endpoints):
                                raise refusal
                        raise _StreamBroken(str(refusal))
                    block = reply.block
                    if block.header.number != number:
                        raise _StreamBroken(f"got block {block.header.number}, expected {number}")
                    if previous_hash is not None and block.header.previous_hash != previous_hash:
                        raise _StreamBroken(f"block {number} does not chain to block {number - 1}")
                    if self._verify is not None:
                        try:
                            self._verify(block)
                        except Exception as exc:
                            raise _StreamBroken(f"block {number} rejected: {exc}") from None
                    refusals.clear()
                    delays = self._backoff.delays(self._rng)
                    previous_hash = block_header_hash(block.header)
                    number += 1
                    yield block
                    if number > last:
                        return
            except (grpc.aio.AioRpcError, grpc.aio.UsageError, _StreamBroken) as exc:
                log.info("deliver from %s stopped at block %d (%s); reconnecting", endpoint, number, _describe(exc))
            finally:
                call.cancel()
                await grpc_channel.close()
            self._index = (self._index + 1) % len(self._endpoints)
            self.reconnects += 1
            await asyncio.sleep(next(delays))
