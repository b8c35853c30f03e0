"""Discovery driven directly: explicit messages, explicit ``now``, no simulator.

Where a test has a counterpart in Fabric's gossip/discovery/discovery_test.go or gossip/gossip_test.go, its
docstring names it.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from rumor.config import GossipConfig
from rumor.core.discovery import Discovery
from rumor.core.peerstore import MemoryPeerStore, PeerStoreError, StoredPeer
from rumor.core.types import (
    Disconnect,
    Effect,
    Handshake,
    HandshakeResult,
    Probe,
    ReceivedMessage,
    RecordingTracer,
    RemotePeer,
    Send,
)
from rumor.crypto.cheap import CheapCryptoService, CheapRegistry
from rumor.wire import messages as wire
from rumor.wire.pb.gossip import message_pb2 as pb

ORG1, ORG2, ORG3 = "Org1MSP", "Org2MSP", "Org3MSP"
INC = 1_700_000_000_000_000_000


@dataclass
class Peer:
    """A peer as the tests play it: its crypto and its two endpoints."""

    mcs: CheapCryptoService
    endpoint: str  # internal
    external: str

    @property
    def pki_id(self) -> bytes:
        return self.mcs.pki_id

    @property
    def identity(self) -> bytes:
        return self.mcs.identity

    def remote(self) -> RemotePeer:
        return RemotePeer(self.pki_id, self.endpoint)


@pytest.fixture
def reg() -> CheapRegistry:
    return CheapRegistry()


def make_peer(reg: CheapRegistry, name: str, org: str = ORG1, external: bool = True) -> Peer:
    mcs = CheapCryptoService.for_peer(org, name, reg)
    domain = org.lower()
    return Peer(mcs, f"{name}.{domain}.int:7051", f"{name}.{domain}.ext:7051" if external else "")


def alive_env(
    p: Peer, inc: int, seq: int, *, identity: bool = True, secret: bool = True, metadata: bytes = b""
) -> pb.Envelope:
    msg = wire.alive(p.external, p.pki_id, inc, seq, identity=p.identity if identity else b"", metadata=metadata)
    env = wire.seal(msg, p.mcs.sign)
    return wire.with_secret(env, p.endpoint, p.mcs.sign) if secret else env


def received(sender: Peer, env: pb.Envelope) -> ReceivedMessage:
    return ReceivedMessage(
        sender=sender.pki_id,
        sender_endpoint=sender.endpoint,
        sender_identity=sender.identity,
        envelope=env,
        message=wire.open_envelope(env),
    )


def request_from(p: Peer, inc: int, seq: int, nonce: int = 0, secret: bool = True) -> ReceivedMessage:
    return received(p, wire.seal(wire.membership_request(alive_env(p, inc, seq, secret=secret), nonce=nonce)))


def make_discovery(
    me: Peer,
    *,
    bootstrap: tuple[str, ...] = (),
    store: MemoryPeerStore | None = None,
    seed: int = 0,
    **settings: object,
) -> Discovery:
    config = GossipConfig(bootstrap=bootstrap, endpoint=me.endpoint, external_endpoint=me.external, **settings)  # type: ignore[arg-type]
    return Discovery(
        config,
        me.identity,
        me.mcs,
        me.mcs,
        inc_num=INC,
        rng=random.Random(seed),
        tracer=RecordingTracer(),
        peer_store=store,
    )


def events(d: Discovery, name: str) -> list[dict[str, object]]:
    assert isinstance(d.tracer, RecordingTracer)
    return d.tracer.named(name)


def run(d: Discovery, until: float) -> list[Effect]:
    """Tick ``d`` at each of its deadlines up to ``until``."""
    out: list[Effect] = []
    while (deadline := d.next_deadline()) is not None and deadline <= until:
        out += d.on_tick(deadline)
    return out


def sends(effects: list[Effect], kind: str | None = None) -> list[tuple[Send, pb.GossipMessage]]:
    out = []
    for e in effects:
        if isinstance(e, Send):
            msg = wire.open_envelope(e.envelope)
            if kind is None or msg.WhichOneof("content") == kind:
                out.append((e, msg))
    return out


def pkis(envs: list[pb.Envelope]) -> set[bytes]:
    return {wire.open_envelope(e).alive_msg.membership.pki_id for e in envs}


# --- alive messages ------------------------------------------------------------------------------


def test_alive_messages_signed_ordered_and_carry_identity_only_at_first(reg: CheapRegistry) -> None:
    """TestValidation / TestUpdate: own alive messages, PeerTime, publishCertPeriod."""
    me, other = make_peer(reg, "me"), make_peer(reg, "o1")
    d = make_discovery(me)
    assert d.start(0.0) == []
    d.on_message(received(other, alive_env(other, 1, 1)), 0.1)
    out = sends(run(d, 16.0), "alive_msg")
    assert len(out) == 3  # at 5, 10 and 15 s
    seqs = []
    for send, msg in out:
        assert send.to == (other.remote(),)
        wire.verify_envelope(send.envelope, me.identity, other.mcs)
        assert wire.secret_endpoint(send.envelope, me.identity, other.mcs) == me.endpoint
        am = msg.alive_msg
        assert am.membership.pki_id == me.pki_id and am.membership.endpoint == me.external
        assert am.timestamp.inc_num == INC
        seqs.append(am.timestamp.seq_num)
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    # publishCertPeriod is 10 s: the identity rides along at 5 s, no longer at 10 s and after.
    assert [bool(msg.alive_msg.identity) for _, msg in out] == [True, False, False]


def test_older_or_equal_alive_messages_ignored(reg: CheapRegistry) -> None:
    me, a, b = make_peer(reg, "me"), make_peer(reg, "a"), make_peer(reg, "b")
    d = make_discovery(me)
    d.start(0.0)
    d.on_message(received(b, alive_env(b, 1, 1)), 0.0)
    first = d.on_message(received(a, alive_env(a, 5, 10)), 1.0)
    assert [s.to for s, _ in sends(first)] == [(b.remote(),)]  # a fresh message is forwarded
    assert d.on_message(received(a, alive_env(a, 5, 9)), 2.0) == []
    assert d.on_message(received(a, alive_env(a, 5, 10)), 2.0) == []
    assert d.stats.alive_stale == 2
    assert sends(d.on_message(received(a, alive_env(a, 5, 11)), 3.0))
    assert sends(d.on_message(received(a, alive_env(a, 6, 1)), 4.0))  # restarted: a later inc_num wins
    assert d.stats.alive_accepted == 4
    assert [e["pki_id"] for e in events(d, "peer_alive")] == [b.pki_id, a.pki_id]


def test_own_alive_message_never_taken_for_another_peer(reg: CheapRegistry) -> None:
    """TestSelf."""
    me, other = make_peer(reg, "me"), make_peer(reg, "o")
    d = make_discovery(me)
    d.start(0.0)
    assert d.on_message(received(other, alive_env(me, INC + 1, 99)), 1.0) == []
    assert d.stats.own_alive_ignored == 1
    assert d.alive_members() == [] and d.dead_members() == []
    assert d.lookup(me.pki_id) == d.self_member()
    assert d.lookup(me.pki_id).internal_endpoint == me.endpoint  # type: ignore[union-attr]


def test_forged_alive_messages_dropped_and_counted(reg: CheapRegistry) -> None:
    """TestValidation: alive messages that fail verification never make a member."""
    me, victim, attacker = make_peer(reg, "me"), make_peer(reg, "victim"), make_peer(reg, "attacker")
    d = make_discovery(me)
    d.start(0.0)
    # Signed by the attacker, claiming the victim with the victim's identity attached.
    msg = wire.alive(victim.external, victim.pki_id, 1, 1, identity=victim.identity)
    forged_sig = wire.seal(msg, attacker.mcs.sign)
    # Claiming the victim's PKI-ID, but carrying (and signed by) the attacker's identity.
    msg = wire.alive(victim.external, victim.pki_id, 1, 2, identity=attacker.identity)
    forged_identity = wire.seal(msg, attacker.mcs.sign)
    # The victim's genuine message with its payload altered afterwards.
    tampered = alive_env(victim, 1, 3)
    tampered.payload = tampered.payload.replace(victim.external.encode(), b"x" * len(victim.external))
    unsigned = wire.seal(wire.alive(victim.external, victim.pki_id, 1, 4, identity=victim.identity))
    for env in (forged_sig, forged_identity, tampered, unsigned):
        assert d.on_message(received(attacker, env), 1.0) == []
    assert d.stats.alive_forged == 4
    assert len(events(d, "alive_forged")) == 4
    assert d.lookup(victim.pki_id) is None
    assert d.alive_members() == []
    # The genuine message is still welcome.
    d.on_message(received(attacker, alive_env(victim, 1, 5)), 2.0)
    assert d.is_alive(victim.pki_id)


def test_unverifiable_alive_dropped_and_its_sender_identified(reg: CheapRegistry) -> None:
    me, relay, stranger = make_peer(reg, "me"), make_peer(reg, "relay"), make_peer(reg, "stranger")
    d = make_discovery(me)
    d.start(0.0)
    out = d.on_message(received(relay, alive_env(stranger, 1, 7, identity=False)), 1.0)
    assert d.stats.alive_unknown_identity == 1 and d.stats.alive_forged == 0
    assert d.lookup(stranger.pki_id) is None
    assert out == [Handshake(stranger.external)]  # the handshake will tell us who is there
    reply = d.on_handshake(HandshakeResult(stranger.external, stranger.pki_id, stranger.identity), 1.1)
    ((req, _),) = sends(reply, "mem_req")
    assert req.to == (RemotePeer(stranger.pki_id, stranger.external),)
    # Now its identity is known: its certificate-less messages check out.
    d.on_message(received(relay, alive_env(stranger, 1, 8, identity=False)), 2.0)
    assert d.is_alive(stranger.pki_id)


# --- liveness ------------------------------------------------------------------------------------


def test_silent_peer_declared_dead_disconnected_then_revived(reg: CheapRegistry) -> None:
    """TestExpiration: unheard for aliveExpirationTimeout -> dead (checked every tenth), then alive again."""
    me, other = make_peer(reg, "me"), make_peer(reg, "o")
    d = make_discovery(me)
    d.start(0.0)
    d.on_message(received(other, alive_env(other, 1, 1)), 0.0)
    assert not [e for e in run(d, 25.0) if isinstance(e, Disconnect)]
    assert d.is_alive(other.pki_id)
    out = run(d, 27.5)  # timeout 25 s, checked every 2.5 s
    assert Disconnect(other.pki_id) in out
    assert not d.is_alive(other.pki_id)
    (dead,) = events(d, "peer_dead")
    assert dead["pki_id"] == other.pki_id
    assert [m.pki_id for m in d.dead_members()] == [other.pki_id] and d.alive_members() == []
    assert d.on_message(received(other, alive_env(other, 1, 1)), 30.0) == []  # nothing newer: still dead
    assert not d.is_alive(other.pki_id)
    d.on_message(received(other, alive_env(other, 1, 2)), 30.0)
    assert d.is_alive(other.pki_id)
    assert [e["new"] for e in events(d, "peer_alive")] == [True, False]


def test_dead_peer_probed_every_reconnect_interval_and_asked_when_it_answers(reg: CheapRegistry) -> None:
    """TestConfirmDeadPeer / periodicalReconnectToDead."""
    me, other = make_peer(reg, "me"), make_peer(reg, "o")
    d = make_discovery(me)
    d.start(0.0)
    d.on_message(received(other, alive_env(other, 1, 1)), 0.0)
    out = run(d, 49.9)
    assert not any(isinstance(e, Probe) for e in out)  # at 25 s it was still alive
    out = run(d, 50.0)
    assert Probe(other.remote()) in out
    assert d.on_probe(other.remote(), False, 50.1) == []
    ((req, msg),) = sends(d.on_probe(other.remote(), True, 50.1))
    assert req.to == (other.remote(),)
    self_info = msg.mem_req.self_information
    assert wire.open_envelope(self_info).alive_msg.membership.pki_id == me.pki_id
    wire.verify_envelope(self_info, me.identity, other.mcs)
    assert wire.secret_endpoint(self_info, me.identity, other.mcs) == me.endpoint  # same org: with the secret
    assert Probe(other.remote()) in run(d, 75.0)


def test_lost_connection_means_presumed_dead(reg: CheapRegistry) -> None:
    me, other = make_peer(reg, "me"), make_peer(reg, "o")
    d = make_discovery(me)
    d.start(0.0)
    d.on_message(received(other, alive_env(other, 1, 1)), 0.0)
    assert d.on_connection_lost(other.pki_id, 3.0) == [Disconnect(other.pki_id)]
    assert not d.is_alive(other.pki_id)
    assert d.on_connection_lost(other.pki_id, 3.0) == []


def test_dead_peer_forgotten_after_expiration_factor_unless_bootstrap(reg: CheapRegistry) -> None:
    """TestMsgStoreExpiration: dead for msgExpirationFactor x timeout -> purged; bootstrap peers are kept."""
    me, gone, boot = make_peer(reg, "me"), make_peer(reg, "gone"), make_peer(reg, "boot")
    d = make_discovery(me, bootstrap=(boot.endpoint,), msg_expiration_factor=2)
    d.start(0.0)
    d.on_message(received(gone, alive_env(gone, 1, 1)), 0.0)
    d.on_message(received(boot, alive_env(boot, 1, 1)), 0.0)
    run(d, 49.0)
    assert {m.pki_id for m in d.dead_members()} == {gone.pki_id, boot.pki_id}
    out = run(d, 52.5)
    assert Disconnect(gone.pki_id) in out
    assert [e["pki_id"] for e in events(d, "peer_forgotten")] == [gone.pki_id]
    assert d.lookup(gone.pki_id) is None
    assert [m.pki_id for m in d.dead_members()] == [boot.pki_id]
    # Echoes of its last message (in others' membership responses) do not bring it back...
    d.on_message(received(boot, alive_env(gone, 1, 1)), 53.0)
    assert d.lookup(gone.pki_id) is None
    # ...but a newer one, from the peer itself back to life, does.
    d.on_message(received(gone, alive_env(gone, 2, 1)), 54.0)
    assert d.is_alive(gone.pki_id)


# --- membership requests and responses ---------------------------------------------------------


def test_membership_request_answered_with_alive_and_dead(reg: CheapRegistry) -> None:
    """TestConnect / TestInitiateSync: a request is answered; the response teaches the requester."""
    me, a, b, asker = (make_peer(reg, n) for n in ("me", "a", "b", "asker"))
    d = make_discovery(me)
    d.start(0.0)
    d.on_message(received(a, alive_env(a, 1, 1)), 0.0)
    d.on_message(received(b, alive_env(b, 1, 1)), 0.0)
    d.on_connection_lost(b.pki_id, 1.0)
    # The learner dials `me` as its bootstrap peer and asks it, under a nonce of its own.
    learner = make_discovery(asker, bootstrap=(me.endpoint,))
    assert learner.start(0.0) == [Handshake(me.endpoint)]
    ((req, req_msg),) = sends(learner.on_handshake(HandshakeResult(me.endpoint, me.pki_id, me.identity), 1.0))
    assert req_msg.nonce != 0
    out = d.on_message(received(asker, req.envelope), 2.0)
    ((resp, msg),) = sends(out, "mem_res")
    assert resp.to == (asker.remote(),)
    assert msg.nonce == req_msg.nonce
    assert pkis(list(msg.mem_res.alive)) == {me.pki_id, a.pki_id}
    assert pkis(list(msg.mem_res.dead)) == {b.pki_id}
    assert d.is_alive(asker.pki_id)  # the requester's own alive message counts

    learner.on_message(ReceivedMessage(me.pki_id, me.endpoint, me.identity, resp.envelope, msg), 2.1)
    assert {m.pki_id for m in learner.alive_members()} == {me.pki_id, a.pki_id}
    assert [m.pki_id for m in learner.dead_members()] == [b.pki_id]
    assert learner.lookup(a.pki_id).internal_endpoint == a.endpoint  # type: ignore[union-attr]


def test_membership_responses_follow_every_change_and_never_list_the_requester(reg: CheapRegistry) -> None:
    """Responses are reused between requests; a newer alive message, a death or a new peer shows at once."""
    me, a, b, c = (make_peer(reg, n) for n in ("me", "a", "b", "c"))
    d = make_discovery(me)
    d.start(0.0)
    d.on_message(received(a, alive_env(a, 1, 1)), 0.0)
    d.on_message(received(b, alive_env(b, 1, 1)), 0.0)

    def answer(asker: Peer, seq: int, now: float) -> pb.MembershipResponse:
        ((_, msg),) = sends(d.on_message(request_from(asker, 1, seq, nonce=seq), now), "mem_res")
        assert msg.nonce == seq
        return msg.mem_res

    def seqs(envs: list[pb.Envelope]) -> dict[bytes, int]:
        return {(m := wire.open_envelope(e).alive_msg).membership.pki_id: m.timestamp.seq_num for e in envs}

    first = answer(a, 2, 1.0)
    assert set(seqs(list(first.alive))) == {me.pki_id, b.pki_id}  # a is not told about itself
    assert set(seqs(list(answer(b, 2, 1.1).alive))) == {me.pki_id, a.pki_id}
    d.on_message(received(b, alive_env(b, 1, 7)), 1.2)  # b's newer heartbeat
    assert seqs(list(answer(a, 3, 1.3).alive))[b.pki_id] == 7
    d.on_message(received(c, alive_env(c, 1, 1)), 1.4)  # a new peer
    assert set(seqs(list(answer(a, 4, 1.5).alive))) == {me.pki_id, b.pki_id, c.pki_id}
    d.on_connection_lost(c.pki_id, 1.6)  # c dies
    response = answer(a, 5, 1.7)
    assert set(seqs(list(response.alive))) == {me.pki_id, b.pki_id}
    assert set(seqs(list(response.dead))) == {c.pki_id}
    assert set(seqs(list(first.alive))) == {me.pki_id, b.pki_id}  # what was sent before is left as it was


def test_spoofed_membership_request_gets_no_reply(reg: CheapRegistry) -> None:
    """TestMembershipRequestSpoofing: self_information must be the proven sender's."""
    me, attacker, victim = make_peer(reg, "me"), make_peer(reg, "attacker"), make_peer(reg, "victim")
    d = make_discovery(me)
    d.start(0.0)
    spoofed = wire.seal(wire.membership_request(alive_env(victim, 1, 1)))
    assert d.on_message(received(attacker, spoofed), 1.0) == []
    assert d.stats.spoofed_requests == 1
    (event,) = events(d, "spoofed_membership_request")
    assert event["sender"] == attacker.pki_id and event["claimed"] == victim.pki_id
    assert d.lookup(victim.pki_id) is None
    assert sends(d.on_message(received(victim, spoofed), 2.0), "mem_res")  # from the victim itself: fine


