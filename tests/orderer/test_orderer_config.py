"""orderer.yaml: keys, defaults, relative paths, environment overrides and one-line errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from rumor.config import ConfigError
from rumor.orderer.config import (
    OrdererConfig,
    load_orderer_config,
    orderer_config_to_yaml,
    validate_orderer_config,
)

FULL = """\
General:
  ListenAddress: 0.0.0.0:7050
  LocalMSPDir: msp
  LocalMSPID: OrdererMSP
  MaxRecvMsgSize: 1048576
  TLS:
    Enabled: true
    Certificate: tls/server.crt
    PrivateKey: tls/server.key
    RootCAs:
      - tls/ca.crt
    ClientAuthRequired: false
  Keepalive:
    ServerMinInterval: 30s
    ServerInterval: 2h
    ServerTimeout: 10s
FileLedger:
  Location: /var/rumor/orderer
Channels:
  - ../channels/mychannel.block
Operations:
  ListenAddress: 127.0.0.1:8443
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "orderer" / "orderer.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_loads_every_key_and_resolves_paths(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    config = load_orderer_config(path, env={})
    base = path.parent
    assert config.general.listen_address == "0.0.0.0:7050"
    assert config.general.local_msp_dir == str(base / "msp")
    assert config.general.local_msp_id == "OrdererMSP"
    assert config.general.max_recv_msg_size == 1048576
    assert config.general.tls.enabled is True
    assert config.general.tls.certificate == str(base / "tls" / "server.crt")
    assert config.general.tls.root_cas == (str(base / "tls" / "ca.crt"),)
    assert config.file_ledger.location == "/var/rumor/orderer"
    keepalive = config.general.keepalive
    assert (keepalive.server_min_interval, keepalive.server_interval, keepalive.server_timeout) == (30, 7200, 10)
    assert config.file_ledger.ledger_path == Path("/var/rumor/orderer/ledger.sqlite")
    assert config.channels == (str(tmp_path / "channels" / "mychannel.block"),)
    # A directory stands for the orderer.yaml in it.
    assert load_orderer_config(path.parent, env={}) == config


def test_defaults() -> None:
    config = load_orderer_config(None, env={})
    assert config == OrdererConfig()
    assert config.general.listen_address == "127.0.0.1:7050"
    assert config.general.tls.enabled is False
    assert config.channels == ()


def test_yaml_round_trip(tmp_path: Path) -> None:
    config = load_orderer_config(write(tmp_path, FULL), env={})
    again = load_orderer_config(write(tmp_path / "again", orderer_config_to_yaml(config, header="generated")), env={})
    assert again == config


def test_keys_are_case_insensitive(tmp_path: Path) -> None:
    config = load_orderer_config(write(tmp_path, "general:\n  listenaddress: 127.0.0.1:0\n"), env={})
    assert config.general.listen_address == "127.0.0.1:0"


def test_environment_overrides(tmp_path: Path) -> None:
    env = {
        "ORDERER_GENERAL_LISTENADDRESS": "127.0.0.1:9999",
        "ORDERER_GENERAL_TLS_ENABLED": "false",
        "ORDERER_CHANNELS": "/a.block /b.block",
        "UNRELATED": "x",
    }
    config = load_orderer_config(write(tmp_path, FULL), env=env)
    assert config.general.listen_address == "127.0.0.1:9999"
    assert config.general.tls.enabled is False
    assert config.channels == ("/a.block", "/b.block")


@pytest.mark.parametrize(
    ("text", "env", "fragment"),
    [
        ("General:\n  ListenAdress: x:1\n", {}, "General.ListenAdress: unknown key (did you mean ListenAddress?)"),
        ("General:\n  ListenAddress: nowhere\n", {}, 'General.ListenAddress: "nowhere" is not a valid address'),
        ("General:\n  TLS:\n    Enabled: maybe\n", {}, 'General.TLS.Enabled: "maybe" is not a boolean'),
        ("General:\n  MaxRecvMsgSize: 0\n", {}, "General.MaxRecvMsgSize: 0 is not allowed"),
        ("General:\n  TLS:\n    Enabled: true\n", {}, "General.TLS.Certificate: empty while General.TLS.Enabled"),
        (
            "General:\n  TLS:\n    Enabled: true\n    Certificate: c\n    PrivateKey: k\n"
            "    ClientAuthRequired: true\n",
            {},
            "General.TLS.ClientRootCAs: empty",
        ),
        ("General:\n  TLS:\n    ClientAuthRequired: true\n", {}, "ClientAuthRequired: true while General.TLS.Enabled"),
        ("General:\n  LocalMSPID: ''\n", {}, "General.LocalMSPID: empty"),
        ("Channels: 5\n", {}, "Channels: 5 is not a list of strings"),
        ("- a\n- b\n", {}, "is not a mapping of sections"),
        ("General: [\n", {}, "YAML syntax error"),
        ("", {"ORDERER_GENERAL_LISTENADRESS": "x:1"}, "did you mean ORDERER_GENERAL_LISTENADDRESS?"),
        ("", {"ORDERER_GENERAL_TLS_ENABLED": "perhaps"}, "(from ORDERER_GENERAL_TLS_ENABLED)"),
    ],
)
def test_errors_are_one_line(tmp_path: Path, text: str, env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_orderer_config(write(tmp_path, text), env=env)
    message = str(info.value)
    assert "\n" not in message
    assert fragment in message, message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_orderer_config(tmp_path / "nope.yaml", env={})


def test_validate_a_config_built_in_code() -> None:
    bad = dataclasses.replace(OrdererConfig(), channels=("a", 3))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="Channels"):
        validate_orderer_config(bad)


