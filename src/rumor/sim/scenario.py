"""A simulation scenario: how many peers, what network, which blocks, what breaks when.

A scenario comes from a YAML file, from ``rumor sim`` flags, or both (flags win). Every key, with its default
and what it does, is in ``scenario_reference()`` (which ``rumor sim --help`` prints); an example:

    name: sim-100
    peers: 100              # peers in all
    orgs: 1                 # spread evenly over this many orgs; peer0 of each org leads it
    blocks: 100
    block_size: 100KB       # payload bytes of each block (B, KB, KiB, MB, MiB)
    block_interval: 1s      # the ordering service cuts a block this often
    latency: 25ms±10%       # one-way link latency, drawn per message uniformly within ± the spread
    bandwidth: 100Mbit      # uplink of each peer (bit/s with "bit", bytes/s with "B"); 0 = unlimited
    loss: 0                 # share of messages lost on the wire
    mode: fabric            # fabric | enhanced | both (both: one run each, same seed, side by side)
    seed: 1
    crypto: cheap           # cheap (HMAC stand-in) | x509 (real ECDSA P-256 certificates)
    warm_start: true        # every peer starts with a membership response and StateInfo snapshot listing all
                            # peers (as if its bootstrap peer knew everyone); false: only the bootstrap dials
    warmup: auto            # virtual time before the first block; auto: until membership has converged
    drain: 60s              # at most this long after the last block for the stragglers
    gossip:                 # peer.gossip keys of core.yaml (Fabric's names), for every peer
      pullInterval: 4s
    events:                 # times count from the first block
      - {at: 20s, crash: [peer3.org1]}
      - {at: 40s, restart: [peer3.org1]}
      - {at: 30s, partition: [[peer0.org1, peer1.org1], [peer2.org1]]}   # unnamed peers: one more group
      - {at: 35s, heal: true}

Peers are named ``peer<i>.org<j>``. All parsing errors raise ``ScenarioError`` with a one-line message.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from rumor.config import ConfigError, GossipConfig, parse_duration

__all__ = [
    "PRESETS",
    "Event",
    "Scenario",
    "ScenarioError",
    "format_bandwidth",
    "format_size",
    "gossip_config",
    "load_scenario",
    "parse_bandwidth",
    "parse_latency",
    "parse_size",
]

MODES = ("fabric", "enhanced")


class ScenarioError(ValueError):
    """A scenario that cannot run; ``str(error)`` is one line for the user."""


_SIZE_UNITS = {"": 1, "b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2, "gb": 1000**3, "gib": 1024**3}
_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"


def parse_size(text: str | int | float) -> int:
    """Bytes from ``100KB``, ``1MiB``, ``512`` (KB = 1000 bytes, KiB = 1024)."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        if text < 0:
            raise ScenarioError(f"size {text!r} is negative")
        return int(text)
    match = re.fullmatch(_NUMBER + r"\s*([a-zA-Z]*)", str(text).strip())
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _SIZE_UNITS:
        raise ScenarioError(f"size {text!r}: expected a number with B, KB, KiB, MB or MiB, e.g. 100KB")
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


_RATE_UNITS = {
    "bit": 1 / 8,
    "kbit": 1000 / 8,
    "mbit": 1000**2 / 8,
    "gbit": 1000**3 / 8,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
}


def parse_bandwidth(text: str | int | float | None) -> float | None:
    """Bytes per second from ``100Mbit`` (or ``100Mbit/s``, ``100Mbps``), ``12.5MB/s``; 0 or none: unlimited."""
    if text is None:
        return None
    if isinstance(text, int | float) and not isinstance(text, bool):
        return float(text) if text > 0 else None
    value = str(text).strip().lower()
    if value in ("", "0", "none", "unlimited", "inf"):
        return None
    if value.endswith("bps"):
        value = value[:-3] + "bit"
    value = value.removesuffix("/s")
    match = re.fullmatch(_NUMBER + r"\s*([a-z]*)", value)
    if match is None or match.group(2) not in _RATE_UNITS:
        raise ScenarioError(f"bandwidth {text!r}: expected e.g. 100Mbit, 1Gbit or 12.5MB/s (0 for unlimited)")
    rate = float(match.group(1)) * _RATE_UNITS[match.group(2)]
    return rate if rate > 0 else None


def _duration(text: Any, what: str) -> float:
    if isinstance(text, int | float) and not isinstance(text, bool):
        return float(text)
    try:
        return parse_duration(str(text).strip())
    except (ConfigError, ValueError) as exc:
        raise ScenarioError(f"{what}: {exc}") from None


