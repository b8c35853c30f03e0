"""`rumor network up` as a real child process of a test: its output read line by line, its dashboard asked
over HTTP, its own children tracked so that none outlives the test."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rumor_processes import RUMOR, clean_env

FAST_GOSSIP = {
    # Fabric's timings are made for networks that live for months; a test wants leaders within seconds.
    "RUMOR_PEER_GOSSIP_ELECTION_STARTUPGRACEPERIOD": "2s",
    "RUMOR_PEER_GOSSIP_ELECTION_LEADERELECTIONDURATION": "1s",
    "RUMOR_PEER_GOSSIP_STATE_CHECKINTERVAL": "2s",
    "RUMOR_PEER_GOSSIP_PULLINTERVAL": "2s",
}


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid``, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


class UpProcess:
    """`rumor network up ARGS` running in the background."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        self.args = args
        self.proc = subprocess.Popen(
            [RUMOR, "network", "up", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env or clean_env(**FAST_GOSSIP),
            cwd=cwd,
        )
        self.lines: list[str] = []
        self.errors: list[str] = []
        self._cond = threading.Condition()
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.lines), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.errors), daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        self.url = ""
        self.seen_children: set[int] = set()

    def _read(self, stream: Any, into: list[str]) -> None:
        for line in stream:
            with self._cond:
                into.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines) + "\n--- stderr ---\n" + "\n".join(self.errors)

    def wait_for_line(self, pattern: str, timeout: float = 90) -> re.Match[str]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    match = regex.search(line)
                    if match:
                        return match
                if self.proc.poll() is not None and all(not r.is_alive() for r in self._readers):
                    raise AssertionError(
                        f"network up exited ({self.proc.returncode}) before {pattern!r}:\n{self.output()}"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no line matching {pattern!r} within {timeout}s:\n{self.output()}")
                self._cond.wait(min(remaining, 0.5))

    def wait_ready(self, timeout: float = 90) -> str:
        """Wait for the "Dashboard: URL" line; returns the URL and records the children's pids."""
        self.url = self.wait_for_line(r"^Dashboard: (http://\S+/)$", timeout)[1]
        self.seen_children.update(self.children().values())
        return self.url

    def get(self, path: str, timeout: float = 5) -> Any:
        with urllib.request.urlopen(self.url + path.lstrip("/"), timeout=timeout) as resp:
            return json.loads(resp.read())

    def post(self, path: str, timeout: float = 30) -> Any:
        request = urllib.request.Request(self.url + path.lstrip("/"), data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return json.loads(resp.read())

    def children(self) -> dict[str, int]:
        """name -> pid of every child network up runs now."""
        status = self.get("api/status")
        pids = {name: c["pid"] for name, c in status["children"].items() if c["pid"] and c["state"] != "stopped"}
        self.seen_children.update(pids.values())
        return pids

    def heights(self, channel: str = "mychannel") -> dict[str, int]:
        snapshot = self.get("api/dashboard")
        return {n["id"]: n["heights"][channel] for n in snapshot["nodes"] if channel in n.get("heights", {})}

    def interrupt(self, timeout: float = 60) -> int:
        """SIGINT, as Ctrl-C would send; returns the exit code."""
        self.seen_children.update(child_pids(self.proc.pid))
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout)
        for reader in self._readers:
            reader.join(5)
        return code

    def cleanup(self) -> None:
        """Whatever happened: network up and every child it had are gone when this returns."""
        if self.proc.poll() is None:
            self.seen_children.update(child_pids(self.proc.pid))
            self.proc.kill()
            self.proc.wait(30)
        for pid in self.seen_children:
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for stream in (self.proc.stdout, self.proc.stderr):
            with contextlib.suppress(Exception):
                stream.close()


@contextlib.contextmanager
def network_up(*args: str, env: dict[str, str] | None = None) -> Iterator[UpProcess]:
    up = UpProcess(*args, env=env)
    try:
        yield up
    finally:
        up.cleanup()
