"""Soak: a rumor network under a hostile peer for half an hour; does the honest peers' memory stay flat?

    python bench/soak.py [--minutes 30] [--rate 2] [--orgs 2] [--peers-per-org 2] [--sample 10] [--round 20]
                         [--no-attack] [--out bench/results]

Network: `rumor network init` in a temporary directory (--orgs x --peers-per-org honest peers plus two spare
identities per org, TLS on, one envelope per block, Fabric's gossip defaults except
election.startupGracePeriod 2 s), `rumor orderer start` and a `rumor peer start` per honest peer, each its own
process (the integration tests' tests/integration/procnet.py Cluster). Before the clock starts, ten blocks of
1 MB are cut (the targets of the state-transfer attack), every peer converges, and the hostile peer is alive
at every honest peer. Then for --minutes: rumor.netup's LoadGenerator submits --rate blocks/s of 1 KB to the
orderer, and one hostile party (tests/integration/hostile.py, with two valid Org1 identities of the network:
its gossip peer and, apart, its never-read stream) replays the adversarial pass's attacks in a loop, one
round every --round seconds against the next honest peer in turn (each peer is attacked every
--round x peers seconds, longer than the 60 s penalty a round earns it):

  1. a MembershipResponse of 100,000 alive messages claiming an honest peer's PKI-ID with wrong signatures,
     unsolicited; then the same as the answer to the victim's next membership request (refused: oversized)
  2. 2,000 alive messages of unknown peers (random PKI-IDs, no identity, junk signatures, one endpoint each on
     127.77.x.y, where nothing listens) as the answer to its next request (dials throttled)
  3. 5,000 forged alive messages as the answer to the next (8 checked, the sender penalized for 60 s)
  4. 250 RemoteStateRequests for the ten 1 MB blocks on a stream it never reads (the stream of the previous
     round is closed first; the victim ends a stalled one after writeTimeout, 30 s)
  5. an alive message with an honest peer's PKI-ID and the attacker's identity, a state response nobody asked
     for, a leadership declaration forged in an honest peer's name, and a replayed alive message
  and all along, to every honest peer: a StateInfo claiming height 10^12, and empty answers to state requests.
An answer waits at most 3 pullIntervals for the victim's request; a request that did not come is skipped.

Sampling: every --sample seconds the RSS (VmRSS of /proc/PID/status) of every honest peer and of the orderer;
every second, GET /healthz of every honest peer (5 s timeout; anything but 200 is a failure). At the end:
blocks committed per peer (its height gained), blocks submitted, attack rounds and their steps done, and each
honest peer's defence counters (/api/status and /metrics).

Verdict "flat within 10 %": the run is cut into sixths; after the first sixth (warm-up: 5 min of 30), the
mean RSS of the second sixth (minutes 5-10) is each honest peer's baseline, the mean of the last sixth
(minutes 25-30) its end; the memory is flat when every honest peer's end is within 10 % of its baseline
(|end - baseline| <= 0.1 x baseline). Shorter runs (--minutes) scale the windows alike. Results:
bench/results/soak-<minutes>min.json and .md, and a table on stdout. --no-attack is the control: the same
network, load and sampling without the hostile party (soak-<minutes>min-control.json and .md), to tell the
memory the attacks cost from what the peers' own work does to it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

# One hostile peer for the tests and this soak, not two copies: the harness of the integration tests.
TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path[:0] = [str(TESTS), str(TESTS / "integration")]

from hostile import (  # noqa: E402
    HostilePeer,
    SilentStream,
    Watch,
    answer_next,
    forged_alive_flood,
    rss_mb,
    unknown_peers_flood,
)
from procnet import Cluster, make_network, submit_direct  # noqa: E402

from rumor.core.types import RemotePeer  # noqa: E402
from rumor.netup import LoadGenerator  # noqa: E402
from rumor.network import PeerEntry, free_base_port  # noqa: E402
from rumor.sim.runner import git_commit, machine  # noqa: E402
from rumor.wire import messages  # noqa: E402

FLAT = 0.10
"""The verdict's tolerance: the end mean within this fraction of the baseline mean."""
ANSWER_WAIT = 3 * 4.0
"""Seconds an attack answer waits for the victim's membership request: 3 of Fabric's 4 s pullIntervals."""


