"""rumor's configuration: frozen dataclasses, loaded from a core.yaml laid out like Fabric's.

Every setting is a dataclass field whose metadata carries its YAML key name (Fabric's camelCase, e.g.
``pullInterval`` for ``pull_interval``) and a one-line doc: ``setting(key, default, doc, ...)`` builds such a
field; a nested section is ``field(default_factory=..., metadata={"key": ..., "doc": ...})``. The loader, the
environment overrides, the YAML writer, the validation and :func:`iter_keys` (the source of the configuration
reference) all read that one schema, so a new key needs nothing but its declaration.

Types follow from the annotations: ``bool``, ``int``, ``str``, ``tuple[str, ...]`` (a list), and ``float``,
which in this module always means a duration in seconds. In YAML and in environment variables a duration is
written the Go way, as Fabric's core.yaml does (``5s``, ``1500ms``, ``1m``, ``2m30s``, ``1h``, ``100us``,
``0``), or as a bare number of seconds. (Fabric's viper would read a bare integer as nanoseconds; rumor reads
seconds, which is what a person writing ``pullInterval: 4`` means.)

Loading rules, each chosen so a mistake is reported rather than silently ignored:

- Keys match case-insensitively, as in Fabric (viper lower-cases every key).
- An unknown key inside a section rumor models is an error, with the nearest known key suggested.
- A key that Fabric's core.yaml has but rumor does not use (``peer.BCCSP``, ``peer.keepalive.client``,
  ``peer.gossip.pvtData.btlPullMargin``, the top-level ``vm``/``chaincode``/``ledger``/``metrics`` sections,
  ...) is accepted and ignored, so that a peer's existing core.yaml loads as it is. Only those exact names are
  ignored (see ``FABRIC_KEYS_IGNORED``); a misspelt one is still an unknown key.
- Relative file paths (``peer.fileSystemPath``, ``peer.mspConfigPath``, TLS files) are resolved against the
  directory of the config file, as Fabric does; without a config file they stay relative to the working
  directory.
- ``RUMOR_<SECTION>_..._<KEY>`` environment variables override the file: the dotted key path upper-cased with
  ``_`` between segments (``peer.gossip.pullInterval`` -> ``RUMOR_PEER_GOSSIP_PULLINTERVAL``,
  ``peer.tls.cert.file`` -> ``RUMOR_PEER_TLS_CERT_FILE``). A ``RUMOR_`` variable that names no key is an
  error, since a typo there would otherwise leave the setting at its default without a word. The variables in
  ``NON_CONFIG_ENV_VARS`` are exempt.

Every problem raises :class:`ConfigError`, whose message is one line naming the key, the value and what was
expected.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import os
import re
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import yaml

__all__ = [
    "ENV_PREFIX",
    "FABRIC_KEYS_IGNORED",
    "NON_CONFIG_ENV_VARS",
    "Config",
    "ConfigError",
    "ElectionConfig",
    "GossipConfig",
    "KeepaliveConfig",
    "KeyInfo",
    "LoggingConfig",
    "OperationsConfig",
    "OperationsTLSConfig",
    "PeerConfig",
    "StateConfig",
    "TLSConfig",
    "config_to_yaml",
    "format_duration",
    "iter_keys",
    "load_config",
    "parse_duration",
    "validate",
]

ENV_PREFIX = "RUMOR_"

NON_CONFIG_ENV_VARS: frozenset[str] = frozenset()
"""``RUMOR_`` environment variables that are not configuration keys and so are not checked against them.

