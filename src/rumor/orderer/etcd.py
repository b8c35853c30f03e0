"""A small asyncio client of etcd's v3 gRPC API: what the etcd ordering service needs, on grpc.aio.

::

    endpoints e0, e1, e2 (one grpc.aio channel each, opened lazily by gRPC)
    unary call  -> on the current endpoint, with a deadline of request_timeout
                   refused before it reached etcd (connection refused, no leader on that member)
                       -> the next endpoint, until the deadline: such a request changed nothing, so it is safe
                   anything else (a timeout, an answer "request timed out") -> EtcdUnavailable, not retried:
                       the request may have been applied, and only the caller knows whether that is harmless
    watch       -> one stream on the current endpoint, with etcd's "hasleader" requirement so that a member cut
                   off from its cluster ends the watch instead of going quiet; the caller resumes it from the
                   next revision (on the next endpoint when this one fails)
    keepalive   -> one stream per lease; a request every ttl/3, the TTL etcd answers with

Why our own stubs and not a client library: the stubs come from our proto/etcdserverpb (the messages we use,
written from etcd's API reference) through the same grpc.aio as the rest of rumor, so there is no second gRPC
stack nor a library pinning its own protobuf; and the calls the ordering service's safety rests on (a Txn whose
compares fence a deposed cutter, the retry rule above) stay visible in about 300 lines.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from rumor.wire.pb.etcdserverpb import rpc_pb2 as pb
from rumor.wire.pb.etcdserverpb import rpc_pb2_grpc as pb_grpc

__all__ = ["EtcdClient", "EtcdError", "EtcdTLS", "EtcdUnavailable", "prefix_end"]

log = logging.getLogger("rumor.orderer.etcd")

# Answers that mean the request was not applied: safe to send again to another member.
_NOT_APPLIED = ("etcdserver: no leader", "etcdserver: not capable", "etcdserver: leader changed")
_HASLEADER = (("hasleader", "true"),)


class EtcdError(Exception):
    """etcd refused a request (a bad request, a key too large, its quota is used up...)."""


class EtcdUnavailable(EtcdError):
    """No etcd member answered in time, or none that has a leader: the request may or may not have been applied."""


def prefix_end(prefix: bytes) -> bytes:
    """The range_end that makes a Range, DeleteRange or Watch cover every key starting with ``prefix``."""
    end = bytearray(prefix)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\0"


@dataclass(frozen=True)
class EtcdTLS:
    """TLS to etcd: the CA of its server certificates, and the client's certificate when etcd asks for one."""

    ca_pem: bytes
    cert_pem: bytes | None = None
    key_pem: bytes | None = field(default=None, repr=False)

    @classmethod
    def from_files(cls, ca: str | Path, cert: str | Path = "", key: str | Path = "") -> EtcdTLS:
        return cls(
            Path(ca).read_bytes(),
            Path(cert).read_bytes() if cert else None,
            Path(key).read_bytes() if key else None,
        )

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(self.ca_pem, self.key_pem, self.cert_pem)


def _code_and_details(exc: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str]:
    return exc.code(), exc.details() or ""


