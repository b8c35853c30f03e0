"""Run a scenario on the simulator and measure figures 1-4 (defined in bench/results/README.md, "The figures").

    build a Cluster (one channel, peer0 of each org its static leader, the others followers)
    warm up until every peer knows every other one alive and in the channel (or for ``warmup``)
    every block_interval: the ordering service cuts a block and hands it to the leaders   <- time zero of the block
    the scenario's events (crash, restart, partition, heal) at their times
    after the last block: run until every peer that is up holds every block, or ``drain`` passes

What is observed, and how (nothing is inferred from logs):

    receive time   the tracer's ``block_received`` event (push or pull), or the commit of a block that came
                   by state transfer; the first of these per peer and block
    commit time    the peer's Committed effect
    bytes          every message that leaves a peer (SimNetwork.on_transmit), by kind; payload bytes are the
                   wire bytes of the messages that carry whole blocks (data messages, pull updates of blocks,
                   state-transfer responses)
    copies         every whole block that arrives at a peer (SimNetwork.on_receive)

Receivers of a block are the peers up at the end of the run that do not lead an org (the leaders hold the
block at time zero). A receiver that never got a block leaves that block incomplete (no time to all).
"""

from __future__ import annotations

import math
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rumor.config import StateConfig
from rumor.core.types import Committed, ReceivedMessage
from rumor.sim.cluster import Cluster, SimPeerSpec
from rumor.sim.network import SimPeer
from rumor.sim.scenario import Scenario, gossip_config
from rumor.wire import messages as wire
from rumor.wire.pb.gossip import message_pb2 as pb

CHANNEL = "simchannel"
BOOTSTRAP_PEERS = 2
MIN_WARMUP = 5.0
"""Virtual seconds before the first block at least, with ``warmup: auto``."""

QUIET_BACKLOG = 0.05
"""Warm-up goes on while some peer still has more than this many seconds of sends queued on its uplink."""

BLOCK_KINDS = frozenset({"data_msg", "data_update", "state_response"})


@dataclass(frozen=True)
class RunProgress:
    """Where one run stands: what ``run_scenario`` and ``run_modes`` hand their ``progress`` callback.

    ``phase`` is one of PHASES; ``blocks_cut`` of ``blocks`` have been cut so far; ``note`` is a remark worth a
    line of its own (a warm-up that ended before membership converged), else empty. ``wall_s`` is the wall time
    since the run began; ``eta_s`` the wall time the remaining blocks should take at the rate of those cut so far
    (None before the first).
    """

    mode: str
    phase: str
    blocks_cut: int
    blocks: int
    wall_s: float
    eta_s: float | None = None
    note: str = ""


PHASES = ("building", "warming up", "blocks", "draining", "done")

Progress = Callable[[RunProgress], None]


