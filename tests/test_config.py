"""Configuration: defaults, YAML and environment loading, error messages, writing back."""

from __future__ import annotations

import dataclasses
import os
import textwrap
from pathlib import Path

import pytest

from rumor.config import (
    Config,
    ConfigError,
    GossipConfig,
    PeerConfig,
    config_to_yaml,
    format_duration,
    iter_keys,
    load_config,
    parse_duration,
    validate,
)

# Fabric's defaults of peer.gossip (the "Fabric" column of docs/protocol.md, "Defaults"); every key must match.
PROTOCOL_DEFAULTS = """
bootstrap 127.0.0.1:7051 · endpoint "" · externalEndpoint "" · useLeaderElection false · orgLeader true ·
membershipTrackerInterval 5s · maxBlockCountToStore 10 · maxPropagationBurstLatency 10ms ·
maxPropagationBurstSize 10 · propagateIterations 1 · propagatePeerNum 3 · pullInterval 4s · pullPeerNum 3 ·
requestStateInfoInterval 4s · publishStateInfoInterval 4s · publishCertPeriod 10s · dialTimeout 3s ·
connTimeout 2s · recvBuffSize 20 · sendBuffSize 200 · digestWaitTime 1s · requestWaitTime 1500ms ·
responseWaitTime 2s · aliveTimeInterval 5s · aliveExpirationTimeout 25s · reconnectInterval 25s ·
maxConnectionAttempts 120 · msgExpirationFactor 20 · election.startupGracePeriod 15s ·
election.membershipSampleInterval 1s · election.leaderAliveThreshold 10s · election.leaderElectionDuration 5s ·
state.enabled false (rumor: true) · state.checkInterval 10s · state.responseTimeout 3s · state.batchSize 10 ·
state.blockBufferSize 20 · state.maxRetries 3
"""


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None, name: str = "core.yaml") -> Config:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return load_config(path, env={} if env is None else env)


