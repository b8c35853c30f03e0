"""Generate a network's crypto material in Fabric cryptogen's directory layout.

Each organization gets a CA and a TLS CA; each peer or orderer an enrollment
certificate (OU=peer / OU=orderer) and a TLS certificate; each org an admin
(OU=admin) and ``users`` client users (OU=client). The tree below ``out_dir`` is
the one Fabric's ``cryptogen generate`` writes, so either side can load the
other's material::

    peerOrganizations/<domain>/
        ca/ca.<domain>-cert.pem, priv_sk          tlsca/tlsca.<domain>-cert.pem, priv_sk
        msp/cacerts/ca.<domain>-cert.pem, tlscacerts/tlsca.<domain>-cert.pem, config.yaml
        peers/<name>.<domain>/msp/signcerts/<name>.<domain>-cert.pem, keystore/priv_sk,
                                  cacerts/..., tlscacerts/..., config.yaml
        peers/<name>.<domain>/tls/server.crt, server.key, ca.crt
        users/Admin@<domain>/msp/...   users/Admin@<domain>/tls/client.crt, client.key, ca.crt
        users/User1@<domain>/...
    ordererOrganizations/<domain>/  (the same, with orderers/<name>.<domain>/ instead of peers/)

``msp/config.yaml`` enables Fabric's NodeOUs. TLS certificates carry the host
name, the short name, ``localhost`` and ``127.0.0.1`` as SANs (plus any ``extra_sans``
given for the node, as cryptogen's ``SANS``: the addresses it is dialed by on other
hosts) and serve as both server and client certificates. Private keys are PKCS#8 PEM, mode 0600.

A network is described by a ``NetworkSpec``, built in code (``default_spec``) or
read from YAML in the spirit of cryptogen's crypto-config.yaml::

    ValidityDays: 3650            # optional, default 3650
    PeerOrgs:
      - Name: Org1
        Domain: org1.example.com
        MSPID: Org1MSP            # optional, default <Name>MSP
        Template: {Count: 2}      # peer0, peer1 (also Start, default 0; Prefix, default "peer")
        Specs:                    # and/or explicit host names
          - Hostname: anchor
        Users: {Count: 1}         # User1..UserN besides Admin; default 1
    OrdererOrgs:
      - Name: Orderer
        Domain: example.com
        MSPID: OrdererMSP         # optional, default <Name>MSP
        Specs:
          - Hostname: orderer     # Template works too (Prefix default "orderer")
        Users: {Count: 0}         # default 0

``EnableNodeOUs: true`` is accepted on an org for compatibility with cryptogen
files; rumor always enables NodeOUs. Any other key is an error, so typos surface.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rumor.crypto.api import CryptoError
from rumor.crypto.ca import CertificateAuthority
from rumor.crypto.identity import certificate_pem
from rumor.crypto.signing import generate_key, write_private_key

DEFAULT_VALIDITY_DAYS = 3650
# Backdating tolerates clocks that lag the generating machine's (cryptogen does the same).
BACKDATE = dt.timedelta(minutes=5)

PEER, ORDERER, ADMIN, CLIENT = "peer", "orderer", "admin", "client"

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
_MSPID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class SpecError(CryptoError, ValueError):
    """A network spec that cannot be generated; the message names the offending key."""


class MaterialExistsError(CryptoError):
    """The output directory already holds something and overwriting was not asked for."""


def _check_hostname(where: str, value: object) -> str:
    if not isinstance(value, str) or not _HOSTNAME.match(value):
        raise SpecError(f"{where}: {value!r} is not a valid host name")
    return value


def _is_ip_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _check_mspid(where: str, value: object) -> str:
    if not isinstance(value, str) or not _MSPID.match(value):
        raise SpecError(f"{where}: {value!r} is not a valid MSP ID (letters, digits, '.', '_', '-')")
    return value


def _check_names(where: str, names: tuple[str, ...]) -> None:
    for i, name in enumerate(names):
        _check_hostname(f"{where}[{i}]", name)
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SpecError(f"{where}: duplicate host names {duplicates}")


def _check_count(where: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SpecError(f"{where}: expected a non-negative integer, got {value!r}")
    return value


@dataclass(frozen=True)
class OrgSpec:
    """A peer organization: ``peers`` are short host names, e.g. ("peer0", "peer1")."""

    name: str
    domain: str
    mspid: str
    peers: tuple[str, ...]
    users: int = 1

    def __post_init__(self) -> None:
        _check_org(self.name, self.domain, self.mspid, self.peers, self.users, "peers")


@dataclass(frozen=True)
class OrdererOrgSpec:
    """An orderer organization: ``orderers`` are short host names, e.g. ("orderer",)."""

    name: str
    domain: str
    mspid: str
    orderers: tuple[str, ...]
    users: int = 0

    def __post_init__(self) -> None:
        _check_org(self.name, self.domain, self.mspid, self.orderers, self.users, "orderers")


def _check_org(name: str, domain: str, mspid: str, nodes: tuple[str, ...], users: int, kind: str) -> None:
    where = f"org {name!r}"
    if not isinstance(name, str) or not _MSPID.match(name):
        raise SpecError(f"{where}: Name must be letters, digits, '.', '_', '-'")
    _check_hostname(f"{where}: Domain", domain)
    _check_mspid(f"{where}: MSPID", mspid)
    if not isinstance(nodes, tuple):
        raise SpecError(f"{where}: {kind} must be a tuple of host names")
    _check_names(f"{where}: {kind}", nodes)
    _check_count(f"{where}: Users.Count", users)


@dataclass(frozen=True)
class NetworkSpec:
    peer_orgs: tuple[OrgSpec, ...]
    orderer_orgs: tuple[OrdererOrgSpec, ...]
    validity_days: int = DEFAULT_VALIDITY_DAYS

    def __post_init__(self) -> None:
        if isinstance(self.validity_days, bool) or not isinstance(self.validity_days, int) or self.validity_days < 1:
            raise SpecError(f"ValidityDays: expected a positive integer, got {self.validity_days!r}")
        mspids = [o.mspid for o in self.peer_orgs] + [o.mspid for o in self.orderer_orgs]
        duplicates = sorted({m for m in mspids if mspids.count(m) > 1})
        if duplicates:
            raise SpecError(f"MSPID: used by more than one org: {duplicates}")
        for kind, orgs in (("PeerOrgs", self.peer_orgs), ("OrdererOrgs", self.orderer_orgs)):
            domains = [o.domain for o in orgs]
            duplicates = sorted({d for d in domains if domains.count(d) > 1})
            if duplicates:
                raise SpecError(f"{kind}: Domain used by more than one org: {duplicates}")


def default_spec(orgs: int, peers_per_org: int) -> NetworkSpec:
    """Org1MSP/org1.example.com with peer0..peerN-1, and so on; one orderer org OrdererMSP/example.com."""
    if orgs < 1 or peers_per_org < 1:
        raise SpecError("default_spec: need at least one org and one peer per org")
    return NetworkSpec(
        peer_orgs=tuple(
            OrgSpec(
                name=f"Org{i}",
                domain=f"org{i}.example.com",
                mspid=f"Org{i}MSP",
                peers=tuple(f"peer{j}" for j in range(peers_per_org)),
            )
            for i in range(1, orgs + 1)
        ),
        orderer_orgs=(OrdererOrgSpec(name="Orderer", domain="example.com", mspid="OrdererMSP", orderers=("orderer",)),),
    )


def _mapping(where: str, value: object) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise SpecError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _only_keys(where: str, data: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(str(k) for k in data if k not in allowed)
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {unknown} (known: {sorted(allowed)})")


def _parse_nodes(where: str, data: Mapping[str, Any], prefix: str) -> tuple[str, ...]:
    names: list[str] = []
    if "Template" in data:
        template = _mapping(f"{where}.Template", data["Template"])
        _only_keys(f"{where}.Template", template, {"Count", "Start", "Prefix"})
        count = _check_count(f"{where}.Template.Count", template.get("Count", 0))
        start = _check_count(f"{where}.Template.Start", template.get("Start", 0))
        template_prefix = template.get("Prefix", prefix)
        if not isinstance(template_prefix, str):
            raise SpecError(f"{where}.Template.Prefix: expected a string, got {template_prefix!r}")
        names.extend(f"{template_prefix}{i}" for i in range(start, start + count))
    specs = data.get("Specs", [])
    if not isinstance(specs, list):
        raise SpecError(f"{where}.Specs: expected a list, got {type(specs).__name__}")
    for i, spec in enumerate(specs):
        spec = _mapping(f"{where}.Specs[{i}]", spec)
        _only_keys(f"{where}.Specs[{i}]", spec, {"Hostname"})
        if "Hostname" not in spec:
            raise SpecError(f"{where}.Specs[{i}].Hostname: required")
        names.append(_check_hostname(f"{where}.Specs[{i}].Hostname", spec["Hostname"]))
    for i, name in enumerate(names):
        _check_hostname(f"{where}: host name #{i}", name)
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SpecError(f"{where}: duplicate host names {duplicates} (Template and Specs overlap?)")
    return tuple(names)


def _parse_org(where: str, raw: object, *, node_prefix: str, default_users: int) -> dict[str, Any]:
    data = _mapping(where, raw)
    _only_keys(where, data, {"Name", "Domain", "MSPID", "EnableNodeOUs", "Template", "Specs", "Users"})
    for key in ("Name", "Domain"):
        if key not in data:
            raise SpecError(f"{where}.{key}: required")
    name = data["Name"]
    if not isinstance(name, str) or not _MSPID.match(name):
        raise SpecError(f"{where}.Name: {name!r} must be letters, digits, '.', '_', '-'")
    if data.get("EnableNodeOUs", True) is not True:
        raise SpecError(f"{where}.EnableNodeOUs: rumor always enables NodeOUs; remove the key or set it to true")
    users = default_users
    if "Users" in data:
        users_map = _mapping(f"{where}.Users", data["Users"])
        _only_keys(f"{where}.Users", users_map, {"Count"})
        users = _check_count(f"{where}.Users.Count", users_map.get("Count", 0))
    nodes = _parse_nodes(where, data, node_prefix)
    if not nodes:
        raise SpecError(f"{where}: no nodes (give Template.Count or Specs)")
    return {
        "name": name,
        "domain": _check_hostname(f"{where}.Domain", data["Domain"]),
        "mspid": _check_mspid(f"{where}.MSPID", data.get("MSPID", f"{name}MSP")),
        "nodes": nodes,
        "users": users,
    }


def parse_spec(data: object) -> NetworkSpec:
    """Build a NetworkSpec from the parsed YAML document (see the module docstring)."""
    doc = _mapping("spec", data)
    _only_keys("spec", doc, {"PeerOrgs", "OrdererOrgs", "ValidityDays"})
    orgs: dict[str, list[dict[str, Any]]] = {}
    for key, prefix, users in (("PeerOrgs", PEER, 1), ("OrdererOrgs", ORDERER, 0)):
        raw = doc.get(key) or []
        if not isinstance(raw, list):
            raise SpecError(f"{key}: expected a list of orgs, got {type(raw).__name__}")
        orgs[key] = [
            _parse_org(f"{key}[{i}]", org, node_prefix=prefix, default_users=users) for i, org in enumerate(raw)
        ]
    if not orgs["PeerOrgs"] and not orgs["OrdererOrgs"]:
        raise SpecError("spec: neither PeerOrgs nor OrdererOrgs given")
    return NetworkSpec(
        peer_orgs=tuple(
            OrgSpec(name=o["name"], domain=o["domain"], mspid=o["mspid"], peers=o["nodes"], users=o["users"])
            for o in orgs["PeerOrgs"]
        ),
        orderer_orgs=tuple(
            OrdererOrgSpec(name=o["name"], domain=o["domain"], mspid=o["mspid"], orderers=o["nodes"], users=o["users"])
            for o in orgs["OrdererOrgs"]
        ),
        validity_days=doc.get("ValidityDays", DEFAULT_VALIDITY_DAYS),
    )


def load_spec(path: Path | str) -> NetworkSpec:
    """Read a YAML network spec; SpecError (a CryptoError and ValueError) names what is wrong."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SpecError(f"{path}: cannot read: {exc}") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from None
    try:
        return parse_spec(data)
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from None