@dataclass
class Adversary:
    """The hostile party: its gossip peer, its never-read stream's identity, and the attack rounds."""

    cluster: Cluster
    hostile: HostilePeer
    silent_as: PeerEntry
    victims: list[tuple[PeerEntry, RemotePeer]]
    claimed: RemotePeer
    steps: Counter[str] = field(default_factory=Counter)
    rounds: int = 0
    _stream: SilentStream | None = None

    def __post_init__(self) -> None:
        wrong = self.hostile.mcs.sign(b"not the payload")  # well-formed: each costs a full signature check
        self._huge = forged_alive_flood(self.claimed, 100_000, wrong)
        self._forged = forged_alive_flood(self.claimed, 5_000, wrong)
        self._unknown = unknown_peers_flood(2000, free_base_port(1))

    async def _answer(self, target: RemotePeer, name: str, build: Any) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(answer_next(self.hostile, target, build), ANSWER_WAIT)
            self.steps[name] += 1
            return
        self.hostile.answer_membership = self.hostile.honest_membership_answer
        self.steps[f"{name} (no request came)"] += 1

    async def round(self, victim: PeerEntry, target: RemotePeer) -> None:
        hostile, channel = self.hostile, self.cluster.layout.channel.encode()
        hostile.send(messages.seal(messages.membership_response_of(self._huge, 0)), [target])
        self.steps["1 unsolicited flood"] += 1
        await self._answer(target, "1 oversized flood", lambda n: messages.membership_response_of(self._huge, n))
        await self._answer(target, "2 unknown peers", lambda n: messages.membership_response_of(self._unknown, n))
        await self._answer(target, "3 forged flood", lambda n: messages.membership_response_of(self._forged, n))
        if self._stream is not None:
            await self._stream.close()
            self._stream = None
        try:
            self._stream = await SilentStream.open(self.cluster.layout, self.silent_as, victim.endpoint)
            for _ in range(250):
                await self._stream.write(messages.seal(messages.state_request(channel, 1, 10, 1)))
            self.steps["4 never-read state requests"] += 1
        except Exception as exc:  # the victim may have ended the previous stream's connection just now
            self.steps[f"4 never-read state requests failed: {type(exc).__name__}"] += 1
        impostor = messages.alive(
            hostile.endpoint, self.claimed.pki_id, time.time_ns(), 1, identity=hostile.mcs.identity
        )
        hostile.send(messages.seal(impostor, hostile.mcs.sign), [target])
        if hostile.last_block is not None:
            response = messages.state_response(channel, [hostile.last_block.data_msg.payload], 99)
            hostile.send(messages.seal(response), [target])
        claim = messages.leadership(channel, self.claimed.pki_id, time.time_ns(), 1, is_declaration=True)
        hostile.send(messages.seal(claim, hostile.mcs.sign), [target])
        replay = hostile.alive_of.get(self.claimed.pki_id)
        if replay is not None:
            hostile.send(replay, [target])
        self.steps["5 other forgeries"] += 1
        self.rounds += 1

    async def run(self, period: float) -> None:
        loop = asyncio.get_running_loop()
        turn = 0
        while True:
            began = loop.time()
            victim, target = self.victims[turn % len(self.victims)]
            await self.round(victim, target)
            turn += 1
            await asyncio.sleep(max(0.0, began + period - loop.time()))  # the pace of the rounds

    async def close(self) -> None:
        if self._stream is not None:
            await self._stream.close()


def window_mean(series: list[tuple[float, float]], start: float, end: float) -> float | None:
    values = [mb for t, mb in series if start <= t <= end]
    return statistics.fmean(values) if values else None


def verdict(series: dict[str, list[tuple[float, float]]], seconds: float) -> dict[str, Any]:
    """Baseline: the mean of the second sixth of the run; end: the mean of the last sixth (see the docstring)."""
    sixth = seconds / 6
    peers: dict[str, Any] = {}
    for name, points in series.items():
        base, end = window_mean(points, sixth, 2 * sixth), window_mean(points, 5 * sixth, seconds + 1)
        change = None if base is None or end is None else (end - base) / base
        peers[name] = {
            "baseline_mb": base,
            "end_mb": end,
            "change": change,
            "flat": change is not None and abs(change) <= FLAT,
        }
    windows = {"baseline_s": [sixth, 2 * sixth], "end_s": [5 * sixth, seconds]}
    return {"flat": all(p["flat"] for p in peers.values()), "tolerance": FLAT, "windows": windows, "peers": peers}


async def defences(cluster: Cluster, peer: PeerEntry) -> dict[str, Any]:
    status = await cluster.status(peer) or {}
    state = status.get("channels", {}).get(cluster.layout.channel, {}).get("state", {})
    keys = ("responses_unsolicited", "responses_oversized", "responses_cut_short", "penalized_messages")
    found = {k: status.get("discovery", {}).get(k) for k in (*keys, "identify_throttled", "alive_forged")}
    found.update({k: state.get(k) for k in ("requests_throttled", "peers_distrusted", "responses_ignored")})
    found["write_timeouts"] = status.get("comm", {}).get("comm_write_timeouts")
    return found


