"""Throughput of one authenticated gossip connection against raw loopback sockets, between two processes.

    python bench/comm.py [--rounds 3] [--small-count 20000] [--large-count 2000]

The parent process sends, a child process receives. Three transports are measured
in the same run, interleaved round by round (A B C A B C ...) so that drifts of the
machine hit all of them alike:

    grpc+tls   rumor.comm: mutual TLS, authenticated handshake done once, then Envelopes over GossipStream
               (send() with pacing on the bounded queue; the receiver decodes and tag-checks every message
               and hands it to a subscription, as a peer does)
    bare grpc  grpc.aio over the same mutual TLS, one bidi stream, the same serialized Envelope written
               with call.write and only counted on the other side: gRPC's own ceiling, without rumor.comm
    raw tcp    asyncio streams, 4-byte length prefix + the same serialized Envelope, receiver only counts
    raw tls    the same over TLS (the standard library's ssl), to separate encryption from gRPC's cost

Each run sends N envelopes of one size, then a marker; the time is from the first send to the
receiver's reply to the marker (so it covers delivery of all N). The table shows the median over
the rounds and the ratio of grpc+tls to raw tcp. With --json PATH it also writes the medians, the machine and
the commit as JSON to PATH, and the table in Markdown beside it (PATH with .md, as bench/report.py renders it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import ssl
import statistics
import struct
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc import aio
from report import comm_markdown  # bench/report.py: this directory is on sys.path when this file runs as a script

from rumor.comm import Comm, CommConfig, TLSMaterial
from rumor.comm.tls import server_credentials
from rumor.core.types import RemotePeer
from rumor.crypto import OrgRegistry, X509CryptoService, default_spec, generate, load_org, load_signing_identity
from rumor.sim import runner
from rumor.wire import messages
from rumor.wire.pb.gossip import message_pb2 as pb

MARKER_SEQ = 2**63
END = 0xFFFFFFFF
HEADER = struct.Struct(">I")
SENDER_HOST = "peer0.org1.example.com"
RECEIVER_HOST = "peer1.org1.example.com"


# --- shared setup ----------------------------------------------------------------------------------


def peer_crypto(root: Path, host: str) -> tuple[X509CryptoService, TLSMaterial, Path]:
    org_dir = root / "peerOrganizations" / "org1.example.com"
    node = org_dir / "peers" / host
    registry = OrgRegistry([load_org(org_dir / "msp", "Org1MSP")])
    mcs = X509CryptoService(load_signing_identity(node / "msp", "Org1MSP"), registry)
    tls_dir = node / "tls"
    tls = TLSMaterial.from_files(tls_dir / "server.crt", tls_dir / "server.key", [tls_dir / "ca.crt"])
    return mcs, tls, tls_dir


def make_comm(root: Path, host: str) -> Comm:
    mcs, tls, _ = peer_crypto(root, host)
    return Comm(CommConfig(tls=tls, listen_address="127.0.0.1:0"), mcs, mcs, mcs.identity)


def envelope(seq: int, size: int) -> pb.Envelope:
    return messages.seal(messages.data_message(b"bench", seq, os.urandom(size)))


# --- receiver (child process) --------------------------------------------------------------------


class CountingProtocol(asyncio.Protocol):
    """Reads length-prefixed frames; answers the end marker with the number of frames seen since the last one."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.count = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        pos = 0
        while len(buf) - pos >= 4:
            (length,) = HEADER.unpack_from(buf, pos)
            if length == END:
                pos += 4
                assert self.transport is not None
                self.transport.write(struct.pack(">Q", self.count))
                self.count = 0
                continue
            if len(buf) - pos - 4 < length:
                break
            pos += 4 + length
            self.count += 1
        del buf[:pos]


async def bare_stream(request_iterator: object, context: aio.ServicerContext) -> None:
    count = 0
    while True:
        frame = await context.read()
        if frame is aio.EOF:
            return
        if frame == b"":
            await context.write(struct.pack(">Q", count))
            count = 0
        else:
            count += 1


