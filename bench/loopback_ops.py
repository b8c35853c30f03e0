"""Figures 5-8 on real processes over loopback: crash detection, join convergence, catch-up rate, sustained rate.

    python bench/loopback_ops.py [--figures 5,6,7,8] [--peers 8,16] [--stress-window 60]
                                 [--catchup-peers 8] [--catchup-blocks 1000] [--catchup-size 4KB] [--feed-rate 100]
                                 [--rate-peers 8] [--rate-size 100KB] [--ramp 4,8,16,32,64] [--step 15]
                                 [--refine 1] [--confirm 60] [--drain 10] [--out bench/results]

Every network is built as bench/loopback.py builds it: `rumor network init` into a temporary directory (2 orgs,
TLS on), the orderer and each peer a child process (bench/loopback_peer.py, a rumor.node.Peer reporting JSON
lines on the shared wall clock), peer logs in that directory (kept, and named, when a run fails). Gossip
settings are Fabric's defaults (Fabric's dissemination; aliveTimeInterval 5 s, aliveExpirationTimeout 25 s,
state transfer every 10 s in batches of 10) except election.startupGracePeriod 2 s, which only shortens the
start. Peers report each membership verdict the moment their discovery makes it (the tracer's peer_alive and
peer_dead events), so the membership figures have no polling resolution.

Figures 5 and 6, for each N of --peers (membership.json/.md):
  - join convergence (6): N - 1 peers start and settle; then the N-th (a peer of org 1 that is neither bootstrap
    nor anchor peer, unknown to all) starts: from its process spawn until every other peer lists it alive.
  - false dead verdicts (5): then one CPU burner process per core (a Python busy loop, at the peers' priority)
    loads the machine for --stress-window seconds with all N peers live; every "dead" verdict a peer makes
    meanwhile is false. Reported as a count and as a rate per hour extrapolated from the window.
  - crash detection (5): when membership is whole again, a follower of org 2 gets SIGKILL: from the kill until
    every live peer lists it dead. On loopback the kernel closes a killed process's sockets at once, so peers
    with a connection to it see it break (and a dial to it fails at once). Hence also a frozen peer: a follower
    of org 1 gets SIGSTOP (its sockets stay open, as when a host hangs or is cut off): from the signal until
    every other live peer lists it dead, which only the silence of its alive messages (aliveExpirationTimeout
    25 s, checked every 2.5 s) can tell.
Figure 7, N = --catchup-peers (catchup.json/.md): a follower is stopped (SIGTERM) when the network has converged;
  the orderer cuts --catchup-blocks blocks of --catchup-size (one envelope per block, fed at --feed-rate per
  second) and the network commits them all; then the follower restarts with its ledger: the time from its
  process spawn until it commits its first missed block, and the rate at which it commits from that block to the
  last (blocks/s).
Figure 8, N = --rate-peers, blocks of --rate-size (sustained.json/.md): one network; a ramp of --step seconds at
  each rate of --ramp (blocks/s, through rumor.netup's LoadGenerator as in figure 1: one envelope per block, each one
  acknowledged by the orderer before the next), each step drained before the next, stopping at the first step
  not bounded; --refine steps halfway between the highest bounded rate and the lowest unbounded one; then one
  --confirm seconds run at the highest bounded rate (and, if that one is not bounded, once more at the next
  bounded rate below). Time to all as figure 1 (time zero: the first peer holding the block). A run is *bounded*
  when every block reached all N peers within --drain seconds after the load stopped, the blocks arrived at
  >= 90 % of the target rate (from the time zeros of the first and last block: the load generator waits for the
  orderer's answer to each block, so an overloaded machine slows it down), and p99 time to all over the last
  third of the blocks <= max(2 x p99 over the first third, p99 over the first third + 50 ms). CPU % per peer: its
  CPU seconds over the load's wall time.

Tables on stdout. On a 2-core machine, N Python peers (and the burners) share two cores: the timings measure CPU
contention as well as the protocol.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from loopback import (
    HERE,
    PeerProc,
    converged,
    held,
    start_orderer,
    start_peer,
    stop_peers,
    stop_process,
)

from rumor.netup import LoadGenerator
from rumor.network import NetworkLayout, free_base_port, init_network
from rumor.sim.runner import git_commit, machine, percentile
from rumor.sim.scenario import format_size, parse_size

STARTUP = {"election.startupGracePeriod": "2s"}
"""The one gossip setting that is not Fabric's: a shorter wait before the first leader election."""


