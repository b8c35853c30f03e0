"""A ledger in memory with the same rules as the SQLite one, for the simulator and tests.

The simulator keeps one per simulated peer across crashes, as a disk would.
"""

from __future__ import annotations

from collections.abc import Sequence

from rumor.ledger.store import check_chain


class MemoryLedger:
    """Blocks per channel, chained and in order, held in lists."""

    def __init__(self) -> None:
        self._blocks: dict[str, list[bytes]] = {}
        self._hashes: dict[str, bytes] = {}

    def channels(self) -> list[str]:
        return sorted(self._blocks)

    def height(self, channel: str) -> int:
        return len(self._blocks.get(channel, ()))

    def last_hash(self, channel: str) -> bytes:
        return self._hashes.get(channel, b"")

    def commit(self, channel: str, block: bytes) -> None:
        self.commit_many(channel, [block])

    def commit_many(self, channel: str, blocks: Sequence[bytes]) -> None:
        if not blocks:
            return
        hashes = check_chain(channel, self.height(channel), self.last_hash(channel), blocks)
        self._blocks.setdefault(channel, []).extend(blocks)
        self._hashes[channel] = hashes[-1]

    def get_block(self, channel: str, number: int) -> bytes | None:
        chain = self._blocks.get(channel, [])
        return chain[number] if 0 <= number < len(chain) else None

    def get_blocks(self, channel: str, start: int, end: int) -> list[bytes]:
        chain = self._blocks.get(channel, [])
        return chain[max(start, 0) : end + 1]