def machine() -> str:
    """Cores and CPU model of this machine, e.g. '2 cores, AMD EPYC'."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return f"{os.cpu_count()} cores, {model}"


def git_commit(path: Path | None = None) -> str:
    """The commit of the working tree (with '+dirty' when it has changes), or 'unknown'.

    Changes under bench/results do not count: the benchmarks write their results there as they go.
    """
    where = path or Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=where, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ":(top)", ":(top,exclude)bench/results"],
            cwd=where,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) of ``values`` by linear interpolation; nan when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q / 100
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


class _PeerTracer:
    """Keeps only what the figures need from one peer's tracer events."""

    __slots__ = ("first", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.first: dict[int, tuple[float, str]] = {}

    def event(self, name: str, now: float, **fields: object) -> None:
        if name == "block_received":
            seq = fields["seq_num"]
            assert isinstance(seq, int)
            if seq not in self.first:
                self.first[seq] = (now, str(fields.get("via", "push")))


@dataclass
class BlockFigures:
    seq: int
    t0: float
    wire_size: int
    latencies: list[float]
    missing: int
    pushed: int
    advertised: int
    pulled: int
    transferred: int

    @property
    def time_to_all(self) -> float | None:
        return max(self.latencies, default=0.0) if self.missing == 0 else None


@dataclass
class SimResult:
    """The figures of one run (one mode) of a scenario."""

    scenario: Scenario
    mode: str
    blocks: list[BlockFigures]
    receivers: int
    commit_latencies: list[float]
    payload_bytes: int
    wire_bytes: int
    bytes_by_kind: dict[str, int]
    messages_by_kind: dict[str, int]
    copies_received: int
    blocks_held: int
    warmup_s: float
    virtual_s: float
    wall_s: float
    events: int
    machine: str = field(default_factory=machine)
    commit: str = field(default_factory=git_commit)

    # --- figures ---------------------------------------------------------------------------------

    def latencies(self) -> list[float]:
        return [lat for b in self.blocks for lat in b.latencies]

    def times_to_all(self) -> list[float]:
        return [t for b in self.blocks if (t := b.time_to_all) is not None]

    @property
    def incomplete_blocks(self) -> int:
        return sum(1 for b in self.blocks if b.missing)

    @property
    def push_coverage(self) -> float:
        """Share of blocks whose every receiver got the whole block pushed to it."""
        return sum(1 for b in self.blocks if b.pushed == self.receivers) / len(self.blocks)

    @property
    def gossip_coverage(self) -> float:
        """Share of blocks that reached every receiver by push or by advertisement and request (enhanced mode),
        i.e. without the periodic pull or state transfer."""
        return sum(1 for b in self.blocks if b.pushed + b.advertised == self.receivers) / len(self.blocks)

    @property
    def amplification(self) -> float:
        ideal = sum(b.wire_size for b in self.blocks) * self.receivers
        return self.payload_bytes / ideal if ideal else math.nan

    @property
    def duplicates_per_peer(self) -> float:
        held = self.blocks_held
        return (self.copies_received - held) / (self.receivers * len(self.blocks)) if self.receivers else math.nan

    def bounds(self) -> dict[str, float]:
        n = self.scenario.peers
        rounds = math.ceil(math.log2(n))
        size = statistics.mean(b.wire_size for b in self.blocks)
        hop = self.scenario.latency + (size / self.scenario.bandwidth if self.scenario.bandwidth else 0.0)
        return {
            "telephone_rounds": rounds,
            "store_and_forward_s": rounds * hop,
            "push_only_rounds": math.log2(n) + math.log(n),
            "hop_s": hop,
        }

    def to_json(self) -> dict[str, Any]:
        tta = self.times_to_all()
        lat = self.latencies()
        per_block_p50 = [percentile(b.latencies, 50) for b in self.blocks if b.latencies]
        per_block_p99 = [percentile(b.latencies, 99) for b in self.blocks if b.latencies]
        n_blocks = len(self.blocks)

        def num(x: float) -> float | None:
            return None if math.isnan(x) else round(x, 6)

        return {
            "scenario": self.scenario.name,
            "peers": self.scenario.peers,
            "orgs": self.scenario.orgs,
            "blocks": n_blocks,
            "block_size": self.scenario.block_size,
            "block_interval_s": self.scenario.block_interval,
            "latency_s": self.scenario.latency,
            "latency_spread": self.scenario.jitter,
            "bandwidth_bytes_per_s": self.scenario.bandwidth,
            "loss": self.scenario.loss,
            "mode": self.mode,
            "seed": self.scenario.seed,
            "crypto": self.scenario.crypto,
            "gossip": dict(self.scenario.gossip),
            "events_scheduled": [e.__dict__ for e in self.scenario.events],
            "receivers": self.receivers,
            "time_to_all_p50_s": num(percentile(tta, 50)),
            "time_to_all_p99_s": num(percentile(tta, 99)),
            "time_to_all_max_s": num(max(tta, default=math.nan)),
            "incomplete_blocks": self.incomplete_blocks,
            "block_latency_p50_s": num(statistics.median(per_block_p50) if per_block_p50 else math.nan),
            "block_latency_p99_s": num(statistics.median(per_block_p99) if per_block_p99 else math.nan),
            "receive_latency_p50_s": num(percentile(lat, 50)),
            "receive_latency_p99_s": num(percentile(lat, 99)),
            "receive_latency_max_s": num(max(lat, default=math.nan)),
            "commit_latency_p50_s": num(percentile(self.commit_latencies, 50)),
            "commit_latency_p99_s": num(percentile(self.commit_latencies, 99)),
            "push_coverage": num(self.push_coverage),
            "gossip_coverage": num(self.gossip_coverage),
            "advertised_per_block": num(sum(b.advertised for b in self.blocks) / n_blocks),
            "pulled_per_block": num(sum(b.pulled for b in self.blocks) / n_blocks),
            "transferred_per_block": num(sum(b.transferred for b in self.blocks) / n_blocks),
            "amplification": num(self.amplification),
            "payload_bytes": self.payload_bytes,
            "wire_bytes_per_block": round(self.wire_bytes / n_blocks),
            "control_bytes_per_block": round((self.wire_bytes - self.payload_bytes) / n_blocks),
            "bytes_by_kind": dict(sorted(self.bytes_by_kind.items())),
            "messages_by_kind": dict(sorted(self.messages_by_kind.items())),
            "duplicates_per_peer": num(self.duplicates_per_peer),
            "bounds": {k: round(v, 6) for k, v in self.bounds().items()},
            "warmup_s": round(self.warmup_s, 3),
            "virtual_s": round(self.virtual_s, 3),
            "sim_events": self.events,
            "wall_s": round(self.wall_s, 3),
            "machine": self.machine,
            "commit": self.commit,
            "python": sys.version.split()[0],
        }


class _Run:
    """One run of a scenario in one mode."""

    def __init__(self, scenario: Scenario, mode: str, progress: Progress | None) -> None:
        self.scenario = scenario
        self.mode = mode
        self.progress = progress
        self.tracers: dict[str, _PeerTracer] = {}
        self.commits: dict[str, dict[int, float]] = {}
        self.copies: dict[str, int] = {}
        self.measuring = False
        self.payload_bytes = 0
        self.wire_bytes = 0
        self.bytes_by_kind: dict[str, int] = {}
        self.msgs_by_kind: dict[str, int] = {}
        self.t0: dict[int, float] = {}
        self.wire_size: dict[int, int] = {}
        self.names = scenario.peer_names()
        self.leaders = {n for n in self.names if n.startswith("peer0.")}
        self.endpoint_name: dict[str, str] = {}
        self.started = time.perf_counter()
        self.blocks_started: float | None = None

        jitter = scenario.jitter
        mean = scenario.latency
        if jitter:
            low, high = mean * (1 - jitter), mean * (1 + jitter)
            latency: Any = lambda _a, _b, rng: rng.uniform(low, high)  # noqa: E731
        else:
            latency = mean
        config = gossip_config(scenario, mode)
        self.cluster = Cluster(
            seed=scenario.seed,
            latency=latency,
            gossip=config,
            state=StateConfig(),
            use_leader_election=False,
            bandwidth=scenario.bandwidth,
            loss=scenario.loss,
            org_leaders={n + "msp" for n in self.leaders},
            tracer_factory=self._tracer,
            ordering_interval=None,
            crypto=scenario.crypto,
            keep_effects=False,
        )
        net = self.cluster.net
        net.on_commit = self._on_commit
        net.on_transmit = self._on_transmit
        net.on_receive = self._on_receive

    # --- observation -----------------------------------------------------------------------------

    def _tracer(self, name: str) -> _PeerTracer:
        tracer = _PeerTracer(name)
        self.tracers[name] = tracer
        return tracer

    def _name(self, peer: SimPeer) -> str:
        return self.endpoint_name[peer.endpoint]

    def _on_commit(self, peer: SimPeer, committed: Committed, now: float) -> None:
        if committed.seq_num > 0:
            self.commits.setdefault(self._name(peer), {}).setdefault(committed.seq_num, now)

    def _on_transmit(self, src: SimPeer, dst: SimPeer, message: pb.GossipMessage, size: int) -> None:
        if not self.measuring:
            return
        kind = message.WhichOneof("content") or ""
        self.wire_bytes += size
        self.bytes_by_kind[kind] = self.bytes_by_kind.get(kind, 0) + size
        self.msgs_by_kind[kind] = self.msgs_by_kind.get(kind, 0) + 1
        if kind in BLOCK_KINDS and (kind != "data_update" or message.data_update.msg_type == wire.BLOCK_MSG):
            self.payload_bytes += size

    def _on_receive(self, dst: SimPeer, src: SimPeer, message: pb.GossipMessage, now: float) -> None:
        if not self.measuring:
            return
        kind = message.WhichOneof("content")
        if kind == "data_msg":
            n = 1
        elif kind == "data_update" and message.data_update.msg_type == wire.BLOCK_MSG:
            n = len(message.data_update.data)
        elif kind == "state_response":
            n = len(message.state_response.payloads)
        else:
            return
        name = self._name(dst)
        self.copies[name] = self.copies.get(name, 0) + n

    def _report(self, phase: str, note: str = "") -> None:
        if self.progress is None:
            return
        now = time.perf_counter()
        cut, total = len(self.t0), self.scenario.blocks
        eta = None
        if phase == "blocks" and cut and self.blocks_started is not None:
            eta = (now - self.blocks_started) / cut * (total - cut)
        self.progress(RunProgress(self.mode, phase, cut, total, now - self.started, eta, note))

    # --- building and running --------------------------------------------------------------------

    def build(self) -> None:
        """Add the peers; each bootstraps from BOOTSTRAP_PEERS random earlier peers of its org (peer0 first).

        Spreading the bootstrap over the org keeps one peer's uplink from carrying every new peer's first
        membership response, as operators spread bootstrap lists in large networks.
        """
        orgs = [f"Org{i + 1}MSP" for i in range(self.scenario.orgs)]
        rng = random.Random(f"{self.scenario.seed}:bootstrap")
        earlier: dict[str, list[str]] = {}
        for name in self.names:
            index, org_number = name.removeprefix("peer").split(".org")
            org = orgs[int(org_number) - 1]
            known = earlier.setdefault(org, [])
            bootstrap = rng.sample(known, min(BOOTSTRAP_PEERS, len(known))) if known else []
            # peer0 of each org is its anchor peer, for the other orgs to find it; with one org, anchors would
            # only make every peer ask peer0 for the whole membership at once (1,000 answers of 170 KB each
            # at N = 1,000, 14 s of its uplink) while the bootstrap peers already spread that load.
            anchor = index == "0" and self.scenario.orgs > 1
            spec = self.cluster.add_peer(org, f"peer{index}", bootstrap=bootstrap, anchor=anchor)
            known.append(spec.endpoint)
            self.endpoint_name[spec.endpoint] = self._short(spec)
        self.cluster.create_channel(CHANNEL, orgs)

    @staticmethod
    def _short(spec: SimPeerSpec) -> str:
        # Cluster names peers "peer3.org1msp"; scenarios say "peer3.org1".
        return spec.name.removesuffix("msp")

    def spec(self, name: str) -> SimPeerSpec:
        return self.cluster.specs[name + "msp"]

    def converged(self) -> bool:
        n = len(self.names)
        for name in self.names:
            core = self.cluster.core(name + "msp")
            if core is None:
                continue
            if core.node.discovery.alive_count() < n - 1:
                return False
            if len(core.node.channel(CHANNEL).state_infos) < n:
                return False
        # Settled also means quiet: the start's bursts (every peer asking the anchor peer for the membership,
        # 1,000 answers of 170 KB each at N = 1,000) must have left the uplinks before the first block.
        net = self.cluster.net
        return all(peer.uplink_free_at <= net.now + QUIET_BACKLOG for peer in net.peers.values())

    def warm_start(self) -> None:
        """Hand every peer, now, a membership response and a StateInfo snapshot that list every other peer.

        As if each peer's bootstrap peer had already known the whole network: the peers learn each other
        through their ordinary message handling (signatures checked, nothing else touched), and the
        protocol goes on from there. Without it a large network spends its first minutes, and most of a
        run's time, on the bootstrap's own O(N^2) exchanges.
        """
        net = self.cluster.net
        now = net.now
        cores = {spec.name: core for spec in self.cluster.specs.values() if (core := self.cluster.core(spec.name))}
        alive = {name: core.node.discovery.self_alive(now) for name, core in cores.items()}
        states = {name: core.node.channel(CHANNEL).own_state_info() for name, core in cores.items()}
        names = list(cores)
        for index, name in enumerate(names):
            spec = self.cluster.specs[name]
            peer = net.peers[spec.endpoint]
            helper = self.cluster.specs[names[1 if index == 0 else 0]]
            others = [n for n in names if n != name and n != helper.name]
            nonce = 0x5EED + index
            response = wire.membership_response([alive[helper.name], *(alive[n] for n in others)], [], nonce=nonce)
            # Only a response to a request of its own is read: the peer expects this one as if it had asked.
            cores[name].node.discovery.expect_membership_response(helper.mcs.pki_id, nonce, now)
            snapshot = wire.state_info_snapshot([s.envelope for s in states.values() if s is not None], 0)
            snapshot.channel = CHANNEL.encode()
            for message in (response, snapshot):
                received = ReceivedMessage(
                    sender=helper.mcs.pki_id,
                    sender_endpoint=helper.endpoint,
                    sender_identity=helper.mcs.identity,
                    envelope=wire.seal(message),
                    message=message,
                )
                net.invoke(peer.endpoint, lambda n, r=received: n.on_message(r, now))

    def warm_up(self) -> float:
        net = self.cluster.net
        start = net.now
        if self.scenario.warm_start:
            self.warm_start()
        if self.scenario.warmup is not None:
            net.run_for(self.scenario.warmup)
        else:
            net.run_for(MIN_WARMUP)  # let the start's own traffic (bootstrap dials, first StateInfos) pass
            ok = net.run_until_true(self.converged, timeout=self.scenario.max_warmup, step=1.0)
            if not ok:
                note = f"membership not converged after {self.scenario.max_warmup:g}s of warm-up; going on"
                self._report("warming up", note)
        return net.now - start

    def _cut_block(self, seq: int) -> None:
        ordering = self.cluster.ordering
        ordering.submit(CHANNEL, 1, size=self.scenario.block_size)
        raw = ordering.chains[CHANNEL][seq]
        self.t0[seq] = self.cluster.net.now
        self.wire_size[seq] = wire.seal(wire.data_message(CHANNEL.encode(), seq, raw)).ByteSize()
        ordering.pump()
        self._report("blocks")

    def _apply_event(self, event: Any) -> None:
        net = self.cluster.net
        if event.action == "crash":
            for name in event.peers:
                if self.cluster.core(name + "msp") is not None:
                    self.cluster.crash(name + "msp")
        elif event.action == "restart":
            for name in event.peers:
                if self.cluster.core(name + "msp") is None:
                    self.cluster.restart(name + "msp")
        elif event.action == "partition":
            net.partition(*[[self.spec(n).endpoint for n in group] for group in event.groups])
        elif event.action == "heal":
            net.heal()

    def _up_receivers(self) -> list[str]:
        return [n for n in self.names if n not in self.leaders and self.cluster.core(n + "msp") is not None]

    def _holds(self, name: str, seq: int) -> bool:
        return seq in self.tracers[name + "msp"].first or seq in self.commits.get(name, {})

    def _all_delivered(self) -> bool:
        last = self.scenario.blocks
        if len(self.t0) < last:
            return False
        return all(self._holds(n, seq) for n in self._up_receivers() for seq in range(1, last + 1))

    def run(self) -> SimResult:
        self.started = wall = time.perf_counter()
        sc = self.scenario
        self._report("building")
        self.build()
        self._report("warming up")
        warmup = self.warm_up()
        self.blocks_started = time.perf_counter()
        self._report("blocks")
        net = self.cluster.net
        start = net.now
        self.measuring = True
        for i in range(sc.blocks):
            net.at(start + i * sc.block_interval, lambda seq=i + 1: self._cut_block(seq))
        for event in sc.events:
            net.at(start + event.at, lambda e=event: self._apply_event(e))
        last = start + (sc.blocks - 1) * sc.block_interval
        step = max(sc.block_interval * 10, 5.0)
        while net.now < last:
            net.run_until(min(last, net.now + step))
        self._report("draining")
        net.run_until_true(self._all_delivered, timeout=sc.drain, step=0.25)
        # A last moment for messages in flight, so that duplicates in flight are counted too.
        net.run_for(min(1.0, sc.drain))
        self.measuring = False
        result = self._result(warmup, time.perf_counter() - wall)
        self._report("done")
        return result

    def _result(self, warmup: float, wall: float) -> SimResult:
        receivers = self._up_receivers()
        blocks: list[BlockFigures] = []
        held = 0
        for seq in sorted(self.t0):
            t0 = self.t0[seq]
            lats: list[float] = []
            missing = pushed = advertised = pulled = transferred = 0
            for name in receivers:
                got = self.tracers[name + "msp"].first.get(seq)
                commit = self.commits.get(name, {}).get(seq)
                if got is None and commit is None:
                    missing += 1
                    continue
                held += 1
                if got is None or (commit is not None and commit < got[0]):
                    assert commit is not None
                    lats.append(commit - t0)
                    transferred += 1
                elif got[1] == "pull":
                    lats.append(got[0] - t0)
                    pulled += 1
                elif got[1] == "advert":
                    lats.append(got[0] - t0)
                    advertised += 1
                else:
                    lats.append(got[0] - t0)
                    pushed += 1
            blocks.append(
                BlockFigures(seq, t0, self.wire_size[seq], lats, missing, pushed, advertised, pulled, transferred)
            )
        commit_lat = [
            t - self.t0[seq] for name in receivers for seq, t in self.commits.get(name, {}).items() if seq in self.t0
        ]
        net = self.cluster.net
        return SimResult(
            scenario=self.scenario,
            mode=self.mode,
            blocks=blocks,
            receivers=len(receivers),
            commit_latencies=commit_lat,
            payload_bytes=self.payload_bytes,
            wire_bytes=self.wire_bytes,
            bytes_by_kind=self.bytes_by_kind,
            messages_by_kind=self.msgs_by_kind,
            copies_received=sum(self.copies.get(n, 0) for n in receivers),
            blocks_held=held,
            warmup_s=warmup,
            virtual_s=net.now,
            wall_s=wall,
            events=net.events_processed,
        )


def run_scenario(scenario: Scenario, mode: str | None = None, progress: Progress | None = None) -> SimResult:
    """Run ``scenario`` in one dissemination mode (default: the scenario's own, which must not be 'both')."""
    chosen = mode or scenario.mode
    if chosen == "both":
        raise ValueError("run_scenario runs one mode; call it once per mode")
    return _Run(scenario, chosen, progress).run()


def progress_line(progress: RunProgress) -> str | None:
    """A line of text for ``progress`` worth printing (None for most blocks: one line per tenth of them)."""
    head = f"[{progress.mode}]"
    if progress.note:
        return f"{head} {progress.note}"
    if progress.phase == "blocks":
        step = max(1, progress.blocks // 10)
        cut = progress.blocks_cut
        if cut % step and cut != progress.blocks:
            return None
        left = "" if progress.eta_s is None else f", about {progress.eta_s:.0f}s left"
        return f"{head} {cut}/{progress.blocks} blocks cut, {progress.wall_s:.1f}s wall{left}"
    return f"{head} {progress.phase}, {progress.wall_s:.1f}s wall"


def stderr_progress(progress: RunProgress) -> None:
    """A progress callback that prints a line to stderr now and then (for logs: no redrawing)."""
    line = progress_line(progress)
    if line is not None:
        print(line, file=sys.stderr, flush=True)


_worker_queue: Any = None
"""In a worker process of run_modes: the queue its run's progress goes to, for the parent to hand on."""


def _install_queue(queue: Any) -> None:
    global _worker_queue
    _worker_queue = queue


def _queue_progress(progress: RunProgress) -> None:
    _worker_queue.put(progress)


def _run_in_worker(scenario: Scenario, mode: str, report: bool) -> SimResult:
    return run_scenario(scenario, mode, _queue_progress if report else None)


def run_modes(scenario: Scenario, progress: Progress | None = None, jobs: int = 1) -> list[SimResult]:
    """One run per mode of the scenario (both modes for mode 'both'), each with the same seed.

    With ``jobs`` > 1 the modes run in that many worker processes at once (a run is single-threaded;
    the runs are independent, so this changes nothing but the wall time). ``progress`` is called in this
    process either way (from a helper thread with workers), so it may update a display.
    """
    modes = scenario.modes
    if jobs <= 1 or len(modes) == 1:
        return [run_scenario(scenario, mode, progress) for mode in modes]
    import multiprocessing
    import threading
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context()
    queue = context.Queue()

    def forward() -> None:
        # The workers' progress arrives here and goes to the callback in this process, which owns the display;
        # None (put once the pool is done) ends it.
        while (item := queue.get()) is not None:
            if progress is not None:
                progress(item)

    forwarder = threading.Thread(target=forward, name="rumor-sim-progress", daemon=True)
    forwarder.start()
    try:
        with ProcessPoolExecutor(
            max_workers=min(jobs, len(modes)), mp_context=context, initializer=_install_queue, initargs=(queue,)
        ) as pool:
            futures = [pool.submit(_run_in_worker, scenario, mode, progress is not None) for mode in modes]
            return [f.result() for f in futures]
    finally:
        queue.put(None)
        forwarder.join()
