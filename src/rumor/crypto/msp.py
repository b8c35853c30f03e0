"""Organizations and the validation of their members' identities (a small Fabric MSP).

An ``Org`` is what a Fabric MSP definition holds: the MSP ID, root CA
certificates, optional intermediate CAs, TLS roots, CRLs and the NodeOUs
settings. ``load_org`` reads one from an MSP directory (an org's ``msp/`` or a
node's, as cryptogen or rumor writes them)::

    cacerts/*.pem  intermediatecerts/*.pem  tlscacerts/*.pem  crls/*.pem  config.yaml

``OrgRegistry.validate`` accepts a serialized identity when, in this order:
it decodes; its MSP ID is a known org; its certificate is not a CA certificate;
it chains to one of the org's roots (through its intermediates, if any); the
current time lies in the validity period of the certificate; no CRL of the org
issued by the signing CA lists its serial; and, with NodeOUs enabled, it carries
exactly one of the client/peer/admin/orderer OUs. Each failure raises
InvalidIdentity saying which check failed.

Unlike Fabric's MSP, which leaves expiry to its callers, the registry checks the
validity period itself, reading the time from an injected clock.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from rumor.crypto.api import CryptoError, InvalidIdentity, OrgId
from rumor.crypto.identity import decode_identity, find_issuer, identity_name, load_certificate, read_pem_certificates
from rumor.crypto.signing import PublicKey

_MAX_CHAIN_DEPTH = 8


@dataclass(frozen=True)
class NodeOUs:
    """The OU names that make a certificate a client, peer, admin or orderer (Fabric's NodeOUs)."""

    client: str = "client"
    peer: str = "peer"
    admin: str = "admin"
    orderer: str = "orderer"

    @property
    def names(self) -> frozenset[str]:
        return frozenset({self.client, self.peer, self.admin, self.orderer}) - {""}


@dataclass(frozen=True)
class Org:
    mspid: str
    root_certs: tuple[x509.Certificate, ...]
    crls: tuple[x509.CertificateRevocationList, ...] = ()
    intermediate_certs: tuple[x509.Certificate, ...] = ()
    tls_root_certs: tuple[x509.Certificate, ...] = ()
    node_ous: NodeOUs | None = None  # None: NodeOUs disabled, any OU is accepted

    def __post_init__(self) -> None:
        if not self.mspid:
            raise CryptoError("an org needs an MSP ID")
        if not self.root_certs:
            raise CryptoError(f"org {self.mspid}: no root CA certificate")


@dataclass(frozen=True)
class ValidIdentity:
    """What validation learned about an identity; enough to verify its signatures later."""

    mspid: str
    certificate: x509.Certificate
    public_key: PublicKey
    not_before: float
    not_after: float


def _load_node_ous(path: Path) -> NodeOUs | None:
    if not path.is_file():
        return None
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise CryptoError(f"{path}: not valid YAML: {exc}") from None
    section = doc.get("NodeOUs") if isinstance(doc, dict) else None
    if not isinstance(section, dict) or not section.get("Enable"):
        return None

    def ou(key: str, default: str) -> str:
        ident = section.get(key)
        if ident is None:
            return ""
        if not isinstance(ident, dict):
            raise CryptoError(f"{path}: NodeOUs.{key} must be a mapping")
        return str(ident.get("OrganizationalUnitIdentifier", default))

    return NodeOUs(
        client=ou("ClientOUIdentifier", "client"),
        peer=ou("PeerOUIdentifier", "peer"),
        admin=ou("AdminOUIdentifier", "admin"),
        orderer=ou("OrdererOUIdentifier", "orderer"),
    )


def load_crl(pem: bytes) -> x509.CertificateRevocationList:
    try:
        return x509.load_pem_x509_crl(pem)
    except ValueError as exc:
        raise CryptoError(f"not a PEM CRL: {exc}") from None


def load_org(msp_dir: Path | str, mspid: str) -> Org:
    """Read an org definition from a Fabric MSP directory; the MSP ID comes from configuration."""
    msp_dir = Path(msp_dir)
    if not msp_dir.is_dir():
        raise CryptoError(f"{msp_dir}: no such MSP directory")
    crls: list[x509.CertificateRevocationList] = []
    crl_dir = msp_dir / "crls"
    if crl_dir.is_dir():
        for path in sorted(p for p in crl_dir.iterdir() if p.is_file() and not p.name.startswith(".")):
            try:
                crls.append(load_crl(path.read_bytes()))
            except CryptoError as exc:
                raise CryptoError(f"{path}: {exc}") from None
    roots = tuple(read_pem_certificates(msp_dir / "cacerts"))
    if not roots:
        raise CryptoError(f"{msp_dir / 'cacerts'}: no CA certificate")
    org = Org(
        mspid=mspid,
        root_certs=roots,
        intermediate_certs=tuple(read_pem_certificates(msp_dir / "intermediatecerts")),
        tls_root_certs=tuple(read_pem_certificates(msp_dir / "tlscacerts")),
        node_ous=_load_node_ous(msp_dir / "config.yaml"),
    )
    for crl in crls:
        _check_crl_issuer(org, crl)
    return replace(org, crls=tuple(crls))


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _check_crl_issuer(org: Org, crl: x509.CertificateRevocationList) -> x509.Certificate:
    """The org CA that signed ``crl``; CryptoError when none did (a forged CRL must not revoke anyone)."""
    for ca in org.root_certs + org.intermediate_certs:
        if ca.subject == crl.issuer and crl.is_signature_valid(ca.public_key()):  # type: ignore[arg-type]
            return ca
    raise CryptoError(f"org {org.mspid}: CRL issued by {crl.issuer.rfc4514_string()} is not signed by its CAs")


def _timestamp(when: dt.datetime) -> float:
    return when.timestamp()


class OrgRegistry:
    """The orgs a peer knows, by MSP ID, and validation of identities against them.

    ``generation`` grows whenever an org or CRL is added, so callers that cache
    validation results know when to drop them.
    """

    def __init__(self, orgs: Iterable[Org] = (), now: Callable[[], float] = time.time) -> None:
        self.orgs: dict[str, Org] = {o.mspid: o for o in orgs}
        self.now = now
        self.generation = 0

    @property
    def mspids(self) -> frozenset[str]:
        return frozenset(self.orgs)

    def add_org(self, org: Org) -> None:
        """Add ``org``, or replace the org with the same MSP ID."""
        self.orgs[org.mspid] = org
        self.generation += 1

    def remove_org(self, mspid: str) -> None:
        """Forget ``mspid`` (an org removed from every channel): its members no longer validate."""
        if self.orgs.pop(mspid, None) is not None:
            self.generation += 1

    def org(self, mspid: str) -> Org:
        try:
            return self.orgs[mspid]
        except KeyError:
            raise InvalidIdentity(f"unknown MSP ID {mspid!r}") from None

    def add_crl(self, mspid: str, crl_pem: bytes) -> None:
        """Add a CRL to an org at runtime; it must be signed by one of the org's CAs."""
        org = self.org(mspid)
        crl = load_crl(crl_pem)
        _check_crl_issuer(org, crl)
        self.add_org(replace(org, crls=(*org.crls, crl)))

    def org_of(self, identity: bytes) -> OrgId:
        mspid, _ = decode_identity(identity)
        return mspid.encode()

    def name_of(self, identity: bytes) -> str:
        return identity_name(identity)

    def expiration(self, identity: bytes) -> float:
        _, id_bytes = decode_identity(identity)
        return _timestamp(load_certificate(id_bytes).not_valid_after_utc)

    def validate(self, identity: bytes) -> ValidIdentity:
        try:
            return self._validate(identity)
        except CryptoError:
            raise
        except Exception as exc:
            # cryptography parses a certificate's fields lazily: a corrupt subject, key or extension surfaces only
            # here, as ValueError, UnsupportedAlgorithm, DuplicateExtension...; an identity from the network must
            # never raise anything but InvalidIdentity
            raise InvalidIdentity(f"malformed certificate: {type(exc).__name__}: {exc}") from None

    def _validate(self, identity: bytes) -> ValidIdentity:
        mspid, id_bytes = decode_identity(identity)
        org = self.orgs.get(mspid)
        if org is None:
            raise InvalidIdentity(f"unknown MSP ID {mspid!r}")
        cert = load_certificate(id_bytes)
        subject = cert.subject.rfc4514_string()
        public_key = cert.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise InvalidIdentity(f"{subject}: only ECDSA identities are supported")
        if _is_ca(cert):
            raise InvalidIdentity(f"{subject}: a CA certificate cannot be used as an identity")
        issuer = self._chain(org, cert)
        if issuer is None:
            raise InvalidIdentity(f"{subject}: not issued by a CA of {mspid}")
        not_before = _timestamp(cert.not_valid_before_utc)
        not_after = _timestamp(cert.not_valid_after_utc)
        now = self.now()
        if now < not_before:
            raise InvalidIdentity(f"{subject}: not valid before {cert.not_valid_before_utc.isoformat()}")
        if now >= not_after:
            raise InvalidIdentity(f"{subject}: expired at {cert.not_valid_after_utc.isoformat()}")
        for crl in org.crls:
            if crl.issuer == issuer.subject and crl.get_revoked_certificate_by_serial_number(cert.serial_number):
                raise InvalidIdentity(f"{subject}: revoked (serial {cert.serial_number:x})")
        if org.node_ous is not None:
            ous = {a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)}
            roles = ous & org.node_ous.names
            if len(roles) != 1:
                raise InvalidIdentity(
                    f"{subject}: must carry exactly one of the OUs {sorted(org.node_ous.names)}, has {sorted(ous)}"
                )
        return ValidIdentity(
            mspid=mspid,
            certificate=cert,
            public_key=public_key,
            not_before=not_before,
            not_after=not_after,
        )

    def _chain(self, org: Org, cert: x509.Certificate) -> x509.Certificate | None:
        """The CA that directly issued ``cert``, provided the chain above it ends at a root of ``org``."""
        direct = find_issuer(cert, org.root_certs + org.intermediate_certs)
        current = direct
        for _ in range(_MAX_CHAIN_DEPTH):
            if current is None:
                return None
            if any(current == root for root in org.root_certs):
                return direct
            current = find_issuer(current, (*org.root_certs, *(c for c in org.intermediate_certs if c != current)))
        return None