def parse_latency(text: str | int | float) -> tuple[float, float]:
    """(mean seconds, spread as a fraction) from ``25ms±10%``, ``25ms+-10%``, ``25ms`` or ``0.025``."""
    value = str(text).strip().replace("+-", "±").replace("+/-", "±")
    base, _, spread = value.partition("±")
    mean = _duration(base, "latency")
    if mean < 0:
        raise ScenarioError(f"latency {text!r} is negative")
    if not spread:
        return mean, 0.0
    spread = spread.strip()
    if spread.endswith("%"):
        fraction = float(spread[:-1]) / 100
    else:
        fraction = _duration(spread, "latency spread") / mean if mean else 0.0
    if not 0 <= fraction <= 1:
        raise ScenarioError(f"latency {text!r}: the spread must lie between 0 and 100 %")
    return mean, fraction


def format_size(size: int) -> str:
    for unit, factor in (("MB", 1000**2), ("KB", 1000)):
        if size >= factor and size % (factor // 10 or 1) == 0:
            return f"{size / factor:g}{unit}"
    return f"{size}B"


def format_bandwidth(rate: float | None) -> str:
    if rate is None:
        return "unlimited"
    bits = rate * 8
    for unit, factor in (("Gbit", 1e9), ("Mbit", 1e6), ("kbit", 1e3)):
        if bits >= factor:
            return f"{bits / factor:g}{unit}"
    return f"{bits:g}bit"


@dataclass(frozen=True)
class Event:
    """Something done to the network at ``at`` seconds after the first block."""

    at: float
    action: str  # crash | restart | partition | heal
    peers: tuple[str, ...] = ()
    groups: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True)
class Scenario:
    """Everything a simulation run depends on (see the module docstring for the YAML form)."""

    name: str = "custom"
    peers: int = 100
    orgs: int = 1
    blocks: int = 100
    block_size: int = 100_000
    block_interval: float = 1.0
    latency: float = 0.025
    jitter: float = 0.10
    bandwidth: float | None = 100e6 / 8
    loss: float = 0.0
    mode: str = "fabric"
    seed: int = 1
    crypto: str = "cheap"
    warm_start: bool = True  # peers start knowing each other (see runner.warm_start); False: bootstrap only
    warmup: float | None = None  # None: until membership converged
    max_warmup: float = 120.0
    drain: float = 60.0
    gossip: Mapping[str, Any] = field(default_factory=dict)
    events: tuple[Event, ...] = ()

    def __post_init__(self) -> None:
        if self.peers < 2:
            raise ScenarioError("peers: at least 2")
        if not 1 <= self.orgs <= self.peers:
            raise ScenarioError("orgs: at least 1 and at most the number of peers")
        if self.blocks < 1:
            raise ScenarioError("blocks: at least 1")
        if self.block_interval <= 0:
            raise ScenarioError("block_interval must be positive")
        if not 0 <= self.loss < 1:
            raise ScenarioError("loss must lie in [0, 1)")
        if self.mode not in (*MODES, "both"):
            raise ScenarioError(f"mode {self.mode!r}: expected fabric, enhanced or both")
        if self.crypto not in ("cheap", "x509"):
            raise ScenarioError(f"crypto {self.crypto!r}: expected cheap or x509")
        names = set(self.peer_names())
        for event in self.events:
            unknown = [p for p in (*event.peers, *(p for g in event.groups for p in g)) if p not in names]
            if unknown:
                raise ScenarioError(f"event at {event.at}s names unknown peers: {', '.join(unknown[:5])}")
        gossip_config(self)  # reject bad gossip keys now

    @property
    def modes(self) -> tuple[str, ...]:
        return MODES if self.mode == "both" else (self.mode,)

    def peer_names(self) -> list[str]:
        """``peer<i>.org<j>`` for every peer; org j gets peers ``peers // orgs`` (+1 for the first ones)."""
        names: list[str] = []
        for org in range(self.orgs):
            count = self.peers // self.orgs + (1 if org < self.peers % self.orgs else 0)
            names.extend(f"peer{i}.org{org + 1}" for i in range(count))
        return names

    def describe(self) -> str:
        spread = f"±{self.jitter * 100:g}%" if self.jitter else ""
        orgs = f"{self.orgs} org{'s' if self.orgs > 1 else ''}"
        blocks = f"{self.blocks} blocks of {format_size(self.block_size)} every {self.block_interval:g}s"
        link = f"latency {self.latency * 1000:g}ms{spread}, uplink {format_bandwidth(self.bandwidth)}"
        extra = f", gossip {dict(self.gossip)}" if self.gossip else ""
        return f"{self.peers} peers in {orgs}, {blocks}, {link}, loss {self.loss:g}, seed {self.seed}{extra}"

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["gossip"] = dict(self.gossip)
        out["events"] = [dataclasses.asdict(e) for e in self.events]
        return out


def _gossip_fields() -> dict[str, dataclasses.Field[Any]]:
    return {f.metadata["key"].lower(): f for f in dataclasses.fields(GossipConfig) if "key" in f.metadata}


