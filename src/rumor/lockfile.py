"""An exclusive lock on a data directory, so that two processes never share one identity and one ledger.

``DirectoryLock(path).acquire()`` takes an advisory ``flock`` on ``path/LOCK`` (without waiting) and writes the
holder's PID into it; a second holder gets ``DirectoryLocked`` naming that PID. The kernel drops the lock when
the process exits in any way (kill -9 included), so a stale LOCK file never blocks a restart. Readers that only
look (``rumor block get`` on a running peer's ledger) do not take it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

__all__ = ["DirectoryLock", "DirectoryLocked"]


class DirectoryLocked(Exception):
    """The directory is held by another process; the message says which."""


class DirectoryLock:
    def __init__(self, directory: Path | str, what: str = "rumor process", name: str = "LOCK") -> None:
        self.path = Path(directory) / name
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DirectoryLocked(
                f"{self.path.parent} is in use by another {self.what} (PID {holder}); stop it first, "
                "or give this one its own directory"
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            os.close(fd)  # a full disk cannot take the PID: the lock is not held, and the caller says why
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None
