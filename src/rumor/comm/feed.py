"""Bounded, non-blocking fan-out queues: subscriptions to received messages, and presumed-dead notices.

The producer (a connection's reader) must never wait for a consumer, so ``offer``
appends when there is room and otherwise refuses at once; the caller counts the
refusal. A consumer iterates with ``async for``; closing the feed lets it drain
what is queued and then ends the iteration.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Feed(Generic[T]):
    """A bounded queue with one consumer side: ``await get()`` or ``async for item in feed``."""

    def __init__(self, maxsize: int, on_close: Callable[[Feed[T]], None] | None = None) -> None:
        if maxsize < 1:
            raise ValueError("a feed needs room for at least one item")
        self.maxsize = maxsize
        self._items: deque[T] = deque()
        self._closed = False
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._on_close = on_close

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return len(self._items)

    def offer(self, item: T) -> bool:
        """Append ``item`` unless the feed is full or closed; never waits."""
        if self._closed or len(self._items) >= self.maxsize:
            return False
        self._items.append(item)
        self._wake_one()
        return True

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> None:
        """Stop accepting items; consumers get what is queued, then the iteration ends."""
        if self._closed:
            return
        self._closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
        if self._on_close is not None:
            self._on_close(self)

    async def get(self) -> T:
        """The next item; raises EOFError once the feed is closed and empty."""
        while not self._items:
            if self._closed:
                raise EOFError("feed closed")
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                # Pass a wake-up we may have consumed on to the next consumer.
                if waiter.done() and not waiter.cancelled() and self._items:
                    self._wake_one()
                raise
        return self._items.popleft()

    def get_nowait(self) -> T | None:
        return self._items.popleft() if self._items else None

    def __aiter__(self) -> Feed[T]:
        return self

    async def __anext__(self) -> T:
        try:
            return await self.get()
        except EOFError:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> Feed[T]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class Subscription(Feed[T]):
    """A feed of the received messages a predicate selects."""

    def __init__(
        self,
        predicate: Callable[[T], bool],
        maxsize: int,
        on_close: Callable[[Feed[T]], None] | None = None,
        *,
        backpressure: bool = False,
    ) -> None:
        super().__init__(maxsize, on_close)
        self.predicate = predicate
        self.backpressure = backpressure
        # Parallel to the queued items when backpressure is on: what to call once each item is taken (or dropped
        # with the feed), so that the connection it came from may read again.
        self._releases: deque[Callable[[], None]] = deque()

    def offer_held(self, item: T, release: Callable[[], None]) -> bool:
        """Like ``offer``; ``release`` is called once the item leaves the feed (taken, or the feed closed)."""
        if not self.offer(item):
            return False
        self._releases.append(release)
        return True

    async def get(self) -> T:
        item = await super().get()
        if self._releases:
            self._releases.popleft()()
        return item

    def get_nowait(self) -> T | None:
        item = super().get_nowait()
        if item is not None and self._releases:
            self._releases.popleft()()
        return item

    def close(self) -> None:
        super().close()
        # Items still queued may be read after close, but the connections they came from must not wait on it.
        while self._releases:
            self._releases.popleft()()