@dataclass(frozen=True)
class NodeMaterial:
    """Where one node's (or user's) material was written."""

    name: str  # short name: "peer0", "orderer", "Admin", "User1"
    host: str  # "peer0.org1.example.com", or "Admin@org1.example.com" for users
    mspid: str
    role: str  # PEER, ORDERER, ADMIN or CLIENT: the OU of its enrollment certificate
    msp_dir: Path
    tls_dir: Path

    @property
    def signcert(self) -> Path:
        return self.msp_dir / "signcerts" / f"{self.host}-cert.pem"

    @property
    def keystore(self) -> Path:
        return self.msp_dir / "keystore" / "priv_sk"

    @property
    def tls_cert(self) -> Path:
        return self.tls_dir / ("server.crt" if self.role in (PEER, ORDERER) else "client.crt")

    @property
    def tls_key(self) -> Path:
        return self.tls_dir / ("server.key" if self.role in (PEER, ORDERER) else "client.key")

    @property
    def tls_ca_cert(self) -> Path:
        return self.tls_dir / "ca.crt"


@dataclass(frozen=True)
class OrgMaterial:
    name: str
    domain: str
    mspid: str
    kind: str  # PEER or ORDERER
    org_dir: Path
    nodes: tuple[NodeMaterial, ...]
    users: tuple[NodeMaterial, ...]  # Admin first

    @property
    def msp_dir(self) -> Path:
        return self.org_dir / "msp"

    @property
    def ca_cert(self) -> Path:
        return self.org_dir / "ca" / f"ca.{self.domain}-cert.pem"

    @property
    def ca_key(self) -> Path:
        return self.org_dir / "ca" / "priv_sk"

    @property
    def tlsca_cert(self) -> Path:
        return self.org_dir / "tlsca" / f"tlsca.{self.domain}-cert.pem"

    @property
    def tlsca_key(self) -> Path:
        return self.org_dir / "tlsca" / "priv_sk"

    @property
    def admin(self) -> NodeMaterial:
        return self.users[0]


