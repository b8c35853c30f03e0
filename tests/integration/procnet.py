"""Harness of the integration tests: rumor networks of real processes on loopback.

A ``Cluster`` owns one network directory (as ``rumor network init`` writes it) and every process started on
it: ``rumor orderer start``, ``rumor peer start``, ``rumor submit``. Each process runs in a session of its own
(``start_new_session``), so that ``close()`` can kill its whole process group and then prove that no process
of the test is left. Output goes to files beside the network (``DIR/logs``), quoted in failure messages.

Tests wait for conditions (``wait_for``: poll every 0.2 s until a deadline), never for fixed sleeps, and
assert behaviour, never durations. Named uniquely because test directories are not packages.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from polling import wait_for
from rumor_processes import RUMOR, clean_env

from rumor import channelconfig
from rumor.comm import Comm, CommConfig, TLSMaterial
from rumor.crypto.blocks import block_header_hash
from rumor.crypto.identity import load_signing_identity
from rumor.crypto.mcs import X509CryptoService
from rumor.ledger import Ledger
from rumor.ledger.store import check_chain
from rumor.network import NetworkLayout, PeerEntry, apply_gossip_overrides, free_base_port, init_network, load_layout
from rumor.orderer.client import BroadcastClient, DeliverClient, newest_block
from rumor.orderer.netdir import network_target
from rumor.wire.pb.common import common_pb2

FAST_GOSSIP: dict[str, object] = {
    # Fabric's defaults suit networks that live for months: 15 s of grace before the first election, 10 s of
    # leader silence before electing again, 10 s between state-transfer checks, 25 s until a silent peer is
    # dead, 4 s between pull rounds. At those values the suite would spend minutes waiting for timers; the
    # protocol is the same at a second or two, so every test network runs with these shorter timings.
    "aliveTimeInterval": "1s",
    "aliveExpirationTimeout": "6s",
    "reconnectInterval": "2s",
    "pullInterval": "1s",
    "requestStateInfoInterval": "1s",
    "publishStateInfoInterval": "500ms",
    "election.startupGracePeriod": "2s",
    "election.membershipSampleInterval": "500ms",
    "election.leaderAliveThreshold": "3s",
    "election.leaderElectionDuration": "1s",
    "state.checkInterval": "1s",
    "state.responseTimeout": "2s",
}


@dataclass
class Proc:
    """One process started by a cluster; stdout and stderr go to files."""

    name: str
    args: tuple[str, ...]
    popen: subprocess.Popen[bytes]
    out: Path
    err: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def stdout(self) -> str:
        return self.out.read_text(errors="replace") if self.out.exists() else ""

    def stderr(self) -> str:
        return self.err.read_text(errors="replace") if self.err.exists() else ""

    def tail(self, lines: int = 25) -> str:
        text = "\n".join(self.stderr().splitlines()[-lines:])
        return f"--- {self.name} (pid {self.pid}, exit {self.popen.poll()}) stderr tail:\n{text}"

    def send(self, signum: int) -> None:
        if self.running():
            self.popen.send_signal(signum)

    def kill9(self) -> None:
        """SIGKILL the process (its group: nothing of it may outlive it) and reap it."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait()

    async def wait_exit(self, timeout: float) -> int:
        await wait_for(lambda: not self.running(), timeout, f"{self.name} exits", describe=self.tail)
        code = self.popen.returncode
        assert code is not None
        return code


