"""rumor: Hyperledger Fabric's gossip network in Python.

A library and a peer daemon with which organizations form a permissioned
peer-to-peer network that keeps membership, disseminates signed blocks on
channels, brings lagging peers up to date and elects a leader per org.

The public API is importable from here (``from rumor import Peer, load_config``); docs/api.md lists it with an
example. The names are loaded on first use, so that ``import rumor`` (which the command line does for the
version) does not pull in gRPC, cryptography and protobuf.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # the peer
    "Peer": "rumor.node",
    "PeerError": "rumor.node",
    "Member": "rumor.node",
    # its configuration
    "Config": "rumor.config",
    "ConfigError": "rumor.config",
    "load_config": "rumor.config",
    # a whole network's files on one machine
    "init_network": "rumor.network",
    "load_layout": "rumor.network",
    "free_base_port": "rumor.network",
    "NetworkLayout": "rumor.network",
    "PeerEntry": "rumor.network",
    "NetworkInitError": "rumor.network",
    # channels, envelopes and blocks
    "ChannelConfig": "rumor.channelconfig",
    "read_genesis": "rumor.channelconfig",
    "new_envelope": "rumor.channelconfig",
    "new_block": "rumor.crypto.blocks",
    "sign_block": "rumor.crypto.blocks",
    "block_header_hash": "rumor.crypto.blocks",
    "Block": "rumor.wire.pb.common.common_pb2",
    "HeaderType": "rumor.wire.pb.common.common_pb2",
    # identities
    "SigningIdentity": "rumor.crypto.identity",
    "load_signing_identity": "rumor.crypto.identity",
    # the ordering service
    "load_orderer_config": "rumor.orderer.config",
    "BroadcastClient": "rumor.orderer.client",
    "ClientTLS": "rumor.orderer.client",
    "DeliverClient": "rumor.orderer.client",
}

# Spelled out (not derived from _EXPORTS) so that linters and type checkers read it; a test keeps the two equal.
__all__ = [
    "Block",
    "BroadcastClient",
    "ChannelConfig",
    "ClientTLS",
    "Config",
    "ConfigError",
    "DeliverClient",
    "HeaderType",
    "Member",
    "NetworkInitError",
    "NetworkLayout",
    "Peer",
    "PeerEntry",
    "PeerError",
    "SigningIdentity",
    "__version__",
    "block_header_hash",
    "free_base_port",
    "init_network",
    "load_config",
    "load_layout",
    "load_orderer_config",
    "load_signing_identity",
    "new_block",
    "new_envelope",
    "read_genesis",
    "sign_block",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rumor' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups no longer come here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
    from rumor.channelconfig import ChannelConfig, new_envelope, read_genesis
    from rumor.config import Config, ConfigError, load_config
    from rumor.crypto.blocks import block_header_hash, new_block, sign_block
    from rumor.crypto.identity import SigningIdentity, load_signing_identity
    from rumor.network import NetworkInitError, NetworkLayout, PeerEntry, free_base_port, init_network, load_layout
    from rumor.node import Member, Peer, PeerError
    from rumor.orderer.client import BroadcastClient, ClientTLS, DeliverClient
    from rumor.orderer.config import load_orderer_config
    from rumor.wire.pb.common.common_pb2 import Block, HeaderType
