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

Storage failures: a write the file system refuses (disk full, an I/O error, a file system remounted read-only)
raises ``LedgerStorageError``, a ``LedgerError`` whose message names what could not be stored, why and where
("cannot store block 7 of channel mychannel: disk full at /var/.../ledger.sqlite"). Nothing of that call is
stored and the ledger's height is unchanged, so the same call may simply be made again once space returns.
Every other ``LedgerError`` is about the blocks or the file's contents, and retrying it changes nothing.
``probe`` makes a small write transaction, for a writer to learn at start whether the disk takes writes.

Access is serialized by a lock so the peer may call from its event loop or a
worker thread.
"""

from __future__ import annotations

import contextlib
import errno
import os
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
CREATE TABLE IF NOT EXISTS txids (
    channel TEXT NOT NULL,
    tx_id TEXT NOT NULL,
    number INTEGER NOT NULL,
    position INTEGER NOT NULL,
    PRIMARY KEY (channel, tx_id, number, position)
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


class LedgerStorageError(LedgerError):
    """The file system refused a write (disk full, I/O error, read-only): nothing of the call was stored, and the
    same call may succeed once the cause is gone. ``reason`` is the cause alone ("disk full"), ``path`` the file."""

    def __init__(self, message: str, reason: str, path: Path) -> None:
        super().__init__(message)
        self.reason = reason
        self.path = path


# SQLite's primary result codes (an extended code carries one in its low byte) that mean the file system, not
# the data, refused: SQLITE_IOERR, SQLITE_FULL, SQLITE_READONLY.
_STORAGE_CODES = frozenset({sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL, sqlite3.SQLITE_READONLY})


def storage_reason(exc: BaseException, path: Path) -> str | None:
    """Why the file system refused a write to ``path`` ("disk full", "I/O error", "read-only file system"), or
    None when ``exc`` is not a storage failure (a corrupt file, a constraint, a bug)."""
    if isinstance(exc, OSError):
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return "disk full"
        if exc.errno == errno.EROFS:
            return "read-only file system"
        return f"I/O error ({exc.strerror or exc})" if exc.errno == errno.EIO else None
    code = getattr(exc, "sqlite_errorcode", None)
    if not isinstance(exc, sqlite3.DatabaseError) or code is None or code & 0xFF not in _STORAGE_CODES:
        return None
    if code & 0xFF == sqlite3.SQLITE_READONLY:
        return "read-only file system" if _read_only(path) else None
    # SQLite reports a full disk as SQLITE_FULL when a write of the database or its journal runs out of space,
    # but as a plain I/O error when growing its shared-memory index (-shm) does: the free space tells.
    if code & 0xFF == sqlite3.SQLITE_FULL or _no_space(path):
        return "disk full"
    return f"I/O error ({exc.sqlite_errorname})"  # type: ignore[attr-defined]


def _no_space(path: Path) -> bool:
    try:
        stat = os.statvfs(path.parent)
    except OSError:
        return False
    return stat.f_bavail == 0 or stat.f_favail == 0


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path.parent).f_flag & os.ST_RDONLY)
    except OSError:
        return False


class Ledger:
    """Blocks per channel, committed in order and durable once ``commit`` returns."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        db: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
        except (sqlite3.DatabaseError, OSError) as exc:
            if db is not None:
                db.close()
            raise self._error(exc, "cannot open ledger", f"cannot open ledger {self.path}") from None
        self._db = db
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
            raise self._error(exc, "cannot read ledger", f"ledger {self.path} is damaged") from None
        for channel, number, header_hash in rows:
            self._tips[channel] = (number + 1, header_hash)
        self._index_old_blocks()

    def _index_old_blocks(self) -> None:
        """Ledgers written before the tx-id index (user_version 0) are indexed once, 500 blocks per transaction."""
        if self._db.execute("PRAGMA user_version").fetchone()[0] >= _INDEXED_VERSION:
            return
        try:
            for channel in list(self._tips):
                start = 0
                while True:
                    batch = self._db.execute(
                        "SELECT number, block FROM blocks WHERE channel = ? AND number >= ? ORDER BY number LIMIT 500",
                        (channel, start),
                    ).fetchall()
                    if not batch:
                        break
                    rows = [r for number, raw in batch for r in _tx_rows(channel, number, raw)]
                    self._db.execute("BEGIN IMMEDIATE")
                    self._db.executemany("INSERT OR IGNORE INTO txids VALUES (?, ?, ?, ?)", rows)
                    self._db.execute("COMMIT")
                    start = batch[-1][0] + 1
            self._db.execute(f"PRAGMA user_version = {_INDEXED_VERSION}")
        except sqlite3.DatabaseError as exc:
            self._rollback()
            self._db.close()
            raise self._error(exc, "cannot index ledger", f"ledger {self.path}: cannot build the tx-id index") from None

    def find_tx(self, channel: str, tx_id: str) -> list[tuple[int, int]]:
        """(block number, position in the block) of each envelope of ``channel`` with this transaction ID."""
        with self._lock:
            return [
                (number, position)
                for number, position in self._db.execute(
                    "SELECT number, position FROM txids WHERE channel = ? AND tx_id = ? ORDER BY number, position",
                    (channel, tx_id.lower()),
                )
            ]

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
                raise self._error(exc, "cannot read ledger", f"ledger {self.path} is damaged") from None

    def probe(self) -> None:
        """Raise LedgerStorageError unless a small write transaction commits: whether the disk takes writes now.

        It adds a row to the pending queue and deletes it again in one transaction, which leaves the contents as
        they were but makes SQLite write and fsync a page of its journal, as a block's commit would.
        """
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute("INSERT INTO pending VALUES ('', -1, x'')")
                self._db.execute("DELETE FROM pending WHERE channel = '' AND seq = -1")
                self._db.execute("COMMIT")
            except sqlite3.DatabaseError as exc:
                self._rollback()
                raise self._error(exc, "cannot write", f"cannot write ledger {self.path}") from None

    def _error(self, exc: sqlite3.DatabaseError | OSError, what: str, otherwise: str) -> LedgerError:
        """The error to raise for ``exc``: a LedgerStorageError "<what>: <reason> at <path>" when the file system
        refused, else a LedgerError "<otherwise>: <exc>"."""
        reason = storage_reason(exc, self.path)
        if reason is None:
            return LedgerError(f"{otherwise}: {exc}")
        return LedgerStorageError(f"{what}: {reason} at {self.path}", reason, self.path)

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
            tx_rows = [r for i, raw in enumerate(blocks) for r in _tx_rows(channel, height + i, raw)]
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany("INSERT INTO blocks VALUES (?, ?, ?, ?)", rows)
                self._db.executemany("INSERT OR IGNORE INTO txids VALUES (?, ?, ?, ?)", tx_rows)
                if consumed_through is not None:
                    self._db.execute("DELETE FROM pending WHERE channel = ? AND seq <= ?", (channel, consumed_through))
                self._db.execute("COMMIT")
            except sqlite3.DatabaseError as exc:
                self._rollback()
                what = f"block {height}" if len(blocks) == 1 else f"blocks {height}-{height + len(blocks) - 1}"
                raise self._error(
                    exc, f"cannot store {what} of channel {channel}", f"channel {channel}: cannot store blocks"
                ) from None
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
                raise self._error(
                    exc, f"cannot store {len(items)} envelopes", "cannot store pending envelopes"
                ) from None
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