Empty today: the CLI's ``--log-level``/``--log-format`` read ``RUMOR_LOGGING_LEVEL``/``RUMOR_LOGGING_FORMAT``,
which are the keys ``logging.level``/``logging.format``. A variable that some later part of rumor reads for
another purpose must be listed here, or every config load would reject it.
"""

MiB = 1024 * 1024

Kind = Literal["bool", "int", "duration", "str", "list"]


class ConfigError(Exception):
    """A configuration problem; ``str(error)`` is one line meant for the user.

    ``key`` is the dotted key path (``peer.gossip.pullInterval``) when the problem is about one key.
    """

    def __init__(self, message: str, *, key: str | None = None) -> None:
        # One line, whatever the value held: the CLI prints this message as is.
        super().__init__(" ".join(message.splitlines()))
        self.key = key


# --------------------------------------------------------------------------------------------------
# Schema declaration


def setting(
    key: str,
    default: Any,
    doc: str,
    *,
    positive: bool = False,
    choices: tuple[str, ...] = (),
    check: Callable[[str], str | None] | None = None,
    path: bool = False,
) -> Any:
    """Declare one configuration key.

    ``key`` is the YAML name within its section; it may be dotted (``cert.file``) for Fabric keys that sit
    in a sub-mapping of their own. ``positive`` rejects zero (for intervals and divisors where zero would
    spin or divide by zero). ``choices`` restricts a string. ``check`` returns what was expected when a
    string (or each list item) is malformed, else None. ``path`` marks file paths, resolved against the
    config file's directory.
    """
    return field(
        default=default,
        metadata={"key": key, "doc": doc, "positive": positive, "choices": choices, "check": check, "path": path},
    )


_HOST_PORT = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.%\w]+)\]|(?P<host>[^\s:\[\]/]+)):(?P<port>\d{1,5})")


def _check_endpoint(value: str) -> str | None:
    match = _HOST_PORT.fullmatch(value)
    if match is None or not 1 <= int(match["port"]) <= 65535:
        return "host:port with a port from 1 to 65535, e.g. peer0.org1.example.com:7051"
    return None


def _check_optional_endpoint(value: str) -> str | None:
    return None if value == "" else _check_endpoint(value)


def _check_listen_address(value: str) -> str | None:
    match = _HOST_PORT.fullmatch(value)
    # Port 0 lets the OS pick a free port, which tests and the simulator rely on.
    if match is None or not 0 <= int(match["port"]) <= 65535:
        return "host:port to listen on, e.g. 0.0.0.0:7051"
    return None


# --------------------------------------------------------------------------------------------------
# The configuration


@dataclass(frozen=True)
class ElectionConfig:
    """Leader election within an org, per channel (``peer.gossip.election``)."""

    startup_grace_period: float = setting(
        "startupGracePeriod",
        15.0,
        "Longest wait at startup for membership to settle before electing (s).",
        positive=True,
    )
    membership_sample_interval: float = setting(
        "membershipSampleInterval",
        1.0,
        "How often membership is sampled to see whether it is stable (s).",
        positive=True,
    )
    leader_alive_threshold: float = setting(
        "leaderAliveThreshold",
        10.0,
        "Silence from the leader after which followers elect again; the leader declares every half of it (s).",
        positive=True,
    )
    leader_election_duration: float = setting(
        "leaderElectionDuration",
        5.0,
        "Time between proposing oneself and declaring oneself leader (s).",
        positive=True,
    )


@dataclass(frozen=True)
class StateConfig:
    """State transfer: how a peer behind the others fetches missing blocks (``peer.gossip.state``)."""

    enabled: bool = setting(
        "enabled",
        True,
        "Run state transfer (catching up with peers ahead). Fabric's default is false; rumor's is true because a "
        "rumor peer has no other way to catch up.",
    )
    check_interval: float = setting(
        "checkInterval",
        10.0,
        "How often a peer compares its height with its peers' to decide to catch up (s).",
        positive=True,
    )
    response_timeout: float = setting(
        "responseTimeout", 3.0, "Wait for a state-transfer response before retrying (s).", positive=True
    )
    batch_size: int = setting("batchSize", 10, "Blocks asked for in one state-transfer request.", positive=True)
    block_buffer_size: int = setting(
        "blockBufferSize",
        20,
        "Size of the in-order payload buffer: a pushed block further ahead of the ledger is dropped (blocks).",
        positive=True,
    )
    max_retries: int = setting("maxRetries", 3, "Attempts of one state-transfer request before giving up.")
    serve_bytes_per_second: int = setting(
        "serveBytesPerSecond",
        32 * 1024 * 1024,
        "Block bytes served to one peer per second by state transfer, with a burst of as much; requests beyond it "
        "are not answered (bytes/s). Not a Fabric key.",
        positive=True,
    )
    distrust_period: float = setting(
        "distrustPeriod",
        60.0,
        "How long a peer that claimed a height and did not serve it is not asked again (s). Not a Fabric key.",
        positive=True,
    )
    store_retry_interval: float = setting(
        "storeRetryInterval",
        5.0,
        "While the ledger cannot store blocks (disk full, I/O error), how often the peer tries again to commit the "
        "blocks it holds in the in-order buffer; meanwhile /healthz reports the ledger unhealthy (s). Not a Fabric "
        "key.",
        positive=True,
    )


@dataclass(frozen=True)
class GossipConfig:
    """The gossip protocol's settings (``peer.gossip``); defaults are Fabric's."""

    bootstrap: tuple[str, ...] = setting(
        "bootstrap",
        ("127.0.0.1:7051",),
        "Peers of the same org contacted at startup (host:port each; a YAML list or a space-separated string).",
        check=_check_endpoint,
    )
    endpoint: str = setting(
        "endpoint",
        "",
        "Endpoint published to peers of the own org (host:port); empty means peer.address.",
        check=_check_optional_endpoint,
    )
    external_endpoint: str = setting(
        "externalEndpoint",
        "",
        "Endpoint published to other orgs (host:port); empty means the peer is not known outside its org.",
        check=_check_optional_endpoint,
    )
    use_leader_election: bool = setting(
        "useLeaderElection", False, "Elect, per channel, the org peer that pulls blocks from the ordering service."
    )
    org_leader: bool = setting(
        "orgLeader",
        True,
        "Be the org's static leader (pull blocks from the ordering service); exclusive with useLeaderElection.",
    )
    membership_tracker_interval: float = setting(
        "membershipTrackerInterval", 5.0, "How often membership changes are logged (s).", positive=True
    )
    max_block_count_to_store: int = setting(
        "maxBlockCountToStore", 10, "Blocks kept in memory for pull; older ones are evicted (blocks).", positive=True
    )
    max_propagation_burst_latency: float = setting(
        "maxPropagationBurstLatency", 0.01, "Longest time an outgoing message waits to be batched (s)."
    )
    max_propagation_burst_size: int = setting(
        "maxPropagationBurstSize", 10, "Messages batched before a push is sent at once (messages).", positive=True
    )
    propagate_iterations: int = setting("propagateIterations", 1, "Times each pushed message is sent.")
    propagate_peer_num: int = setting("propagatePeerNum", 3, "Peers each pushed message is sent to (peers).")
    pull_interval: float = setting("pullInterval", 4.0, "Period of the pull rounds (s).", positive=True)
    pull_peer_num: int = setting("pullPeerNum", 3, "Peers asked in each pull round (peers).")
    request_state_info_interval: float = setting(
        "requestStateInfoInterval", 4.0, "How often state info snapshots are pulled from peers (s).", positive=True
    )
    publish_state_info_interval: float = setting(
        "publishStateInfoInterval",
        4.0,
        "How often this peer's state info is published when it changed (s).",
        positive=True,
    )
    publish_cert_period: float = setting(
        "publishCertPeriod", 10.0, "Time after startup during which alive messages carry the full certificate (s)."
    )
    dial_timeout: float = setting("dialTimeout", 3.0, "Timeout of dialing a peer (s).", positive=True)
    conn_timeout: float = setting(
        "connTimeout", 2.0, "Timeout of the ping and of the handshake on a new connection (s).", positive=True
    )
    recv_buff_size: int = setting(
        "recvBuffSize",
        20,
        "Received messages of one connection waiting for the peer's handler; while this many wait, the "
        "connection is not read, which slows its sender (messages).",
        positive=True,
    )
    send_buff_size: int = setting("sendBuffSize", 200, "Outgoing messages buffered per connection (messages).")
    send_buff_bytes: int = setting(
        "sendBuffBytes",
        16 * 1024 * 1024,
        "Outgoing bytes buffered per connection; one message of any size may wait alone (bytes). Not a Fabric key.",
        positive=True,
    )
    write_timeout: float = setting(
        "writeTimeout",
        30.0,
        "Longest time one outgoing message may take to write; a connection whose reader stalls longer is closed "
        "(s). Not a Fabric key.",
        positive=True,
    )
    digest_wait_time: float = setting(
        "digestWaitTime", 1.0, "Wait for digests after a pull hello before requesting items (s)."
    )
    request_wait_time: float = setting(
        "requestWaitTime", 1.5, "How long a pull responder keeps a nonce for the following request (s)."
    )
    response_wait_time: float = setting(
        "responseWaitTime", 2.0, "Wait for the update after sending a pull request (s)."
    )
    alive_time_interval: float = setting(
        "aliveTimeInterval", 5.0, "Period of this peer's alive messages (s).", positive=True
    )
    alive_expiration_timeout: float = setting(
        "aliveExpirationTimeout",
        25.0,
        "Silence after which a peer is considered dead; checked every tenth of it (s).",
        positive=True,
    )
    reconnect_interval: float = setting(
        "reconnectInterval", 25.0, "Period of the attempts to reach dead peers again (s).", positive=True
    )
    max_connection_attempts: int = setting(
        "maxConnectionAttempts", 120, "Attempts to reach a bootstrap peer at startup.", positive=True
    )
    max_membership_entries: int = setting(
        "maxMembershipEntries",
        10_000,
        "Most alive and dead entries read from one membership response; a larger one is refused whole (entries). "
        "Not a Fabric key.",
        positive=True,
    )
    max_forged_per_response: int = setting(
        "maxForgedPerResponse",
        8,
        "Alive messages failing verification after which the rest of a membership response is dropped and its "
        "sender ignored for penaltyDuration; as many sent one by one within penaltyDuration do the same "
        "(messages). Not a Fabric key.",
        positive=True,
    )
    penalty_duration: float = setting(
        "penaltyDuration",
        60.0,
        "How long a peer that sent forged membership is ignored and disconnected (s). Not a Fabric key.",
        positive=True,
    )
    identify_dials: int = setting(
        "identifyDials",
        8,
        "Dials, per reconnectInterval, to endpoints named by alive messages whose identity is unknown, to learn "
        "who is there (dials). Not a Fabric key.",
        positive=True,
    )
    msg_expiration_factor: int = setting(
        "msgExpirationFactor", 20, "Alive messages expire after this many aliveExpirationTimeouts.", positive=True
    )
    dissemination: str = setting(
        "dissemination",
        "fabric",
        "Dissemination algorithm: fabric (Fabric's push and pull) or enhanced (rumor's own). Not a Fabric key.",
        choices=("fabric", "enhanced"),
    )
    fanout: int = setting(
        "fanout",
        4,
        "Enhanced dissemination: peers each new block (or its digest) is sent to at every hop. Not a Fabric key.",
        positive=True,
    )
    push_ttl: int = setting(
        "pushTTL",
        2,
        "Enhanced dissemination: hops over which the whole block is pushed, counted from the leader; after them "
        "only its digest travels. Not a Fabric key.",
    )
    advertisement_fanout: int = setting(
        "advertisementFanout",
        0,
        "Enhanced dissemination: peers each digest is advertised to; 0 means max(fanout, ceil(ln n) + 6) for n "
        "peers in the channel, so that about 1 block in 400 misses a peer (left to the pull). Not a Fabric key.",
    )
    advertisement_ttl: int = setting(
        "advertisementTTL",
        7,
        "Enhanced dissemination: hops over which a block or its digest travels in all (push hops included); a "
        "peer offered a digest it lacks asks the advertiser for the block. Not a Fabric key.",
        positive=True,
    )
    election: ElectionConfig = field(
        default_factory=ElectionConfig, metadata={"key": "election", "doc": "Leader election."}
    )
    state: StateConfig = field(default_factory=StateConfig, metadata={"key": "state", "doc": "State transfer."})


@dataclass(frozen=True)
class TLSConfig:
    """TLS of the peer's gRPC server and of its connections to other peers (``peer.tls``)."""

    enabled: bool = setting(
        "enabled",
        True,
        "Use TLS on the peer's connections. Fabric's sample core.yaml says false; rumor defaults to TLS on.",
    )
    cert_file: str = setting("cert.file", "", "PEM certificate of the peer's TLS server (and client).", path=True)
    key_file: str = setting("key.file", "", "PEM private key of the TLS certificate.", path=True)
    rootcert_file: str = setting("rootcert.file", "", "PEM root CA certificate trusted for TLS.", path=True)
    client_auth_required: bool = setting(
        "clientAuthRequired", False, "Require clients of the peer's server to present a TLS certificate."
    )
    client_cert_file: str = setting(
        "clientCert.file", "", "PEM client certificate; empty means the server certificate.", path=True
    )
    client_key_file: str = setting(
        "clientKey.file", "", "PEM key of the client certificate; empty means the server key.", path=True
    )
    client_root_cas_files: tuple[str, ...] = setting(
        "clientRootCAs.files", (), "PEM CA certificates trusted to sign client certificates.", path=True
    )


