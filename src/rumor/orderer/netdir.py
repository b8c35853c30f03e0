"""Client settings read out of a network directory, so that ``rumor submit --network DIR`` needs no other flag.

The layout (what ``rumor network init`` is to write)::

    DIR/crypto/                   crypto material in cryptogen's layout
    DIR/orderer/orderer.yaml      the orderer's configuration
    DIR/peers/<peer id>/core.yaml each peer's configuration
    DIR/channels/<channel>.block  each channel's genesis block

From it: the orderer's address is its ``General.ListenAddress`` (a wildcard host becomes 127.0.0.1); TLS is on
when the orderer's is, trusting the TLS roots of the channel's orderer orgs; the identity is a client user
(``User1``, else ``Admin``) of the channel's first member org, found under ``DIR/crypto`` by matching the
org's root certificate, since the material does not record MSP IDs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from rumor.channelconfig import ChannelConfigError, load_block, read_genesis
from rumor.config import _HOST_PORT, ConfigError
from rumor.crypto.api import CryptoError
from rumor.crypto.identity import read_pem_certificates
from rumor.orderer.client import ClientTLS
from rumor.orderer.config import load_orderer_config

__all__ = ["NetworkDirError", "NetworkTarget", "network_target"]


class NetworkDirError(ValueError):
    """The network directory lacks something the client needs; the message says what."""


@dataclass(frozen=True)
class NetworkTarget:
    """Where and as whom a client of the channel's orderer connects."""

    endpoint: str
    tls: ClientTLS | None
    msp_dir: Path
    mspid: str


def _dial_address(listen_address: str) -> str:
    match = _HOST_PORT.fullmatch(listen_address)
    if match is None:
        return listen_address
    host = match["v6"] or match["host"]
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    elif match["v6"]:
        host = f"[{host}]"
    return f"{host}:{match['port']}"


def network_target(network_dir: Path | str, channel: str) -> NetworkTarget:
    root = Path(network_dir)
    if not root.is_dir():
        raise NetworkDirError(f"{root}: no such network directory")
    try:
        orderer = load_orderer_config(root / "orderer" / "orderer.yaml", env={})
    except ConfigError as exc:
        raise NetworkDirError(str(exc)) from None
    try:
        config = read_genesis(load_block(root / "channels" / f"{channel}.block"))
    except ChannelConfigError as exc:
        raise NetworkDirError(f"channel {channel}: {exc}") from None
    if orderer.general.listen_address.endswith(":0"):
        raise NetworkDirError(
            f"{root / 'orderer' / 'orderer.yaml'}: General.ListenAddress has port 0; no address to dial"
        )

    tls = None
    if orderer.general.tls.enabled:
        roots = b"".join(config.orderer_tls_roots)
        if not roots:
            raise NetworkDirError(f"channel {channel}: its orderer orgs list no TLS root certificate")
        tls = ClientTLS(root_certs=roots)

    org = config.orgs[0]
    wanted = {x509.load_pem_x509_certificate(pem) for pem in org.root_certs}
    org_dirs = sorted((root / "crypto" / "peerOrganizations").glob("*"))
    for org_dir in org_dirs:
        try:
            roots_here = set(read_pem_certificates(org_dir / "msp" / "cacerts"))
        except CryptoError:
            continue
        if not roots_here & wanted:
            continue
        for user in ("User1", "Admin"):
            msp_dir = org_dir / "users" / f"{user}@{org_dir.name}" / "msp"
            if msp_dir.is_dir():
                return NetworkTarget(_dial_address(orderer.general.listen_address), tls, msp_dir, org.mspid)
        raise NetworkDirError(f"{org_dir / 'users'}: no User1 or Admin identity of {org.mspid}")
    raise NetworkDirError(
        f"{root / 'crypto' / 'peerOrganizations'}: no material of {org.mspid}, the channel's first org"
    )