@dataclass
class Cluster:
    """A network directory and the processes of one test on it."""

    layout: NetworkLayout
    http: aiohttp.ClientSession
    procs: list[Proc] = field(default_factory=list)
    running: dict[str, Proc] = field(default_factory=dict)
    wrappers: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """An argv prefix per process name (a peer ID, "orderer"): ``ip netns exec NAME`` puts that node on its host."""
    _count: Iterable[int] = field(default_factory=itertools.count)

    @property
    def root(self) -> Path:
        return self.layout.root

    @property
    def peers(self) -> tuple[PeerEntry, ...]:
        return self.layout.peers

    def peer(self, peer_id: str) -> PeerEntry:
        return next(p for p in self.peers if p.id == peer_id)

    def org_peers(self, org: str) -> list[PeerEntry]:
        return [p for p in self.peers if p.org == org]

    # --- processes -------------------------------------------------------------------------------

    def spawn(self, name: str, *args: str) -> Proc:
        logs = self.root / "logs"
        logs.mkdir(exist_ok=True)
        n = next(self._count)  # type: ignore[call-overload]
        out, err = logs / f"{n:02d}-{name}.out", logs / f"{n:02d}-{name}.err"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            popen = subprocess.Popen(
                [*self.wrappers.get(name, ()), RUMOR, *args], stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL,
                env=clean_env(), cwd=self.root, start_new_session=True,
            )  # fmt: skip
        proc = Proc(name, tuple(args), popen, out, err)
        self.procs.append(proc)
        return proc

    async def _ready(self, proc: Proc, marker: str, timeout: float = 30) -> str:
        def line() -> str | None:
            if not proc.running():
                raise AssertionError(f"{proc.name} exited before it was ready\n{proc.tail()}")
            return next((ln for ln in proc.stdout().splitlines() if ln.startswith(marker)), None)

        return str(await wait_for(line, timeout, f"{proc.name} prints {marker!r}", describe=proc.tail))

    async def start_orderer(self) -> Proc:
        proc = self.spawn("orderer", "orderer", "start", "--config", str(self.layout.orderer_config))
        await self._ready(proc, "orderer ready on")
        self.running["orderer"] = proc
        return proc

    async def start_peer(self, peer: PeerEntry, *, join: Sequence[Path] | None = None) -> Proc:
        """``rumor peer start`` for ``peer``; it joins the channel's genesis block when its org is a member
        (``join`` replaces that list). Returns once the peer printed its ready line."""
        blocks = ([self.layout.genesis] if self.layout.in_channel(peer) else []) if join is None else list(join)
        args = ["peer", "start", "--config", str(peer.config)]
        for block in blocks:
            args += ["--join", str(block)]
        proc = self.spawn(peer.id, *args)
        line = await self._ready(proc, "peer ready on")
        assert line == f"peer ready on {peer.endpoint} (operations on {peer.operations})", line
        self.running[peer.id] = proc
        return proc

    async def start_peers(self, peers: Iterable[PeerEntry] | None = None) -> None:
        # Started one after another: each python process is CPU-bound while it imports.
        for peer in self.peers if peers is None else peers:
            await self.start_peer(peer)

    async def stop(self, name: str, signum: int = signal.SIGTERM, timeout: float = 30) -> None:
        """Stop a process by ``signum``: it must exit on its own with code 0."""
        proc = self.running.pop(name)
        proc.send(signum)
        code = await proc.wait_exit(timeout)
        assert code == 0, proc.tail()
        assert "Traceback" not in proc.stderr(), proc.tail(60)

    def kill9(self, name: str) -> None:
        self.running.pop(name).kill9()

    async def run(self, *args: str, timeout: float = 120) -> str:
        """Run a short ``rumor`` command to its end; it must succeed. Returns its stdout."""
        proc = self.spawn(args[0], *args)
        code = await proc.wait_exit(timeout)
        assert code == 0, f"rumor {' '.join(args)} failed\n{proc.stderr()}"
        return proc.stdout()

    async def submit(
        self, payloads: Sequence[bytes | str] | None = None, *, count: int | None = None, channel: str | None = None
    ) -> None:
        """``rumor submit --network DIR -C CHANNEL``, with the payloads given or ``--count`` generated ones."""
        args = ["submit", "--network", str(self.root), "-C", channel or self.layout.channel]
        if count is not None:
            args += ["--count", str(count), "--size", "64"]
        else:
            args += [p.decode() if isinstance(p, bytes) else p for p in payloads or []]
        await self.run(*args)

    async def close(self) -> None:
        """Kill every process group the cluster started and check that none of their processes is left."""
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.popen.pid, signal.SIGKILL)
        for proc in self.procs:
            proc.popen.wait()
        self.running.clear()
        left = [p.name for p in self.procs if _group_alive(p.popen.pid)]
        assert not left, f"processes left behind: {left}"

    # --- observing -------------------------------------------------------------------------------

    async def status(self, peer: PeerEntry) -> dict[str, Any] | None:
        """The peer's ``GET /api/status``, or None when it does not answer."""
        try:
            async with self.http.get(f"http://{peer.operations}/api/status") as resp:
                if resp.status != 200:
                    return None
                return dict(await resp.json())
        except (TimeoutError, aiohttp.ClientError, OSError):
            return None

    async def health(self, peer: PeerEntry) -> tuple[int, dict[str, Any]] | None:
        """The peer's ``GET /healthz``: (HTTP status, body), or None when it does not answer."""
        try:
            async with self.http.get(f"http://{peer.operations}/healthz") as resp:
                return resp.status, dict(await resp.json())
        except (TimeoutError, aiohttp.ClientError, OSError):
            return None

    async def metric(self, peer: PeerEntry, name: str, **labels: str) -> float:
        """A sample of the peer's Prometheus ``GET /metrics`` (0 when absent)."""
        async with self.http.get(f"http://{peer.operations}/metrics") as resp:
            text = await resp.text()
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        sample = f"{name}{{{want}}}" if want else name
        for line in text.splitlines():
            if line.startswith(sample + " "):
                return float(line.split()[-1])
        return 0.0

    async def statuses(self, peers: Iterable[PeerEntry]) -> dict[str, dict[str, Any] | None]:
        peers = list(peers)
        results = await asyncio.gather(*(self.status(p) for p in peers))
        return {p.id: s for p, s in zip(peers, results, strict=True)}

    async def heights(self, peers: Iterable[PeerEntry], channel: str | None = None) -> dict[str, int | None]:
        channel = channel or self.layout.channel
        out: dict[str, int | None] = {}
        for peer_id, status in (await self.statuses(peers)).items():
            chan = (status or {}).get("channels", {}).get(channel)
            out[peer_id] = None if chan is None else int(chan["height"])
        return out

    async def wait_heights(
        self, peers: Iterable[PeerEntry], height: int, timeout: float, *, channel: str | None = None
    ) -> None:
        peers = list(peers)
        seen: dict[str, int | None] = {}

        async def reached() -> bool:
            seen.update(await self.heights(peers, channel))
            return all(seen[p.id] == height for p in peers)

        await wait_for(reached, timeout, f"height {height} on {[p.id for p in peers]}", describe=lambda: str(seen))

    async def wait_converged(self, peers: Sequence[PeerEntry], timeout: float) -> None:
        """Every peer lists every other as alive, and sees all of them in the channel (StateInfo)."""
        ids = {p.id: p for p in peers}
        seen: dict[str, Any] = {}

        async def converged() -> bool:
            statuses = await self.statuses(peers)
            seen.clear()
            ok = True
            for peer_id, status in statuses.items():
                if status is None:
                    seen[peer_id] = "no answer"
                    ok = False
                    continue
                alive = {m["endpoint"] for m in status["membership"] if m["alive"]}
                others = {p.endpoint for i, p in ids.items() if i != peer_id}
                chan = status["channels"].get(self.layout.channel, {})
                seen[peer_id] = {"missing": sorted(others - alive), "channel peers": chan.get("peers")}
                ok = ok and others <= alive and chan.get("peers") == len(others)
            return ok

        await wait_for(converged, timeout, "membership converged", describe=lambda: str(seen))

    async def leader_of(self, org: str, timeout: float, *, other_than: str | None = None) -> PeerEntry:
        """The one running peer of ``org`` that says it leads (and that every running peer of the org names)."""
        members = [p for p in self.org_peers(org) if p.id in self.running and p.id != other_than]
        seen: dict[str, Any] = {}

        async def single_leader() -> PeerEntry | None:
            statuses = await self.statuses(members)
            chans = {i: (s or {}).get("channels", {}).get(self.layout.channel) for i, s in statuses.items()}
            seen.clear()
            seen.update({i: c and (c["leader"], (c["leader_pki_id"] or "")[:8]) for i, c in chans.items()})
            leaders = [p for p in members if chans[p.id] and chans[p.id]["leader"]]
            if len(leaders) != 1:
                return None
            pki = statuses[leaders[0].id]["pki_id"]  # type: ignore[index]
            return leaders[0] if all(c and c["leader_pki_id"] == pki for c in chans.values()) else None

        return await wait_for(single_leader, timeout, f"one leader of {org}", describe=lambda: str(seen))  # type: ignore[no-any-return]

    def logs(self, lines: int = 15) -> str:
        return "\n".join(p.tail(lines) for p in self.procs if p.name != "submit")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- networks ------------------------------------------------------------------------------------


