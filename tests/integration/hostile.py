"""A hostile but authenticated peer, and a watch on its victim, for the integration tests and bench/soak.py.

``HostilePeer`` is a bare ``rumor.comm.Comm`` holding a valid identity of the network (a peer of an org whose
certificate ``network init`` wrote, whose process does not run). It takes part in membership just enough to be
asked things: it sends its signed alive message (identity included) and, when told to, a signed StateInfo to
its targets, and answers membership requests with its own alive message. What it answers to a membership
request or a state request is up to the caller (``answer_membership`` / ``answer_state``): that is where the
attacks go. ``SilentStream`` is a gossip stream opened and authenticated as Comm opens one, on which the
attacker writes and never reads: the victim's answers pile up on its side of the connection. The payloads of
the adversarial pass's findings are built by ``forged_alive_flood`` (finding 1) and ``unknown_peers_flood``
(finding 2).

``Watch`` samples the victim while an attack runs: ``GET /healthz`` and its resident memory (VmRSS). A victim
growing past the watch's memory limit is killed at once (the machine is shared; a peer growing to gigabytes
would starve the other tests) and the breach recorded for the test to fail on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from grpc import aio
from polling import wait_for
from procnet import Cluster, crypto_service, peer_tls

from rumor.comm import Comm, CommConfig
from rumor.comm import tls as tlsmod
from rumor.comm.comm import GOSSIP_STREAM
from rumor.comm.handshake import conn_establish_envelope
from rumor.core.channel import channel_mac
from rumor.core.types import ReceivedMessage, RemotePeer
from rumor.network import NetworkLayout, PeerEntry
from rumor.wire import messages
from rumor.wire.pb.gossip import message_pb2 as pb

Answer = Callable[[ReceivedMessage], pb.GossipMessage | None]
"""What the hostile peer sends back to a request (None: nothing)."""


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MiB (VmRSS of /proc/PID/status); 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0.0


class HostilePeer:
    """An authenticated gossip peer of the test's own that attacks the peers it targets (see the module)."""

    def __init__(self, layout: NetworkLayout, as_peer: PeerEntry, *, heartbeat: float = 0.5) -> None:
        self.layout = layout
        self.channel = layout.channel
        self.mcs = crypto_service(layout, as_peer)
        # An attacker queues what it likes: room for several of the findings' 15 MB responses at once.
        config = CommConfig(listen_address="127.0.0.1:0", tls=peer_tls(layout, as_peer), send_buff_bytes=256 * 2**20)
        self.comm = Comm(config, self.mcs, self.mcs, self.mcs.identity)
        self.pki_id = self.comm.pki_id
        self.heartbeat = heartbeat
        self.targets: list[RemotePeer] = []
        self.received: Counter[str] = Counter()
        """Messages received, by kind (from the targets and from the peers they told about us)."""
        self.received_from: Counter[tuple[bytes, str]] = Counter()
        """Messages received, by sender's PKI-ID and kind."""
        self.alive_of: dict[bytes, pb.Envelope] = {}
        """The latest alive message received of each peer (one per peer: what a replay attack would resend)."""
        self.last_block: pb.GossipMessage | None = None
        """The newest data message received (a real block, signed by the orderer)."""
        self.state_height: int | None = None
        """When set, a StateInfo claiming this ledger height goes to the targets with every heartbeat."""
        self.answer_membership: Answer = self.honest_membership_answer
        self.answer_state: Answer = lambda _msg: None
        self._inc_num = time.time_ns()
        self._seq = 0
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def endpoint(self) -> str:
        return self.comm.endpoint

    async def start(self) -> HostilePeer:
        await self.comm.start()
        sub = self.comm.subscribe()
        self._tasks = [asyncio.create_task(self._serve(sub)), asyncio.create_task(self._beat())]
        return self

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.comm.stop()

    async def __aenter__(self) -> HostilePeer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- taking part ------------------------------------------------------------------------------

    async def meet(self, cluster: Cluster, victim: PeerEntry, timeout: float = 30) -> RemotePeer:
        """Add ``victim`` to the targets and wait until it lists this peer alive; returns the victim."""
        status = await cluster.status(victim)
        assert status is not None, f"{victim.id} does not answer"
        target = RemotePeer(bytes.fromhex(status["pki_id"]), victim.endpoint)
        self.targets.append(target)
        self._send_heartbeat()

        async def listed_alive() -> bool:
            status = await cluster.status(victim)
            return any(m["pki_id"] == self.pki_id.hex() and m["alive"] for m in (status or {}).get("membership", ()))

        await wait_for(listed_alive, timeout, f"{victim.id} lists the hostile peer alive")
        return target

    def alive_envelope(self) -> pb.Envelope:
        """Our next signed alive message, with our identity (the victim can check it without asking anyone)."""
        self._seq += 1
        msg = messages.alive(self.endpoint, self.pki_id, self._inc_num, self._seq, identity=self.mcs.identity)
        return messages.seal(msg, self.mcs.sign)

    def state_info_envelope(self, height: int) -> pb.Envelope:
        self._seq += 1
        mac = channel_mac(self.pki_id, self.channel)
        return messages.seal(messages.state_info(mac, self.pki_id, self._inc_num, self._seq, height), self.mcs.sign)

    def honest_membership_answer(self, msg: ReceivedMessage) -> pb.GossipMessage:
        return messages.membership_response([self.alive_envelope()], [], nonce=msg.message.nonce)

    def send(self, envelope: pb.Envelope, to: Iterable[RemotePeer] | None = None) -> None:
        self.comm.send(envelope, self.targets if to is None else to)

    def _send_heartbeat(self) -> None:
        if not self.targets:
            return
        self.send(self.alive_envelope())
        if self.state_height is not None:
            self.send(self.state_info_envelope(self.state_height))

    async def _beat(self) -> None:
        while True:
            self._send_heartbeat()
            await asyncio.sleep(self.heartbeat)  # the pace of our heartbeats, not a synchronization

    async def _serve(self, sub: Any) -> None:
        async for msg in sub:
            kind = msg.message.WhichOneof("content") or ""
            self.received[kind] += 1
            self.received_from[msg.sender, kind] += 1
            if kind == "alive_msg":
                self.alive_of[msg.message.alive_msg.membership.pki_id] = msg.envelope
                continue
            if kind == "data_msg":
                self.last_block = msg.message
                continue
            if kind == "mem_req":
                answer = self.answer_membership(msg)
            elif kind == "state_request":
                answer = self.answer_state(msg)
            else:
                continue
            if answer is not None:
                self.comm.send(messages.seal(answer), [RemotePeer(msg.sender, msg.sender_endpoint)])


