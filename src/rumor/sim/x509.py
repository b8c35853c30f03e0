"""Real crypto for simulated peers: one CA per org, a P-256 key and certificate per peer, in memory.

``Cluster(crypto="x509")`` uses it instead of the cheap crypto service: every signature is real ECDSA and
every certificate is checked against its org's CA, as in the peer daemon. It costs about a millisecond per
signature and verification, so it suits tens of peers, not thousands. Certificates are valid on the wall
clock (an hour back to a day ahead), which the registry checks; the protocol core never reads that clock.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from rumor.crypto.ca import CertificateAuthority
from rumor.crypto.identity import SigningIdentity
from rumor.crypto.mcs import X509CryptoService
from rumor.crypto.msp import NodeOUs, Org, OrgRegistry
from rumor.crypto.signing import generate_key


class X509Material:
    """Makes X509CryptoServices for simulated peers and orderers, sharing one OrgRegistry."""

    def __init__(self) -> None:
        self.registry = OrgRegistry()
        self._cas: dict[str, CertificateAuthority] = {}
        self._services: list[X509CryptoService] = []
        self._channels: dict[str, frozenset[str]] = {}
        now = dt.datetime.now(dt.UTC)
        self._validity = (now - dt.timedelta(hours=1), now + dt.timedelta(days=1))

    def _ca(self, mspid: str) -> CertificateAuthority:
        ca = self._cas.get(mspid)
        if ca is None:
            not_before, not_after = self._validity
            ca = CertificateAuthority.create(f"ca.{mspid.lower()}", mspid, not_before=not_before, not_after=not_after)
            self._cas[mspid] = ca
            self.registry.add_org(Org(mspid, (ca.certificate,), node_ous=NodeOUs()))
        return ca

    def service(self, mspid: str, name: str, role: str = "peer") -> X509CryptoService:
        """A crypto service for node ``name`` of ``mspid`` (role: peer or orderer), with every channel known."""
        ca = self._ca(mspid)
        key = generate_key()
        not_before, not_after = self._validity
        cert = ca.issue(name, key.public_key(), not_before=not_before, not_after=not_after, organizational_unit=role)
        service = X509CryptoService(SigningIdentity(mspid, cert, key), self.registry)
        for channel, orderers in self._channels.items():
            service.register_channel(channel, orderers)
        self._services.append(service)
        return service

    def register_channel(self, channel: str, orderer_mspids: Iterable[str]) -> None:
        """Tell every service, made or to be made, which orgs order ``channel``."""
        orderers = frozenset(orderer_mspids)
        self._channels[channel] = orderers
        for service in self._services:
            service.register_channel(channel, orderers)