def make_network(out: Path, *, orgs: int, peers_per_org: int, fast: bool = True, **kwargs: Any) -> NetworkLayout:
    """``init_network`` on a free range of ports, with the short gossip timings unless ``fast`` is off."""
    overrides: dict[str, object] = dict(FAST_GOSSIP) if fast else {}
    overrides.update(kwargs.pop("gossip_overrides", {}) or {})
    base = free_base_port(orgs * peers_per_org)
    return init_network(
        out, orgs=orgs, peers_per_org=peers_per_org, base_port=base, gossip_overrides=overrides, **kwargs
    )


async def rumor_network_init(out: Path, *args: str) -> NetworkLayout:
    """``rumor network init --out OUT ARGS`` as a user types it; the layout it wrote."""
    proc = await asyncio.create_subprocess_exec(
        RUMOR, "network", "init", "--out", str(out), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("RUMOR_")},
    )  # fmt: skip
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    return load_layout(out)


FAST_KEEPALIVE = {
    # Fabric's 60 s + 20 s before a leader finds its connection to the orderer dead would dominate a fault test;
    # the orderer must then accept pings that often (below the peers' interval, so that no ping is a strike).
    "peer.keepalive.deliveryClient.interval": "5s",
    "peer.keepalive.deliveryClient.timeout": "5s",
    "General.Keepalive.ServerMinInterval": "2s",
}