def gossip_config(scenario: Scenario, mode: str | None = None) -> GossipConfig:
    """GossipConfig with Fabric's defaults, the scenario's ``gossip`` keys and the dissemination ``mode``."""
    known = _gossip_fields()
    changes: dict[str, Any] = {}
    for key, value in scenario.gossip.items():
        f = known.get(str(key).lower())
        if f is None or f.name in ("election", "state"):
            raise ScenarioError(f"gossip key {key!r} is not a peer.gossip setting")
        default = f.default
        if isinstance(default, bool):
            changes[f.name] = bool(value)
        elif isinstance(default, int):
            changes[f.name] = int(value)
        elif isinstance(default, float):
            changes[f.name] = _duration(value, f"gossip.{key}")
        else:
            changes[f.name] = value
    if mode is not None:
        changes["dissemination"] = mode
    try:
        return replace(GossipConfig(), **changes)
    except (TypeError, ValueError) as exc:
        raise ScenarioError(f"gossip settings: {exc}") from None


def _events(raw: Any) -> tuple[Event, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ScenarioError("events: expected a list of {at: TIME, crash|restart|partition|heal: ...}")
    out: list[Event] = []
    for item in raw:
        if not isinstance(item, Mapping) or "at" not in item:
            raise ScenarioError(f"event {item!r}: expected a mapping with 'at'")
        at = _duration(item["at"], "event time")
        actions = [k for k in item if k != "at"]
        if len(actions) != 1 or actions[0] not in ("crash", "restart", "partition", "heal"):
            raise ScenarioError(f"event {item!r}: expected exactly one of crash, restart, partition, heal")
        action = actions[0]
        value = item[action]
        if action in ("crash", "restart"):
            peers = (value,) if isinstance(value, str) else tuple(str(p) for p in value)
            out.append(Event(at, action, peers=peers))
        elif action == "partition":
            groups = tuple(tuple(str(p) for p in group) for group in value)
            out.append(Event(at, action, groups=groups))
        else:
            out.append(Event(at, action))
    return tuple(sorted(out, key=lambda e: e.at))


_KEYS = {f.name for f in dataclasses.fields(Scenario)}

KEY_DOCS: dict[str, str] = {
    "name": "names the run in the table, the JSON and the plot files (a file's default: its file name)",
    "peers": "peers in all",
    "orgs": "spread evenly over this many orgs; peer0 of each org leads it (its static leader)",
    "blocks": "blocks the ordering service cuts",
    "block_size": "payload bytes of each block (B, KB, KiB, MB, MiB)",
    "block_interval": "the ordering service cuts a block this often",
    "latency": "one-way link latency, drawn per message uniformly within ± the spread (or jitter: 0.1 for it alone)",
    "bandwidth": 'uplink of each peer (bit/s with "bit", bytes/s with "B"); 0: unlimited',
    "loss": "share of messages lost on the wire",
    "mode": "dissemination: fabric | enhanced | both (one run each, same seed, side by side)",
    "seed": "seed of every random choice: the same seed gives the same figures",
    "crypto": "cheap (an HMAC stand-in) | x509 (real ECDSA P-256 certificates; slow)",
    "warm_start": "every peer starts knowing every other one (as if its bootstrap peer knew everyone)\n"
    "false: only the bootstrap dials",
    "warmup": "virtual time before the first block; auto: until membership has converged",
    "max_warmup": "with warmup: auto, start the blocks after this long even if membership has not converged",
    "drain": "at most this long after the last block for the stragglers",
    "gossip": "peer.gossip keys of core.yaml (Fabric's names) for every peer, e.g. {pullInterval: 4s}",
    "events": "what is done to the network when (times count from the first block), e.g.\n"
    "  - {at: 20s, crash: [peer3.org1]}\n"
    "  - {at: 40s, restart: [peer3.org1]}\n"
    "  - {at: 30s, partition: [[peer0.org1, peer1.org1], [peer2.org1]]}   # unnamed peers: one more group\n"
    "  - {at: 35s, heal: true}",
}
"""What each scenario key does (the keys of ``Scenario``; ``jitter`` is documented with ``latency``); a doc of
several lines continues under the first."""


def default_text(scenario: Scenario, key: str) -> str:
    """``scenario``'s value of ``key`` as the YAML (and the flag) would spell it: ``100KB``, ``25ms±10%``."""
    value = getattr(scenario, key)
    if key == "block_size":
        return format_size(value)
    if key == "latency":
        spread = f"±{scenario.jitter * 100:g}%" if scenario.jitter else ""
        return f"{value * 1000:g}ms{spread}"
    if key == "bandwidth":
        return "0" if value is None else format_bandwidth(value)
    if key == "warmup":
        return "auto" if value is None else f"{value:g}s"
    if key in ("block_interval", "drain", "max_warmup"):
        return f"{value:g}s"
    if key == "warm_start":
        return "true" if value else "false"
    if key == "gossip":
        return "{}" if not value else "{" + ", ".join(f"{k}: {v}" for k, v in value.items()) + "}"
    if key == "events":
        return "[]" if not value else f"[{len(value)} events]"
    return f"{value:g}" if isinstance(value, float) else str(value)


def scenario_reference() -> str:
    """Every key of a scenario YAML file with its default and what it does, one line each, as YAML."""
    base = Scenario()
    keys = [f.name for f in dataclasses.fields(Scenario) if f.name != "jitter"]
    lines = [(f"{key}: {default_text(base, key)}", KEY_DOCS[key]) for key in keys]
    lines.insert(0, ("preset: none", f"start from a preset ({', '.join(PRESETS)}) instead of these defaults"))
    width = max(len(entry) for entry, _ in lines)
    out: list[str] = []
    for entry, doc in lines:
        first, *more = doc.splitlines()
        out.append(f"{entry.ljust(width)}  # {first}")
        out.extend(f"{'':{width}}  # {line}" for line in more)
    return "\n".join(out)


def scenario_from_mapping(data: Mapping[str, Any], base: Scenario | None = None) -> Scenario:
    """A scenario from a mapping of YAML keys (over ``base``, or a preset named by ``preset``)."""
    data = dict(data)
    preset = data.pop("preset", None)
    if preset is not None:
        if preset not in PRESETS:
            raise ScenarioError(f"preset {preset!r}: expected one of {', '.join(PRESETS)}")
        base = PRESETS[preset]
    base = base or Scenario()
    changes: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in _KEYS:
            raise ScenarioError(f"unknown scenario key {key!r}")
        if value is None and name not in ("warmup", "bandwidth"):
            continue
        if name in ("block_size",):
            changes[name] = parse_size(value)
        elif name in ("block_interval", "drain", "max_warmup"):
            changes[name] = _duration(value, name)
        elif name == "warmup":
            changes[name] = None if value in (None, "auto") else _duration(value, name)
        elif name == "latency":
            changes["latency"], changes["jitter"] = parse_latency(value)
        elif name == "bandwidth":
            changes[name] = parse_bandwidth(value)
        elif name == "events":
            changes[name] = _events(value)
        elif name == "gossip":
            if not isinstance(value, Mapping):
                raise ScenarioError("gossip: expected a mapping of peer.gossip keys")
            changes[name] = {**base.gossip, **value}
        elif name in ("peers", "orgs", "blocks", "seed"):
            changes[name] = int(value)
        elif name in ("loss", "jitter"):
            changes[name] = float(value)
        elif name == "warm_start":
            changes[name] = bool(value)
        else:
            changes[name] = str(value).lower() if name in ("mode", "crypto") else str(value)
    try:
        return replace(base, **changes)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ScenarioError):
            raise
        raise ScenarioError(str(exc)) from None


