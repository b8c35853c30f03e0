"""Sending and receiving over real gRPC on loopback: acks, subscriptions, bad frames, full queues."""

from __future__ import annotations

import asyncio
import logging

import pytest
from comm_helpers import crypto_service
from polling import wait_for
from test_handshake import RawDialer

from rumor.comm import CommError
from rumor.core.types import RecordingTracer, RemotePeer
from rumor.wire import messages
from rumor.wire.pb.gossip import message_pb2 as pb

ORG1 = "peer0.org1.example.com"
ORG1_B = "peer1.org1.example.com"
ORG2 = "peer0.org2.example.com"


def data(seq: int, size: int = 16) -> pb.Envelope:
    return messages.seal(messages.data_message(b"ch", seq, bytes(size)))


def peer(comm) -> RemotePeer:  # type: ignore[no-untyped-def]
    return RemotePeer(comm.pki_id, comm.endpoint)


async def ack_everything(comm) -> None:  # type: ignore[no-untyped-def]
    async for received in comm.subscribe(lambda m: m.message.nonce != 0):
        comm.ack(received)


async def test_a_thousand_messages_both_ways_with_acks(comms) -> None:  # type: ignore[no-untyped-def]
    a = await comms(ORG1)
    b = await comms(ORG2)
    got_a, got_b = a.subscribe(), b.subscribe()
    ackers = [asyncio.create_task(ack_everything(c)) for c in (a, b)]
    await a.connect(peer(b))
    count = 1000

    async def blast(src, dst) -> list:  # type: ignore[no-untyped-def]
        window = asyncio.Semaphore(100)  # stay within sendBuffSize, acks share the queue

        async def one(i: int):  # type: ignore[no-untyped-def]
            async with window:
                return await src.send_with_ack(messages.data_message(b"ch", i, b"x" * 64), [peer(dst)], 1, 10.0)

        return await asyncio.gather(*(one(i) for i in range(count)))

    results_a, results_b = await asyncio.gather(blast(a, b), blast(b, a))
    for results, dst in ((results_a, b), (results_b, a)):
        assert all(r.acked == (dst.pki_id,) and not r.failed for r in results)

    def seqs(sub) -> set[int]:  # type: ignore[no-untyped-def]
        out = set()
        while (m := sub.get_nowait()) is not None:
            if m.message.HasField("data_msg"):
                out.add(m.message.data_msg.payload.seq_num)
        return out

    assert seqs(got_b) == set(range(count)) and seqs(got_a) == set(range(count))
    for comm in (a, b):
        assert comm.metrics.messages_sent == 2 * count  # its messages and its acks
        assert comm.metrics.messages_received == 2 * count
        assert comm.metrics.overflow_count == 0
    for task in ackers:
        task.cancel()
    assert len(a.connections()) == 1 and len(b.connections()) == 1


async def test_send_with_ack_reports_each_peer(comms) -> None:  # type: ignore[no-untyped-def]
    a = await comms(ORG1, dial_timeout=1.0)
    silent = await comms(ORG2)
    nacker = await comms(ORG1_B)

    async def nack_everything() -> None:
        async for received in nacker.subscribe():
            nacker.ack(received, "no thanks")

    task = asyncio.create_task(nack_everything())
    gone = RemotePeer(b"\x01" * 32, "127.0.0.1:1")  # nothing listens on port 1
    result = await a.send_with_ack(messages.data_message(b"ch", 1, b"x"), [peer(silent), peer(nacker), gone], 3, 0.5)
    assert result.acked == ()
    assert result.failed[nacker.pki_id] == "no thanks"
    assert result.failed[silent.pki_id] == "no acknowledgement within 0.5s"
    assert result.failed[gone.pki_id].startswith("unreachable: ")
    assert result.nack_count == 3
    task.cancel()


async def test_send_with_ack_returns_at_min_ack(comms) -> None:  # type: ignore[no-untyped-def]
    a = await comms(ORG1)
    acker = await comms(ORG2)
    silent = await comms(ORG1_B)
    task = asyncio.create_task(ack_everything(acker))
    await a.connect(peer(silent))
    result = await a.send_with_ack(messages.data_message(b"ch", 1, b"x"), [peer(acker), peer(silent)], 1, 30.0)
    assert result.acked == (acker.pki_id,)
    assert result.unanswered == (silent.pki_id,)
    assert result.failed == {}
    task.cancel()


