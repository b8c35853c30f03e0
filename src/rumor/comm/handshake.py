"""The authenticated handshake that opens every gossip stream, as plain functions.

Both ends of a fresh GossipStream send a signed ConnEstablish{pki_id, identity,
tls_cert_hash, probe} and read the other's within connTimeout. A receiver
accepts the remote only if, in this order (the protocol's order, so failures
read the same as in Fabric):

    1. the first message decodes and is a ConnEstablish (tag EMPTY)
    2. it names a pki_id
    3. its identity is valid for a known org, and SHA-256(mspid || id_bytes) == pki_id
    4. with TLS: SHA-256(DER of the certificate seen on this connection) == tls_cert_hash
    5. the envelope's signature verifies under that identity
    6. (rumor) the remote is not ourselves

Step 4 binds the signed identity to the TLS session: a relay that forwards
another peer's ConnEstablish over its own TLS connection presents a certificate
whose hash differs. Nothing here does I/O; the shell supplies the received frame
and the hash of the certificate it saw, so every rule is testable without sockets.
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError

from rumor.crypto.api import CryptoError, InvalidSignature, MessageCryptoService, SecurityAdvisor
from rumor.wire import messages
from rumor.wire.pb.gossip import message_pb2 as pb


class CommError(Exception):
    """A failure of the comm layer; the message says what failed."""


class UnreachableError(CommError):
    """Nothing answered at the endpoint (refused, timed out): no handshake was tried. The caller decides how loudly
    to report it (discovery logs an unreachable bootstrap peer itself), so comm logs it at debug only."""


class HandshakeError(CommError):
    """The remote could not be authenticated; the message is the reason, ready for a log line."""


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """What a successful handshake proved about the remote end of one connection."""

    pki_id: bytes
    identity: bytes = field(repr=False)
    endpoint: str
    """host:port we dialed, or the remote address of an accepted connection."""
    proof: pb.Envelope = field(repr=False)
    """The remote's signed ConnEstablish, kept to authorize its later requests."""
    outbound: bool
    """True when we dialed, False when the remote dialed us."""
    probe: bool = False


def certificate_hash(der: bytes) -> bytes:
    """SHA-256 of a DER certificate: the value ConnEstablish.tls_cert_hash carries."""
    return hashlib.sha256(der).digest()


def first_certificate_der(pem: bytes) -> bytes:
    """DER of the first certificate in a PEM bundle (a leaf followed by its chain hashes as the leaf)."""
    text = pem.decode("ascii", errors="replace")
    begin = text.find("-----BEGIN CERTIFICATE-----")
    end_marker = "-----END CERTIFICATE-----"
    end = text.find(end_marker, begin)
    if begin < 0 or end < 0:
        raise CommError("no PEM certificate found")
    try:
        return ssl.PEM_cert_to_DER_cert(text[begin : end + len(end_marker)])
    except ValueError as exc:
        raise CommError(f"malformed PEM certificate: {exc}") from None


def der_to_pem(der: bytes) -> bytes:
    return ssl.DER_cert_to_PEM_cert(der).encode("ascii")


def conn_establish_envelope(
    pki_id: bytes, identity: bytes, tls_cert_hash: bytes, sign: Callable[[bytes], bytes], *, probe: bool = False
) -> pb.Envelope:
    """Our signed ConnEstablish (nonce 0, tag EMPTY)."""
    return messages.seal(messages.conn_establish(pki_id, identity, tls_cert_hash, probe=probe), sign)


def _short(pki_id: bytes) -> str:
    return pki_id.hex()[:16]


def _org_label(advisor: SecurityAdvisor | None, identity: bytes) -> str:
    if advisor is None:
        return ""
    try:
        return f" of org {advisor.org_of(identity).decode(errors='replace')}"
    except CryptoError:
        return ""


@dataclass(frozen=True, slots=True)
class VerifiedConn:
    pki_id: bytes
    identity: bytes
    probe: bool
    envelope: pb.Envelope


def verify_conn_establish(
    frame: bytes | pb.Envelope,
    *,
    mcs: MessageCryptoService,
    expected_tls_hash: bytes | None,
    own_pki_id: bytes,
    advisor: SecurityAdvisor | None = None,
) -> VerifiedConn:
    """Check the remote's first message; raise HandshakeError with the reason, or return what it proves.

    ``expected_tls_hash`` is the hash of the certificate the remote presented on this connection;
    None when TLS is off (the binding is skipped), b"" when TLS is on but no certificate was seen.
    ``advisor`` only names the remote's org in the reason when its identity is refused.
    """
    if isinstance(frame, pb.Envelope):
        envelope = frame
    else:
        envelope = pb.Envelope()
        try:
            envelope.ParseFromString(frame)
        except DecodeError:
            raise HandshakeError("first message is not a ConnEstablish: undecodable envelope") from None
    msg = pb.GossipMessage()
    try:
        msg.ParseFromString(envelope.payload)
    except DecodeError:
        raise HandshakeError("first message is not a ConnEstablish: undecodable payload") from None
    kind = msg.WhichOneof("content")
    if kind != "conn":
        raise HandshakeError(f"first message is not a ConnEstablish but {kind or 'empty'}")
    try:
        messages.check_tag(msg)
    except messages.InvalidMessage as exc:
        raise HandshakeError(f"invalid ConnEstablish: {exc}") from None
    conn = msg.conn
    if not conn.pki_id:
        raise HandshakeError("ConnEstablish carries no pki_id")
    try:
        mcs.validate_identity(conn.identity)
    except CryptoError as exc:
        raise HandshakeError(f"identity{_org_label(advisor, conn.identity)} is not valid: {exc}") from None
    try:
        derived = mcs.pki_id_of(conn.identity)
    except CryptoError as exc:
        raise HandshakeError(f"invalid identity: {exc}") from None
    if derived != conn.pki_id:
        raise HandshakeError(
            f"pki_id {_short(conn.pki_id)} does not match the identity (whose pki_id is {_short(derived)})"
        )
    if expected_tls_hash is not None:
        if not expected_tls_hash:
            raise HandshakeError("the remote presented no TLS certificate")
        if conn.tls_cert_hash != expected_tls_hash:
            raise HandshakeError("tls_cert_hash does not match the certificate on the connection")
    try:
        mcs.verify(conn.identity, envelope.signature, envelope.payload)
    except InvalidSignature as exc:
        raise HandshakeError(f"bad signature on ConnEstablish: {exc}") from None
    except CryptoError as exc:
        raise HandshakeError(f"cannot verify ConnEstablish signature: {exc}") from None
    if conn.pki_id == own_pki_id:
        raise HandshakeError("the remote is this peer itself")
    return VerifiedConn(pki_id=bytes(conn.pki_id), identity=bytes(conn.identity), probe=conn.probe, envelope=envelope)