SIM_1000_MEMBERSHIP = {
    "aliveTimeInterval": "100s",
    "aliveExpirationTimeout": "500s",
    "reconnectInterval": "500s",
    "publishCertPeriod": "100s",
    "publishStateInfoInterval": "80s",
    "requestStateInfoInterval": "80s",
}
"""Membership and StateInfo timers of sim-1000: Fabric's defaults x 20 (publishCertPeriod x 10), so that no
membership or StateInfo flood falls within the run; block push, pull, membership sync and state transfer keep
Fabric's defaults. Why: every new alive message (each peer's heartbeat every aliveTimeInterval, and the one
that drops the certificate when publishCertPeriod ends) and every changed StateInfo is flooded to every peer
about 3 times, 3 N^2 = 3 million deliveries for one round of N = 1,000 peers, about 5 minutes of this
simulator's time (about 100 us of Python per delivery, see bench/results/README.md); Fabric's defaults would
need one such round every 5 s of virtual time."""

PRESETS: dict[str, Scenario] = {
    "sim-100": Scenario(name="sim-100", peers=100, block_interval=0.5),
    "sim-1000": Scenario(name="sim-1000", peers=1000, block_interval=0.5, gossip=SIM_1000_MEMBERSHIP),
}
"""The benchmark scenarios (bench/results/README.md): one org, 100 blocks of 100 KB (one every 0.5 s), 25 ms ± 10 %,
100 Mbit/s."""


def load_scenario(path: Path) -> Scenario:
    """Read a scenario YAML file (see the module docstring)."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ScenarioError(f"cannot read {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ScenarioError(f"{path}: expected a mapping of scenario keys")
    scenario = scenario_from_mapping(data)
    if "name" not in data and "preset" not in data:
        scenario = replace(scenario, name=path.stem)
    return scenario
