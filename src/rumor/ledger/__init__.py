"""The block ledger of a peer: channels of blocks committed strictly in order, on SQLite."""

from rumor.ledger.store import Ledger, LedgerError

__all__ = ["Ledger", "LedgerError"]
