"""Helpers of the orderer tests (constants, waiting on conditions, identities, raw AtomicBroadcast calls)."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import grpc

from rumor.channelconfig import new_envelope, open_envelope
from rumor.crypto import GeneratedMaterial, SigningIdentity, load_signing_identity
from rumor.orderer import ClientTLS
from rumor.wire.pb.common import common_pb2
from rumor.wire.pb.orderer import ab_pb2

CHANNEL = "testchannel"
SLOW_CHANNEL = "slowchannel"  # its batch timeout is long, so envelopes stay pending
MAX_COUNT = 10
ABSOLUTE_MAX = 64 * 1024


def user(material: GeneratedMaterial, mspid: str, name: str = "User1") -> SigningIdentity:
    org = material.org(mspid)
    return load_signing_identity(next(u for u in org.users if u.name == name).msp_dir, mspid)


def free_port() -> int:
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _channel(address: str, tls: ClientTLS | None) -> grpc.aio.Channel:
    if tls is None:
        return grpc.aio.insecure_channel(address)
    return grpc.aio.secure_channel(address, tls.credentials())


async def raw_broadcast(address: str, tls: ClientTLS | None, items: list[bytes]) -> list[ab_pb2.BroadcastResponse]:
    """Send each item as it is (bytes on the wire, decodable or not) on one Broadcast stream; the answers."""
    async with _channel(address, tls) as channel:
        call = channel.stream_stream(
            "/orderer.AtomicBroadcast/Broadcast",
            request_serializer=lambda b: b,
            response_deserializer=ab_pb2.BroadcastResponse.FromString,
        )()
        replies = []
        async with asyncio.timeout(10):
            for item in items:
                await call.write(item)
                replies.append(await call.read())
        call.cancel()
        return replies


async def raw_deliver(
    address: str, tls: ClientTLS | None, request: common_pb2.Envelope | bytes
) -> tuple[list[common_pb2.Block], int]:
    """One seek request; the blocks received and the closing status."""
    raw = request if isinstance(request, bytes) else request.SerializeToString()
    async with _channel(address, tls) as channel:
        call = channel.stream_stream(
            "/orderer.AtomicBroadcast/Deliver",
            request_serializer=lambda b: b,
            response_deserializer=ab_pb2.DeliverResponse.FromString,
        )()
        blocks: list[common_pb2.Block] = []
        async with asyncio.timeout(10):
            await call.write(raw)
            while True:
                reply = await call.read()
                assert reply is not grpc.aio.EOF, "stream ended without a status"
                if reply.WhichOneof("Type") == "status":
                    call.cancel()
                    return blocks, reply.status
                blocks.append(reply.block)


def seek(
    signer: SigningIdentity,
    channel: str,
    start: ab_pb2.SeekPosition,
    stop: ab_pb2.SeekPosition,
    behavior: int = ab_pb2.SeekInfo.BLOCK_UNTIL_READY,
    **kwargs: object,
) -> common_pb2.Envelope:
    info = ab_pb2.SeekInfo(start=start, stop=stop, behavior=behavior, **kwargs)  # type: ignore[arg-type]
    return new_envelope(signer, channel, common_pb2.DELIVER_SEEK_INFO, info.SerializeToString())


def at(number: int) -> ab_pb2.SeekPosition:
    return ab_pb2.SeekPosition(specified=ab_pb2.SeekSpecified(number=number))


OLDEST = ab_pb2.SeekPosition(oldest=ab_pb2.SeekOldest())
NEWEST = ab_pb2.SeekPosition(newest=ab_pb2.SeekNewest())


def payloads_of(blocks: list[common_pb2.Block]) -> list[bytes]:
    """The data submitted, in block order: each envelope's Payload.data."""
    return [open_envelope(entry).payload.data for block in blocks for entry in block.data.data]