async def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    seconds = args.minutes * 60
    per_org = args.peers_per_org
    layout = make_network(
        tmp / "net",
        orgs=args.orgs,
        peers_per_org=per_org + 2,  # two spare identities per org: the hostile party uses those of org 1
        fast=False,
        max_message_count=1,
        gossip_overrides={"election.startupGracePeriod": "2s"},
    )
    orgs = sorted({p.org for p in layout.peers})
    honest = [p for org in orgs for p in [q for q in layout.peers if q.org == org][:per_org]]
    spares = [p for p in layout.peers if p.org == orgs[0]][per_org:]
    hostile = HostilePeer(layout, spares[0], heartbeat=2.0)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        cluster = Cluster(layout, http)
        try:
            await cluster.start_orderer()
            await cluster.start_peers(honest)
            await cluster.wait_converged(honest, 120)
            await submit_direct(layout, [bytes([i]) * 1_000_000 for i in range(10)])
            await cluster.wait_heights(honest, 11, 120)
            adversary = None
            if not args.no_attack:
                await hostile.start()
                hostile.state_height = 10**12
                hostile.answer_state = lambda msg: messages.state_response(
                    layout.channel.encode(), [], msg.message.nonce
                )
                victims = [(p, await hostile.meet(cluster, p, timeout=120)) for p in honest]
                adversary = Adversary(cluster, hostile, spares[1], victims, victims[0][1])
            print(f"soak: network up in {tmp}; {args.minutes:g} min from now", flush=True)
            return await soak(args, cluster, honest, adversary, seconds)
        finally:
            with contextlib.suppress(Exception):
                await hostile.stop()
            await cluster.close()


async def soak(
    args: argparse.Namespace, cluster: Cluster, honest: list[PeerEntry], adversary: Adversary | None, seconds: float
) -> dict[str, Any]:
    layout = cluster.layout
    start_heights = await cluster.heights(honest)
    pids = {p.id: cluster.running[p.id].pid for p in honest}
    orderer_pid = cluster.running["orderer"].pid
    series: dict[str, list[tuple[float, float]]] = {p.id: [] for p in honest}
    orderer: list[tuple[float, float]] = []
    load = LoadGenerator(layout.root, layout.channel, args.rate, 1024)
    # One watch per honest peer for its health each second; its memory limit only guards the shared machine.
    watches = [Watch(cluster.http, p, pids[p.id], limit_mb=args.guard_mb, interval=1.0) for p in honest]
    began = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        for watch in watches:
            await stack.enter_async_context(watch)
        tasks = [asyncio.create_task(load.run())]
        if adversary is not None:
            tasks.append(asyncio.create_task(adversary.run(args.round)))
        rounds = (lambda: adversary.rounds) if adversary is not None else (lambda: 0)
        try:
            next_sample = began
            while (now := time.monotonic()) - began <= seconds:
                if now >= next_sample:
                    t = now - began
                    for peer in honest:
                        series[peer.id].append((round(t, 1), round(rss_mb(pids[peer.id]), 1)))
                    orderer.append((round(t, 1), round(rss_mb(orderer_pid), 1)))
                    line = " ".join(f"{p.id.split('.')[0]}/{p.org[:4]} {series[p.id][-1][1]:.0f}" for p in honest)
                    print(f"{t / 60:5.1f} min  RSS MiB: {line}  rounds {rounds()}", flush=True)
                    next_sample += args.sample
                for task in tasks:
                    if task.done():
                        task.result()  # a failed load or adversary fails the run
                await asyncio.sleep(min(1.0, max(0.0, next_sample - time.monotonic())))
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if adversary is not None:
                await adversary.close()
    elapsed = time.monotonic() - began
    # Blocks the orderer cut before the end reach everyone: let them drain, then count.
    end_heights = await cluster.heights(honest)
    with contextlib.suppress(AssertionError):
        await cluster.wait_heights(honest, max(h or 0 for h in end_heights.values()), 60)
    end_heights = await cluster.heights(honest)
    result: dict[str, Any] = {
        "machine": machine(),
        "commit": git_commit(),
        "minutes": args.minutes,
        "elapsed_s": round(elapsed, 1),
        "rate_per_s": args.rate,
        "orgs": args.orgs,
        "peers_per_org": args.peers_per_org,
        "sample_s": args.sample,
        "round_s": args.round,
        "blocks_submitted": load.blocks,
        "load_error": load.error,
        "blocks_committed": {p.id: (end_heights[p.id] or 0) - (start_heights[p.id] or 0) for p in honest},
        "health": {w.peer.id: {"ok": w.health_ok, "failed": len(w.health_failures)} for w in watches},
        "health_failures": {w.peer.id: w.health_failures[:20] for w in watches if w.health_failures},
        "guard_breaches": [w.breach for w in watches if w.breach],
        "attack": adversary is not None,
        "rounds": rounds(),
        "steps": dict(adversary.steps) if adversary is not None else {},
        "defences": {p.id: await defences(cluster, p) for p in honest},
        "rss_mb": series,
        "orderer_rss_mb": orderer,
        "verdict": verdict(series, elapsed),
    }
    return result


def mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def markdown(result: dict[str, Any]) -> tuple[str, str]:
    v = result["verdict"]
    b0, b1 = (x / 60 for x in v["windows"]["baseline_s"])
    e0, e1 = (x / 60 for x in v["windows"]["end_s"])
    attack = (
        f"one hostile party replaying the attacks (a round every {result['round_s']:g} s, {result['rounds']} rounds)"
        if result["attack"]
        else "no hostile party (the control run)"
    )
    header = (
        f"machine: {result['machine']}; commit {result['commit']}; soak of {result['elapsed_s'] / 60:.1f} min, "
        f"{result['orgs']} orgs x {result['peers_per_org']} peers + rumor's orderer, {result['rate_per_s']:g} "
        f"blocks/s of 1 KB, {attack}; RSS sampled every {result['sample_s']:g} s; verdict: mean RSS of minutes "
        f"{e0:.1f}-{e1:.1f} against minutes {b0:.1f}-{b1:.1f}, flat when within {v['tolerance']:.0%}"
    )
    rows = [
        "| peer | RSS start (MiB) | baseline mean | end mean | change | peak | blocks committed | healthz ok/failed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, points in result["rss_mb"].items():
        p = v["peers"][name]
        change = "n/a" if p["change"] is None else f"{p['change']:+.1%}"
        health = result["health"][name]
        rows.append(
            f"| {name} | {points[0][1]:.0f} | {mib(p['baseline_mb'])} | {mib(p['end_mb'])} | {change} | "
            f"{max(mb for _, mb in points):.0f} | {result['blocks_committed'][name]} | "
            f"{health['ok']} / {health['failed']} |"
        )
    flat = "**flat within 10 %**" if v["flat"] else "**not flat within 10 %**"
    steps = ", ".join(f"{k}: {n}" for k, n in sorted(result["steps"].items())) or "none"
    lines = [
        *rows,
        "",
        f"Verdict: {flat}. Blocks submitted: {result['blocks_submitted']}. Attack steps: {steps}.",
        "",
        "RSS (MiB) per minute, mean of the samples:",
        "",
    ]
    names = list(result["rss_mb"])
    lines.append("| minute | " + " | ".join(names) + " | orderer |")
    lines.append("|---" * (len(names) + 2) + "|")
    minutes = int(result["elapsed_s"] // 60) + 1
    for m in range(minutes):
        cells = []
        for points in [*(result["rss_mb"][n] for n in names), result["orderer_rss_mb"]]:
            mean = window_mean(points, m * 60, m * 60 + 59.99)
            cells.append("" if mean is None else f"{mean:.0f}")
        if any(cells):
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return header, "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="length of the soak (after the network is up)")
    parser.add_argument("--rate", type=float, default=2.0, help="blocks per second submitted")
    parser.add_argument("--orgs", type=int, default=2)
    parser.add_argument("--peers-per-org", type=int, default=2)
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between RSS samples")
    parser.add_argument("--round", type=float, default=20.0, help="seconds between the hostile rounds")
    parser.add_argument("--no-attack", action="store_true", help="the control run: the same without the attacks")
    parser.add_argument("--guard-mb", type=float, default=1500.0, help="a peer past this RSS is killed (the run fails)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()
    if args.minutes < 1 or args.rate <= 0 or args.orgs < 1 or args.peers_per_org < 1:
        parser.error("--minutes >= 1, --rate > 0, --orgs >= 1 and --peers-per-org >= 1")
    tmp = Path(tempfile.mkdtemp(prefix="rumor-soak-"))
    ok = False
    try:
        result = asyncio.run(run(args, tmp))
        header, text = markdown(result)
        name = f"soak-{args.minutes:g}min" + ("-control" if args.no_attack else "")
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        (args.out / f"{name}.md").write_text(f"*{header}*\n\n{text}\n")
        print(f"\n{header}\n\n{text}\n\nwritten: {args.out / name}.json, .md", flush=True)
        ok = not result["guard_breaches"]
    finally:
        if ok:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"soak: logs kept in {tmp}/net/logs", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # clean up (kill the children) as on Ctrl-C
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
