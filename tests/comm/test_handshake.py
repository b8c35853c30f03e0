"""The handshake over real gRPC on loopback: success with and without TLS, and every refusal."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import socket
import ssl
from pathlib import Path

import grpc
import pytest
from comm_helpers import KNOWN_ORGS, crypto_service, peer_files, tls_material
from grpc import aio
from polling import wait_for

from rumor.comm import Comm, CommConfig, CommError, HandshakeError
from rumor.comm.comm import GOSSIP_STREAM, PING
from rumor.comm.handshake import certificate_hash, conn_establish_envelope, first_certificate_der
from rumor.comm.tls import pinned_channel_credentials
from rumor.core.types import RemotePeer
from rumor.crypto import load_signing_identity
from rumor.wire import messages
from rumor.wire.pb.gossip import message_pb2 as pb

ORG1 = "peer0.org1.example.com"
ORG1_B = "peer1.org1.example.com"
ORG2 = "peer0.org2.example.com"
ORG3 = "peer0.org3.example.com"  # its org is unknown to every registry, its TLS CA is trusted


def cert_hash_of(files) -> bytes:  # type: ignore[no-untyped-def]
    return certificate_hash(first_certificate_der(Path(files.tls_cert).read_bytes()))


class RawDialer:
    """A GossipStream client that writes whatever frames a test gives it, bypassing Comm's encoder."""

    def __init__(self, files, *, tls: bool = True, present_cert: bool = True) -> None:  # type: ignore[no-untyped-def]
        self.files = files
        self.mcs = crypto_service(files)
        self.tls = tls
        self.present_cert = present_cert
        self.channel: aio.Channel | None = None
        self.call = None

    @property
    def cert_hash(self) -> bytes:
        return cert_hash_of(self.files) if self.tls else b""

    def conn(self, **changes) -> bytes:  # type: ignore[no-untyped-def]
        fields = {"pki_id": self.mcs.pki_id, "identity": self.mcs.identity, "tls_cert_hash": self.cert_hash}
        sign = changes.pop("sign", self.mcs.sign)
        fields.update(changes)
        envelope = conn_establish_envelope(fields["pki_id"], fields["identity"], fields["tls_cert_hash"], sign)
        return envelope.SerializeToString()

    async def open(self, endpoint: str) -> bytes:
        options = [("grpc.max_send_message_length", 64 * 1024 * 1024), ("grpc.use_local_subchannel_pool", 1)]
        if self.tls:
            mat = tls_material(self.files)
            creds = (
                grpc.ssl_channel_credentials(mat.root_cas_pem, mat.key_pem, mat.cert_pem)
                if self.present_cert
                else grpc.ssl_channel_credentials(mat.root_cas_pem)
            )
            self.channel = aio.secure_channel(endpoint, creds, options=options)
        else:
            self.channel = aio.insecure_channel(endpoint, options=options)
        self.call = self.channel.stream_stream(GOSSIP_STREAM)()
        first = await self.call.read()
        assert first is not aio.EOF
        return first  # type: ignore[no-any-return]

    async def handshake(self, endpoint: str) -> None:
        await self.open(endpoint)
        await self.write(self.conn())

    async def write(self, frame: bytes) -> None:
        assert self.call is not None
        await self.call.write(frame)

    async def ended(self, timeout: float = 5.0) -> bool:
        """True once the acceptor ended the stream."""
        assert self.call is not None
        try:
            async with asyncio.timeout(timeout):
                while True:
                    frame = await self.call.read()
                    if frame is aio.EOF:
                        return True
        except aio.AioRpcError:
            return True

    async def close(self) -> None:
        if self.channel is not None:
            await self.channel.close()


@pytest.fixture
async def dialers():  # type: ignore[no-untyped-def]
    made: list[RawDialer] = []

    def make(files, **kw) -> RawDialer:  # type: ignore[no-untyped-def]
        dialer = RawDialer(files, **kw)
        made.append(dialer)
        return dialer

    yield make
    for dialer in made:
        await dialer.close()


def failure_logged(caplog: pytest.LogCaptureFixture, reason: str) -> bool:
    return any(
        r.name == "rumor.comm" and "handshake with 127.0.0.1:" in r.getMessage() and reason in r.getMessage()
        for r in caplog.records
    )