async def test_subscriptions_demultiplex_and_count_drops_per_kind(comms, files) -> None:  # type: ignore[no-untyped-def]
    a = await comms(ORG1)
    b = await comms(ORG2)
    blocks = b.subscribe(lambda m: m.message.HasField("data_msg"))
    alive = b.subscribe(lambda m: m.message.HasField("alive_msg"), maxsize=2)
    alive_msg = messages.seal(messages.alive(a.endpoint, a.pki_id, 1, 1), crypto_service(files(ORG1)).sign)
    a.send(data(1), [peer(b)])
    for _ in range(5):
        a.send(alive_msg, [peer(b)])
    a.send(data(2), [peer(b)])
    first, second = await blocks.get(), await blocks.get()
    assert [first.message.data_msg.payload.seq_num, second.message.data_msg.payload.seq_num] == [1, 2]
    assert first.sender == a.pki_id and first.sender_identity == a.identity
    assert first.proof is not None and first.sender_endpoint
    assert [(await alive.get()).message.alive_msg.timestamp.seq_num for _ in range(2)] == [1, 1]
    assert b.metrics.subscriber_drops == {"alive_msg": 3}
    assert len(blocks) == 0
    # A closed subscription gets nothing more; iteration ends after what was queued.
    alive.close()
    a.send(alive_msg, [peer(b)])
    a.send(data(3), [peer(b)])
    assert (await blocks.get()).message.data_msg.payload.seq_num == 3
    assert [m async for m in alive] == []


async def test_garbage_frames_do_not_end_the_stream(comms, files) -> None:  # type: ignore[no-untyped-def]
    acceptor = await comms(ORG1)
    sub = acceptor.subscribe()
    dialer = RawDialer(files(ORG2))
    try:
        await dialer.handshake(acceptor.endpoint)
        await wait_for(lambda: acceptor.connection(dialer.mcs.pki_id) is not None)
        await dialer.write(b"\xff\xff\xff\xff")  # not an Envelope
        await dialer.write(pb.Envelope(payload=b"\xff\xff").SerializeToString())  # not a GossipMessage
        await dialer.write(
            pb.Envelope(payload=pb.GossipMessage(tag=messages.EMPTY).SerializeToString()).SerializeToString()
        )
        wrong_tag = messages.data_message(b"ch", 9, b"x")
        wrong_tag.tag = messages.EMPTY
        await dialer.write(messages.seal(wrong_tag).SerializeToString())
        await dialer.write(data(7).SerializeToString())
        received = await asyncio.wait_for(sub.get(), 5)
        assert received.message.data_msg.payload.seq_num == 7 and received.sender == dialer.mcs.pki_id
        assert acceptor.metrics.invalid_frames == {"undecodable": 1, "invalid": 3}
        assert acceptor.connection(dialer.mcs.pki_id) is not None
    finally:
        await dialer.close()


async def test_oversized_frame_is_rejected_and_the_stream_goes_on(comms, files, caplog) -> None:  # type: ignore[no-untyped-def]
    acceptor = await comms(ORG1, max_message_size=64 * 1024)
    sub = acceptor.subscribe()
    dialer = RawDialer(files(ORG2))
    try:
        await dialer.handshake(acceptor.endpoint)
        await wait_for(lambda: acceptor.connection(dialer.mcs.pki_id) is not None)
        await dialer.write(data(1, size=100 * 1024).SerializeToString())
        await dialer.write(data(2).SerializeToString())
        received = await asyncio.wait_for(sub.get(), 5)
        assert received.message.data_msg.payload.seq_num == 2
        assert acceptor.metrics.invalid_frames == {"oversized": 1}
        assert any("exceeds 65536 bytes" in r.getMessage() for r in caplog.records)
        assert acceptor.connection(dialer.mcs.pki_id) is not None
    finally:
        await dialer.close()


async def test_a_peer_that_keeps_sending_garbage_is_disconnected(comms, files, caplog) -> None:  # type: ignore[no-untyped-def]
    acceptor = await comms(ORG1, max_invalid_frames=3)
    dead = acceptor.presumed_dead()
    dialer = RawDialer(files(ORG2))
    try:
        await dialer.handshake(acceptor.endpoint)
        await wait_for(lambda: acceptor.connection(dialer.mcs.pki_id) is not None)
        for _ in range(4):
            await dialer.write(b"\xff\xff\xff\xff")
        assert await dialer.ended()
        await wait_for(lambda: acceptor.connections() == [])
        assert any("disconnecting" in r.getMessage() and "4 invalid messages" in r.getMessage() for r in caplog.records)
        assert len(dead) == 0  # we closed it: not a sign of death
    finally:
        await dialer.close()


async def test_send_to_a_full_queue_drops_counts_and_logs_once(comms, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.WARNING, logger="rumor.comm")
    tracer = RecordingTracer()
    a = await comms(ORG1, send_buff_size=5, tracer=tracer)
    b = await comms(ORG2)
    sub = b.subscribe()
    await a.connect(peer(b))
    # No await between the sends: the writer cannot take anything off the queue meanwhile.
    for i in range(50):
        a.send(data(i), [peer(b)])
    assert a.metrics.overflow_count == 45
    assert a.metrics.dropped["overflow"] == 45
    assert len(tracer.named("dropped")) == 45
    full = [r for r in caplog.records if "is full" in r.getMessage()]
    assert len(full) == 1
    got = [(await sub.get()).message.data_msg.payload.seq_num for _ in range(5)]
    assert got == [0, 1, 2, 3, 4]
    # The burst is over once a message fits again; that is logged with the count.
    await wait_for(lambda: a.queued(b.pki_id) == 0)
    a.send(data(99), [peer(b)])
    assert (await sub.get()).message.data_msg.payload.seq_num == 99
    assert any("45 dropped meanwhile" in r.getMessage() for r in caplog.records)