class Failure(Exception):
    """A run that cannot go on; the message says why (and where the logs are)."""


@contextlib.contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """A temporary directory for a network and its logs: removed afterwards, unless the run failed: then it is
    kept and the Failure names it."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    except Failure as exc:
        raise Failure(f"{exc} (network and peer logs kept in {path})") from None
    except Exception as exc:
        raise Failure(f"{type(exc).__name__}: {exc} (network and peer logs kept in {path})") from exc
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    shutil.rmtree(path, ignore_errors=True)


def new_network(tmp: Path, n: int, **options: Any) -> tuple[NetworkLayout, Path]:
    layout = init_network(
        tmp / "net", orgs=2, peers_per_org=n // 2, base_port=free_base_port(n), gossip_overrides=STARTUP, **options
    )
    logs = tmp / "logs"
    logs.mkdir()
    return layout, logs


async def until(predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    """Wait until ``predicate()`` holds; False after ``timeout`` seconds."""
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            return False
        await asyncio.sleep(step)
    return True


async def start_burners(count: int) -> list[asyncio.subprocess.Process]:
    """``count`` Python busy loops (CPU stress), each gone with this process."""
    code = f"from rumor.netup import die_with_parent\ndie_with_parent({os.getpid()})\nwhile True:\n    pass\n"
    return [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        for _ in range(count)
    ]


def cpu_mark(peers: list[PeerProc]) -> dict[str, tuple[float, float]]:
    """Each peer's (report time, CPU seconds) from its latest stat line."""
    return {p.name: (float(p.stat.get("t", 0.0)), float(p.stat.get("cpu_s", 0.0))) for p in peers}


def cpu_percent(before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]) -> list[float]:
    out = []
    for name, (t1, c1) in after.items():
        t0, c0 = before.get(name, (t1, c1))
        if t1 > t0:
            out.append(100.0 * (c1 - c0) / (t1 - t0))
    return out


def r(x: float | None, digits: int = 3) -> float | None:
    return None if x is None or math.isnan(x) else round(x, digits)


def first_event(events: list[tuple[float, str]] | list[tuple[float, str, str]], pki: str, since: float) -> float:
    """Time of the first event about ``pki`` at or after ``since`` (inf if none)."""
    return min((e[0] for e in events if e[1] == pki and e[0] >= since), default=math.inf)


# --------------------------------------------------------------------------------------------------
# Figures 5 and 6


