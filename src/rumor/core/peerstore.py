"""Where a peer keeps the members it knew, so that after a restart it finds its network without bootstrap.

Discovery saves its known members (PKI-ID, the endpoint to dial, the identity when known) whenever the
membership changed, at most once per ``persist_interval`` of its clock, and once more when it stops. At
start it loads them and dials each one as it dials a bootstrap peer.

Two implementations of the ``PeerStore`` port:

* ``MemoryPeerStore``: a list in memory; the simulator hands the same object to a node's successor
  after a crash, standing in for the disk.
* ``SqlitePeerStore``: one SQLite table at a path the shell chooses. SQLite is a synchronous local
  interface, like the ledger, so the core may call it; the throttling keeps it off the hot path.
  Each save replaces the whole table in one transaction, so a crash leaves the previous list or the new
  one, never half of each.

A store that cannot save or load (disk full, I/O error) raises ``PeerStoreError``; discovery then keeps its
members in memory and tries again later: the list only spares a restart its bootstrap, it never stops a peer.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Sequence
from typing import NamedTuple, Protocol


class PeerStoreError(Exception):
    """The store could not save or load the list; the message says which file and why."""


class StoredPeer(NamedTuple):
    """A remembered member: enough to dial it, and its identity to check its messages before it resends it."""

    pki_id: bytes
    endpoint: str
    identity: bytes | None = None


class PeerStore(Protocol):
    def load(self) -> list[StoredPeer]:
        """The members saved last (empty when nothing was saved yet)."""
        ...

    def save(self, peers: Sequence[StoredPeer]) -> None:
        """Replace what is stored by ``peers``."""
        ...


class MemoryPeerStore:
    """A peer store that lives as long as the object (the simulator keeps it across restarts)."""

    def __init__(self, peers: Sequence[StoredPeer] = ()) -> None:
        self.peers: list[StoredPeer] = list(peers)
        self.saves = 0

    def load(self) -> list[StoredPeer]:
        return list(self.peers)

    def save(self, peers: Sequence[StoredPeer]) -> None:
        self.peers = [StoredPeer(*p) for p in peers]
        self.saves += 1


class SqlitePeerStore:
    """Known members in one SQLite table; the file and its table are created on first use."""

    _SCHEMA = "CREATE TABLE IF NOT EXISTS peers (pki_id BLOB PRIMARY KEY, endpoint TEXT NOT NULL, identity BLOB)"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)

    def _connect(self) -> sqlite3.Connection:
        # A connection per call: saves are rare, and no connection then outlives a thread or a fork.
        conn = sqlite3.connect(self.path)
        conn.execute(self._SCHEMA)
        return conn

    def load(self) -> list[StoredPeer]:
        try:
            with contextlib.closing(self._connect()) as conn:
                rows = conn.execute("SELECT pki_id, endpoint, identity FROM peers ORDER BY rowid").fetchall()
        except (sqlite3.Error, OSError) as exc:
            raise PeerStoreError(f"cannot read the known peers from {self.path}: {exc}") from None
        return [
            StoredPeer(bytes(pki), endpoint, bytes(ident) if ident is not None else None)
            for pki, endpoint, ident in rows
        ]

    def save(self, peers: Sequence[StoredPeer]) -> None:
        try:
            with contextlib.closing(self._connect()) as conn, conn:
                conn.execute("DELETE FROM peers")
                conn.executemany(
                    "INSERT OR REPLACE INTO peers (pki_id, endpoint, identity) VALUES (?, ?, ?)",
                    [(p.pki_id, p.endpoint, p.identity) for p in peers],
                )
        except (sqlite3.Error, OSError) as exc:
            raise PeerStoreError(f"cannot save the known peers to {self.path}: {exc}") from None