async def test_send_while_dialing_is_queued_then_delivered_in_order(comms) -> None:  # type: ignore[no-untyped-def]
    a = await comms(ORG1, send_buff_size=10)
    b = await comms(ORG2)
    sub = b.subscribe()
    for i in range(12):
        a.send(data(i), [peer(b)])
    assert a.metrics.overflow_count == 2
    got = [(await sub.get()).message.data_msg.payload.seq_num for _ in range(10)]
    assert got == list(range(10))


async def test_concurrent_close_and_send(comms) -> None:  # type: ignore[no-untyped-def]
    a = await comms(ORG1)
    b = await comms(ORG2)
    sub = b.subscribe()
    await a.connect(peer(b))

    async def sender() -> None:
        for i in range(300):
            a.send(data(i), [peer(b)])
            if i % 10 == 0:
                await asyncio.sleep(0)

    async def closer() -> None:
        for _ in range(5):
            await asyncio.sleep(0)
            a.disconnect(b.pki_id)
            b.disconnect(a.pki_id)

    await asyncio.gather(sender(), closer(), sender())
    # Nothing raised; every message was either written or counted as dropped, and the link works afterwards.
    await a.connect(peer(b))
    await wait_for(lambda: a.metrics.messages_sent + sum(a.metrics.dropped.values()) == 600)
    a.send(data(1000), [peer(b)])

    async def final_arrives() -> None:
        while (await sub.get()).message.data_msg.payload.seq_num != 1000:
            pass

    await asyncio.wait_for(final_arrives(), 10)
    await wait_for(lambda: len(a.connections()) == 1)
    stopping = asyncio.create_task(a.stop())
    a.send(data(1001), [peer(b)])  # racing stop(): dropped, never raised
    await stopping
    a.send(data(1002), [peer(b)])
    assert a.metrics.dropped["stopped"] >= 1
    with pytest.raises(CommError):
        await a.connect(peer(b))


async def test_oversized_send_is_dropped(comms, caplog) -> None:  # type: ignore[no-untyped-def]
    a = await comms(ORG1, max_send_message_size=1024)
    b = await comms(ORG2)
    a.send(data(1, size=4096), [peer(b)])
    assert a.metrics.dropped["oversized"] == 1
    assert a.connections() == []
    assert any("larger than 1024 bytes" in r.getMessage() for r in caplog.records)


async def test_tracer_events_and_metric_names(comms) -> None:  # type: ignore[no-untyped-def]
    tracer = RecordingTracer()
    a = await comms(ORG1, tracer=tracer)
    b = await comms(ORG2)
    sub = a.subscribe()
    a.send(data(1), [peer(b)])
    await wait_for(lambda: b.connection(a.pki_id) is not None)
    b.send(data(2), [peer(a)])
    await sub.get()
    a.disconnect(b.pki_id)
    await wait_for(lambda: tracer.named("disconnected"))
    assert tracer.named("connected")[0]["peer"] == b.pki_id
    assert tracer.named("sent")[0]["peer"] == b.pki_id
    assert tracer.named("received")[0]["kind"] == "data_msg"
    assert "disconnected on request" in str(tracer.named("disconnected")[0]["reason"])
    assert set(a.metrics.as_dict()) >= {"comm_messages_sent", "comm_messages_received", "comm_overflow_count"}
    assert a.metrics.as_dict()["comm_messages_sent"] == 1


async def test_a_flooding_connection_waits_for_the_handler_and_delays_only_itself(comms) -> None:  # type: ignore[no-untyped-def]
    """recvBuffSize: while that many of a connection's messages wait for the peer's handler, the connection is
    not read; the flood is held back by flow control, not dropped, and another peer's messages still arrive."""
    victim = await comms(ORG1, recv_buff_size=5, subscription_buff_size=10_000)
    flooder = await comms(ORG2)
    honest = await comms(ORG1_B)
    handler = victim.subscribe(backpressure=True)
    await flooder.connect(peer(victim))
    await honest.connect(peer(victim))
    count = 150
    for i in range(count):
        flooder.send(data(i), [peer(victim)])
    await wait_for(lambda: flooder.queued_bytes(victim.pki_id) == 0, what="the flood handed to gRPC")
    await wait_for(lambda: len(handler) >= 5, what="the first messages of the flood")
    honest.send(data(10_000), [peer(victim)])
    from_flooder = []

    def honest_arrived() -> bool:
        while (m := handler.get_nowait()) is not None:
            if m.sender == honest.pki_id:
                return True
            from_flooder.append(m.message.data_msg.payload.seq_num)
        return False

    # Reading the queue lets the flood go on, five at a time; the honest message is not stuck behind all of it.
    await wait_for(honest_arrived, what="the honest peer's message")
    assert len(from_flooder) < count, "the honest message waited for the whole flood"
    while len(from_flooder) < count:
        message = await asyncio.wait_for(handler.get(), 10)
        from_flooder.append(message.message.data_msg.payload.seq_num)
    assert from_flooder == list(range(count)), "a held-back message was lost or reordered"
    handler.close()
