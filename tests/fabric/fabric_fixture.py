"""Where the real Fabric v2.2.9 channel lies (../shared/fabric beside the repository), and helpers to read it.

The fixture is test data made by Fabric's own tools; it is read in place, never copied into the project.
"""

from __future__ import annotations

from pathlib import Path

from rumor import channelconfig as cc
from rumor.crypto import X509CryptoService
from rumor.crypto.identity import SigningIdentity, load_signing_identity

FABRIC = Path(__file__).resolve().parents[2].parent / "shared" / "fabric"
BLOCKS = FABRIC / "blocks" / "mychannel"
CRYPTO = FABRIC / "crypto"
CHANNEL = "mychannel"
HEIGHT = 9

# From the fixture's README: each block's header hash, as the Fabric peer that committed them reports them.
HEADER_HASHES = [
    "c888ef2081960b120bad12033533be1f3ba33c3c3604dfa0fa7054e5290faad8",
    "391cf5567f34de547c0d9503de875b848f11705578f7a0cb900b43e766c731bb",
    "47830f0fd1e06def00a21fae729ed60d083297c23b483640c1d4ba42ed5d12af",
    "aac3946a80a8270b0083d3d317c5375079002c919dbcf72bda00a1451f9e1dfd",
    "8361b56a3aca31b0891b8250b418c6a0f932d68be03546b03453effa46bfeae0",
    "6b6a52850755a9f448dd31b745878a3618080606d8b91f75c69c8cdb080bd2a8",
    "e41b293e0c588844e6940d219534f8e794c82a2d67378fe2caccd146b2b705a7",
    "0cc19fb498c47fec1661e339fa716f613e0ea5b03bb4378726cc85de7495230d",
    "5a5d0ed5ca1ca275c0648046ab5bf2358afd6aa458be056da8d9b678d818f0a7",
]


def block_bytes(number: int) -> bytes:
    return (BLOCKS / f"{number}.block").read_bytes()


def msp_dir(org: str, name: str) -> Path:
    """``org`` is org1/org2; ``name`` a user (Admin, User1) or a peer (peer0, peer1)."""
    base = CRYPTO / "peerOrganizations" / f"{org}.example.com"
    if name.startswith("peer"):
        return base / "peers" / f"{name}.{org}.example.com" / "msp"
    return base / "users" / f"{name}@{org}.example.com" / "msp"


def identity(org: str, name: str) -> SigningIdentity:
    return load_signing_identity(msp_dir(org, name), f"{org.capitalize()}MSP")


def crypto_service(config: cc.ChannelConfig) -> X509CryptoService:
    """A peer0.org1 crypto service that verifies mychannel's blocks under ``config``."""
    mcs = X509CryptoService(identity("org1", "peer0"), cc.org_registry([config]))
    mcs.register_channel_config(config)
    return mcs