# --- success ---------------------------------------------------------------------------------


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "plaintext"])
async def test_two_generated_peers_complete_the_handshake(comms, files, tls: bool) -> None:  # type: ignore[no-untyped-def]
    a = await comms(ORG1, tls=tls)
    b = await comms(ORG2, tls=tls)
    info = await a.connect(RemotePeer(b.pki_id, b.endpoint))
    assert info.pki_id == b.pki_id and info.identity == b.identity and info.outbound
    await wait_for(lambda: b.connection(a.pki_id) is not None)
    back = b.connection(a.pki_id)
    assert back is not None and not back.outbound and back.identity == a.identity
    # The kept proof is the remote's signed ConnEstablish, and it verifies.
    proof = pb.GossipMessage.FromString(back.proof.payload)
    assert proof.conn.pki_id == a.pki_id
    assert proof.conn.tls_cert_hash == (certificate_hash(first_certificate_der(a.config.tls.cert_pem)) if tls else b"")
    b_crypto = crypto_service(files(ORG2))
    b_crypto.verify(a.identity, back.proof.signature, back.proof.payload)
    assert [c.pki_id for c in a.connections()] == [b.pki_id]
    assert [c.pki_id for c in b.connections()] == [a.pki_id]


async def test_handshake_returns_the_identity_and_leaves_no_connection(comms) -> None:  # type: ignore[no-untyped-def]
    a = await comms(ORG1)
    b = await comms(ORG2)
    info = await a.handshake(b.endpoint)
    assert info.pki_id == b.pki_id and info.identity == b.identity and info.probe
    assert a.connections() == [] and b.connections() == []
    assert b.metrics.handshakes_failed == 0


async def test_probe(comms) -> None:  # type: ignore[no-untyped-def]
    a = await comms(ORG1)
    b = await comms(ORG2)
    await a.probe(b.endpoint)
    await b.stop()
    with pytest.raises(CommError, match="Ping failed"):
        await a.probe(b.endpoint)


# --- refusals by the acceptor -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("crafted", "reason"),
    [
        (lambda d, other: d.conn(sign=other.sign), "bad signature on ConnEstablish"),
        (lambda d, other: d.conn(pki_id=other.pki_id), "does not match the identity"),
        (lambda d, other: d.conn(tls_cert_hash=hashlib.sha256(b"x").digest()), "tls_cert_hash does not match"),
        (lambda d, other: d.conn(pki_id=b""), "ConnEstablish carries no pki_id"),
        (
            lambda d, other: messages.seal(messages.empty()).SerializeToString(),
            "first message is not a ConnEstablish but empty",
        ),
        (lambda d, other: b"\x08\x96\x01garbage", "first message is not a ConnEstablish"),
    ],
    ids=["bad-signature", "pki-id-mismatch", "wrong-cert-hash", "missing-pki-id", "not-conn", "garbage"],
)
async def test_acceptor_refuses(comms, dialers, files, caplog, crafted, reason: str) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO, logger="rumor.comm")
    acceptor = await comms(ORG1)
    dialer = dialers(files(ORG2))
    first = await dialer.open(acceptor.endpoint)
    assert pb.GossipMessage.FromString(pb.Envelope.FromString(first).payload).conn.pki_id == acceptor.pki_id
    await dialer.write(crafted(dialer, crypto_service(files(ORG1_B))))
    assert await dialer.ended()
    await wait_for(lambda: failure_logged(caplog, reason))
    assert acceptor.connections() == []
    assert acceptor.metrics.handshakes_failed == 1


async def test_acceptor_times_out_without_conn_establish(comms, dialers, files, caplog) -> None:  # type: ignore[no-untyped-def]
    acceptor = await comms(ORG1, conn_timeout=0.3)
    dialer = dialers(files(ORG2))
    await dialer.open(acceptor.endpoint)
    assert await dialer.ended()
    await wait_for(lambda: failure_logged(caplog, "no ConnEstablish within connTimeout (0.3s)"))
    assert acceptor.connections() == []


async def test_identity_of_unknown_org_is_refused_by_the_acceptor(comms, caplog) -> None:  # type: ignore[no-untyped-def]
    acceptor = await comms(ORG1)
    stranger = await comms(ORG3)
    # The stranger accepts the acceptor (whose org it knows); the acceptor refuses it and ends the stream,
    # which the stranger may notice during its handshake or only just after it.
    with contextlib.suppress(CommError):
        await stranger.connect(RemotePeer(acceptor.pki_id, acceptor.endpoint))
    await wait_for(lambda: failure_logged(caplog, "identity of org Org3MSP is not valid: unknown MSP ID 'Org3MSP'"))
    assert acceptor.connections() == []
    await wait_for(lambda: stranger.connections() == [])


async def test_identity_of_unknown_org_is_refused_by_the_dialer(comms, caplog) -> None:  # type: ignore[no-untyped-def]
    dialer = await comms(ORG1)
    stranger = await comms(ORG3)
    with pytest.raises(HandshakeError, match="identity of org Org3MSP is not valid"):
        await dialer.connect(RemotePeer(stranger.pki_id, stranger.endpoint))
    assert failure_logged(caplog, "identity of org Org3MSP is not valid: unknown MSP ID 'Org3MSP'")
    assert dialer.connections() == []
    await wait_for(lambda: stranger.connections() == [])