@dataclass(frozen=True)
class GeneratedMaterial:
    root: Path
    peer_orgs: tuple[OrgMaterial, ...]
    orderer_orgs: tuple[OrgMaterial, ...]

    @property
    def orgs(self) -> tuple[OrgMaterial, ...]:
        return self.peer_orgs + self.orderer_orgs

    @property
    def peers(self) -> tuple[NodeMaterial, ...]:
        return tuple(n for o in self.peer_orgs for n in o.nodes)

    @property
    def orderers(self) -> tuple[NodeMaterial, ...]:
        return tuple(n for o in self.orderer_orgs for n in o.nodes)

    def org(self, mspid: str) -> OrgMaterial:
        for org in self.orgs:
            if org.mspid == mspid:
                return org
        raise KeyError(mspid)

    def node(self, host: str) -> NodeMaterial:
        for org in self.orgs:
            for node in org.nodes + org.users:
                if node.host == host:
                    return node
        raise KeyError(host)


def msp_config_yaml(ca_cert_name: str) -> str:
    """Fabric's NodeOUs section, every OU identifier certified by the org's CA certificate."""
    lines = ["NodeOUs:", "  Enable: true"]
    for key, ou in (
        ("ClientOUIdentifier", CLIENT),
        ("PeerOUIdentifier", PEER),
        ("AdminOUIdentifier", ADMIN),
        ("OrdererOUIdentifier", ORDERER),
    ):
        lines += [f"  {key}:", f"    Certificate: cacerts/{ca_cert_name}", f"    OrganizationalUnitIdentifier: {ou}"]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class _Validity:
    not_before: dt.datetime
    not_after: dt.datetime


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _write_msp(msp_dir: Path, domain: str, ca: CertificateAuthority, tlsca: CertificateAuthority) -> None:
    """The parts shared by an org's MSP and a node's: CA certs and the NodeOUs config."""
    ca_name = f"ca.{domain}-cert.pem"
    _write(msp_dir / "cacerts" / ca_name, certificate_pem(ca.certificate))
    _write(msp_dir / "tlscacerts" / f"tlsca.{domain}-cert.pem", certificate_pem(tlsca.certificate))
    _write(msp_dir / "config.yaml", msp_config_yaml(ca_name).encode())


