"""What ``rumor status``, ``rumor peers``, ``rumor channel list`` and ``rumor block get`` show.

A running peer is asked over its operations endpoint (``GET /api/status``): ``--peer HOST:OPSPORT``, or
``--network DIR`` (with ``--peer ID`` to pick one of its peers). Blocks are read from a peer's ledger file,
which SQLite lets us read while the peer writes it: ``--config core.yaml``, or ``--network DIR``.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from rumor.config import _HOST_PORT, ConfigError, load_config
from rumor.network import NetworkInitError, load_layout

LEDGER_FILE = "ledger.sqlite"
"""The peer's ledger inside ``peer.fileSystemPath`` (as rumor.node.Peer names it)."""


class ViewError(Exception):
    """The command cannot show what was asked; one line saying why."""


class PeerDown(ViewError):
    """The peer's operations endpoint does not answer: the peer is not running (or not reachable)."""


@dataclass(frozen=True)
class Target:
    """A peer a command asks: its name, its operations address, and, for a peer of a network directory, its
    core.yaml, org and gossip endpoint (from network.yaml: known even while the peer is down)."""

    name: str
    operations: str
    config: Path | None = None
    org: str = ""
    endpoint: str = ""


def resolve_targets(peer: str | None, network: Path | None) -> list[Target]:
    """The peers a command talks to: ``--peer HOST:OPSPORT``, or the peers of ``--network DIR`` (``--peer ID``)."""
    if network is not None:
        try:
            layout = load_layout(network)
        except NetworkInitError as exc:
            raise ViewError(str(exc)) from None
        targets = [Target(p.id, p.operations, p.config, p.org, p.endpoint) for p in layout.peers]
        if peer is None:
            return targets
        chosen = [t for t in targets if peer in (t.name, t.operations) or t.name.startswith(peer + ".")]
        if not chosen:
            known = ", ".join(t.name for t in targets)
            raise ViewError(f"--peer {peer}: no such peer in {layout.root} (peers: {known})")
        return chosen[:1]
    if peer is None:
        raise ViewError("give --peer HOST:OPSPORT (a peer's operations address), or --network DIR")
    if _HOST_PORT.fullmatch(peer) is None:
        raise ViewError(f"--peer {peer}: expected HOST:PORT, the peer's operations.listenAddress")
    return [Target(peer, peer)]