def test_periodic_pull_asks_pull_peer_num_random_alive_peers(reg: CheapRegistry) -> None:
    """TestInitiateSync."""
    me = make_peer(reg, "me")
    others = [make_peer(reg, f"p{i}") for i in range(6)]
    d = make_discovery(me)
    d.start(0.0)
    for p in others:
        d.on_message(received(p, alive_env(p, 1, 1)), 0.0)
    d.on_connection_lost(others[0].pki_id, 0.5)
    asked = []
    for t in (4.0, 8.0, 12.0):
        reqs = [s for s, _ in sends(run(d, t), "mem_req")]
        assert len(reqs) == 3
        asked.append(frozenset(s.to[0].pki_id for s in reqs))
        assert len(asked[-1]) == 3 and others[0].pki_id not in asked[-1]
    assert len(set(asked)) > 1  # chosen at random each round


# --- bootstrap, anchors, persistence --------------------------------------------------------


def test_foreign_org_bootstrap_peer_refused(reg: CheapRegistry, caplog: pytest.LogCaptureFixture) -> None:
    """TestBootstrapPeerMisConfiguration (gossip_test.go)."""
    me, foreign = make_peer(reg, "me"), make_peer(reg, "boot", ORG2)
    d = make_discovery(me, bootstrap=(foreign.endpoint,))
    assert d.start(0.0) == [Handshake(foreign.endpoint)]
    with caplog.at_level(logging.WARNING, logger="rumor.discovery"):
        out = d.on_handshake(HandshakeResult(foreign.endpoint, foreign.pki_id, foreign.identity), 0.1)
    assert out == []
    assert (
        f"bootstrap peer {foreign.endpoint} belongs to org {ORG2}, not our org {ORG1}; ignoring it" in caplog.messages
    )
    assert events(d, "bootstrap_refused")[0]["endpoint"] == foreign.endpoint
    assert d.stats.bootstrap_refused == 1
    assert not [e for e in run(d, 200.0) if isinstance(e, Handshake)]


