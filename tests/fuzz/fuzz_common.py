"""What the fuzz targets share: what counts as a crash, and the per-input deadline.

A *crash* is either
  - an exception escaping the code under test other than the rejection error that code documents for bad input
    (``InvalidMessage`` from the wire decoder, ``InvalidBlock`` from a block check, ``ChannelConfigError`` from a
    config block reader ...; a ``GossipNode``/``PeerCore`` handler documents none: it must drop bad input, count
    it, and go on), or
  - an ``InvariantViolation``: the code accepted what it must not (a decoder returning a message with an illegal
    tag, a peer forwarding a message its origin did not sign, committing a block that does not verify).
A *hang* is an input that runs longer than ``HANG_SECONDS``.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Protocol

from fuzz_mutate import Chooser

HANG_SECONDS = 5.0
"""An input taking longer than this is a hang: the slowest legitimate input takes milliseconds."""


class InvariantViolation(AssertionError):
    """The code under test accepted, produced or stored something it must not."""


class Hang(BaseException):
    """Raised by the watchdog inside an input that overran its deadline (a BaseException, so that no
    ``except Exception`` in the code under test swallows it)."""


class Target(Protocol):
    """One fuzz target: each ``run`` builds one input from ``c``, feeds it, and returns what became of it.

    The outcome is a short label ("accepted", "rejected", "shell-rejected", ...) for the statistics. A crash
    escapes as an exception: the expected rejection errors never do.
    """

    name: str

    def run(self, c: Chooser) -> str: ...


def check(condition: bool, what: str) -> None:
    if not condition:
        raise InvariantViolation(what)


@contextlib.contextmanager
def watchdog(seconds: float) -> Iterator[None]:
    """Raise ``Hang`` in the body once it has run ``seconds`` of wall time (main thread only, SIGALRM).

    The long run uses it so that an endless loop is reported and the run goes on. The pytest suite measures
    each input's time instead: pytest-timeout owns SIGALRM there.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise Hang(f"input ran longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