async def test_no_client_certificate_under_tls(comms, dialers, files) -> None:  # type: ignore[no-untyped-def]
    acceptor = await comms(ORG1)
    # gRPC's Python server can only require a client certificate or not ask for one; it requires it, so a
    # dialer without one is turned away by the TLS handshake itself: the server drops the connection where
    # it would otherwise start HTTP/2 with its SETTINGS frame.
    peer = files(ORG2)
    mat = tls_material(peer)
    host, port = acceptor.endpoint.rsplit(":", 1)

    def first_bytes(present_cert: bool) -> bytes:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(cadata=mat.root_cas_pem.decode())
        context.set_alpn_protocols(["h2"])
        if present_cert:
            context.load_cert_chain(peer.tls_cert, peer.tls_key)
        with (
            socket.create_connection((host, int(port)), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls_socket,
        ):
            try:
                return tls_socket.recv(9)
            except (ssl.SSLError, ConnectionError):
                return b""

    assert await asyncio.to_thread(first_bytes, True) != b""
    assert await asyncio.to_thread(first_bytes, False) == b""
    # And a gRPC client without a certificate never gets to exchange a gossip message.
    dialer = dialers(files(ORG2), present_cert=False)
    with pytest.raises(aio.AioRpcError) as err:
        await dialer.open(acceptor.endpoint)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert acceptor.connections() == []


async def test_plaintext_dialer_cannot_reach_a_tls_peer(comms, caplog) -> None:  # type: ignore[no-untyped-def]
    a = await comms(ORG1, tls=False, dial_timeout=1.0, conn_timeout=1.0)
    b = await comms(ORG2)
    with pytest.raises(CommError):
        await a.connect(RemotePeer(b.pki_id, b.endpoint))
    assert failure_logged(caplog, "Ping failed: UNAVAILABLE")
    assert a.connections() == [] and b.connections() == []


# --- refusals by the dialer -------------------------------------------------------------------


class FakeAcceptor:
    """A gossip server that answers every stream with a given first frame (or nothing)."""

    def __init__(self, files, first_frame: bytes | None) -> None:  # type: ignore[no-untyped-def]
        self.files = files
        self.first_frame = first_frame
        self.server = aio.server()
        self.port = 0

    async def start(self) -> str:
        async def stream(request_iterator, context):  # type: ignore[no-untyped-def]
            if self.first_frame is not None:
                await context.write(self.first_frame)
            while await context.read() is not aio.EOF:
                pass

        async def ping(request, context):  # type: ignore[no-untyped-def]
            return pb.Empty()

        handlers = {
            "GossipStream": grpc.stream_stream_rpc_method_handler(stream),
            "Ping": grpc.unary_unary_rpc_method_handler(
                ping, request_deserializer=pb.Empty.FromString, response_serializer=pb.Empty.SerializeToString
            ),
        }
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("gossip.Gossip", handlers),))
        mat = tls_material(self.files)
        creds = grpc.ssl_server_credentials([(mat.key_pem, mat.cert_pem)], mat.root_cas_pem, True)
        self.port = self.server.add_secure_port("127.0.0.1:0", creds)
        await self.server.start()
        return f"127.0.0.1:{self.port}"

    async def stop(self) -> None:
        await self.server.stop(None)


@pytest.mark.parametrize(
    ("make_frame", "reason"),
    [
        (lambda f, m: None, "no ConnEstablish within connTimeout (0.3s)"),
        (
            lambda f, m: conn_establish_envelope(m.pki_id, m.identity, b"\x01" * 32, m.sign).SerializeToString(),
            "tls_cert_hash does not match the certificate on the connection",
        ),
        (
            lambda f, m: conn_establish_envelope(
                m.pki_id, m.identity, cert_hash_of(f), lambda p: b"0\x00"
            ).SerializeToString(),
            "bad signature",
        ),
    ],
    ids=["silent", "wrong-cert-hash", "bad-signature"],
)
async def test_dialer_refuses(comms, files, caplog, make_frame, reason: str) -> None:  # type: ignore[no-untyped-def]
    remote = files(ORG2)
    mcs = crypto_service(remote)
    fake = FakeAcceptor(remote, make_frame(remote, mcs))
    endpoint = await fake.start()
    try:
        dialer = await comms(ORG1, conn_timeout=0.3)
        with pytest.raises(HandshakeError):
            await dialer.connect(RemotePeer(mcs.pki_id, endpoint))
        assert failure_logged(caplog, reason)
        assert dialer.connections() == []
    finally:
        await fake.stop()