def test_fabric_split_listen_address_and_port(tmp_path: Path) -> None:
    """A Fabric orderer.yaml gives ListenAddress: 0.0.0.0 and ListenPort: 7050; rumor took only host:port and
    answered 'General.ListenPort: unknown key'."""
    path = tmp_path / "orderer.yaml"
    path.write_text("General:\n  ListenAddress: 127.0.0.1\n  ListenPort: 27150\n  LocalMSPID: OrdererMSP\n")
    config = load_orderer_config(path, env={})
    assert config.general.listen_address == "127.0.0.1:27150"
    again = tmp_path / "again.yaml"
    again.write_text(orderer_config_to_yaml(config))
    assert load_orderer_config(again, env={}) == config
    env = {"ORDERER_GENERAL_LISTENADDRESS": "0.0.0.0", "ORDERER_GENERAL_LISTENPORT": "7050"}
    assert load_orderer_config(None, env=env).general.listen_address == "0.0.0.0:7050"
    path.write_text("General:\n  ListenAddress: 127.0.0.1:7050\n  ListenPort: 7051\n")
    with pytest.raises(ConfigError, match="already names a port"):
        load_orderer_config(path, env={})


ETCD = """\
Consensus:
  Type: etcd
  WALDir: /var/hyperledger/production/orderer/etcdraft/wal   # Fabric's; ignored
  Etcd:
    Endpoints: [etcd-a:2379, etcd-b:2379]
    NodeID: orderer1
    KeyPrefix: /ordering
    LeaseTTL: 3s
    TLS:
      Enabled: true
      RootCAs: [etcd/ca.crt]
"""


def test_consensus_etcd_keys(tmp_path: Path) -> None:
    path = write(tmp_path, ETCD)
    config = load_orderer_config(path, env={"ORDERER_CONSENSUS_ETCD_REQUESTTIMEOUT": "2s"})
    etcd = config.consensus.etcd
    assert config.consensus.type == "etcd"
    assert etcd.endpoints == ("etcd-a:2379", "etcd-b:2379")
    assert (etcd.node_id, etcd.key_prefix, etcd.lease_ttl, etcd.request_timeout) == ("orderer1", "/ordering", 3.0, 2.0)
    assert etcd.tls.root_cas == (str(path.parent / "etcd" / "ca.crt"),)
    assert load_orderer_config(None, env={}).consensus.type == "solo"  # the default
    again = write(tmp_path, orderer_config_to_yaml(config))
    assert load_orderer_config(again, env={}) == load_orderer_config(again, env={})


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("Consensus:\n  Type: raft\n", "Consensus.Type"),
        ("Consensus:\n  Type: etcd\n  Etcd:\n    Endpoints: []\n", "Consensus.Etcd.Endpoints"),
        ("Consensus:\n  Type: etcd\n  Etcd:\n    KeyPrefix: rumor/\n", "Consensus.Etcd.KeyPrefix"),
        ("Consensus:\n  Type: etcd\n  Etcd:\n    NodeID: a/b\n", "Consensus.Etcd.NodeID"),
        (
            "Consensus:\n  Type: etcd\n  Etcd:\n    RetainBytes: 1000\n    MaxQueueBytes: 1000\n",
            "Consensus.Etcd.RetainBytes",
        ),
        ("Consensus:\n  Type: etcd\n  Etcd:\n    TLS: {Enabled: true}\n", "Consensus.Etcd.TLS.RootCAs"),
        ("Consensus:\n  Type: etcd\n  Etcd:\n    Endpoints: [nohost]\n", "Consensus.Etcd.Endpoints"),
    ],
)
def test_consensus_etcd_errors_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_orderer_config(write(tmp_path, text), env={})
    assert info.value.key == key or key in str(info.value)


def test_keepalive_defaults_are_fabrics_and_reach_the_grpc_server() -> None:
    from rumor.orderer.config import OrdererKeepaliveConfig
    from rumor.orderer.service import _keepalive_options

    assert OrdererConfig().general.keepalive == OrdererKeepaliveConfig(60.0, 7200.0, 20.0)
    options = dict(_keepalive_options(OrdererKeepaliveConfig(server_min_interval=2.0)))
    # A peer's deliver client pinging every 5 s would be sent GOAWAY under gRPC's default minimum of 5 minutes.
    assert options["grpc.http2.min_ping_interval_without_data_ms"] == 2000
    assert options["grpc.keepalive_time_ms"] == 7_200_000 and options["grpc.keepalive_timeout_ms"] == 20_000
    assert options["grpc.keepalive_permit_without_calls"] == 1
