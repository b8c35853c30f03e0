"""The ledger keeps each channel a gap-free, fork-free chain, durably."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from smallfs import small_filesystem

from rumor.crypto.blocks import block_header_hash, new_block
from rumor.ledger import Ledger, LedgerError, MemoryLedger
from rumor.ledger.store import LedgerStorageError, storage_reason


def chain(n: int, start: int = 0, prev: bytes = b"") -> list[bytes]:
    blocks = []
    for number in range(start, start + n):
        block = new_block(number, prev, [f"tx-{number}".encode()])
        prev = block_header_hash(block.header)
        blocks.append(block.SerializeToString())
    return blocks


@pytest.fixture(params=["sqlite", "memory"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Ledger | MemoryLedger:
    return Ledger(tmp_path / "ledger.db") if request.param == "sqlite" else MemoryLedger()


def test_commit_in_order_and_read_back(ledger: Ledger | MemoryLedger) -> None:
    blocks = chain(5)
    for raw in blocks[:3]:
        ledger.commit("ch", raw)
    ledger.commit_many("ch", blocks[3:])
    assert ledger.height("ch") == 5
    assert ledger.height("other") == 0
    assert ledger.get_block("ch", 2) == blocks[2]
    assert ledger.get_block("ch", 5) is None
    assert ledger.get_blocks("ch", 1, 3) == blocks[1:4]
    assert ledger.channels() == ["ch"]


def test_block_numbers_beyond_sqlite_integers_hold_nothing(ledger: Ledger | MemoryLedger) -> None:
    # Found by fuzzing (tests/fuzz): a RemoteStateRequest carries uint64 numbers, and SQLite binds only signed
    # 64-bit ones, so a request for blocks from 2^63 on raised OverflowError out of the peer's message handler.
    blocks = chain(3)
    ledger.commit_many("ch", blocks)
    assert ledger.get_blocks("ch", 2**63, 2**63 + 9) == []
    assert ledger.get_blocks("ch", 2**64 - 1, 2**64 - 1) == []
    assert ledger.get_blocks("ch", 1, 2**64 - 1) == blocks[1:]
    assert ledger.get_block("ch", 2**64 - 1) is None
    assert ledger.get_block("ch", -1) is None


def test_gap_fork_and_garbage_are_refused_and_leave_nothing(ledger: Ledger | MemoryLedger) -> None:
    blocks = chain(3)
    ledger.commit("ch", blocks[0])
    with pytest.raises(LedgerError, match="does not follow height 1"):
        ledger.commit("ch", blocks[2])
    fork = new_block(1, b"not-the-previous-hash", [b"evil"]).SerializeToString()
    with pytest.raises(LedgerError, match="does not chain"):
        ledger.commit("ch", fork)
    with pytest.raises(LedgerError, match=r"undecodable|no header"):
        ledger.commit("ch", b"\xff\xfe garbage")
    # a batch whose last block is bad is refused whole
    with pytest.raises(LedgerError):
        ledger.commit_many("ch", [blocks[1], fork])
    assert ledger.height("ch") == 1
    assert ledger.get_block("ch", 1) is None


def test_height_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    blocks = chain(4)
    ledger = Ledger(path)
    ledger.commit_many("a", blocks)
    ledger.commit_many("b", blocks[:2])
    ledger.close()
    again = Ledger(path)
    assert (again.height("a"), again.height("b")) == (4, 2)
    assert list(again.iter_blocks("a", 0, batch=3)) == blocks
    again.commit("b", blocks[2])  # the chain continues from the persisted tip
    third = new_block(0, b"", [])
    third.ParseFromString(blocks[2])
    assert again.height("b") == 3
    assert again.last_hash("b") == block_header_hash(third.header)


WRITER = textwrap.dedent(
    """
    import sys
    from rumor.crypto.blocks import block_header_hash, new_block
    from rumor.ledger import Ledger
    ledger = Ledger(sys.argv[1])
    prev, number = ledger.last_hash("ch"), ledger.height("ch")
    while True:
        batch = []
        for _ in range(3):
            block = new_block(number, prev, [b"x" * 2000])
            prev = block_header_hash(block.header)
            batch.append(block.SerializeToString())
            number += 1
        ledger.commit_many("ch", batch)
        print(number, flush=True)
    """
)


def test_kill_9_during_commits_leaves_a_consistent_chain(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    reported = 0
    for line in proc.stdout:  # wait until a good number of blocks were reported durable
        reported = int(line)
        if reported >= 150:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    ledger = Ledger(path)
    height = ledger.height("ch")
    assert height >= reported  # everything reported committed is there
    assert height % 3 == 0  # batches are all-or-nothing
    prev = b""
    for number, raw in enumerate(ledger.iter_blocks("ch")):
        block = new_block(0, b"", [])
        block.ParseFromString(raw)
        assert block.header.number == number
        assert block.header.previous_hash == prev
        prev = block_header_hash(block.header)
    assert number + 1 == height


def test_pending_envelopes_leave_the_queue_with_the_block_that_holds_them(tmp_path) -> None:  # type: ignore[no-untyped-def]

    ledger = Ledger(tmp_path / "l.sqlite")
    assert ledger.add_pending([("ch", b"a"), ("ch", b"b"), ("other", b"x"), ("ch", b"c")]) == [1, 2, 1, 3]
    ledger.commit("ch", new_block(0, b"", [b"genesis"]).SerializeToString())
    ledger.commit_many(
        "ch", [new_block(1, ledger.last_hash("ch"), [b"a", b"b"]).SerializeToString()], consumed_through=2
    )
    ledger.close()
    reopened = Ledger(tmp_path / "l.sqlite")  # what a restart after kill -9 finds
    assert reopened.pending("ch") == [(3, b"c")]
    assert reopened.pending("other") == [(1, b"x")]
    assert reopened.add_pending([("ch", b"d")]) == [4]  # numbers keep growing past those stored


def test_check_passes_an_intact_ledger_and_names_a_tampered_block(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    ledger = Ledger(path)
    ledger.commit_many("ch", chain(20))
    ledger.check()
    ledger.close()
    # A block rewritten behind the ledger's back (as a flipped sector inside the blob would): its header no longer
    # hashes to the stored hash, or the next block no longer chains.
    import sqlite3

    db = sqlite3.connect(path)
    other = new_block(7, b"not the previous hash", [b"forged"]).SerializeToString()
    db.execute("UPDATE blocks SET block = ? WHERE channel = 'ch' AND number = 7", (other,))
    db.commit()
    db.close()
    ledger = Ledger(path)
    with pytest.raises(LedgerError, match="damaged: channel ch block 7"):
        ledger.check()
    ledger.close()


def test_check_finds_a_missing_block(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    ledger = Ledger(path)
    ledger.commit_many("ch", chain(20))
    ledger.close()
    import sqlite3

    db = sqlite3.connect(path)
    db.execute("DELETE FROM blocks WHERE channel = 'ch' AND number = 3")
    db.commit()
    db.close()
    ledger = Ledger(path)
    with pytest.raises(LedgerError, match="19 blocks for height 20"):
        ledger.check()
    ledger.close()


# --- storage failures: a disk that refuses writes is told apart from a bad block --------------------------------


def big_chain(n: int, start: int, prev: bytes, size: int = 64 * 1024) -> list[bytes]:
    blocks = []
    for number in range(start, start + n):
        block = new_block(number, prev, [os.urandom(size)])  # random: SQLite cannot compress it away
        prev = block_header_hash(block.header)
        blocks.append(block.SerializeToString())
    return blocks


def test_a_full_database_is_a_storage_error_that_leaves_nothing_and_can_be_retried(tmp_path: Path) -> None:
    """SQLITE_FULL without a full disk: SQLite's page limit answers as a full disk would."""
    ledger = Ledger(tmp_path / "ledger.db")
    ledger.commit_many("ch", chain(2))
    pages = ledger._db.execute("PRAGMA page_count").fetchone()[0]
    ledger._db.execute(f"PRAGMA max_page_count = {pages + 4}")
    blocks = big_chain(3, 2, ledger.last_hash("ch"))
    with pytest.raises(LedgerStorageError) as caught:
        ledger.commit_many("ch", blocks)
    assert str(caught.value) == f"cannot store blocks 2-4 of channel ch: disk full at {tmp_path / 'ledger.db'}"
    assert caught.value.reason == "disk full" and isinstance(caught.value, LedgerError)
    assert ledger.height("ch") == 2 and ledger.get_block("ch", 2) is None
    with pytest.raises(LedgerStorageError, match=r"^cannot store 1 envelopes: disk full at "):
        ledger.add_pending([("ch", os.urandom(64 * 1024))])
    assert ledger.pending("ch") == []
    ledger._db.execute("PRAGMA max_page_count = 1073741823")  # space is back: the same call succeeds
    ledger.commit_many("ch", blocks)
    assert ledger.height("ch") == 5
    ledger.check()


