"""A peer's block ledger on SQLite.

One database file holds every channel's chain. A block is accepted only when it
extends its channel's chain: its number equals the current height and its
header's previous_hash equals the hash of the last block's header (the DER
hash Fabric uses). Everything else is refused with ``LedgerError``, so a bug or
a lying peer upstream can never leave a gap or a fork on disk.

Durability: WAL journal with ``synchronous=FULL``; a commit call returns only
after SQLite's COMMIT, so a block reported committed survives kill -9 and power
loss, and a crash mid-commit leaves no partial block (the transaction rolls
back on the next open). ``commit_many`` writes a run of blocks in one
transaction, one fsync for the lot, which is what makes catch-up fast.

The ``pending`` table is the ordering service's queue of envelopes it acknowledged but has not cut into a block
yet: ``add_pending`` stores a burst of them in one transaction (the orderer answers SUCCESS only after it), and
``commit_many(..., consumed_through=seq)`` deletes those a block now holds in the block's own transaction, so an
envelope is always either pending or in a block, never lost and never both.

Access is serialized by a lock so the peer may call from its event loop or a
worker thread.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

from rumor.crypto.blocks import block_header_hash
from rumor.wire.pb.common import common_pb2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS blocks (
    channel TEXT NOT NULL,
    number INTEGER NOT NULL,
    header_hash BLOB NOT NULL,
    block BLOB NOT NULL,
    PRIMARY KEY (channel, number)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pending (
    channel TEXT NOT NULL,
    seq INTEGER NOT NULL,
    envelope BLOB NOT NULL,
    PRIMARY KEY (channel, seq)
) WITHOUT ROWID;
"""


MAX_NUMBER = 2**63 - 1
"""The largest block number SQLite can store (its INTEGER is signed 64-bit); a chain never gets near it."""


class LedgerError(Exception):
    """A block that does not extend its chain, or a ledger that cannot be opened."""


