"""``rumor network up``: a whole network on this machine, with a load generator and the live dashboard.

    network up ──(network init, when DIR holds no network yet)
       ├── orderer        child process `rumor orderer start`, log in DIR/logs/orderer.log
       ├── peer × N       child processes `rumor peer start --join`, logs in DIR/logs/<peer id>.log
       ├── load           signed envelopes to the orderer, one full batch (= one block) per 1/rate seconds
       └── dashboard      HTTP + WebSocket on 127.0.0.1:8080 (or a free port): polls every peer's /api/status,
                          broadcasts snapshots; its buttons stop and start peers and pause the load

Ctrl-C (SIGINT), SIGTERM, SIGHUP or ``--duration`` stops the load, then every peer (SIGTERM, SIGKILL after a grace
period), then the orderer. The ledgers stay in DIR, so the next ``network up`` on DIR resumes them. Children
run in their own process group (a Ctrl-C in the terminal reaches only this process, which stops them in order)
and are asked by the kernel to stop should this process die without cleaning up (PR_SET_PDEATHSIG).

Everything the user can get wrong ends in one line (``NetUpError``): a port in use, a DIR holding something
else, missing crypto material; a child that dies at start adds its last log lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import logging
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import aiohttp
import yaml
from aiohttp import web
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from rumor.config import ConfigError, load_config
from rumor.etcdnet import etcd_binary
from rumor.lockfile import DirectoryLock, DirectoryLocked
from rumor.netctl import NETWORK_UP_LOCK
from rumor.network import MANIFEST, NetworkInitError, NetworkLayout, init_network, load_layout
from rumor.ops.dashboard import ControlError, Dashboard, format_duration

log = logging.getLogger("rumor.netup")

DEFAULT_DIR = Path("rumor-network")
DEFAULT_DASHBOARD_PORT = 8080
LOG_TAIL = 12

EXIT_USAGE = 2
EXIT_FAILURE = 1


class NetUpError(Exception):
    """``network up`` cannot go on: one line, plus optional detail lines (a child's last log lines)."""

    def __init__(self, message: str, details: Sequence[str] = (), code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.details = list(details)
        self.code = code


@dataclass
class UpOptions:
    """What ``rumor network up`` was asked; None means "the default, or what DIR already has"."""

    dir: Path = DEFAULT_DIR
    orgs: int | None = None
    peers_per_org: int | None = None
    channel: str | None = None
    base_port: int | None = None
    rate: float = 2.0
    duration: float | None = None
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int | None = None
    """None: 8080, or a free port when 8080 is taken; 0: any free port; else exactly this port."""
    payload_size: int = 64
    poll_interval: float = 0.5
    start_timeout: float = 60.0
    stop_timeout: float = 10.0
    catch_up_timeout: float = 20.0
    summary_interval: float = 10.0
    log_level: str = "info"
    log_format: str = "text"


# --------------------------------------------------------------------------------------------------
# Child processes


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel send this process SIGTERM when ``parent_pid`` (network up) dies.

    Called by the child itself right after exec: doing it between fork and exec (preexec_fn) can deadlock
    the child when the parent has threads (aiohttp's resolver runs some), and a restarted peer then hangs
    before it prints a line.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


PARENT_ENV = "_RUMOR_DIE_WITH_PARENT"
"""Set in a child's environment to network up's PID: the child's ``rumor`` main calls die_with_parent with it.
(Not RUMOR_*: those name configuration keys.)"""


def rumor_command() -> list[str]:
    """How to run the ``rumor`` CLI of this very installation (the interpreter running us), as our child.
    ``python -m rumor peer start ...``, so that ps shows which node each child is."""
    return [sys.executable, "-m", "rumor"]


def child_environment(base: Mapping[str, str]) -> dict[str, str]:
    return {**base, PARENT_ENV: str(os.getpid())}


def describe_exit(code: int, *, context: str = "on its own") -> str:
    """How a child ended, from its return code: asyncio reports death by signal N as -N, and "exit code -9"
    reads as if the program had chosen to exit rather than been killed by someone (the OOM killer, kill -9)."""
    if code < 0:
        try:
            signame = signal.Signals(-code).name
        except ValueError:
            signame = f"signal {-code}"
        return f"killed by {signame}"
    return f"exited {context} (exit code {code})"


def tail(path: Path, lines: int = LOG_TAIL, start: int = 0) -> list[str]:
    """The last ``lines`` lines of ``path`` from byte offset ``start`` on ([] if unreadable)."""
    try:
        with path.open("rb") as f:
            f.seek(start)
            data = f.read()
    except OSError:
        return []
    return [line.rstrip() for line in data.decode(errors="replace").splitlines() if line.strip()][-lines:]


class Child:
    """One child process (orderer or peer): started, waited for its ready line, stopped, restarted."""

    def __init__(
        self,
        name: str,
        kind: str,
        args: Sequence[str],
        log_path: Path,
        ready_prefix: str,
        log_level: str,
        log_format: str = "text",
        *,
        command: Sequence[str] | None = None,
        ready_address: str | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.command = list(command) if command is not None else None
        """A program other than rumor (an etcd member); it is ready once ``ready_address`` accepts connections."""
        self.ready_address = ready_address
        self.cwd = cwd
        self.name = name
        self.kind = kind
        self.args = list(args)
        self.log_path = log_path
        self.ready_prefix = ready_prefix
        self.log_level = log_level
        self.log_format = log_format
        self.proc: asyncio.subprocess.Process | None = None
        self.state = "stopped"
        """stopped, starting, running, stopping, exited (died on its own)."""
        self.ready_line = ""
        self.returncode: int | None = None
        self.on_exit: Callable[[Child, int], None] | None = None
        self._log_start = 0
        self._drain: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def log_tail(self, lines: int = LOG_TAIL) -> list[str]:
        return tail(self.log_path, lines, self._log_start)

    async def start(self, timeout: float) -> str:
        """Spawn the process and wait for its ready line; NetUpError (with the log's tail) if it dies first."""
        if self.state in ("starting", "running"):
            raise ControlError(f"{self.name} is already {self.state}")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log_file:
            self._log_start = log_file.tell()
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log_file.write(f"--- rumor network up: starting {self.name} at {stamp} ---\n".encode())
            log_file.flush()
            env = child_environment(os.environ)
            env.setdefault("GRPC_VERBOSITY", "NONE")
            env.setdefault("PYTHONUNBUFFERED", "1")
            self.state = "starting"
            self.returncode = None
            argv = (
                self.command
                if self.command is not None
                else [*rumor_command(), "--log-level", self.log_level, "--log-format", self.log_format, *self.args]
            )
            self.proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=log_file,
                env=env,
                process_group=0,
                cwd=self.cwd,
            )
        assert self.proc.stdout is not None
        try:
            async with asyncio.timeout(timeout):
                while self.ready_address is not None:
                    if self.proc.returncode is not None:
                        self.state = "exited"
                        self.returncode = self.proc.returncode
                        raise NetUpError(
                            f"{self.name} exited at start (exit code {self.returncode}); "
                            f"last lines of {self.log_path}:",
                            self.log_tail(),
                            code=EXIT_FAILURE,
                        )
                    if not port_free(self.ready_address):  # it listens
                        self.ready_line = f"{self.name} listening on {self.ready_address}"
                        break
                    await asyncio.sleep(0.1)  # polling the port: etcd prints no ready line of its own
                while self.ready_address is None:
                    raw = await self.proc.stdout.readline()
                    if not raw:  # the child closed stdout: it is exiting
                        code = await self.proc.wait()
                        self.state = "exited"
                        self.returncode = code
                        raise NetUpError(
                            f"{self.name} {describe_exit(code, context='at start')}; last lines of {self.log_path}:",
                            self.log_tail(),
                            code=EXIT_FAILURE,
                        )
                    line = raw.decode(errors="replace").strip()
                    self._append_log(line)
                    if line.startswith(self.ready_prefix):
                        self.ready_line = line
                        break
        except TimeoutError:
            await self.kill()
            self.state = "exited"
            raise NetUpError(
                f"{self.name} did not become ready within {timeout:g}s; last lines of {self.log_path}:",
                self.log_tail(),
                code=EXIT_FAILURE,
            ) from None
        self.state = "running"
        self._drain = asyncio.get_running_loop().create_task(self._drain_stdout(), name=f"drain-{self.name}")
        self._watch = asyncio.get_running_loop().create_task(self._watch_exit(), name=f"watch-{self.name}")
        return self.ready_line

    def _append_log(self, line: str) -> None:
        with contextlib.suppress(OSError), self.log_path.open("a") as f:
            f.write(f"[stdout] {line}\n")

    async def _drain_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while raw := await self.proc.stdout.readline():
            self._append_log(raw.decode(errors="replace").rstrip())

    async def _watch_exit(self) -> None:
        assert self.proc is not None
        code = await self.proc.wait()
        self.returncode = code
        if self.state == "running":  # nobody asked it to stop
            self.state = "exited"
            if self.on_exit is not None:
                self.on_exit(self, code)

    async def stop(self, timeout: float) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; the process is reaped when this returns."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            self.state = "stopped" if self.state != "exited" else "exited"
            await self._reap_tasks()
            return
        self.state = "stopping"
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(timeout):
                await proc.wait()
        except TimeoutError:
            log.warning("%s did not stop within %gs; killing it", self.name, timeout)
            await self.kill()
        self.returncode = proc.returncode
        self.state = "stopped"
        await self._reap_tasks()

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()

    async def _reap_tasks(self) -> None:
        for task in (self._drain, self._watch):
            if task is not None and not task.done():
                if task is self._drain:
                    with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                        async with asyncio.timeout(2):
                            await asyncio.shield(task)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._drain = self._watch = None


# --------------------------------------------------------------------------------------------------
# Checks before anything starts


def _split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


def port_free(address: str) -> bool:
    """Whether a TCP listener could bind ``host:port`` now (port 0 always can)."""
    host, port = _split_address(address)
    if port == 0:
        return True
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise NetUpError(f"cannot bind {address}: {exc.strerror or exc}") from None
    return True


@dataclass(frozen=True)
class PeerPlan:
    name: str
    org: str
    config: Path
    listen: str
    operations: str
    joins: bool = True
    """Whether its org is a member of the network's channel (a peer of another org starts without --join)."""


@dataclass(frozen=True)
class OrdererPlan:
    name: str
    config: Path
    listen: str


@dataclass(frozen=True)
class EtcdPlan:
    name: str
    config: Path
    client: str
    peer: str


@dataclass
class NetworkPlan:
    layout: NetworkLayout
    orderer_listen: str
    peers: list[PeerPlan] = field(default_factory=list)
    created: bool = False
    orderers: list[OrdererPlan] = field(default_factory=list)
    """Every orderer (the first listens on ``orderer_listen``)."""
    etcd: list[EtcdPlan] = field(default_factory=list)
    """The etcd members of an etcd ordering service (none with solo)."""


def prepare_network(options: UpOptions, say: Callable[[str], None]) -> NetworkPlan:
    """Find or create the network in ``options.dir`` and check it can start: material there, ports free."""
    root = options.dir.expanduser().resolve()
    created = False
    existed = root.exists()
    if (root / MANIFEST).is_file():
        try:
            layout = load_layout(root)
        except NetworkInitError as exc:
            raise NetUpError(str(exc)) from None
        given = {
            "--orgs": options.orgs,
            "--peers-per-org": options.peers_per_org,
            "--channel": options.channel,
            "--base-port": options.base_port,
        }
        say(f"resuming the network in {root} ({len(layout.peers)} peers, channel {layout.channel})")
        ignored = [name for name, value in given.items() if value is not None]
        if ignored:
            say(f"note: {root} holds a network already; {', '.join(ignored)} apply only to a new one (ignored)")
    elif root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise NetUpError(
            f"{root} holds something else, not a rumor network (no {MANIFEST}); give --dir an empty or new "
            "directory, or one made by `rumor network init`"
        )
    else:
        orgs, per_org = options.orgs or 2, options.peers_per_org or 4
        say(f"creating a network of {orgs} orgs × {per_org} peers in {root}")
        try:
            layout = init_network(
                root,
                orgs=orgs,
                peers_per_org=per_org,
                channel=options.channel or "mychannel",
                base_port=options.base_port if options.base_port is not None else 7050,
            )
        except (NetworkInitError, ValueError, OSError) as exc:
            raise NetUpError(str(exc)) from None
        created = True
    try:
        plan = check_network(layout)
        check_ports(plan)
    except NetUpError:
        if created:  # do not leave a half-usable network behind for the next try
            if existed:
                for child in root.iterdir():
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
            else:
                shutil.rmtree(root, ignore_errors=True)
        raise
    plan.created = created
    return plan


def _missing(path: Path, who: str, key: str, root: Path) -> NetUpError:
    return NetUpError(
        f"missing crypto material: {path} ({who}'s {key}) does not exist; the network in {root} is incomplete: "
        "restore its crypto/ directory, or start a new network in an empty directory"
    )


def check_network(layout: NetworkLayout) -> NetworkPlan:
    """Load every config of the network and check that the files they name exist."""
    from rumor.orderer.config import load_orderer_config

    root = layout.root
    if not layout.genesis.is_file():
        raise NetUpError(f"missing genesis block: {layout.genesis}; the network in {root} is incomplete")
    if not (root / "crypto").is_dir():
        raise NetUpError(
            f"missing crypto material: {root / 'crypto'} does not exist; restore it, or start a new network in an "
            "empty directory"
        )
    entries = getattr(layout, "orderers", ()) or ()
    configs = [(e.id, e.config) for e in entries] or [("orderer", layout.orderer_config)]
    orderers: list[OrdererPlan] = []
    for name, path in configs:
        try:
            orderer = load_orderer_config(path)
        except ConfigError as exc:
            raise NetUpError(str(exc)) from None
        general = orderer.general
        msp = Path(general.local_msp_dir)
        for file, key in [
            (msp / "signcerts", "General.LocalMSPDir"),
            (msp / "keystore", "General.LocalMSPDir"),
            *([(Path(general.tls.certificate), "General.TLS.Certificate")] if general.tls.enabled else []),
            *([(Path(general.tls.private_key), "General.TLS.PrivateKey")] if general.tls.enabled else []),
        ]:
            if not file.exists():
                raise _missing(file, "the orderer" if len(configs) == 1 else name, key, root)
        orderers.append(OrdererPlan(name, path, general.listen_address))
    etcd: list[EtcdPlan] = []
    for member in getattr(layout, "etcd", ()) or ():
        if not member.config.is_file():
            raise NetUpError(f"missing etcd configuration: {member.config}; the network in {root} is incomplete")
        settings = yaml.safe_load(member.config.read_text())
        peer_url = str(settings["listen-peer-urls"]).split(",")[0]
        etcd.append(EtcdPlan(member.name, member.config, member.endpoint, peer_url.split("://", 1)[-1]))
    if etcd and etcd_binary() is None:
        raise NetUpError(
            "this network orders through etcd, and etcd is not installed (Debian: apt-get install etcd-server)"
        )
    plan = NetworkPlan(layout, orderers[0].listen, orderers=orderers, etcd=etcd)
    for entry in layout.peers:
        if not entry.config.is_file():
            raise NetUpError(f"missing peer configuration: {entry.config}; the network in {root} is incomplete")
        try:
            config = load_config(entry.config)
        except ConfigError as exc:
            raise NetUpError(str(exc)) from None
        peer = config.peer
        msp = Path(peer.msp_config_path)
        files = [(msp / "signcerts", "peer.mspConfigPath"), (msp / "keystore", "peer.mspConfigPath")]
        if peer.tls.enabled:
            files += [(Path(peer.tls.cert_file), "peer.tls.cert.file"), (Path(peer.tls.key_file), "peer.tls.key.file")]
        for path, key in files:
            if not path.exists():
                raise _missing(path, entry.id, key, root)
        in_channel = getattr(layout, "in_channel", None)
        joins = in_channel(entry) if in_channel is not None else True
        plan.peers.append(
            PeerPlan(entry.id, entry.org, entry.config, peer.listen_address, config.operations.listen_address, joins)
        )
    return plan


def check_ports(plan: NetworkPlan) -> None:
    wanted = [(plan.orderer_listen, "the orderer's General.ListenAddress")]
    wanted += [(o.listen, f"{o.name}'s General.ListenAddress") for o in plan.orderers[1:]]
    for member in plan.etcd:
        wanted += [
            (member.client, f"etcd member {member.name}'s client URL"),
            (member.peer, f"{member.name}'s peer URL"),
        ]
    for peer in plan.peers:
        wanted.append((peer.listen, f"{peer.name}'s peer.listenAddress"))
        if peer.operations:
            wanted.append((peer.operations, f"{peer.name}'s operations.listenAddress"))
    for address, what in wanted:
        if not port_free(address):
            port = _split_address(address)[1]
            raise NetUpError(
                f"port {port} is in use ({what}, {address}): is this network already running, or another one on "
                "the same ports? Stop it, or create a new network elsewhere with --dir and another --base-port"
            )


# --------------------------------------------------------------------------------------------------
# The load generator


class LoadGenerator:
    """Submits one full batch of envelopes every 1/rate seconds, so the orderer cuts one block each time."""

    def __init__(self, root: Path, channel: str, rate: float, payload_size: int) -> None:
        self.root = root
        self.channel = channel
        self.rate = rate
        self.payload_size = payload_size
        self.paused = False
        self.blocks = 0
        self.error: str | None = None
        self._resume = asyncio.Event()
        self._resume.set()

    def set_paused(self, paused: bool) -> None:
        self.paused = paused
        if paused:
            self._resume.clear()
        else:
            self._resume.set()

    def state(self) -> dict[str, Any]:
        return {"rate": self.rate, "paused": self.paused, "blocks": self.blocks, "error": self.error}

    async def run(self) -> None:
        from rumor.channelconfig import load_block, read_genesis
        from rumor.crypto.identity import load_signing_identity
        from rumor.orderer.client import BroadcastClient, BroadcastError
        from rumor.orderer.netdir import network_target

        target = network_target(self.root, self.channel)
        signer = load_signing_identity(target.msp_dir, target.mspid)
        config = read_genesis(load_block(self.root / "channels" / f"{self.channel}.block"))
        per_block = max(1, config.batch.max_message_count or 1)
        loop = asyncio.get_running_loop()
        period = 1.0 / self.rate
        from rumor.network import load_layout

        endpoints = load_layout(self.root).orderer_endpoints  # a failover goes to the next orderer
        async with BroadcastClient(endpoints, signer, tls=target.tls, timeout=5.0) as client:
            deadline = loop.time()
            while True:
                if self.paused:
                    await self._resume.wait()
                    deadline = loop.time()
                number = self.blocks
                payloads = [
                    (f"rumor load block {number} item {i} ".encode() + b"." * self.payload_size)[: self.payload_size]
                    for i in range(per_block)
                ]
                try:
                    await client.submit_many(self.channel, payloads)
                    self.blocks += 1
                    if self.error:
                        log.info("load generator: the orderer takes envelopes again")
                    self.error = None
                except BroadcastError as exc:
                    if not self.error:
                        log.warning("load generator: %s", exc)
                    self.error = f"orderer: {exc}"
                deadline += period
                delay = deadline - loop.time()
                if delay < -1.0:  # far behind (the orderer was down): do not make up for lost time
                    deadline = loop.time()
                    delay = 0.0
                await asyncio.sleep(max(0.0, delay))


# --------------------------------------------------------------------------------------------------
# The whole thing


class NetworkUp:
    """Runs the network; also the dashboard's controls (stop/start peers, pause the load)."""

    def __init__(self, options: UpOptions, out: TextIO | None = None) -> None:
        self.options = options
        self.out = out or sys.stdout
        self.console = Console(file=self.out, highlight=False, soft_wrap=True)
        self.interactive = self.console.is_terminal
        self.plan: NetworkPlan | None = None
        self.orderer: Child | None = None
        self.orderers: dict[str, Child] = {}
        """Every orderer, the first being ``orderer``."""
        self.etcd: dict[str, Child] = {}
        self._ordering: dict[str, Any] = {}
        """What _watch_ordering last read from etcd."""
        self.peers: dict[str, Child] = {}
        self.ops_addresses: dict[str, str] = {}
        self.load: LoadGenerator | None = None
        self.dashboard: Dashboard | None = None
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._stop = asyncio.Event()
        self._signals = 0
        self._up = False
        """True once every child is ready and the dashboard URL is out."""

    # --- output ---------------------------------------------------------------------------------

    def say(self, text: str) -> None:
        with contextlib.suppress(OSError):  # a closed terminal (SIGHUP) must not stop the clean-up
            print(text, file=self.out, flush=True)

    # --- controls (the dashboard's buttons) -----------------------------------------------------

    def processes(self) -> Mapping[str, str]:
        return {name: _process_label(child) for name, child in self.peers.items()}

    def ordering_state(self) -> Mapping[str, Any] | None:
        """The ordering service for the dashboard: each orderer, each channel's cutter, each etcd member."""
        if self.plan is None:
            return None
        state = dict(self._ordering)
        state["consensus"] = "etcd" if self.plan.etcd else "solo"
        stored = state.pop("stored", {})
        state["orderers"] = [
            {
                "id": name,
                "endpoint": _dial(entry.listen) if entry.listen else "",
                "process": child.state,
                "stored": {ch: heights.get(name) for ch, heights in stored.items() if name in heights},
            }
            for (name, child), entry in zip(
                self._orderer_children(), self.plan.orderers or [OrdererPlan("orderer", Path(), "")], strict=False
            )
        ]
        members = {m["name"]: m for m in state.get("etcd", [])}
        state["etcd"] = [
            {**members.get(name, {"name": name, "endpoint": member.client, "healthy": False}), "process": child.state}
            for (name, child), member in zip(self.etcd.items(), self.plan.etcd, strict=True)
        ]
        return state

    async def _watch_ordering(self, plan: NetworkPlan) -> None:
        """Every second: each channel's cutter and stored heights, and each etcd member's Status, from etcd."""
        from rumor.orderer.etcd import EtcdClient, EtcdError

        client = EtcdClient([m.client for m in plan.etcd], request_timeout=2.0)
        prefix = "/rumor/orderer"
        with contextlib.suppress(ConfigError, OSError):
            from rumor.orderer.config import load_orderer_config

            prefix = load_orderer_config(plan.orderers[0].config).consensus.etcd.key_prefix
        channel = plan.layout.channel
        try:
            while True:
                state: dict[str, Any] = {"cutters": {}, "stored": {}, "etcd": [], "error": None}
                try:
                    kvs, _ = await client.range_all(f"{prefix}/{channel}/stored/".encode())
                    state["stored"][channel] = {kv.key.decode().rsplit("/", 1)[1]: int(kv.value) for kv in kvs}
                    leader = await client.get(f"{prefix}/{channel}/leader".encode())
                    state["cutters"][channel] = leader.value.decode() if leader is not None else None
                except EtcdError as exc:
                    state["error"] = f"etcd: {exc}"
                for index, member in enumerate(plan.etcd):
                    entry: dict[str, Any] = {"name": member.name, "endpoint": member.client}
                    try:
                        status = await client.status(index, timeout=1.0)
                        entry.update(
                            healthy=status.leader != 0 and not status.errors,
                            leader=status.leader == status.header.member_id,
                            db_size=status.dbSize,
                            version=status.version,
                        )
                    except Exception as exc:  # a member down: grpc's error, shown as it is
                        entry.update(healthy=False, error=type(exc).__name__)
                    state["etcd"].append(entry)
                self._ordering = state
                await asyncio.sleep(1.0)  # the dashboard's pace, not a synchronization
        finally:
            await client.close()

    def load_state(self) -> Mapping[str, Any] | None:
        if self.load is None:
            return {"rate": 0, "paused": False, "blocks": 0, "error": None}
        return self.load.state()

    def set_load_paused(self, paused: bool) -> None:
        if self.load is None:
            return
        if self.load.paused != paused:
            self.load.set_paused(paused)
            verb = "paused" if paused else "resumed"
            self._event(f"load_{verb}", f"operator {verb} the load")

    async def stop_peer(self, name: str) -> None:
        child = self._child(name)
        if child.state not in ("running", "starting"):
            raise ControlError(f"{name} is not running ({child.state})")
        await child.stop(self.options.stop_timeout)
        code = child.returncode
        how = describe_exit(code) if code is not None and code < 0 else f"exit code {code}"  # SIGKILL after the grace
        self._event("peer_stopped", f"operator stopped {name} (process {child.pid}, {how})")

    async def start_peer(self, name: str) -> None:
        child = self._child(name)
        if child.state in ("running", "starting", "stopping"):
            raise ControlError(f"{name} is {child.state}")
        task = asyncio.get_running_loop().create_task(self._restart(child), name=f"restart-{name}")
        self._tasks.append(task)
        await asyncio.sleep(0)  # let it begin: it says "starting" at once, so that a second click is refused

    async def _restart(self, child: Child) -> None:
        try:
            await child.start(self.options.start_timeout)
        except NetUpError as exc:
            last = exc.details[-1] if exc.details else ""
            self._event("peer_exited", f"{child.name} failed to start: {exc} {last}")
            return
        self._event("peer_started", f"operator started {child.name} (process {child.pid})")

    def _child(self, name: str) -> Child:
        child = self.peers.get(name)
        if child is None:
            raise ControlError(f"no peer {name!r} in this network")
        return child

    def _event(self, kind: str, text: str) -> None:
        log.debug("%s", text)  # the dashboard's event log shows it; a log line would tear the live table
        if self.dashboard is not None:
            self.dashboard.model.add_event({"event": kind, "peer": None, "text": text})
            self.dashboard.poke()

    def _child_exited(self, child: Child, code: int) -> None:
        how = describe_exit(code)
        kind = ("peer" if child.kind == "peer" else "orderer") + ("_killed" if code < 0 else "_exited")
        entry: dict[str, Any] = {"event": kind, "peer": None, "text": f"{child.name} {how}", "exit_code": code}
        last = child.log_tail(1)
        if last:  # its own field: the page shows it on a line of its own, apart from what happened
            entry["last_log"] = last[0]
        log.debug("%s", entry["text"])
        if self.dashboard is not None:
            self.dashboard.model.add_event(entry)
            self.dashboard.poke()
        if not self.interactive:
            self.say(f"{child.name} {how}; see {child.log_path}")

    # --- polling --------------------------------------------------------------------------------

    async def poll(self) -> dict[str, Mapping[str, Any] | None]:
        """Every peer's /api/status (None for a peer that is not running or does not answer)."""
        assert self._session is not None
        session = self._session

        async def one(name: str) -> tuple[str, Mapping[str, Any] | None]:
            child = self.peers[name]
            if child.state not in ("running", "starting"):
                return name, None
            try:
                async with session.get(f"http://{self.ops_addresses[name]}/api/status") as resp:
                    if resp.status != 200:
                        return name, None
                    return name, await resp.json()
            except (aiohttp.ClientError, TimeoutError, ValueError):
                return name, None

        results = await asyncio.gather(*(one(name) for name in self.peers))
        return dict(results)

    # --- running --------------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(signum, self._on_signal)
        try:
            return await self._run()
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                loop.remove_signal_handler(signum)

    def _on_signal(self) -> None:
        self._signals += 1
        self._stop.set()
        if self._signals > 1:  # a second Ctrl-C: do not wait for anyone
            for child in [*self.peers.values(), *self.orderers.values(), *self.etcd.values()]:
                if child.proc is not None and child.proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        child.proc.kill()

    async def _run(self) -> int:
        options = self.options
        self.plan = plan = prepare_network(options, self.say)
        layout = plan.layout
        # `rumor network down` and `network status` find this process by the lock's PID.
        self._dir_lock = DirectoryLock(layout.root, "rumor network up", name=NETWORK_UP_LOCK)
        try:
            self._dir_lock.acquire()
        except DirectoryLocked as exc:
            raise NetUpError(str(exc)) from None
        timeout = aiohttp.ClientTimeout(total=max(1.0, options.poll_interval * 2))
        self._session = aiohttp.ClientSession(timeout=timeout)
        try:
            self.dashboard = Dashboard(
                self.poll,
                view="network",
                title=f"network {layout.root.name} ({layout.channel})",
                interval=options.poll_interval,
                controls=self,
            )
            await self._start_dashboard_server()
            await self._start_children(plan)
            if self._stop.is_set():
                return 0
            await self._catch_up()
            if options.rate > 0:
                self.load = LoadGenerator(layout.root, layout.channel, options.rate, options.payload_size)
                self._tasks.append(loop_task(self._guard(self.load.run(), "load generator")))
            if plan.etcd:
                self._tasks.append(loop_task(self._guard(self._watch_ordering(plan), "ordering status")))
            self.dashboard.start()
            self._up = True
            self.say(f"Dashboard: {self.url}")
            self.say(
                f"network of {len(plan.peers)} peers up in {layout.root} "
                f"(channel {layout.channel}, load {options.rate:g} block/s); Ctrl-C stops it"
            )
            await self._summary_until_stopped()
            return 0
        finally:
            await self._shutdown()

    async def _guard(self, coro: Any, what: str) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("%s failed: %s", what, exc)
            if self.load is not None:
                self.load.error = f"{what} failed: {exc}"

    async def _start_dashboard_server(self) -> None:
        assert self.dashboard is not None
        options = self.options
        app = web.Application()
        self.dashboard.add_routes(app)
        app.router.add_get("/api/status", self._network_status)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        port = DEFAULT_DASHBOARD_PORT if options.dashboard_port is None else options.dashboard_port
        try:
            site = web.TCPSite(self._runner, options.dashboard_host, port)
            await site.start()
        except OSError as exc:
            if options.dashboard_port is not None or exc.errno != errno.EADDRINUSE:
                raise NetUpError(
                    f"dashboard port {port} on {options.dashboard_host}: {exc.strerror or exc}; choose another with "
                    "--dashboard-port (0 picks a free one)"
                ) from None
            self.say(f"note: port {port} is in use; the dashboard takes a free port instead")
            site = web.TCPSite(self._runner, options.dashboard_host, 0)
            await site.start()
        host, bound = self._runner.addresses[0][:2]
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        self.url = f"http://{shown}:{bound}/"

    async def _network_status(self, _request: web.Request) -> web.Response:
        """What network up runs: children, their pids and states (for scripts and tests)."""
        children = {
            name: {"kind": c.kind, "state": c.state, "pid": c.pid, "log": str(c.log_path)}
            for name, c in [*self.etcd.items(), *self._orderer_children(), *self.peers.items()]
        }
        return web.json_response(
            {"dir": str(self.plan.layout.root) if self.plan else "", "children": children, "load": self.load_state()}
        )

    def _orderer_children(self) -> list[tuple[str, Child]]:
        if len(self.orderers) > 1:
            return list(self.orderers.items())
        return [("orderer", self.orderer)] if self.orderer else []

    async def _start_children(self, plan: NetworkPlan) -> None:
        options = self.options
        layout = plan.layout
        logs = layout.root / "logs"
        binary = etcd_binary() or "etcd"
        for member in plan.etcd:
            child = Child(
                member.name,
                "etcd",
                [],
                logs / f"{member.name}.log",
                "",
                options.log_level,
                command=[binary, "--config-file", str(member.config)],
                ready_address=member.client,
                cwd=member.config.parent,
            )
            child.on_exit = self._child_exited
            self.etcd[member.name] = child
        for index, entry in enumerate(plan.orderers or [OrdererPlan("orderer", layout.orderer_config, "")]):
            name = "orderer" if len(plan.orderers) <= 1 else entry.name
            child = Child(
                name,
                "orderer",
                ["orderer", "start", "--config", str(entry.config)],
                logs / f"{name}.log",
                "orderer ready on",
                options.log_level,
                options.log_format,
            )
            child.on_exit = self._child_exited
            self.orderers[name] = child
            if index == 0:
                self.orderer = child
        assert self.orderer is not None
        for peer in plan.peers:
            child = Child(
                peer.name,
                "peer",
                [
                    "peer",
                    "start",
                    "--config",
                    str(peer.config),
                    *(["--join", str(layout.genesis)] if peer.joins else []),
                ],
                logs / f"{peer.name}.log",
                "peer ready on",
                options.log_level,
                options.log_format,
            )
            child.on_exit = self._child_exited
            self.peers[peer.name] = child
            self.ops_addresses[peer.name] = _dial(peer.operations)

        total = len(self.etcd) + len(self.orderers) + len(self.peers)
        with self._progress() as progress:
            task = progress.add_task("starting the network", total=total)
            if self.etcd:
                # together: a member waits for the others to form its cluster
                await self._interruptible(asyncio.gather(*(c.start(options.start_timeout) for c in self.etcd.values())))
                if self._stop.is_set():
                    return
                progress.advance(task, len(self.etcd))
                if not self.interactive:
                    self.say(f"started etcd ({', '.join(plan_member.client for plan_member in plan.etcd)})")
            for child in self.orderers.values():
                await self._interruptible(child.start(options.start_timeout))
                if self._stop.is_set():
                    return
                progress.advance(task)
                if not self.interactive:
                    self.say(f"started {child.name} ({child.ready_line})")

            async def start_peer(child: Child) -> None:
                await child.start(options.start_timeout)
                progress.advance(task)

            results = await self._interruptible(
                asyncio.gather(*(start_peer(c) for c in self.peers.values()), return_exceptions=True)
            )
            for result in results or []:
                if isinstance(result, BaseException):
                    raise result
        if self._stop.is_set():
            return
        if not self.interactive:
            self.say(f"started {len(self.peers)} peers; logs in {logs}")

    async def _interruptible(self, awaitable: Any) -> Any:
        """Await ``awaitable`` unless a stop signal comes first (then return None and let shutdown clean up)."""
        task = asyncio.ensure_future(awaitable)
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            done, _ = await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if task in done:
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        return None

    def _progress(self) -> Any:
        if not self.interactive:
            return _NoProgress()
        return Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )

    async def _catch_up(self) -> None:
        """Wait (bounded) until every peer holds the channel at the same height: resumed ledgers line up."""
        assert self.plan is not None
        channel = self.plan.layout.channel
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.catch_up_timeout
        members = sum(1 for p in self.plan.peers if p.joins)
        behind = False
        with self._progress() as progress:
            task = progress.add_task("peers catching up", total=None)
            while not self._stop.is_set():
                statuses = await self.poll()
                heights = [
                    int(s["channels"][channel]["height"])
                    for s in statuses.values()
                    if s is not None and channel in s.get("channels", {})
                ]
                if len(heights) >= members and heights and min(heights) == max(heights):
                    if behind and not self.interactive:
                        self.say(f"peers in step at height {heights[0]}")
                    return
                if heights and min(heights) != max(heights):
                    progress.update(task, total=max(heights), completed=min(heights))
                    if not behind and not self.interactive:
                        self.say(f"peers catching up: heights {min(heights)}..{max(heights)}")
                    behind = True
                if loop.time() > deadline:
                    self.say(
                        f"note: peers not in step after {self.options.catch_up_timeout:g}s "
                        f"(heights {min(heights, default=0)}..{max(heights, default=0)}); going on"
                    )
                    return
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        await self._stop.wait()

    async def _summary_until_stopped(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = None if self.options.duration is None else loop.time() + self.options.duration
        interval = 1.0 if self.interactive else self.options.summary_interval
        live = Live(self._summary_table(), console=self.console, auto_refresh=False) if self.interactive else None
        started = loop.time()
        with live if live is not None else contextlib.nullcontext():
            while not self._stop.is_set():
                wait = interval if deadline is None else max(0.0, min(interval, deadline - loop.time()))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._stop.wait()
                if deadline is not None and loop.time() >= deadline:
                    self._stop.set()
                if live is not None:
                    live.update(self._summary_table(), refresh=True)
                elif not self._stop.is_set():
                    self.say(f"[{loop.time() - started:5.0f}s] {self._summary_line()}")
        if self._signals:
            self.say("stopping (signal received)")
        elif deadline is not None:
            self.say(f"stopping (--duration {self.options.duration:g}s over)")

    def _snapshot(self) -> dict[str, Any]:
        return self.dashboard.model.last if self.dashboard is not None else {}

    def _summary_line(self) -> str:
        snap = self._snapshot()
        channel = self.plan.layout.channel if self.plan else ""
        observed = [n for n in snap.get("nodes", []) if n.get("observed")]
        alive = [n for n in observed if n["state"] == "alive"]
        heights = [n["heights"].get(channel, 0) for n in alive if channel in n.get("heights", {})]
        leaders = sorted({f"{n['org']}:{n['id'].split('.')[0]}" for n in observed if channel in n.get("leader", [])})
        samples = sorted(snap.get("latency", {}).get(channel, {}).get("samples_ms", []))
        median = format_duration(samples[len(samples) // 2] / 1000) if samples else "–"
        load = self.load_state() or {}
        span = f"{min(heights)}..{max(heights)}" if heights else "–"
        # A process that answers is not yet a peer that others know: count those every other running peer lists
        # as alive (until they do, an org may have two leaders).
        joined = [n for n in alive if n.get("alive_votes", 0) >= len(alive) - 1]
        return (
            f"peers {len(joined)}/{len(self.peers)} in view of all ({len(alive)} running) · height {span} · "
            f"leaders {', '.join(leaders) or '–'} · "
            f"blocks submitted {load.get('blocks', 0)}{' (paused)' if load.get('paused') else ''} · "
            f"time to all peers (median) {median}"
        )

    def _summary_table(self) -> Table:
        snap = self._snapshot()
        channel = self.plan.layout.channel if self.plan else ""
        title = f"{self._summary_line()}\nDashboard: {self.url}   (Ctrl-C stops the network)"
        table = Table(title=title, title_justify="left")
        for column in ("peer", "org", "state", f"height {channel}", "leader", "msg/s out", "process"):
            table.add_column(column)
        for node in snap.get("nodes", []):
            if not node.get("observed"):
                continue
            rates = node.get("rates") or {}
            table.add_row(
                node["id"],
                node["org"],
                "[green]alive[/]" if node["state"] == "alive" else f"[red]dead[/] ({node.get('reason', '')})",
                str(node.get("heights", {}).get(channel, "–")),
                "★" if channel in node.get("leader", []) else "",
                f"{rates.get('msg_out', 0):.0f}" if rates else "–",
                str(node.get("process") or ""),
            )
        return table

    async def _shutdown(self) -> None:
        try:
            await self._shutdown_children()
        finally:
            lock = getattr(self, "_dir_lock", None)
            if lock is not None:
                lock.release()

    async def _shutdown_children(self) -> None:
        if self.load is not None:
            self.load.set_paused(True)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.dashboard is not None:
            await self.dashboard.stop()
        spawned = [c for c in self.peers.values() if c.proc is not None]
        if spawned:
            await asyncio.gather(*(c.stop(self.options.stop_timeout) for c in spawned))
        started = [c for c in self.orderers.values() if c.proc is not None]
        if started:
            await asyncio.gather(*(c.stop(self.options.stop_timeout) for c in started))
        members = [c for c in self.etcd.values() if c.proc is not None]
        if members:  # last: the orderers need etcd until they stop
            await asyncio.gather(*(c.stop(self.options.stop_timeout) for c in members))
        if self._up and self.plan is not None:
            root = self.plan.layout.root
            what = "the orderer" if len(self.orderers) <= 1 else f"{len(self.orderers)} orderers"
            if members:
                what += f" and {len(members)} etcd members"
            self.say(
                f"stopped {len(spawned)} peers and {what}; ledgers kept in {root} "
                f"(`rumor network up --dir {root}` resumes them)"
            )
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()


class _NoProgress:
    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, *_args: Any, **_kwargs: Any) -> int:
        return 0

    def advance(self, *_args: Any, **_kwargs: Any) -> None:
        return None

    def update(self, *_args: Any, **_kwargs: Any) -> None:
        return None


def _process_label(child: Child) -> str:
    """The state the dashboard shows for ``child``'s process: "killed" rather than "exited" for death by signal."""
    if child.state == "exited" and child.returncode is not None and child.returncode < 0:
        return "killed"
    return child.state


def loop_task(coro: Any) -> asyncio.Task[Any]:
    return asyncio.get_running_loop().create_task(coro)


def _dial(address: str) -> str:
    host, port = _split_address(address)
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def run_up(options: UpOptions, err: TextIO | None = None) -> int:
    """Run ``network up``; returns the exit code. Errors go to ``err`` as one line (plus a child's log lines)."""
    err = err or sys.stderr
    try:
        return asyncio.run(NetworkUp(options).run())
    except NetUpError as exc:
        print(f"error: {' '.join(str(exc).splitlines())}", file=err)
        for line in exc.details:
            print(f"    {line}", file=err)
        return exc.code