async def test_dialing_ourselves_is_refused(comms, caplog) -> None:  # type: ignore[no-untyped-def]
    a = await comms(ORG1)
    with pytest.raises(HandshakeError, match="the remote is this peer itself"):
        await a.handshake(a.endpoint)
    await wait_for(lambda: failure_logged(caplog, "the remote is this peer itself"))
    assert a.connections() == []


async def test_pinned_channel_refuses_another_certificate_of_the_same_ca(comms, files) -> None:  # type: ignore[no-untyped-def]
    # The dialer's binding rests on this: a channel pinned to one certificate cannot reach a server
    # presenting another, even one issued by the same trusted CA.
    server = await comms(ORG1)
    mine = tls_material(files(ORG1))
    sibling = tls_material(files(ORG1_B))
    for cert, ok in ((mine.cert_pem, True), (sibling.cert_pem, False)):
        creds = pinned_channel_credentials(sibling, first_certificate_der(cert))
        channel = aio.secure_channel(server.endpoint, creds)
        ping = channel.unary_unary(PING, pb.Empty.SerializeToString, pb.Empty.FromString)
        try:
            if ok:
                await ping(pb.Empty(), timeout=5)
            else:
                with pytest.raises(aio.AioRpcError) as err:
                    await ping(pb.Empty(), timeout=5)
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            await channel.close()


# --- expected PKI-ID and identity renewal -----------------------------------------------------


async def test_unexpected_pki_id_is_accepted_only_within_the_same_org(comms, files, material, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO, logger="rumor.comm")
    host = await comms(ORG1_B)  # what really sits at the endpoint
    admin_org1 = load_signing_identity(material.org("Org1MSP").admin.msp_dir, "Org1MSP")
    org2_peer = crypto_service(files("peer1.org2.example.com"))
    known = {admin_org1.pki_id: admin_org1.identity, org2_peer.pki_id: org2_peer.identity}
    mcs = crypto_service(files(ORG1))
    cfg = CommConfig(tls=tls_material(files(ORG1)))
    dialer = Comm(cfg, mcs, mcs, mcs.identity, identity_of=known.get)
    await dialer.start()
    try:
        with pytest.raises(HandshakeError, match=r"of org Org2MSP but the remote is .* of org Org1MSP"):
            await dialer.connect(RemotePeer(org2_peer.pki_id, host.endpoint))
        assert dialer.connections() == []
        # Same org: the peer renewed its identity; the connection is kept under the new PKI-ID.
        info = await dialer.connect(RemotePeer(admin_org1.pki_id, host.endpoint))
        assert info.pki_id == host.pki_id
        assert any("renewed its identity" in r.getMessage() for r in caplog.records)
        unknown = crypto_service(files(ORG2))
        await dialer.stop()
        dialer = Comm(cfg, mcs, mcs, mcs.identity)
        await dialer.start()
        with pytest.raises(HandshakeError, match="org cannot be compared"):
            await dialer.connect(RemotePeer(unknown.pki_id, host.endpoint))
    finally:
        await dialer.stop()


def test_from_config(material, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    from rumor.config import Config

    node = material.node(ORG1)
    base = Config()
    peer = replace(
        base.peer,
        listen_address="127.0.0.1:0",
        tls=replace(
            base.peer.tls,
            enabled=True,
            cert_file=str(node.tls_cert),
            key_file=str(node.tls_key),
            rootcert_file=str(node.tls_ca_cert),
        ),
        gossip=replace(base.peer.gossip, dial_timeout=1.5, conn_timeout=0.5, send_buff_size=7),
    )
    org2_ca = material.org("Org2MSP").tlsca_cert.read_bytes()
    cfg = CommConfig.from_config(replace(base, peer=peer), extra_root_cas_pem=[org2_ca])
    assert cfg.tls is not None and cfg.tls.cert_pem == node.tls_cert.read_bytes()
    assert org2_ca.strip() in cfg.tls.root_cas_pem and node.tls_ca_cert.read_bytes().strip() in cfg.tls.root_cas_pem
    assert (cfg.dial_timeout, cfg.conn_timeout, cfg.send_buff_size) == (1.5, 0.5, 7)
    assert cfg.max_message_size == 100 * 1024 * 1024
    off = CommConfig.from_config(replace(base, peer=replace(peer, tls=replace(peer.tls, enabled=False))))
    assert off.tls is None


def test_peer_files_roundtrip(material) -> None:  # type: ignore[no-untyped-def]
    from comm_helpers import PeerFiles

    files = peer_files(material, ORG2, KNOWN_ORGS)
    assert PeerFiles.from_args(files.to_args()) == files