class Ledger:
    """Blocks per channel, committed in order and durable once ``commit`` returns."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"cannot open ledger {self.path}: {exc}") from None
        self._lock = threading.Lock()
        self._tips: dict[str, tuple[int, bytes]] = {}
        # Next pending sequence number per channel; numbers only grow within a process (a restart starts after
        # the highest one stored, or at 1 once the queue was emptied: they only order the queue, not blocks).
        self._pending_next: dict[str, int] = {}
        try:
            rows = self._db.execute(
                "SELECT channel, number, header_hash FROM blocks b WHERE number = "
                "(SELECT MAX(number) FROM blocks WHERE channel = b.channel)"
            ).fetchall()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise LedgerError(f"ledger {self.path} is damaged: {exc}") from None
        for channel, number, header_hash in rows:
            self._tips[channel] = (number + 1, header_hash)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def check(self, walk: int = 1000) -> None:
        """Raise LedgerError when the file is damaged: SQLite's quick_check over every page, each channel's blocks
        numbered without a hole, and the newest ``walk`` blocks of each channel decoded and chained by their
        stored header hashes. Bounded: quick_check reads the file once; the walk reads ``walk`` blocks."""
        with self._lock:
            try:
                problems = [row[0] for row in self._db.execute("PRAGMA quick_check(5)").fetchall()]
                if problems != ["ok"]:
                    raise LedgerError(f"ledger {self.path} is damaged: {'; '.join(problems)}")
                for channel, (height, last_hash) in sorted(self._tips.items()):
                    count = self._db.execute("SELECT COUNT(*) FROM blocks WHERE channel = ?", (channel,)).fetchone()[0]
                    if count != height:
                        raise LedgerError(
                            f"ledger {self.path} is damaged: channel {channel} has {count} blocks for height {height}"
                        )
                    rows = self._db.execute(
                        "SELECT number, header_hash, block FROM blocks "
                        "WHERE channel = ? AND number >= ? ORDER BY number",
                        (channel, max(0, height - walk)),
                    ).fetchall()
                    previous: bytes | None = None
                    for number, header_hash, raw in rows:
                        header = _decode_header(raw)
                        if header.number != number or block_header_hash(header) != header_hash:
                            raise LedgerError(f"ledger {self.path} is damaged: channel {channel} block {number}")
                        if previous is not None and header.previous_hash != previous:
                            raise LedgerError(
                                f"ledger {self.path} is damaged: channel {channel} block {number} does not chain"
                            )
                        previous = header_hash
                    if rows and previous != last_hash:
                        raise LedgerError(f"ledger {self.path} is damaged: channel {channel}'s last block")
            except sqlite3.DatabaseError as exc:
                raise LedgerError(f"ledger {self.path} is damaged: {exc}") from None

    def channels(self) -> list[str]:
        return sorted(self._tips)

    def height(self, channel: str) -> int:
        """Number of blocks of ``channel`` (the number the next block must carry)."""
        tip = self._tips.get(channel)
        return tip[0] if tip else 0

    def last_hash(self, channel: str) -> bytes:
        """Header hash of the newest block of ``channel`` (empty before the first block)."""
        tip = self._tips.get(channel)
        return tip[1] if tip else b""

    def commit(self, channel: str, block: bytes) -> None:
        """Append one serialized ``common.Block``; durable when this returns."""
        self.commit_many(channel, [block])

    def commit_many(self, channel: str, blocks: Sequence[bytes], *, consumed_through: int | None = None) -> None:
        """Append consecutive serialized blocks in one transaction: all of them or none.

        ``consumed_through`` (the orderer's): the pending envelopes of ``channel`` up to that sequence number are
        in these blocks, and leave the pending queue in the same transaction.
        """
        if not blocks:
            return
        with self._lock:
            height, prev_hash = self._tips.get(channel, (0, b""))
            hashes = check_chain(channel, height, prev_hash, blocks)
            rows = [(channel, height + i, h, raw) for i, (h, raw) in enumerate(zip(hashes, blocks, strict=True))]
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany("INSERT INTO blocks VALUES (?, ?, ?, ?)", rows)
                if consumed_through is not None:
                    self._db.execute("DELETE FROM pending WHERE channel = ? AND seq <= ?", (channel, consumed_through))
                self._db.execute("COMMIT")
            except sqlite3.DatabaseError as exc:
                self._rollback()
                raise LedgerError(f"channel {channel}: cannot store blocks: {exc}") from None
            self._tips[channel] = (height + len(blocks), hashes[-1])

    def _rollback(self) -> None:
        # SQLite rolls a transaction back by itself on some errors (disk full among them); a second ROLLBACK
        # would then fail with "no transaction is active" and hide the real error.
        if self._db.in_transaction:
            with contextlib.suppress(sqlite3.DatabaseError):
                self._db.execute("ROLLBACK")

    def add_pending(self, items: Sequence[tuple[str, bytes]]) -> list[int]:
        """Store envelopes awaiting a block, (channel, envelope) in order, in one transaction; their sequence
        numbers (per channel, increasing). Durable when this returns."""
        if not items:
            return []
        with self._lock:
            seqs: list[int] = []
            rows = []
            next_seq = dict(self._pending_next)
            for channel, envelope in items:
                seq = next_seq.get(channel)
                if seq is None:
                    row = self._db.execute("SELECT MAX(seq) FROM pending WHERE channel = ?", (channel,)).fetchone()
                    seq = row[0] + 1 if row is not None and row[0] is not None else 1
                next_seq[channel] = seq + 1
                seqs.append(seq)
                rows.append((channel, seq, envelope))
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany("INSERT INTO pending VALUES (?, ?, ?)", rows)
                self._db.execute("COMMIT")
            except sqlite3.DatabaseError as exc:
                self._rollback()
                raise LedgerError(f"cannot store pending envelopes: {exc}") from None
            self._pending_next = next_seq
            return seqs

    def pending(self, channel: str) -> list[tuple[int, bytes]]:
        """The envelopes of ``channel`` acknowledged but in no block yet, in order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, envelope FROM pending WHERE channel = ? ORDER BY seq", (channel,)
            ).fetchall()
        if rows:
            self._pending_next[channel] = max(self._pending_next.get(channel, 0), rows[-1][0] + 1)
        return [(seq, envelope) for seq, envelope in rows]

    def get_block(self, channel: str, number: int) -> bytes | None:
        """The serialized block ``number`` of ``channel``, or None when the ledger has none."""
        if not 0 <= number <= MAX_NUMBER:
            return None  # SQLite would refuse to bind it (OverflowError); no block can have that number anyway
        with self._lock:
            row = self._db.execute(
                "SELECT block FROM blocks WHERE channel = ? AND number = ?", (channel, number)
            ).fetchone()
        return row[0] if row else None

    def get_blocks(self, channel: str, start: int, end: int) -> list[bytes]:
        """Blocks ``start`` through ``end`` inclusive (as RemoteStateRequest counts), those the ledger has."""
        # A request names uint64 block numbers; SQLite binds only signed 64-bit ones (OverflowError beyond them).
        start, end = max(start, 0), min(end, MAX_NUMBER)
        if start > end:
            return []
        with self._lock:
            rows = self._db.execute(
                "SELECT block FROM blocks WHERE channel = ? AND number BETWEEN ? AND ? ORDER BY number",
                (channel, start, end),
            ).fetchall()
        return [row[0] for row in rows]

    def iter_blocks(self, channel: str, start: int = 0, batch: int = 100) -> Iterable[bytes]:
        """Every block from ``start`` on, read in batches."""
        number = start
        while True:
            chunk = self.get_blocks(channel, number, number + batch - 1)
            if not chunk:
                return
            yield from chunk
            number += len(chunk)


def check_chain(channel: str, height: int, prev_hash: bytes, blocks: Sequence[bytes]) -> list[bytes]:
    """Header hashes of ``blocks`` if they extend a chain of ``height`` blocks ending in ``prev_hash``.

    Raises LedgerError naming the first block that is undecodable, out of order or not chained.
    """
    hashes: list[bytes] = []
    for raw in blocks:
        header = _decode_header(raw)
        if header.number != height:
            raise LedgerError(f"channel {channel}: block {header.number} does not follow height {height}")
        if height > 0 and header.previous_hash != prev_hash:
            raise LedgerError(f"channel {channel}: block {header.number} does not chain to block {height - 1}")
        prev_hash = block_header_hash(header)
        hashes.append(prev_hash)
        height += 1
    return hashes


def _decode_header(raw: bytes) -> common_pb2.BlockHeader:
    block = common_pb2.Block()
    try:
        block.ParseFromString(raw)
    except Exception as exc:  # protobuf raises DecodeError and, for some inputs, other errors
        raise LedgerError(f"undecodable block: {exc}") from None
    if not block.HasField("header"):
        raise LedgerError("block has no header")
    return block.header
