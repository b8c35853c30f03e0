"""Push batches by size and by latency, repeats each message propagateIterations times, and routes by tag.

Mirrors Fabric's gossip/gossip/batcher_test.go (TestBatchingEmitterAddAndSize,
TestBatchingEmitterExpiration, TestBatchingEmitterCounter) and gossip/filter/filter_test.go
(TestSelectPeers, TestCombineRoutingFilters) for the routing rules of each tag.
"""

from __future__ import annotations

import random

from rumor.core.emitter import Emitter, routing_filter
from rumor.core.types import NetworkMember, Send
from rumor.wire import messages as wire
from rumor.wire.pb.gossip import message_pb2 as pb

ORG1, ORG2, ORG3 = b"Org1MSP", b"Org2MSP", b"Org3MSP"


def member(i: int, org: bytes = ORG1, external: bool = True) -> NetworkMember:
    endpoint = f"p{i}:7051"
    return NetworkMember(
        pki_id=bytes([i]) * 32, endpoint=endpoint if external else "", internal_endpoint=endpoint, org=org
    )


MEMBERS = [member(i) for i in range(1, 11)]


def envelope(n: int) -> pb.Envelope:
    return wire.seal(wire.data_message(b"ch", n, b"b"))


def anyone(m: NetworkMember) -> bool:
    return True


def make(
    *, size: int = 5, latency: float = 0.01, iterations: int = 1, peers: int = 3, members=MEMBERS, seed: int = 1
) -> Emitter:
    return Emitter(
        burst_size=size,
        burst_latency=latency,
        iterations=iterations,
        peer_num=peers,
        membership=lambda: members,
        rng=random.Random(seed),
    )


def route_all(env: pb.Envelope):
    return lambda m: env


def sends(effects) -> list[Send]:
    assert all(isinstance(e, Send) for e in effects)
    return list(effects)


def test_flushes_when_the_batch_is_full() -> None:
    em = make(size=3)
    assert em.add(envelope(1), route_all(envelope(1)), 0.0) == []
    assert em.add(envelope(2), route_all(envelope(2)), 0.001) == []
    assert len(em) == 2
    out = sends(em.add(envelope(3), route_all(envelope(3)), 0.002))
    assert len(out) == 3, "one Send per message"
    assert all(len(s.to) == 3 for s in out)
    assert len(em) == 0 and em.next_deadline() is None


def test_flushes_when_the_oldest_message_waited_the_latency() -> None:
    em = make(size=100, latency=0.5)
    em.add(envelope(1), route_all(envelope(1)), 1.0)
    em.add(envelope(2), route_all(envelope(2)), 1.3)
    assert em.next_deadline() == 1.5, "counted from the first message of the batch"
    assert em.on_tick(1.4) == []
    out = sends(em.on_tick(1.5))
    assert [s.envelope for s in out] == [envelope(1), envelope(2)]
    assert em.next_deadline() is None


def test_each_message_goes_out_propagate_iterations_times() -> None:
    em = make(size=100, latency=1.0, iterations=3, peers=2)
    env = envelope(7)
    em.add(env, route_all(env), 0.0)
    rounds = []
    t = 0.0
    while em.next_deadline() is not None:
        t = em.next_deadline()  # type: ignore[assignment]
        rounds.append(sends(em.on_tick(t)))
    assert len(rounds) == 3
    assert t == 3.0, "successive flushes, each a latency after the previous"
    assert all(len(r) == 1 and len(r[0].to) == 2 for r in rounds)


def test_counter_with_size_trigger_keeps_repeating_messages() -> None:
    em = make(size=2, latency=1.0, iterations=2)
    em.add(envelope(1), route_all(envelope(1)), 0.0)
    first = em.add(envelope(2), route_all(envelope(2)), 0.0)
    assert len(first) == 2 and len(em) == 2  # both have one iteration left
    second = em.on_tick(1.0)
    assert len(second) == 2 and len(em) == 0


def test_never_sends_to_excluded_or_ineligible_peers_and_at_most_peer_num() -> None:
    em = make(size=1, peers=4)
    excluded = {MEMBERS[0].pki_id, MEMBERS[1].pki_id}
    odd = {m.pki_id for m in MEMBERS[::2]}
    for n in range(50):
        env = envelope(n)
        out = sends(em.add(env, lambda m, env=env: env if m.pki_id in odd else None, 0.0, exclude=excluded))
        targets = {p.pki_id for s in out for p in s.to}
        assert len(targets) == 4
        assert not targets & excluded
        assert targets <= odd


