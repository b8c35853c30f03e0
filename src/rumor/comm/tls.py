"""TLS for gossip connections: server and channel credentials, and the dialer's certificate pinning.

Each side of the handshake must check that the remote's ConnEstablish names the
certificate used on *this* TLS session. The acceptor reads the client
certificate from gRPC's auth context. grpc's Python client exposes no such
context, so the dialer makes the server certificate known in advance and pins it:

    1. open a TLS connection with the standard library (same trust roots, same
       client certificate, host name checked), take the server's leaf certificate
       C from it and close it;
    2. open the gRPC channel with C itself as the only trust root. gRPC's TLS stack
       accepts a trusted leaf as a chain of one, so this session can only
       succeed if the server presents exactly C (a different certificate, even one
       from the same CA, fails the TLS handshake);
    3. compare the acceptor's tls_cert_hash with SHA-256(C).

A relay that lets step 1 through to the real peer cannot then terminate the
gRPC session (it lacks C's key), so the check is as strong as reading the
certificate off the session. The cost is one extra TLS handshake per dial.

gRPC's Python server can either require a client certificate or not ask for one
(``require_client_auth=False`` sends no CertificateRequest), so under TLS the
gossip server requires one: a dialer without a certificate fails in the TLS
handshake, before any gossip message, instead of at the hash check as in Fabric.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc

from rumor.comm.config import TLSMaterial
from rumor.comm.handshake import CommError, UnreachableError, certificate_hash, der_to_pem, first_certificate_der

ALPN_H2 = "h2"


def server_credentials(tls: TLSMaterial) -> grpc.ServerCredentials:
    return grpc.ssl_server_credentials(
        [(tls.key_pem, tls.cert_pem)], root_certificates=tls.root_cas_pem, require_client_auth=True
    )


def pinned_channel_credentials(tls: TLSMaterial, server_cert_der: bytes) -> grpc.ChannelCredentials:
    """Credentials that trust exactly ``server_cert_der`` and present our client certificate."""
    return grpc.ssl_channel_credentials(
        root_certificates=der_to_pem(server_cert_der),
        private_key=tls.dial_key_pem,
        certificate_chain=tls.dial_cert_pem,
    )


def channel_credentials(tls: TLSMaterial) -> grpc.ChannelCredentials:
    """Credentials trusting every root CA (for a Ping, which proves reachability, not identity)."""
    return grpc.ssl_channel_credentials(
        root_certificates=tls.root_cas_pem, private_key=tls.dial_key_pem, certificate_chain=tls.dial_cert_pem
    )


def own_server_cert_hash(tls: TLSMaterial) -> bytes:
    return certificate_hash(first_certificate_der(tls.cert_pem))


def own_client_cert_hash(tls: TLSMaterial) -> bytes:
    return certificate_hash(first_certificate_der(tls.dial_cert_pem))


@contextlib.contextmanager
def _key_files(cert_pem: bytes, key_pem: bytes) -> Iterator[tuple[str, str]]:
    # ssl.SSLContext.load_cert_chain reads only files: hand it anonymous memory files where the OS has them,
    # otherwise owner-only files in a private directory that disappear right after loading.
    if hasattr(os, "memfd_create") and Path("/proc/self/fd").is_dir():
        fds = [os.memfd_create("rumor-tls-cert"), os.memfd_create("rumor-tls-key")]
        try:
            for fd, data in zip(fds, (cert_pem, key_pem), strict=True):
                os.write(fd, data)
            yield f"/proc/self/fd/{fds[0]}", f"/proc/self/fd/{fds[1]}"
        finally:
            for fd in fds:
                os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="rumor-tls-") as tmp:
        cert_path, key_path = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
        for path, data in ((cert_path, cert_pem), (key_path, key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
        yield str(cert_path), str(key_path)


def client_ssl_context(tls: TLSMaterial) -> ssl.SSLContext:
    """The standard-library context used to learn a server's certificate before dialing it over gRPC."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(cadata=tls.root_cas_pem.decode("ascii"))
    with _key_files(tls.dial_cert_pem, tls.dial_key_pem) as (cert_file, key_file):
        context.load_cert_chain(cert_file, key_file)
    context.set_alpn_protocols([ALPN_H2])
    return context


def split_endpoint(endpoint: str) -> tuple[str, int]:
    host, sep, port = endpoint.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise CommError(f"invalid endpoint {endpoint!r}: expected host:port")
    return host.strip("[]"), int(port)


async def fetch_server_certificate(endpoint: str, context: ssl.SSLContext, server_name: str, timeout: float) -> bytes:
    """DER of the leaf certificate the server at ``endpoint`` presents, verified against our trust roots."""
    host, port = split_endpoint(endpoint)
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(
                host, port, ssl=context, server_hostname=server_name or host, ssl_handshake_timeout=timeout
            )
    except TimeoutError:
        raise UnreachableError(f"no TLS connection within dialTimeout ({timeout:g}s)") from None
    except ssl.SSLCertVerificationError as exc:
        raise CommError(f"server certificate not accepted: {exc.verify_message or exc}") from None
    except ssl.SSLError as exc:
        raise CommError(f"TLS handshake failed: {exc.reason or exc}") from None
    except OSError as exc:
        raise UnreachableError(f"cannot connect: {exc.strerror or exc}") from None
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    finally:
        # The server speaks HTTP/2 first; a polite close would trip over its SETTINGS frame, so just drop it.
        writer.transport.abort()
    if not der:
        raise CommError("the server presented no TLS certificate")
    return der