def test_bootstrap_retried_until_it_answers(reg: CheapRegistry) -> None:
    me, boot = make_peer(reg, "me"), make_peer(reg, "boot")
    d = make_discovery(me, bootstrap=(boot.endpoint, me.endpoint))  # our own endpoint is skipped
    assert d.start(0.0) == [Handshake(boot.endpoint)]
    assert d.on_handshake(HandshakeResult(boot.endpoint, error="connection refused"), 0.1) == []
    # Retried soon (a peer of the same network may simply not listen yet), then less and less often.
    t = 0.1
    for delay in (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 25.0, 25.0):
        assert not [e for e in run(d, t + delay - 0.01) if isinstance(e, Handshake)]
        assert Handshake(boot.endpoint) in run(d, t + delay)
        t += delay
        d.on_handshake(HandshakeResult(boot.endpoint, error="connection refused"), t)
    assert Handshake(boot.endpoint) in run(d, t + 25.0)
    t += 25.0
    ((req, msg),) = sends(d.on_handshake(HandshakeResult(boot.endpoint, boot.pki_id, boot.identity), t + 0.1))
    assert req.to == (RemotePeer(boot.pki_id, boot.endpoint),) and msg.nonce != 0
    # No answer within the reconnect interval: dial again.
    assert Handshake(boot.endpoint) in run(d, t + 25.1)
    ((req, msg),) = sends(d.on_handshake(HandshakeResult(boot.endpoint, boot.pki_id, boot.identity), t + 25.2))
    response = wire.seal(wire.membership_response([alive_env(boot, 1, 1)], [], nonce=msg.nonce))
    d.on_message(received(boot, response), t + 25.3)
    assert d.is_alive(boot.pki_id)
    assert not [e for e in run(d, 500.0) if isinstance(e, Handshake)]


