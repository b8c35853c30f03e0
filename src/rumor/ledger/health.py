"""What a ledger's writer knows about its disk: the problems for /healthz, and a log that stays short.

A peer or an orderer whose disk is full retries its writes every few seconds for as long as it lasts, which may be
days. Each failed attempt is reported here under a key (a channel, or the orderer's "pending queue"):

    failed(key, reason, now)  the problem of ``key`` is now ``reason``; logged at once when it is the first
                              problem, then at most one line per ``log_interval`` whatever the number of keys and
                              attempts, that line counting the attempts that failed since the previous one
    stored(key)               a write of ``key`` succeeded: its problem is gone; once no key has one, one line
                              says so (when the failure was logged: a disk on the edge of full that fails and
                              succeeds in turn still writes at most two lines per ``log_interval``)
    problem()                 the problems, joined, for a health check (None when there is none)

Nothing here touches the disk or a clock: ``now`` comes in (monotonic seconds), as in the protocol core.
"""

from __future__ import annotations

import logging

__all__ = ["LOG_INTERVAL", "StorageHealth"]

LOG_INTERVAL = 60.0
"""Seconds between two log lines about a ledger that still cannot store."""


class StorageHealth:
    """The storage problems of one ledger's writer, keyed; see the module doc."""

    def __init__(self, log: logging.Logger, *, note: str, log_interval: float = LOG_INTERVAL) -> None:
        self.log = log
        self.note = note
        """What the writer does meanwhile, for the first line ("retrying every 5s; ...")."""
        self.log_interval = log_interval
        self.problems: dict[str, str] = {}
        self.failures = 0
        """Failed attempts since the writer started."""
        self._unlogged = 0  # failed attempts since the last line about them
        self._logged_at: float | None = None  # when the last line about a failure was written
        self._reported = False  # a failure was logged and its end not yet

    def problem(self) -> str | None:
        return "; ".join(self.problems.values()) if self.problems else None

    def failed(self, key: str, reason: str, now: float) -> None:
        self.problems[key] = reason
        self.failures += 1
        self._unlogged += 1
        if self._logged_at is not None and now - self._logged_at < self.log_interval:
            return
        if self._reported:
            self.log.error(
                "ledger: still failing: %s (%d attempts failed since the last report)", self.problem(), self._unlogged
            )
        else:
            self.log.error("ledger: %s; %s", reason, self.note)
        self._logged_at = now
        self._unlogged = 0
        self._reported = True

    def stored(self, key: str) -> None:
        if self.problems.pop(key, None) is None or self.problems:
            return
        if self._reported:  # one line per logged failure, not per recovery
            self.log.info("ledger: storing again (%s)", key)
            self._reported = False
        self._unlogged = 0
