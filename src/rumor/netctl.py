"""Looking at and stopping the processes of a network directory, whoever started them.

Every rumor process that owns state holds a lock file with its PID in it (rumor.lockfile): each peer its data
directory's ``LOCK``, the orderer ``<ledger>.lock`` beside its ledger, ``rumor network up`` the network
directory's ``network-up.lock``. So a network can be inspected and stopped from any shell:

- ``node_states(layout)``: per node, whether a process holds its lock and which one;
- ``stop_network(layout)``: when ``network up`` runs the network, SIGTERM to it (it stops its children in order,
  as on Ctrl-C); otherwise SIGTERM to each node's process, then, past the deadline, SIGKILL to what is left.

A PID read from a lock file counts only while that process is alive and is a rumor process (its command line
names rumor): a stale file, or a recycled PID, is not mistaken for a running node.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rumor.config import ConfigError, load_config
from rumor.network import NetworkLayout
from rumor.orderer.config import load_orderer_config

NETWORK_UP_LOCK = "network-up.lock"


@dataclass(frozen=True)
class NodeState:
    name: str
    kind: str  # "network up", "orderer" or "peer"
    lock: Path
    pid: int | None  # the live rumor process holding the lock, or None

    @property
    def running(self) -> bool:
        return self.pid is not None


def lock_holder(lock: Path) -> int | None:
    """The live rumor process whose PID ``lock`` holds, or None."""
    try:
        pid = int(lock.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    if stat.rsplit(")", 1)[-1].split()[0] == "Z" or b"rumor" not in cmdline:
        return None
    return pid


def node_locks(layout: NetworkLayout) -> list[tuple[str, str, Path]]:
    """(name, kind, lock file) of every process of the network: network up, the orderer, each peer."""
    out = [("network up", "network up", layout.root / NETWORK_UP_LOCK)]
    try:
        orderer = load_orderer_config(layout.orderer_config, env={})
        ledger = orderer.file_ledger.ledger_path
        out.append(("orderer", "orderer", ledger.parent / f"{ledger.name}.lock"))
    except ConfigError:
        pass
    for peer in layout.peers:
        try:
            data = Path(load_config(peer.config, env={}).peer.file_system_path)
        except ConfigError:
            continue
        out.append((peer.id, "peer", data / "LOCK"))
    return out


def node_states(layout: NetworkLayout) -> list[NodeState]:
    return [NodeState(name, kind, lock, lock_holder(lock)) for name, kind, lock in node_locks(layout)]


def stop_network(
    layout: NetworkLayout, *, timeout: float = 30.0, say: Callable[[str], None] = print
) -> list[NodeState]:
    """Stop every running process of the network; returns the states found before stopping. Raises
    TimeoutError naming what did not exit even after SIGKILL."""
    states = node_states(layout)
    supervisor = next((s for s in states if s.kind == "network up" and s.running), None)
    targets = [supervisor] if supervisor is not None else [s for s in states if s.running]
    for state in targets:
        assert state.pid is not None
        say(f"stopping {state.name} (process {state.pid})")
        _signal(state.pid, signal.SIGTERM)
    # network up stops its children before it exits; every node is waited for either way.
    waiting = [s for s in states if s.running]
    deadline = time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        waiting = [s for s in waiting if lock_holder(s.lock) == s.pid]
        if waiting:
            time.sleep(0.1)  # polling other processes' exit; there is nothing to wait on in-process
    for state in waiting:
        assert state.pid is not None
        say(f"{state.name} (process {state.pid}) did not stop within {timeout:g}s: SIGKILL")
        _signal(state.pid, signal.SIGKILL)
    end = time.monotonic() + 5
    while waiting and time.monotonic() < end:
        waiting = [s for s in waiting if lock_holder(s.lock) == s.pid]
        if waiting:
            time.sleep(0.1)
    if waiting:
        raise TimeoutError(", ".join(f"{s.name} (process {s.pid})" for s in waiting) + " still running")
    return states


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)