def error_of(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, env)
    message = str(info.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------------------------------
# Defaults


def test_every_protocol_default_is_the_gossip_default() -> None:
    keys = {k.path: k for k in iter_keys()}
    expected = {}
    for item in " ".join(PROTOCOL_DEFAULTS.split()).split(" · "):
        name, value = item.split(" ", 1)
        expected[f"peer.gossip.{name}"] = value
    assert len(expected) == 38  # protocol.md's 42, less the 4 pvtData keys rumor accepts and ignores
    for path, value in expected.items():
        info = keys[path]
        if path == "peer.gossip.state.enabled":
            assert info.default is True  # rumor's choice, documented as differing from Fabric's
        elif value == '""':
            assert info.default == ""
        elif info.kind == "duration":
            assert info.default == parse_duration(value), path
        else:
            assert info.default_text == value, path


def test_defaults_spot_check() -> None:
    c = Config()
    g = c.peer.gossip
    assert g.bootstrap == ("127.0.0.1:7051",)
    assert (g.use_leader_election, g.org_leader) == (False, True)
    assert g.pull_interval == 4.0
    assert g.request_wait_time == 1.5
    assert g.max_propagation_burst_latency == 0.01
    assert g.send_buff_size == 200 and g.recv_buff_size == 20
    assert g.alive_expiration_timeout == 25.0
    assert g.max_connection_attempts == 120 and g.msg_expiration_factor == 20
    assert g.election.startup_grace_period == 15.0
    assert g.election.leader_alive_threshold == 10.0
    assert g.state.enabled is True
    assert g.state.block_buffer_size == 20 and g.state.max_retries == 3
    assert g.dissemination == "fabric"
    assert c.peer.max_recv_msg_size == c.peer.max_send_msg_size == 100 * 1024 * 1024
    assert c.peer.listen_address == "0.0.0.0:7051"
    assert c.peer.file_system_path == "/var/hyperledger/production"
    assert c.peer.tls.enabled is True and c.peer.tls.client_auth_required is False
    assert c.operations.listen_address == "127.0.0.1:9443" and c.operations.tls.enabled is False
    validate(c)


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().peer.gossip.pull_interval = 1.0  # type: ignore[misc]


def test_every_key_is_documented_and_named() -> None:
    keys = list(iter_keys())
    assert len({k.path.lower() for k in keys}) == len(keys)
    for k in keys:
        assert k.doc.strip(), k.path
        assert k.env == "RUMOR_" + k.path.replace(".", "_").upper()
    by_path = {k.path: k for k in keys}
    assert by_path["peer.gossip.election.leaderAliveThreshold"].env == "RUMOR_PEER_GOSSIP_ELECTION_LEADERALIVETHRESHOLD"
    assert by_path["peer.tls.cert.file"].env == "RUMOR_PEER_TLS_CERT_FILE"
    assert by_path["peer.gossip.pullInterval"].attr == "peer.gossip.pull_interval"
    assert by_path["peer.gossip.pullInterval"].kind == "duration"
    assert by_path["peer.gossip.requestWaitTime"].default_text == "1500ms"


def test_no_path_gives_defaults() -> None:
    assert load_config(None, env={}) == Config()


# --------------------------------------------------------------------------------------------------
# Durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5s", 5.0),
        ("1500ms", 1.5),
        ("1m", 60.0),
        ("2m30s", 150.0),
        ("1h", 3600.0),
        ("100us", 0.0001),
        ("100µs", 0.0001),
        ("250ns", 250e-9),
        ("0", 0.0),
        ("1.5s", 1.5),
        (".5m", 30.0),
        ("1h2m3s", 3723.0),
        ("7", 7.0),
        ("0.25", 0.25),
        (" 4s ", 4.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds, rel=1e-12, abs=0)


@pytest.mark.parametrize("text", ["", "4x", "s", "4 s", "1m-3s", "abc", "4S", "1.2.3s", "-5s"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize("seconds", [0.0, 0.01, 1.5, 4.0, 60.0, 150.0, 3600.0, 3723.5, 1e-4, 2.5e-7, 90061.0])
def test_format_duration_round_trips(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


def test_format_duration_style() -> None:
    assert [format_duration(s) for s in (0, 0.01, 1.5, 4, 60, 150, 3600)] == [
        "0s",
        "10ms",
        "1500ms",
        "4s",
        "1m",
        "2m30s",
        "1h",
    ]


# --------------------------------------------------------------------------------------------------
# Loading YAML


def test_yaml_values(tmp_path: Path) -> None:
    c = load(
        tmp_path,
        """
        peer:
          id: peer0.org1.example.com
          localMspId: Org1MSP
          gossip:
            bootstrap: peer1.org1.example.com:7051 peer2.org1.example.com:7051
            pullInterval: 5s
            requestWaitTime: 1500ms
            aliveExpirationTimeout: 1m
            reconnectInterval: 2m30s
            digestWaitTime: 0
            responseWaitTime: 3
            sendBuffSize: 50
            orgLeader: false
            useLeaderElection: true
            dissemination: enhanced
            election:
              leaderAliveThreshold: 1500ms
            state:
              enabled: false
            pvtData:
              reconcileSleepInterval: 1h
        """,
    )
    g = c.peer.gossip
    assert c.peer.id == "peer0.org1.example.com" and c.peer.local_msp_id == "Org1MSP"
    assert g.bootstrap == ("peer1.org1.example.com:7051", "peer2.org1.example.com:7051")
    assert g.pull_interval == 5.0
    assert g.request_wait_time == 1.5
    assert g.alive_expiration_timeout == 60.0
    assert g.reconnect_interval == 150.0
    assert g.digest_wait_time == 0.0
    assert g.response_wait_time == 3.0
    assert g.send_buff_size == 50
    assert (g.org_leader, g.use_leader_election) == (False, True)
    assert g.dissemination == "enhanced"
    assert g.election.leader_alive_threshold == 1.5
    assert g.state.enabled is False
    # untouched keys keep their defaults
    assert g.pull_peer_num == 3 and g.election.startup_grace_period == 15.0


def test_bootstrap_as_yaml_list_or_commas(tmp_path: Path) -> None:
    c = load(tmp_path, "peer: {gossip: {bootstrap: [a.example.com:7051, 'b.example.com:7052']}}")
    assert c.peer.gossip.bootstrap == ("a.example.com:7051", "b.example.com:7052")
    c = load(tmp_path, "peer: {gossip: {bootstrap: 'a.example.com:7051, b.example.com:7052'}}")
    assert c.peer.gossip.bootstrap == ("a.example.com:7051", "b.example.com:7052")
    c = load(tmp_path, "peer: {gossip: {bootstrap: ''}}")
    assert c.peer.gossip.bootstrap == ()


def test_keys_are_case_insensitive(tmp_path: Path) -> None:
    c = load(
        tmp_path,
        """
        PEER:
          Gossip:
            PULLINTERVAL: 2s
            ELECTION:
              LeaderAliveThreshold: 7s
          TLS:
            Cert:
              FILE: /x/server.crt
        """,
    )
    assert c.peer.gossip.pull_interval == 2.0
    assert c.peer.gossip.election.leader_alive_threshold == 7.0
    assert c.peer.tls.cert_file == "/x/server.crt"


def test_choices_are_case_insensitive(tmp_path: Path) -> None:
    c = load(tmp_path, "peer: {gossip: {dissemination: Enhanced}}\nlogging: {level: DEBUG, format: JSON}")
    assert c.peer.gossip.dissemination == "enhanced"
    assert (c.logging.level, c.logging.format) == ("debug", "json")


def test_empty_file_and_empty_sections_give_defaults(tmp_path: Path) -> None:
    # mspConfigPath's default is relative, so from a file it names the file's msp/ directory
    expected = dataclasses.replace(
        Config(), peer=dataclasses.replace(Config().peer, msp_config_path=str(tmp_path / "msp"))
    )
    assert load(tmp_path, "") == expected
    assert load(tmp_path, "peer:\n  gossip:\n  tls:\noperations:\n") == expected


def test_keepalive_of_the_deliver_client_beside_fabrics_ignored_keepalive_keys(tmp_path: Path) -> None:
    # Fabric's whole peer.keepalive section: rumor reads deliveryClient, accepts the rest.
    c = load(
        tmp_path,
        """
        peer:
          keepalive:
            interval: 7200s
            timeout: 20s
            minInterval: 60s
            client: {interval: 60s, timeout: 20s}
            deliveryClient: {interval: 30s, timeout: 10s}
        """,
    )
    assert (c.peer.keepalive.delivery_client_interval, c.peer.keepalive.delivery_client_timeout) == (30.0, 10.0)
    assert (Config().peer.keepalive.delivery_client_interval, Config().peer.keepalive.delivery_client_timeout) == (
        60.0,
        20.0,
    )
    env = {"RUMOR_PEER_KEEPALIVE_DELIVERYCLIENT_INTERVAL": "5s"}
    assert load(tmp_path, "", env=env).peer.keepalive.delivery_client_interval == 5.0
    with pytest.raises(ConfigError, match=r"deliveryClient\.timeout"):
        load(tmp_path, "peer: {keepalive: {deliveryClient: {timeout: 0}}}")


def test_a_directory_stands_for_its_core_yaml(tmp_path: Path) -> None:
    (tmp_path / "core.yaml").write_text("peer: {id: from-dir}\n")
    assert load_config(tmp_path, env={}).peer.id == "from-dir"


FABRIC_LIKE_CORE_YAML = """
peer:
  id: peer0.org1.example.com
  networkId: dev
  listenAddress: 0.0.0.0:7051
  address: peer0.org1.example.com:7051
  addressAutoDetect: false
  keepalive:
    interval: 7200s
    client: {interval: 60s, timeout: 20s}
  gateway:
    enabled: true
  gossip:
    bootstrap: 127.0.0.1:7051
    useLeaderElection: false
    orgLeader: true
    membershipTrackerInterval: 5s
    endpoint:
    maxBlockCountToStore: 10
    pullInterval: 4s
    stateInfoRetentionInterval:
    skipBlockVerification: false
    requestWaitTime: 1500ms
    externalEndpoint:
    election:
      startupGracePeriod: 15s
    pvtData:
      pullRetryThreshold: 60s
      transientstoreMaxBlockRetention: 20000
      btlPullMargin: 10
      reconciliationEnabled: true
      implicitCollectionDisseminationPolicy:
        requiredPeerCount: 0
        maxPeerCount: 1
    state:
      enabled: false
      checkInterval: 10s
  tls:
    enabled: true
    clientAuthRequired: false
    cert:
      file: tls/server.crt
    key:
      file: tls/server.key
    rootcert:
      file: tls/ca.crt
    clientRootCAs:
      files:
        - tls/ca.crt
    clientKey:
      file:
    clientCert:
      file:
  authentication:
    timewindow: 15m
  fileSystemPath: /var/hyperledger/production
  BCCSP:
    Default: SW
    SW: {Hash: SHA2, Security: 256}
  mspConfigPath: msp
  localMspId: Org1MSP
  deliveryclient:
    reconnectTotalTimeThreshold: 3600s
  localMspType: bccsp
  handlers:
    authFilters:
      - name: DefaultAuth
  discovery:
    enabled: true
  limits:
    concurrency: {endorserService: 2500}
  maxRecvMsgSize: 104857600
  maxSendMsgSize: 104857600
vm:
  endpoint: unix:///var/run/docker.sock
chaincode:
  mode: net
ledger:
  state:
    stateDatabase: goleveldb
operations:
  listenAddress: 127.0.0.1:9443
  tls:
    enabled: false
    cert:
      file:
    key:
      file:
    clientAuthRequired: false
    clientRootCAs:
      files: []
metrics:
  provider: prometheus
"""


def test_fabric_like_core_yaml_loads(tmp_path: Path) -> None:
    c = load(tmp_path, FABRIC_LIKE_CORE_YAML)
    assert c.peer.id == "peer0.org1.example.com"
    assert c.peer.local_msp_id == "Org1MSP"
    assert c.peer.gossip.endpoint == "" and c.peer.gossip.external_endpoint == ""
    assert c.peer.gossip.state.enabled is False
    assert c.peer.tls.client_key_file == ""
    assert c.peer.tls.client_root_cas_files == (str(tmp_path / "tls" / "ca.crt"),)
    assert c.operations.tls.client_root_cas_files == ()


def test_relative_paths_resolve_against_the_config_directory(tmp_path: Path) -> None:
    sub = tmp_path / "peers" / "peer0"
    sub.mkdir(parents=True)
    c = load(
        sub,
        """
        peer:
          mspConfigPath: msp
          fileSystemPath: ../../data/peer0
          tls:
            cert: {file: tls/server.crt}
            key: {file: /abs/server.key}
            clientRootCAs: {files: [tls/ca.crt, /abs/other.crt]}
        operations:
          tls: {cert: {file: ops.crt}}
        """,
        env={"RUMOR_PEER_TLS_ROOTCERT_FILE": "tls/ca.crt"},
    )
    assert c.peer.msp_config_path == str(sub / "msp")
    assert c.peer.file_system_path == str(tmp_path / "data" / "peer0")
    assert c.peer.tls.cert_file == str(sub / "tls" / "server.crt")
    assert c.peer.tls.key_file == "/abs/server.key"
    assert c.peer.tls.rootcert_file == str(sub / "tls" / "ca.crt")
    assert c.peer.tls.client_root_cas_files == (str(sub / "tls" / "ca.crt"), "/abs/other.crt")
    assert c.peer.tls.client_cert_file == ""  # unset stays unset
    assert c.operations.tls.cert_file == str(sub / "ops.crt")


def test_relative_config_path_gives_absolute_file_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "core.yaml").write_text("peer: {mspConfigPath: msp}\n")
    monkeypatch.chdir(tmp_path)
    assert load_config("core.yaml", env={}).peer.msp_config_path == str(tmp_path / "msp")


# --------------------------------------------------------------------------------------------------
# Environment overrides


def test_env_overrides_file(tmp_path: Path) -> None:
    c = load(
        tmp_path,
        "peer: {gossip: {pullInterval: 4s, orgLeader: true}}",
        env={
            "RUMOR_PEER_GOSSIP_PULLINTERVAL": "2s",
            "RUMOR_PEER_GOSSIP_ORGLEADER": "no",
            "RUMOR_PEER_GOSSIP_USELEADERELECTION": "1",
            "RUMOR_PEER_GOSSIP_BOOTSTRAP": "a.example.com:7051 b.example.com:7051,c.example.com:7051",
            "RUMOR_PEER_GOSSIP_ELECTION_LEADERALIVETHRESHOLD": "20s",
            "RUMOR_PEER_GOSSIP_STATE_BATCHSIZE": "25",
            "RUMOR_PEER_TLS_CERT_FILE": "/etc/tls/server.crt",
            "rumor_peer_gossip_election_leaderelectionduration": "9s",  # names are case-insensitive too
            "PATH": os.environ.get("PATH", ""),  # variables without the prefix are none of our business
            "CORE_PEER_GOSSIP_PULLINTERVAL": "99s",
        },
    )
    g = c.peer.gossip
    assert g.pull_interval == 2.0
    assert (g.org_leader, g.use_leader_election) == (False, True)
    assert g.bootstrap == ("a.example.com:7051", "b.example.com:7051", "c.example.com:7051")
    assert g.election.leader_alive_threshold == 20.0
    assert g.state.batch_size == 25
    assert g.election.leader_election_duration == 9.0
    assert c.peer.tls.cert_file == "/etc/tls/server.crt"


def test_env_without_a_file() -> None:
    c = load_config(None, env={"RUMOR_PEER_GOSSIP_PULLINTERVAL": "1500ms", "RUMOR_LOGGING_LEVEL": "debug"})
    assert c.peer.gossip.pull_interval == 1.5
    assert c.logging.level == "debug"


def test_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUMOR_PEER_ID", "from-environ")
    assert load_config(None).peer.id == "from-environ"


# --------------------------------------------------------------------------------------------------
# Errors: one line naming the key, the value and what was expected


def test_unknown_key_suggests_the_nearest(tmp_path: Path) -> None:
    msg = error_of(tmp_path, "peer:\n  gossip:\n    pullIntervall: 4s\n")
    assert msg == "peer.gossip.pullIntervall: unknown key (did you mean pullInterval?)"


def test_unknown_key_in_nested_and_top_sections(tmp_path: Path) -> None:
    assert error_of(tmp_path, "peer: {gossip: {election: {leaderAliveTreshold: 1s}}}") == (
        "peer.gossip.election.leaderAliveTreshold: unknown key (did you mean leaderAliveThreshold?)"
    )
    assert error_of(tmp_path, "peeer: {id: x}").startswith("peeer: unknown key (did you mean peer?)")
    assert "peer.tls.cert.fil: unknown key (did you mean file?)" in error_of(tmp_path, "peer: {tls: {cert: {fil: x}}}")
    # a misspelt ignored Fabric key is still unknown
    assert "peer.keepalve: unknown key" in error_of(tmp_path, "peer: {keepalve: {interval: 1s}}")


def test_unknown_key_without_a_near_match(tmp_path: Path) -> None:
    msg = error_of(tmp_path, "peer: {gossip: {zzzzzz: 1}}")
    assert msg.startswith("peer.gossip.zzzzzz: unknown key (")


def test_bad_duration(tmp_path: Path) -> None:
    msg = error_of(tmp_path, "peer:\n  gossip:\n    pullInterval: 4x\n")
    assert msg == 'peer.gossip.pullInterval: "4x" is not a duration (expected e.g. 4s, 1500ms, 1m)'
    msg = error_of(tmp_path, "peer: {gossip: {state: {checkInterval: -5s}}}")
    assert msg.startswith('peer.gossip.state.checkInterval: "-5s" is negative')
    msg = error_of(tmp_path, "peer: {gossip: {pullInterval: true}}")
    assert msg.startswith("peer.gossip.pullInterval: true is not a duration")


def test_zero_where_zero_would_stall(tmp_path: Path) -> None:
    msg = error_of(tmp_path, "peer: {gossip: {pullInterval: 0s}}")
    assert msg == "peer.gossip.pullInterval: 0s is not allowed (expected more than 0)"
    msg = error_of(tmp_path, "peer: {gossip: {state: {batchSize: 0}}}")
    assert msg == "peer.gossip.state.batchSize: 0 is not allowed (expected more than 0)"


def test_wrong_types(tmp_path: Path) -> None:
    assert error_of(tmp_path, "peer: {gossip: {recvBuffSize: lots}}") == (
        'peer.gossip.recvBuffSize: "lots" is not an integer (expected a whole number, e.g. 10)'
    )
    assert error_of(tmp_path, "peer: {gossip: {recvBuffSize: 2.5}}").startswith(
        "peer.gossip.recvBuffSize: 2.5 is not an integer"
    )
    assert error_of(tmp_path, "peer: {gossip: {recvBuffSize: true}}").startswith(
        "peer.gossip.recvBuffSize: true is not an integer"
    )
    assert error_of(tmp_path, "peer: {gossip: {orgLeader: maybe}}") == (
        'peer.gossip.orgLeader: "maybe" is not a boolean (expected true or false)'
    )
    assert error_of(tmp_path, "peer: {gossip: {orgLeader: 1}}").startswith("peer.gossip.orgLeader: 1 is not a boolean")
    assert error_of(tmp_path, "peer: {id: [a, b]}").startswith('peer.id: ["a", "b"] is not a string')
    assert error_of(tmp_path, "peer: {gossip: {bootstrap: {a: 1}}}").startswith(
        'peer.gossip.bootstrap: {"a": 1} is not a list of strings'
    )
    assert error_of(tmp_path, "peer: {gossip: 5}") == ("peer.gossip: 5 is not a section (expected a mapping of keys)")


def test_bad_choice_and_address(tmp_path: Path) -> None:
    assert error_of(tmp_path, "peer: {gossip: {dissemination: turbo}}") == (
        'peer.gossip.dissemination: "turbo" is not a valid choice (expected one of: fabric, enhanced)'
    )
    msg = error_of(tmp_path, "peer: {gossip: {bootstrap: 'a.example.com:7051 b.example.com'}}")
    assert msg.startswith('peer.gossip.bootstrap: "b.example.com" is not a valid address (expected host:port')
    msg = error_of(tmp_path, "peer: {listenAddress: '0.0.0.0:99999'}")
    assert msg.startswith('peer.listenAddress: "0.0.0.0:99999" is not a valid address')


def test_addresses_accepted(tmp_path: Path) -> None:
    c = load(
        tmp_path,
        "peer: {listenAddress: '127.0.0.1:0', address: '[::1]:7051', gossip: {externalEndpoint: 'p.example.com:1'}}",
    )
    assert c.peer.listen_address == "127.0.0.1:0"
    assert c.peer.address == "[::1]:7051"


def test_leader_election_and_org_leader_both_true(tmp_path: Path) -> None:
    msg = error_of(tmp_path, "peer: {gossip: {useLeaderElection: true}}")
    assert msg.startswith("peer.gossip.useLeaderElection and peer.gossip.orgLeader are both true")
    msg = error_of(tmp_path, "", env={"RUMOR_PEER_GOSSIP_USELEADERELECTION": "true"})
    assert "useLeaderElection" in msg and "orgLeader" in msg


def test_unknown_env_var(tmp_path: Path) -> None:
    msg = error_of(tmp_path, "", env={"RUMOR_PEER_GOSSIP_PULINTERVAL": "2s"})
    assert msg == (
        "RUMOR_PEER_GOSSIP_PULINTERVAL: unknown environment variable (did you mean RUMOR_PEER_GOSSIP_PULLINTERVAL?)"
    )
    msg = error_of(tmp_path, "", env={"RUMOR_NOTHING_LIKE_IT": "x"})
    assert msg.startswith("RUMOR_NOTHING_LIKE_IT: unknown environment variable")


def test_bad_env_value_names_key_and_variable(tmp_path: Path) -> None:
    msg = error_of(tmp_path, "", env={"RUMOR_PEER_GOSSIP_PULLINTERVAL": "soon"})
    assert msg == (
        'peer.gossip.pullInterval (from RUMOR_PEER_GOSSIP_PULLINTERVAL): "soon" is not a duration '
        "(expected e.g. 4s, 1500ms, 1m)"
    )
    msg = error_of(tmp_path, "", env={"RUMOR_PEER_TLS_ENABLED": "sure"})
    assert msg.startswith('peer.tls.enabled (from RUMOR_PEER_TLS_ENABLED): "sure" is not a boolean')


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml", env={})
    assert str(info.value) == f"{tmp_path / 'nope.yaml'}: config file not found"
    with pytest.raises(ConfigError, match=r"core\.yaml: config file not found"):
        load_config(tmp_path, env={})  # a directory without core.yaml


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    msg = error_of(tmp_path, "peer:\n  gossip:\n    pullInterval: 4s\n   bad: [\n")
    assert msg.startswith(f"{tmp_path / 'core.yaml'}:")
    assert "YAML syntax error" in msg
    line = int(msg.split(":")[1])
    assert line in (4, 5)


def test_duplicate_keys(tmp_path: Path) -> None:
    msg = error_of(tmp_path, "peer:\n  gossip:\n    pullInterval: 4s\n    pullInterval: 5s\n")
    assert msg == f"{tmp_path / 'core.yaml'}:4:5: YAML syntax error: duplicate key 'pullInterval'"
    msg = error_of(tmp_path, "peer:\n  gossip:\n    pullInterval: 4s\n    PullInterval: 5s\n")
    assert msg == "peer.gossip.PullInterval: duplicate key (also given as pullInterval; keys are case-insensitive)"


def test_top_level_not_a_mapping(tmp_path: Path) -> None:
    assert "is not a mapping of sections" in error_of(tmp_path, "- peer\n")


def test_error_carries_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, "", env={"RUMOR_PEER_GOSSIP_PULLINTERVAL": "x"})
    assert info.value.key == "peer.gossip.pullInterval"


def test_validate_checks_configs_built_in_code() -> None:
    gossip = dataclasses.replace(GossipConfig(), use_leader_election=True)
    with pytest.raises(ConfigError, match=r"useLeaderElection and peer\.gossip\.orgLeader"):
        validate(Config(peer=PeerConfig(gossip=gossip)))
    validate(Config(peer=PeerConfig(gossip=dataclasses.replace(gossip, org_leader=False))))
    with pytest.raises(ConfigError, match=r'^peer\.gossip\.pullInterval: "4s" has the wrong type str'):
        validate(Config(peer=PeerConfig(gossip=GossipConfig(pull_interval="4s"))))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^peer\.gossip\.pullInterval: -1s is negative"):
        validate(Config(peer=PeerConfig(gossip=GossipConfig(pull_interval=-1.0))))


# --------------------------------------------------------------------------------------------------
# Writing


def _custom_config(base: Path) -> Config:
    c = Config()
    gossip = dataclasses.replace(
        c.peer.gossip,
        bootstrap=("peer1.org1.example.com:7051", "peer2.org1.example.com:7051"),
        endpoint="peer0.org1.example.com:7051",
        external_endpoint="peer0.org1.example.com:7051",
        use_leader_election=True,
        org_leader=False,
        pull_interval=2.5,
        request_wait_time=0.25,
        max_propagation_burst_latency=0.001,
        send_buff_size=77,
        dissemination="enhanced",
        election=dataclasses.replace(c.peer.gossip.election, leader_alive_threshold=150.0),
        state=dataclasses.replace(c.peer.gossip.state, enabled=False, batch_size=5),
    )
    tls = dataclasses.replace(
        c.peer.tls,
        cert_file=str(base / "tls" / "server.crt"),
        client_root_cas_files=(str(base / "a.crt"), str(base / "b crt.pem")),
    )
    peer = dataclasses.replace(
        c.peer,
        id="peer0: with 'quotes' # and a hash",
        msp_config_path=str(base / "msp"),
        network_id="007",
        gossip=gossip,
        tls=tls,
    )
    return dataclasses.replace(c, peer=peer)


def test_dump_load_round_trip(tmp_path: Path) -> None:
    original = _custom_config(tmp_path)
    validate(original)
    (tmp_path / "core.yaml").write_text(config_to_yaml(original, header="written by a test\nsecond line"))
    assert load_config(tmp_path / "core.yaml", env={}) == original


def test_dump_of_a_loaded_config_round_trips(tmp_path: Path) -> None:
    first = load(tmp_path, FABRIC_LIKE_CORE_YAML)
    text = config_to_yaml(first)
    (tmp_path / "again.yaml").write_text(text)
    assert load_config(tmp_path / "again.yaml", env={}) == first
    assert config_to_yaml(load_config(tmp_path / "again.yaml", env={})) == text


def test_dump_has_every_key_in_fabric_style(tmp_path: Path) -> None:
    text = config_to_yaml(Config())
    assert "requestWaitTime: 1500ms" in text
    assert "maxPropagationBurstLatency: 10ms" in text
    assert "membershipTrackerInterval: 5s" in text
    assert "leaderAliveThreshold: 10s" in text
    import yaml

    data = yaml.safe_load(text)
    for key in iter_keys():
        node = data
        for seg in key.path.split("."):
            node = node[seg]
