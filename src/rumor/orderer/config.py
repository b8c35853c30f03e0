"""The orderer's configuration: ``orderer.yaml``, laid out like the sections of Fabric's orderer.yaml that apply.

::

    General:
      ListenAddress: 0.0.0.0:7050          # host:port, or Fabric's form: a bare host and ListenPort: 7050
      LocalMSPDir: msp                     # the orderer's own MSP directory (signcerts, keystore, cacerts)
      LocalMSPID: OrdererMSP
      MaxRecvMsgSize: 104857600
      MaxSendMsgSize: 104857600
      Keepalive:                           # Fabric's keys and defaults
        ServerMinInterval: 60s             # clients pinging more often are disconnected
        ServerInterval: 7200s
        ServerTimeout: 20s
      TLS:
        Enabled: true
        Certificate: tls/server.crt
        PrivateKey: tls/server.key
        RootCAs: [tls/ca.crt]              # accepted for Fabric compatibility; the server does not need them
        ClientAuthRequired: false
        ClientRootCAs: []                  # CAs of client certificates, required with ClientAuthRequired
    FileLedger:
      Location: /var/hyperledger/production/orderer   # holds ledger.sqlite
    Channels:                              # genesis blocks of the channels to serve
      - channels/mychannel.block
    Consensus:
      Type: solo                           # solo: this process alone; etcd: several orderers on an etcd cluster
      Etcd:                                # only with Type: etcd (docs/ordering.md)
        Endpoints: [127.0.0.1:2379]
        NodeID: orderer0                   # unique and stable per orderer
        KeyPrefix: /rumor/orderer
        LeaseTTL: 5s
        TLS: {Enabled: false, RootCAs: [], Certificate: "", PrivateKey: ""}

Batch settings are not here: they belong to each channel and come from its genesis block.

``Channels`` is rumor's own key. Fabric 2.x bootstrapped one system channel from ``General.BootstrapFile`` and
Fabric 2.3+ joins channels at runtime through its channel participation API; rumor has neither, so it lists
the genesis blocks. A listed channel is created in the ledger on first start; channels already in the ledger
are served on later starts whether listed or not, and a listed block that differs from the ledger's block 0
is an error. Relative paths are resolved against the directory of the file.

The loading rules are rumor.config's (its schema helpers are reused): keys match case-insensitively, an
unknown key is an error naming the nearest known one, and every problem is a one-line ``ConfigError``.
Environment variables ``ORDERER_<SECTION>_<KEY>`` override the file, as in Fabric
(``ORDERER_GENERAL_LISTENADDRESS``, ``ORDERER_GENERAL_TLS_ENABLED``, ``ORDERER_CHANNELS``); an ``ORDERER_``
variable that names no key is an error.
"""

from __future__ import annotations

import difflib
import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rumor.config import (
    ConfigError,
    MiB,
    _build,
    _check_endpoint,
    _check_listen_address,
    _check_type,
    _Leaf,
    _Loader,
    _Node,
    _parse,
    _resolve,
    _show,
    _walk_schema,
    _walk_yaml,
    format_duration,
    setting,
)

__all__ = [
    "ENV_PREFIX",
    "ConsensusConfig",
    "EtcdConsensusConfig",
    "EtcdTLSConfig",
    "FileLedgerConfig",
    "GeneralConfig",
    "OrdererConfig",
    "OrdererKeepaliveConfig",
    "OrdererTLSConfig",
    "load_orderer_config",
    "orderer_config_to_yaml",
    "validate_orderer_config",
]

ENV_PREFIX = "ORDERER_"
CONFIG_FILE_NAME = "orderer.yaml"
LEDGER_FILE_NAME = "ledger.sqlite"


@dataclass(frozen=True)
class OrdererTLSConfig:
    """TLS of the AtomicBroadcast server (``General.TLS``)."""

    enabled: bool = setting("Enabled", False, "Serve AtomicBroadcast over TLS.")
    certificate: str = setting("Certificate", "", "PEM certificate of the TLS server.", path=True)
    private_key: str = setting("PrivateKey", "", "PEM private key of that certificate.", path=True)
    root_cas: tuple[str, ...] = setting(
        "RootCAs", (), "PEM root CA certificates of the TLS server (Fabric's key; unused by the server).", path=True
    )
    client_auth_required: bool = setting(
        "ClientAuthRequired", False, "Require clients to present a TLS certificate signed by ClientRootCAs."
    )
    client_root_cas: tuple[str, ...] = setting(
        "ClientRootCAs", (), "PEM CA certificates trusted to sign client TLS certificates.", path=True
    )