def test_fewer_eligible_peers_than_peer_num_all_get_it() -> None:
    em = make(size=1, peers=3, members=MEMBERS[:2])
    out = sends(em.add(envelope(1), route_all(envelope(1)), 0.0))
    assert {p.pki_id for s in out for p in s.to} == {MEMBERS[0].pki_id, MEMBERS[1].pki_id}
    assert make(size=1, members=[]).add(envelope(1), route_all(envelope(1)), 0.0) == []


def test_route_may_hand_some_peers_another_envelope() -> None:
    em = make(size=1, peers=10)
    full, stripped = envelope(1), envelope(2)
    out = sends(em.add(full, lambda m: full if m.pki_id[0] % 2 else stripped, 0.0))
    assert len(out) == 2
    by_env = {id(s.envelope): {p.pki_id[0] for p in s.to} for s in out}
    assert by_env[id(full)] == {1, 3, 5, 7, 9}
    assert by_env[id(stripped)] == {2, 4, 6, 8, 10}


def test_same_seed_same_choices() -> None:
    def run(seed: int) -> list[tuple[bytes, ...]]:
        em = make(size=1, seed=seed)
        return [
            tuple(p.pki_id for s in em.add(envelope(n), route_all(envelope(n)), 0.0) for p in s.to) for n in range(20)
        ]

    assert run(3) == run(3)
    assert run(3) != run(4)
    # Membership order does not matter: the choice depends on the seed only.
    em = make(size=1, seed=3, members=list(reversed(MEMBERS)))
    assert [
        tuple(p.pki_id for s in em.add(envelope(n), route_all(envelope(n)), 0.0) for p in s.to) for n in range(20)
    ] == run(3)


# --- routing rules by tag ------------------------------------------------------------------------

PEERS = {
    "ours_in": member(1, ORG1),
    "ours_out": member(2, ORG1),
    "theirs_in": member(3, ORG2),
    "theirs_out": member(4, ORG2),
    "third": member(5, ORG3),
}
IN_CHANNEL = {PEERS["ours_in"].pki_id, PEERS["theirs_in"].pki_id}


def eligible(tag: int, *, disclose: bool = True, channel: bool = True) -> set[str]:
    rule = routing_filter(
        tag,
        self_org=ORG1,
        in_channel=(lambda m: m.pki_id in IN_CHANNEL) if channel else None,
        disclose_to_other_orgs=disclose,
    )
    return {name for name, m in PEERS.items() if rule(m)}


def test_org_only_goes_to_our_org() -> None:
    assert eligible(wire.ORG_ONLY) == {"ours_in", "ours_out"}


def test_chan_and_org_goes_to_our_org_peers_of_the_channel() -> None:
    assert eligible(wire.CHAN_AND_ORG) == {"ours_in"}


def test_chan_or_org_goes_to_the_channel_or_our_org() -> None:
    assert eligible(wire.CHAN_OR_ORG) == {"ours_in", "ours_out", "theirs_in"}


def test_chan_only_goes_to_channel_peers() -> None:
    assert eligible(wire.CHAN_ONLY) == {"ours_in", "theirs_in"}


def test_empty_goes_to_anyone() -> None:
    assert eligible(wire.EMPTY) == set(PEERS)


def test_undefined_goes_nowhere() -> None:
    assert eligible(wire.UNDEFINED) == set()


def test_unknown_channel_keeps_channel_tags_in_our_org() -> None:
    assert eligible(wire.CHAN_OR_ORG, channel=False) == {"ours_in", "ours_out"}
    assert eligible(wire.CHAN_AND_ORG, channel=False) == set()
    assert eligible(wire.CHAN_ONLY, channel=False) == set()


def test_a_peer_hidden_from_other_orgs_is_never_disclosed_to_them() -> None:
    assert eligible(wire.EMPTY, disclose=False) == {"ours_in", "ours_out"}
    assert eligible(wire.CHAN_OR_ORG, disclose=False) == {"ours_in", "ours_out"}
    assert eligible(wire.CHAN_ONLY, disclose=False) == {"ours_in"}
