"""The ``rumor`` command.

Every failure the user can cause (a bad config, a bad spec, an existing output directory) ends in one line on
stderr and exit code 2; anything else in one line and exit code 1. A traceback is printed only with
``--log-level debug``, because it helps whoever debugs rumor and nobody else.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import os
import signal
import sys
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
import typer.main
from rich.console import Console
from rich.markup import escape as rich_escape
from rich.table import Table

import rumor
from rumor.config import ConfigError, config_to_yaml, load_config

EXIT_FAILURE = 1
EXIT_USAGE = 2
"""A problem with the user's input (config, spec, arguments): the exit code click uses for usage errors."""


class LogLevel(enum.StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


class LogFormat(enum.StrEnum):
    text = "text"
    json = "json"


# Attributes every LogRecord has; anything else on a record came from `extra=` and belongs in the JSON object.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, ``extra=`` fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _RECORD_ATTRS and not k.startswith("_")})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def setup_logging(level: str, fmt: str) -> None:
    """Point the root logger at stderr with the given level (debug...error) and format (text or json)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == LogFormat.json:
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


def _debugging() -> bool:
    return logging.getLogger().isEnabledFor(logging.DEBUG)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print ``error: message`` as one line on stderr and exit with ``code``."""
    if _debugging() and sys.exc_info()[0] is not None:
        traceback.print_exc()
    print(f"error: {' '.join(str(message).splitlines())}", file=sys.stderr)
    raise typer.Exit(code)


app = typer.Typer(
    name="rumor",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
config_app = typer.Typer(
    help="Check and show configuration (core.yaml).\n\nExample: rumor config show core.yaml",
    no_args_is_help=True,
)
crypto_app = typer.Typer(
    help="Crypto material for a network.\n\nExample: rumor crypto generate --orgs 2 --peers-per-org 2 --out crypto",
    no_args_is_help=True,
)
orderer_app = typer.Typer(
    help="The built-in ordering service.\n\nExample: rumor orderer start --config orderer.yaml",
    no_args_is_help=True,
)
app.add_typer(config_app, name="config")
app.add_typer(crypto_app, name="crypto")
peer_app = typer.Typer(
    help="Run a peer.\n\nExample: rumor peer start --config ./rumor-network/peers/peer0.org1.example.com/core.yaml",
    no_args_is_help=True,
)
network_app = typer.Typer(
    help="A whole network on this machine.\n\nExample: rumor network init --orgs 2 --peers-per-org 3 --out ./net",
    no_args_is_help=True,
)
app.add_typer(orderer_app, name="orderer")
app.add_typer(peer_app, name="peer")
app.add_typer(network_app, name="network")
block_app = typer.Typer(
    help="Blocks of a peer's ledger.\n\nExample: rumor block get 5 -C mychannel --network ./rumor-network",
    no_args_is_help=True,
)
channel_app = typer.Typer(
    help="Channels: create a genesis block, list those a peer has joined.\n\n"
    "Example: rumor channel create --config configtx.yaml --profile MyChannel --channel mychannel -o mychannel.block",
    no_args_is_help=True,
)
app.add_typer(block_app, name="block")
app.add_typer(channel_app, name="channel")


@app.callback()
def _global_options(
    log_level: Annotated[
        LogLevel,
        typer.Option(
            help="Lowest level logged; debug also shows tracebacks.", envvar="RUMOR_LOGGING_LEVEL", case_sensitive=False
        ),
    ] = None,  # type: ignore[assignment]
    log_format: Annotated[
        LogFormat,
        typer.Option(
            help="Log line format: text, or json (one object per line).",
            envvar="RUMOR_LOGGING_FORMAT",
            case_sensitive=False,
        ),
    ] = None,  # type: ignore[assignment]
) -> None:
    """rumor: Hyperledger Fabric's gossip network in Python.

    Start with `rumor network up`: a whole network on this machine with a live dashboard. Run your own peers
    with `rumor peer start`; look at them with `rumor status`, `rumor peers`, `rumor block get`.

    Example: rumor --log-level debug network up --orgs 2 --peers-per-org 4
    """
    # Typer shows this docstring as the top-level help.
    # None: not given on the command line nor by RUMOR_LOGGING_*; a peer then takes its core.yaml's logging.
    _LOG_CHOICE.update(level=log_level.value if log_level else None, format=log_format.value if log_format else None)
    setup_logging(_LOG_CHOICE["level"] or "info", _LOG_CHOICE["format"] or "text")


_LOG_CHOICE: dict[str, str | None] = {"level": None, "format": None}


def _apply_config_logging(config: Any) -> None:
    """The core.yaml's logging section, where the command line (or RUMOR_LOGGING_*) did not choose."""
    level = _LOG_CHOICE["level"] or config.logging.level
    fmt = _LOG_CHOICE["format"] or config.logging.format
    if (level, fmt) != ("info", "text") or any(_LOG_CHOICE.values()):
        setup_logging(level, fmt)


@app.command()
def version() -> None:
    """Print rumor's version and those of Python, grpcio and protobuf.

    Example: rumor version
    """
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    parts = [f"Python {sys.version.split()[0]}"]
    for dist in ("grpcio", "protobuf"):
        with contextlib.suppress(PackageNotFoundError):
            parts.append(f"{dist} {dist_version(dist)}")
    print(f"rumor {rumor.__version__} ({', '.join(parts)})")


@config_app.command("check")
def config_check(
    path: Annotated[Path, typer.Argument(help="core.yaml file, or a directory holding one.")],
) -> None:
    """Load a core.yaml with the RUMOR_* environment overrides, validate it and print a summary.

    Also loads the peer's identity and TLS material: the MSP directory, its certificate (valid under its own
    org's CA), the TLS certificate, key (matching) and roots (one of which issued the certificate).
    Prints OK and the main settings, or one line naming the bad key or file (exit code 2).

    Example: rumor config check /etc/rumor/core.yaml
    """
    try:
        config = load_config(path)
    except ConfigError as exc:
        fail(str(exc))
    from rumor.preflight import PreflightError, check_peer

    try:
        check_peer(config)
    except PreflightError as exc:
        fail(str(exc))
    peer, gossip = config.peer, config.peer.gossip
    if gossip.use_leader_election:
        leadership = "leader election"
    else:
        leadership = "static org leader" if gossip.org_leader else "follower (static)"
    print(f"OK: {path}")
    print(f"  peer         {peer.id} ({peer.local_msp_id}), listening on {peer.listen_address}")
    print(f"  endpoint     {gossip.endpoint or peer.address}; external: {gossip.external_endpoint or '(none)'}")
    print(f"  bootstrap    {' '.join(gossip.bootstrap) or '(none)'}")
    print(f"  tls          {'on' if peer.tls.enabled else 'off'}; msp: {peer.msp_config_path}")
    print(f"  leadership   {leadership}; state transfer {'on' if gossip.state.enabled else 'off'}")
    print(f"  gossip       {gossip.dissemination} dissemination")
    print(f"  operations   {config.operations.listen_address}")


@config_app.command("show")
def config_show(
    path: Annotated[
        Path | None, typer.Argument(help="core.yaml file, or a directory holding one; omit for the defaults.")
    ] = None,
) -> None:
    """Print the effective configuration as YAML: the file (or the defaults), then RUMOR_* overrides.

    The output holds every key and is itself a valid core.yaml.

    Example: RUMOR_PEER_GOSSIP_PULLINTERVAL=2s rumor config show core.yaml
    """
    try:
        config = load_config(path)
    except ConfigError as exc:
        fail(str(exc))
    sys.stdout.write(config_to_yaml(config))


@crypto_app.command("generate")
def crypto_generate(
    orgs: Annotated[int | None, typer.Option(min=1, help="Peer organizations (default 2).")] = None,
    peers_per_org: Annotated[int | None, typer.Option(min=1, help="Peers in each organization (default 2).")] = None,
    out: Annotated[Path, typer.Option(help="Directory to write the material to.")] = Path("crypto-config"),
    spec: Annotated[
        Path | None,
        typer.Option(help="Network spec in YAML (cryptogen's crypto-config.yaml style) instead of --orgs."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace material already in the output directory.")] = False,
) -> None:
    """Generate CAs, certificates and keys in Fabric cryptogen's layout.

    Without --spec: org1.example.com (Org1MSP)... with peer0... each, and orderer org example.com (OrdererMSP).

    Example: rumor crypto generate --orgs 2 --peers-per-org 3 --out ./crypto-config
    """
    if spec is not None and (orgs is not None or peers_per_org is not None):
        fail("use either --spec or --orgs/--peers-per-org, not both")
    # Imported here so that commands that do not need certificates do not pay for loading the crypto stack.
    from rumor.crypto.api import CryptoError
    from rumor.crypto.material import default_spec, generate, load_spec

    try:
        network = load_spec(spec) if spec is not None else default_spec(orgs or 2, peers_per_org or 2)
        material = generate(network, out, force=force)
    except (CryptoError, ValueError, OSError) as exc:
        fail(str(exc))

    table = Table(title=f"Crypto material in {out}")
    table.add_column("MSP ID", no_wrap=True)
    table.add_column("Domain", no_wrap=True)
    table.add_column("Nodes")
    table.add_column("Users")
    for org in material.orgs:
        table.add_row(
            org.mspid,
            org.domain,
            ", ".join(node.name for node in org.nodes),
            ", ".join(user.name for user in org.users),
        )
    Console().print(table)
    print(
        f"wrote {_count(len(material.peers), 'peer')} and {_count(len(material.orderers), 'orderer')} "
        f"in {_count(len(material.orgs), 'organization')} to {out}"
    )


def _quiet_grpc() -> None:
    # gRPC's C core logs its own line for errors we report ourselves (a port in use, a refused
    # connection); it reads this variable only when first imported, so set it before importing rumor.orderer.
    if not _debugging():
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")


@orderer_app.command("start")
def orderer_start(
    config: Annotated[Path, typer.Option("--config", "-c", help="orderer.yaml, or a directory holding one.")],
) -> None:
    """Run the ordering service until SIGINT or SIGTERM, then stop cleanly (exit code 0).

    Prints one line when it serves: "orderer ready on HOST:PORT (channels: ...)".

    Example: rumor orderer start --config ./network/orderer/orderer.yaml
    """
    _quiet_grpc()
    from rumor.orderer.config import load_orderer_config
    from rumor.orderer.service import OrdererError

    try:
        orderer_config = load_orderer_config(config)
    except ConfigError as exc:
        fail(str(exc))
    try:
        asyncio.run(_run_orderer(orderer_config))
    except OrdererError as exc:
        fail(str(exc))


async def _run_orderer(config: Any) -> None:
    from rumor.orderer.service import Orderer

    orderer = Orderer.from_config(config)
    await orderer.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        print(f"orderer ready on {orderer.address} (channels: {', '.join(orderer.channels)})", flush=True)
        await stop.wait()
        logging.getLogger("rumor.orderer").info("signal received; stopping")
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await orderer.stop()


@app.command()
def submit(
    channel: Annotated[str, typer.Option("--channel", "-C", help="Channel to submit to.")],
    data: Annotated[list[str] | None, typer.Argument(help="Payloads, one envelope each (UTF-8 text).")] = None,
    orderer: Annotated[
        list[str] | None, typer.Option("--orderer", "-o", help="Orderer host:port; repeat to fail over.")
    ] = None,
    msp_dir: Annotated[Path | None, typer.Option(help="MSP directory of the submitting identity.")] = None,
    mspid: Annotated[str | None, typer.Option(help="MSP ID of the submitting identity.")] = None,
    tls_ca: Annotated[
        list[Path] | None, typer.Option(help="PEM root CA of the orderer's TLS certificate (enables TLS).")
    ] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="PEM client TLS certificate, if the orderer wants one.")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM key of the client TLS certificate.")] = None,
    network: Annotated[
        Path | None,
        typer.Option(help="Network directory (as rumor network init writes it): orderer, TLS and identity from it."),
    ] = None,
    count: Annotated[
        int | None, typer.Option(min=1, help="Submit this many generated payloads instead of DATA.")
    ] = None,
    size: Annotated[int, typer.Option(min=1, help="Size of each generated payload (bytes).")] = 64,
    timeout: Annotated[float, typer.Option(min=0.1, help="Give up after this many seconds (s).")] = 30.0,
    wait: Annotated[
        bool, typer.Option("--wait", help="Follow the channel's blocks until every payload is in one; print which.")
    ] = False,
) -> None:
    """Submit payloads to a channel through the ordering service, each in an envelope signed by an identity.

    Prints each payload's transaction ID (Fabric's: SHA-256 of nonce and creator); with --wait, the block it is in.

    Any refusal by the orderer ends the command with its status and reason. Options override --network.

    Example: rumor submit -o 127.0.0.1:7050 -C mychannel --msp-dir msp --mspid Org1MSP --tls-ca ca.pem hello world

    Example: rumor submit --network ./rumor-network -C mychannel --wait "where does this go?"
    """
    if count is not None and data:
        fail("give either DATA or --count, not both")
    if count is None and not data:
        fail("nothing to submit: give DATA or --count")
    _quiet_grpc()
    from rumor.crypto.api import CryptoError
    from rumor.crypto.identity import load_signing_identity
    from rumor.orderer.client import ClientTLS
    from rumor.orderer.netdir import NetworkDirError, network_target

    endpoints = list(orderer or [])
    tls = None
    if network is not None:
        try:
            target = network_target(network, channel)
        except NetworkDirError as exc:
            fail(str(exc))
        endpoints = endpoints or [target.endpoint]
        msp_dir = msp_dir or target.msp_dir
        mspid = mspid or target.mspid
        tls = target.tls
    if not endpoints:
        fail("--orderer is required (or --network)")
    if msp_dir is None or not mspid:
        fail("--msp-dir and --mspid are required (or --network)")
    try:
        signer = load_signing_identity(msp_dir, mspid)
    except (CryptoError, OSError) as exc:
        fail(f"--msp-dir: {exc}")
    if tls_ca or tls_cert or tls_key:
        if not tls_ca and tls is None:
            fail("--tls-cert/--tls-key need --tls-ca")
        try:
            roots = b"".join(path.read_bytes() for path in tls_ca or []) or (tls.root_certs if tls else b"")
            tls = ClientTLS(
                root_certs=roots,
                cert=tls_cert.read_bytes() if tls_cert else None,
                key=tls_key.read_bytes() if tls_key else None,
            )
        except (OSError, ValueError) as exc:
            fail(f"TLS: {exc}")
    if count is not None:
        payloads = [(f"rumor payload {i} ".encode() + b"." * size)[:size] for i in range(count)]
    else:
        payloads = [item.encode() for item in data or []]
    try:
        asyncio.run(_submit(endpoints, signer, tls, channel, payloads, timeout, wait))
    except _Refused as exc:
        fail(str(exc), exc.code)
    print(f"submitted {_count(len(payloads), 'envelope')} to channel {channel}")


class _Refused(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


async def _submit(
    endpoints: list[str], signer: Any, tls: Any, channel: str, payloads: list[bytes], timeout: float, wait: bool
) -> None:
    from rumor.orderer.client import BroadcastClient, BroadcastError, DeliverClient, DeliverError, newest_block
    from rumor.wire.pb.common import common_pb2

    start = 0
    if wait:
        # Blocks from the newest on: everything submitted now lands there or later.
        try:
            async with asyncio.timeout(timeout):
                start = await newest_block(endpoints, signer, channel, tls=tls)
        except (DeliverError, TimeoutError) as exc:
            raise _Refused(f"cannot read channel {channel}'s blocks: {exc or 'no answer'}", EXIT_FAILURE) from None
    async with BroadcastClient(endpoints, signer, tls=tls, timeout=timeout) as client:
        try:
            tx_ids = await client.submit_many(channel, payloads)
        except BroadcastError as exc:
            # Unreachable is the network's fault; any other refusal is about what the user asked.
            if exc.status == common_pb2.SERVICE_UNAVAILABLE:
                raise _Refused(f"cannot submit: {exc}", EXIT_FAILURE) from None
            raise _Refused(f"orderer refused: {exc}", EXIT_USAGE) from None
    if not wait:
        for tx_id in tx_ids:
            print(f"tx {tx_id}")
        return
    from rumor.channelconfig import EnvelopeError, open_envelope

    pending = set(tx_ids)
    where: dict[str, int] = {}
    deliver = DeliverClient(endpoints, signer, tls=tls)
    try:
        async with asyncio.timeout(timeout):
            async with contextlib.aclosing(deliver.deliver(channel, start)) as blocks:
                async for block in blocks:
                    for data in block.data.data:
                        with contextlib.suppress(EnvelopeError):
                            tx_id = open_envelope(data, require_creator=False).tx_id
                            if tx_id in pending:
                                pending.discard(tx_id)
                                where[tx_id] = block.header.number
                    if not pending:
                        break
    except (DeliverError, TimeoutError):
        pass
    for tx_id in tx_ids:
        print(f"tx {tx_id} in block {where[tx_id]}" if tx_id in where else f"tx {tx_id} not seen in a block yet")
    if pending:
        raise _Refused(f"{len(pending)} of {len(tx_ids)} payloads not in a block within {timeout:g}s", EXIT_FAILURE)


@peer_app.command("start")
def peer_start(
    config: Annotated[Path, typer.Option("--config", "-c", help="core.yaml, or a directory holding one.")],
    join: Annotated[
        list[Path] | None, typer.Option("--join", "-j", help="Genesis block of a channel to join; repeatable.")
    ] = None,
) -> None:
    """Run a peer until SIGINT or SIGTERM, then stop cleanly (exit code 0).

    Prints one line when it serves: "peer ready on HOST:PORT (operations on HOST:PORT)", the addresses bound
    (and "; advertised as HOST:PORT" when peer.address differs). Channels joined
    once are rejoined from the ledger at every start; --join is needed only the first time.

    Example: rumor peer start -c ./net/peers/peer0.org1.example.com/core.yaml -j ./net/channels/mychannel.block
    """
    _quiet_grpc()
    try:
        peer_config = load_config(config)
    except ConfigError as exc:
        fail(str(exc))
    _apply_config_logging(peer_config)
    from rumor.node import PeerError, check_genesis_for

    blocks: list[bytes] = []
    if join:
        # Every block is checked before anything binds a port or opens the ledger.
        signer = _load_peer_identity(peer_config)
        for path in join:
            try:
                raw = path.read_bytes()
                check_genesis_for(raw, signer)
            except OSError as exc:
                fail(f"--join {path}: {exc.strerror or exc}")
            except PeerError as exc:
                fail(f"--join {path}: {exc}")
            blocks.append(raw)

    try:
        asyncio.run(_run_peer(peer_config, blocks))
    except PeerError as exc:
        fail(str(exc))


def _load_peer_identity(config: Any) -> Any:
    from rumor.crypto.api import CryptoError
    from rumor.crypto.identity import load_signing_identity

    peer = config.peer
    try:
        return load_signing_identity(Path(peer.msp_config_path), peer.local_msp_id)
    except (OSError, CryptoError) as exc:
        fail(f"cannot load the peer's identity from {peer.msp_config_path}: {exc}")


async def _run_peer(config: Any, blocks: list[bytes]) -> None:
    from rumor.node import Peer

    peer = Peer(config)
    await peer.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        for block in blocks:
            await peer.join_channel(block)
        ops = f" (operations on {peer.ops.address})" if peer.ops is not None else ""
        # The address actually bound; what other peers are told to dial, when it differs, beside it.
        bound = f"{config.peer.listen_address.rpartition(':')[0]}:{peer.comm.port}"
        advertised = f"; advertised as {peer.endpoint}" if peer.endpoint != bound else ""
        print(f"peer ready on {bound}{ops}{advertised}", flush=True)
        await stop.wait()
        logging.getLogger("rumor.peer").info("signal received; stopping")
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await peer.stop()


@network_app.command("init")
def network_init(
    out: Annotated[
        Path,
        typer.Option("--dir", "-d", "--out", "-o", help="Directory to write the network to (empty or absent)."),
    ],
    orgs: Annotated[int, typer.Option(help="Peer organizations.", min=1)] = 2,
    peers_per_org: Annotated[int, typer.Option(help="Peers in each organization.", min=1)] = 4,
    channel: Annotated[str, typer.Option(help="Name of the channel every org joins.")] = "mychannel",
    base_port: Annotated[
        int, typer.Option(help="Orderer port; peer k gossips on base+1+k and serves operations on base+101+k.")
    ] = 7050,
    tls: Annotated[bool, typer.Option(help="Mutual TLS between peers and to the orderer.")] = True,
    orderers: Annotated[
        int, typer.Option(min=1, max=9, help="Orderers; more than one needs --consensus etcd (base+200+k).")
    ] = 1,
    consensus: Annotated[
        str, typer.Option(help="solo (one orderer) or etcd (orderers on an etcd cluster, one member each).")
    ] = "solo",
    host: Annotated[
        list[str] | None,
        typer.Option(
            "--host",
            metavar="NODE=IP",
            help="Put a node on another host (repeatable): it listens on and announces IP, and its TLS "
            "certificate names IP. NODE is a peer ID (peer0.org1.example.com) or orderer.example.com.",
        ),
    ] = None,
) -> None:
    """Write crypto material, orderer.yaml, one core.yaml per peer and the channel's genesis block.

    With --consensus etcd, also one etcd.yaml per etcd member (DIR/etcd/, client ports base+220+2k); `rumor network
    up` starts them (etcd from Debian's etcd-server package).

    Example: rumor network init --orgs 2 --peers-per-org 4 --channel mychannel --dir ./net --base-port 7050
    Example: rumor network init --orderers 3 --consensus etcd --dir ./net

    Across hosts: rumor network init --orgs 1 --peers-per-org 2 --dir ./net
    --host orderer.example.com=10.0.0.5 --host peer0.org1.example.com=10.0.1.11 --host peer1.org1.example.com=10.0.1.12
    """
    from rumor.crypto.api import CryptoError
    from rumor.network import NetworkInitError, init_network

    hosts: dict[str, str] = {}
    for item in host or []:
        node, sep, address = item.partition("=")
        if not sep or not node or not address:
            fail(f"--host {item}: expected NODE=IP, e.g. peer0.org1.example.com=10.0.1.11")
        hosts[node] = address
    try:
        layout = init_network(
            out,
            orgs=orgs,
            peers_per_org=peers_per_org,
            channel=channel,
            base_port=base_port,
            tls=tls,
            orderers=orderers,
            consensus=consensus,
            hosts=hosts,
        )
    except (NetworkInitError, CryptoError, ValueError) as exc:
        fail(str(exc))
    table = Table(title=f"rumor network in {layout.root}")
    for column in ("node", "org", "gossip / service", "operations", "config"):
        table.add_column(column)
    for entry in layout.orderers:
        table.add_row(entry.id, "OrdererMSP", entry.endpoint, "", str(entry.config.relative_to(layout.root)))
    for member in layout.etcd:
        table.add_row(member.name, "etcd", member.endpoint, "", str(member.config.relative_to(layout.root)))
    for peer in layout.peers:
        table.add_row(peer.id, peer.org, peer.endpoint, peer.operations, str(peer.config.relative_to(layout.root)))
    Console().print(table)
    print(f"channel {layout.channel}: genesis block {layout.genesis.relative_to(layout.root)}")


@network_app.command("status")
def network_status(
    directory: Annotated[Path, typer.Option("--dir", "-d", help="Network directory.")] = Path("rumor-network"),
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object per node instead.")] = False,
) -> None:
    """Which processes of a network directory run (whoever started them), with each peer's heights and leaders.

    Exit code 0 when every node runs, 1 otherwise.

    Example: rumor network status --dir ./rumor-network
    """
    from rumor.netctl import node_states
    from rumor.network import NetworkInitError, load_layout

    try:
        layout = load_layout(directory)
    except NetworkInitError as exc:
        fail(str(exc))
    states = node_states(layout)
    peers = {p.id: p for p in layout.peers}
    rows: list[dict[str, Any]] = []
    for state in states:
        if state.kind == "network up" and not state.running:
            continue
        peer = peers.get(state.name)
        row: dict[str, Any] = {
            "node": state.name,
            "kind": state.kind,
            "org": peer.org if peer is not None else ("OrdererMSP" if state.kind == "orderer" else ""),
            "state": "running" if state.running else "stopped",
            "pid": state.pid,
            "endpoint": peer.endpoint
            if peer is not None
            else (layout.orderer_endpoint if state.kind == "orderer" else ""),
            "height": None,
            "leader": None,
        }
        if peer is not None and state.running:
            status = _fetch_status(peer.operations)
            channel = (status or {}).get("channels", {}).get(layout.channel, {})
            row["state"] = "running" if status else "not answering"
            row["height"], row["leader"] = channel.get("height"), channel.get("leader")
        rows.append(row)
    if as_json:
        for row in rows:
            print(json.dumps(row))
    else:
        table = Table(title=f"rumor network in {layout.root} (channel {layout.channel})")
        for column in ("node", "org", "state", "process", "endpoint", "height", "leader"):
            table.add_column(column)
        for row in rows:
            height = "" if row["height"] is None else str(row["height"])
            table.add_row(
                row["node"], row["org"], row["state"], str(row["pid"] or ""), row["endpoint"], height,
                "yes" if row["leader"] else "",
            )  # fmt: skip
        Console().print(table)
    nodes = [s for s in states if s.kind != "network up"]
    if not all(s.running for s in nodes):
        raise typer.Exit(EXIT_FAILURE)


def _fetch_status(operations: str) -> dict[str, Any] | None:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{operations}/api/status", timeout=3) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return None


@network_app.command("down")
def network_down(
    directory: Annotated[Path, typer.Option("--dir", "-d", help="Network directory.")] = Path("rumor-network"),
    timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait for each to stop before SIGKILL.")] = 30,
) -> None:
    """Stop every process of a network directory: `network up` if it runs the network (it stops the rest in
    order), else each peer and the orderer. Ledgers stay; `rumor network up --dir DIR` resumes them.

    Example: rumor network down --dir ./rumor-network
    """
    from rumor.netctl import stop_network
    from rumor.network import NetworkInitError, load_layout

    try:
        layout = load_layout(directory)
    except NetworkInitError as exc:
        fail(str(exc))
    try:
        states = stop_network(layout, timeout=timeout)
    except TimeoutError as exc:
        fail(str(exc), EXIT_FAILURE)
    stopped = [s.name for s in states if s.running and s.kind != "network up"]
    print(f"stopped {len(stopped)} node(s) of {layout.root}" + (f": {', '.join(stopped)}" if stopped else ""))


@network_app.command("up")
def network_up(
    directory: Annotated[
        Path, typer.Option("--dir", "-d", help="Network directory; created with `network init` when it holds none.")
    ] = Path("rumor-network"),
    orgs: Annotated[int | None, typer.Option(min=1, help="Peer organizations of a new network (default 2).")] = None,
    peers_per_org: Annotated[
        int | None, typer.Option(min=1, help="Peers in each organization of a new network (default 4).")
    ] = None,
    channel: Annotated[str | None, typer.Option(help="Channel of a new network (default mychannel).")] = None,
    base_port: Annotated[
        int | None, typer.Option(help="Orderer port of a new network; peers on the next ports (default 7050).")
    ] = None,
    rate: Annotated[float, typer.Option(min=0, help="Blocks per second the load generator makes; 0 for none.")] = 2.0,
    duration: Annotated[
        float | None, typer.Option(min=0, help="Stop after this many seconds (default: run until Ctrl-C).")
    ] = None,
    dashboard_port: Annotated[
        int | None,
        typer.Option(min=0, help="Dashboard port (default 8080, or a free one when 8080 is taken; 0: any free)."),
    ] = None,
    dashboard_host: Annotated[str, typer.Option(help="Address the dashboard listens on.")] = "127.0.0.1",
) -> None:
    """Run a whole network here: orderer, peers, a load generator and the live dashboard, until Ctrl-C.

    Creates the network in --dir first when that directory holds none (see `rumor network init`); run again on
    the same directory to resume its ledgers. Prints "Dashboard: http://127.0.0.1:PORT/" when the network is up;
    logs of each node go to DIR/logs/. Ctrl-C (or --duration) stops every node cleanly.

    Example: rumor network up --orgs 2 --peers-per-org 4 --rate 2 --dir ./rumor-network
    """
    _quiet_grpc()
    from rumor.netup import UpOptions, run_up

    level = logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()
    as_json = any(isinstance(h.formatter, JSONFormatter) for h in logging.getLogger().handlers)
    options = UpOptions(
        dir=directory,
        orgs=orgs,
        peers_per_org=peers_per_org,
        channel=channel,
        base_port=base_port,
        rate=rate,
        duration=duration,
        dashboard_port=dashboard_port,
        dashboard_host=dashboard_host,
        log_level=level if level in {lv.value for lv in LogLevel} else "info",
        log_format="json" if as_json else "text",
    )
    code = run_up(options)
    if code:
        raise typer.Exit(code)


_PEER_HELP = "Operations address HOST:PORT of a peer; with --network, a peer ID of that network."
_NETWORK_HELP = "Network directory (as `rumor network init` writes it)."


def _status_of(peer: str | None, network: Path | None) -> dict[str, Any]:
    """The status of ``--peer``; with ``--network`` alone, of the first of its peers that answers. A peer that
    does not answer exits 1 (the network is down, not the command wrong), any other problem 2."""
    from rumor.ops.views import PeerDown, ViewError, first_answering, resolve_targets

    try:
        targets = resolve_targets(peer, network)
        return first_answering(targets)
    except PeerDown as exc:
        if network is not None and peer is None:
            fail(_network_down(network, len(targets)), EXIT_FAILURE)
        fail(str(exc), EXIT_FAILURE)
    except ViewError as exc:
        fail(str(exc))


@app.command()
def status(
    peer: Annotated[str | None, typer.Option("--peer", "-p", help=_PEER_HELP)] = None,
    network: Annotated[Path | None, typer.Option(help=_NETWORK_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status JSON as the peer serves it.")] = False,
) -> None:
    """Show a running peer's view: identity, channels with heights and leaders, membership, traffic, events.

    Asks the peer's operations endpoint (GET /api/status); with --network alone, the first of the network's peers
    that answers (the exit code is 1 when none does).

    Example: rumor status --peer 127.0.0.1:7151
    """
    data = _status_of(peer, network)
    if as_json:
        print(json.dumps(data, indent=2))
        return
    from rumor.ops.views import render_status

    render_status(data, Console())


@app.command()
def peers(
    peer: Annotated[str | None, typer.Option("--peer", "-p", help=_PEER_HELP)] = None,
    network: Annotated[Path | None, typer.Option(help=_NETWORK_HELP)] = None,
) -> None:
    """List peers: the membership a peer sees (--peer), or every peer of a network directory and its state.

    With --network alone, a peer whose operations endpoint does not answer is shown as down (org and endpoint from
    network.yaml); the exit code is 1 when none answers.

    Example: rumor peers --network ./rumor-network     (or: rumor peers --peer 127.0.0.1:7151)
    """
    from rumor.ops.views import ViewError, render_membership, render_network, resolve_targets

    if network is not None and peer is None:
        try:
            targets = resolve_targets(None, network)
        except ViewError as exc:
            fail(str(exc))
        down = render_network(targets, Console())
        if len(down) == len(targets):
            fail(_network_down(network, len(down)), EXIT_FAILURE)
        if down:
            print(f"{len(down)} of {_count(len(targets), 'peer')} down: {', '.join(t.name for t in down)}")
        return
    render_membership(_status_of(peer, network), Console())


@channel_app.command("create")
def channel_create(
    channel: Annotated[str, typer.Option("--channel", "-C", help="Name of the new channel.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the genesis block.")],
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="A configtx.yaml (Fabric's format) describing the channel.")
    ] = None,
    profile: Annotated[str | None, typer.Option(help="The profile of --config to use.")] = None,
    orderer_profile: Annotated[
        str | None, typer.Option(help="Take the Orderer section from this profile (e.g. a system channel's).")
    ] = None,
    org: Annotated[
        list[str] | None,
        typer.Option(help="Without --config: a member org, MSPID=MSPDIR[@ANCHOR,...] (repeat for each org)."),
    ] = None,
    orderer_org: Annotated[
        list[str] | None,
        typer.Option(help="Without --config: an orderer org, MSPID=MSPDIR@ENDPOINT[,ENDPOINT...]."),
    ] = None,
    batch_timeout: Annotated[float, typer.Option(min=0.001, help="Without --config: batch timeout (s).")] = 2.0,
    max_message_count: Annotated[int, typer.Option(min=1, help="Without --config: envelopes per block at most.")] = 10,
    sign_msp_dir: Annotated[
        Path | None, typer.Option(help="Sign the genesis as this orderer identity (MSP dir); unsigned otherwise.")
    ] = None,
    sign_mspid: Annotated[str | None, typer.Option(help="MSP ID of --sign-msp-dir.")] = None,
) -> None:
    """Write a channel's genesis block in Fabric's format, from a configtx.yaml profile or from flags.

    The block is configtxgen's (unsigned) or, with --sign-msp-dir, a Fabric orderer's (signed).

    A Fabric v2.2 peer joins it with `peer channel join`, a rumor peer with `rumor peer start --join`.

    Example: rumor channel create -c configtx.yaml --profile MyChannel -C mychannel -o mychannel.block

    Example: rumor channel create -C ch1 -o ch1.block --org Org1MSP=msp1@127.0.0.1:7051 --orderer-org O=omsp@h:7050
    """
    from rumor import channelconfig as cc
    from rumor import channelspec

    try:
        if config is not None:
            if org or orderer_org:
                fail("give either --config or --org/--orderer-org, not both")
            if profile is None:
                fail("--config needs --profile")
            cfg = channelspec.load_profile(config, profile, channel, orderer_profile=orderer_profile)
        else:
            if not org or not orderer_org:
                fail("give --config and --profile, or at least one --org and one --orderer-org")
            orgs = [_org_flag(item, "--org", lambda m, d, e: cc.org_config(m, d, e)) for item in org]
            orderers = [
                _org_flag(item, "--orderer-org", lambda m, d, e: cc.orderer_org_config(m, d, e)) for item in orderer_org
            ]
            cfg = cc.channel_config(
                channel,
                orgs,
                orderers,
                cc.batch_config(batch_timeout=batch_timeout, max_message_count=max_message_count),
            )
        signer = None
        if sign_msp_dir is not None:
            from rumor.crypto.api import CryptoError
            from rumor.crypto.identity import load_signing_identity

            if not sign_mspid:
                fail("--sign-msp-dir needs --sign-mspid")
            try:
                signer = load_signing_identity(sign_msp_dir, sign_mspid)
            except (CryptoError, OSError) as exc:
                fail(f"--sign-msp-dir: {exc}")
        block = cc.genesis_block(cfg, signer)
        cc.save_block(output, block)
    except (cc.ChannelConfigError, channelspec.ChannelSpecError) as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{output}: {exc.strerror or exc}")
    orgs_text = ", ".join(o.mspid for o in cfg.orgs)
    print(
        f"wrote the genesis block of channel {channel} to {output}: orgs {orgs_text}; "
        f"orderers {', '.join(cfg.orderer_endpoints) or '(no endpoint)'}; consensus {cfg.consensus_type}"
    )


def _org_flag(item: str, flag: str, make: Any) -> Any:
    mspid, sep, rest = item.partition("=")
    if not sep or not mspid or not rest:
        fail(f"{flag} {item!r}: expected MSPID=MSPDIR[@ENDPOINT,...]")
    msp_dir, _, endpoints = rest.partition("@")
    return make(mspid, Path(msp_dir), [e for e in endpoints.split(",") if e])


@channel_app.command("list")
def channel_list(
    peer: Annotated[str | None, typer.Option("--peer", "-p", help=_PEER_HELP)] = None,
    network: Annotated[Path | None, typer.Option(help=_NETWORK_HELP)] = None,
) -> None:
    """List the channels a running peer has joined, with its height and its org's leader on each.

    Example: rumor channel list --peer 127.0.0.1:7151
    """
    from rumor.ops.views import render_channels

    render_channels(_status_of(peer, network), Console())


@channel_app.command("join")
def channel_join(
    block: Annotated[Path, typer.Option("--block", "-b", help="The channel's genesis block.")],
    peer: Annotated[str | None, typer.Option("--peer", "-p", help=_PEER_HELP)] = None,
    network: Annotated[Path | None, typer.Option(help=_NETWORK_HELP)] = None,
    token: Annotated[
        str | None,
        typer.Option(help="The peer's operations.adminToken (default: read from its core.yaml with --network)."),
    ] = None,
) -> None:
    """Have a running peer join a channel, through the admin call POST /channels of its operations endpoint.

    The block is checked here first (it must be a genesis block); the peer then checks that its org is a member
    and its certificate valid in the channel, and stores the block; it rejoins the channel at every start.

    Example: rumor channel join -b ./channels/otherchannel.block --network ./rumor-network --peer peer0.org1
    """
    import urllib.error
    import urllib.request

    from rumor.channelconfig import ChannelConfigError, read_genesis
    from rumor.ops.views import ViewError, resolve_targets

    try:
        raw = block.read_bytes()
    except OSError as exc:
        fail(f"--block {block}: {exc.strerror or exc}")
    try:
        read_genesis(raw)
    except ChannelConfigError as exc:
        fail(f"--block {block}: {exc}")
    try:
        target = resolve_targets(peer, network)[0]
    except ViewError as exc:
        fail(str(exc))
    if token is None and target.config is not None:
        try:
            token = load_config(target.config, env={}).operations.admin_token
        except ConfigError as exc:
            fail(str(exc))
    request = urllib.request.Request(
        f"http://{target.operations}/channels",
        data=raw,
        method="POST",
        headers={"Content-Type": "application/octet-stream", **({"Authorization": f"Bearer {token}"} if token else {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            why = json.loads(exc.read()).get("error", exc.reason)
        except ValueError:
            why = exc.reason
        fail(f"{target.name}: {why}", EXIT_FAILURE)
    except (urllib.error.URLError, OSError) as exc:
        fail(f"cannot reach {target.name}'s operations endpoint at {target.operations}: {exc}", EXIT_FAILURE)
    print(f"{target.name} joined channel {answer['channel']}")


@block_app.command("get")
def block_get(
    number: Annotated[str, typer.Argument(help="Block number, or 'last' (newest), or 'first'.")],
    channel: Annotated[str, typer.Option("--channel", "-C", help="Channel of the block.")],
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="core.yaml of the peer whose ledger to read.")
    ] = None,
    network: Annotated[Path | None, typer.Option(help=_NETWORK_HELP)] = None,
    peer: Annotated[
        str | None, typer.Option("--peer", "-p", help="With --network: the peer ID (default: the first).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the block's description as JSON.")] = False,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Also write the raw block to this file.")
    ] = None,
) -> None:
    """Show a block of a peer's ledger: header, hashes and envelopes (the peer may be running).

    Example: rumor block get last -C mychannel --network ./rumor-network --peer peer1.org2.example.com
    """
    from rumor.ops.views import ViewError, describe_block, ledger_path, read_ledger, render_block

    try:
        name, path = ledger_path(config, network, peer)
        ledger = read_ledger(path)
    except ViewError as exc:
        fail(str(exc))
    try:
        height = ledger.height(channel)
        if height == 0:
            fail(f"{name} has no channel {channel} (channels: {', '.join(ledger.channels()) or 'none'})")
        if number in ("last", "newest"):
            wanted = height - 1
        elif number in ("first", "oldest"):
            wanted = 0
        elif number.isdigit():
            wanted = int(number)
        else:
            fail(f"block number {number!r}: expected a number, 'first' or 'last'")
        raw = ledger.get_block(channel, wanted)
    finally:
        ledger.close()
    if raw is None:
        fail(f"{name}: channel {channel} has blocks 0..{height - 1}; no block {wanted}")
    if output is not None:
        try:
            output.write_bytes(raw)
        except OSError as exc:
            fail(f"--output {output}: {exc.strerror or exc}")
    info = describe_block(raw)
    if as_json:
        print(json.dumps(info, indent=2))
    else:
        render_block(info, Console())
    if output is not None:
        print(f"wrote block {wanted} ({len(raw)} bytes) to {output}")


@block_app.command("find")
def block_find(
    tx: Annotated[str, typer.Option("--tx", help="Transaction ID (as `rumor submit` prints it).")],
    channel: Annotated[str, typer.Option("--channel", "-C", help="Channel to look in.")],
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="core.yaml of the peer whose ledger to read.")
    ] = None,
    network: Annotated[Path | None, typer.Option(help=_NETWORK_HELP)] = None,
    peer: Annotated[
        str | None, typer.Option("--peer", "-p", help="With --network: the peer ID (default: the first).")
    ] = None,
) -> None:
    """Find the block that holds a transaction, by the ledger's tx-id index (the peer may be running).

    Prints "tx ID in block N (envelope P)" for each envelope with that ID; exit code 1 when there is none.

    Example: rumor block find --tx 3f2a...9c -C mychannel --network ./rumor-network
    """
    from rumor.ops.views import ViewError, ledger_path, read_ledger

    tx_id = tx.strip().lower()
    if not tx_id or any(c not in "0123456789abcdef" for c in tx_id):
        fail(f"--tx {tx!r}: a transaction ID is hexadecimal")
    try:
        name, path = ledger_path(config, network, peer)
        ledger = read_ledger(path)
    except ViewError as exc:
        fail(str(exc))
    try:
        height = ledger.height(channel)
        if height == 0:
            fail(f"{name} has no channel {channel} (channels: {', '.join(ledger.channels()) or 'none'})")
        found = ledger.find_tx(channel, tx_id)
    finally:
        ledger.close()
    if not found:
        print(f"tx {tx_id} is not in the {height} blocks of channel {channel} at {name}", file=sys.stderr)
        raise typer.Exit(EXIT_FAILURE)
    for number, position in found:
        print(f"tx {tx_id} in block {number} (envelope {position})")


def _sim_help() -> tuple[Any, str]:
    """The defaults of ``rumor sim``'s flags (the preset they start from without a file) as their help shows them,
    and the scenario file's reference for the help's epilog: both read from rumor.sim.scenario, so that the help
    cannot drift from what runs."""
    from dataclasses import fields

    from rumor.sim.scenario import PRESETS, Scenario, default_text, scenario_reference

    base = PRESETS[_SIM_BASE]

    def default(key: str) -> str:
        return default_text(base, key)

    differs = [
        f"{f.name}: {default_text(base, f.name)}"
        for f in fields(Scenario)
        if f.name != "name" and getattr(base, f.name) != getattr(Scenario(), f.name)
    ]
    epilog = (
        "A scenario YAML file holds any of these keys (each shown with its default; flags given beside a file "
        "override its keys):\n\n\b\n"
        + rich_escape(scenario_reference())
        + f"\n\nWithout a file or --preset the flags start from preset {_SIM_BASE}"
        + (f", which differs in {', '.join(differs)}." if differs else ".")
    )
    return default, epilog


def _with_default(text: str, default: str) -> str:
    # Typer shows a default given as text in parentheses; these read like the defaults it shows itself.
    return f"{text} {rich_escape(f'[default: {default}]')}"


def _sim_flag(text: str, key: str) -> str:
    return _with_default(text, _sim_default(key))


_SIM_BASE = "sim-100"
_sim_default, _SIM_EPILOG = _sim_help()


@app.command(epilog=_SIM_EPILOG)
def sim(
    scenario: Annotated[
        Path | None, typer.Argument(help="Scenario YAML file: its keys are listed below.", show_default=False)
    ] = None,
    preset: Annotated[
        str | None, typer.Option(help=_with_default("Named scenario: sim-100 or sim-1000.", _SIM_BASE))
    ] = None,
    peers: Annotated[int | None, typer.Option(min=2, help=_sim_flag("Number of peers.", "peers"))] = None,
    orgs: Annotated[
        int | None,
        typer.Option(min=1, help=_sim_flag("Organizations (peer0 of each leads it).", "orgs")),
    ] = None,
    blocks: Annotated[
        int | None,
        typer.Option(min=1, help=_sim_flag("Blocks cut by the ordering service.", "blocks")),
    ] = None,
    block_size: Annotated[
        str | None, typer.Option(help=_sim_flag("Payload of each block, e.g. 100KB.", "block_size"))
    ] = None,
    block_interval: Annotated[
        str | None,
        typer.Option(help=_sim_flag("Time between blocks, e.g. 1s.", "block_interval")),
    ] = None,
    latency: Annotated[
        str | None,
        typer.Option(help=_sim_flag("One-way link latency, e.g. 25ms±10% (or 25ms+-10%).", "latency")),
    ] = None,
    bandwidth: Annotated[
        str | None,
        typer.Option(help=_sim_flag("Uplink of each peer, e.g. 100Mbit (0: unlimited).", "bandwidth")),
    ] = None,
    loss: Annotated[
        float | None,
        typer.Option(min=0.0, max=0.99, help=_sim_flag("Share of messages lost.", "loss")),
    ] = None,
    mode: Annotated[
        str | None,
        typer.Option(help=_sim_flag("Dissemination: fabric, enhanced or both.", "mode")),
    ] = None,
    seed: Annotated[int | None, typer.Option(help=_sim_flag("Seed of every random choice.", "seed"))] = None,
    crypto: Annotated[
        str | None,
        typer.Option(help=_sim_flag("cheap or x509 (real ECDSA; slow).", "crypto")),
    ] = None,
    warmup: Annotated[
        str | None,
        typer.Option(help=_sim_flag("Time before the first block, or auto.", "warmup")),
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help=_with_default("Write the figures as JSON to this file.", "none"))
    ] = None,
    plots: Annotated[Path | None, typer.Option(help="Directory for the PNG plots.")] = Path("sim-results"),
    no_plots: Annotated[bool, typer.Option("--no-plots", help="Write no plots.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar (or lines) on stderr.")] = False,
    jobs: Annotated[int, typer.Option(min=1, help="Modes run at once, one process each (with --mode both).")] = 1,
) -> None:
    """Simulate N peers running rumor's protocol core on a modelled network and print figures 1-4 of
    BENCHMARKS.md: 1 block latency, 2 push coverage, 3 payload amplification, 4 duplicates.

    A progress bar with the time remaining runs on stderr (plain lines when stderr is not a terminal).

    The figures: 1 block latency and time to all, 2 push coverage, 3 payload amplification, 4 duplicates, each
    beside its bound; bench/results/README.md (section "The figures") defines them.

    Example: rumor sim --peers 100 --blocks 100 --block-size 100KB --latency 25ms±10% --bandwidth 100Mbit
    --mode both --seed 1 --json sim.json
    """
    from rumor.sim.command import build_scenario, run_sim
    from rumor.sim.scenario import ScenarioError

    flags = {
        "peers": peers,
        "orgs": orgs,
        "blocks": blocks,
        "block_size": block_size,
        "block_interval": block_interval,
        "latency": latency,
        "bandwidth": bandwidth,
        "loss": loss,
        "mode": mode,
        "seed": seed,
        "crypto": crypto,
        "warmup": warmup,
    }
    try:
        chosen = build_scenario(scenario, preset, flags)
        run_sim(chosen, json_path=json_path, plots_dir=None if no_plots else plots, quiet=quiet, jobs=jobs)
    except ScenarioError as exc:
        fail(str(exc))


def _network_down(network: Path, peers: int) -> str:
    return (
        f"no peer of {network} answers ({_count(peers, 'peer')} down): the network is not running; "
        f"start it with: rumor network up --dir {network}"
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def main() -> None:
    """Entry point of the ``rumor`` console script."""
    parent = os.environ.pop("_RUMOR_DIE_WITH_PARENT", None)
    if parent is not None and parent.isdigit():
        from rumor.netup import die_with_parent

        die_with_parent(int(parent))
    # Not app(): in standalone mode click prints usage errors as a multi-line panel, and we want one line.
    command = typer.main.get_command(app)
    try:
        code = command.main(prog_name="rumor", standalone_mode=False)
    except typer.TyperException as exc:  # a usage error: unknown option, bad option value, missing argument
        # NoArgsIsHelpError has printed the help already; its message would be the help once more.
        if type(exc).__name__ != "NoArgsIsHelpError":
            ctx = getattr(exc, "ctx", None)
            hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
            message = " ".join(exc.format_message().splitlines()).rstrip(".")
            print(f"error: {message}{hint}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except typer.Abort:
        print("error: aborted", file=sys.stderr)
        sys.exit(EXIT_FAILURE)
    except Exception as exc:  # a bug, not a user error: one line unless debugging
        if _debugging():
            traceback.print_exc()
        print(
            f"error: unexpected {type(exc).__name__}: {' '.join(str(exc).splitlines())} "
            "(run with --log-level debug for the traceback)",
            file=sys.stderr,
        )
        sys.exit(EXIT_FAILURE)
    sys.exit(code if isinstance(code, int) else 0)
