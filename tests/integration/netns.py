"""Hosts for the fault tests: one Linux network namespace per node on a bridge, and partitions between them.

A ``Subnet`` is a small LAN made for one test: a bridge on the host holding 10.77.N.1/24 (the test process takes
part through it: it observes the nodes and submits to the orderer) and, per node, a network namespace joined to
the bridge by a veth pair, with its own address 10.77.N.k/24 on ``eth0`` and its loopback up. A process runs
inside with ``ip netns exec NAME`` (``Host.wrap``); ``ip netns exec`` execs the command, so its PID is the
process's own and kill -9 reaches it directly.

``partition(group)`` loads nftables rules into the namespaces of the group that drop every packet to or from an
address outside the group (the bridge's own address excepted, so the test still observes): silently, as a cut
cable does, so that open TCP connections hang until their timeouts rather than fail at once. Rules in the
group's namespaces alone cut both directions. ``heal()`` removes them.

Parallel runs never collide: every name carries a random run id, and the subnet's N is claimed by an exclusive
flock on /run/rumor-netns/N.lock, held while the subnet lives (the kernel drops it however the test process
ends). A lock file that nobody holds names the run that wrote it; that run's namespaces and bridge, if any are
left, are removed before N is used again. ``close()`` kills whatever still runs in the namespaces, deletes them
with their veth pairs, and the bridge. Needs root, ``ip`` (iproute2) and ``nft`` (nftables):
``unavailable()`` says what is missing; ``make test`` installs the tools.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

LOCK_DIR = Path("/run/rumor-netns")
PREFIX = "10.77"
TABLE = "rumor_partition"
_NETNS_PREFIX = "rumor-"
_BRIDGE_PREFIX = "rb"  # interface names have at most 15 characters: rb + 8 hex digits of the run id
_VETH_PREFIX = "rv"  # rv + run id + host number


class NetnsError(RuntimeError):
    """A command that builds or changes the subnet failed; the message quotes it and its stderr."""


def _run(*cmd: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(cmd), input=stdin, capture_output=True, text=True, timeout=30, check=False)
    if check and done.returncode != 0:
        raise NetnsError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def unavailable() -> str | None:
    """Why namespaces cannot be made here (the reason a test skips with), or None when they can."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "creating network namespaces needs root (run the tests as root; the CI machines are root)"
    for tool, package in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            return f"{tool} is missing: `make test` (as root) installs Debian's {package}"
    probe = f"{_NETNS_PREFIX}probe-{secrets.token_hex(4)}"
    made = _run("ip", "netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"ip netns add fails here: {made.stderr.strip()}"
    try:
        # nftables inside a namespace needs the kernel's nf_tables: try what partition() will do.
        listed = _run("ip", "netns", "exec", probe, "nft", "add", "table", "inet", TABLE, check=False)
        if listed.returncode != 0:
            return f"nft does not work in a network namespace here: {listed.stderr.strip()}"
    finally:
        _run("ip", "netns", "del", probe, check=False)
    return None


@dataclass(frozen=True)
class Host:
    """One node's namespace: its name, its address on the bridge, the host side of its veth pair."""

    name: str
    netns: str
    address: str
    veth: str

    def wrap(self) -> tuple[str, ...]:
        """The argv prefix that runs a command inside this namespace."""
        return ("ip", "netns", "exec", self.netns)

    def run(self, *cmd: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a short command inside the namespace; NetnsError when it fails (unless not ``check``)."""
        return _run(*self.wrap(), *cmd, stdin=stdin, check=check)


@dataclass
class Subnet:
    """A bridge and the namespaces of one test; make it with ``Subnet.create()``, a context manager."""

    run_id: str
    index: int
    _lock: int
    hosts: dict[str, Host] = field(default_factory=dict)
    _cut: set[str] = field(default_factory=set)

    @property
    def bridge(self) -> str:
        return f"{_BRIDGE_PREFIX}{self.run_id}"

    @property
    def gateway(self) -> str:
        """The host's own address on the bridge."""
        return f"{PREFIX}.{self.index}.1"

    @classmethod
    @contextlib.contextmanager
    def create(cls) -> Iterator[Subnet]:
        run_id = secrets.token_hex(4)
        index, lock = _claim_index(run_id)
        subnet = cls(run_id, index, lock)
        try:
            _run("ip", "link", "add", subnet.bridge, "type", "bridge")
            _run("ip", "addr", "add", f"{subnet.gateway}/24", "dev", subnet.bridge)
            _run("ip", "link", "set", subnet.bridge, "up")
            yield subnet
        finally:
            subnet.close()

    def add_host(self, name: str) -> Host:
        """A namespace for the node ``name`` with the next free address."""
        number = len(self.hosts) + 2
        if number > 254:
            raise NetnsError("a subnet holds at most 253 hosts")
        label = re.sub(r"[^A-Za-z0-9_.-]", "-", name)
        host = Host(name, f"{_NETNS_PREFIX}{self.run_id}-{label}", f"{PREFIX}.{self.index}.{number}",
                    f"{_VETH_PREFIX}{self.run_id}{number}")  # fmt: skip
        self.hosts[name] = host  # before the first command: close() removes what was made of it
        _run("ip", "netns", "add", host.netns)
        _run("ip", "link", "add", host.veth, "type", "veth", "peer", "name", "eth0", "netns", host.netns)
        _run("ip", "link", "set", host.veth, "master", self.bridge, "up")
        _run("ip", "-n", host.netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
        _run("ip", "-n", host.netns, "link", "set", "eth0", "up")
        _run("ip", "-n", host.netns, "link", "set", "lo", "up")
        return host

    def partition(self, group: Iterable[Host]) -> None:
        """Cut ``group`` off from every other host of the subnet (the group's members still reach each other,
        and the test's process at ``gateway`` reaches everyone); replaces any partition in place."""
        members = list(group)
        self.heal()
        allowed = ", ".join([self.gateway, *(h.address for h in members)])
        rules = f"""
            table inet {TABLE} {{
                set allowed {{ type ipv4_addr; elements = {{ {allowed} }} }}
                chain input {{
                    type filter hook input priority 0; policy accept;
                    iifname "lo" accept
                    ip saddr @allowed accept
                    drop
                }}
                chain output {{
                    type filter hook output priority 0; policy accept;
                    oifname "lo" accept
                    ip daddr @allowed accept
                    drop
                }}
            }}
        """
        for host in members:
            self._cut.add(host.name)
            host.run("nft", "-f", "-", stdin=rules)

    def heal(self) -> None:
        """Remove every partition rule."""
        for name in sorted(self._cut):
            self.hosts[name].run("nft", "delete", "table", "inet", TABLE)
            self._cut.discard(name)

    def close(self) -> None:
        """Kill what still runs in the namespaces, delete them and the bridge, release N. Idempotent."""
        for host in self.hosts.values():
            _kill_inside(host.netns)
            # The veth pair first, by its host side: the kernel destroys a deleted namespace (and the devices
            # still in it) asynchronously, which would leave the host side listed for a moment.
            _run("ip", "link", "del", host.veth, check=False)
            _run("ip", "netns", "del", host.netns, check=False)
        self.hosts.clear()
        self._cut.clear()
        _run("ip", "link", "del", self.bridge, check=False)
        if self._lock >= 0:
            os.close(self._lock)  # the lock file stays, naming this run: nothing of it is left to sweep
            self._lock = -1

    def leftovers(self) -> list[str]:
        """Namespaces and links of this run that exist now (empty after ``close()``)."""
        return _objects_of(self.run_id)


def _kill_inside(netns: str) -> None:
    """SIGKILL every process in ``netns`` (all of them started by the test that made it)."""
    pids = _run("ip", "netns", "pids", netns, check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


def _objects_of(run_id: str) -> list[str]:
    names = [n.split()[0] for n in _run("ip", "netns", "list", check=False).stdout.splitlines() if n.strip()]
    found = [f"netns {n}" for n in names if n.startswith(f"{_NETNS_PREFIX}{run_id}-")]
    links = _run("ip", "-o", "link", "show", check=False).stdout.splitlines()
    for line in links:
        link = line.split(":", 2)[1].strip().split("@")[0] if line.count(":") >= 2 else ""
        if link in (f"{_BRIDGE_PREFIX}{run_id}",) or link.startswith(f"{_VETH_PREFIX}{run_id}"):
            found.append(f"link {link}")
    return found


def _sweep(run_id: str) -> None:
    """Remove what a run that is gone (its lock released without close) left behind."""
    if not re.fullmatch(r"[0-9a-f]{8}", run_id):
        return
    for obj in _objects_of(run_id):
        kind, name = obj.split(" ", 1)
        if kind == "netns":
            _kill_inside(name)
            _run("ip", "netns", "del", name, check=False)
        else:  # veth pairs and the bridge; deleting one end of a pair deletes the other
            _run("ip", "link", "del", name, check=False)


def _claim_index(run_id: str) -> tuple[int, int]:
    """The first N whose lock this run gets and whose 10.77.N.0/24 no interface of the host uses."""
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    for index in range(256):
        fd = os.open(LOCK_DIR / f"{index}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        previous = os.read(fd, 64).decode(errors="replace").strip()
        if previous:
            _sweep(previous)
        if _run("ip", "-4", "route", "show", f"{PREFIX}.{index}.0/24", check=False).stdout.strip():
            os.close(fd)  # someone else's network (not a rumor test's: those hold the lock)
            continue
        os.ftruncate(fd, 0)
        os.pwrite(fd, run_id.encode(), 0)
        return index, fd
    raise NetnsError(f"no free subnet {PREFIX}.N.0/24 (every lock in {LOCK_DIR} held or every subnet in use)")