def _stream_failure(exc: Exception) -> str:
    """What ended a stream call (keepalive, watch), for EtcdUnavailable.

    Besides AioRpcError, a stream call fails with asyncio.InvalidStateError: grpc.aio's answer to a write on a call
    that has already ended, when the member closed the stream while the client was not reading (killed, or having
    lost its leader it ends every "hasleader" stream). That is the member failing just the same. Let through, it
    would end the caller's task: the lease's, leaving the node with a lease etcd has dropped, so that it never
    campaigns (nor cuts) again."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.details() or exc.code().name
    if isinstance(exc, asyncio.InvalidStateError):
        return f"stream ended ({exc})"
    return "no answer"


def _not_applied(exc: grpc.aio.AioRpcError) -> bool:
    code, details = _code_and_details(exc)
    if code != grpc.StatusCode.UNAVAILABLE:
        return False
    # gRPC's own "failed to connect" and etcd's answers that it did nothing; etcd's "request timed out" is
    # UNAVAILABLE too but may have been applied.
    return not details.startswith("etcdserver:") or details.startswith(_NOT_APPLIED)


class EtcdClient:
    """Calls to an etcd cluster through any of its ``endpoints`` (host:port)."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        tls: EtcdTLS | None = None,
        request_timeout: float = 5.0,
        max_message_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        if not endpoints:
            raise ValueError("no etcd endpoints")
        self.endpoints = tuple(endpoints)
        self.request_timeout = request_timeout
        options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            # a dead member is noticed within seconds, not after TCP's own timeouts
            ("grpc.keepalive_time_ms", 5000),
            ("grpc.keepalive_timeout_ms", 3000),
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 2000),
        ]
        self._channels = [
            grpc.aio.secure_channel(ep, tls.credentials(), options=options)
            if tls is not None
            else grpc.aio.insecure_channel(ep, options=options)
            for ep in self.endpoints
        ]
        self._current = 0

    @property
    def current_endpoint(self) -> str:
        return self.endpoints[self._current]

    def _rotate(self, failed: int) -> None:
        if self._current == failed:
            self._current = (failed + 1) % len(self._channels)

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()

    async def _unary(self, service: str, method: str, request: object) -> object:
        """One unary call, moved to the next member while the refusal says nothing was done."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.request_timeout
        last: str = "no etcd endpoint answered"
        tried = 0
        while True:
            index = self._current
            stub = getattr(pb_grpc, f"{service}Stub")(self._channels[index])
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise EtcdUnavailable(f"etcd did not answer within {self.request_timeout:g}s ({last})")
            try:
                return await getattr(stub, method)(request, timeout=remaining, metadata=_HASLEADER)
            except grpc.aio.AioRpcError as exc:
                code, details = _code_and_details(exc)
                last = f"{self.endpoints[index]}: {details or code.name}"
                if _not_applied(exc):
                    self._rotate(index)
                    tried += 1
                    if tried % len(self._channels) == 0:
                        # every member refused: wait a little for one to come back or elect a leader
                        await asyncio.sleep(min(0.2, max(0.0, deadline - loop.time())))
                    continue
                if code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE):
                    self._rotate(index)
                    raise EtcdUnavailable(last) from None
                if code == grpc.StatusCode.CANCELLED:
                    raise
                raise EtcdError(last) from None

    # ----------------------------------------------------------------------------------------------
    # KV

    async def range(
        self, key: bytes, range_end: bytes = b"", *, limit: int = 0, revision: int = 0, **kwargs: object
    ) -> pb.RangeResponse:
        request = pb.RangeRequest(key=key, range_end=range_end, limit=limit, revision=revision, **kwargs)  # type: ignore[arg-type]
        return await self._unary("KV", "Range", request)  # type: ignore[return-value]

    async def get(self, key: bytes) -> pb.KeyValue | None:
        response = await self.range(key)
        return response.kvs[0] if response.kvs else None

    async def range_all(self, prefix: bytes, *, page: int = 256) -> tuple[list[pb.KeyValue], int]:
        """Every key under ``prefix`` at one revision (read in pages of ``page`` keys); and that revision."""
        end = prefix_end(prefix)
        first = await self.range(prefix, end, limit=page)
        kvs = list(first.kvs)
        revision = first.header.revision
        more = first.more
        while more:
            response = await self.range(kvs[-1].key + b"\0", end, limit=page, revision=revision)
            kvs.extend(response.kvs)
            more = response.more
        return kvs, revision

    async def put(self, key: bytes, value: bytes, *, lease: int = 0) -> pb.PutResponse:
        return await self._unary("KV", "Put", pb.PutRequest(key=key, value=value, lease=lease))  # type: ignore[return-value]

    async def txn(
        self,
        compare: Sequence[pb.Compare] = (),
        success: Sequence[pb.RequestOp] = (),
        failure: Sequence[pb.RequestOp] = (),
    ) -> pb.TxnResponse:
        request = pb.TxnRequest(compare=list(compare), success=list(success), failure=list(failure))
        return await self._unary("KV", "Txn", request)  # type: ignore[return-value]

    # ----------------------------------------------------------------------------------------------
    # Lease, Maintenance, Cluster

    async def grant(self, ttl: int) -> tuple[int, int]:
        """A new lease: its ID and the TTL etcd granted (etcd raises too short a TTL to its minimum)."""
        response: pb.LeaseGrantResponse = await self._unary("Lease", "LeaseGrant", pb.LeaseGrantRequest(TTL=ttl))  # type: ignore[assignment]
        if response.error:
            raise EtcdError(f"lease not granted: {response.error}")
        return response.ID, response.TTL

    async def revoke(self, lease: int) -> None:
        await self._unary("Lease", "LeaseRevoke", pb.LeaseRevokeRequest(ID=lease))

    async def status(self, endpoint_index: int, timeout: float) -> pb.StatusResponse:
        """The Status of one member, asked of that member alone (for health displays)."""
        stub = pb_grpc.MaintenanceStub(self._channels[endpoint_index])
        return await stub.Status(pb.StatusRequest(), timeout=timeout)  # type: ignore[no-any-return]

    async def members(self) -> pb.MemberListResponse:
        return await self._unary("Cluster", "MemberList", pb.MemberListRequest())  # type: ignore[return-value]

    async def keepalive(self, lease: int, ttl: int) -> AsyncIterator[int]:
        """Keep ``lease`` alive: yields the TTL of each answer (0 once etcd has no such lease, then ends).

        Raises EtcdUnavailable when the member stops answering; the caller knows the lease is safe only until the
        last answer plus its TTL, and may call again (on the next endpoint).
        """
        index = self._current
        stub = pb_grpc.LeaseStub(self._channels[index])
        call = stub.LeaseKeepAlive(metadata=_HASLEADER)
        interval = max(0.2, ttl / 3)
        try:
            while True:
                await call.write(pb.LeaseKeepAliveRequest(ID=lease))
                async with asyncio.timeout(max(1.0, ttl / 2)):
                    response = await call.read()
                if response is grpc.aio.EOF:
                    raise EtcdUnavailable(f"{self.endpoints[index]}: keepalive stream ended")
                yield response.TTL
                if response.TTL <= 0:
                    return
                await asyncio.sleep(interval)
        except (grpc.aio.AioRpcError, TimeoutError, asyncio.InvalidStateError) as exc:
            self._rotate(index)
            raise EtcdUnavailable(f"{self.endpoints[index]}: keepalive: {_stream_failure(exc)}") from None
        finally:
            call.cancel()

    # ----------------------------------------------------------------------------------------------
    # Watch

    async def watch(self, prefix: bytes, start_revision: int) -> AsyncIterator[pb.WatchResponse]:
        """The changes under ``prefix`` from ``start_revision`` on, one WatchResponse per batch (fragments put back
        together); progress notifications come through with no events.

        Ends by raising EtcdUnavailable (the member failed or lost its leader) or EtcdError with
        ``compacted`` set when ``start_revision`` was compacted away.
        """
        index = self._current
        stub = pb_grpc.WatchStub(self._channels[index])
        call = stub.Watch(metadata=_HASLEADER)
        create = pb.WatchCreateRequest(
            key=prefix, range_end=prefix_end(prefix), start_revision=start_revision, progress_notify=True, fragment=True
        )
        try:
            await call.write(pb.WatchRequest(create_request=create))
            partial: pb.WatchResponse | None = None
            while True:
                response = await call.read()
                if response is grpc.aio.EOF:
                    raise EtcdUnavailable(f"{self.endpoints[index]}: watch stream ended")
                if response.compact_revision:
                    raise WatchCompacted(response.compact_revision)
                if response.canceled:
                    raise EtcdUnavailable(f"{self.endpoints[index]}: watch canceled: {response.cancel_reason}")
                if response.created and not response.events:
                    continue
                if response.fragment:
                    if partial is None:
                        partial = response
                    else:
                        partial.events.extend(response.events)
                    continue
                if partial is not None:
                    partial.events.extend(response.events)
                    partial.header.CopyFrom(response.header)
                    response, partial = partial, None
                yield response
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
            self._rotate(index)
            raise EtcdUnavailable(f"{self.endpoints[index]}: watch: {_stream_failure(exc)}") from None
        finally:
            call.cancel()


class WatchCompacted(EtcdError):
    """The watch started at a revision etcd has compacted away; ``revision`` is the oldest one it still has."""

    def __init__(self, revision: int) -> None:
        super().__init__(f"revision compacted (oldest kept: {revision})")
        self.revision = revision


# --------------------------------------------------------------------------------------------------
# Building requests


def put_op(key: bytes, value: bytes, lease: int = 0) -> pb.RequestOp:
    return pb.RequestOp(request_put=pb.PutRequest(key=key, value=value, lease=lease))


def delete_op(key: bytes, range_end: bytes = b"") -> pb.RequestOp:
    return pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=key, range_end=range_end))


def get_op(key: bytes) -> pb.RequestOp:
    return pb.RequestOp(request_range=pb.RangeRequest(key=key))


def created_at(key: bytes, revision: int) -> pb.Compare:
    """The compare "``key`` was created at ``revision``" (0: "``key`` does not exist")."""
    return pb.Compare(result=pb.Compare.EQUAL, target=pb.Compare.CREATE, key=key, create_revision=revision)
