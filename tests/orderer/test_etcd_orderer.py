"""The etcd ordering service in this process, on one real etcd member: the fencing Txn itself, admission limits,
a genesis block that differs, and the etcd client's building blocks. (The failover scenarios, with processes and a
3-member cluster, are in tests/integration/test_etcd_ordering.py.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from orderer_helpers import CHANNEL, raw_broadcast, user
from polling import wait_for

from rumor import channelconfig as cc
from rumor.channelconfig import new_envelope
from rumor.crypto import GeneratedMaterial, SigningIdentity
from rumor.etcdnet import EtcdMember, EtcdProcess, etcd_binary, write_cluster
from rumor.ledger import Ledger
from rumor.network import free_ports
from rumor.orderer import Orderer
from rumor.orderer.config import EtcdConsensusConfig
from rumor.orderer.cutter import BatchSettings, BlockCutter
from rumor.orderer.etcd import EtcdClient, prefix_end
from rumor.orderer.etcdorder import Fenced, _Cutting
from rumor.wire.pb.common import common_pb2

pytestmark = pytest.mark.skipif(
    etcd_binary() is None, reason="etcd is not installed (make test installs etcd-server as root)"
)


def test_prefix_end() -> None:
    assert prefix_end(b"/a/") == b"/a0"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") == b"\0"


@pytest.fixture
async def etcd(tmp_path: Path) -> AsyncIterator[str]:
    client_port, peer_port = free_ports(2)
    member = EtcdMember("solo", "127.0.0.1", client_port, peer_port)
    (config,) = write_cluster(tmp_path / "etcd", [member])
    proc = EtcdProcess(config)
    proc.start()
    client = EtcdClient([member.client_endpoint], request_timeout=2)
    try:

        async def up() -> bool:
            try:
                await client.get(b"/probe")
                return True
            except Exception:
                return False

        await wait_for(up, 30, "etcd answers")
        yield member.client_endpoint
    finally:
        await client.close()
        proc.kill()


def _etcd_config(endpoint: str, node: str, **kwargs: object) -> EtcdConsensusConfig:
    return EtcdConsensusConfig(endpoints=(endpoint,), node_id=node, lease_ttl=2, **kwargs)  # type: ignore[arg-type]


async def _orderer(
    tmp_path: Path, name: str, identity: SigningIdentity, genesis: bytes, endpoint: str, **kwargs: object
) -> Orderer:
    orderer = Orderer(
        identity,
        Ledger(tmp_path / name / "ledger.sqlite"),
        genesis_blocks=[genesis],
        close_ledger=True,
        etcd=_etcd_config(endpoint, name, **kwargs),
    )
    await orderer.start()
    return orderer


async def test_a_cutter_whose_term_is_over_cannot_write_and_a_block_is_written_once(
    tmp_path: Path, etcd: str, orderer_identity: SigningIdentity, genesis: bytes, material: GeneratedMaterial
) -> None:
    orderer = await _orderer(tmp_path, "o1", orderer_identity, genesis, etcd)
    try:
        ordering = orderer.etcd
        assert ordering is not None
        await wait_for(lambda: ordering.status(CHANNEL).is_leader, 20, "o1 cuts")
        chan = ordering._channels[CHANNEL]
        signer = user(material, "Org1MSP")
        replies = await raw_broadcast(orderer.address, None, [new_envelope(signer, CHANNEL, common_pb2.MESSAGE, b"x")
                                                              .SerializeToString()])  # fmt: skip
        assert [r.status for r in replies] == [common_pb2.SUCCESS]
        await wait_for(lambda: orderer.height(CHANNEL) == 2, 20, "block 1")
        settings = BatchSettings(10, 32 * 1024, 64 * 1024, 0.1)
        entry = next(iter(chan.queue.items()))
        batch = [((entry[1][0], entry[0]), entry[1][1])]

        # a cutter of an earlier term (paused past its lease, say): etcd refuses its block
        stale = _Cutting(term=1, cutter=BlockCutter(settings), number=2, previous=b"", fed=(0, b""))
        with pytest.raises(Fenced):
            await ordering._write(chan, stale, batch)
        # the current term cannot write a block that exists either
        current = ordering.status(CHANNEL).term
        again = _Cutting(term=current, cutter=BlockCutter(settings), number=1, previous=b"", fed=(0, b""))
        with pytest.raises(Fenced):
            await ordering._write(chan, again, batch)
        assert await ordering.client.get(chan.key("b/00000000000000000002")) is None
        assert ordering.fenced_writes == 2
    finally:
        await orderer.stop()


async def test_limits_and_a_foreign_genesis_block_are_refused(
    tmp_path: Path,
    etcd: str,
    orderer_identity: SigningIdentity,
    genesis: bytes,
    material: GeneratedMaterial,
    channel_config: cc.ChannelConfig,
) -> None:
    signer = user(material, "Org1MSP")
    orderer = await _orderer(tmp_path, "o1", orderer_identity, genesis, etcd, max_request_bytes=16 * 1024)
    try:
        ordering = orderer.etcd
        assert ordering is not None
        # o1 registers its genesis block in etcd once it syncs, after start() returns: wait for it, or a loaded
        # machine stops o1 first and the other genesis block below is the first one registered.
        await wait_for(lambda: ordering.status(CHANNEL).is_leader, 20, "o1 synced and cutting")
        big = new_envelope(signer, CHANNEL, common_pb2.MESSAGE, b"x" * 20000).SerializeToString()
        (reply,) = await raw_broadcast(orderer.address, None, [big])
        assert reply.status == common_pb2.REQUEST_ENTITY_TOO_LARGE
        assert "MaxRequestBytes" in reply.info
    finally:
        await orderer.stop()

    # another channel of the same name: its orderer must not serve it through this etcd
    other = cc.genesis_block(channel_config, orderer_identity, now=1.0).SerializeToString()
    assert other != genesis
    foreign = await _orderer(tmp_path, "o2", orderer_identity, other, etcd)
    try:
        await wait_for(lambda: foreign.etcd is not None and foreign.etcd.status(CHANNEL).problem, 20, "refused")
        ok = new_envelope(signer, CHANNEL, common_pb2.MESSAGE, b"y").SerializeToString()
        (reply,) = await raw_broadcast(foreign.address, None, [ok])
        assert reply.status == common_pb2.SERVICE_UNAVAILABLE
        assert "genesis block differs" in reply.info
    finally:
        await foreign.stop()


async def test_a_full_queue_answers_service_unavailable(
    tmp_path: Path, etcd: str, orderer_identity: SigningIdentity, slow_genesis: bytes, material: GeneratedMaterial
) -> None:
    # the slow channel cuts after an hour: what is sent stays in the queue
    orderer = await _orderer(
        tmp_path, "o1", orderer_identity, slow_genesis, etcd, max_queue_bytes=8 * 1024, retain_bytes=1024
    )
    try:
        signer = user(material, "Org1MSP")
        envelopes = [
            new_envelope(signer, "slowchannel", common_pb2.MESSAGE, bytes([i]) * 3000).SerializeToString()
            for i in range(8)
        ]
        statuses: list[int] = []
        for envelope in envelopes:
            assert orderer.etcd is not None
            (reply,) = await raw_broadcast(orderer.address, None, [envelope])
            statuses.append(reply.status)
            if reply.status == common_pb2.SUCCESS:
                count = statuses.count(common_pb2.SUCCESS)
                await wait_for(lambda c=count: orderer.etcd.status("slowchannel").queue_entries == c, 10, "queued")
        assert statuses[0] == common_pb2.SUCCESS
        assert common_pb2.SERVICE_UNAVAILABLE in statuses
    finally:
        await orderer.stop()