@dataclass(frozen=True)
class OrdererKeepaliveConfig:
    """gRPC keepalive of the AtomicBroadcast server (``General.Keepalive``), with Fabric's defaults."""

    server_min_interval: float = setting(
        "ServerMinInterval",
        60.0,
        "Shortest interval between a client's keepalive pings (s); a client that pings more often is disconnected.",
        positive=True,
    )
    server_interval: float = setting(
        "ServerInterval", 7200.0, "Silence on a client's connection before the orderer pings it (s).", positive=True
    )
    server_timeout: float = setting(
        "ServerTimeout",
        20.0,
        "How long the orderer waits for the answer to its ping before it closes the connection (s).",
        positive=True,
    )


@dataclass(frozen=True)
class GeneralConfig:
    """The server and the orderer's identity (``General``)."""

    listen_address: str = setting(
        "ListenAddress",
        "127.0.0.1:7050",
        "Address the AtomicBroadcast server listens on (host:port; port 0 picks a free port).",
        check=_check_listen_address,
    )
    listen_port: int = setting(
        "ListenPort",
        0,
        "Fabric's key: the port to listen on, ListenAddress then being a bare host. 0: ListenAddress holds the "
        "port (rumor's way).",
    )
    local_msp_dir: str = setting(
        "LocalMSPDir", "msp", "The orderer's MSP directory: signcerts, keystore, cacerts.", path=True
    )
    local_msp_id: str = setting("LocalMSPID", "SampleOrg", "MSP ID of the orderer's organization.")
    max_recv_msg_size: int = setting(
        "MaxRecvMsgSize", 100 * MiB, "Largest gRPC message the orderer accepts (bytes).", positive=True
    )
    max_send_msg_size: int = setting(
        "MaxSendMsgSize", 100 * MiB, "Largest gRPC message the orderer sends (bytes).", positive=True
    )
    tls: OrdererTLSConfig = field(default_factory=OrdererTLSConfig, metadata={"key": "TLS", "doc": "TLS."})
    keepalive: OrdererKeepaliveConfig = field(
        default_factory=OrdererKeepaliveConfig, metadata={"key": "Keepalive", "doc": "gRPC keepalive."}
    )


@dataclass(frozen=True)
class FileLedgerConfig:
    """Where blocks are kept (``FileLedger``)."""

    location: str = setting(
        "Location",
        "/var/hyperledger/production/orderer",
        f"Directory of the orderer's ledger ({LEDGER_FILE_NAME}, every channel's blocks).",
        path=True,
    )

    @property
    def ledger_path(self) -> Path:
        return Path(self.location) / LEDGER_FILE_NAME


@dataclass(frozen=True)
class EtcdTLSConfig:
    """TLS to the etcd cluster (``Consensus.Etcd.TLS``)."""

    enabled: bool = setting("Enabled", False, "Talk to etcd over TLS.")
    root_cas: tuple[str, ...] = setting("RootCAs", (), "PEM CA certificates of etcd's server certificates.", path=True)
    certificate: str = setting(
        "Certificate", "", "PEM client certificate, when etcd requires one (--client-cert-auth).", path=True
    )
    private_key: str = setting("PrivateKey", "", "PEM private key of that certificate.", path=True)