@dataclass(frozen=True)
class KeepaliveConfig:
    """gRPC keepalive (``peer.keepalive``). rumor models the deliver client's keys; Fabric's keys for the peer's
    server and its gossip clients are accepted and ignored (gossip connections ping after 60 s, Fabric's default)."""

    delivery_client_interval: float = setting(
        "deliveryClient.interval",
        60.0,
        "Silence on the leader's connection to the ordering service before it pings the orderer (s). A connection "
        "the orderer dropped while the network lost its reset would otherwise wait for blocks forever.",
        positive=True,
    )
    delivery_client_timeout: float = setting(
        "deliveryClient.timeout",
        20.0,
        "How long the leader waits for the answer to that ping before it drops the connection and reconnects (s).",
        positive=True,
    )


@dataclass(frozen=True)
class PeerConfig:
    """The peer (``peer``); defaults are those of Fabric's sample core.yaml."""

    id: str = setting("id", "jdoe", "Name of this peer, used in logs and as its default identity name.")
    network_id: str = setting(
        "networkId", "dev", "Name of the network, shown in the peer's start-up line and status (rumor: /api/status)."
    )
    listen_address: str = setting(
        "listenAddress",
        "0.0.0.0:7051",
        "Address the gRPC server listens on (host:port).",
        check=_check_listen_address,
    )
    address: str = setting(
        "address",
        "0.0.0.0:7051",
        "Endpoint at which other peers of the org reach this peer (host:port).",
        check=_check_endpoint,
    )
    file_system_path: str = setting(
        "fileSystemPath", "/var/hyperledger/production", "Directory holding the peer's ledger and state.", path=True
    )
    msp_config_path: str = setting(
        "mspConfigPath", "msp", "Directory of the peer's local MSP (signcerts, keystore, cacerts, ...).", path=True
    )
    local_msp_id: str = setting("localMspId", "SampleOrg", "MSP ID of the peer's organization.")
    max_recv_msg_size: int = setting(
        "maxRecvMsgSize", 100 * MiB, "Largest gRPC message the peer accepts (bytes).", positive=True
    )
    max_send_msg_size: int = setting(
        "maxSendMsgSize", 100 * MiB, "Largest gRPC message the peer sends (bytes).", positive=True
    )
    tls: TLSConfig = field(default_factory=TLSConfig, metadata={"key": "tls", "doc": "TLS."})
    keepalive: KeepaliveConfig = field(
        default_factory=KeepaliveConfig, metadata={"key": "keepalive", "doc": "gRPC keepalive."}
    )
    gossip: GossipConfig = field(default_factory=GossipConfig, metadata={"key": "gossip", "doc": "Gossip."})