def answer_next(
    peer: HostilePeer, victim: RemotePeer, build: Callable[[int], pb.GossipMessage], count: int = 1
) -> asyncio.Future[int]:
    """Answer ``victim``'s next ``count`` membership requests with ``build(nonce)``, everyone else's (the victim
    forwards our alive message, so its peers ask us too) and any later ones honestly. The future is done (with
    the last nonce) once all ``count`` answers went out."""
    done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    left = [count]

    def answer(msg: ReceivedMessage) -> pb.GossipMessage:
        if left[0] == 0 or msg.sender != victim.pki_id:
            return peer.honest_membership_answer(msg)
        left[0] -= 1
        if left[0] == 0 and not done.done():
            done.set_result(msg.message.nonce)
        return build(msg.message.nonce)

    peer.answer_membership = answer
    return done


# --- the findings' payloads ------------------------------------------------------------------------


def forged_alive_flood(claimed: RemotePeer, count: int, wrong_signature: bytes) -> pb.MembershipResponse:
    """Finding 1: ``count`` alive messages claiming ``claimed``'s PKI-ID, each newer than the last, all carrying
    ``wrong_signature`` (a well-formed ECDSA signature of other bytes: each costs the victim a full check)."""
    inc = time.time_ns()
    response = pb.MembershipResponse()
    for seq in range(1, count + 1):
        msg = messages.alive(claimed.endpoint, claimed.pki_id, inc, seq)
        response.alive.append(pb.Envelope(payload=msg.SerializeToString(), signature=wrong_signature))
    return response


