"""The adversarial pass's findings, replayed on real processes by an authenticated hostile peer.

Each test runs a one-org network of rumor peers and rumor's orderer, and a ``hostile.HostilePeer`` (or a
``hostile.SilentStream``) holding the valid Org1 identity of a peer that does not run. While it attacks one
peer, the victim must keep serving the honest network: every health probe answered (``hostile.Watch``), the
blocks submitted meanwhile committed, its memory within a bound, and the counter of the defence that stopped
the attack moved. The sans-IO tests of the same defences are in tests/core/test_discovery.py and
tests/core/test_state.py; these prove them in the running peer, through its real transport.

Memory bounds: an idle peer of these networks has an RSS of about 90 MiB (its Python, gRPC, cryptography and
SQLite), one that just stored ten 1 MB blocks about 120 MiB. Each bound leaves room for what the defence lets
the attack cost (and for a loaded machine's slower garbage), and is far below what the attack cost without it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hostile import HostilePeer, SilentStream, Watch, answer_next, forged_alive_flood, unknown_peers_flood
from procnet import Cluster, Load, gossip_client, make_network, submit_direct, wait_for

from rumor.core.types import RemotePeer
from rumor.network import NetworkLayout, PeerEntry, free_base_port
from rumor.wire import messages


async def discovery(cluster: Cluster, peer: PeerEntry) -> dict[str, int]:
    status = await cluster.status(peer)
    assert status is not None, f"{peer.id} does not answer"
    return dict(status["discovery"])


async def state_stats(cluster: Cluster, peer: PeerEntry) -> dict[str, int]:
    status = await cluster.status(peer)
    assert status is not None, f"{peer.id} does not answer"
    return dict(status["channels"][cluster.layout.channel]["state"])


async def events(cluster: Cluster, peer: PeerEntry, name: str) -> list[dict[str, Any]]:
    status = await cluster.status(peer)
    return [e for e in (status or {}).get("events", []) if e["event"] == name]


async def start_network(
    clusters: Callable[[NetworkLayout], Cluster], tmp_path: Path, *, peers: int = 3, **gossip: object
) -> tuple[Cluster, list[PeerEntry]]:
    """One org of ``peers`` peers (one envelope per block); all but the last ``peers - 2`` run and converge.
    The ones not running lend their identities to the hostile peer (and to an honest client)."""
    layout = make_network(tmp_path / "net", orgs=1, peers_per_org=peers, max_message_count=1, gossip_overrides=gossip)
    cluster = clusters(layout)
    running = list(cluster.peers[:2])
    await cluster.start_orderer()
    await cluster.start_peers(running)
    await cluster.wait_converged(running, 40)
    return cluster, running


async def test_forged_membership_flood_costs_the_victim_a_few_checks_and_its_sender_a_penalty(
    clusters: Callable[[NetworkLayout], Cluster], tmp_path: Path
) -> None:
    """Finding 1: a MembershipResponse of 100,000 alive messages claiming a known peer's PKI-ID with wrong
    signatures froze the victim (each a full signature check). Now an unsolicited one is not read, one above
    maxMembershipEntries (10,000) is refused whole, and one within it is dropped after maxForgedPerResponse (8)
    forgeries, its sender penalized (ignored and disconnected for penaltyDuration).

    Memory bound 400 MiB: the victim decodes each 15 MB response once (the protobuf objects of 100,000 entries,
    a few times the wire size) and keeps none of it."""
    cluster, (honest, victim) = await start_network(clusters, tmp_path)
    attacker = cluster.peers[2]
    async with HostilePeer(cluster.layout, attacker) as hostile:
        to_victim = await hostile.meet(cluster, victim)
        status = await cluster.status(honest)
        assert status is not None
        claimed = RemotePeer(bytes.fromhex(status["pki_id"]), honest.endpoint)
        wrong = hostile.mcs.sign(b"not the payload")  # well-formed, so the victim must check each in full
        huge = forged_alive_flood(claimed, 100_000, wrong)
        within = forged_alive_flood(claimed, 5_000, wrong)
        before = await discovery(cluster, victim)
        before["refused"] = before["responses_unsolicited"] + before["responses_oversized"]
        victim_proc = cluster.running[victim.id]

        async with Watch(cluster.http, victim, victim_proc.pid, limit_mb=400) as watch:
            load = Load(cluster.layout, per_round=1, pause=0.25).start()
            try:
                # Unsolicited: no nonce, and a nonce the victim never sent.
                for nonce in (0, 12345):
                    hostile.send(messages.seal(messages.membership_response_of(huge, nonce)), [to_victim])

                seen: dict[str, int] = {}

                async def counted(key: str, n: int) -> bool:
                    seen.update(await discovery(cluster, victim))
                    seen["refused"] = seen["responses_unsolicited"] + seen["responses_oversized"]
                    return seen[key] >= before[key] + n

                await wait_for(lambda: counted("responses_unsolicited", 2), 30, "2 unsolicited responses")
                # Solicited (three requests in a row), but above maxMembershipEntries: refused before any entry is
                # looked at. (Refused, not penalized: an honest peer of a huge network could send one.) An answer
                # that arrives after the victim's next request replaced the one it answers counts as unsolicited.
                flood = answer_next(hostile, to_victim, lambda n: messages.membership_response_of(huge, n), count=3)
                await asyncio.wait_for(flood, 30)

                async def all_refused() -> bool:
                    oversized = await counted("responses_oversized", 1)
                    return oversized and await counted("refused", 5)

                await wait_for(all_refused, 30, "the oversized responses refused", describe=lambda: str(seen))
                # Solicited and within the bound: 8 forgeries checked, the rest dropped, the sender penalized (and
                # then asked no more: the victim's requests to it stop).
                answer_next(hostile, to_victim, lambda n: messages.membership_response_of(within, n), count=10)
                await wait_for(lambda: counted("responses_cut_short", 1), 30, "the forged response cut short")
                after = await discovery(cluster, victim)
                assert after["alive_forged"] - before["alive_forged"] == 8  # of 505,000 offered in all
                penalized = await events(cluster, victim, "peer_penalized")
                assert [e["pki_id"] for e in penalized] == [hostile.pki_id.hex()]
                # Ignored (and disconnected): what it says meanwhile, its heartbeats, is dropped unread.
                await wait_for(lambda: counted("penalized_messages", 1), 30, "the penalized peer's messages dropped")
            finally:
                submitted = await load.stop()
            # Blocks submitted during the attack reach the victim; the peer the forgeries claimed is still alive.
            await cluster.wait_heights([honest, victim], 1 + submitted, 60)
        watch.check()
    status = await cluster.status(victim)
    assert status is not None
    assert {m["endpoint"] for m in status["membership"] if m["alive"]} >= {honest.endpoint}
    assert await cluster.metric(victim, "gossip_membership_responses_refused_total", reason="forged") == 1
    assert await cluster.metric(victim, "gossip_membership_responses_refused_total", reason="oversized") >= 1
    print(f"finding 1: victim {watch.describe()}, {submitted} blocks committed meanwhile")


async def test_forged_alive_messages_sent_one_by_one_earn_the_same_penalty(
    clusters: Callable[[NetworkLayout], Cluster], tmp_path: Path
) -> None:
    """Finding 1 without the response around it: the same forgeries sent as 1,000 alive messages, one by one,
    escaped the penalty (each a signature check: one attacker kept 60 % of the victim's core busy). Now
    maxForgedPerResponse (8) of them within penaltyDuration penalize their sender as a forged response does.

    Memory bound 300 MiB: a forged alive message is 150 bytes and none is kept."""
    cluster, (honest, victim) = await start_network(clusters, tmp_path)
    async with HostilePeer(cluster.layout, cluster.peers[2]) as hostile:
        to_victim = await hostile.meet(cluster, victim)
        status = await cluster.status(honest)
        assert status is not None
        claimed = RemotePeer(bytes.fromhex(status["pki_id"]), honest.endpoint)
        forgeries = forged_alive_flood(claimed, 1000, hostile.mcs.sign(b"not the payload"))
        before = await discovery(cluster, victim)
        async with Watch(cluster.http, victim, cluster.running[victim.id].pid, limit_mb=300) as watch:
            load = Load(cluster.layout, per_round=1, pause=0.25).start()
            try:
                for envelope in forgeries.alive:
                    hostile.send(envelope, [to_victim])
                    await hostile.comm.writable(to_victim.pki_id)  # as fast as the connection takes them
                seen: dict[str, int] = {}

                async def ignored() -> bool:
                    seen.update(await discovery(cluster, victim))
                    return seen["penalized_messages"] > before["penalized_messages"]

                # Penalized and disconnected, the attacker's later forgeries (those its queue kept) go unread.
                await wait_for(ignored, 30, "the forgeries ignored", describe=lambda: str(seen))
            finally:
                submitted = await load.stop()
            await cluster.wait_heights([honest, victim], 1 + submitted, 60)
        watch.check()
    assert seen["alive_forged"] - before["alive_forged"] == 8, seen  # of 1,000
    assert [e["pki_id"] for e in await events(cluster, victim, "peer_penalized")] == [hostile.pki_id.hex()]
    status = await cluster.status(victim)
    assert status is not None
    assert any(m["endpoint"] == honest.endpoint and m["alive"] for m in status["membership"])
    print(f"direct forgeries: victim {watch.describe()}, {seen['alive_forged'] - before['alive_forged']} checked")


async def test_alive_messages_naming_thousands_of_unknown_peers_make_a_few_dials(
    clusters: Callable[[NetworkLayout], Cluster], tmp_path: Path
) -> None:
    """Finding 2: a MembershipResponse of 2,000 alive messages (random PKI-IDs, no identity, junk signatures, an
    endpoint each) made the victim dial all 2,000 to learn who is there. Now such dials draw on a token bucket of
    identifyDials (8) per reconnectInterval; the rest are dropped and counted.

    Memory bound 300 MiB: 2,000 entries are 300 kB on the wire, and the dropped ones leave nothing behind."""
    cluster, (honest, victim) = await start_network(clusters, tmp_path)
    identify_dials = 8  # the default, which the network keeps
    async with HostilePeer(cluster.layout, cluster.peers[2]) as hostile:
        to_victim = await hostile.meet(cluster, victim)
        flood = unknown_peers_flood(2000, free_base_port(1))
        before = await cluster.status(victim)
        assert before is not None
        seen: dict[str, Any] = {}

        async def dials_made() -> int:
            status = await cluster.status(victim)
            assert status is not None
            seen.update(status["discovery"], handshakes_failed=status["comm"]["comm_handshakes_failed"])
            return int(seen["handshakes_failed"] - before["comm"]["comm_handshakes_failed"])

        async with Watch(cluster.http, victim, cluster.running[victim.id].pid, limit_mb=300) as watch:
            load = Load(cluster.layout, per_round=1, pause=0.25).start()
            try:
                await asyncio.wait_for(
                    answer_next(hostile, to_victim, lambda n: messages.membership_response_of(flood, n)), 30
                )

                async def read() -> bool:
                    await dials_made()
                    return bool(seen["alive_unknown_identity"] - before["discovery"]["alive_unknown_identity"] >= 2000)

                await wait_for(read, 30, "the victim reads the 2,000 unknown peers", describe=lambda: str(seen))
                # The dials the bucket allowed go to 127.77.x.y, where nothing listens: each fails at once.
                await wait_for(dials_made, 30, "the allowed dials made", describe=lambda: str(seen))
            finally:
                submitted = await load.stop()
            await cluster.wait_heights([honest, victim], 1 + submitted, 60)
            # Only alive messages of unknown peers make such dials, and none came after the flood: the bucket's
            # first fill is all it got.
            assert await dials_made() <= identify_dials, seen
            assert seen["identify_throttled"] - before["discovery"]["identify_throttled"] >= 2000 - identify_dials
        watch.check()
    assert await cluster.metric(victim, "gossip_membership_identify_dials_throttled_total") >= 2000 - identify_dials
    status = await cluster.status(victim)
    assert status is not None
    assert {m["endpoint"] for m in status["membership"]} == {honest.endpoint, hostile.endpoint}  # no stranger kept
    print(f"finding 2: victim {watch.describe()}, {seen['handshakes_failed']} dials, {submitted} blocks meanwhile")


async def test_state_requests_of_a_peer_that_never_reads_cost_bounded_memory(
    clusters: Callable[[NetworkLayout], Cluster], tmp_path: Path
) -> None:
    """Finding 3: 250 RemoteStateRequests for ten 1 MB blocks, whose answers the requester never read, took the
    victim from 142 MB to 2.19 GB (sendBuffSize answers of 10 MB each, queued). Now the answers are served within
    serveBytesPerSecond (32 MiB/s) per requester, the queue is bounded by sendBuffBytes (16 MiB, one larger
    message may wait alone), and a write blocked for writeTimeout ends the connection. The test shortens
    writeTimeout to 5 s (Fabric-like 30 s by default) to see the end within its time.

    Memory bound 400 MiB: the victim with these blocks is at ~120 MiB; the defences let the attack hold
    one 10 MB answer in gRPC's write and at most 16 MiB + one answer queued, plus the batches read from the
    ledger for the answers served (about 3 per second, 10 MB each, freed once queued or dropped)."""
    cluster, (honest, victim) = await start_network(clusters, tmp_path, peers=4, writeTimeout="5s")
    layout = cluster.layout
    await submit_direct(layout, [bytes([i]) * 1_000_000 for i in range(10)])
    await cluster.wait_heights([honest, victim], 11, 60)
    before = await state_stats(cluster, victim)

    async with Watch(cluster.http, victim, cluster.running[victim.id].pid, limit_mb=400) as watch:
        load = Load(layout, per_round=1, pause=0.25).start()
        stream = await SilentStream.open(layout, cluster.peers[2], victim.endpoint)
        try:
            for _ in range(250):
                await stream.write(messages.seal(messages.state_request(layout.channel.encode(), 1, 10, 1)))
            seen: dict[str, Any] = {}

            async def throttled() -> bool:
                seen.update(await state_stats(cluster, victim))
                return seen["requests_throttled"] - before["requests_throttled"] >= 200

            await wait_for(throttled, 30, "the victim throttles the requests", describe=lambda: str(seen))

            async def cut_off() -> bool:
                status = await cluster.status(victim)
                seen.update((status or {}).get("comm", {}))
                return bool(seen.get("comm_write_timeouts"))

            await wait_for(cut_off, 30, "the stalled connection ends by writeTimeout", describe=lambda: str(seen))
        finally:
            await stream.close()
            submitted = await load.stop()
        # An honest requester is served meanwhile: the budget is per requester.
        client = gossip_client(layout, cluster.peers[3])
        await client.start()
        try:
            answers = client.subscribe(lambda m: m.message.HasField("state_response"))
            status = await cluster.status(victim)
            assert status is not None
            to = [RemotePeer(bytes.fromhex(status["pki_id"]), victim.endpoint)]
            client.send(messages.seal(messages.state_request(layout.channel.encode(), 1, 10, 7)), to)
            await wait_for(lambda: len(answers) > 0, 30, "the honest request answered")
            answer = answers.get_nowait()
            assert answer is not None
            assert [p.seq_num for p in answer.message.state_response.payloads] == list(range(1, 11))
        finally:
            await client.stop()
        await cluster.wait_heights([honest, victim], 11 + submitted, 60)
    watch.check()
    assert await cluster.metric(victim, "gossip_state_requests_throttled_total", channel=layout.channel) >= 200
    assert await cluster.metric(victim, "gossip_comm_write_timeouts_total") >= 1
    print(f"finding 3: victim {watch.describe()}, {seen['requests_throttled']} throttled, {submitted} blocks meanwhile")


async def test_a_peer_claiming_a_height_it_does_not_serve_is_asked_no_more(
    clusters: Callable[[NetworkLayout], Cluster], tmp_path: Path
) -> None:
    """Finding 4: a StateInfo claiming height 10^12 drew a state request at every check (checkInterval), for ever.
    Now a peer that answers a request with none of the blocks its height promised is not asked again for
    distrustPeriod (60 s): over the whole test, it is asked once.

    Memory bound 300 MiB: nothing of the attack is kept but one StateInfo and one distrust mark."""
    cluster, (honest, victim) = await start_network(clusters, tmp_path)
    layout = cluster.layout
    async with HostilePeer(layout, cluster.peers[2]) as hostile:
        hostile.state_height = 10**12
        hostile.answer_state = lambda msg: messages.state_response(layout.channel.encode(), [], msg.message.nonce)
        async with Watch(cluster.http, victim, cluster.running[victim.id].pid, limit_mb=300) as watch:
            to_victim = await hostile.meet(cluster, victim)
            seen: dict[str, Any] = {}

            async def distrusted() -> bool:
                seen.update(await state_stats(cluster, victim))
                return seen["peers_distrusted"] >= 1

            await wait_for(distrusted, 30, "the victim distrusts the liar", describe=lambda: str(seen))
            assert [e["pki_id"] for e in await events(cluster, victim, "peer_distrusted")] == [hostile.pki_id.hex()]
            # The window: the honest network commits 16 blocks (several checkIntervals of 1 s) while the liar
            # keeps claiming its height with every heartbeat.
            start = await cluster.heights([victim])
            load = Load(layout, per_round=1, pause=0.25).start()
            try:

                async def grown() -> bool:
                    height = (await cluster.heights([victim]))[victim.id]
                    return height is not None and height >= (start[victim.id] or 0) + 16

                await wait_for(grown, 60, "16 blocks committed at the victim")
            finally:
                submitted = await load.stop()
            await cluster.wait_heights([honest, victim], 1 + submitted, 60)
        watch.check()
        # The honest peer heard of the liar from the victim, and was fooled once too, no more.
        asked = {pki_id: n for (pki_id, kind), n in hostile.received_from.items() if kind == "state_request"}
        assert asked[to_victim.pki_id] == 1, asked
        assert all(n == 1 for n in asked.values()), asked
    assert await cluster.metric(victim, "gossip_state_peers_distrusted_total", channel=layout.channel) == 1
    print(f"finding 4: victim {watch.describe()}, asked the liar {asked[to_victim.pki_id]} time(s)")


async def test_forged_alive_and_leadership_replays_and_unsolicited_state_responses_stay_refused(
    clusters: Callable[[NetworkLayout], Cluster], tmp_path: Path
) -> None:
    """What the adversarial pass found refused, and must stay so: an alive message whose PKI-ID is not its
    identity's, a state response nobody asked for (carrying a real block), a leadership declaration forged in
    another peer's name, and an alive message of a peer that has stopped, replayed to make it look alive.
    (Blocks not signed by the orderer, re-labelled or tampered: test_forged_blocks.py.)"""
    cluster, (honest, victim) = await start_network(clusters, tmp_path)
    layout = cluster.layout
    async with HostilePeer(layout, cluster.peers[2]) as hostile:
        hostile.state_height = 1  # a channel peer, modestly: the leader pushes it blocks
        to_victim = await hostile.meet(cluster, victim)
        status = await cluster.status(honest)
        assert status is not None
        honest_pki = bytes.fromhex(status["pki_id"])
        await cluster.submit(count=2)
        await cluster.wait_heights([honest, victim], 3, 30)
        await wait_for(
            lambda: hostile.last_block is not None and honest_pki in hostile.alive_of,
            30,
            "a block and the honest peer's alive message overheard",
            describe=lambda: str(hostile.received),
        )
        before, state_before = await discovery(cluster, victim), await state_stats(cluster, victim)
        seen: dict[str, Any] = {}

        async def moved(key: str, stats: Callable[[], Any], base: dict[str, int]) -> bool:
            seen.update(await stats())
            return seen[key] > base[key]

        async with Watch(cluster.http, victim, cluster.running[victim.id].pid, limit_mb=300) as watch:
            # The honest peer's PKI-ID with the attacker's identity, signed by the attacker (newer than the honest
            # peer's own: an older one would be dropped as stale before any check).
            impostor = messages.alive(hostile.endpoint, honest_pki, time.time_ns(), 1, identity=hostile.mcs.identity)
            hostile.send(messages.seal(impostor, hostile.mcs.sign), [to_victim])
            await wait_for(lambda: moved("alive_forged", lambda: discovery(cluster, victim), before), 30, "refused")
            # A real block, in a state response to no request.
            assert hostile.last_block is not None
            response = messages.state_response(layout.channel.encode(), [hostile.last_block.data_msg.payload], 99)
            hostile.send(messages.seal(response), [to_victim])
            await wait_for(
                lambda: moved("responses_ignored", lambda: state_stats(cluster, victim), state_before), 30, "ignored"
            )
            # The honest peer "declares" itself leader, signed by the attacker (newer than its own declarations).
            claim = messages.leadership(layout.channel.encode(), honest_pki, time.time_ns(), 1, is_declaration=True)
            hostile.send(messages.seal(claim, hostile.mcs.sign), [to_victim])
            rejected = await wait_for(lambda: events(cluster, victim, "leadership_rejected"), 30, "leadership refused")
            assert [e["pki_id"] for e in rejected] == [honest_pki.hex()]
            # The honest peer stops; its last alive message, replayed, must not bring it back.
            await cluster.stop(honest.id)

            async def dead() -> bool:
                status = await cluster.status(victim)
                return any(m["pki_id"] == honest_pki.hex() and not m["alive"] for m in (status or {})["membership"])

            await wait_for(dead, 30, "the victim lists the stopped peer dead")
            stale = await discovery(cluster, victim)
            hostile.send(hostile.alive_of[honest_pki], [to_victim])
            await wait_for(lambda: moved("alive_stale", lambda: discovery(cluster, victim), stale), 30, "stale")
            assert await dead()
            # The victim, alone now, still commits what the orderer cuts.
            await cluster.submit(count=2)
            await cluster.wait_heights([victim], 5, 60)
        watch.check()
    print(f"also refused: victim {watch.describe()}")