@dataclass(frozen=True)
class OperationsTLSConfig:
    """TLS of the operations HTTP server (``operations.tls``): the subset of keys Fabric has there."""

    enabled: bool = setting("enabled", False, "Serve the operations endpoints over HTTPS.")
    cert_file: str = setting("cert.file", "", "PEM certificate of the operations server.", path=True)
    key_file: str = setting("key.file", "", "PEM private key of that certificate.", path=True)
    client_auth_required: bool = setting(
        "clientAuthRequired", False, "Require clients of the operations server to present a certificate."
    )
    client_root_cas_files: tuple[str, ...] = setting(
        "clientRootCAs.files", (), "PEM CA certificates trusted to sign client certificates.", path=True
    )


@dataclass(frozen=True)
class OperationsConfig:
    """The operations HTTP server: health, metrics, status (``operations``)."""

    listen_address: str = setting(
        "listenAddress",
        "127.0.0.1:9443",
        "Address the operations server listens on (host:port).",
        check=_check_listen_address,
    )
    tls: OperationsTLSConfig = field(
        default_factory=OperationsTLSConfig, metadata={"key": "tls", "doc": "TLS of the operations server."}
    )
    admin_token: str = setting(
        "adminToken",
        "",
        "Secret that admin calls (PUT /logspec) may carry as 'Authorization: Bearer <token>'; only over TLS or on "
        "a loopback listenAddress. Empty: only a TLS client certificate of an admin of the peer's org. "
        "Not a Fabric key.",
    )


