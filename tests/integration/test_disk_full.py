"""A peer whose disk fills up says so and waits; once space returns it catches up by itself.

Finding: the peer stopped committing for good while /healthz answered OK, logged a traceback every 10 s
("database or disk is full"), and restarted on the full disk it said "ready". Here one peer of two has its data
directory on a small tmpfs, which the test fills with a file while the orderer keeps cutting blocks: the peer
must report unhealthy on /healthz with the reason, keep running and answering, log no traceback and a bounded
number of lines about it, and store nothing it could not store whole. Once the filler is deleted it must be
healthy again and reach the other peer's height; its chain on disk is then whole and the same as the other's.
Restarted on the full disk, it refuses to start with one line that says why.
"""

from __future__ import annotations

import math
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from polling import wait_for
from procnet import Cluster, Load, block_hash, make_network, orderer_height, read_chain, verify_chain
from rumor_processes import RUMOR, clean_env
from smallfs import small_filesystem

from rumor.ledger.health import LOG_INTERVAL
from rumor.network import NetworkLayout

PAYLOAD = 32 * 1024  # big blocks fill the last of the space (and a WAL it may reuse) in few commits


async def test_a_peer_on_a_full_disk_is_unhealthy_and_catches_up_when_space_returns(
    clusters: Callable[[NetworkLayout], Cluster], tmp_path: Path
) -> None:
    layout = make_network(
        tmp_path / "net",
        orgs=1,
        peers_per_org=2,
        max_message_count=1,
        batch_timeout=0.05,
        gossip_overrides={"state.storeRetryInterval": "1s"},
    )
    cluster = clusters(layout)
    healthy, victim = cluster.peers
    with small_filesystem(victim.config.parent / "data", size_mib=16) as fs:
        try:
            await cluster.start_orderer()
            await cluster.start_peers()
            await cluster.wait_converged(cluster.peers, 40)
            await cluster.submit(count=3)
            await cluster.wait_heights(cluster.peers, await orderer_height(layout, 3), 60)
            assert (await cluster.health(victim)) == (200, {"status": "OK"})

            fs.fill()
            failed_at = time.monotonic()
            load = Load(layout, per_round=1, pause=0.05, size=PAYLOAD).start()
            try:
                seen: dict[str, object] = {}

                async def unhealthy() -> list[dict[str, str]] | None:
                    health = await cluster.health(victim)
                    seen["health"] = health
                    if health is None or health[0] != 503:
                        return None
                    return [c for c in health[1]["failed_checks"] if c["component"] == "ledger"] or None

                checks = await wait_for(unhealthy, 60, "the full disk on /healthz", describe=lambda: str(seen))
                reason = checks[0]["reason"]
                assert "disk full" in reason and str(fs.mountpoint) in reason and layout.channel in reason, reason
                assert reason.startswith("cannot store block "), reason

                # It keeps trying, at a bounded rate, while the other peer keeps committing what it cannot.
                async def retried() -> bool:
                    failures = await cluster.metric(victim, "ledger_store_failures_total", channel=layout.channel)
                    heights = await cluster.heights(cluster.peers)
                    seen.update(failures=failures, heights=heights)
                    h, v = heights[healthy.id], heights[victim.id]
                    return failures >= 3 and h is not None and v is not None and h > v + 5

                await wait_for(retried, 60, "retries while the other peer moves on", describe=lambda: str(seen))
                stuck = (await cluster.heights([victim]))[victim.id]
                assert cluster.running[victim.id].running()
                assert (await cluster.health(victim)) is not None  # it answers
            finally:
                submitted = await load.stop()
            full_for = time.monotonic() - failed_at

            fs.free()

            async def healthy_again() -> bool:
                health = await cluster.health(victim)
                seen["health"] = health
                return health == (200, {"status": "OK"})

            await wait_for(healthy_again, 60, "healthy once space returned", describe=lambda: str(seen))
            final = await orderer_height(layout, 3 + submitted)
            assert stuck is not None and final > stuck
            await cluster.wait_heights(cluster.peers, final, 120)

            err = cluster.running[victim.id].stderr()
            assert "Traceback" not in err, err[-4000:]
            # One line when the disk filled, at most one more per LOG_INTERVAL while it stayed full (about the
            # ledger, and as many about the peer list it could not save), one when it stored again.
            bound = 1 + math.ceil(full_for / LOG_INTERVAL)
            about_ledger = [ln for ln in err.splitlines() if "ledger: " in ln and "disk full" in ln]
            assert 1 <= len(about_ledger) <= bound, "\n".join(about_ledger)
            about_disk = [ln for ln in err.splitlines() if "disk" in ln.lower() or "space" in ln.lower()]
            assert len(about_disk) <= 2 * bound, "\n".join(about_disk)
            assert sum("ledger: storing again" in ln for ln in err.splitlines()) == 1, err[-4000:]

            for peer in cluster.peers:
                await cluster.stop(peer.id)
            await cluster.stop("orderer")
            chains = [read_chain(peer, layout.channel) for peer in cluster.peers]
            assert [len(c) for c in chains] == [final, final]
            verify_chain(layout, chains[1])
            assert [block_hash(b) for b in chains[0]] == [block_hash(b) for b in chains[1]]

            # Restarted on a full disk, it refuses to start, in one line, rather than say it is ready.
            fs.fill()
            started = subprocess.run(
                [RUMOR, "peer", "start", "--config", str(victim.config)],
                env=clean_env(), capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False,
            )  # fmt: skip
            assert started.returncode != 0 and "peer ready on" not in started.stdout
            lines = started.stderr.strip().splitlines()
            assert len(lines) == 1 and "Traceback" not in started.stderr, started.stderr
            assert "disk full at" in lines[0] and str(fs.mountpoint) in lines[0] and "free space" in lines[0], lines
            fs.free()
            await cluster.start_peer(victim, join=[])
        finally:
            await cluster.close()  # no process may hold a file on the mount when it is unmounted