def fetch_status(target: Target, timeout: float = 3.0) -> dict[str, Any]:
    """GET /api/status of a peer's operations endpoint."""
    url = f"http://{target.operations}/api/status"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise ViewError(f"{target.name}: {url} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if target.config is not None:
            # The address comes from network.yaml, so it is the right one: the peer is not running.
            raise PeerDown(
                f"{target.name} is down: its operations endpoint {target.operations} does not answer ({reason})"
            ) from None
        raise PeerDown(
            f"cannot reach {target.name}'s operations endpoint at {target.operations} ({reason}); is the peer running, "
            "and is this its operations.listenAddress (not its gossip port)?"
        ) from None
    except ValueError as exc:
        raise ViewError(f"{target.name}: {url} did not answer JSON ({exc}); is this a rumor peer?") from None


def _short(pki_id: str | None) -> str:
    return (pki_id or "")[:16]


def _names(status: Mapping[str, Any]) -> dict[str, str]:
    names = {m["pki_id"]: m.get("endpoint") or _short(m["pki_id"]) for m in status.get("membership", [])}
    names[status.get("pki_id", "")] = f"{status.get('endpoint', '')} (this peer)"
    return names


def render_status(status: Mapping[str, Any], console: Console) -> None:
    """A peer's view: who it is, its channels, its membership, its traffic, its recent events."""
    names = _names(status)
    head = Table(title=f"peer {status.get('peer_id', '?')}", show_header=False, title_justify="left")
    head.add_column("key", style="bold")
    head.add_column("value")
    head.add_row("org", str(status.get("org", "")))
    head.add_row("endpoint", str(status.get("endpoint", "")))
    head.add_row("pki id", str(status.get("pki_id", "")))
    alive = sum(1 for m in status.get("membership", []) if m.get("alive"))
    dead = len(status.get("membership", [])) - alive
    head.add_row("membership", f"{alive} alive, {dead} dead; {len(status.get('connections', []))} connections open")
    comm = status.get("comm", {})
    head.add_row(
        "traffic",
        f"{comm.get('comm_messages_sent', 0)} messages sent ({comm.get('comm_bytes_sent', 0)} bytes), "
        f"{comm.get('comm_messages_received', 0)} received ({comm.get('comm_bytes_received', 0)} bytes)",
    )
    console.print(head)
    render_channels(status, console)
    render_membership(status, console)
    events = status.get("events", [])[-10:]
    if events:
        table = Table(title="recent events", title_justify="left")
        for column in ("time", "event", "details"):
            table.add_column(column)
        for event in events:
            details = {k: v for k, v in event.items() if k not in ("time", "event")}
            if "pki_id" in details:
                details["peer"] = names.get(str(details.pop("pki_id")), "?")
            table.add_row(
                time.strftime("%H:%M:%S", time.localtime(float(event.get("time", 0)))),
                str(event.get("event")),
                ", ".join(f"{k}={v}" for k, v in details.items()),
            )
        console.print(table)


def render_channels(status: Mapping[str, Any], console: Console) -> None:
    names = _names(status)
    table = Table(title=f"channels of {status.get('peer_id', '?')}", title_justify="left")
    for column in ("channel", "height", "leader of our org", "peers in channel"):
        table.add_column(column)
    for name, info in sorted(status.get("channels", {}).items()):
        leader = info.get("leader_pki_id")
        table.add_row(
            name,
            str(info.get("height", "")),
            "this peer" if info.get("leader") else (names.get(leader, _short(leader)) if leader else "(none yet)"),
            str(info.get("peers", "")),
        )
    console.print(table)


def render_membership(status: Mapping[str, Any], console: Console) -> None:
    connected = set(status.get("connections", []))
    table = Table(title=f"membership as {status.get('peer_id', '?')} sees it", title_justify="left")
    for column in ("endpoint", "org", "pki id", "state", "connected"):
        table.add_column(column)
    members = sorted(status.get("membership", []), key=lambda m: (m.get("org", ""), m.get("endpoint", "")))
    for member in members:
        table.add_row(
            str(member.get("endpoint", "")),
            str(member.get("org", "")),
            _short(member.get("pki_id")),
            "[green]alive[/]" if member.get("alive") else "[red]dead[/]",
            "yes" if member.get("pki_id") in connected else "",
        )
    console.print(table)


def first_answering(targets: list[Target]) -> dict[str, Any]:
    """The status of the first of ``targets`` that answers; PeerDown naming them when none does."""
    for target in targets:
        try:
            return fetch_status(target, timeout=2.0)
        except PeerDown:
            if len(targets) == 1:
                raise
    raise PeerDown(f"no peer answers ({len(targets)} down)")


def render_network(targets: list[Target], console: Console) -> list[Target]:
    """One row per peer of a network directory; returns the peers that did not answer (shown as down, with
    the org and endpoint network.yaml gives them)."""
    table = Table(title="peers of the network", title_justify="left")
    for column in ("peer", "org", "endpoint", "operations", "state", "channels (height)", "knows", "leads"):
        table.add_column(column)
    down: list[Target] = []
    for target in targets:
        try:
            status = fetch_status(target, timeout=2.0)
        except ViewError:
            down.append(target)
            table.add_row(target.name, target.org, target.endpoint, target.operations, "[red]down[/]", "", "", "")
            continue
        channels = status.get("channels", {})
        alive = sum(1 for m in status.get("membership", []) if m.get("alive"))
        table.add_row(
            target.name,
            str(status.get("org") or target.org),
            str(status.get("endpoint") or target.endpoint),
            target.operations,
            "[green]running[/]",
            ", ".join(f"{c} ({i.get('height')})" for c, i in sorted(channels.items())),
            f"{alive} alive",
            ", ".join(c for c, i in sorted(channels.items()) if i.get("leader")),
        )
    console.print(table)
    return down


# --------------------------------------------------------------------------------------------------
# Blocks from a peer's ledger


def ledger_path(config: Path | None, network: Path | None, peer: str | None) -> tuple[str, Path]:
    """(peer name, ledger file) from ``--config core.yaml`` or ``--network DIR [--peer ID]``."""
    if config is None:
        if network is None:
            raise ViewError("give --config core.yaml (the peer whose ledger to read), or --network DIR")
        target = resolve_targets(peer, network)[0]
        assert target.config is not None
        config = target.config
    try:
        loaded = load_config(config)
    except ConfigError as exc:
        raise ViewError(str(exc)) from None
    path = Path(loaded.peer.file_system_path) / LEDGER_FILE
    if not path.is_file():
        raise ViewError(f"{loaded.peer.id} has no ledger yet ({path} does not exist); has it ever run?")
    return loaded.peer.id, path


def read_ledger(path: Path) -> Any:
    from rumor.ledger import Ledger
    from rumor.ledger.store import LedgerError

    try:
        return Ledger(path)
    except LedgerError as exc:
        raise ViewError(str(exc)) from None


def describe_block(raw: bytes) -> dict[str, Any]:
    """A block's header, metadata and envelopes, as JSON-friendly values."""
    from rumor.channelconfig import EnvelopeError, open_envelope
    from rumor.crypto.blocks import block_header_hash
    from rumor.wire.pb.common import common_pb2

    block = common_pb2.Block.FromString(raw)
    envelopes = []
    for data in block.data.data:
        entry: dict[str, Any] = {"size": len(data)}
        try:
            opened = open_envelope(data)
            header = opened.channel_header
            entry.update(
                {
                    "type": common_pb2.HeaderType.Name(header.type)
                    if header.type in common_pb2.HeaderType.values()
                    else header.type,
                    "channel": header.channel_id,
                    "tx_id": header.tx_id,
                    "timestamp": header.timestamp.ToJsonString() if header.HasField("timestamp") else None,
                    "data_size": len(opened.payload.data),
                    "data_preview": opened.payload.data[:48].decode("utf-8", errors="replace"),
                }
            )
        except EnvelopeError as exc:
            entry["error"] = str(exc)
        envelopes.append(entry)
    return {
        "number": block.header.number,
        "previous_hash": block.header.previous_hash.hex(),
        "data_hash": block.header.data_hash.hex(),
        "header_hash": block_header_hash(block.header).hex(),
        "size": len(raw),
        "metadata_entries": len(block.metadata.metadata),
        "envelopes": envelopes,
    }


def render_block(info: Mapping[str, Any], console: Console) -> None:
    head = Table(title=f"block {info['number']}", show_header=False, title_justify="left")
    head.add_column("key", style="bold")
    head.add_column("value")
    for key in ("number", "previous_hash", "data_hash", "header_hash", "size", "metadata_entries"):
        head.add_row(key.replace("_", " "), str(info[key]))
    head.add_row("envelopes", str(len(info["envelopes"])))
    console.print(head)
    if info["envelopes"]:
        table = Table(title="envelopes", title_justify="left")
        for column in ("#", "type", "tx id", "timestamp", "data"):
            table.add_column(column)
        for i, env in enumerate(info["envelopes"]):
            if "error" in env:
                table.add_row(str(i), "?", "", "", f"undecodable: {env['error']}")
                continue
            table.add_row(
                str(i),
                str(env["type"]),
                str(env["tx_id"])[:16],
                str(env["timestamp"] or ""),
                f"{env['data_size']} bytes: {env['data_preview']!r}",
            )
        console.print(table)