@dataclass(frozen=True)
class EtcdConsensusConfig:
    """The etcd cluster that orders the envelopes (``Consensus.Etcd``), read with ``Consensus.Type: etcd``."""

    endpoints: tuple[str, ...] = setting(
        "Endpoints",
        ("127.0.0.1:2379",),
        "Client addresses (host:port) of the etcd members; requests move to the next one when one fails.",
        check=_check_endpoint,
    )
    node_id: str = setting(
        "NodeID",
        "",
        "This orderer's name among the orderers of the cluster: unique, and the same across restarts (empty: the "
        "host name and the listen port).",
    )
    key_prefix: str = setting("KeyPrefix", "/rumor/orderer", "Prefix of every key the orderers keep in etcd.")
    lease_ttl: float = setting(
        "LeaseTTL",
        5.0,
        "TTL of this orderer's etcd lease (whole seconds, at least etcd's minimum of 2s with its default election "
        "timeout): a cutter that stops renewing it loses its channels within this time and can no longer write.",
        positive=True,
    )
    request_timeout: float = setting(
        "RequestTimeout",
        5.0,
        "Deadline of one etcd request; Broadcast answers SERVICE_UNAVAILABLE when etcd takes longer.",
        positive=True,
    )
    max_request_bytes: int = setting(
        "MaxRequestBytes",
        1572864,
        "etcd's --max-request-bytes (default 1.5 MiB): envelopes that cannot fit one request are refused with "
        "REQUEST_ENTITY_TOO_LARGE, and batches of envelopes are packed below it.",
        positive=True,
    )
    max_txn_ops: int = setting(
        "MaxTxnOps", 128, "etcd's --max-txn-ops (default 128): envelopes per etcd transaction at most.", positive=True
    )
    max_queue_bytes: int = setting(
        "MaxQueueBytes",
        256 * MiB,
        "Bound of a channel's queue in etcd (envelopes not yet cut, and those kept for an orderer that is "
        "behind): past it Broadcast answers SERVICE_UNAVAILABLE. Each orderer holds at most this much in memory.",
        positive=True,
    )
    retain_bytes: int = setting(
        "RetainBytes",
        128 * MiB,
        "Envelopes of blocks some orderer has not stored yet that etcd keeps for it; past this the oldest blocks "
        "leave etcd anyway, and that orderer reports the channel behind (restore it from another orderer's ledger).",
        positive=True,
    )
    tls: EtcdTLSConfig = field(default_factory=EtcdTLSConfig, metadata={"key": "TLS", "doc": "TLS to etcd."})


@dataclass(frozen=True)
class ConsensusConfig:
    """Who orders (``Consensus``): this process alone, or the orderers of an etcd cluster together."""

    type: str = setting(
        "Type",
        "solo",
        "solo (one orderer, its pending queue on its own disk) or etcd (several orderers, the order kept by etcd).",
        choices=("solo", "etcd"),
    )
    etcd: EtcdConsensusConfig = field(
        default_factory=EtcdConsensusConfig, metadata={"key": "Etcd", "doc": "The etcd cluster (Type: etcd)."}
    )


@dataclass(frozen=True)
class OrdererConfig:
    """The whole configuration of rumor's ordering service, as laid out in orderer.yaml."""

    general: GeneralConfig = field(default_factory=GeneralConfig, metadata={"key": "General", "doc": "General."})
    file_ledger: FileLedgerConfig = field(
        default_factory=FileLedgerConfig, metadata={"key": "FileLedger", "doc": "The block ledger."}
    )
    channels: tuple[str, ...] = setting(
        "Channels", (), "Genesis block files of the channels to create (rumor's key).", path=True
    )
    consensus: ConsensusConfig = field(
        default_factory=ConsensusConfig, metadata={"key": "Consensus", "doc": "Who orders: solo or etcd."}
    )


# Sections of Fabric's orderer.yaml that rumor's single-node orderer has no use for; accepted and ignored so
# that an existing file needs only the keys that differ.
FABRIC_KEYS_IGNORED: frozenset[str] = frozenset(
    {
        "General.Backoff",
        "General.Throttling",
        "General.Cluster",
        "General.Profile",
        "General.BCCSP",
        "General.Authentication",
        "General.LocalMSPType",
        "General.BootstrapMethod",
        "FileLedger.Prefix",
        "Debug",
        "Operations",
        "Metrics",
        "Admin",
        "ChannelParticipation",
        "Consensus.WALDir",
        "Consensus.SnapDir",
        "Consensus.EvictionSuspicion",
        "Kafka",
        "MSPConfigs",
    }
)