async def serve(root: Path) -> None:
    comm = make_comm(root, RECEIVER_HOST)
    await comm.start()
    _, tls_material, tls_dir = peer_crypto(root, RECEIVER_HOST)
    bare = aio.server(options=[("grpc.max_receive_message_length", 8 * 1024 * 1024)])
    handlers = {"Stream": grpc.stream_stream_rpc_method_handler(bare_stream)}
    bare.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Bare", handlers),))
    bare_port = bare.add_secure_port("127.0.0.1:0", server_credentials(tls_material))
    await bare.start()
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tls_dir / "server.crt", tls_dir / "server.key")
    loop = asyncio.get_running_loop()
    tcp = await loop.create_server(CountingProtocol, "127.0.0.1", 0)
    tls = await loop.create_server(CountingProtocol, "127.0.0.1", 0, ssl=server_ctx)
    tcp_port = tcp.sockets[0].getsockname()[1]
    tls_port = tls.sockets[0].getsockname()[1]
    print(f"READY {comm.port} {tcp_port} {tls_port} {bare_port} {comm.pki_id.hex()}", flush=True)
    count = 0
    async for received in comm.subscribe():
        payload = received.message.data_msg.payload
        if payload.seq_num == MARKER_SEQ:
            reply = messages.seal(messages.data_message(b"bench", count, b""))
            comm.send(reply, [RemotePeer(received.sender, received.sender_endpoint)])
            count = 0
        else:
            count += 1


# --- sender (parent process) ---------------------------------------------------------------------


@dataclass
class Result:
    transport: str
    size: int
    count: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    @property
    def mbps(self) -> float:
        return self.count * self.size / self.seconds / 1e6


class GrpcSender:
    name = "grpc+tls"

    def __init__(self, comm: Comm, remote: RemotePeer) -> None:
        self.comm = comm
        self.remote = remote
        self.replies = comm.subscribe()

    async def run(self, frames: list[pb.Envelope], count: int) -> tuple[float, int]:
        comm, remote = self.comm, [self.remote]
        high = comm.config.send_buff_size - 1
        marker = messages.seal(messages.data_message(b"bench", MARKER_SEQ, b""))
        start = time.perf_counter()
        for i in range(count + 1):
            if comm.queued(self.remote.pki_id) >= high:
                await comm.writable(self.remote.pki_id)
            comm.send(frames[i % len(frames)] if i < count else marker, remote)
        reply = await asyncio.wait_for(self.replies.get(), 120)
        return time.perf_counter() - start, int(reply.message.data_msg.payload.seq_num)


class BareGrpcSender:
    name = "bare grpc"

    def __init__(self, endpoint: str, tls: TLSMaterial) -> None:
        creds = grpc.ssl_channel_credentials(tls.root_cas_pem, tls.key_pem, tls.cert_pem)
        self.channel = aio.secure_channel(endpoint, creds, options=[("grpc.max_send_message_length", 8 * 1024 * 1024)])
        self.call = self.channel.stream_stream("/bench.Bare/Stream")()

    async def run(self, frames: list[pb.Envelope], count: int) -> tuple[float, int]:
        call = self.call
        start = time.perf_counter()
        for i in range(count):
            await call.write(frames[i % len(frames)].SerializeToString())
        await call.write(b"")
        (received,) = struct.unpack(">Q", await call.read())
        return time.perf_counter() - start, received