_INDEXED_VERSION = 1
"""PRAGMA user_version of a ledger whose txids table covers every block."""


def _tx_rows(channel: str, number: int, raw: bytes) -> list[tuple[str, str, int, int]]:
    """The tx-id index rows of one block: (channel, tx id, block number, position) of each envelope naming one.
    An envelope whose header does not decode has no row (the block is stored as it is all the same)."""
    block = common_pb2.Block()
    block.ParseFromString(raw)
    rows = []
    for position, data in enumerate(block.data.data):
        try:
            envelope = common_pb2.Envelope.FromString(data)
            payload = common_pb2.Payload.FromString(envelope.payload)
            tx_id = common_pb2.ChannelHeader.FromString(payload.header.channel_header).tx_id
        except Exception:  # protobuf raises DecodeError and, for some inputs, other errors
            continue
        if tx_id:
            rows.append((channel, tx_id.lower(), number, position))
    return rows


def _decode_header(raw: bytes) -> common_pb2.BlockHeader:
    block = common_pb2.Block()
    try:
        block.ParseFromString(raw)
    except Exception as exc:  # protobuf raises DecodeError and, for some inputs, other errors
        raise LedgerError(f"undecodable block: {exc}") from None
    if not block.HasField("header"):
        raise LedgerError("block has no header")
    return block.header