@functools.cache
def _leaves() -> tuple[_Leaf, ...]:
    return tuple(_walk_schema(OrdererConfig, (), ()))


@functools.cache
def _tree() -> _Node:
    root = _Node("")
    for leaf in _leaves():
        node = root
        for seg in leaf.segments[:-1]:
            child = node.children.setdefault(seg.lower(), _Node(seg))
            assert isinstance(child, _Node)
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


def _env_name(leaf: _Leaf) -> str:
    return ENV_PREFIX + "_".join(leaf.segments).upper()


def _read_yaml(path: Path) -> Any:
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
        raise ConfigError(f"{where}: YAML syntax error: {exc.problem or exc.context or 'invalid YAML'}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: YAML syntax error: {exc}") from None


def load_orderer_config(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> OrdererConfig:
    """Load and validate orderer.yaml (a file, or a directory holding one; None: the defaults).

    ``env`` supplies the ``ORDERER_*`` overrides and defaults to ``os.environ``. Raises ConfigError.
    """
    values: dict[_Leaf, Any] = {}
    base: Path | None = None
    if path is not None:
        file = Path(path)
        if file.is_dir():
            file = file / CONFIG_FILE_NAME
        data = _read_yaml(file)
        base = file.parent.absolute()
        if data is not None:
            if not isinstance(data, Mapping):
                raise ConfigError(f"{file}: {_show(data)} is not a mapping of sections (expected e.g. General:)")
            _walk_yaml(data, _tree(), "", values)
    known = {_env_name(leaf): leaf for leaf in _leaves()}
    environment = os.environ if env is None else env
    for name in sorted(environment):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX):
            continue
        leaf = known.get(upper)
        if leaf is None:
            close = difflib.get_close_matches(upper, list(known), n=1, cutoff=0.8)
            hint = f"did you mean {close[0]}?" if close else "ORDERER_ variables must name a configuration key"
            raise ConfigError(f"{name}: unknown environment variable ({hint})", key=name)
        values[leaf] = _parse(leaf, environment[name], f"{leaf.path} (from {name})")

    by_attrs = {leaf.attrs: value for leaf, value in values.items()}
    _join_listen_port(by_attrs)
    if base is not None:
        for leaf in _leaves():
            if leaf.meta["path"]:
                by_attrs[leaf.attrs] = _resolve(by_attrs.get(leaf.attrs, leaf.default), base)
    config: OrdererConfig = _build(OrdererConfig, (), by_attrs)
    validate_orderer_config(config)
    return config


def _join_listen_port(by_attrs: dict[tuple[str, ...], Any]) -> None:
    """Fabric's orderer.yaml splits the address: ListenAddress 0.0.0.0 and ListenPort 7050. rumor keeps one
    host:port; a file (or ORDERER_GENERAL_LISTENPORT) in Fabric's form is joined here."""
    port = by_attrs.pop(("general", "listen_port"), 0)
    if not port:
        return
    if not 0 < port <= 65535:
        raise ConfigError(f"General.ListenPort: {port} is not a port (expected 1-65535)", key="General.ListenPort")
    host = by_attrs.get(("general", "listen_address"), "0.0.0.0")
    if _check_listen_address(host) is None:
        raise ConfigError(
            f"General.ListenPort: {port} given, but General.ListenAddress {host!r} already names a port "
            "(give ListenAddress as host:port, or a bare host with ListenPort)",
            key="General.ListenPort",
        )
    by_attrs[("general", "listen_address")] = f"{host}:{port}"


def _get(config: OrdererConfig, attrs: tuple[str, ...]) -> Any:
    value: Any = config
    for attr in attrs:
        value = getattr(value, attr)
    return value


