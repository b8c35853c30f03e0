"""One authenticated gossip stream: a reader task, a writer task and a bounded outgoing queue.

    send() --put_nowait--> [queue: sendBuffSize frames] --writer task--> stream.write
    stream.read --reader task--> on_frame(conn, frame)   (decoding and dispatch belong to the owner)

``run()`` supervises both tasks and returns once the connection is over, for one
of four reasons: the remote ended the stream (EOF), the stream broke (an error
from gRPC), we closed it (``close``), or it was superseded by a newer connection
to the same peer. A full queue never blocks the caller: the frame is dropped,
counted, and one log line covers a whole burst of drops. Frames are serialized
envelopes, so one message sent to many peers is encoded once.

The stream itself is an adapter (``Stream``) over either side of the gRPC call:
the dialer's StreamStreamCall or the acceptor's servicer context.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from grpc import aio

from rumor.comm.handshake import ConnectionInfo

log = logging.getLogger("rumor.comm")

GRACEFUL_CLOSE_SECONDS = 1.0
"""How long a connection we close waits for the remote to end the half-closed stream before cancelling it:
a remote that answers ends it within a round trip, and one that does not must not hold up a stop for long."""


class Stream(Protocol):
    async def read(self) -> bytes | None:
        """The next frame, or None at the end of the stream. Raises StreamBroken on error."""
        ...

    async def write(self, frame: bytes) -> None: ...

    async def end_writing(self) -> bool:
        """Tell the remote we write no more (a clean end, not a cancellation). True when the remote is expected
        to end the stream in answer, so that reading on until EOF completes it; False when ending the stream is
        ours to do by ``close``."""
        ...

    async def close(self) -> None:
        """End the stream from our side; idempotent."""
        ...


class StreamBroken(Exception):
    """The stream failed (as opposed to ending cleanly)."""


class WriteTimedOut(StreamBroken):
    """A write took longer than writeTimeout: the remote stopped reading (counted apart, an operator wants to know)."""


def describe_rpc_error(exc: BaseException) -> str:
    if isinstance(exc, aio.AioRpcError):
        details = exc.details() or ""
        return f"{exc.code().name}: {details}" if details else exc.code().name
    return f"{type(exc).__name__}: {exc}"


class ClientStream:
    """The dialer's end: a GossipStream call on a channel owned by this connection."""

    def __init__(self, channel: aio.Channel, call: Any) -> None:
        self._channel = channel
        self._call = call
        self._closed = False

    async def read(self) -> bytes | None:
        try:
            frame = await self._call.read()
        except aio.AioRpcError as exc:
            raise StreamBroken(describe_rpc_error(exc)) from None
        if frame is aio.EOF:
            code = await self._call.code()
            if code != grpc.StatusCode.OK:
                raise StreamBroken(f"{code.name}: {await self._call.details()}")
            return None
        return frame  # type: ignore[no-any-return]

    async def write(self, frame: bytes) -> None:
        try:
            await self._call.write(frame)
        except aio.AioRpcError as exc:
            raise StreamBroken(describe_rpc_error(exc)) from None
        except asyncio.InvalidStateError as exc:
            raise StreamBroken(f"stream already finished: {exc}") from None

    async def end_writing(self) -> bool:
        # A half-close: the acceptor reads EOF, returns from its handler, and the call ends with status OK.
        # Cancelling the call instead looks, on the far end, just like a peer whose connection was lost.
        try:
            await self._call.done_writing()
        except (aio.AioRpcError, aio.UsageError, asyncio.InvalidStateError):
            return False
        return True

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._call.cancel()
        await self._channel.close()


class ServerStream:
    """The acceptor's end: the servicer context of a GossipStream call we are serving."""

    def __init__(self, context: aio.ServicerContext) -> None:
        self._context = context

    async def read(self) -> bytes | None:
        try:
            frame = await self._context.read()
        except aio.AioRpcError as exc:
            raise StreamBroken(describe_rpc_error(exc)) from None
        except (asyncio.InvalidStateError, grpc.RpcError) as exc:
            raise StreamBroken(str(exc) or type(exc).__name__) from None
        if frame is aio.EOF:
            return None
        return frame  # type: ignore[no-any-return]

    async def write(self, frame: bytes) -> None:
        try:
            await self._context.write(frame)
        except (asyncio.InvalidStateError, grpc.RpcError) as exc:
            raise StreamBroken(str(exc) or type(exc).__name__) from None

    async def end_writing(self) -> bool:
        # An accepted stream ends, with status OK, when the serving coroutine returns: nothing to wait for.
        return False

    async def close(self) -> None:
        # The serving coroutine returning is what ends an accepted stream; nothing to do here.
        return None


