"""rumor's built-in ordering service and its clients.

``service.Orderer`` serves Fabric's AtomicBroadcast (Broadcast and Deliver) for the channels whose genesis
blocks it is given, cutting blocks with ``cutter.BlockCutter`` and keeping them in a SQLite ``Ledger``;
``config`` loads its orderer.yaml; ``client`` holds ``BroadcastClient`` and ``DeliverClient``.
"""

from rumor.orderer.client import (
    Backoff,
    BroadcastClient,
    BroadcastError,
    ClientTLS,
    DeliverClient,
    DeliverError,
    OrdererClientError,
    seek_envelope,
)
from rumor.orderer.config import OrdererConfig, load_orderer_config, orderer_config_to_yaml
from rumor.orderer.cutter import BatchSettings, BlockCutter, EnvelopeTooLarge
from rumor.orderer.service import MAX_BLOCK_NUMBER, Orderer, OrdererError, ServerTLS

__all__ = [
    "MAX_BLOCK_NUMBER",
    "Backoff",
    "BatchSettings",
    "BlockCutter",
    "BroadcastClient",
    "BroadcastError",
    "ClientTLS",
    "DeliverClient",
    "DeliverError",
    "EnvelopeTooLarge",
    "Orderer",
    "OrdererClientError",
    "OrdererConfig",
    "OrdererError",
    "ServerTLS",
    "load_orderer_config",
    "orderer_config_to_yaml",
    "seek_envelope",
]