@dataclass(frozen=True)
class LoggingConfig:
    """Logging of the peer process (``logging``; not a Fabric section)."""

    level: str = setting(
        "level",
        "info",
        "Lowest level logged: debug, info, warning or error.",
        choices=("debug", "info", "warning", "error"),
    )
    format: str = setting(
        "format", "text", "Log line format: text (human) or json (one object per line).", choices=("text", "json")
    )


@dataclass(frozen=True)
class Config:
    """The whole configuration of a rumor peer, as laid out in core.yaml."""

    peer: PeerConfig = field(default_factory=PeerConfig, metadata={"key": "peer", "doc": "The peer."})
    operations: OperationsConfig = field(
        default_factory=OperationsConfig, metadata={"key": "operations", "doc": "The operations server."}
    )
    logging: LoggingConfig = field(default_factory=LoggingConfig, metadata={"key": "logging", "doc": "Logging."})


FABRIC_KEYS_IGNORED: frozenset[str] = frozenset(
    {
        # Top-level sections of Fabric's core.yaml that concern chaincode, the ledger's databases and metrics
        # providers, which rumor does not have; rumor's metrics are served by the operations server.
        "vm",
        "chaincode",
        "ledger",
        "metrics",
        # Peer settings for endorsement, chaincode, the gateway, the deliver client and the crypto provider.
        "peer.chaincodeListenAddress",
        "peer.chaincodeAddress",
        "peer.addressAutoDetect",
        "peer.gomaxprocs",
        "peer.gateway",
        "peer.keepalive.interval",
        "peer.keepalive.timeout",
        "peer.keepalive.minInterval",
        "peer.keepalive.client",
        "peer.authentication",
        "peer.BCCSP",
        "peer.client",
        "peer.deliveryclient",
        "peer.localMspType",
        "peer.profile",
        "peer.adminService",
        "peer.handlers",
        "peer.validatorPoolSize",
        "peer.discovery",
        "peer.limits",
        "peer.events",
        "peer.tls.serverhostoverride",
        # Private data: rumor accepts pvtData messages on the wire and drops them, so these tune nothing.
        "peer.gossip.pvtData",
        # Gossip keys Fabric itself leaves unused, and private-data settings of the ledger side.
        "peer.gossip.stateInfoRetentionInterval",
        "peer.gossip.skipBlockVerification",
    }
)
"""Keys of Fabric's core.yaml that rumor accepts and ignores (with everything below them)."""


# --------------------------------------------------------------------------------------------------
# The schema, derived from the dataclasses


@dataclass(frozen=True)
class KeyInfo:
    """One configuration key, as listed by :func:`iter_keys`."""

    path: str
    """Dotted YAML path, e.g. ``peer.gossip.pullInterval``."""
    attr: str
    """Dotted attribute path on :class:`Config`, e.g. ``peer.gossip.pull_interval``."""
    env: str
    """Environment variable overriding it, e.g. ``RUMOR_PEER_GOSSIP_PULLINTERVAL``."""
    kind: Kind
    """bool, int, duration (seconds as a float), str or list (a tuple of strings)."""
    default: Any
    """The default as a Python value."""
    default_text: str
    """The default as written in YAML, e.g. ``4s``."""
    doc: str
    """What the key does, with its unit."""


@dataclass(frozen=True, eq=False)  # one instance per key, so identity is equality
class _Leaf:
    segments: tuple[str, ...]  # YAML names, with dotted keys split
    attrs: tuple[str, ...]
    kind: Kind
    default: Any
    meta: Mapping[str, Any]

    @property
    def path(self) -> str:
        return ".".join(self.segments)

    @property
    def env(self) -> str:
        return ENV_PREFIX + "_".join(self.segments).upper()