def validate_orderer_config(config: OrdererConfig) -> None:
    """Raise ConfigError unless every value has its type and range and the TLS settings are complete."""
    for leaf in _leaves():
        value = _get(config, leaf.attrs)
        _check_type(leaf, value)
        if leaf.kind == "int":
            if value < 0:
                raise ConfigError(f"{leaf.path}: {value} is negative (expected 0 or more)", key=leaf.path)
            if leaf.meta["positive"] and value == 0:
                raise ConfigError(f"{leaf.path}: 0 is not allowed (expected more than 0)", key=leaf.path)
        choices = leaf.meta["choices"]
        if choices and value not in choices:
            raise ConfigError(f"{leaf.path}: {_show(value)} is not one of {', '.join(choices)}", key=leaf.path)
        check = leaf.meta["check"]
        if check is not None:
            for item in value if leaf.kind == "list" else (value,):
                expected = check(item)
                if expected is not None:
                    raise ConfigError(
                        f"{leaf.path}: {_show(item)} is not a valid address (expected {expected})", key=leaf.path
                    )
    general = config.general
    if not general.local_msp_id:
        raise ConfigError(
            "General.LocalMSPID: empty (expected the MSP ID of the orderer's org)", key="General.LocalMSPID"
        )
    tls = general.tls
    if tls.enabled:
        for key, value in (("Certificate", tls.certificate), ("PrivateKey", tls.private_key)):
            if not value:
                raise ConfigError(
                    f"General.TLS.{key}: empty while General.TLS.Enabled is true (expected a PEM file)",
                    key=f"General.TLS.{key}",
                )
        if tls.client_auth_required and not tls.client_root_cas:
            raise ConfigError(
                "General.TLS.ClientRootCAs: empty while General.TLS.ClientAuthRequired is true "
                "(expected the CA certificates of the clients' TLS certificates)",
                key="General.TLS.ClientRootCAs",
            )
    elif tls.client_auth_required:
        raise ConfigError(
            "General.TLS.ClientAuthRequired: true while General.TLS.Enabled is false (expected TLS on)",
            key="General.TLS.ClientAuthRequired",
        )
    etcd = config.consensus.etcd
    if config.consensus.type == "etcd":
        if not etcd.endpoints:
            raise ConfigError(
                "Consensus.Etcd.Endpoints: empty while Consensus.Type is etcd (expected host:port of each member)",
                key="Consensus.Etcd.Endpoints",
            )
        if not etcd.key_prefix.startswith("/") or etcd.key_prefix.endswith("/"):
            raise ConfigError(
                f"Consensus.Etcd.KeyPrefix: {etcd.key_prefix!r} (expected a path starting with / and not ending "
                "with one, e.g. /rumor/orderer)",
                key="Consensus.Etcd.KeyPrefix",
            )
        if "/" in etcd.node_id:
            raise ConfigError(
                f"Consensus.Etcd.NodeID: {etcd.node_id!r} contains a / (expected a plain name)",
                key="Consensus.Etcd.NodeID",
            )
        if etcd.retain_bytes >= etcd.max_queue_bytes:
            raise ConfigError(
                f"Consensus.Etcd.RetainBytes: {etcd.retain_bytes} is not below MaxQueueBytes {etcd.max_queue_bytes} "
                "(what is kept for a late orderer must leave room for new envelopes)",
                key="Consensus.Etcd.RetainBytes",
            )
        if etcd.tls.enabled and not etcd.tls.root_cas:
            raise ConfigError(
                "Consensus.Etcd.TLS.RootCAs: empty while Consensus.Etcd.TLS.Enabled is true (expected etcd's CA)",
                key="Consensus.Etcd.TLS.RootCAs",
            )
        if bool(etcd.tls.certificate) != bool(etcd.tls.private_key):
            raise ConfigError(
                "Consensus.Etcd.TLS: Certificate and PrivateKey go together (expected both or neither)",
                key="Consensus.Etcd.TLS.Certificate",
            )


def orderer_config_to_yaml(config: OrdererConfig, *, header: str | None = None) -> str:
    """orderer.yaml text holding every key; :func:`load_orderer_config` reads it back equal."""
    tree: dict[str, Any] = {}
    for leaf in _leaves():
        node = tree
        for seg in leaf.segments[:-1]:
            node = node.setdefault(seg, {})
        value = _get(config, leaf.attrs)
        if leaf.kind == "list":
            value = list(value)
        elif leaf.kind == "duration":
            value = format_duration(value)
        node[leaf.segments[-1]] = value
    body = yaml.safe_dump(tree, sort_keys=False, default_flow_style=False, allow_unicode=True, width=1000)
    if header is None:
        return body
    return "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines()) + body
