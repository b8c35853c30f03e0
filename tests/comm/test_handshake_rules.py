"""The handshake's checks, one rule at a time, without sockets (rumor.comm.handshake)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from comm_helpers import crypto_service

from rumor.comm.handshake import (
    HandshakeError,
    certificate_hash,
    conn_establish_envelope,
    der_to_pem,
    first_certificate_der,
    verify_conn_establish,
)
from rumor.wire import messages
from rumor.wire.pb.gossip import message_pb2 as pb

TLS_HASH = hashlib.sha256(b"the certificate on the connection").digest()


@pytest.fixture(scope="module")
def alice(files):  # type: ignore[no-untyped-def]
    return crypto_service(files("peer0.org1.example.com"))


@pytest.fixture(scope="module")
def bob(files):  # type: ignore[no-untyped-def]
    return crypto_service(files("peer0.org2.example.com"))


@pytest.fixture(scope="module")
def stranger(files):  # type: ignore[no-untyped-def]
    return crypto_service(files("peer0.org3.example.com"))


def check(frame: bytes | pb.Envelope, verifier, expected_tls_hash: bytes | None = TLS_HASH):  # type: ignore[no-untyped-def]
    return verify_conn_establish(
        frame, mcs=verifier, expected_tls_hash=expected_tls_hash, own_pki_id=verifier.pki_id, advisor=verifier
    )


def test_valid_conn_establish_is_accepted(alice, bob) -> None:  # type: ignore[no-untyped-def]
    env = conn_establish_envelope(alice.pki_id, alice.identity, TLS_HASH, alice.sign)
    verified = check(env.SerializeToString(), bob)
    assert verified.pki_id == alice.pki_id
    assert verified.identity == alice.identity
    assert not verified.probe
    assert verified.envelope.signature == env.signature


def test_probe_flag_is_reported(alice, bob) -> None:  # type: ignore[no-untyped-def]
    env = conn_establish_envelope(alice.pki_id, alice.identity, TLS_HASH, alice.sign, probe=True)
    assert check(env, bob).probe


def test_without_tls_the_hash_is_not_checked(alice, bob) -> None:  # type: ignore[no-untyped-def]
    env = conn_establish_envelope(alice.pki_id, alice.identity, b"", alice.sign)
    assert check(env, bob, expected_tls_hash=None).pki_id == alice.pki_id


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"\xff\xff\xff", "first message is not a ConnEstablish: undecodable envelope"),
        (pb.Envelope(payload=b"\xff\xff").SerializeToString(), "undecodable payload"),
        (messages.seal(messages.empty()).SerializeToString(), "first message is not a ConnEstablish but empty"),
        (
            messages.seal(messages.data_message(b"ch", 1, b"block")).SerializeToString(),
            "first message is not a ConnEstablish but data_msg",
        ),
    ],
)
def test_first_message_must_be_conn(bob, frame: bytes, reason: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(HandshakeError, match=reason):
        check(frame, bob)


def test_wrong_tag_is_refused(alice, bob) -> None:  # type: ignore[no-untyped-def]
    msg = messages.conn_establish(alice.pki_id, alice.identity, TLS_HASH)
    msg.tag = messages.CHAN_ONLY
    with pytest.raises(HandshakeError, match="invalid ConnEstablish: conn must carry tag EMPTY"):
        check(messages.seal(msg, alice.sign), bob)


def test_missing_pki_id(alice, bob) -> None:  # type: ignore[no-untyped-def]
    env = conn_establish_envelope(b"", alice.identity, TLS_HASH, alice.sign)
    with pytest.raises(HandshakeError, match="ConnEstablish carries no pki_id"):
        check(env, bob)


def test_identity_of_unknown_org(stranger, bob) -> None:  # type: ignore[no-untyped-def]
    env = conn_establish_envelope(stranger.pki_id, stranger.identity, TLS_HASH, stranger.sign)
    with pytest.raises(HandshakeError, match="identity of org Org3MSP is not valid: unknown MSP ID 'Org3MSP'"):
        check(env, bob)


def test_garbage_identity(alice, bob) -> None:  # type: ignore[no-untyped-def]
    env = conn_establish_envelope(alice.pki_id, b"\x01\x02garbage", TLS_HASH, alice.sign)
    with pytest.raises(HandshakeError, match="is not valid"):
        check(env, bob)


def test_pki_id_not_matching_identity(alice, bob) -> None:  # type: ignore[no-untyped-def]
    env = conn_establish_envelope(bob.pki_id, alice.identity, TLS_HASH, alice.sign)
    with pytest.raises(HandshakeError, match="does not match the identity"):
        check(env, bob)


def test_wrong_certificate_hash(alice, bob) -> None:  # type: ignore[no-untyped-def]
    env = conn_establish_envelope(alice.pki_id, alice.identity, hashlib.sha256(b"other").digest(), alice.sign)
    with pytest.raises(HandshakeError, match="tls_cert_hash does not match the certificate on the connection"):
        check(env, bob)


def test_no_certificate_on_a_tls_connection(alice, bob) -> None:  # type: ignore[no-untyped-def]
    env = conn_establish_envelope(alice.pki_id, alice.identity, TLS_HASH, alice.sign)
    with pytest.raises(HandshakeError, match="presented no TLS certificate"):
        check(env, bob, expected_tls_hash=b"")


def test_bad_signature(alice, bob) -> None:  # type: ignore[no-untyped-def]
    env = conn_establish_envelope(alice.pki_id, alice.identity, TLS_HASH, bob.sign)  # signed by the wrong key
    with pytest.raises(HandshakeError, match="bad signature on ConnEstablish"):
        check(env, bob)


def test_tampered_payload(alice, bob) -> None:  # type: ignore[no-untyped-def]
    env = conn_establish_envelope(alice.pki_id, alice.identity, TLS_HASH, alice.sign)
    msg = pb.GossipMessage.FromString(env.payload)
    msg.conn.probe = True
    env.payload = msg.SerializeToString()
    with pytest.raises(HandshakeError, match="bad signature"):
        check(env, bob)


def test_checks_run_in_protocol_order(alice, bob) -> None:  # type: ignore[no-untyped-def]
    # Wrong hash and wrong signature together: the hash is checked first.
    env = conn_establish_envelope(alice.pki_id, alice.identity, b"\x00" * 32, bob.sign)
    with pytest.raises(HandshakeError, match="tls_cert_hash"):
        check(env, bob)
    # Mismatched pki_id and wrong hash together: the pki_id is checked first.
    env = conn_establish_envelope(bob.pki_id, alice.identity, b"\x00" * 32, alice.sign)
    with pytest.raises(HandshakeError, match="does not match the identity"):
        check(env, bob)


def test_ourselves_is_refused(alice) -> None:  # type: ignore[no-untyped-def]
    env = conn_establish_envelope(alice.pki_id, alice.identity, TLS_HASH, alice.sign)
    with pytest.raises(HandshakeError, match="the remote is this peer itself"):
        check(env, alice)


def test_certificate_helpers(files) -> None:  # type: ignore[no-untyped-def]
    pem = Path(files("peer0.org1.example.com").tls_cert).read_bytes()
    der = first_certificate_der(pem + b"\n" + pem)
    assert der_to_pem(der).strip() == pem.strip()
    assert certificate_hash(der) == hashlib.sha256(der).digest()