def test_errors_that_are_not_about_storage_stay_plain_ledger_errors(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "ledger.db"
    corrupt = sqlite3.DatabaseError("database disk image is malformed")
    corrupt.sqlite_errorcode = sqlite3.SQLITE_CORRUPT  # type: ignore[attr-defined]
    assert storage_reason(corrupt, path) is None
    assert storage_reason(OSError(errno.ENOSPC, "No space left on device"), path) == "disk full"
    assert storage_reason(OSError(errno.EACCES, "Permission denied"), path) is None
    ledger = Ledger(path)
    with pytest.raises(LedgerError) as caught:
        ledger.commit("ch", chain(2)[1])
    assert not isinstance(caught.value, LedgerStorageError)


def test_on_a_real_full_disk_commits_and_the_probe_fail_and_succeed_once_space_returns(tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "fs", size_mib=4) as fs:
        path = fs.mountpoint / "ledger.sqlite"
        ledger = Ledger(path)
        try:
            ledger.commit_many("ch", chain(3))
            ledger.probe()
            fs.fill()
            # The WAL may have room left from an earlier checkpoint: commit until the file system refuses.
            with pytest.raises(LedgerStorageError) as caught:
                for _ in range(200):
                    ledger.commit_many("ch", big_chain(1, ledger.height("ch"), ledger.last_hash("ch")))
            assert caught.value.reason == "disk full" and str(path) in str(caught.value)
            height = ledger.height("ch")
            with pytest.raises(LedgerStorageError, match="disk full"):
                ledger.probe()
            assert ledger.height("ch") == height
            fs.free()
            ledger.probe()
            ledger.commit_many("ch", big_chain(2, height, ledger.last_hash("ch")))
            assert ledger.height("ch") == height + 2
            ledger.check()
        finally:
            ledger.close()


def _envelope(tx_id: str) -> bytes:
    from rumor.wire.pb.common import common_pb2

    header = common_pb2.ChannelHeader(type=common_pb2.MESSAGE, channel_id="ch", tx_id=tx_id)
    payload = common_pb2.Payload(
        header=common_pb2.Header(channel_header=header.SerializeToString()), data=tx_id.encode()
    )
    return common_pb2.Envelope(payload=payload.SerializeToString(), signature=b"s").SerializeToString()


def test_transactions_are_found_by_id_including_in_a_ledger_written_before_the_index(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "ledger.db"
    ledger = Ledger(path)
    prev = b""
    for number in range(5):
        data = [_envelope(f"{number:02x}aa"), b"not an envelope", _envelope(f"{number:02x}bb")]
        if number == 3:
            data.append(_envelope("01aa"))  # the same id twice (a resubmitted envelope): both are found
        block = new_block(number, prev, data)
        prev = block_header_hash(block.header)
        ledger.commit("ch", block.SerializeToString())
    assert ledger.find_tx("ch", "02BB") == [(2, 2)]
    assert ledger.find_tx("ch", "01aa") == [(1, 0), (3, 3)]
    assert ledger.find_tx("ch", "ffff") == [] and ledger.find_tx("other", "02bb") == []
    ledger.close()
    # As a ledger of an earlier version: no index rows, user_version 0. Opening it builds the index once.
    db = sqlite3.connect(path)
    db.execute("DELETE FROM txids")
    db.execute("PRAGMA user_version = 0")
    db.commit()
    db.close()
    ledger = Ledger(path)
    assert ledger.find_tx("ch", "04aa") == [(4, 0)]
    ledger.close()
