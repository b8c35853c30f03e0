"""The pull engine: Hello -> Digest -> Request -> Update, and a byzantine responder injects nothing.

Mirrors Fabric's gossip/gossip/algo/pull_test.go (TestPullEngine_Add, TestPullEngineAll2All,
TestPullEngineSelectiveUpdates, TestByzantineResponder, TestMultipleInitiators, TestLatePeers,
TestSpread, TestFilter) and gossip/gossip/pull/pullstore_test.go (TestDigestsFilters,
TestHandleMessage). Fabric's engine accepts any item under a valid nonce; rumor's accepts only
items requested from that peer under that nonce whose content has the requested digest.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from rumor.config import GossipConfig
from rumor.core import pull
from rumor.core.certstore import CertStore
from rumor.core.identity import IdentityMapper
from rumor.core.msgstore import block_digest
from rumor.core.pull import PullEngine
from rumor.core.types import Effect, NetworkMember, ReceivedMessage, RecordingTracer, Send
from rumor.crypto.cheap import CheapCryptoService, CheapRegistry
from rumor.wire import messages as wire
from rumor.wire.pb.gossip import message_pb2 as pb

DIGEST_WAIT, REQUEST_WAIT, RESPONSE_WAIT, INTERVAL = 1.0, 1.5, 2.0, 4.0


def item(seq: int, payload: bytes = b"block") -> pb.Envelope:
    return wire.seal(wire.data_message(b"ch", seq, payload))


@dataclass
class Peer:
    """A pull participant: its items, the adapter callbacks, and its engine."""

    name: str
    seqs: Sequence[int] = ()
    verify: Callable[[pb.GossipMessage], bool] = lambda m: True
    offer: Callable[[ReceivedMessage, bytes], bool] = lambda r, d: True
    height: int = 0
    items: dict[bytes, pb.Envelope] = field(default_factory=dict)
    candidates: list[NetworkMember] = field(default_factory=list)
    accepted: list[tuple[int, bytes]] = field(default_factory=list)
    tracer: RecordingTracer = field(default_factory=RecordingTracer)

    def __post_init__(self) -> None:
        self.pki_id = self.name.encode().ljust(32, b".")
        self.member = NetworkMember(self.pki_id, f"{self.name}:7051", org=b"Org1MSP")
        for seq in self.seqs:
            self.items[block_digest(seq)] = item(seq)
        self.engine = PullEngine(
            msg_type=wire.BLOCK_MSG,
            adapter=self,
            rng=random.Random(self.name),
            interval=INTERVAL,
            peer_num=3,
            digest_wait=DIGEST_WAIT,
            request_wait=REQUEST_WAIT,
            response_wait=RESPONSE_WAIT,
            channel=b"ch",
            tracer=self.tracer,
        )

    # adapter
    def pull_candidates(self) -> Sequence[NetworkMember]:
        return self.candidates

    def digests_for(self, requester: ReceivedMessage) -> list[bytes]:
        return [d for d in self.items if self.offer(requester, d)]

    def items_for(self, digests: Sequence[bytes], requester: ReceivedMessage) -> list[pb.Envelope]:
        return [self.items[d] for d in digests if d in self.items and self.offer(requester, d)]

    def wants(self, digest: bytes) -> bool:
        return digest not in self.items and int(digest) >= self.height

    def digest_of(self, msg: pb.GossipMessage) -> bytes | None:
        return block_digest(msg.data_msg.payload.seq_num) if msg.HasField("data_msg") else None

    def accept(self, envelope: pb.Envelope, msg: pb.GossipMessage, source: ReceivedMessage, now: float):
        if not self.verify(msg):
            return None
        seq = msg.data_msg.payload.seq_num
        self.items[block_digest(seq)] = envelope
        self.accepted.append((seq, source.sender))
        return []

    def have(self) -> set[int]:
        return {int(d) for d in self.items}


class Wire:
    """Delivers Send effects between peers at once (zero latency), recording every message."""

    def __init__(self, peers: list[Peer]) -> None:
        self.peers = {p.pki_id: p for p in peers}
        self.log: list[tuple[str, str, str]] = []
        for p in peers:
            p.candidates = [q.member for q in peers if q is not p]

    def received(self, sender: Peer, message: pb.GossipMessage) -> ReceivedMessage:
        env = wire.seal(message)
        return ReceivedMessage(sender.pki_id, sender.member.endpoint, b"", env, wire.open_envelope(env))

    def pump(self, src: Peer, effects: list[Effect], now: float) -> None:
        queue = [(src, e) for e in effects]
        while queue:
            sender, effect = queue.pop(0)
            assert isinstance(effect, Send)
            for target in effect.to:
                dst = self.peers[target.pki_id]
                msg = wire.open_envelope(effect.envelope)
                self.log.append((sender.name, dst.name, wire.kind_of(msg)))
                rm = ReceivedMessage(sender.pki_id, sender.member.endpoint, b"", effect.envelope, msg)
                queue.extend((dst, e) for e in dst.engine.on_message(rm, now))

    def round(self, initiator: Peer, now: float) -> None:
        """One whole pull round of ``initiator`` starting at ``now``."""
        self.pump(initiator, initiator.engine.initiate(now), now)
        self.pump(initiator, initiator.engine.on_tick(now + DIGEST_WAIT), now + DIGEST_WAIT)
        initiator.engine.on_tick(now + DIGEST_WAIT + RESPONSE_WAIT)


def sent(effects: list[Effect], kind: str) -> list[tuple[Send, pb.GossipMessage]]:
    out = []
    for e in effects:
        assert isinstance(e, Send)
        msg = wire.open_envelope(e.envelope)
        if wire.kind_of(msg) == kind:
            out.append((e, msg))
    return out


def test_happy_path_all_to_all() -> None:
    peers = [Peer("a", range(0, 5)), Peer("b", range(5, 10)), Peer("c", range(10, 15)), Peer("d", ())]
    net = Wire(peers)
    t = 0.0
    for _ in range(2):
        for p in peers:
            net.round(p, t)
            t += 5.0
    assert all(p.have() == set(range(15)) for p in peers)
    kinds = {k for _, _, k in net.log}
    assert kinds == {"hello", "data_dig", "data_req", "data_update"}


def test_only_missing_items_are_requested_and_each_of_one_holder() -> None:
    a, b, c = Peer("a", range(10)), Peer("b", range(10)), Peer("c", [0, 1, 2])
    net = Wire([a, b, c])
    net.round(c, 0.0)
    requests = [(s, d) for s, d, k in net.log if k == "data_req"]
    assert c.have() == set(range(10))
    assert sorted(seq for seq, _ in c.accepted) == list(range(3, 10)), "no item twice, none we had"
    assert {d for _, d in requests} <= {"a", "b"}


def test_item_filter_ignores_digests_below_the_ledger_height() -> None:
    a, b = Peer("a", range(10)), Peer("b", (), height=6)
    net = Wire([a, b])
    net.round(b, 0.0)
    assert b.have() == {6, 7, 8, 9}


def test_digest_filter_limits_what_a_responder_offers() -> None:
    a = Peer("a", range(10), offer=lambda requester, d: int(d) % 2 == 0)
    b = Peer("b")
    net = Wire([a, b])
    net.round(b, 0.0)
    assert b.have() == {0, 2, 4, 6, 8}


def test_timers_follow_the_three_wait_times() -> None:
    a, b = Peer("a", [1]), Peer("b")
    net = Wire([a, b])
    b.engine.start(0.0)
    assert b.engine.next_deadline() == INTERVAL
    hello = b.engine.on_tick(INTERVAL)
    assert len(sent(hello, "hello")) == 1
    assert b.engine.next_deadline() == INTERVAL + DIGEST_WAIT
    net.pump(b, hello, INTERVAL)
    assert a.engine.next_deadline() == INTERVAL + REQUEST_WAIT, "responder keeps the nonce for requestWaitTime"
    req = b.engine.on_tick(INTERVAL + DIGEST_WAIT)
    assert len(sent(req, "data_req")) == 1
    assert b.engine.next_deadline() == INTERVAL + DIGEST_WAIT + RESPONSE_WAIT
    net.pump(b, req, INTERVAL + DIGEST_WAIT)
    assert b.have() == {1}
    b.engine.on_tick(INTERVAL + DIGEST_WAIT + RESPONSE_WAIT)
    assert b.engine.next_deadline() == 2 * INTERVAL


# --- a byzantine responder -----------------------------------------------------------------------


class Byzantine:
    """Drives an initiator by hand: its hello nonce is known, every answer is crafted."""

    def __init__(self, verify: Callable[[pb.GossipMessage], bool] = lambda m: True) -> None:
        self.victim = Peer("victim", verify=verify)
        self.evil = Peer("evil")
        self.other = Peer("other")
        self.net = Wire([self.victim, self.evil, self.other])
        self.victim.candidates = [self.evil.member]
        ((_, hello),) = sent(self.victim.engine.initiate(0.0), "hello")
        self.nonce = hello.hello.nonce

    def say(self, message: pb.GossipMessage, now: float, sender: Peer | None = None) -> list[Effect]:
        return self.victim.engine.on_message(self.net.received(sender or self.evil, message), now)

    def digest(self, seqs: Sequence[int], nonce: int | None = None, sender: Peer | None = None) -> None:
        digests = [block_digest(s) for s in seqs]
        self.say(wire.data_digest(self.nonce if nonce is None else nonce, wire.BLOCK_MSG, digests, b"ch"), 0.1, sender)

    def request(self) -> set[int]:
        reqs = sent(self.victim.engine.on_tick(DIGEST_WAIT), "data_req")
        return {int(d) for _, m in reqs for d in m.data_req.digests}

    def update(
        self, items: Sequence[pb.Envelope], nonce: int | None = None, sender: Peer | None = None, at=1.5
    ) -> None:
        msg = wire.data_update(self.nonce if nonce is None else nonce, wire.BLOCK_MSG, items, b"ch")
        self.say(msg, at, sender)


def test_digest_with_a_wrong_nonce_is_ignored() -> None:
    b = Byzantine()
    b.digest([1, 2], nonce=b.nonce + 1)
    assert b.request() == set()
    assert b.victim.engine.stats.unexpected == 1


def test_digest_from_a_peer_not_asked_is_ignored() -> None:
    b = Byzantine()
    b.digest([1, 2], sender=b.other)
    assert b.request() == set()


def test_update_with_a_wrong_nonce_injects_nothing() -> None:
    b = Byzantine()
    b.digest([1, 2])
    assert b.request() == {1, 2}
    b.update([item(1), item(2)], nonce=b.nonce ^ 0xFFFF)
    assert b.victim.have() == set()


def test_unrequested_items_are_not_accepted() -> None:
    b = Byzantine()
    b.digest([1])
    assert b.request() == {1}
    b.update([item(1), item(2), item(3)])
    assert b.victim.have() == {1}
    assert b.victim.engine.stats.items_rejected == 2
    reasons = {f["reason"] for f in b.victim.tracer.named("pull_item_rejected")}
    # Only as many items as were asked for are even decoded: the rest is refused in one count.
    assert reasons == {"2 items beyond the 1 requested"}


def test_an_update_with_a_requested_item_after_junk_is_refused_cheaply() -> None:
    b = Byzantine()
    b.digest([1])
    assert b.request() == {1}
    b.update([item(2), item(1)])
    assert b.victim.have() == set()  # item 1 came after the one slot was spent on an unrequested item
    assert b.victim.engine.stats.items_rejected == 2


def test_a_peer_gets_digests_for_a_few_hellos_at_a_time() -> None:
    a, b = Peer("a", [1, 2]), Peer("b")
    net = Wire([a, b])
    answered = [
        bool(sent(a.engine.on_message(net.received(b, wire.hello(n, wire.BLOCK_MSG, b"ch")), 0.0), "data_dig"))
        for n in range(1, 11)
    ]
    assert answered == [True] * pull.MAX_HELLOS_PER_PEER + [False] * (10 - pull.MAX_HELLOS_PER_PEER)
    a.engine.on_tick(REQUEST_WAIT)  # the first hellos expire: room again
    reply = a.engine.on_message(net.received(b, wire.hello(99, wire.BLOCK_MSG, b"ch")), REQUEST_WAIT)
    assert sent(reply, "data_dig")


def test_an_update_without_any_request_is_ignored() -> None:
    b = Byzantine()
    b.update([item(1)], at=0.2)  # still collecting digests: no request was sent
    assert b.victim.have() == set()


def test_content_must_match_the_requested_digest() -> None:
    b = Byzantine()
    b.digest([5])
    assert b.request() == {5}
    b.update([item(6)])  # offered 5, sends 6
    assert b.victim.have() == set()


def test_forged_item_fails_the_verify_hook() -> None:
    b = Byzantine(verify=lambda m: m.data_msg.payload.data == b"genuine")
    b.digest([1, 2])
    b.request()
    b.update([item(1, b"forged"), item(2, b"genuine")])
    assert b.victim.have() == {2}
    assert any(f["reason"] == "item failed verification" for f in b.victim.tracer.named("pull_item_rejected"))


def test_update_from_another_peer_under_the_right_nonce_is_ignored() -> None:
    b = Byzantine()
    b.digest([1])
    b.request()
    b.update([item(1)], sender=b.other)
    assert b.victim.have() == set()


def test_late_update_is_ignored() -> None:
    b = Byzantine()
    b.digest([1])
    b.request()
    b.victim.engine.on_tick(DIGEST_WAIT + RESPONSE_WAIT)
    b.update([item(1)], at=DIGEST_WAIT + RESPONSE_WAIT + 0.1)
    assert b.victim.have() == set()


def test_replayed_update_is_accepted_once() -> None:
    b = Byzantine()
    b.digest([1])
    b.request()
    b.update([item(1)])
    b.victim.items.clear()
    b.update([item(1)])
    assert b.victim.accepted == [(1, b.evil.pki_id)]


def test_garbage_items_are_rejected() -> None:
    b = Byzantine()
    b.digest([1])
    b.request()
    b.update([pb.Envelope(payload=b"\xff\xff garbage"), wire.seal(wire.alive("x:1", b"x", 1, 1))])
    assert b.victim.have() == set()
    assert b.victim.engine.stats.items_rejected == 2


# --- responder side ------------------------------------------------------------------------------


def test_request_without_a_hello_gets_nothing() -> None:
    a, b = Peer("a", [1, 2]), Peer("b")
    net = Wire([a, b])
    out = a.engine.on_message(net.received(b, wire.data_request(42, wire.BLOCK_MSG, [b"1"], b"ch")), 0.0)
    assert out == []


def test_request_after_request_wait_gets_nothing() -> None:
    a, b, c = Peer("a", [1, 2]), Peer("b"), Peer("c")
    net = Wire([a, b, c])
    digest = a.engine.on_message(net.received(b, wire.hello(7, wire.BLOCK_MSG, b"ch")), 0.0)
    ((_, d),) = sent(digest, "data_dig")
    assert sorted(d.data_dig.digests) == [b"1", b"2"] and d.data_dig.nonce == 7
    # Another peer cannot use b's nonce.
    assert a.engine.on_message(net.received(c, wire.data_request(7, wire.BLOCK_MSG, [b"1"], b"ch")), 0.5) == []
    ok = a.engine.on_message(net.received(b, wire.data_request(7, wire.BLOCK_MSG, [b"1", b"9"], b"ch")), 1.0)
    ((_, u),) = sent(ok, "data_update")
    assert [wire.open_envelope(e).data_msg.payload.seq_num for e in u.data_update.data] == [1]
    a.engine.on_tick(REQUEST_WAIT)
    assert a.engine.on_message(net.received(b, wire.data_request(7, wire.BLOCK_MSG, [b"1"], b"ch")), 1.6) == []


def test_nothing_to_offer_sends_no_digest() -> None:
    a, b = Peer("a"), Peer("b")
    net = Wire([a, b])
    assert a.engine.on_message(net.received(b, wire.hello(7, wire.BLOCK_MSG, b"ch")), 0.0) == []


def test_identity_pull_messages_carry_the_empty_tag_and_no_channel() -> None:
    adapter = Peer("x")
    adapter.candidates = [Peer("y").member]
    engine = PullEngine(
        msg_type=wire.IDENTITY_MSG,
        adapter=adapter,
        rng=random.Random(0),
        interval=1.0,
        peer_num=1,
        digest_wait=1.0,
        request_wait=1.0,
        response_wait=1.0,
    )
    ((_, hello),) = sent(engine.initiate(0.0), "hello")
    assert hello.tag == wire.EMPTY and hello.channel == b"" and hello.hello.msg_type == wire.IDENTITY_MSG


# --- the certificate store: identities by pull -----------------------------------------------------
# Mirrors Fabric's gossip/gossip/certstore_test.go (TestCertStoreBadSignature, TestCertStoreMismatchedIdentity,
# TestCertStoreShouldSucceed, TestCertExpiration) and the identity disclosure of gossip_impl's pull filter.


class Directory:
    """Membership for the cert store: a fixed list, plus ourselves."""

    def __init__(self, me: NetworkMember, members: list[NetworkMember]) -> None:
        self.me, self.members = me, members

    def alive_members(self) -> list[NetworkMember]:
        return list(self.members)

    def lookup(self, pki_id: bytes) -> NetworkMember | None:
        if pki_id == self.me.pki_id:
            return self.me
        return next((m for m in self.members if m.pki_id == pki_id), None)


def cert_world(external: dict[str, bool] | None = None):
    external = external or {}
    registry = CheapRegistry()
    svcs = {
        name: CheapCryptoService.for_peer(org, name, registry)
        for name, org in [("a1", "Org1MSP"), ("a2", "Org1MSP"), ("a3", "Org1MSP"), ("b1", "Org2MSP"), ("c1", "Org3MSP")]
    }

    def member(name: str) -> NetworkMember:
        svc = svcs[name]
        ep = f"{name}:7051"
        return NetworkMember(svc.pki_id, ep if external.get(name, True) else "", ep, org=svc.org_of(svc.identity))

    stores = {}
    for name, svc in svcs.items():
        others = [member(n) for n in svcs if n != name]
        stores[name] = CertStore(
            config=GossipConfig(),
            identity=svc.identity,
            mcs=svc,
            advisor=svc,
            identities=IdentityMapper(svc, svc.identity),
            membership=Directory(member(name), others),
            rng=random.Random(name),
            tracer=RecordingTracer(),
        )
    return registry, svcs, stores


def received_from(svc: CheapCryptoService, message: pb.GossipMessage) -> ReceivedMessage:
    env = wire.seal(message)
    return ReceivedMessage(svc.pki_id, "x:1", svc.identity, env, wire.open_envelope(env))


def only(store, svc) -> list[NetworkMember]:
    """Make ``svc``'s peer the store's only pull candidate; returns the previous member list."""
    before = store._membership.members
    store._membership.members = [m for m in before if m.pki_id == svc.pki_id]
    return before


def identity_round(stores, svcs, initiator: str, responder: str, now: float = 0.0) -> None:
    """A whole identity pull of ``initiator`` from ``responder``, delivered at once."""
    init = stores[initiator]
    before = only(init, svcs[responder])
    queue = [(initiator, e) for e in init.engine.initiate(now)]
    init._membership.members = before
    for t in (now, now + DIGEST_WAIT):
        if t > now:
            queue += [(initiator, e) for e in init.on_tick(t)]
        while queue:
            src, effect = queue.pop(0)
            assert isinstance(effect, Send)
            dst = initiator if src == responder else responder
            msg = wire.open_envelope(effect.envelope)
            rm = ReceivedMessage(svcs[src].pki_id, "x:1", svcs[src].identity, effect.envelope, msg)
            queue += [(dst, e) for e in stores[dst].on_message(rm, t)]
    init.on_tick(now + DIGEST_WAIT + RESPONSE_WAIT)


def byzantine_identity_update(svcs, stores, items: list[pb.Envelope], claimed: list[bytes]):
    """a1 pulls from b1, which offers ``claimed`` and answers the request with ``items``; returns a1's store."""
    a1 = stores["a1"]
    only(a1, svcs["b1"])
    ((_, hello),) = sent(a1.engine.initiate(0.0), "hello")
    nonce = hello.hello.nonce
    a1.on_message(received_from(svcs["b1"], wire.data_digest(nonce, wire.IDENTITY_MSG, claimed)), 0.1)
    a1.on_tick(DIGEST_WAIT)
    a1.on_message(received_from(svcs["b1"], wire.data_update(nonce, wire.IDENTITY_MSG, items)), 1.5)
    return a1


