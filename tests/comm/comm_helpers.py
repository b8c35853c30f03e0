"""Helpers of the comm tests: comms built from generated crypto material (also used by the peer subprocess),
and ``wait_for``. Named uniquely because test directories are not packages."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from rumor.comm import Comm, CommConfig, TLSMaterial
from rumor.core.types import Tracer
from rumor.crypto import OrgRegistry, X509CryptoService, load_org, load_signing_identity

KNOWN_ORGS = ("Org1MSP", "Org2MSP", "OrdererMSP")
"""Orgs every test peer's MSP registry knows; Org3MSP is generated but unknown (its TLS CA is still trusted)."""


@dataclass(frozen=True)
class PeerFiles:
    """Where one peer's material lives, and which orgs it knows (as plain paths, to pass to a subprocess)."""

    host: str
    mspid: str
    msp_dir: str
    tls_cert: str
    tls_key: str
    tls_roots: tuple[str, ...]
    known_orgs: tuple[tuple[str, str], ...]  # (msp_dir, mspid)

    def to_args(self) -> list[str]:
        args = [self.host, self.mspid, self.msp_dir, self.tls_cert, self.tls_key, ",".join(self.tls_roots)]
        args.append(";".join(f"{d}={m}" for d, m in self.known_orgs))
        return args

    @classmethod
    def from_args(cls, args: list[str]) -> PeerFiles:
        host, mspid, msp_dir, cert, key, roots, orgs = args[:7]
        known = tuple((d, m) for d, m in (item.rsplit("=", 1) for item in orgs.split(";") if item))
        return cls(host, mspid, msp_dir, cert, key, tuple(r for r in roots.split(",") if r), known)


def peer_files(material: object, host: str, known_mspids: Iterable[str]) -> PeerFiles:
    node = material.node(host)  # type: ignore[attr-defined]
    known = set(known_mspids)
    return PeerFiles(
        host=host,
        mspid=node.mspid,
        msp_dir=str(node.msp_dir),
        tls_cert=str(node.tls_cert),
        tls_key=str(node.tls_key),
        # Every org's TLS CA is trusted, so that an org unknown to the MSP registry still gets past TLS
        # and is refused by the gossip handshake itself.
        tls_roots=tuple(str(o.tlsca_cert) for o in material.peer_orgs),  # type: ignore[attr-defined]
        known_orgs=tuple((str(o.msp_dir), o.mspid) for o in material.orgs if o.mspid in known),  # type: ignore[attr-defined]
    )


def crypto_service(files: PeerFiles) -> X509CryptoService:
    registry = OrgRegistry([load_org(Path(d), m) for d, m in files.known_orgs])
    return X509CryptoService(load_signing_identity(Path(files.msp_dir), files.mspid), registry)


def tls_material(files: PeerFiles) -> TLSMaterial:
    return TLSMaterial.from_files(files.tls_cert, files.tls_key, files.tls_roots)


def make_comm(files: PeerFiles, *, tls: bool = True, tracer: Tracer | None = None, **config: object) -> Comm:
    mcs = crypto_service(files)
    cfg = CommConfig(tls=tls_material(files) if tls else None, **config)  # type: ignore[arg-type]
    return Comm(cfg, mcs, mcs, mcs.identity, tracer=tracer)