def set_keys(config: Path, keys: Mapping[str, object]) -> None:
    """Set dotted keys (``peer.keepalive.deliveryClient.interval``) in a core.yaml or orderer.yaml in place; keys
    of the other file's sections are skipped, so one mapping serves both. Comment lines at the top are kept."""
    text = config.read_text()
    header = "".join(line + "\n" for line in text.splitlines() if line.startswith("#"))
    tree = yaml.safe_load(text)
    for key, value in keys.items():
        *parents, leaf = key.split(".")
        if parents[0] not in tree:
            continue
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    config.write_text(header + yaml.safe_dump(tree, sort_keys=False, default_flow_style=False, width=1000))


def fast_keepalive(layout: NetworkLayout) -> None:
    """FAST_KEEPALIVE in every core.yaml and in the orderer.yaml of ``layout``."""
    for path in [layout.orderer_config, *(p.config for p in layout.peers)]:
        set_keys(path, FAST_KEEPALIVE)


def speed_up(layout: NetworkLayout, overrides: Mapping[str, object] = FAST_GOSSIP) -> NetworkLayout:
    """Shorten the gossip timings of a network made by the ``rumor network init`` command."""
    for peer in layout.peers:
        apply_gossip_overrides(peer.config, overrides)
    return load_layout(layout.root)


# --- ledgers -------------------------------------------------------------------------------------


def ledger_path(peer: PeerEntry) -> Path:
    return peer.config.parent / "data" / "ledger.sqlite"


def read_chain(peer: PeerEntry, channel: str) -> list[bytes]:
    """The peer's blocks of ``channel`` from its SQLite ledger (the peer must be stopped); the chain is checked."""
    return read_chain_at(ledger_path(peer), channel)


def read_chain_at(path: Path, channel: str) -> list[bytes]:
    """The blocks of ``channel`` in the SQLite ledger at ``path`` (a peer's or the orderer's, its process stopped);
    the chain is checked."""
    ledger = Ledger(path)
    try:
        if channel not in ledger.channels():
            return []
        blocks = list(ledger.iter_blocks(channel))
        assert len(blocks) == ledger.height(channel), f"{path}: ledger height and stored blocks differ"
    finally:
        ledger.close()
    check_chain(channel, 0, b"", blocks)  # raises if a block is missing, out of order or not chained
    return blocks


def ledger_channels(peer: PeerEntry) -> list[str]:
    ledger = Ledger(ledger_path(peer))
    try:
        return ledger.channels()
    finally:
        ledger.close()


def block_hash(raw: bytes) -> bytes:
    return block_header_hash(common_pb2.Block.FromString(raw).header)


def payloads_of(raw: bytes) -> list[bytes]:
    """The application payloads of a block's envelopes."""
    block = common_pb2.Block.FromString(raw)
    return [channelconfig.open_envelope(env).payload.data for env in block.data.data]


def channel_config(layout: NetworkLayout) -> channelconfig.ChannelConfig:
    return channelconfig.read_genesis(layout.genesis.read_bytes())


def crypto_service(
    layout: NetworkLayout, peer: PeerEntry, configs: Sequence[channelconfig.ChannelConfig] = ()
) -> X509CryptoService:
    """An X.509 crypto service signing as ``peer`` that knows the orgs of the channel (and of ``configs``)."""
    configs = [channel_config(layout), *configs]
    signer = load_signing_identity(peer_msp_dir(layout, peer), peer.org)
    mcs = X509CryptoService(signer, channelconfig.org_registry(configs))
    for cfg in configs:
        mcs.register_channel_config(cfg)
    return mcs


def verify_chain(layout: NetworkLayout, blocks: Sequence[bytes]) -> None:
    """Every block of the channel carries a valid signature of the channel's orderer org."""
    mcs = crypto_service(layout, layout.peers[0])
    for number, raw in enumerate(blocks):
        mcs.verify_block(layout.channel, number, raw)


# --- the orderer as the oracle --------------------------------------------------------------------