def test_bootstrap_given_up_after_max_connection_attempts(reg: CheapRegistry) -> None:
    me = make_peer(reg, "me")
    d = make_discovery(me, bootstrap=("nowhere:7051",), max_connection_attempts=3)
    dials = d.start(0.0)
    t = 0.0
    count = 0
    while dials:
        assert dials == [Handshake("nowhere:7051")]
        count += 1
        t += 0.1
        d.on_handshake(HandshakeResult("nowhere:7051", error="connection refused"), t)
        dials = []
        while not dials and (deadline := d.next_deadline()) is not None and deadline < 1000:
            t = deadline
            dials = [e for e in d.on_tick(t) if isinstance(e, Handshake)]
    assert count == 3


def test_anchor_peer_of_another_org_dialed_and_never_forgotten(reg: CheapRegistry) -> None:
    me, anchor = make_peer(reg, "me"), make_peer(reg, "anchor", ORG2)
    d = make_discovery(me, msg_expiration_factor=2)
    d.start(0.0)
    d.add_anchor_peers([anchor.external, me.external])
    assert d.next_deadline() == 0.0
    assert run(d, 0.0) == [Handshake(anchor.external)]
    ((_, msg),) = sends(d.on_handshake(HandshakeResult(anchor.external, anchor.pki_id, anchor.identity), 0.1))
    self_info = msg.mem_req.self_information
    assert not self_info.HasField("secret_envelope")  # other org: no internal endpoint
    response = wire.seal(wire.membership_response([alive_env(anchor, 1, 1, secret=False)], [], nonce=msg.nonce))
    d.on_message(received(anchor, response), 0.2)
    assert d.lookup(anchor.pki_id).org == ORG2.encode()  # type: ignore[union-attr]
    run(d, 500.0)
    assert [m.pki_id for m in d.dead_members()] == [anchor.pki_id]
    assert events(d, "peer_forgotten") == []


