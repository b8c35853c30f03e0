"""The block ledger of a peer: channels of blocks committed strictly in order, on SQLite."""

from rumor.ledger.memory import MemoryLedger
from rumor.ledger.store import Ledger, LedgerError, LedgerStorageError, check_chain

__all__ = ["Ledger", "LedgerError", "LedgerStorageError", "MemoryLedger", "check_chain"]