async def orderer_blocks(
    layout: NetworkLayout, until: Callable[[list[common_pb2.Block]], bool], channel: str | None = None
) -> list[common_pb2.Block]:
    """The orderer's blocks from 0 on, read as a client of the channel (``rumor submit``'s identity), until
    ``until(blocks so far)`` holds."""
    channel = channel or layout.channel
    target = network_target(layout.root, channel)
    client = DeliverClient(target.endpoint, load_signing_identity(target.msp_dir, target.mspid), tls=target.tls)
    out: list[common_pb2.Block] = []
    async with asyncio.timeout(60), contextlib.aclosing(client.deliver(channel, 0)) as blocks:
        async for block in blocks:
            out.append(block)
            if until(out):
                return out
    raise AssertionError("the orderer's stream ended")


async def orderer_height(layout: NetworkLayout, payloads: int, channel: str | None = None) -> int:
    """The height at which the orderer's chain holds ``payloads`` payloads after the genesis block."""

    def enough(blocks: list[common_pb2.Block]) -> bool:
        return sum(len(b.data.data) for b in blocks[1:]) >= payloads

    blocks = await orderer_blocks(layout, enough, channel)
    assert sum(len(b.data.data) for b in blocks[1:]) == payloads
    return len(blocks)


async def orderer_tip(layout: NetworkLayout, channel: str | None = None) -> int:
    """The orderer's height of the channel now (one seek for its newest block)."""
    channel = channel or layout.channel
    target = network_target(layout.root, channel)
    signer = load_signing_identity(target.msp_dir, target.mspid)
    return await newest_block(target.endpoint, signer, channel, tls=target.tls) + 1


async def submit_direct(layout: NetworkLayout, payloads: Sequence[bytes], channel: str | None = None) -> None:
    """Submit from the test process (as ``rumor submit --network`` would), for figures without process start-up."""
    target = network_target(layout.root, channel or layout.channel)
    signer = load_signing_identity(target.msp_dir, target.mspid)
    async with BroadcastClient(target.endpoint, signer, tls=target.tls) as client:
        await client.submit_many(channel or layout.channel, payloads)


class Load:
    """A steady stream of payloads to the orderer from the test process: ``per_round`` every ``pause`` seconds,
    each padded to ``size`` bytes, until ``stop()``. (Cheaper than a ``rumor submit`` process per round, and it
    never runs dry.)"""

    def __init__(self, layout: NetworkLayout, *, per_round: int = 2, pause: float = 0.02, size: int = 0) -> None:
        target = network_target(layout.root, layout.channel)
        signer = load_signing_identity(target.msp_dir, target.mspid)
        self.client = BroadcastClient(target.endpoint, signer, tls=target.tls)
        self.channel = layout.channel
        self.per_round = per_round
        self.pause = pause
        self.size = size
        self.submitted = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def start(self) -> Load:
        self._stopping = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def _run(self) -> None:
        while not self._stopping.is_set():
            batch = [f"load {self.submitted + i} ".encode().ljust(self.size, b".") for i in range(self.per_round)]
            await self.client.submit_many(self.channel, batch)
            self.submitted += len(batch)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.pause):  # the pace of the load, not a synchronization
                    await self._stopping.wait()

    async def stop(self) -> int:
        """Stop after the round in flight; returns how many payloads the orderer accepted."""
        assert self._task is not None
        self._stopping.set()
        try:
            await asyncio.wait_for(self._task, 60)  # a failed submission fails the test here
        finally:
            await self.client.close()
        return self.submitted


# --- a gossip client of the test's own ------------------------------------------------------------


def peer_node_dir(layout: NetworkLayout, peer: PeerEntry) -> Path:
    domain = peer.id.split(".", 1)[1]
    return layout.root / "crypto" / "peerOrganizations" / domain / "peers" / peer.id


def peer_msp_dir(layout: NetworkLayout, peer: PeerEntry) -> Path:
    return peer_node_dir(layout, peer) / "msp"


def peer_tls(layout: NetworkLayout, as_peer: PeerEntry) -> TLSMaterial:
    """The TLS certificate and key of ``as_peer``, trusting the TLS CAs of every peer org."""
    node = peer_node_dir(layout, as_peer)
    roots = sorted((layout.root / "crypto" / "peerOrganizations").glob("*/tlsca/*-cert.pem"))
    return TLSMaterial.from_files(node / "tls" / "server.crt", node / "tls" / "server.key", roots)


def gossip_client(
    layout: NetworkLayout, as_peer: PeerEntry, configs: Sequence[channelconfig.ChannelConfig] = ()
) -> Comm:
    """A bare comm (mutual TLS, gossip handshake) holding the identity of ``as_peer``, which must not run."""
    mcs = crypto_service(layout, as_peer, configs)
    return Comm(CommConfig(listen_address="127.0.0.1:0", tls=peer_tls(layout, as_peer)), mcs, mcs, mcs.identity)
