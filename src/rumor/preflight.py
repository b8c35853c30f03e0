"""Checks of a peer's files before it starts: its MSP directory, its identity, its TLS material.

``rumor config check`` runs them so that a core.yaml naming a missing directory or a certificate of another CA is
reported before the peer is started, and ``Peer.start`` runs them so that the error it gives names the file:

1. the MSP directory exists and holds a CA (``cacerts``) and exactly one signing certificate with its key;
2. that certificate is valid under the org the MSP defines (it chains to the org's CA, is not revoked, is in
   time), which is how every other peer will judge it;
3. with TLS on: the certificate, key and root files exist and parse, the key belongs to the certificate, and the
   certificate was issued by one of the configured TLS roots (or by the org's TLS CA in ``tlscacerts``);
4. the operations endpoint's TLS files likewise, when operations.tls is on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from rumor.config import Config
from rumor.crypto.api import CryptoError
from rumor.crypto.identity import SigningIdentity, load_signing_identity
from rumor.crypto.msp import Org, OrgRegistry, load_org


class PreflightError(Exception):
    """A file the peer needs is missing or wrong; the message names it."""


@dataclass(frozen=True)
class PeerMaterial:
    """What the checks loaded, for the caller to use rather than read twice."""

    signer: SigningIdentity
    org: Org


def check_peer(config: Config) -> PeerMaterial:
    """Run every check of the module docstring; raise PreflightError at the first failure."""
    peer = config.peer
    msp_dir = Path(peer.msp_config_path)
    if not msp_dir.is_dir():
        raise PreflightError(f"peer.mspConfigPath: {msp_dir} is not a directory")
    try:
        org = load_org(msp_dir, peer.local_msp_id)
        signer = load_signing_identity(msp_dir, peer.local_msp_id)
    except (OSError, CryptoError) as exc:
        raise PreflightError(f"cannot load the peer's identity from {msp_dir}: {exc}") from None
    try:
        OrgRegistry([org]).validate(signer.identity)
    except CryptoError as exc:
        raise PreflightError(
            f"{msp_dir / 'signcerts'}: the peer's certificate is not valid in its own org {peer.local_msp_id} "
            f"as {msp_dir / 'cacerts'} defines it: {exc}"
        ) from None
    if peer.tls.enabled:
        roots = [p for p in (peer.tls.rootcert_file, *peer.tls.client_root_cas_files) if p]
        root_certs = [cert for path in roots for cert in _read_certs("peer.tls root", path)]
        root_certs += list(org.tls_root_certs)
        intermediates = msp_dir / "tlsintermediatecerts"
        if intermediates.is_dir():
            for path in sorted(p for p in intermediates.iterdir() if p.is_file()):
                root_certs += _read_certs("tlsintermediatecerts", path)
        _check_pair("peer.tls", peer.tls.cert_file, peer.tls.key_file, root_certs)
        if peer.tls.client_cert_file or peer.tls.client_key_file:
            _check_pair("peer.tls.clientCert", peer.tls.client_cert_file, peer.tls.client_key_file, root_certs)
    ops_tls = config.operations.tls
    if ops_tls.enabled:
        ops_roots = [cert for path in ops_tls.client_root_cas_files for cert in _read_certs("operations.tls", path)]
        _check_pair("operations.tls", ops_tls.cert_file, ops_tls.key_file, None)
        if ops_tls.client_auth_required and not ops_roots:
            raise PreflightError("operations.tls.clientAuthRequired is on but operations.tls.clientRootCAs is empty")
    return PeerMaterial(signer=signer, org=org)


def _read_certs(what: str, path: str | Path) -> list[x509.Certificate]:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise PreflightError(f"{what}: {path}: {exc.strerror or exc}") from None
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise PreflightError(f"{what}: {path}: not a PEM certificate ({exc})") from None
    return certs


def _check_pair(what: str, cert_path: str, key_path: str, roots: list[x509.Certificate] | None) -> None:
    if not cert_path or not key_path:
        raise PreflightError(f"{what}: TLS is on but cert.file or key.file is not set")
    cert = _read_certs(f"{what} cert.file", cert_path)[0]
    try:
        key_data = Path(key_path).read_bytes()
    except OSError as exc:
        raise PreflightError(f"{what} key.file: {key_path}: {exc.strerror or exc}") from None
    try:
        key = serialization.load_pem_private_key(key_data, password=None)
    except (ValueError, TypeError) as exc:
        raise PreflightError(f"{what} key.file: {key_path}: not an unencrypted PEM private key ({exc})") from None
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.DER, spki) != cert.public_key().public_bytes(
        serialization.Encoding.DER, spki
    ):
        raise PreflightError(f"{what}: the key in {key_path} does not belong to the certificate in {cert_path}")
    if roots is None:
        return
    for root in roots:
        try:
            cert.verify_directly_issued_by(root)
            return
        except Exception:
            continue
    issuer = cert.issuer.rfc4514_string()
    raise PreflightError(
        f"{what}: {cert_path} (issued by {issuer}) was issued by none of the TLS root certificates configured "
        "(rootcert.file, clientRootCAs.files, the MSP's tlscacerts and tlsintermediatecerts)"
    )
