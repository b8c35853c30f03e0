"""A channel admits only its orgs: StateInfo checks (MAC, signature, org), blocks verified, leave announced.

Mirrors Fabric's gossip/gossip/channel/channel_test.go: TestChannelPeriodicalPublishStateInfo,
TestChannelMsgStoreEviction, TestChannelPull / TestChannelPullAccessControl,
TestChannelPeerNotInChannel, TestChannelIsInChannel, TestChannelAddToMessageStore,
TestChannelBadBlocks / TestChannelPulledBadBlocks, TestChannelStateInfoSnapshot,
TestInterOrgExternalEndpointDisclosure, TestLeaveChannel, TestChannelReconfigureChannel,
TestNoGossipOrSigningWhenEmptyMembership.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

from rumor.config import GossipConfig
from rumor.core.channel import Channel, channel_mac
from rumor.core.identity import IdentityMapper
from rumor.core.msgstore import SignedMessage
from rumor.core.types import Deliver, Effect, NetworkMember, ReceivedMessage, RecordingTracer, Send
from rumor.crypto.blocks import new_block, sign_block
from rumor.crypto.cheap import CheapCryptoService, CheapRegistry
from rumor.wire import messages as wire
from rumor.wire.pb.gossip import message_pb2 as pb

ORG1, ORG2, ORG3 = "Org1MSP", "Org2MSP", "Org3MSP"
CH = "mychannel"


@dataclass
class Membership:
    me: NetworkMember
    members: list[NetworkMember] = field(default_factory=list)

    def alive_members(self) -> list[NetworkMember]:
        return list(self.members)

    def lookup(self, pki_id: bytes) -> NetworkMember | None:
        if pki_id == self.me.pki_id:
            return self.me
        return next((m for m in self.members if m.pki_id == pki_id), None)


class World:
    """Our peer (p1 of Org1) with its channel, and the other peers as crypto services."""

    def __init__(self, *, forwarding: bool = True, hidden: bool = False, **config: object) -> None:
        self.registry = CheapRegistry()
        self.orderer = CheapCryptoService.for_peer("OrdererMSP", "orderer", self.registry)
        self.registry.register_channel(CH, ["OrdererMSP"])
        self.me = CheapCryptoService.for_peer(ORG1, "p1", self.registry)
        self.peers = {
            name: CheapCryptoService.for_peer(org, name, self.registry)
            for name, org in [("p2", ORG1), ("p3", ORG1), ("q1", ORG2), ("r1", ORG3)]
        }
        self.identities = IdentityMapper(self.me, self.me.identity)
        for svc in self.peers.values():
            self.identities.put(svc.pki_id, svc.identity, 0.0)
        self.membership = Membership(self.member(self.me, external=not hidden))
        self.membership.members = [self.member(svc) for svc in self.peers.values()]
        self.pushed: list[tuple[SignedMessage, tuple[bytes, ...]]] = []
        self.tracer = RecordingTracer()
        self.config = GossipConfig(**config)  # type: ignore[arg-type]
        self.channel = Channel(
            CH,
            config=self.config,
            identity=self.me.identity,
            mcs=self.me,
            advisor=self.me,
            identities=self.identities,
            membership=self.membership,
            rng=random.Random(7),
            inc_num=100,
            push=self.push,
            forwarding=forwarding,
            tracer=self.tracer,
        )
        self.channel.join([ORG1.encode(), ORG2.encode()], 0.0)
        self.channel.start(0.0)

    @staticmethod
    def member(svc: CheapCryptoService, external: bool = True) -> NetworkMember:
        name = svc.identity.decode(errors="replace")[-2:]
        org = svc.org_of(svc.identity)
        return NetworkMember(svc.pki_id, f"{name}:7051" if external else "", f"{name}:7051", org=org)

    def push(self, item: SignedMessage, channel: Channel, exclude, now: float) -> list[Effect]:
        assert channel is self.channel
        self.pushed.append((item, tuple(exclude)))
        return []

    def received(self, sender: str, envelope: pb.Envelope) -> ReceivedMessage:
        svc = self.peers[sender]
        return ReceivedMessage(svc.pki_id, f"{sender}:7051", svc.identity, envelope, wire.open_envelope(envelope))

    def state_info(self, origin: str, seq: int = 1, height: int = 5, *, left: bool = False, channel: str = CH):
        svc = self.peers[origin]
        msg = wire.state_info(channel_mac(svc.pki_id, channel), svc.pki_id, 1, seq, height, left)
        return wire.seal(msg, svc.sign)

    def block(self, seq: int, *, tamper: bool = False) -> pb.Envelope:
        block = new_block(seq, b"prev", [b"tx%d" % seq])
        sign_block(block, self.orderer, nonce=bytes(24))
        if tamper:
            block.data.data[0] = b"evil"
        return wire.seal(wire.data_message(CH.encode(), seq, block.SerializeToString()))

    def deliver(self, sender: str, envelope: pb.Envelope, now: float = 1.0) -> list[Effect]:
        return self.channel.on_message(self.received(sender, envelope), now)

    def peers_in_channel(self) -> set[bytes]:
        return {m.pki_id for m in self.channel.peers_of_channel()}


def pki(world: World, name: str) -> bytes:
    return world.peers[name].pki_id


def test_channel_mac_is_sha256_of_pki_id_and_name() -> None:
    w = World()
    assert channel_mac(b"\x01" * 32, "abc") == hashlib.sha256(b"\x01" * 32 + b"abc").digest()
    assert w.channel.mac == channel_mac(w.me.pki_id, CH)


def test_valid_state_info_of_a_channel_org_proves_membership() -> None:
    w = World()
    assert w.peers_in_channel() == set()
    w.deliver("p2", w.state_info("q1", height=9))
    assert w.peers_in_channel() == {pki(w, "q1")}
    (member,) = w.channel.peers_of_channel()
    assert member.properties is not None and member.properties.ledger_height == 9
    assert w.channel.is_channel_peer(w.member(w.peers["q1"]))


def test_new_state_info_is_forwarded_but_not_to_sender_or_origin() -> None:
    w = World()
    w.pushed.clear()
    w.deliver("p2", w.state_info("q1"))
    ((item, exclude),) = w.pushed
    assert item.message.state_info.pki_id == pki(w, "q1")
    assert set(exclude) == {pki(w, "p2"), pki(w, "q1")}
    w.deliver("p3", w.state_info("q1"))  # the same again: not new, not forwarded
    assert len(w.pushed) == 1


def test_state_info_of_an_org_outside_the_channel_is_rejected() -> None:
    w = World()
    w.deliver("p2", w.state_info("r1"))
    assert w.peers_in_channel() == set()
    assert w.tracer.named("state_info_rejected")[0]["reason"] == "origin's org is not in the channel"


def test_messages_from_a_sender_outside_the_channel_orgs_are_denied() -> None:
    w = World()
    assert w.deliver("r1", w.state_info("q1")) == []
    assert w.deliver("r1", w.block(1)) == []
    assert w.peers_in_channel() == set()
    assert w.channel.stats.access_denied == 2
    assert all(e["reason"] == "sender's org is not in the channel" for e in w.tracer.named("channel_access_denied"))


def test_state_info_with_a_bad_signature_is_rejected() -> None:
    w = World()
    forged = pb.Envelope()
    forged.CopyFrom(w.state_info("q1"))
    forged.signature = w.peers["p2"].sign(forged.payload)  # signed by someone else
    w.deliver("p2", forged)
    unsigned = pb.Envelope(payload=w.state_info("q1").payload)
    w.deliver("p2", unsigned)
    assert w.peers_in_channel() == set()
    assert w.channel.stats.state_info_rejected == 2


def test_state_info_of_another_channel_has_a_mac_that_does_not_match() -> None:
    w = World()
    w.channel.on_message(w.received("p2", w.state_info("q1", channel="other")), 1.0)
    assert w.peers_in_channel() == set()
    assert w.tracer.named("state_info_rejected")[0]["reason"] == "MAC does not match the channel"


def test_state_info_of_an_unknown_identity_is_rejected() -> None:
    w = World()
    stranger = CheapCryptoService.for_peer(ORG2, "stranger", w.registry)
    msg = wire.state_info(channel_mac(stranger.pki_id, CH), stranger.pki_id, 1, 1, 1)
    w.deliver("p2", wire.seal(msg, stranger.sign))
    assert w.tracer.named("state_info_rejected")[0]["reason"] == "origin's identity unknown"


def test_newer_state_info_replaces_older_and_left_channel_removes_the_peer() -> None:
    w = World()
    w.deliver("p2", w.state_info("q1", seq=1, height=3))
    w.deliver("p2", w.state_info("q1", seq=3, height=7))
    w.deliver("p2", w.state_info("q1", seq=2, height=5))  # stale
    assert w.channel.state_of(pki(w, "q1")).properties.ledger_height == 7  # type: ignore[union-attr]
    w.deliver("p2", w.state_info("q1", seq=4, height=7, left=True))
    assert w.peers_in_channel() == set()


def test_leaving_publishes_left_channel_at_once() -> None:
    w = World()
    w.pushed.clear()
    w.channel.leave(1.0)
    ((item, _),) = w.pushed
    info = item.message.state_info
    assert info.properties.left_channel and info.pki_id == w.me.pki_id and info.channel_MAC == w.channel.mac
    w.me.verify(w.me.identity, item.envelope.signature, item.envelope.payload)
    assert w.channel.peers_of_channel() == []
    assert w.deliver("p2", w.block(1)) == [], "a peer that left takes no blocks"


def test_rejoining_supersedes_the_left_state_info() -> None:
    w = World()
    w.channel.leave(1.0)
    left = w.channel.state_of(w.me.pki_id)
    w.channel.join([ORG1.encode(), ORG2.encode()], 10.0)
    again = w.channel.state_of(w.me.pki_id)
    assert left is not None and again is not None
    assert not again.properties.left_channel
    assert again.timestamp.seq_num > left.timestamp.seq_num


def test_state_info_is_published_when_changed_at_most_once_per_interval() -> None:
    w = World(publish_state_info_interval=4.0)
    assert len(w.pushed) == 1, "published when the channel started"
    w.channel.on_tick(1.0)
    w.channel.on_tick(4.0)
    assert len(w.pushed) == 1, "unchanged: nothing to send"
    w.channel.update_ledger_height(10, 5.0)
    assert len(w.pushed) == 2, "changed, and the last publication is an interval old: at once"
    w.channel.update_ledger_height(11, 6.0)
    w.channel.update_ledger_height(12, 7.0)
    assert len(w.pushed) == 2, "rate-limited"
    w.channel.on_tick(8.9)
    assert len(w.pushed) == 2
    w.channel.on_tick(9.0)
    assert len(w.pushed) == 3
    assert w.pushed[-1][0].message.state_info.properties.ledger_height == 12
    w.channel.on_tick(13.0)
    assert len(w.pushed) == 3, "nothing changed since"


def test_state_info_keeps_being_published_while_nobody_could_hear_it() -> None:
    w = World(publish_state_info_interval=4.0)
    everyone = w.membership.members
    w.membership.members = []
    w.channel.update_ledger_height(1, 1.0)
    w.pushed.clear()
    for t in (4.0, 8.0, 12.0):
        w.channel.on_tick(t)
    assert len(w.pushed) == 3
    w.membership.members = everyone
    w.channel.on_tick(16.0)
    w.channel.on_tick(20.0)
    assert len(w.pushed) == 4, "once someone of the channel's orgs is around, once is enough"


def test_state_info_requests_go_to_peers_of_channel_orgs() -> None:
    w = World(request_state_info_interval=4.0, pull_peer_num=10)
    effects = w.channel.on_tick(4.0)
    (send,) = [
        e for e in effects if isinstance(e, Send) and wire.open_envelope(e.envelope).HasField("state_info_pull_req")
    ]
    assert {p.pki_id for p in send.to} == {pki(w, n) for n in ("p2", "p3", "q1")}
    req = wire.open_envelope(send.envelope)
    assert req.state_info_pull_req.channel_MAC == w.channel.mac and req.channel == b""


def snapshot_of(effects: list[Effect]) -> list[pb.GossipMessage]:
    (send,) = effects
    assert isinstance(send, Send)
    msg = wire.open_envelope(send.envelope)
    return [wire.open_envelope(e) for e in msg.state_snapshot.elements]


def test_state_info_pull_request_is_answered_with_a_snapshot() -> None:
    w = World()
    w.deliver("p2", w.state_info("q1"))
    req = wire.seal(wire.state_info_pull_request(channel_mac(pki(w, "p2"), CH), 5))
    elements = snapshot_of(w.deliver("p2", req))
    assert {m.state_info.pki_id for m in elements} == {w.me.pki_id, pki(w, "q1")}


def test_state_info_pull_request_from_outside_is_refused() -> None:
    w = World()
    assert w.deliver("r1", wire.seal(wire.state_info_pull_request(channel_mac(pki(w, "r1"), CH), 5))) == []
    # A MAC made for another peer is not this requester's.
    assert w.deliver("q1", wire.seal(wire.state_info_pull_request(channel_mac(pki(w, "p2"), CH), 5))) == []


def test_hidden_peers_of_our_org_stay_out_of_snapshots_for_other_orgs() -> None:
    w = World(hidden=True)
    w.deliver("p2", w.state_info("q1"))
    ours = snapshot_of(w.deliver("p2", wire.seal(wire.state_info_pull_request(channel_mac(pki(w, "p2"), CH), 1))))
    theirs = snapshot_of(w.deliver("q1", wire.seal(wire.state_info_pull_request(channel_mac(pki(w, "q1"), CH), 1))))
    assert {m.state_info.pki_id for m in ours} == {w.me.pki_id, pki(w, "q1")}
    assert {m.state_info.pki_id for m in theirs} == {pki(w, "q1")}


def test_snapshot_elements_are_checked_one_by_one_and_not_forwarded() -> None:
    w = World()
    w.pushed.clear()
    good = w.state_info("q1")
    bad = w.state_info("r1")
    snap = wire.state_info_snapshot([good, bad, pb.Envelope(payload=b"junk")], 1)
    snap.channel = CH.encode()
    w.deliver("p2", wire.seal(snap))
    assert w.peers_in_channel() == {pki(w, "q1")}
    assert w.pushed == []


# --- blocks --------------------------------------------------------------------------------------


def test_valid_block_is_stored_delivered_and_forwarded() -> None:
    w = World()
    w.pushed.clear()
    effects = w.deliver("q1", w.block(3))
    (deliver,) = effects
    assert isinstance(deliver, Deliver) and deliver.message.message.data_msg.payload.seq_num == 3
    ((_, exclude),) = w.pushed
    assert exclude == (pki(w, "q1"),)
    assert b"3" in w.channel.blocks
    (event,) = w.tracer.named("block_received")
    assert event == {"channel": CH, "seq_num": 3, "from": pki(w, "q1"), "via": "push"}
    assert w.deliver("p2", w.block(3)) == [], "duplicate"
    assert w.channel.stats.blocks_duplicate == 1


def test_tampered_block_is_rejected_counted_and_traced() -> None:
    w = World()
    w.pushed.clear()
    assert w.deliver("p2", w.block(4, tamper=True)) == []
    assert w.pushed == [] and b"4" not in w.channel.blocks
    assert w.channel.stats.blocks_rejected == 1
    (event,) = w.tracer.named("block_rejected")
    assert event["seq_num"] == 4 and event["from"] == pki(w, "p2") and event["channel"] == CH
    # The genuine block still gets in afterwards.
    assert len(w.deliver("p2", w.block(4))) == 1


def test_without_forwarding_a_block_is_delivered_but_not_pushed_on() -> None:
    w = World(forwarding=False)
    w.pushed.clear()
    assert len(w.deliver("p2", w.block(1))) == 1
    assert w.pushed == []


def test_block_store_evicts_blocks_behind_the_window() -> None:
    w = World(max_block_count_to_store=3)
    for seq in range(1, 8):
        w.deliver("p2", w.block(seq))
    assert sorted(m.message.data_msg.payload.seq_num for m in w.channel.blocks) == [4, 5, 6, 7]
    assert w.deliver("p2", w.block(2)) == [], "too old for the store"


def test_pull_wants_only_blocks_at_or_above_the_ledger_height() -> None:
    w = World()
    w.channel.update_ledger_height(5, 1.0)
    w.deliver("p2", w.block(6))
    assert not w.channel.wants(b"4")
    assert w.channel.wants(b"5")
    assert not w.channel.wants(b"6"), "held already"
    assert not w.channel.wants(b"x")


def test_block_pull_is_only_among_same_org_peers_of_the_channel() -> None:
    w = World()
    assert w.channel.pull_candidates() == []
    for origin in ("p2", "q1"):
        w.deliver("p2", w.state_info(origin))
    assert [m.pki_id for m in w.channel.pull_candidates()] == [pki(w, "p2")]
    hello = wire.seal(wire.hello(9, wire.BLOCK_MSG, CH.encode()))
    w.deliver("p2", w.block(1))
    assert w.deliver("q1", hello) == [], "other org"
    assert w.deliver("p3", hello) == [], "our org, but no StateInfo proves it is in the channel"
    (digest,) = w.deliver("p2", hello)
    assert isinstance(digest, Send) and list(wire.open_envelope(digest.envelope).data_dig.digests) == [b"1"]


def test_pulled_blocks_are_verified_and_delivered() -> None:
    w = World()
    source = w.received("p2", wire.seal(wire.hello(1, wire.BLOCK_MSG, CH.encode())))
    bad = w.block(2, tamper=True)
    assert w.channel.accept(bad, wire.open_envelope(bad), source, 1.0) is None
    good = w.block(2)
    (deliver,) = w.channel.accept(good, wire.open_envelope(good), source, 1.0)  # type: ignore[misc]
    assert isinstance(deliver, Deliver) and deliver.message.sender == pki(w, "p2")
    assert w.tracer.named("block_received")[-1]["via"] == "pull"
    assert w.channel.digest_of(wire.data_message(b"other", 2, b"")) is None


def test_reconfiguring_the_orgs_drops_state_of_removed_orgs() -> None:
    w = World()
    w.deliver("p2", w.state_info("q1"))
    assert w.peers_in_channel() == {pki(w, "q1")}
    w.channel.join([ORG1.encode()], 2.0)
    assert w.peers_in_channel() == set()
    assert w.deliver("q1", w.block(1)) == []


def test_leadership_messages_of_our_org_are_checked_and_delivered() -> None:
    w = World()
    p2 = w.peers["p2"]
    lead = wire.seal(wire.leadership(CH.encode(), p2.pki_id, 1, 1, True), p2.sign)
    effects = w.deliver("p3", lead)
    assert len(effects) == 1 and isinstance(effects[0], Deliver)
    assert w.deliver("p3", lead) == [], "duplicate"
    q1 = w.peers["q1"]
    foreign = wire.seal(wire.leadership(CH.encode(), q1.pki_id, 1, 1, True), q1.sign)
    assert w.deliver("q1", foreign) == []
    forged = wire.seal(wire.leadership(CH.encode(), p2.pki_id, 1, 2, True), w.peers["p3"].sign)
    assert w.deliver("p3", forged) == []