def _write_node(
    node: NodeMaterial,
    domain: str,
    ca: CertificateAuthority,
    tlsca: CertificateAuthority,
    validity: _Validity,
    sans: tuple[str, ...],
) -> None:
    key = generate_key()
    cert = ca.issue(
        node.host,
        key.public_key(),
        not_before=validity.not_before,
        not_after=validity.not_after,
        organizational_unit=node.role,
    )
    _write_msp(node.msp_dir, domain, ca, tlsca)
    _write(node.signcert, certificate_pem(cert))
    node.keystore.parent.mkdir(parents=True, exist_ok=True)
    write_private_key(node.keystore, key)

    tls_key = generate_key()
    tls_cert = tlsca.issue(
        node.host,
        tls_key.public_key(),
        not_before=validity.not_before,
        not_after=validity.not_after,
        tls=True,
        sans=sans,
    )
    _write(node.tls_cert, certificate_pem(tls_cert))
    write_private_key(node.tls_key, tls_key)
    _write(node.tls_ca_cert, certificate_pem(tlsca.certificate))


def _generate_org(
    root: Path,
    kind: str,
    name: str,
    domain: str,
    mspid: str,
    nodes: tuple[str, ...],
    users: int,
    validity: _Validity,
    extra_sans: Mapping[str, Sequence[str]],
) -> OrgMaterial:
    org_dir = root / ("peerOrganizations" if kind == PEER else "ordererOrganizations") / domain
    ca = CertificateAuthority.create(
        f"ca.{domain}", domain, not_before=validity.not_before, not_after=validity.not_after
    )
    tlsca = CertificateAuthority.create(
        f"tlsca.{domain}", domain, not_before=validity.not_before, not_after=validity.not_after
    )
    org = OrgMaterial(
        name=name,
        domain=domain,
        mspid=mspid,
        kind=kind,
        org_dir=org_dir,
        nodes=tuple(
            NodeMaterial(
                name=n,
                host=f"{n}.{domain}",
                mspid=mspid,
                role=kind,
                msp_dir=org_dir / f"{kind}s" / f"{n}.{domain}" / "msp",
                tls_dir=org_dir / f"{kind}s" / f"{n}.{domain}" / "tls",
            )
            for n in nodes
        ),
        users=tuple(
            NodeMaterial(
                name=u,
                host=f"{u}@{domain}",
                mspid=mspid,
                role=ADMIN if u == "Admin" else CLIENT,
                msp_dir=org_dir / "users" / f"{u}@{domain}" / "msp",
                tls_dir=org_dir / "users" / f"{u}@{domain}" / "tls",
            )
            for u in ("Admin", *(f"User{i}" for i in range(1, users + 1)))
        ),
    )
    _write(org.ca_cert, certificate_pem(ca.certificate))
    write_private_key(org.ca_key, ca.private_key)
    _write(org.tlsca_cert, certificate_pem(tlsca.certificate))
    write_private_key(org.tlsca_key, tlsca.private_key)
    _write_msp(org.msp_dir, domain, ca, tlsca)
    for node in org.nodes:
        sans = (node.host, node.name, "localhost", "127.0.0.1", *extra_sans.get(node.host, ()))
        _write_node(node, domain, ca, tlsca, validity, sans)
    for user in org.users:
        _write_node(user, domain, ca, tlsca, validity, ())
    return org