def test_persisted_peers_dialed_at_start(reg: CheapRegistry) -> None:
    me, a, f = make_peer(reg, "me"), make_peer(reg, "a"), make_peer(reg, "f", ORG2)
    store = MemoryPeerStore(
        [
            StoredPeer(a.pki_id, a.endpoint, a.identity),
            StoredPeer(f.pki_id, f.external, None),
            StoredPeer(me.pki_id, me.endpoint, me.identity),
        ]
    )
    d = make_discovery(me, store=store)
    assert d.start(0.0) == [Handshake(a.endpoint), Handshake(f.external)]
    assert a.pki_id in d.identities
    # A remembered peer of another org is fine (it is not a bootstrap peer).
    assert sends(d.on_handshake(HandshakeResult(f.external, f.pki_id, f.identity), 0.1), "mem_req")
    assert d.stats.bootstrap_refused == 0


def test_membership_saved_when_it_changes_throttled(reg: CheapRegistry) -> None:
    me, a, b = make_peer(reg, "me"), make_peer(reg, "a"), make_peer(reg, "b")
    store = MemoryPeerStore()
    d = make_discovery(me, store=store)
    d.start(0.0)
    d.on_message(received(a, alive_env(a, 1, 1)), 1.0)
    run(d, 1.0)
    assert store.load() == [StoredPeer(a.pki_id, a.endpoint, a.identity)]
    d.on_message(received(b, alive_env(b, 1, 1)), 2.0)
    run(d, 5.9)
    assert store.saves == 1
    run(d, 6.0)
    assert store.saves == 2 and len(store.load()) == 2
    run(d, 20.0)
    assert store.saves == 2  # nothing changed since
    d.on_connection_lost(b.pki_id, 21.0)  # alive -> dead is no change of who is known
    d.stop(22.0)
    assert store.saves == 2


class FullDiskStore(MemoryPeerStore):
    """A peer store on a full disk: every save fails, as SqlitePeerStore's does there."""

    def __init__(self) -> None:
        super().__init__()
        self.full = True
        self.attempts = 0

    def save(self, peers: Sequence[StoredPeer]) -> None:
        self.attempts += 1
        if self.full:
            raise PeerStoreError("cannot save the known peers to /data/peers.sqlite: database or disk is full")
        super().save(peers)