async def run_membership(n: int, stress_window: float) -> dict[str, Any]:
    with scratch(f"rumor-membership-{n}-") as tmp:
        layout, logs = new_network(tmp, n)
        orderer = await start_orderer(layout, logs)
        peers: list[PeerProc] = []
        burners: list[asyncio.subprocess.Process] = []
        try:
            late = layout.peers[n // 2 - 1]  # the last peer of org 1: peer0 of each org is bootstrap and anchor
            for entry in layout.peers:
                if entry is not late:
                    peers.append(await start_peer(entry, layout, logs))
            if not await until(lambda: all(p.ready and p.stat.get("peers", 0) >= n - 2 for p in peers), 120):
                raise Failure(f"N={n}: membership of {n - 1} peers did not settle in 120 s")
            await asyncio.sleep(2.0)

            # Figure 6: a new peer joins.
            newcomer = await start_peer(late, layout, logs)
            others = list(peers)
            peers.append(newcomer)

            def listed_alive() -> list[float]:
                return [first_event(p.alive, newcomer.pki, newcomer.spawned) for p in others]

            if not await until(lambda: newcomer.ready and not any(map(math.isinf, listed_alive())), 120):
                raise Failure(f"N={n}: not every peer listed the new peer alive within 120 s")
            join = [t - newcomer.spawned for t in listed_alive()]
            if not await until(lambda: len({pki for _, pki in newcomer.alive}) >= n - 1, 60):
                raise Failure(f"N={n}: the new peer did not list all {n - 1} others alive in 60 s")
            seen = {pki: first_event(newcomer.alive, pki, 0.0) for _, pki in newcomer.alive}
            newcomer_sees = sorted(seen.values())[n - 2] - newcomer.spawned
            if not await until(lambda: all(p.stat.get("peers", 0) >= n - 1 for p in peers), 60):
                raise Failure(f"N={n}: membership of {n} peers did not settle in 60 s")
            await asyncio.sleep(2.0)

            # Figure 5, false verdicts: every peer live, the machine loaded.
            verdicts_before = {p.name: len(p.dead) for p in peers}
            mark = cpu_mark(peers)
            burners = await start_burners(os.cpu_count() or 1)
            stress_began = time.time()
            await asyncio.sleep(stress_window)
            stress_cpu = cpu_percent(mark, cpu_mark(peers))
            for proc in burners:
                await stop_process(proc, 2.0)
            stress_s = time.time() - stress_began
            by_pki = {p.pki: p.name for p in peers}
            false_dead = [
                {
                    "observer": p.name,
                    "declared_dead": by_pki.get(pki, pki),
                    "reason": reason,
                    "at_s": r(t - stress_began),
                }
                for p in peers
                for t, pki, reason in p.dead[verdicts_before[p.name] :]
            ]
            # Wait for any false verdict to heal before the crash (a revived peer is listed alive again).
            healed = await until(lambda: all(p.stat.get("peers", 0) >= n - 1 for p in peers), 60)
            if not healed:
                raise Failure(f"N={n}: membership did not heal within 60 s after the CPU stress")
            await asyncio.sleep(2.0)

            # Figure 5, crash detection: SIGKILL a follower of org 2 (not its bootstrap/anchor peer0). On loopback
            # the kernel closes a killed process's sockets at once, so its peers see their connections break.
            org2 = [p for p in peers if p.name in {e.id for e in layout.peers[n // 2 + 1 :]}]
            victim = next((p for p in org2 if not p.stat.get("leader")), org2[0])
            crash = await crash_detection(victim, [p for p in peers if p is not victim], signal.SIGKILL)
            # The same for a frozen peer (SIGSTOP): its sockets stay open, as when a host hangs or drops off the
            # network; only the silence of its alive messages (aliveExpirationTimeout) gives it away.
            org1 = [p for p in peers if p.name in {e.id for e in layout.peers[1 : n // 2]}]
            frozen = next((p for p in org1 if not p.stat.get("leader")), org1[0])
            live = [p for p in peers if p not in (victim, frozen)]
            freeze = await crash_detection(frozen, live, signal.SIGSTOP)
            with contextlib.suppress(ProcessLookupError):
                frozen.proc.kill()
        finally:
            for proc in burners:
                await stop_process(proc, 2.0)
            for p in peers:  # a peer still frozen would ignore SIGTERM
                if p.proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(p.proc.pid, signal.SIGCONT)
            await stop_peers(peers)
            await stop_process(orderer)
    return {
        "scenario": "loopback-membership",
        "peers": n,
        "orgs": 2,
        "tls": True,
        "join_convergence_s": r(max(join)),
        "join_convergence_median_s": r(statistics.median(join)),
        "newcomer_ready_s": r(newcomer.ready_at - newcomer.spawned),
        "newcomer_lists_all_s": r(newcomer_sees),
        "join_per_peer_s": {p.name: r(t) for p, t in zip(others, join, strict=True)},
        "crash_detection_s": crash["max_s"],
        "crash_detection_median_s": crash["median_s"],
        "crash": crash,
        "frozen_detection_s": freeze["max_s"],
        "frozen_detection_median_s": freeze["median_s"],
        "frozen": freeze,
        "stress_window_s": r(stress_s, 1),
        "stress_burners": len(burners),
        "stress_peer_cpu_percent_mean": r(statistics.mean(stress_cpu), 1) if stress_cpu else None,
        "false_dead_verdicts": len(false_dead),
        "false_dead_verdicts_per_hour": r(len(false_dead) * 3600 / stress_s, 1),
        "false_dead_detail": false_dead,
        "settings": "Fabric's membership defaults: aliveTimeInterval 5s, aliveExpirationTimeout 25s, "
        "reconnectInterval 25s; election.startupGracePeriod 2s",
        "machine": machine(),
        "commit": git_commit(),
    }


async def crash_detection(victim: PeerProc, live: list[PeerProc], signum: int, timeout: float = 90.0) -> dict[str, Any]:
    """Send ``victim`` the signal; then wait until every peer of ``live`` has declared it dead."""
    began = time.time()
    os.kill(victim.proc.pid, signum)

    def verdicts() -> dict[str, tuple[float, str]]:
        out = {}
        for p in live:
            found = [(t, reason) for t, pki, reason in p.dead if pki == victim.pki and t >= began]
            if found:
                out[p.name] = min(found)
        return out

    await until(lambda: len(verdicts()) == len(live), timeout)
    seen = verdicts()
    times = [t - began for t, _ in seen.values()]
    by_connection = sum(1 for _, reason in seen.values() if reason == "connection lost")
    return {
        "victim": victim.name,
        "signal": signal.Signals(signum).name,
        "max_s": r(max(times)) if len(seen) == len(live) else None,
        "median_s": r(statistics.median(times)) if times else None,
        "observers": len(live),
        "detected_by": len(seen),
        "by_connection_loss": by_connection,
        "by_silence": len(seen) - by_connection,
        "per_peer": {name: {"s": r(t - began), "reason": reason} for name, (t, reason) in sorted(seen.items())},
    }


def membership_table(rows: list[dict[str, Any]]) -> str:
    def how(c: dict[str, Any]) -> str:
        return f"{c['by_connection_loss']} / {c['by_silence']} of {c['observers']}"

    out = [
        "| N | join convergence max / median (s) | new peer up (s) | new peer lists all (s) "
        "| crash (SIGKILL) detection max / median (s) | by connection loss / silence "
        "| frozen (SIGSTOP) detection max / median (s) | by connection loss / silence "
        "| CPU stress window (s) | false dead verdicts | per hour | peer CPU % under stress |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in rows:
        out.append(
            f"| {m['peers']} | {m['join_convergence_s']} / {m['join_convergence_median_s']} "
            f"| {m['newcomer_ready_s']} | {m['newcomer_lists_all_s']} "
            f"| {m['crash_detection_s']} / {m['crash_detection_median_s']} "
            f"| {how(m['crash'])} | {m['frozen_detection_s']} / {m['frozen_detection_median_s']} "
            f"| {how(m['frozen'])} | {m['stress_window_s']} | {m['false_dead_verdicts']} "
            f"| {m['false_dead_verdicts_per_hour']} | {m['stress_peer_cpu_percent_mean']} |"
        )
    return "\n".join(out)


# --------------------------------------------------------------------------------------------------
# Figure 7


class CountedLoad(LoadGenerator):
    """The load generator, pausing itself after ``limit`` blocks (it checks for a pause before each block)."""

    def __init__(self, root: Path, channel: str, rate: float, payload_size: int, *, limit: int) -> None:
        self.limit = limit
        self._count = 0
        super().__init__(root, channel, rate, payload_size)

    @property
    def blocks(self) -> int:
        return self._count

    @blocks.setter
    def blocks(self, value: int) -> None:
        self._count = value
        if value >= self.limit:
            self.set_paused(True)


async def run_catchup(n: int, k: int, size: int, feed_rate: float) -> dict[str, Any]:
    with scratch(f"rumor-catchup-{n}-") as tmp:
        layout, logs = new_network(tmp, n, max_message_count=1, batch_timeout=0.05)
        orderer = await start_orderer(layout, logs)
        peers: list[PeerProc] = []
        try:
            for entry in layout.peers:
                peers.append(await start_peer(entry, layout, logs))
            if not await until(lambda: converged(peers, n), 120, 0.25):
                raise Failure(f"N={n}: peers did not converge in 120 s")
            await asyncio.sleep(1.0)
            # A follower of org 2 that is not its bootstrap/anchor peer goes down.
            org2 = {e.id for e in layout.peers[n // 2 + 1 :]}
            lagger = next(p for p in peers if p.name in org2 and not p.stat.get("leader"))
            entry = next(e for e in layout.peers if e.id == lagger.name)
            height = int(lagger.stat.get("height", 1))
            await stop_process(lagger.proc, 20.0)
            live = [p for p in peers if p is not lagger]

            feed_began = time.time()
            load = CountedLoad(layout.root, layout.channel, feed_rate, size, limit=k)
            task = asyncio.create_task(load.run())
            try:
                if not await until(lambda: load.blocks >= k, k / feed_rate * 5 + 60, 0.01):
                    why = f" ({load.error})" if load.error else ""
                    raise Failure(f"N={n}: the orderer took only {load.blocks} of {k} blocks in time{why}")
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            fed_s = time.time() - feed_began
            await asyncio.sleep(0.3)
            last = k  # the genesis block is 0
            if not await until(lambda: all(last in p.commit for p in live), 300, 0.1):
                raise Failure(f"N={n}: the live peers did not all commit block {last} in 300 s")
            moved_s = time.time() - feed_began
            await asyncio.sleep(1.0)

            back = await start_peer(entry, layout, logs)
            peers.append(back)
            if not await until(lambda: last in back.commit, 600, 0.1):
                raise Failure(
                    f"N={n}: the restarted peer committed {len(back.commit)} of {last - height + 1} missed blocks "
                    "in 600 s"
                )
        finally:
            await stop_peers(peers)
            await stop_process(orderer)
    missed = last - height + 1
    first = back.commit[height] - back.spawned
    done = back.commit[last] - back.spawned
    span = back.commit[last] - back.commit[height]
    via: dict[str, int] = {}
    for seq in range(height, last + 1):
        got = back.recv.get(seq)
        kind = "state" if got is None or back.commit[seq] < got[0] else got[1]
        via[kind] = via.get(kind, 0) + 1
    return {
        "scenario": "loopback-catchup",
        "peers": n,
        "orgs": 2,
        "tls": True,
        "block_size": size,
        "blocks_missed": missed,
        "feed_rate_per_s": feed_rate,
        "fed_s": r(fed_s, 2),
        "network_moved_on_s": r(moved_s, 2),
        "restart_to_ready_s": r(back.ready_at - back.spawned, 2),
        "restart_to_first_missed_commit_s": r(first, 2),
        "restart_to_caught_up_s": r(done, 2),
        "catchup_blocks_per_s": r((missed - 1) / span, 1) if span > 0 else None,
        "overall_blocks_per_s": r(missed / done, 1),
        "received_via": dict(sorted(via.items())),
        "lagger": lagger.name,
        "settings": "Fabric's gossip defaults (state: checkInterval 10s, batchSize 10, responseTimeout 3s, "
        "blockBufferSize 20); election.startupGracePeriod 2s; one envelope per block",
        "machine": machine(),
        "commit": git_commit(),
    }


def catchup_table(rows: list[dict[str, Any]]) -> str:
    out = [
        "| N | missed blocks | block | network moved on in (s) | restart → peer up (s) "
        "| restart → first missed block committed (s) | restart → caught up (s) | catch-up rate (blocks/s) "
        "| blocks by state transfer / gossip |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for c in rows:
        via = c["received_via"]
        gossip = sum(v for k, v in via.items() if k != "state")
        out.append(
            f"| {c['peers']} | {c['blocks_missed']} | {format_size(c['block_size'])} | {c['network_moved_on_s']} "
            f"| {c['restart_to_ready_s']} | {c['restart_to_first_missed_commit_s']} | {c['restart_to_caught_up_s']} "
            f"| {c['catchup_blocks_per_s']} | {via.get('state', 0)} / {gossip} |"
        )
    return "\n".join(out)


# --------------------------------------------------------------------------------------------------
# Figure 8


def bounded(seg: dict[str, Any]) -> bool:
    first, last = seg["p99_first_third_s"], seg["p99_last_third_s"]
    return (
        seg["all_delivered"]
        and seg["achieved_rate_per_s"] >= 0.9 * seg["rate_per_s"]
        and first is not None
        and last is not None
        and last <= max(2 * first, first + 0.05)
    )


async def run_sustained(
    n: int, size: int, ramp: list[float], step_s: float, confirm_s: float, drain_s: float, refine: int
) -> dict[str, Any]:
    segments: list[dict[str, Any]] = []
    with scratch(f"rumor-sustained-{n}-") as tmp:
        layout, logs = new_network(tmp, n, max_message_count=1, batch_timeout=0.05)
        orderer = await start_orderer(layout, logs)
        peers: list[PeerProc] = []
        next_seq = 1

        async def segment(phase: str, rate: float, seconds: float) -> dict[str, Any]:
            nonlocal next_seq
            first = next_seq
            mark = cpu_mark(peers)
            load = LoadGenerator(layout.root, layout.channel, rate, size)
            task = asyncio.create_task(load.run())
            await asyncio.sleep(seconds)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await asyncio.sleep(0.3)  # a later sample of the CPU counters, covering the load's last blocks
            cpu = cpu_percent(mark, cpu_mark(peers))
            last = max([first + load.blocks - 1, *(max(p.commit, default=0) for p in peers)])
            await until(lambda: all(last in p.commit for p in peers), drain_s, 0.1)
            next_seq = last + 1
            tta: list[float] = []
            zero: list[float] = []
            delivered = True
            for seq in range(first, last + 1):
                times = list(held(peers, seq).values())
                if any(math.isinf(t) for t in times):
                    delivered = False
                    continue
                zero.append(min(times))
                tta.append(max(times) - min(times))
            third = max(1, len(tta) // 3)
            achieved = (len(zero) - 1) / (max(zero) - min(zero)) if len(zero) > 1 and max(zero) > min(zero) else 0.0
            seg = {
                "phase": phase,
                "rate_per_s": rate,
                "seconds": seconds,
                "blocks": last - first + 1,
                "first_block": first,
                "achieved_rate_per_s": r(achieved, 2),
                "mb_per_s": r(achieved * size / 1e6, 2),
                "all_delivered": delivered and last >= first,
                "time_to_all_p50_s": r(percentile(tta, 50)),
                "time_to_all_p99_s": r(percentile(tta, 99)),
                "time_to_all_max_s": r(max(tta)) if tta else None,
                "p99_first_third_s": r(percentile(tta[:third], 99)),
                "p99_last_third_s": r(percentile(tta[-third:], 99)),
                "cpu_percent_per_peer_mean": r(statistics.mean(cpu), 1) if cpu else None,
                "cpu_percent_per_peer_max": r(max(cpu), 1) if cpu else None,
            }
            seg["bounded"] = bounded(seg)
            segments.append(seg)
            print(
                f"  figure 8 {phase} {rate:g}/s: achieved {seg['achieved_rate_per_s']}/s, time to all p99 "
                f"{seg['time_to_all_p99_s']} s (thirds {seg['p99_first_third_s']} -> {seg['p99_last_third_s']}), "
                f"delivered {seg['all_delivered']}, bounded {seg['bounded']}",
                flush=True,
            )
            # The next step starts on an idle network: every peer holds every block of this one.
            if not await until(lambda: all(last in p.commit for p in peers), 120, 0.1):
                raise Failure(f"N={n}: the peers did not catch up within 120 s after {rate:g} blocks/s")
            await asyncio.sleep(1.0)
            return seg

        try:
            for entry in layout.peers:
                peers.append(await start_peer(entry, layout, logs))
            if not await until(lambda: converged(peers, n), 120, 0.25):
                raise Failure(f"N={n}: peers did not converge in 120 s")
            await asyncio.sleep(1.0)
            good: list[float] = []
            bad: float | None = None
            for rate in ramp:
                if not (await segment("ramp", rate, step_s))["bounded"]:
                    bad = rate
                    break
                good.append(rate)
            for _ in range(refine):  # halve the gap between the highest bounded rate and the first unbounded one
                if not good or bad is None or bad - good[-1] < 2:
                    break
                rate = float(round((good[-1] + bad) / 2))
                if (await segment("refine", rate, step_s))["bounded"]:
                    good.append(rate)
                else:
                    bad = rate
            confirmed: dict[str, Any] | None = None
            for rate in sorted(good, reverse=True)[:2]:
                seg = await segment("confirm", rate, confirm_s)
                if seg["bounded"]:
                    confirmed = seg
                    break
        finally:
            await stop_peers(peers)
            await stop_process(orderer)
    return {
        "scenario": "loopback-sustained",
        "peers": n,
        "orgs": 2,
        "tls": True,
        "block_size": size,
        "mode": "fabric",
        "step_s": step_s,
        "confirm_s": confirm_s,
        "drain_s": drain_s,
        "bounded_means": f"every block reached all N peers within {drain_s:g} s after the load stopped; the blocks "
        "arrived at >= 90 % of the target rate (measured from the time zeros of the first and last block); and p99 "
        "time to all over the last third of the blocks <= max(2 x p99 over the first third, p99 over the first "
        "third + 0.05 s)",
        "sustained_rate_per_s": confirmed["achieved_rate_per_s"] if confirmed else None,
        "sustained_mb_per_s": confirmed["mb_per_s"] if confirmed else None,
        "sustained_target_rate_per_s": confirmed["rate_per_s"] if confirmed else None,
        "segments": segments,
        "settings": "Fabric's gossip defaults, Fabric dissemination; election.startupGracePeriod 2s; "
        "one envelope per block",
        "machine": machine(),
        "commit": git_commit(),
    }


def sustained_table(run: dict[str, Any]) -> str:
    out = [
        "| phase | target (blocks/s) | achieved (blocks/s) | MB/s | blocks | time to all p50 / p99 / max (s) "
        "| p99 first → last third (s) | all delivered | bounded | CPU % per peer mean / max |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|---:|",
    ]
    for s in run["segments"]:
        out.append(
            f"| {s['phase']} ({s['seconds']:g} s) | {s['rate_per_s']:g} | {s['achieved_rate_per_s']} "
            f"| {s['mb_per_s']} | {s['blocks']} "
            f"| {s['time_to_all_p50_s']} / {s['time_to_all_p99_s']} / {s['time_to_all_max_s']} "
            f"| {s['p99_first_third_s']} → {s['p99_last_third_s']} | {'yes' if s['all_delivered'] else 'no'} "
            f"| {'yes' if s['bounded'] else 'no'} "
            f"| {s['cpu_percent_per_peer_mean']} / {s['cpu_percent_per_peer_max']} |"
        )
    return "\n".join(out)


# --------------------------------------------------------------------------------------------------


def publish(out: Path, name: str, header: str, text: str, data: dict[str, Any]) -> None:
    print()
    print(header)
    print(text, flush=True)
    (out / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    (out / f"{name}.md").write_text(f"*{header}*\n\n{text}\n")


def ints(text: str) -> list[int]:
    values = [int(x) for x in text.split(",") if x.strip()]
    if not values or any(v < 4 or v % 2 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: expected even numbers >= 4 (2 orgs), comma-separated")
    return values


def rates(text: str) -> list[float]:
    values = [float(x) for x in text.split(",") if x.strip()]
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: expected positive rates, comma-separated")
    return values


async def main_async(args: argparse.Namespace) -> None:
    began = time.time()
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)  # clean up as on Ctrl-C
    base = f"machine: {machine()}; commit {git_commit()}; loopback, TLS on, 2 orgs, Fabric's gossip defaults"
    figures = set(args.figures.split(","))
    if figures & {"5", "6"}:
        rows = []
        for n in args.peers:
            t = time.time()
            rows.append(await run_membership(n, args.stress_window))
            print(f"figures 5, 6 at N={n}: {time.time() - t:.0f} s", flush=True)
        head = (
            f"{base}; figures 5 and 6; join: new peer's spawn until every peer lists it alive; crash: SIGKILL "
            f"until every live peer lists it dead; false verdicts: all N live, {rows[0]['stress_burners']} Python "
            f"busy loops loading the {os.cpu_count()} cores for {args.stress_window:g} s per N (rate per hour "
            f"extrapolated from that window: one verdict = {3600 / args.stress_window:g} per hour)"
        )
        publish(args.out, "membership", head, membership_table(rows), {"runs": rows})
    if "7" in figures:
        t = time.time()
        row = await run_catchup(args.catchup_peers, args.catchup_blocks, args.catchup_size, args.feed_rate)
        print(f"figure 7 at N={args.catchup_peers}: {time.time() - t:.0f} s", flush=True)
        head = (
            f"{base}; figure 7 at N = {args.catchup_peers} only; a follower down while the orderer cuts "
            f"{args.catchup_blocks} blocks of {format_size(args.catchup_size)} (fed at {args.feed_rate:g}/s), "
            "then restarted with its ledger"
        )
        publish(args.out, "catchup", head, catchup_table([row]), {"runs": [row]})
    if "8" in figures:
        t = time.time()
        run = await run_sustained(
            args.rate_peers, args.rate_size, args.ramp, args.step, args.confirm, args.drain, args.refine
        )
        print(f"figure 8 at N={args.rate_peers}: {time.time() - t:.0f} s", flush=True)
        if run["sustained_rate_per_s"] is None:
            verdict = "no rate confirmed bounded"
        else:
            verdict = (
                f"sustained rate {run['sustained_rate_per_s']} blocks/s = {run['sustained_mb_per_s']} MB/s "
                f"(target {run['sustained_target_rate_per_s']:g}/s, bounded over {args.confirm:g} s)"
            )
        head = (
            f"{base}; figure 8 at N = {args.rate_peers} only, blocks of {format_size(args.rate_size)}; ramp of "
            f"{args.step:g} s steps, then {args.confirm:g} s at the highest bounded rate; bounded = "
            f"{run['bounded_means']}; {verdict}"
        )
        publish(args.out, "sustained", head, sustained_table(run), run)
    print(f"\nloopback_ops: {time.time() - began:.0f} s wall", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--figures", default="5,6,7,8", help="which of 5,6,7,8 (5 and 6 are one run)")
    parser.add_argument("--peers", type=ints, default=[8, 16], help="N for figures 5 and 6")
    parser.add_argument("--stress-window", type=float, default=60.0, help="seconds of CPU stress per N (figure 5)")
    parser.add_argument("--catchup-peers", type=int, default=8, help="N for figure 7")
    parser.add_argument("--catchup-blocks", type=int, default=1000, help="K, the blocks the restarted peer missed")
    parser.add_argument("--catchup-size", type=parse_size, default=parse_size("4KB"), help="block size, figure 7")
    parser.add_argument("--feed-rate", type=float, default=100.0, help="blocks/s cut while the peer is down")
    parser.add_argument("--rate-peers", type=int, default=8, help="N for figure 8")
    parser.add_argument("--rate-size", type=parse_size, default=parse_size("100KB"), help="block size, figure 8")
    parser.add_argument("--ramp", type=rates, default=[4, 8, 16, 32, 64], help="blocks/s of the ramp's steps")
    parser.add_argument("--step", type=float, default=15.0, help="seconds per ramp step")
    parser.add_argument("--refine", type=int, default=1, help="extra steps between the knee's two rates")
    parser.add_argument("--confirm", type=float, default=60.0, help="seconds of the confirmation run")
    parser.add_argument("--drain", type=float, default=10.0, help="seconds for the last blocks to reach everyone")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    unknown = set(args.figures.split(",")) - {"5", "6", "7", "8"}
    if unknown:
        parser.error(f"--figures: no figure {', '.join(sorted(unknown))} here (5, 6, 7, 8)")
    for name in ("catchup_peers", "rate_peers"):
        if getattr(args, name) < 4 or getattr(args, name) % 2:
            parser.error(f"--{name.replace('_', '-')}: expected an even number >= 4 (2 orgs)")
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        asyncio.run(main_async(args))
    except Failure as exc:
        print(f"loopback_ops: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("loopback_ops: interrupted", file=sys.stderr)
        return 130
    except asyncio.CancelledError:
        print("loopback_ops: terminated", file=sys.stderr)
        return 143
    except Exception as exc:
        print(f"loopback_ops: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
