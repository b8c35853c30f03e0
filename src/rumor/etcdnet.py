"""An etcd cluster on this machine, for the etcd ordering service: its config files and its processes.

``rumor network init --consensus etcd`` writes one ``etcd.yaml`` per member (etcd's own ``--config-file``
format) under ``DIR/etcd/<member>/``; ``rumor network up`` and the tests start ``etcd --config-file`` from it.

The settings that matter to the ordering service, and why:

- ``auto-compaction-mode: revision`` with ``auto-compaction-retention: 10000``: the orderers delete what every one
  of them stored, and compaction drops the history of those deletions, so the database stays bounded; 10,000
  revisions is minutes of history at the benchmark's rates, enough for a watch to resume after a short outage
  (a watch that falls behind compaction reads the keys again).
- ``quota-backend-bytes: 4 GiB``: above the orderers' MaxQueueBytes per channel, below etcd's 8 GiB ceiling.
- ``max-request-bytes: 16 MiB`` (etcd's default is 1.5 MiB): one envelope must fit one request, and Fabric's
  AbsoluteMaxBytes is 10 MB by default. The orderers' ``Consensus.Etcd.MaxRequestBytes`` says the same number.
- ``heartbeat-interval: 100`` and ``election-timeout: 1000`` (ms): etcd's defaults; its smallest lease TTL follows
  from them (2 s).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

__all__ = [
    "ETCD_MAX_REQUEST_BYTES",
    "EtcdMember",
    "EtcdProcess",
    "etcd_binary",
    "member_config",
    "write_cluster",
]

ETCD_MAX_REQUEST_BYTES = 16 * 1024 * 1024
ETCD_QUOTA_BYTES = 4 * 1024**3
CONFIG_FILE = "etcd.yaml"


def etcd_binary() -> str | None:
    """Path of the etcd server (Debian's etcd-server package puts it in /usr/bin), or None."""
    return shutil.which("etcd") or ("/usr/bin/etcd" if os.access("/usr/bin/etcd", os.X_OK) else None)


@dataclass(frozen=True)
class EtcdMember:
    name: str
    host: str
    client_port: int
    peer_port: int

    @property
    def client_endpoint(self) -> str:
        return f"{self.host}:{self.client_port}"

    @property
    def client_url(self) -> str:
        return f"http://{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"


def member_config(
    member: EtcdMember,
    members: Sequence[EtcdMember],
    data_dir: str,
    *,
    token: str = "rumor-orderers",
    compaction_retention: int = 10000,
) -> dict[str, object]:
    """etcd's --config-file settings for ``member`` of a new cluster of ``members``."""
    return {
        "name": member.name,
        "data-dir": data_dir,
        "listen-client-urls": member.client_url,
        "advertise-client-urls": member.client_url,
        "listen-peer-urls": member.peer_url,
        "initial-advertise-peer-urls": member.peer_url,
        "initial-cluster": ",".join(f"{m.name}={m.peer_url}" for m in members),
        "initial-cluster-state": "new",
        "initial-cluster-token": token,
        "heartbeat-interval": 100,
        "election-timeout": 1000,
        "auto-compaction-mode": "revision",
        "auto-compaction-retention": str(compaction_retention),
        "quota-backend-bytes": ETCD_QUOTA_BYTES,
        "max-request-bytes": ETCD_MAX_REQUEST_BYTES,
        "logger": "zap",
        "log-level": "warn",
    }


def write_cluster(root: Path, members: Sequence[EtcdMember], **kwargs: object) -> list[Path]:
    """Write ``root/<member>/etcd.yaml`` for each member (data in ``root/<member>/data``); the files."""
    paths = []
    for member in members:
        home = Path(root) / member.name
        home.mkdir(parents=True, exist_ok=True)
        # relative: etcd runs in the member's directory (EtcdProcess), so the network directory can move
        config = member_config(member, members, "data", **kwargs)  # type: ignore[arg-type]
        path = home / CONFIG_FILE
        path.write_text(f"# etcd member {member.name} of the orderers' cluster\n" + yaml.safe_dump(config))
        paths.append(path)
    return paths


class EtcdProcess:
    """One etcd member run from its config file, in the file's directory; output to ``<config dir>/etcd.log``."""

    def __init__(self, config: Path, binary: str | None = None) -> None:
        self.config = Path(config)
        found = binary or etcd_binary()
        if found is None:
            raise FileNotFoundError("etcd is not installed (Debian: apt-get install etcd-server)")
        self.binary = found
        self.process: subprocess.Popen[bytes] | None = None
        self.name = str(yaml.safe_load(self.config.read_text())["name"])

    def start(self) -> None:
        log = open(self.config.parent / "etcd.log", "ab")  # noqa: SIM115 (kept open by the child)
        try:
            self.process = subprocess.Popen(
                [self.binary, "--config-file", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.config.parent,
                start_new_session=True,
            )
        finally:
            log.close()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)

    def kill(self) -> None:
        """kill -9, and wait for the process to be gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