def test_identities_spread_by_pull_and_land_in_the_identity_mapper() -> None:
    _, svcs, stores = cert_world()
    assert list(stores["a1"].known()) == [svcs["a1"].pki_id]
    identity_round(stores, svcs, "a1", "a2")
    assert set(stores["a1"].known()) == {svcs["a1"].pki_id, svcs["a2"].pki_id}
    assert stores["a1"]._identities.peek(svcs["a2"].pki_id) == svcs["a2"].identity
    # a2's identity then travels on, relayed by a1: it carries a2's own signature.
    identity_round(stores, svcs, "a3", "a1")
    assert svcs["a2"].pki_id in stores["a3"]


def test_identity_signed_by_someone_else_is_rejected() -> None:
    _, svcs, stores = cert_world()
    victim = svcs["c1"]
    forged = wire.seal(wire.peer_identity(victim.pki_id, victim.identity), svcs["b1"].sign)
    a1 = byzantine_identity_update(svcs, stores, [forged], [victim.pki_id])
    assert victim.pki_id not in a1
    assert a1._identities.peek(victim.pki_id) is None
    assert a1.rejected == 1


def test_identity_under_another_pki_id_is_rejected() -> None:
    _, svcs, stores = cert_world()
    b1, c1 = svcs["b1"], svcs["c1"]
    mismatched = wire.seal(wire.peer_identity(c1.pki_id, b1.identity), b1.sign)
    a1 = byzantine_identity_update(svcs, stores, [mismatched], [c1.pki_id])
    assert c1.pki_id not in a1 and a1.rejected == 1


