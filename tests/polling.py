"""How the tests wait: poll a condition until it holds, and fail with what was awaited once a deadline passes.

There is no fixed sleep anywhere else in the tests; the only pause is the polling interval here. Importable from
every test directory because tests/conftest.py puts this directory on sys.path.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def wait_for(
    condition: Callable[[], Awaitable[object] | object],
    timeout: float = 10.0,
    what: str | None = None,
    *,
    describe: Callable[[], str] | None = None,
    interval: float = 0.05,
) -> Any:
    """Poll ``condition`` (sync or async) until it returns a true value, which is returned.

    After ``timeout`` seconds the test fails, naming ``what`` (or the condition) and what ``describe()`` tells.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            state = f"; {describe()}" if describe is not None else ""
            raise AssertionError(f"not within {timeout:g}s: {what or getattr(condition, '__name__', condition)}{state}")
        await asyncio.sleep(interval)


def wait_until(condition: Callable[[], Any], timeout: float, what: str, *, interval: float = 0.2) -> Any:
    """The same without an event loop; an exception from ``condition`` (a refused connection...) means not yet."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = condition()
        except Exception as exc:
            last = exc
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g}s: {what} (last: {last!r})")
        time.sleep(interval)
