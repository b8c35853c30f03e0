"""The ledger keeps each channel a gap-free, fork-free chain, durably."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rumor.crypto.blocks import block_header_hash, new_block
from rumor.ledger import Ledger, LedgerError, MemoryLedger


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