def generate(
    spec: NetworkSpec,
    out_dir: Path | str,
    *,
    force: bool = False,
    now: dt.datetime | None = None,
    extra_sans: Mapping[str, Sequence[str]] | None = None,
) -> GeneratedMaterial:
    """Write the material for ``spec`` under ``out_dir`` and say where everything went.

    A non-empty ``out_dir`` is refused (MaterialExistsError) unless ``force``, which
    replaces its peerOrganizations/ and ordererOrganizations/ and leaves anything else.
    ``now`` fixes the start of the validity period (default: the current time).
    ``extra_sans`` adds SANs (host names or IP addresses) to the TLS certificates of
    nodes, by their host name: ``{"peer0.org1.example.com": ["10.0.1.11"]}``.
    """
    extra_sans = dict(extra_sans or {})
    known = {f"{n}.{o.domain}" for o in spec.peer_orgs for n in o.peers}
    known |= {f"{n}.{o.domain}" for o in spec.orderer_orgs for n in o.orderers}
    unknown = sorted(set(extra_sans) - known)
    if unknown:
        raise SpecError(f"extra SANs for {', '.join(unknown)}: no such node (nodes: {', '.join(sorted(known))})")
    for host, sans in extra_sans.items():
        for san in sans:
            if not _is_ip_address(san):
                _check_hostname(f"SANs of {host}", san)
    root = Path(out_dir)
    if root.exists() and not root.is_dir():
        raise MaterialExistsError(f"{root} exists and is not a directory")
    if root.is_dir() and any(root.iterdir()):
        if not force:
            raise MaterialExistsError(f"{root} is not empty; refusing to overwrite crypto material (use force)")
        for sub in ("peerOrganizations", "ordererOrganizations"):
            if (root / sub).is_dir():
                shutil.rmtree(root / sub)
    root.mkdir(parents=True, exist_ok=True)
    start = now if now is not None else dt.datetime.now(dt.UTC)
    if start.tzinfo is None:
        start = start.replace(tzinfo=dt.UTC)
    validity = _Validity(start - BACKDATE, start + dt.timedelta(days=spec.validity_days))
    return GeneratedMaterial(
        root=root,
        peer_orgs=tuple(
            _generate_org(root, PEER, o.name, o.domain, o.mspid, o.peers, o.users, validity, extra_sans)
            for o in spec.peer_orgs
        ),
        orderer_orgs=tuple(
            _generate_org(root, ORDERER, o.name, o.domain, o.mspid, o.orderers, o.users, validity, extra_sans)
            for o in spec.orderer_orgs
        ),
    )