def test_a_store_that_cannot_save_never_stops_discovery_and_is_retried_throttled(
    reg: CheapRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """Finding: on a full disk the save raised out of on_tick, and the timer step failed with a traceback."""
    me, a = make_peer(reg, "me"), make_peer(reg, "a")
    store = FullDiskStore()
    d = make_discovery(me, store=store)
    d.start(0.0)
    d.on_message(received(a, alive_env(a, 1, 1)), 1.0)
    with caplog.at_level(logging.WARNING, logger="rumor.discovery"):
        run(d, 120.0)  # alive messages keep going out, whatever the store says
    assert d.lookup(a.pki_id) is not None
    assert 20 <= store.attempts <= 1 + 120 / 5  # once per persistInterval, not at every tick
    warnings = [r.getMessage() for r in caplog.records if "cannot save the known peers" in r.getMessage()]
    assert len(warnings) == 2  # one line a minute
    store.full = False
    run(d, 126.0)
    assert store.load() == [StoredPeer(a.pki_id, a.endpoint, a.identity)]
    store.full = True
    d.stop(127.0)  # a failing last save does not break stopping


# --- disclosure ----------------------------------------------------------------------------------


def _org_view(reg: CheapRegistry, *, my_external: bool = True) -> tuple[Discovery, dict[str, Peer]]:
    me = make_peer(reg, "me", external=my_external)
    peers = {
        "s1": make_peer(reg, "s1"),
        "hidden": make_peer(reg, "hidden", external=False),
        "f1": make_peer(reg, "f1", ORG2),
        "g1": make_peer(reg, "g1", ORG3),
    }
    d = make_discovery(me, propagate_peer_num=10, pull_peer_num=10)
    d.start(0.0)
    for p in peers.values():
        d.on_message(received(p, alive_env(p, 1, 1)), 0.0)
    return d, peers


def test_membership_response_to_other_org_hides_secrets_and_unexposed_peers(reg: CheapRegistry) -> None:
    """TestMemRespDisclosurePol / TestDisclosurePolicyWithPull."""
    d, peers = _org_view(reg)
    asker = make_peer(reg, "asker", ORG2)
    ((resp, msg),) = sends(d.on_message(request_from(asker, 1, 1, secret=False), 1.0), "mem_res")
    envs = list(msg.mem_res.alive) + list(msg.mem_res.dead)
    assert pkis(envs) == {d.pki_id, peers["s1"].pki_id, peers["f1"].pki_id, peers["g1"].pki_id}
    assert all(not e.HasField("secret_envelope") for e in envs)
    assert b".int:" not in resp.envelope.SerializeToString()  # no internal endpoint, anywhere

    colleague = make_peer(reg, "colleague")
    ((resp, msg),) = sends(d.on_message(request_from(colleague, 1, 1), 1.0), "mem_res")
    envs = list(msg.mem_res.alive)
    assert peers["hidden"].pki_id in pkis(envs)
    hidden_env = next(e for e in envs if pkis([e]) == {peers["hidden"].pki_id})
    hidden = peers["hidden"]
    assert wire.secret_endpoint(hidden_env, hidden.identity, hidden.mcs) == hidden.endpoint
    # Foreign peers' secrets were never kept, so they are not passed on even within the org.
    f1_env = next(e for e in envs if pkis([e]) == {peers["f1"].pki_id})
    assert not f1_env.HasField("secret_envelope")
    assert d.lookup(peers["f1"].pki_id).internal_endpoint == ""  # type: ignore[union-attr]
    assert d.lookup(peers["s1"].pki_id).internal_endpoint == peers["s1"].endpoint  # type: ignore[union-attr]


def test_unexposed_requester_of_another_org_gets_no_membership(reg: CheapRegistry) -> None:
    d, _ = _org_view(reg)
    asker = make_peer(reg, "asker", ORG2, external=False)
    out = d.on_message(request_from(asker, 1, 1, secret=False), 1.0)
    assert sends(out, "mem_res") == []
    assert Disconnect(asker.pki_id) in out
    assert d.stats.requests_refused == 1


def test_peer_without_external_endpoint_never_reveals_itself_to_other_orgs(reg: CheapRegistry) -> None:
    d, peers = _org_view(reg, my_external=False)
    out = run(d, 60.0)
    targets = {t.pki_id for s, _ in sends(out, "alive_msg") + sends(out, "mem_req") for t in s.to}
    assert targets == {peers["s1"].pki_id, peers["hidden"].pki_id}
    asker = make_peer(reg, "asker", ORG2)
    assert sends(d.on_message(request_from(asker, 1, 1, secret=False), 61.0), "mem_res") == []


def test_forwarding_respects_disclosure(reg: CheapRegistry) -> None:
    d, peers = _org_view(reg)
    s1, hidden, f1, g1 = peers["s1"], peers["hidden"], peers["f1"], peers["g1"]

    def forwarded(p: Peer, seq: int) -> dict[bytes, pb.Envelope]:
        out = d.on_message(received(p, alive_env(p, 1, seq)), 1.0)
        return {t.pki_id: s.envelope for s, _ in sends(out, "alive_msg") for t in s.to}

    # A peer unknown outside the org: only to the org.
    assert set(forwarded(hidden, 2)) == {s1.pki_id}
    # Our org's exposed peer: to everyone exposed, its secret only within the org.
    out = forwarded(s1, 2)
    assert set(out) == {hidden.pki_id, f1.pki_id, g1.pki_id}
    assert out[hidden.pki_id].HasField("secret_envelope")
    assert not out[f1.pki_id].HasField("secret_envelope") and not out[g1.pki_id].HasField("secret_envelope")
    # A foreign peer's message goes to our org and to its own, not to a third org.
    assert set(forwarded(f1, 2)) == {s1.pki_id}  # (hidden has no external endpoint: f1 may not reach it)


# --- metadata and endpoint updates, identity purges ---------------------------------------------


def test_update_metadata_and_endpoint(reg: CheapRegistry) -> None:
    """TestUpdate."""
    me, other = make_peer(reg, "me"), make_peer(reg, "o")
    d = make_discovery(me)
    d.start(0.0)
    d.on_message(received(other, alive_env(other, 1, 1)), 0.0)
    d.update_metadata(b"height=7")
    d.update_endpoint("me.new:7051")
    ((_, msg),) = sends(run(d, 5.0), "alive_msg")
    assert msg.alive_msg.membership.metadata == b"height=7"
    assert msg.alive_msg.membership.endpoint == "me.new:7051"
    assert d.self_member().endpoint == "me.new:7051"

    d.on_message(received(other, alive_env(other, 1, 2, metadata=b"md")), 6.0)
    assert d.lookup(other.pki_id).metadata == b"md"  # type: ignore[union-attr]


def test_revoked_identity_cut_off(reg: CheapRegistry) -> None:
    """TestIdentityExpiration / SuspectPeers (gossip_test.go): a revoked peer is dropped and stays out."""
    me, other, relay = make_peer(reg, "me"), make_peer(reg, "o"), make_peer(reg, "relay")
    d = make_discovery(me)
    d.start(0.0)
    d.on_message(received(other, alive_env(other, 1, 1)), 0.0)
    reg.revoke(other.identity)
    assert d.revalidate_identities(1.0) == [Disconnect(other.pki_id)]
    assert d.lookup(other.pki_id) is None
    assert events(d, "peer_forgotten")[0]["reason"] == "identity invalid"
    assert d.on_message(received(other, alive_env(other, 1, 2)), 2.0) == []  # its connection no longer counts
    d.on_message(received(relay, alive_env(other, 1, 3)), 2.0)
    d.on_message(received(relay, alive_env(other, 1, 4, identity=False)), 2.0)
    assert d.lookup(other.pki_id) is None


def test_expired_identity_cut_off_at_its_expiry() -> None:
    clock = [0.0]
    reg = CheapRegistry(now=lambda: clock[0])
    me, other = make_peer(reg, "me"), make_peer(reg, "o")
    reg.set_expiration(other.identity, 12.0)
    d = make_discovery(me)
    d.start(0.0)
    d.on_message(received(other, alive_env(other, 1, 1)), 0.0)
    clock[0] = 11.0
    assert Disconnect(other.pki_id) not in run(d, 11.0)
    clock[0] = 12.0
    assert Disconnect(other.pki_id) in run(d, 12.0)
    assert d.lookup(other.pki_id) is None and other.pki_id not in d.identities


# --- hostile peers: only answers to our own requests, at bounded cost ---------------------------


def _asked_nonce(d: Discovery, peer: Peer, until: float) -> int:
    """Run ``d`` until ``until``; the nonce of its last membership request to ``peer`` (a newer one replaces)."""
    nonces = [
        msg.nonce for effect, msg in sends(run(d, until), "mem_req") if peer.pki_id in {t.pki_id for t in effect.to}
    ]
    assert nonces, "no membership request sent"
    return nonces[-1]


def test_unsolicited_membership_responses_are_not_read(reg: CheapRegistry, caplog: pytest.LogCaptureFixture) -> None:
    me, attacker, other, stranger = (make_peer(reg, n) for n in ("me", "attacker", "other", "stranger"))
    d = make_discovery(me)
    d.start(0.0)
    d.on_message(received(attacker, alive_env(attacker, 1, 1)), 0.0)
    d.on_message(received(other, alive_env(other, 1, 1)), 0.0)
    offered = [alive_env(stranger, 1, 1)]
    with caplog.at_level(logging.WARNING, logger="rumor.discovery"):
        for nonce in (0, 12345, 777):
            d.on_message(received(attacker, wire.seal(wire.membership_response(offered, [], nonce=nonce))), 1.0)
    assert d.lookup(stranger.pki_id) is None
    assert d.stats.responses_unsolicited == 3
    assert len([r for r in caplog.records if "nobody asked" in r.message]) == 1  # once a minute per peer
    # Our request to `other` does not make a response from the attacker acceptable, even with its nonce.
    nonce = _asked_nonce(d, other, 10.0)
    d.on_message(received(attacker, wire.seal(wire.membership_response(offered, [], nonce=nonce))), 10.1)
    assert d.lookup(stranger.pki_id) is None
    # The answer `other` gives to it is read, once.
    answer = wire.seal(wire.membership_response(offered, [], nonce=nonce))
    d.on_message(received(other, answer), 10.2)
    assert d.is_alive(stranger.pki_id)
    d.on_message(received(other, answer), 10.3)
    assert d.stats.responses_unsolicited == 5


def test_oversized_membership_response_refused_whole(reg: CheapRegistry) -> None:
    me, peer = make_peer(reg, "me"), make_peer(reg, "peer")
    strangers = [make_peer(reg, f"s{i}") for i in range(5)]
    d = make_discovery(me, max_membership_entries=4)
    d.start(0.0)
    d.on_message(received(peer, alive_env(peer, 1, 1)), 0.0)
    nonce = _asked_nonce(d, peer, 10.0)
    response = wire.membership_response([alive_env(s, 1, 1) for s in strangers], [], nonce=nonce)
    d.on_message(received(peer, wire.seal(response)), 10.1)
    assert d.stats.responses_oversized == 1
    assert all(d.lookup(s.pki_id) is None for s in strangers)


def test_a_response_full_of_forgeries_costs_a_few_checks_and_a_penalty(reg: CheapRegistry) -> None:
    """Finding: 100,000 wrongly signed alive messages in one response froze a peer for seconds each."""
    me, attacker, victim = make_peer(reg, "me"), make_peer(reg, "attacker"), make_peer(reg, "victim")
    d = make_discovery(me, max_forged_per_response=3, penalty_duration=30.0)
    d.start(0.0)
    d.on_message(received(attacker, alive_env(attacker, 1, 1)), 0.0)
    d.on_message(received(victim, alive_env(victim, 1, 1)), 0.0)
    nonce = _asked_nonce(d, attacker, 10.0)
    forged = [
        wire.seal(wire.alive(victim.external, victim.pki_id, 1, 2 + i, identity=victim.identity), attacker.mcs.sign)
        for i in range(1000)
    ]
    out = d.on_message(received(attacker, wire.seal(wire.membership_response(forged, [], nonce=nonce))), 10.1)
    assert d.stats.alive_forged == 3  # checked three, dropped the rest unread
    assert d.stats.responses_cut_short == 1
    assert Disconnect(attacker.pki_id) in out
    assert events(d, "peer_penalized")[0]["pki_id"] == attacker.pki_id
    # While penalized, nothing it sends is read, not even a genuine alive message.
    assert d.on_message(received(attacker, alive_env(attacker, 1, 5)), 20.0) == []
    assert d.stats.penalized_messages == 1
    d.on_message(received(attacker, alive_env(attacker, 1, 6)), 41.0)  # after the penalty
    assert d.is_alive(attacker.pki_id)


def test_alive_messages_of_unknown_peers_make_a_bounded_number_of_dials(reg: CheapRegistry) -> None:
    """Finding: 2,000 unverifiable alive messages naming 2,000 endpoints made a peer dial all of them."""
    me, relay = make_peer(reg, "me"), make_peer(reg, "relay")
    d = make_discovery(me, identify_dials=5, reconnect_interval=10.0)
    d.start(0.0)
    d.on_message(received(relay, alive_env(relay, 1, 1)), 0.0)
    nonce = _asked_nonce(d, relay, 5.0)
    unknown = []
    for i in range(2000):
        msg = wire.alive(f"127.0.0.1:{20000 + i}", bytes([i % 256, i // 256]) * 16, 1, 1)
        unknown.append(wire.seal(msg, relay.mcs.sign))
    out = d.on_message(received(relay, wire.seal(wire.membership_response(unknown, [], nonce=nonce))), 5.1)
    dials = [e for e in out if isinstance(e, Handshake)]
    assert len(dials) == 5
    assert d.stats.identify_throttled == 1995
    # The budget refills with time, at identify_dials per reconnect_interval, and the dial records go away.
    for endpoint in {e.endpoint for e in dials}:
        d.on_handshake(HandshakeResult(endpoint, error="refused"), 5.2)
    run(d, 60.0)
    assert len(d._dials) == 0


def test_forged_alive_messages_sent_one_by_one_penalize_their_sender(reg: CheapRegistry) -> None:
    """Found with the real-process hostile peer: the penalty of a forged membership response was escaped by sending the
    same forgeries as alive messages one by one (a signature check each, ~3,000 a second: 60 % of a core)."""
    me, attacker, victim, clumsy = (make_peer(reg, n) for n in ("me", "attacker", "victim", "clumsy"))
    d = make_discovery(me, max_forged_per_response=3, penalty_duration=30.0)
    d.start(0.0)
    for p in (attacker, victim, clumsy):
        d.on_message(received(p, alive_env(p, 1, 1)), 0.0)

    def forged(seq: int) -> pb.Envelope:
        return wire.seal(
            wire.alive(victim.external, victim.pki_id, 1, seq, identity=victim.identity), attacker.mcs.sign
        )

    # Two within penaltyDuration, then a third only after it: never three in one window, never penalized.
    assert Disconnect(clumsy.pki_id) not in d.on_message(received(clumsy, forged(2)), 1.0)
    d.on_message(received(clumsy, forged(3)), 2.0)
    d.on_message(received(clumsy, forged(4)), 40.0)
    assert events(d, "peer_penalized") == []
    # Three within the window: the third penalizes its sender, whose messages then go unread.
    out: list[Effect] = []
    for seq in (5, 6, 7):
        out += d.on_message(received(attacker, forged(seq)), 41.0)
    assert Disconnect(attacker.pki_id) in out
    assert [e["pki_id"] for e in events(d, "peer_penalized")] == [attacker.pki_id]
    forged_count = d.stats.alive_forged
    for seq in range(8, 1000):
        d.on_message(received(attacker, forged(seq)), 42.0)
    assert d.stats.alive_forged == forged_count  # not one more signature checked
    assert d.stats.penalized_messages == 992
    assert d.is_alive(victim.pki_id)  # the peer the forgeries claimed is untouched