class StreamSender:
    def __init__(self, name: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.name = name
        self.reader = reader
        self.writer = writer

    async def run(self, frames: list[pb.Envelope], count: int) -> tuple[float, int]:
        writer = self.writer
        start = time.perf_counter()
        for i in range(count):
            data = frames[i % len(frames)].SerializeToString()  # the same encoding work the comm path does
            writer.write(HEADER.pack(len(data)))
            writer.write(data)
            if i % 32 == 31:
                await writer.drain()
        writer.write(HEADER.pack(END))
        await writer.drain()
        (received,) = struct.unpack(">Q", await self.reader.readexactly(8))
        return time.perf_counter() - start, received


def machine() -> str:
    """Cores and CPU model as the other benchmarks name them, then Python and the OS."""
    return f"{runner.machine()}; Python {platform.python_version()}, {platform.system()}"


def commit() -> str:
    return runner.git_commit(Path(__file__).resolve().parent)


def decode_cost(size: int, repeat: int) -> float:
    """Microseconds to decode and tag-check one envelope of ``size`` (what the receiver does per message)."""
    data = envelope(1, size).SerializeToString()
    start = time.perf_counter()
    for _ in range(repeat):
        messages.open_envelope(pb.Envelope.FromString(data))
    return (time.perf_counter() - start) / repeat * 1e6


async def bench(args: argparse.Namespace, root: Path) -> None:
    with open(os.environ.get("BENCH_CHILD_LOG", os.devnull), "wb") as child_log:
        child = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--serve", str(root), stdout=asyncio.subprocess.PIPE, stderr=child_log
        )
    try:
        assert child.stdout is not None
        line = (await asyncio.wait_for(child.stdout.readline(), 60)).decode().split()
        assert line[0] == "READY", line
        grpc_port, tcp_port, tls_port, bare_port = (int(x) for x in line[1:5])
        pki_hex = line[5]
        comm = make_comm(root, SENDER_HOST)
        await comm.start()
        remote = RemotePeer(bytes.fromhex(pki_hex), f"127.0.0.1:{grpc_port}")
        await comm.connect(remote)  # the authenticated TLS handshake, once
        _, tls_material, tls_dir = peer_crypto(root, SENDER_HOST)
        client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client_ctx.load_verify_locations(tls_dir / "ca.crt")
        client_ctx.load_cert_chain(tls_dir / "server.crt", tls_dir / "server.key")
        bare = BareGrpcSender(f"127.0.0.1:{bare_port}", tls_material)
        senders: list[GrpcSender | BareGrpcSender | StreamSender] = [GrpcSender(comm, remote), bare]
        senders.append(StreamSender("raw tcp", *await asyncio.open_connection("127.0.0.1", tcp_port)))
        senders.append(
            StreamSender(
                "raw tls",
                *await asyncio.open_connection("127.0.0.1", tls_port, ssl=client_ctx, server_hostname="127.0.0.1"),
            )
        )
        results: list[Result] = []
        for size, count in ((1024, args.small_count), (100 * 1024, args.large_count)):
            frames = [envelope(i, size) for i in range(16)]
            wire_size = len(frames[0].SerializeToString())
            for sender in senders:  # warm-up
                await sender.run(frames, max(1, count // 10))
            for _ in range(args.rounds):
                for sender in senders:
                    seconds, received = await sender.run(frames, count)
                    if received != count:
                        raise SystemExit(f"{sender.name}: receiver saw {received} of {count} messages")
                    results.append(Result(sender.name, wire_size, count, seconds))
        await comm.stop()
        await bare.channel.close()
        for sender in senders[2:]:
            sender.writer.close()  # type: ignore[union-attr]
        report(results, args)
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()


def report(results: list[Result], args: argparse.Namespace) -> None:
    print(f"machine: {machine()}; commit {commit()}")
    print(f"median of {args.rounds} interleaved rounds; one connection per transport; sender and receiver are")
    print("separate processes\n")
    print(f"{'envelope':>10}  {'transport':<10} {'messages':>9} {'msgs/s':>10} {'MB/s':>9}  {'vs raw tcp':>10}")
    sizes = sorted({r.size for r in results})
    table: list[dict[str, object]] = []
    for size in sizes:
        medians: dict[str, tuple[float, float, int]] = {}
        for name in ("grpc+tls", "bare grpc", "raw tcp", "raw tls"):
            runs = [r for r in results if r.size == size and r.transport == name]
            medians[name] = (
                statistics.median(r.rate for r in runs),
                statistics.median(r.mbps for r in runs),
                runs[0].count,
            )
        base = medians["raw tcp"][0]
        for name, (rate, mbps, count) in medians.items():
            print(f"{size:>9}B  {name:<10} {count:>9} {rate:>10.0f} {mbps:>9.1f}  {rate / base:>9.2f}x")
            table.append(
                {"envelope_bytes": size, "transport": name, "messages": count, "msgs_per_s": round(rate),
                 "mb_per_s": round(mbps, 2), "vs_raw_tcp": round(rate / base, 3)}
            )  # fmt: skip
        print()
    decode = {size: decode_cost(size - 30, 2000) for size in sizes}
    for size in sizes:
        print(f"decode + tag check of one {size}-byte envelope: {decode[size]:.1f} µs")
    if args.json:
        out = {
            "figure": 9,
            "machine": machine(),
            "commit": commit(),
            "rounds": args.rounds,
            "medians": table,
            "decode_us": {str(k): round(v, 2) for k, v in decode.items()},
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
        markdown = Path(args.json).with_suffix(".md")
        markdown.write_text(comm_markdown(out) + "\n")
        print(f"wrote {args.json} and {markdown}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--small-count", type=int, default=20000, help="messages per run at 1 KB")
    parser.add_argument("--large-count", type=int, default=2000, help="messages per run at 100 KB")
    parser.add_argument("--json", metavar="PATH", help="also write the medians as JSON to PATH")
    parser.add_argument("--serve", metavar="MATERIAL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(Path(args.serve)))
        return
    with tempfile.TemporaryDirectory(prefix="rumor-bench-") as tmp:
        root = Path(tmp) / "crypto-config"
        generate(default_spec(1, 2), root)
        asyncio.run(bench(args, root))


if __name__ == "__main__":
    main()