class EndReason(enum.Enum):
    EOF = "ended by the remote"
    BROKEN = "broken"
    CLOSED = "closed"
    SUPERSEDED = "superseded by a newer connection"

    @property
    def remote_caused(self) -> bool:
        return self in (EndReason.EOF, EndReason.BROKEN)


@dataclass(frozen=True, slots=True)
class Ending:
    reason: EndReason
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.detail}" if self.detail else self.reason.value


class Connection:
    """A live, authenticated stream to one peer."""

    def __init__(
        self,
        info: ConnectionInfo,
        stream: Stream,
        *,
        send_buff_size: int,
        established_at: float,
        send_buff_bytes: int = 16 * 1024 * 1024,
        write_timeout: float = 30.0,
        recv_buff_size: int = 20,
        on_frame: Callable[[Connection, bytes], None],
        on_sent: Callable[[Connection, bytes], None],
        on_overflow: Callable[[Connection, bytes], None],
    ) -> None:
        self.info = info
        self.established_at = established_at
        self._stream = stream
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=send_buff_size)
        self._max_bytes = send_buff_bytes
        self._queued_bytes = 0
        self._write_timeout = write_timeout
        self._on_frame = on_frame
        self._on_sent = on_sent
        self._on_overflow = on_overflow
        self._close_request: asyncio.Future[Ending] = asyncio.get_running_loop().create_future()
        self._ending: Ending | None = None
        self._finished = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self._burst_drops = 0
        self._writing: bytes | None = None
        self._interrupted: bytes | None = None
        self._recv_buff_size = recv_buff_size
        self._held = 0
        self._receivable = asyncio.Event()
        self._receivable.set()
        self.invalid_times: deque[float] = deque()
        self.registered = False
        """Set once the connection store made this the connection to its peer."""
        self.retired = False
        """Set when another connection to the same peer won; this one only reads until it is closed."""
        self.write_timed_out = False
        """Set when the connection ended because one write outlasted writeTimeout."""

    @property
    def pki_id(self) -> bytes:
        return self.info.pki_id

    @property
    def closing(self) -> bool:
        return self._close_request.done() or self._ending is not None

    @property
    def ending(self) -> Ending | None:
        return self._ending

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    def enqueue(self, frame: bytes) -> bool:
        """Queue ``frame`` for sending without waiting; False (and counted by the owner) when it was dropped."""
        if self.closing:
            return False
        try:
            if self._queued_bytes and self._queued_bytes + len(frame) > self._max_bytes:
                raise asyncio.QueueFull
            self._queue.put_nowait(frame)
            self._queued_bytes += len(frame)
        except asyncio.QueueFull:
            self._burst_drops += 1
            if self._burst_drops == 1:
                log.warning(
                    "outgoing queue to %s (%s) is full (%d messages, %d bytes): dropping messages",
                    self.info.pki_id.hex()[:16],
                    self.info.endpoint,
                    self._queue.qsize(),
                    self._queued_bytes,
                )
            self._space.clear()
            self._on_overflow(self, frame)
            return False
        if self._burst_drops:
            log.warning(
                "outgoing queue to %s (%s) accepts messages again; %d dropped meanwhile",
                self.info.pki_id.hex()[:16],
                self.info.endpoint,
                self._burst_drops,
            )
            self._burst_drops = 0
        if self._queue.full() or self._queued_bytes > self._max_bytes // 2:
            self._space.clear()
        return True

    def take_queued(self) -> list[bytes]:
        """Remove and return the frames not yet written: a replacing connection takes them, or they are counted
        as dropped once this one is over (with the frame whose write was cut short, if any)."""
        frames: list[bytes] = []
        if self._interrupted is not None:
            frames.append(self._interrupted)
            self._interrupted = None
        while not self._queue.empty():
            frames.append(self._queue.get_nowait())
        self._queued_bytes = 0
        return frames

    async def writable(self) -> None:
        """Wait until the outgoing queue is at most half full (or the connection is over)."""
        while not self._space.is_set() and not self.closing:
            waiter = asyncio.ensure_future(self._space.wait())
            try:
                await asyncio.wait({waiter, self._close_request}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()

    def close(self, ending: Ending | EndReason = EndReason.CLOSED) -> None:
        """Ask the connection to end; ``run`` returns soon after. Idempotent: the first reason wins."""
        if isinstance(ending, EndReason):
            ending = Ending(ending)
        if not self._close_request.done():
            self._close_request.set_result(ending)

    async def wait_finished(self) -> None:
        await self._finished.wait()

    async def run(self) -> Ending:
        """Serve the stream until it ends; returns why. Both tasks are finished when this returns."""
        reader = asyncio.ensure_future(self._read_loop())
        writer = asyncio.ensure_future(self._write_loop())
        ending: Ending | None = None
        try:
            done, _ = await asyncio.wait({reader, writer, self._close_request}, return_when=asyncio.FIRST_COMPLETED)
            if self._close_request.done():
                ending = self._close_request.result()
                await self._end_cleanly(reader, writer)
            else:
                task = reader if reader in done else writer
                # grpc.aio raises CancelledError from read/write when the call itself was cancelled.
                exc = asyncio.CancelledError() if task.cancelled() else task.exception()
                if isinstance(exc, asyncio.CancelledError):
                    ending = Ending(EndReason.BROKEN, "stream cancelled")
                elif exc is None:
                    ending = Ending(EndReason.EOF)
                elif isinstance(exc, StreamBroken):
                    self.write_timed_out = isinstance(exc, WriteTimedOut)
                    ending = Ending(EndReason.BROKEN, str(exc))
                else:
                    ending = Ending(EndReason.BROKEN, f"{type(exc).__name__}: {exc}")
                    log.error("connection to %s failed unexpectedly", self.info.endpoint, exc_info=exc)
        except asyncio.CancelledError:
            if self._close_request.done():
                ending = self._close_request.result()
            else:
                # Nobody asked us to close: gRPC cancels an accepted stream's handler when the remote
                # cancels the call or the connection is lost.
                ending = Ending(EndReason.BROKEN, "stream cancelled")
            raise
        finally:
            self._ending = ending or Ending(EndReason.CLOSED)
            if not self._close_request.done():
                self._close_request.set_result(self._ending)
            for task in (reader, writer):
                task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.gather(reader, writer, return_exceptions=True)
            # A write cut short may or may not have reached the remote; the owner counts it with the unsent.
            self._interrupted, self._writing = self._writing, None
            with contextlib.suppress(Exception):
                await self._stream.close()
            self._space.set()
            self._finished.set()
        return self._ending

    async def _end_cleanly(self, reader: asyncio.Future[None], writer: asyncio.Future[None]) -> None:
        """We close: end the stream in a way the remote tells apart from a lost connection (a half-close
        answered by the remote's end of the call), so that it sees a peer that left, not a broken stream.
        grpc.aio cancels the whole call when a task waiting in read or write is cancelled, so the writer is
        stopped only while it waits for a frame, and the reader is left to read up to the remote's end."""
        if self._writing is not None or reader.done() or writer.done():
            return  # a write in progress (or a stream already over): cancelling is all that is left
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
        # What still arrives is read only to reach the end; held messages must not keep the reader waiting.
        self._receivable.set()
        try:
            answered = await self._stream.end_writing()
        except Exception:  # a stream that cannot half-close is cancelled by the caller's cleanup instead
            return
        if answered:
            await asyncio.wait({reader}, timeout=GRACEFUL_CLOSE_SECONDS)

    def hold(self) -> Callable[[], None]:
        """Count one received message as waiting to be handled; returns the call that ends its wait. While
        recvBuffSize of them wait, the reader stops reading: HTTP/2 flow control then slows the sender, and a
        peer that floods us delays only its own messages."""
        self._held += 1
        if self._held >= self._recv_buff_size:
            self._receivable.clear()
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            self._held -= 1
            if self._held < self._recv_buff_size:
                self._receivable.set()

        return release

    @property
    def held(self) -> int:
        return self._held

    async def _read_loop(self) -> None:
        while True:
            await self._receivable.wait()
            frame = await self._stream.read()
            if frame is None:
                return
            if self._close_request.done():
                continue  # closing: read on to the remote's end, but hand nothing more to the owner
            self._on_frame(self, frame)

    async def _write_loop(self) -> None:
        queue = self._queue
        half = max(1, queue.maxsize // 2)
        while True:
            frame = await queue.get()
            self._queued_bytes -= len(frame)
            self._writing = frame
            try:
                async with asyncio.timeout(self._write_timeout):
                    await self._stream.write(frame)
            except TimeoutError:
                raise WriteTimedOut(
                    f"a write took more than {self._write_timeout:g}s: the peer does not read (writeTimeout)"
                ) from None
            self._writing = None
            self._on_sent(self, frame)
            if not self._space.is_set() and queue.qsize() <= half and self._queued_bytes <= self._max_bytes // 2:
                self._space.set()
