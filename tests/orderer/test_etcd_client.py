"""The etcd client against a member played in this process by a grpc.aio server: how its streams fail.

No etcd needed: the member here does only what a test needs of it, as etcd's API describes it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from rumor.orderer import etcd
from rumor.orderer.etcd import EtcdClient, EtcdUnavailable
from rumor.wire.pb.etcdserverpb import rpc_pb2 as pb
from rumor.wire.pb.etcdserverpb import rpc_pb2_grpc as pb_grpc

TTL = 5


class _LeaderlessMember(pb_grpc.LeaseServicer):
    """Answers the first keepalive of a stream, then ends the stream as an etcd member does once it has been
    without a leader for a few election timeouts (it ends every stream opened with "hasleader")."""

    async def LeaseKeepAlive(
        self, requests: AsyncIterator[pb.LeaseKeepAliveRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.LeaseKeepAliveResponse]:
        async for request in requests:
            yield pb.LeaseKeepAliveResponse(ID=request.ID, TTL=TTL)
            break
        await context.abort(grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader")


@pytest.fixture
async def leaderless_member() -> AsyncIterator[str]:
    server = grpc.aio.server()
    pb_grpc.add_LeaseServicer_to_server(_LeaderlessMember(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


async def test_a_keepalive_stream_the_member_ended_between_two_requests_is_etcd_unavailable(
    leaderless_member: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The stream's call, to wait for its end on the client's side too.
    calls: list[grpc.aio.StreamStreamCall] = []

    class RecordingStub(pb_grpc.LeaseStub):
        def __init__(self, channel: grpc.aio.Channel) -> None:
            super().__init__(channel)
            keepalive = self.LeaseKeepAlive

            def record(**kwargs: object) -> grpc.aio.StreamStreamCall:
                call = keepalive(**kwargs)
                calls.append(call)
                return call

            self.LeaseKeepAlive = record

    monkeypatch.setattr(etcd.pb_grpc, "LeaseStub", RecordingStub)
    client = EtcdClient([leaderless_member], request_timeout=5)
    stream = client.keepalive(lease=7, ttl=1)
    try:
        assert await anext(stream) == TTL
        # The member has ended the stream before the client's next request: grpc.aio refuses that write with
        # InvalidStateError, which once went through keepalive() and ended the orderer's lease task.
        assert await calls[0].code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(EtcdUnavailable, match="keepalive"):
            await anext(stream)
    finally:
        await stream.aclose()
        await client.close()