def _kind_of(annotation: Any, where: str) -> Kind:
    if annotation is bool:
        return "bool"
    if annotation is int:
        return "int"
    if annotation is float:
        return "duration"
    if annotation is str:
        return "str"
    if typing.get_origin(annotation) is tuple and typing.get_args(annotation) == (str, ...):
        return "list"
    raise TypeError(f"{where}: unsupported configuration type {annotation!r}")


def _walk_schema(cls: type, segments: tuple[str, ...], attrs: tuple[str, ...]) -> Iterator[_Leaf]:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        seg = (*segments, *f.metadata["key"].split("."))
        attr = (*attrs, f.name)
        annotation = hints[f.name]
        if dataclasses.is_dataclass(annotation):
            yield from _walk_schema(typing.cast(type, annotation), seg, attr)
        else:
            yield _Leaf(seg, attr, _kind_of(annotation, ".".join(attr)), f.default, f.metadata)


@functools.cache
def _leaves() -> tuple[_Leaf, ...]:
    return tuple(_walk_schema(Config, (), ()))


@dataclass
class _Node:
    """A mapping level of core.yaml: known children by lower-cased name."""

    name: str
    children: dict[str, _Node | _Leaf] = field(default_factory=dict)
    ignored: set[str] = field(default_factory=set)


@functools.cache
def _tree() -> _Node:
    root = _Node("")
    for leaf in _leaves():
        node = root
        for seg in leaf.segments[:-1]:
            child = node.children.setdefault(seg.lower(), _Node(seg))
            assert isinstance(child, _Node), f"{leaf.path}: a key and a section share a name"
            node = child
        node.children[leaf.segments[-1].lower()] = leaf
    for ignored in FABRIC_KEYS_IGNORED:
        *parents, last = ignored.split(".")
        node = root
        for seg in parents:
            child = node.children[seg.lower()]
            assert isinstance(child, _Node)
            node = child
        node.ignored.add(last.lower())
    return root


@functools.cache
def _env_names() -> dict[str, _Leaf]:
    return {leaf.env: leaf for leaf in _leaves()}


def iter_keys() -> Iterator[KeyInfo]:
    """Every configuration key, in declaration order, with its default and doc."""
    for leaf in _leaves():
        yield KeyInfo(
            path=leaf.path,
            attr=".".join(leaf.attrs),
            env=leaf.env,
            kind=leaf.kind,
            default=leaf.default,
            default_text=_yaml_text(leaf, leaf.default),
            doc=leaf.meta["doc"],
        )


# --------------------------------------------------------------------------------------------------
# Durations

_DURATION_UNITS: dict[str, Fraction] = {
    "ns": Fraction(1, 10**9),
    "us": Fraction(1, 10**6),
    # Go accepts both the micro sign and the Greek mu.
    "µs": Fraction(1, 10**6),
    "μs": Fraction(1, 10**6),
    "ms": Fraction(1, 10**3),
    "s": Fraction(1),
    "m": Fraction(60),
    "h": Fraction(3600),
}
# ASCII: \d would otherwise accept any Unicode digit.
_DURATION_TERM = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)", re.ASCII)
_DURATION = re.compile(rf"(?:{_DURATION_TERM.pattern})+", re.ASCII)
_NUMBER = re.compile(r"\d+\.?\d*|\.\d+", re.ASCII)
_DURATION_EXPECTED = "expected e.g. 4s, 1500ms, 1m"


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration (``2m30s``, ``1500ms``, ``0``) or a bare number of seconds.

    Raises ValueError when the text is neither, or is negative.
    """
    s = text.strip()
    negative = s.startswith("-")
    if s.startswith(("-", "+")):
        s = s[1:]
    if _NUMBER.fullmatch(s):
        seconds = Fraction(s)
    elif _DURATION.fullmatch(s):
        seconds = sum((Fraction(num) * _DURATION_UNITS[unit] for num, unit in _DURATION_TERM.findall(s)), Fraction(0))
    else:
        raise ValueError(f"{text!r} is not a duration")
    if negative and seconds:
        raise ValueError(f"{text!r} is negative")
    return float(seconds)


def format_duration(seconds: float) -> str:
    """Go-style text for a duration, such that :func:`parse_duration` gives it back (to the nanosecond).

    Whole seconds are written as hours, minutes and seconds (``2m30s``); anything finer in the largest unit
    that keeps it whole (``1500ms``, as Fabric's core.yaml writes requestWaitTime).
    """
    ns = round(Fraction(seconds) * 10**9)
    if ns == 0:
        return "0s"
    sign, ns = ("-", -ns) if ns < 0 else ("", ns)
    if ns % 10**9 == 0:
        h, rest = divmod(ns // 10**9, 3600)
        m, s = divmod(rest, 60)
        parts = [f"{h}h" if h else "", f"{m}m" if m else "", f"{s}s" if s else ""]
        return sign + "".join(parts)
    for unit, size in (("ms", 10**6), ("us", 10**3)):
        if ns % size == 0:
            return f"{sign}{ns // size}{unit}"
    return f"{sign}{ns}ns"


# --------------------------------------------------------------------------------------------------
# Parsing values (from YAML or from the environment)


def _show(value: Any) -> str:
    """A value as the user wrote it, quoted if a string, kept short."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _bad(where: str, value: Any, problem: str, expected: str, *, key: str | None = None) -> ConfigError:
    return ConfigError(f"{where}: {_show(value)} {problem} ({expected})", key=key or where)


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_LIST_SEPARATORS = re.compile(r"[\s,]+")


def _parse(leaf: _Leaf, value: Any, where: str) -> Any:
    """Convert a YAML value or an environment string to the field's Python type.

    ``where`` names the key in messages (with the environment variable when it came from one).
    """

    def bad(problem: str, expected: str) -> ConfigError:
        return _bad(where, value, problem, expected, key=leaf.path)

    kind = leaf.kind
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise bad("is not a boolean", "expected true or false")
    if kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value, re.ASCII):
            return int(value)
        raise bad("is not an integer", "expected a whole number, e.g. 10")
    if kind == "duration":
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise bad("is not a duration", _DURATION_EXPECTED)
            if value < 0:
                raise bad("is negative", "expected a duration of 0 or more")
            return float(value)
        if isinstance(value, str):
            try:
                return parse_duration(value)
            except ValueError as exc:
                if "negative" in str(exc):
                    raise bad("is negative", "expected a duration of 0 or more") from None
                raise bad("is not a duration", _DURATION_EXPECTED) from None
        raise bad("is not a duration", _DURATION_EXPECTED)
    if kind == "str":
        if value is None:
            return ""  # Fabric's core.yaml leaves unset strings empty (`endpoint:`)
        # A bare number is text the user meant (networkId: 2024); viper reads it the same way.
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise bad("is not a string", "expected text")
        text = str(value)
        # Choices are names like `info` or `json`; viper would not care about case either.
        return text.lower() if leaf.meta["choices"] else text
    # list
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(item for item in _LIST_SEPARATORS.split(value.strip()) if item)
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise bad("is not a list of strings", "expected a YAML list or a space-separated string")