def unknown_peers_flood(count: int, port: int) -> pb.MembershipResponse:
    """Finding 2: ``count`` alive messages of random PKI-IDs without identity or valid signature, each naming an
    endpoint of its own. The finding's were 127.0.0.1:20000+i; here 127.77.x.y:``port`` (all loopback, where
    nothing listens) so that the victim's dials cannot reach another test's peers."""
    response = pb.MembershipResponse()
    for i in range(count):
        endpoint = f"127.77.{i // 250}.{i % 250 + 1}:{port}"
        msg = messages.alive(endpoint, secrets.token_bytes(32), time.time_ns(), 1)
        response.alive.append(pb.Envelope(payload=msg.SerializeToString(), signature=secrets.token_bytes(70)))
    return response


# --- a stream that is never read -------------------------------------------------------------------


class SilentStream:
    """A GossipStream to ``endpoint`` authenticated with ``as_peer``'s identity (as Comm dials), on which we only
    write. gRPC grants the remote no more flow-control window than we read, and we read nothing after the
    handshake, so whatever the victim answers stays queued on its side."""

    def __init__(self, channel: aio.Channel, call: Any) -> None:
        self._channel = channel
        self._call = call

    @classmethod
    async def open(cls, layout: NetworkLayout, as_peer: PeerEntry, endpoint: str, timeout: float = 10) -> SilentStream:
        tls = peer_tls(layout, as_peer)
        mcs = crypto_service(layout, as_peer)
        server_der = await tlsmod.fetch_server_certificate(endpoint, tlsmod.client_ssl_context(tls), "", timeout)
        channel = aio.secure_channel(endpoint, tlsmod.pinned_channel_credentials(tls, server_der))
        call = channel.stream_stream(GOSSIP_STREAM)()
        pki_id = mcs.pki_id_of(mcs.identity)
        hello = conn_establish_envelope(pki_id, mcs.identity, tlsmod.own_client_cert_hash(tls), mcs.sign)
        async with asyncio.timeout(timeout):
            await call.write(hello.SerializeToString())
            theirs = await call.read()  # the victim's ConnEstablish: the only frame we ever read
        assert theirs is not aio.EOF, "the victim refused the handshake"
        return cls(channel, call)

    async def write(self, envelope: pb.Envelope) -> None:
        await self._call.write(envelope.SerializeToString())

    async def close(self) -> None:
        self._call.cancel()
        await self._channel.close()


# --- watching the victim ---------------------------------------------------------------------------


@dataclass
class Watch:
    """Samples a peer every ``interval`` while in use: its /healthz (each probe must answer 200 within
    ``health_timeout``) and its VmRSS; past ``limit_mb`` the peer is killed and the breach recorded."""

    http: aiohttp.ClientSession
    peer: PeerEntry
    pid: int
    limit_mb: float
    interval: float = 0.25
    health_timeout: float = 5.0
    health_ok: int = 0
    health_failures: list[str] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)
    breach: str | None = None
    _task: asyncio.Task[None] | None = None

    @property
    def peak_mb(self) -> float:
        return max(self.rss, default=0.0)

    async def __aenter__(self) -> Watch:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        if exc is not None and self.breach is not None:
            # The attack failed the test by killing the victim's memory bound: say so, not what failed after.
            raise AssertionError(self.breach) from exc

    async def _run(self) -> None:
        url = f"http://{self.peer.operations}/healthz"
        timeout = aiohttp.ClientTimeout(total=self.health_timeout)
        while True:
            mb = rss_mb(self.pid)
            self.rss.append(mb)
            if mb > self.limit_mb and self.breach is None:
                self.breach = f"{self.peer.id} reached {mb:.0f} MiB (limit {self.limit_mb:.0f} MiB): killed"
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
            try:
                async with self.http.get(url, timeout=timeout) as resp:
                    if resp.status == 200:
                        self.health_ok += 1
                    else:
                        self.health_failures.append(f"HTTP {resp.status}")
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                self.health_failures.append(type(exc).__name__)
            await asyncio.sleep(self.interval)  # the sampling period, not a synchronization

    def check(self) -> None:
        """Fail if the victim broke its memory bound or missed a health probe (call at the end of the attack)."""
        assert self.breach is None, self.breach
        assert self.health_ok > 0, "no health probe was answered"
        assert not self.health_failures, f"{len(self.health_failures)} health probes failed: {self.health_failures[:5]}"

    def describe(self) -> str:
        start = self.rss[0] if self.rss else 0.0
        probes = f"{self.health_ok} health probes answered, failures {self.health_failures}"
        return f"RSS {start:.0f} MiB at start, peak {self.peak_mb:.0f} MiB, {probes}"