def test_revoked_identity_is_rejected() -> None:
    registry, svcs, stores = cert_world()
    c1 = svcs["c1"]
    genuine = wire.seal(wire.peer_identity(c1.pki_id, c1.identity), c1.sign)
    registry.revoke(c1.identity)
    a1 = byzantine_identity_update(svcs, stores, [genuine], [c1.pki_id])
    assert c1.pki_id not in a1 and a1.rejected == 1


def test_genuine_identity_relayed_by_anyone_is_accepted() -> None:
    _, svcs, stores = cert_world()
    c1 = svcs["c1"]
    genuine = wire.seal(wire.peer_identity(c1.pki_id, c1.identity), c1.sign)
    a1 = byzantine_identity_update(svcs, stores, [genuine], [c1.pki_id])
    assert c1.pki_id in a1 and a1.rejected == 0


def test_foreign_requesters_see_only_externally_reachable_identities_of_our_org_or_theirs() -> None:
    _, svcs, stores = cert_world(external={"a3": False})
    a1 = stores["a1"]
    for other in ("a2", "a3", "b1", "c1"):
        identity_round(stores, svcs, "a1", other)
    everyone = {svcs[n].pki_id for n in svcs}
    assert set(a1.known()) == everyone
    hello = wire.hello(5, wire.IDENTITY_MSG)
    same_org = a1.on_message(received_from(svcs["a2"], hello), 10.0)
    ((_, dig),) = sent(same_org, "data_dig")
    assert set(dig.data_dig.digests) == everyone
    foreign = a1.on_message(received_from(svcs["b1"], hello), 10.0)
    ((_, dig),) = sent(foreign, "data_dig")
    # Not a3 (no external endpoint), not c1 (neither our org nor the requester's).
    assert set(dig.data_dig.digests) == {svcs[n].pki_id for n in ("a1", "a2", "b1")}
    req = wire.data_request(5, wire.IDENTITY_MSG, [svcs["a3"].pki_id, svcs["c1"].pki_id, svcs["a2"].pki_id])
    ((_, upd),) = sent(a1.on_message(received_from(svcs["b1"], req), 10.5), "data_update")
    assert [wire.open_envelope(e).peer_identity.pki_id for e in upd.data_update.data] == [svcs["a2"].pki_id]


def test_purged_identity_leaves_the_store() -> None:
    _, svcs, stores = cert_world()
    identity_round(stores, svcs, "a1", "a2")
    a1 = stores["a1"]
    a1._identities.remove(svcs["a2"].pki_id, 5.0, "expired")
    assert svcs["a2"].pki_id not in a1