# --------------------------------------------------------------------------------------------------
# Loading


class _Loader(yaml.SafeLoader):
    """SafeLoader that rejects a key given twice in one mapping (PyYAML silently keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value != "<<":
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
                    )
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path) -> Any:
    if path.is_dir():
        # Like FABRIC_CFG_PATH, a directory stands for the core.yaml inside it.
        path = path / "core.yaml"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc})") from None
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(f"{where}: YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: YAML syntax error: {exc}") from None


def _suggest(name: str, candidates: list[str]) -> str:
    by_lower = {c.lower(): c for c in candidates}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.6)
    return f"did you mean {by_lower[close[0]]}?" if close else "see `rumor config show` for every key"


def _walk_yaml(data: Mapping[Any, Any], node: _Node, prefix: str, out: dict[_Leaf, Any]) -> None:
    seen: dict[str, str] = {}
    for raw_key, value in data.items():
        key = str(raw_key)
        low = key.lower()
        where = f"{prefix}{key}"
        if low in seen:
            raise ConfigError(
                f"{where}: duplicate key (also given as {seen[low]}; keys are case-insensitive)", key=where
            )
        seen[low] = key
        child = node.children.get(low)
        if child is None:
            if low in node.ignored:
                continue
            names = [c.segments[-1] if isinstance(c, _Leaf) else c.name for c in node.children.values()]
            raise ConfigError(f"{where}: unknown key ({_suggest(key, names)})", key=where)
        if isinstance(child, _Leaf):
            out[child] = _parse(child, value, child.path)
            continue
        canonical = f"{prefix}{child.name}"
        if value is None:
            continue  # an empty section (`tls:` with nothing under it) leaves the defaults
        if not isinstance(value, Mapping):
            raise ConfigError(
                f"{canonical}: {_show(value)} is not a section (expected a mapping of keys)", key=canonical
            )
        _walk_yaml(value, child, canonical + ".", out)


def _from_env(env: Mapping[str, str], out: dict[_Leaf, Any]) -> None:
    known = _env_names()
    for name in sorted(env):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in NON_CONFIG_ENV_VARS:
            continue
        leaf = known.get(upper)
        if leaf is None:
            close = difflib.get_close_matches(upper, list(known), n=1, cutoff=0.8)
            hint = f"did you mean {close[0]}?" if close else "RUMOR_ variables must name a configuration key"
            raise ConfigError(f"{name}: unknown environment variable ({hint})", key=name)
        out[leaf] = _parse(leaf, env[name], f"{leaf.path} (from {name})")


def _build(cls: type, attrs: tuple[str, ...], values: Mapping[tuple[str, ...], Any]) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        attr = (*attrs, f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            kwargs[f.name] = _build(hints[f.name], attr, values)
        elif attr in values:
            kwargs[f.name] = values[attr]
    return cls(**kwargs)


def _get(config: Config, attrs: tuple[str, ...]) -> Any:
    value: Any = config
    for attr in attrs:
        value = getattr(value, attr)
    return value


def _resolve(value: Any, base: Path) -> Any:
    if isinstance(value, tuple):
        return tuple(_resolve(item, base) for item in value)
    if value == "" or os.path.isabs(value):
        return value
    return os.path.normpath(base / value)


def load_config(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Load and validate the configuration.

    ``path`` is a core.yaml file, or a directory holding one; None gives the defaults. ``env`` supplies the
    ``RUMOR_*`` overrides and defaults to ``os.environ``; pass ``{}`` to ignore the environment.
    Raises :class:`ConfigError`.
    """
    values: dict[_Leaf, Any] = {}
    base: Path | None = None
    if path is not None:
        file = Path(path)
        data = _read_yaml(file)
        base = (file if file.is_dir() else file.parent).absolute()
        if data is not None:
            if not isinstance(data, Mapping):
                raise ConfigError(
                    f"{file}: {_show(data)} is not a mapping of sections (expected top-level keys such as peer:)"
                )
            _walk_yaml(data, _tree(), "", values)
    _from_env(os.environ if env is None else env, values)

    by_attrs = {leaf.attrs: value for leaf, value in values.items()}
    if base is not None:
        for leaf in _leaves():
            if leaf.meta["path"]:
                by_attrs[leaf.attrs] = _resolve(by_attrs.get(leaf.attrs, leaf.default), base)
    config: Config = _build(Config, (), by_attrs)
    validate(config)
    return config


