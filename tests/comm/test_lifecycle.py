"""Connections coming and going: a killed peer, replacement, simultaneous dials, a clean stop."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from pathlib import Path

import pytest
from comm_helpers import make_comm
from polling import wait_for
from test_messaging import data, peer

from rumor.core.types import RecordingTracer, RemotePeer
from rumor.wire import messages

ORG1 = "peer0.org1.example.com"
ORG2 = "peer0.org2.example.com"
PEER_PROC = Path(__file__).with_name("peer_proc.py")


class PeerProcess:
    """A comm in a subprocess (peer_proc.py), killable with SIGKILL."""

    def __init__(self, files, log_dir: Path) -> None:  # type: ignore[no-untyped-def]
        self.files = files
        self.log_dir = log_dir
        self.proc: asyncio.subprocess.Process | None = None
        self.port = 0
        self.pki_id = b""
        self.runs = 0

    async def start(self, port: int = 0, dial: RemotePeer | None = None) -> None:
        self.runs += 1
        extra = ["--dial", f"{dial.endpoint}:{dial.pki_id.hex()}"] if dial is not None else []
        with open(self.log_dir / f"peer-{self.runs}.log", "wb") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(PEER_PROC),
                str(port),
                "tls",
                *extra,
                *self.files.to_args(),
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
            )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        word, port_text, pki_hex = line.decode().split()
        assert word == "READY", line
        self.port, self.pki_id = int(port_text), bytes.fromhex(pki_hex)

    @property
    def remote(self) -> RemotePeer:
        return RemotePeer(self.pki_id, f"127.0.0.1:{self.port}")

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


@pytest.fixture
async def subprocess_peer(files, tmp_path):  # type: ignore[no-untyped-def]
    proc = PeerProcess(files(ORG2), tmp_path)
    yield proc
    await proc.kill()


async def next_data(sub, timeout: float = 10.0) -> int:  # type: ignore[no-untyped-def]
    while True:
        received = await asyncio.wait_for(sub.get(), timeout)
        if received.message.HasField("data_msg"):
            return int(received.message.data_msg.payload.seq_num)


async def test_killed_peer_is_presumed_dead_and_redialed(comms, subprocess_peer) -> None:  # type: ignore[no-untyped-def]
    a = await comms(ORG1, presumed_dead_grace=0.1)
    dead = a.presumed_dead()
    echoes = a.subscribe()
    await subprocess_peer.start()
    remote = subprocess_peer.remote
    a.send(data(1), [remote])
    assert await next_data(echoes) == 1
    await subprocess_peer.kill()
    assert await asyncio.wait_for(dead.get(), 10) == remote.pki_id
    assert a.connections() == []
    await subprocess_peer.start(port=subprocess_peer.port)  # same port, same identity
    assert subprocess_peer.remote == remote
    a.send(data(2), [remote])  # redials
    assert await next_data(echoes) == 2
    assert [c.pki_id for c in a.connections()] == [remote.pki_id]


async def test_killed_dialer_is_presumed_dead_on_the_accepting_side(comms, subprocess_peer) -> None:  # type: ignore[no-untyped-def]
    a = await comms(ORG1, presumed_dead_grace=0.1)
    dead = a.presumed_dead()
    hello = a.subscribe()
    await subprocess_peer.start(dial=peer(a))
    assert await next_data(hello) == 0
    conn = a.connection(subprocess_peer.pki_id)
    assert conn is not None and not conn.outbound
    await subprocess_peer.kill()
    assert await asyncio.wait_for(dead.get(), 10) == subprocess_peer.pki_id
    assert a.connections() == []


def open_sockets() -> set[str]:
    fd_dir = Path("/proc/self/fd")
    found = set()
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:"):
            found.add(target)
    return found


async def exercise(files) -> None:  # type: ignore[no-untyped-def]
    a = make_comm(files(ORG1))
    b = make_comm(files(ORG2))
    await a.start()
    await b.start()
    sub = b.subscribe()
    dead = a.presumed_dead()
    await a.connect(peer(b))
    await b.handshake(a.endpoint)
    await b.probe(a.endpoint)
    for i in range(50):
        a.send(data(i), [peer(b)])
        b.send(data(i), [peer(a)])
    first = await asyncio.wait_for(sub.get(), 5)
    # A dial still in progress and an unanswered send_with_ack are cut short by stop() too. The dial goes to a
    # loopback listener that never accepts: TCP connects (the kernel's backlog), TLS never starts.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        a.send(data(0), [RemotePeer(b"\x02" * 32, f"127.0.0.1:{silent.getsockname()[1]}")])
        waiting = asyncio.create_task(a.send_with_ack(messages.data_message(b"ch", 5, b"x"), [peer(b)], 1, 30))
        await asyncio.sleep(0)
        await a.stop()
        await b.stop()
    assert (await waiting).failed  # released by stop, not by its timeout
    assert [m async for m in dead] == []  # feeds end with stop
    # The feed ends with stop and keeps what had arrived: an in-order prefix of the 50 sends (how long a prefix
    # depends on how far the sender got before stop, which CPU load decides).
    received = [first, *[m async for m in sub]]
    seqs = [int(m.message.data_msg.payload.seq_num) for m in received if m.message.HasField("data_msg")]
    assert seqs == list(range(len(seqs))) and 1 <= len(seqs) <= 50, seqs


async def test_stop_leaves_no_task_or_socket_behind(files) -> None:  # type: ignore[no-untyped-def]
    await exercise(files)  # once to let gRPC set up whatever it keeps for the process
    tasks_before, sockets_before = asyncio.all_tasks(), open_sockets()
    await exercise(files)
    leftover = [t for t in asyncio.all_tasks() - tasks_before if not t.done()]
    assert leftover == [], [repr(t) for t in leftover]
    if Path("/proc/self/fd").is_dir():
        assert open_sockets() <= sockets_before


async def test_a_new_connection_from_the_same_peer_replaces_the_old(comms) -> None:  # type: ignore[no-untyped-def]
    a = await comms(ORG1, duplicate_window=0.2)
    first = await comms(ORG2, duplicate_window=0.2, presumed_dead_grace=0.1)
    second = await comms(ORG2, duplicate_window=0.2)  # same identity, another process in real life
    first_dead = first.presumed_dead()
    got_first, got_second = first.subscribe(), second.subscribe()
    await first.connect(peer(a))
    await wait_for(lambda: a.connection(first.pki_id) is not None)
    old_endpoint = a.connection(first.pki_id).endpoint
    await second.connect(peer(a))
    await wait_for(lambda: a.connection(first.pki_id).endpoint != old_endpoint)
    a.send(data(1), [RemotePeer(first.pki_id, "unused:1")])
    assert await next_data(got_second) == 1
    assert len(a.connections()) == 1
    # The replaced connection is closed after the window; its far end sees the stream end.
    await wait_for(lambda: first.connections() == [])
    assert await asyncio.wait_for(first_dead.get(), 5) == a.pki_id
    assert len(got_first) == 0


async def test_simultaneous_dials_settle_on_one_connection(comms) -> None:  # type: ignore[no-untyped-def]
    a = await comms(ORG1, duplicate_window=0.3, presumed_dead_grace=0.05)
    b = await comms(ORG2, duplicate_window=0.3, presumed_dead_grace=0.05)
    dead_a, dead_b = a.presumed_dead(), b.presumed_dead()
    sub_a, sub_b = a.subscribe(), b.subscribe()
    await asyncio.gather(a.connect(peer(b)), b.connect(peer(a)))
    # Each side ends with a single live connection, and both picked the same one.
    await wait_for(lambda: len(a._live) == 1 and len(b._live) == 1 and not a._timers and not b._timers)
    (ca,), (cb,) = a.connections(), b.connections()
    assert ca.outbound != cb.outbound
    lower = min(a.pki_id, b.pki_id)
    assert (ca.outbound and a.pki_id == lower) or (cb.outbound and b.pki_id == lower)
    assert len(dead_a) == 0 and len(dead_b) == 0
    a.send(data(1), [peer(b)])
    b.send(data(2), [peer(a)])
    assert await next_data(sub_b) == 1
    assert await next_data(sub_a) == 2


async def test_disconnect_is_not_reported_as_death_locally(comms) -> None:  # type: ignore[no-untyped-def]
    a = await comms(ORG1, presumed_dead_grace=0.05)
    b = await comms(ORG2, presumed_dead_grace=0.05)
    dead_a, dead_b = a.presumed_dead(), b.presumed_dead()
    await a.connect(peer(b))
    await wait_for(lambda: b.connection(a.pki_id) is not None)
    a.disconnect(b.pki_id)
    # b only sees its stream end, which is all a vanished peer looks like from there.
    assert await asyncio.wait_for(dead_b.get(), 5) == a.pki_id
    assert a.connections() == [] and len(dead_a) == 0


@pytest.mark.parametrize("leaving", ["dialer", "acceptor"])
async def test_a_clean_stop_is_a_clean_end_on_the_far_side(comms, caplog, leaving: str) -> None:  # type: ignore[no-untyped-def]
    """Finding: a peer that stopped cleanly cancelled its streams, and the peer it left logged "WARNING ... broken:
    stream cancelled", exactly what a crashed peer looks like. Now the far side sees the stream end, says so at INFO,
    and still presumes the peer gone."""
    traces = RecordingTracer()
    dialer = await comms(ORG1, presumed_dead_grace=0.05, tracer=traces if leaving == "acceptor" else None)
    acceptor = await comms(ORG2, presumed_dead_grace=0.05, tracer=traces if leaving == "dialer" else None)
    await dialer.connect(peer(acceptor))
    await wait_for(lambda: acceptor.connection(dialer.pki_id) is not None)
    gone, staying = (dialer, acceptor) if leaving == "dialer" else (acceptor, dialer)
    dead = staying.presumed_dead()
    caplog.set_level(logging.INFO, "rumor.comm")
    await gone.stop()
    assert await asyncio.wait_for(dead.get(), 5) == gone.pki_id
    assert [f["reason"] for f in traces.named("disconnected")] == ["ended by the remote"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == []


async def test_a_peer_that_stops_reading_is_cut_off_by_the_write_timeout(comms, subprocess_peer, caplog) -> None:  # type: ignore[no-untyped-def]
    """Finding: a peer that never reads held ~2 GB of the victim's memory. Here its process is frozen (SIGSTOP):
    TCP and HTTP/2 windows fill, a write blocks, and after writeTimeout the connection ends."""
    import signal

    a = await comms(ORG1, presumed_dead_grace=0.1, write_timeout=1.0, send_buff_bytes=4 * 1024 * 1024)
    dead = a.presumed_dead()
    echoes = a.subscribe()
    await subprocess_peer.start()
    remote = subprocess_peer.remote
    a.send(data(1), [remote])
    assert await next_data(echoes) == 1
    assert subprocess_peer.proc is not None
    subprocess_peer.proc.send_signal(signal.SIGSTOP)
    try:
        big = data(2, size=256 * 1024)
        for _ in range(200):  # 50 MB offered; at most send_buff_bytes of it is ever queued
            a.send(big, [remote])
            assert a.queued_bytes(remote.pki_id) <= 4 * 1024 * 1024 + len(big.SerializeToString())
            await asyncio.sleep(0)
        assert a.metrics.overflow_count > 0
        assert await asyncio.wait_for(dead.get(), 30) == remote.pki_id
        assert a.connection(remote.pki_id) is None
        assert any("writeTimeout" in r.getMessage() for r in caplog.records)  # ended by the timeout, not otherwise
        assert a.metrics.write_timeouts == 1 and a.metrics.as_dict()["comm_write_timeouts"] == 1
    finally:
        subprocess_peer.proc.send_signal(signal.SIGCONT)
