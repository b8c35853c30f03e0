"""The etcd ordering service with real processes on loopback: 3 etcd members, 3 `rumor orderer start`, a load of
clients, and a checker over every ledger and every acknowledgement (etcdnet_harness).

One network serves the module's tests in turn (each leaves every process running again): starting 6 processes
costs more than most scenarios. Lease TTL 2 s (etcd's minimum), batches of 10 envelopes or 200 ms.

Needs Debian's etcd-server (`make test` installs it as root); without it the tests are skipped, which fails the run
under CI=true (tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from etcdnet_harness import EtcdNet, Load, check, read_ledger
from polling import wait_for
from procnet import FAST_GOSSIP, Cluster, block_hash, read_chain

from rumor.crypto.blocks import block_header_hash
from rumor.etcdnet import etcd_binary
from rumor.network import free_base_port, init_network
from rumor.wire.pb.etcdserverpb import rpc_pb2 as pb
from rumor.wire.pb.rumorpb import etcdorder_pb2

pytestmark = [
    pytest.mark.skipif(etcd_binary() is None, reason="etcd is not installed (make test installs etcd-server as root)"),
    pytest.mark.timeout(240),
]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def net(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EtcdNet]:
    root: Path = tmp_path_factory.mktemp("etcd-ordering") / "net"
    layout = init_network(
        root,
        orgs=1,
        peers_per_org=1,
        base_port=free_base_port(1, orderers=3, etcd=3),
        orderers=3,
        consensus="etcd",
        lease_ttl=2,
        batch_timeout=0.2,
        max_message_count=10,
        gossip_overrides=FAST_GOSSIP,
    )
    async with aiohttp.ClientSession() as http:
        cluster = Cluster(layout, http)
        network = EtcdNet(cluster, layout)
        try:
            await network.start_all()
            await cluster.start_peer(layout.peers[0])
            yield network
        except BaseException:
            print(cluster.logs())
            raise
        finally:
            await cluster.close()
            await network.close()


# pytest-asyncio runs a module-scoped async fixture on a module-scoped loop
pytestmark.append(pytest.mark.asyncio(loop_scope="module"))


async def test_envelopes_sent_to_any_orderer_are_ordered_once_and_leave_etcd(net: EtcdNet) -> None:
    load = Load(net).start()
    await load.wait_acks(300)
    await load.stop()
    chain = await net.converged()
    check(chain, load)
    assert {p.split(b"-")[1] for p in load.acked} == {f"w{k}".encode() for k in range(load.writers)}
    # what every orderer stored leaves etcd: at most the newest record (the cursor) and nothing queued uncut
    await wait_for(
        lambda: _few_left(net), 30, "etcd holds at most the newest block record once every orderer stored it"
    )


async def _few_left(net: EtcdNet) -> bool:
    records, queue = await net.etcd_keys()
    return records <= 1 and queue <= 10


async def test_kill_the_cutter_under_load_nothing_lost_nothing_twice_and_it_catches_up(net: EtcdNet) -> None:
    load = Load(net).start()
    await load.wait_acks(100)
    cutter = await net.wait_leader()
    net.kill_orderer(cutter)  # kill -9
    successor = await net.wait_leader(other_than=cutter)
    assert successor != cutter
    await load.wait_acks(150)  # the service goes on with the two others
    await net.start_orderer(cutter)  # catches up: its own ledger, then etcd
    await load.wait_acks(50)
    await load.stop()
    chain = await net.converged()
    check(chain, load)


async def test_a_cutter_paused_past_its_lease_writes_no_block_when_it_resumes(net: EtcdNet) -> None:
    # Every block record put into etcd, watched from here, with the leader key's term at that revision.
    puts: list[tuple[int, etcdorder_pb2.BlockRecord, int]] = []
    leader_term = {"term": 0}
    watching = asyncio.Event()

    async def watch() -> None:
        start = (await net.client.range(net.key("leader"))).header.revision
        kv = await net.client.get(net.key("leader"))
        leader_term["term"] = kv.create_revision if kv is not None else 0
        watching.set()
        async for response in net.client.watch(net.key(""), start + 1):
            for event in response.events:
                name = event.kv.key[len(net.key("")) :]
                if name == b"leader":
                    leader_term["term"] = event.kv.create_revision if event.type == pb.Event.PUT else 0
                elif name.startswith(b"b/") and event.type == pb.Event.PUT:
                    puts.append((event.kv.mod_revision, etcdorder_pb2.BlockRecord.FromString(event.kv.value),
                                 leader_term["term"]))  # fmt: skip

    watcher = asyncio.create_task(watch())
    await watching.wait()
    load = Load(net).start()
    await load.wait_acks(60)
    cutter = await net.wait_leader()
    proc = net.orderers[cutter]
    proc.send(signal.SIGSTOP)  # with batches in flight: it has envelopes it would cut
    try:
        successor = await net.wait_leader(other_than=cutter)
        await load.wait_acks(60)
    finally:
        proc.send(signal.SIGCONT)
    await load.wait_acks(60)
    await load.stop()
    chain = await net.converged()
    check(chain, load)
    watcher.cancel()
    # fencing: every record was written under the term current at its revision, and none by the paused node
    # after the successor's term began
    assert puts
    for _, record, term in puts:
        assert record.term == term, f"block record of term {record.term} written while term {term} held"
    successor_term = min(record.term for _, record, _ in puts if record.writer == successor)
    late = [r for _, r, _ in puts if r.writer == cutter and r.term >= successor_term]
    assert not late, f"the paused cutter wrote {len(late)} blocks after it lost its lease"


async def test_etcd_losing_one_member_goes_on_losing_two_refuses_and_resumes(net: EtcdNet) -> None:
    load = Load(net).start()
    await load.wait_acks(50)
    net.etcd[0].kill()
    await load.wait_acks(100, timeout=60)  # a quorum of two: the service goes on
    net.etcd[1].kill()
    # no quorum: Broadcast answers SERVICE_UNAVAILABLE (never SUCCESS for what etcd did not commit)
    await wait_for(lambda: load.refused["SERVICE_UNAVAILABLE"] > 0, 60, "a SERVICE_UNAVAILABLE answer")
    await net.start_etcd(1)  # a quorum again
    await load.wait_acks(100, timeout=90)
    await net.start_etcd(0)
    await load.wait_acks(20, timeout=60)
    await load.stop()
    chain = await net.converged(timeout=90)
    check(chain, load)


async def test_a_stopped_orderer_catches_up_from_its_ledger_and_etcd(net: EtcdNet) -> None:
    node = net.entries[2].id
    proc = net.orderers.pop(node)
    proc.send(signal.SIGTERM)
    assert await proc.wait_exit(30) == 0
    before = len(read_ledger(net.entry(node).config.parent / "data" / "ledger.sqlite"))
    load = Load(net).start()
    await load.wait_acks(100)
    await load.stop()
    await net.start_orderer(node)
    chain = await net.converged()
    assert len(chain) > before
    check(chain, load)


async def test_a_peer_follows_the_chain_through_a_cutter_failover(net: EtcdNet) -> None:
    """The peer's deliver client moves to another orderer when the one it reads from dies."""
    peer = net.layout.peers[0]
    load = Load(net).start()
    await load.wait_acks(50)
    # the peer reads from the first orderer of the channel config; kill that one (the cutter or not)
    first = net.entries[0].id
    net.kill_orderer(first)
    await load.wait_acks(100)
    await load.stop()
    survivors = [e.id for e in net.entries if e.id != first]
    chain = await net.converged(survivors)
    check(chain, load)
    await net.cluster.wait_heights([peer], len(chain), 60)
    await net.start_orderer(first)
    await net.converged()
    await net.cluster.stop(peer.id)
    # the same blocks (headers chain the data; the peer's committer may add its own metadata)
    assert [block_hash(raw) for raw in read_chain(peer, net.layout.channel)] == [
        block_header_hash(b.header) for b in chain
    ]