# --------------------------------------------------------------------------------------------------
# Validation


def _check_type(leaf: _Leaf, value: Any) -> None:
    ok = {
        "bool": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "duration": isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value),
        "str": isinstance(value, str),
        "list": isinstance(value, tuple) and all(isinstance(item, str) for item in value),
    }[leaf.kind]
    if not ok:
        expected = {
            "bool": "expected a bool",
            "int": "expected an int",
            "duration": "expected seconds as a float",
            "str": "expected a str",
            "list": "expected a tuple of str",
        }[leaf.kind]
        raise _bad(leaf.path, value, f"has the wrong type {type(value).__name__}", expected)


def validate(config: Config) -> None:
    """Raise :class:`ConfigError` unless every value has its type and range and the values agree.

    :func:`load_config` calls it; call it on a Config built or changed in code (``dataclasses.replace``)
    to get the same checks.
    """
    for leaf in _leaves():
        value = _get(config, leaf.attrs)
        _check_type(leaf, value)
        meta = leaf.meta
        if leaf.kind in ("int", "duration"):
            shown = format_duration(value) if leaf.kind == "duration" else value
            if value < 0:
                raise ConfigError(f"{leaf.path}: {shown} is negative (expected 0 or more)", key=leaf.path)
            if meta["positive"] and value == 0:
                raise ConfigError(f"{leaf.path}: {shown} is not allowed (expected more than 0)", key=leaf.path)
        if meta["choices"] and value not in meta["choices"]:
            raise _bad(leaf.path, value, "is not a valid choice", "expected one of: " + ", ".join(meta["choices"]))
        check = meta["check"]
        if check is not None:
            for item in value if leaf.kind == "list" else (value,):
                expected = check(item)
                if expected is not None:
                    raise _bad(leaf.path, item, "is not a valid address", "expected " + expected)

    gossip = config.peer.gossip
    if gossip.use_leader_election and gossip.org_leader:
        raise ConfigError(
            "peer.gossip.useLeaderElection and peer.gossip.orgLeader are both true (expected at most one: a peer "
            "either takes part in leader election or is its org's static leader; set orgLeader: false)",
            key="peer.gossip.useLeaderElection",
        )


# --------------------------------------------------------------------------------------------------
# Writing


def _yaml_text(leaf: _Leaf, value: Any) -> str:
    if leaf.kind == "duration":
        return format_duration(value)
    if leaf.kind == "bool":
        return "true" if value else "false"
    if leaf.kind == "list":
        return " ".join(value)
    return str(value)


def _yaml_value(leaf: _Leaf, value: Any) -> Any:
    if leaf.kind == "duration":
        return format_duration(value)
    if leaf.kind == "list":
        return list(value)
    return value


def config_to_yaml(config: Config, *, header: str | None = None) -> str:
    """The configuration as a core.yaml holding every key; :func:`load_config` reads it back equal.

    Durations are written Go-style and lists as YAML lists, so Fabric's peer can read the file as well.
    ``header`` is prepended as ``#`` comment lines.
    """
    tree: dict[str, Any] = {}
    for leaf in _leaves():
        node = tree
        for seg in leaf.segments[:-1]:
            node = node.setdefault(seg, {})
        node[leaf.segments[-1]] = _yaml_value(leaf, _get(config, leaf.attrs))
    body = yaml.safe_dump(tree, sort_keys=False, default_flow_style=False, allow_unicode=True, width=1000)
    if header is None:
        return body
    comment = "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines())
    return comment + body
