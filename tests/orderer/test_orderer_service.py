"""The ordering service over real gRPC on loopback, with a real SQLite ledger and generated crypto."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import os

import grpc
import pytest
from orderer_helpers import (
    CHANNEL,
    MAX_COUNT,
    NEWEST,
    OLDEST,
    SLOW_CHANNEL,
    at,
    free_port,
    payloads_of,
    raw_broadcast,
    raw_deliver,
    seek,
)
from polling import wait_for

from rumor import channelconfig as cc
from rumor.crypto import X509CryptoService, block_header_hash
from rumor.crypto.identity import load_signing_identity
from rumor.ledger import Ledger
from rumor.orderer import (
    MAX_BLOCK_NUMBER,
    Backoff,
    BroadcastClient,
    BroadcastError,
    ClientTLS,
    DeliverClient,
    DeliverError,
    Orderer,
    OrdererError,
    ServerTLS,
)
from rumor.wire.pb.common import common_pb2
from rumor.wire.pb.orderer import ab_pb2

Status = common_pb2.Status
FAST = Backoff(initial=0.02, maximum=0.2)


async def collect(client: DeliverClient, channel: str, start: int, until: int, timeout: float = 10.0) -> list:
    """Blocks from ``start`` until the one numbered ``until`` (inclusive), read with ``stop`` = forever."""
    blocks = []
    async with asyncio.timeout(timeout), contextlib.aclosing(client.deliver(channel, start)) as stream:
        async for block in stream:
            blocks.append(block)
            if block.header.number >= until:
                break
    return blocks


async def test_submitted_payloads_come_back_in_signed_chained_blocks(
    start_orderer, user1, user2, client_tls, channel_config
) -> None:
    orderer = await start_orderer()
    sent = [f"payload {i}".encode() for i in range(25)]
    async with BroadcastClient(orderer.address, user1, tls=client_tls) as client:
        for i, data in enumerate(sent):
            tx_id = await client.submit(CHANNEL, data)
            assert len(tx_id) == 64
            if i == 0:
                # The client keeps its stream: one submission after another reuses it.
                assert client.endpoint == orderer.address

    peer_side = X509CryptoService(user2, cc.org_registry([channel_config]))
    peer_side.register_channel_config(channel_config)
    received: list = []
    async with (
        asyncio.timeout(10),
        contextlib.aclosing(DeliverClient(orderer.address, user2, tls=client_tls).deliver(CHANNEL, 0)) as stream,
    ):
        async for block in stream:
            received.append(block)
            if len(payloads_of(received[1:])) >= len(sent):
                break

    assert [b.header.number for b in received] == list(range(len(received)))
    assert cc.read_genesis(received[0]) == channel_config
    assert payloads_of(received[1:]) == sent
    assert all(1 <= len(b.data.data) <= MAX_COUNT for b in received[1:])
    for previous, block in itertools.pairwise(received):
        assert block.header.previous_hash == block_header_hash(previous.header)
    for block in received:
        raw = block.SerializeToString()
        peer_side.verify_block(CHANNEL, block.header.number, raw)
        assert orderer.ledger.get_block(CHANNEL, block.header.number) == raw
    # The ledger check: the chain the orderer stored is the one delivered, and nothing else.
    assert orderer.height(CHANNEL) == len(received)
    for entry in received[1].data.data:
        envelope = common_pb2.Envelope.FromString(entry)
        peer_side.verify(user1.identity, envelope.signature, envelope.payload)
        opened = cc.open_envelope(envelope)
        assert opened.channel_id == CHANNEL and len(opened.tx_id) == 64
        assert opened.tx_id == hashlib.sha256(opened.signature_header.nonce + opened.creator).hexdigest()
    # Fabric's metadata: five slots; SIGNATURES holds the signed OrdererBlockMetadata naming the last config
    # block (the genesis), LAST_CONFIG repeats it, TRANSACTIONS_FILTER is left to the committer.
    for block in received[1:]:
        assert len(block.metadata.metadata) == 5
        signed = common_pb2.Metadata.FromString(block.metadata.metadata[0])
        assert common_pb2.OrdererBlockMetadata.FromString(signed.value).last_config.index == 0
        assert (
            common_pb2.LastConfig.FromString(common_pb2.Metadata.FromString(block.metadata.metadata[1]).value).index
            == 0
        )
        assert block.metadata.metadata[2] == b""
        assert cc.last_config_index(block) == 0


async def test_batches_are_cut_by_count_then_by_timeout(start_orderer, user1, client_tls) -> None:
    orderer = await start_orderer()
    async with BroadcastClient(orderer.address, user1, tls=client_tls) as client:
        await client.submit_many(CHANNEL, [b"x"] * (MAX_COUNT + 3))
    await wait_for(lambda: orderer.height(CHANNEL) == 3, what="the timeout to cut the rest")
    blocks, status = await raw_deliver(orderer.address, client_tls, seek(user1, CHANNEL, at(1), at(2)))
    assert status == Status.SUCCESS
    assert [len(b.data.data) for b in blocks] == [MAX_COUNT, 3]


async def test_deliver_positions_and_behaviours(start_orderer, user1, client_tls) -> None:
    orderer = await start_orderer(tls=False)
    async with BroadcastClient(orderer.address, user1) as client:
        for i in range(3):
            await client.submit_many(CHANNEL, [f"{i}-{j}".encode() for j in range(MAX_COUNT)])
    await wait_for(lambda: orderer.height(CHANNEL) == 4, what="three full blocks")
    address = orderer.address

    blocks, status = await raw_deliver(address, None, seek(user1, CHANNEL, at(2), at(3)))
    assert status == Status.SUCCESS
    assert [b.header.number for b in blocks] == [2, 3]
    assert payloads_of(blocks)[0] == b"1-0"

    blocks, status = await raw_deliver(address, None, seek(user1, CHANNEL, OLDEST, at(0)))
    assert (status, [b.header.number for b in blocks]) == (Status.SUCCESS, [0])

    blocks, status = await raw_deliver(address, None, seek(user1, CHANNEL, NEWEST, NEWEST))
    assert (status, [b.header.number for b in blocks]) == (Status.SUCCESS, [3])

    # Headers only: the data is left out, the header and signatures stay.
    blocks, status = await raw_deliver(
        address, None, seek(user1, CHANNEL, at(1), at(1), content_type=ab_pb2.SeekInfo.HEADER_WITH_SIG)
    )
    assert status == Status.SUCCESS
    assert len(blocks[0].data.data) == 0 and blocks[0].header.number == 1 and blocks[0].metadata.metadata[0]

    fail_fast = ab_pb2.SeekInfo.FAIL_IF_NOT_READY
    blocks, status = await raw_deliver(address, None, seek(user1, CHANNEL, at(4), at(9), fail_fast))
    assert (status, blocks) == (Status.NOT_FOUND, [])
    blocks, status = await raw_deliver(address, None, seek(user1, CHANNEL, at(3), at(9), fail_fast))
    assert (status, [b.header.number for b in blocks]) == (Status.NOT_FOUND, [3])

    blocks, status = await raw_deliver(address, None, seek(user1, CHANNEL, at(3), at(2)))
    assert (status, blocks) == (Status.BAD_REQUEST, [])
    blocks, status = await raw_deliver(address, None, seek(user1, CHANNEL, ab_pb2.SeekPosition(), at(2)))
    assert (status, blocks) == (Status.BAD_REQUEST, [])


async def test_deliver_from_a_height_waits_for_new_blocks(start_orderer, user1, user2, client_tls) -> None:
    orderer = await start_orderer()
    async with BroadcastClient(orderer.address, user1, tls=client_tls) as client:
        await client.submit_many(CHANNEL, [b"early"] * MAX_COUNT)
        await wait_for(lambda: orderer.height(CHANNEL) == 2, what="block 1")
        reader = asyncio.create_task(raw_deliver(orderer.address, client_tls, seek(user2, CHANNEL, at(2), at(3))))
        await client.submit_many(CHANNEL, [b"late"] * (2 * MAX_COUNT))
        blocks, status = await reader
    assert status == Status.SUCCESS
    assert [b.header.number for b in blocks] == [2, 3]
    assert payloads_of(blocks) == [b"late"] * (2 * MAX_COUNT)


async def test_broadcast_refusals(start_orderer, material, user1, outsider, orderer_identity, client_tls) -> None:
    orderer = await start_orderer()
    org1_peer = load_signing_identity(material.org("Org1MSP").nodes[0].msp_dir, "Org1MSP")

    def envelope(signer, channel: str = CHANNEL, data: bytes = b"data", kind: int = common_pb2.MESSAGE) -> bytes:
        return cc.new_envelope(signer, channel, kind, data).SerializeToString()

    forged = common_pb2.Envelope.FromString(envelope(user1))
    forged.payload = forged.payload.replace(b"data", b"dada")
    unsigned = common_pb2.Envelope.FromString(envelope(user1))
    unsigned.signature = b"\x30\x00"
    no_creator = common_pb2.Envelope(
        payload=common_pb2.Payload(
            header=common_pb2.Header(
                channel_header=common_pb2.ChannelHeader(channel_id=CHANNEL).SerializeToString(),
                signature_header=common_pb2.SignatureHeader(nonce=b"n").SerializeToString(),
            )
        ).SerializeToString()
    )
    cases = [
        (envelope(outsider), Status.FORBIDDEN, "Org3MSP is not an org of channel testchannel"),
        # /Channel/Writers is ANY Writers: an org's Writers are its admins and clients, not its peers
        (envelope(org1_peer), Status.FORBIDDEN, "policy /Channel/Writers is not satisfied"),
        # ... and the orderer org's Writers are its members, as in Fabric
        (envelope(orderer_identity), Status.SUCCESS, ""),
        (envelope(user1, "nochannel"), Status.NOT_FOUND, "channel 'nochannel' does not exist"),
        (forged.SerializeToString(), Status.FORBIDDEN, "or the envelope signature is invalid"),
        (unsigned.SerializeToString(), Status.FORBIDDEN, "or the envelope signature is invalid"),
        (b"\xff\xff\xff", Status.BAD_REQUEST, "envelope does not decode"),
        (common_pb2.Envelope(payload=b"\xff\xff").SerializeToString(), Status.BAD_REQUEST, "payload does not decode"),
        (no_creator.SerializeToString(), Status.BAD_REQUEST, "names no creator"),
        (envelope(user1, ""), Status.BAD_REQUEST, "names no channel"),
        (envelope(user1, kind=common_pb2.CONFIG_UPDATE), Status.BAD_REQUEST, "config updates are not supported"),
        (envelope(user1, data=b"x" * 70_000), Status.REQUEST_ENTITY_TOO_LARGE, "exceeds the channel's absolute"),
        (envelope(user1), Status.SUCCESS, ""),
    ]
    replies = await raw_broadcast(orderer.address, client_tls, [raw for raw, _, _ in cases])
    for (_, status, fragment), reply in zip(cases, replies, strict=True):
        assert (common_pb2.Status.Name(reply.status), fragment in reply.info) == (
            common_pb2.Status.Name(status),
            True,
        ), reply.info

    async with BroadcastClient(orderer.address, outsider, tls=client_tls) as client:
        with pytest.raises(BroadcastError) as info:
            await client.submit(CHANNEL, b"let me in")
    assert info.value.status == Status.FORBIDDEN
    assert "Org3MSP" in info.value.info


async def test_deliver_refusals_and_readers(start_orderer, user1, outsider, orderer_identity, client_tls) -> None:
    orderer = await start_orderer()
    address = orderer.address
    assert (await raw_deliver(address, client_tls, seek(outsider, CHANNEL, at(0), at(0))))[1] == Status.FORBIDDEN
    assert (await raw_deliver(address, client_tls, seek(user1, "nochannel", at(0), at(0))))[1] == Status.NOT_FOUND
    assert (await raw_deliver(address, client_tls, b"\xff\xff"))[1] == Status.BAD_REQUEST
    wrong_type = cc.new_envelope(user1, CHANNEL, common_pb2.MESSAGE, b"")
    assert (await raw_deliver(address, client_tls, wrong_type))[1] == Status.BAD_REQUEST
    stale = cc.new_envelope(
        user1,
        CHANNEL,
        common_pb2.DELIVER_SEEK_INFO,
        ab_pb2.SeekInfo(start=at(0), stop=at(0)).SerializeToString(),
        now=1_000_000_000,
    )
    assert (await raw_deliver(address, client_tls, stale))[1] == Status.BAD_REQUEST
    unsigned = seek(user1, CHANNEL, at(0), at(0))
    unsigned.signature = b""
    assert (await raw_deliver(address, client_tls, unsigned))[1] == Status.FORBIDDEN
    # A peer of Org1 is a Reader (admin, peer or client); Orderer orgs may read too.
    blocks, status = await raw_deliver(address, client_tls, seek(orderer_identity, CHANNEL, at(0), at(0)))
    assert (status, len(blocks)) == (Status.SUCCESS, 1)

    with pytest.raises(DeliverError) as info:
        await collect(DeliverClient(address, outsider, tls=client_tls, backoff=FAST), CHANNEL, 0, 0)
    assert info.value.status == Status.FORBIDDEN


async def test_restart_keeps_the_chain(start_orderer, user1, client_tls, tmp_path) -> None:
    first = await start_orderer()
    async with BroadcastClient(first.address, user1, tls=client_tls) as client:
        await client.submit_many(CHANNEL, [b"before"] * (MAX_COUNT + 1))
    await wait_for(lambda: first.height(CHANNEL) == 3, what="blocks 1 and 2")
    tip = first.ledger.last_hash(CHANNEL)
    await first.stop()

    second = await start_orderer()
    assert second.height(CHANNEL) == 3
    assert second.channels == [SLOW_CHANNEL, CHANNEL]
    async with BroadcastClient(second.address, user1, tls=client_tls) as client:
        await client.submit_many(CHANNEL, [b"after"] * MAX_COUNT)
    await wait_for(lambda: second.height(CHANNEL) == 4, what="block 3")
    block3 = common_pb2.Block.FromString(second.ledger.get_block(CHANNEL, 3))
    assert block3.header.previous_hash == tip
    await second.stop()

    # Channels already in the ledger are served even when no genesis block is given any more.
    third = await start_orderer(genesis_blocks=[])
    assert third.channels == [SLOW_CHANNEL, CHANNEL] and third.height(CHANNEL) == 4


async def test_stop_commits_what_was_accepted_and_leaves_no_task(start_orderer, user1, client_tls, tmp_path) -> None:
    orderer = await start_orderer()
    async with BroadcastClient(orderer.address, user1, tls=client_tls) as client:
        await client.submit_many(SLOW_CHANNEL, [b"pending"] * 3)
    assert orderer.height(SLOW_CHANNEL) == 1  # the slow channel's timeout is an hour

    received: list = []

    async def follow() -> int:
        # A reader waiting for blocks that will never come: stopping must end its stream, not strand it.
        async with grpc.aio.secure_channel(orderer.address, client_tls.credentials()) as channel:
            call = channel.stream_stream(
                "/orderer.AtomicBroadcast/Deliver",
                request_serializer=common_pb2.Envelope.SerializeToString,
                response_deserializer=ab_pb2.DeliverResponse.FromString,
            )()
            await call.write(seek(user1, CHANNEL, at(0), at(MAX_BLOCK_NUMBER)))
            while True:
                reply = await call.read()
                if reply.WhichOneof("Type") == "status":
                    return reply.status
                received.append(reply.block)

    reader = asyncio.create_task(follow())
    await wait_for(lambda: len(received) == 1, what="the reader to get the genesis block")
    await orderer.stop()
    assert await asyncio.wait_for(reader, 10) == Status.SERVICE_UNAVAILABLE
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []
    ledger = Ledger(tmp_path / "ledger.sqlite")
    try:
        assert ledger.height(SLOW_CHANNEL) == 2
        assert payloads_of([common_pb2.Block.FromString(ledger.get_block(SLOW_CHANNEL, 1))]) == [b"pending"] * 3
    finally:
        ledger.close()


async def test_deliver_client_resumes_across_a_restart(start_orderer, user1, user2, client_tls) -> None:
    port = free_port()
    first = await start_orderer(port=port)
    address = first.address
    received: list = []
    client = DeliverClient([address], user2, tls=client_tls, backoff=FAST)

    async def follow() -> None:
        async with contextlib.aclosing(client.deliver(CHANNEL, 0)) as stream:
            async for block in stream:
                received.append(block)

    follower = asyncio.create_task(follow())
    try:
        async with BroadcastClient(address, user1, tls=client_tls) as broadcaster:
            await broadcaster.submit_many(CHANNEL, [b"one"] * MAX_COUNT)
            await wait_for(lambda: len(received) == 2, what="block 1 delivered")
            await first.stop()
            await start_orderer(port=port)
            # The broadcaster's stream died with the first orderer; it reconnects by itself.
            await broadcaster.submit_many(CHANNEL, [b"two"] * (2 * MAX_COUNT))
        await wait_for(lambda: len(received) == 4, what="blocks 2 and 3 delivered after the restart")
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
    assert [b.header.number for b in received] == [0, 1, 2, 3]
    assert payloads_of(received[1:]) == [b"one"] * MAX_COUNT + [b"two"] * (2 * MAX_COUNT)
    assert client.reconnects >= 1


async def test_clients_fail_over_to_the_next_endpoint(start_orderer, user1, client_tls) -> None:
    orderer = await start_orderer()
    dead = f"127.0.0.1:{free_port()}"
    async with BroadcastClient([dead, orderer.address], user1, tls=client_tls) as client:
        await client.submit_many(CHANNEL, [b"failover"] * MAX_COUNT)
        assert client.endpoint == orderer.address
    blocks = await collect(DeliverClient([dead, orderer.address], user1, tls=client_tls, backoff=FAST), CHANNEL, 1, 1)
    assert payloads_of(blocks) == [b"failover"] * MAX_COUNT

    async with BroadcastClient([dead], user1, tls=client_tls, timeout=5) as client:
        with pytest.raises(BroadcastError) as info:
            await client.submit(CHANNEL, b"nowhere")
    assert info.value.status == Status.SERVICE_UNAVAILABLE
    assert dead in info.value.info


async def test_deliver_client_rejects_blocks_its_verifier_refuses(start_orderer, user1, client_tls) -> None:
    orderer = await start_orderer()
    seen: list[int] = []

    def verify(block: common_pb2.Block) -> None:
        seen.append(block.header.number)
        if len(seen) == 1:
            raise ValueError("first sight is always suspicious")

    client = DeliverClient(orderer.address, user1, tls=client_tls, backoff=FAST, verify=verify)
    blocks = await collect(client, CHANNEL, 0, 0)
    assert [b.header.number for b in blocks] == [0]
    assert seen == [0, 0] and client.reconnects == 1


async def test_deliver_client_stops_at_its_stop(start_orderer, user1, client_tls) -> None:
    orderer = await start_orderer()
    client = DeliverClient(orderer.address, user1, tls=client_tls)
    async with asyncio.timeout(10):
        blocks = [b async for b in client.deliver(CHANNEL, 0, stop=0)]
    assert [b.header.number for b in blocks] == [0]
    assert MAX_BLOCK_NUMBER == 2**64 - 1


async def test_start_errors(tmp_path, orderer_identity, user1, genesis, slow_channel_config, server_tls) -> None:
    async def fails(fragment: str, signer=orderer_identity, ledger: str = "ledger.sqlite", **kwargs) -> None:
        orderer = Orderer(signer, Ledger(tmp_path / ledger), close_ledger=True, **kwargs)
        with pytest.raises(OrdererError, match=fragment):
            await orderer.start()

    await fails("no channels")
    await fails("genesis block: not a block", genesis_blocks=[b"\xff\xff"])
    await fails("MSP ID Org1MSP is not one of its orderer orgs", signer=user1, genesis_blocks=[genesis])

    async with Orderer(orderer_identity, Ledger(tmp_path / "ledger.sqlite"), genesis_blocks=[genesis]) as running:
        await fails(
            "cannot listen on .*in use", ledger="other.sqlite", genesis_blocks=[genesis], listen_address=running.address
        )
        # two orderers on one ledger: refused, naming the holder
        await fails(f"is in use by another rumor orderer \\(PID {os.getpid()}\\)", genesis_blocks=[genesis])

    # Same channel name, different genesis block: the ledger's block 0 wins, and the mismatch is an error.
    other = cc.genesis_block(
        cc.channel_config(CHANNEL, list(slow_channel_config.orgs), list(slow_channel_config.orderer_orgs)),
        orderer_identity,
    ).SerializeToString()
    await fails("genesis block given differs from block 0", genesis_blocks=[other])
    await fails("more than one genesis block", genesis_blocks=[genesis, genesis])


async def test_seek_requests_are_bound_to_the_clients_tls_certificate(start_orderer, material, user1) -> None:
    """Under mutual TLS, Fabric's rule: the seek names the SHA-256 of the client's TLS certificate."""
    node = material.orderers[0]
    peer = material.org("Org1MSP").nodes[0]
    tls = ServerTLS.from_files(
        node.tls_cert, node.tls_key, [material.org("Org1MSP").tlsca_cert], client_auth_required=True
    )
    orderer = await start_orderer(tls=tls)
    client = ClientTLS.from_files([node.tls_ca_cert], peer.tls_cert, peer.tls_key)
    wrong = cc.new_envelope(
        user1, CHANNEL, common_pb2.DELIVER_SEEK_INFO,
        ab_pb2.SeekInfo(start=at(0), stop=at(0)).SerializeToString(), tls_cert_hash=b"\x00" * 32,
    )  # fmt: skip
    assert (await raw_deliver(orderer.address, client, wrong))[1] == Status.FORBIDDEN
    missing = seek(user1, CHANNEL, at(0), at(0))
    assert (await raw_deliver(orderer.address, client, missing))[1] == Status.FORBIDDEN
    bound = cc.new_envelope(
        user1, CHANNEL, common_pb2.DELIVER_SEEK_INFO,
        ab_pb2.SeekInfo(start=at(0), stop=at(0)).SerializeToString(), tls_cert_hash=client.cert_hash,
    )  # fmt: skip
    blocks, status = await raw_deliver(orderer.address, client, bound)
    assert (status, len(blocks)) == (Status.SUCCESS, 1)
    # DeliverClient binds its requests by itself
    assert [
        b.header.number for b in await collect(DeliverClient(orderer.address, user1, tls=client), CHANNEL, 0, 0)
    ] == [0]
