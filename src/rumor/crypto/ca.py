"""A minimal X.509 certificate authority, shaped like Fabric's cryptogen.

A ``CertificateAuthority`` is a self-signed P-256 root (CA:true, keyUsage
certSign and crlSign) that issues leaf certificates: enrollment certificates
tagged with a node OU (peer, orderer, admin, client) and TLS certificates with
host-name/IP SANs valid for both server and client authentication. It also
signs CRLs.

Every certificate it makes carries a low-S ECDSA signature. Fabric's MSP turns a
high-S certificate into its low-S twin before serializing the identity, which
changes the identity bytes and so the PKI-ID that other peers compute; issuing
low-S certificates in the first place keeps one identity per certificate. ECDSA
signing is randomized, so the CA simply signs again until s is low (about two
tries on average).

Key identifiers follow cryptogen: the SKI is SHA-256 of the uncompressed public
point, and leaves carry the CA's SKI as their AKI (Fabric matches CRLs to CAs by
that AKI).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from rumor.crypto.api import CryptoError
from rumor.crypto.identity import has_high_s
from rumor.crypto.signing import PrivateKey, PublicKey, generate_key, read_private_key

COUNTRY = "US"
PROVINCE = "California"
LOCALITY = "San Francisco"

_MAX_SIGNING_ATTEMPTS = 256


def subject_key_identifier(public_key: PublicKey) -> bytes:
    point = public_key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return hashlib.sha256(point).digest()


def _name(common_name: str, organization: str | None = None, organizational_unit: str | None = None) -> x509.Name:
    attributes = [
        x509.NameAttribute(NameOID.COUNTRY_NAME, COUNTRY),
        x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, PROVINCE),
        x509.NameAttribute(NameOID.LOCALITY_NAME, LOCALITY),
    ]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    if organizational_unit:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, organizational_unit))
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _general_name(san: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(san))
    except ValueError:
        return x509.DNSName(san)


def sign_low_s(builder: x509.CertificateBuilder, key: PrivateKey) -> x509.Certificate:
    """Sign ``builder`` with ``key``, re-signing until the certificate's own signature is low-S."""
    for _ in range(_MAX_SIGNING_ATTEMPTS):
        cert = builder.sign(key, hashes.SHA256())
        if not has_high_s(cert, key.curve):
            return cert
    raise CryptoError("could not produce a low-S certificate signature")  # odds: 2**-256


def _utc(when: dt.datetime) -> dt.datetime:
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class CertificateAuthority:
    certificate: x509.Certificate
    private_key: PrivateKey = field(repr=False)

    @classmethod
    def create(
        cls,
        common_name: str,
        organization: str,
        *,
        not_before: dt.datetime,
        not_after: dt.datetime,
        key: PrivateKey | None = None,
    ) -> CertificateAuthority:
        key = key if key is not None else generate_key()
        name = _name(common_name, organization)
        ski = subject_key_identifier(key.public_key())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_utc(not_before))
            .not_valid_after(_utc(not_after))
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=True,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier(ski), critical=False)
        )
        return cls(certificate=sign_low_s(builder, key), private_key=key)

    @classmethod
    def load(cls, cert_path: Path, key_path: Path) -> CertificateAuthority:
        cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
        key = read_private_key(Path(key_path))
        if cert.public_key() != key.public_key():
            raise CryptoError(f"{key_path} does not match {cert_path}")
        return cls(certificate=cert, private_key=key)

    @property
    def key_identifier(self) -> bytes:
        try:
            return self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
        except x509.ExtensionNotFound:
            return subject_key_identifier(self.private_key.public_key())

    def issue(
        self,
        common_name: str,
        public_key: PublicKey,
        *,
        not_before: dt.datetime,
        not_after: dt.datetime,
        organizational_unit: str | None = None,
        tls: bool = False,
        sans: Sequence[str] = (),
    ) -> x509.Certificate:
        """A leaf certificate: an enrollment certificate, or with ``tls`` a server+client TLS certificate."""
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name, organizational_unit=organizational_unit))
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(_utc(not_before))
            .not_valid_after(_utc(not_after))
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=tls,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier(subject_key_identifier(public_key)), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier(
                    self.key_identifier, authority_cert_issuer=None, authority_cert_serial_number=None
                ),
                critical=False,
            )
        )
        if tls:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
        if sans:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_general_name(s) for s in dict.fromkeys(sans)]), critical=False
            )
        return sign_low_s(builder, self.private_key)

    def issue_crl(
        self,
        revoked_serials: Iterable[int],
        *,
        last_update: dt.datetime,
        next_update: dt.datetime,
    ) -> x509.CertificateRevocationList:
        """A CRL revoking ``revoked_serials`` as of ``last_update``, with the AKI Fabric matches CRLs by."""
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.certificate.subject)
            .last_update(_utc(last_update))
            .next_update(_utc(next_update))
            .add_extension(
                x509.AuthorityKeyIdentifier(
                    self.key_identifier, authority_cert_issuer=None, authority_cert_serial_number=None
                ),
                critical=False,
            )
        )
        for serial in revoked_serials:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(_utc(last_update)).build()
            )
        return builder.sign(self.private_key, hashes.SHA256())
