"""The `rumor` command, run as the installed console script in a real process."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from rumor_processes import RUMOR

from rumor import __version__, cli
from rumor.config import load_config


def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    # The caller's own RUMOR_ variables would change the results (or be rejected as unknown keys).
    base = {k: v for k, v in os.environ.items() if not k.upper().startswith("RUMOR_")}
    base["COLUMNS"] = "120"
    return subprocess.run(
        [RUMOR, *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        cwd=cwd,
        timeout=120,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


# --------------------------------------------------------------------------------------------------
# Help and version


def test_help_lists_commands() -> None:
    result = run("--help")
    assert result.returncode == 0
    for command in ("version", "config", "crypto", "--log-level", "--log-format"):
        assert command in result.stdout


def test_no_arguments_shows_help() -> None:
    result = run()
    assert "Usage" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    "command",
    [[], ["version"], ["config"], ["config", "check"], ["config", "show"], ["crypto"], ["crypto", "generate"]],
)
def test_every_command_help_has_an_example(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Example" in result.stdout


def test_version() -> None:
    result = run("version")
    assert result.returncode == 0
    assert result.stdout.startswith(f"rumor {__version__} (Python ")


def test_usage_errors_are_one_line() -> None:
    assert_one_line_error(run("--log-level", "loud", "version"), "--log-level", "loud")
    assert_one_line_error(run("crypto", "generate", "--orgs", "0"), "--orgs", "rumor crypto generate --help")
    assert_one_line_error(run("config", "check"), "Missing argument")
    assert_one_line_error(run("no-such-command"), "no-such-command")


# --------------------------------------------------------------------------------------------------
# config check / show


@pytest.fixture(scope="module")
def two_networks(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two networks of one org each: the same MSP IDs, different CAs."""
    roots = []
    for name in ("ours", "theirs"):
        root = tmp_path_factory.mktemp(name)
        result = run("network", "init", "--orgs", "1", "--peers-per-org", "1", "--out", str(root / "net"))
        assert result.returncode == 0, result.stderr
        roots.append(root / "net")
    return roots[0], roots[1]


def peer_core(net: Path) -> Path:
    return next((net / "peers").glob("*/core.yaml"))


def test_config_check_ok(two_networks: tuple[Path, Path]) -> None:
    path = peer_core(two_networks[0])
    result = run("config", "check", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("OK")
    assert "peer0.org1.example.com (Org1MSP)" in result.stdout


def _edited(core: Path, **changes: str) -> Path:
    """A copy of ``core`` beside it (so its relative paths still resolve) with dotted keys changed."""
    config = yaml.safe_load(core.read_text())
    for dotted, value in changes.items():
        node = config
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    path = core.with_name("edited.yaml")
    path.write_text(yaml.safe_dump(config))
    return path


def test_config_check_loads_the_identity_and_tls_material(two_networks: tuple[Path, Path], tmp_path: Path) -> None:
    """Finding: config check said OK for a core.yaml whose MSP directory did not exist; peer start then failed
    with '.../signcerts: expected exactly one certificate, found 0'."""
    ours, theirs = (peer_core(n) for n in two_networks)
    mine, other = load_config(ours).peer, load_config(theirs).peer

    def check(**changes: str) -> subprocess.CompletedProcess[str]:
        return run("config", "check", str(_edited(ours, **changes)))

    missing = tmp_path / "no-such-msp"
    assert_one_line_error(check(**{"peer.mspConfigPath": str(missing)}), "peer.mspConfigPath", str(missing))
    # The other network's signing certificate in our MSP: same MSP ID, another CA.
    msp = tmp_path / "msp"
    shutil.copytree(mine.msp_config_path, msp)
    for sub in ("signcerts", "keystore"):
        shutil.rmtree(msp / sub)
        shutil.copytree(Path(other.msp_config_path) / sub, msp / sub)
    assert_one_line_error(check(**{"peer.mspConfigPath": str(msp)}), "signcerts", "not valid in its own org Org1MSP")
    assert_one_line_error(check(**{"peer.tls.key.file": other.tls.key_file}), "does not belong to the certificate")
    foreign = {"peer.tls.cert.file": other.tls.cert_file, "peer.tls.key.file": other.tls.key_file}
    assert_one_line_error(check(**foreign), "peer.tls", "issued by none of the TLS root")
    gone = str(tmp_path / "gone.pem")
    assert_one_line_error(check(**{"peer.tls.cert.file": gone}), gone, "No such file")
    assert run("config", "check", str(_edited(ours))).returncode == 0


def test_config_check_bad_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("peer:\n  gossip:\n    pullIntervall: 4s\n")
    line = assert_one_line_error(run("config", "check", str(path)), "peer.gossip.pullIntervall", "pullInterval")
    assert line == "error: peer.gossip.pullIntervall: unknown key (did you mean pullInterval?)"


def test_config_check_bad_value(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("peer:\n  gossip:\n    pullInterval: 4x\n")
    assert_one_line_error(run("config", "check", str(path)), "peer.gossip.pullInterval", '"4x"', "duration")


def test_config_check_leader_conflict(tmp_path: Path) -> None:
    path = tmp_path / "core.yaml"
    path.write_text("peer: {gossip: {useLeaderElection: true, orgLeader: true}}\n")
    assert_one_line_error(run("config", "check", str(path)), "useLeaderElection", "orgLeader")


def test_config_check_missing_file_and_syntax_error(tmp_path: Path) -> None:
    assert_one_line_error(run("config", "check", str(tmp_path / "nope.yaml")), "not found")
    path = tmp_path / "broken.yaml"
    path.write_text("peer:\n  gossip: [\n")
    assert_one_line_error(run("config", "check", str(path)), "YAML syntax error", str(path))


def test_config_check_unknown_env_var(tmp_path: Path) -> None:
    path = tmp_path / "core.yaml"
    path.write_text("")
    result = run("config", "check", str(path), env={"RUMOR_PEER_GOSSIP_PULLINTERVALL": "2s"})
    assert_one_line_error(result, "RUMOR_PEER_GOSSIP_PULLINTERVALL", "RUMOR_PEER_GOSSIP_PULLINTERVAL")


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("peer: {gossip: {pullInterval: 4x}}\n")
    result = run("--log-level", "debug", "config", "check", str(path))
    assert result.returncode == 2
    assert "Traceback" in result.stderr


def test_config_show_defaults_with_env_override(tmp_path: Path) -> None:
    result = run("config", "show", env={"RUMOR_PEER_GOSSIP_PULLINTERVAL": "2s"})
    assert result.returncode == 0, result.stderr
    data = yaml.safe_load(result.stdout)
    assert data["peer"]["gossip"]["pullInterval"] == "2s"
    assert data["peer"]["gossip"]["requestWaitTime"] == "1500ms"
    # what it prints is a core.yaml that loads back to the same configuration
    out = tmp_path / "core.yaml"
    out.write_text(result.stdout)
    assert load_config(out, env={}).peer.gossip.pull_interval == 2.0


def test_config_show_file(tmp_path: Path) -> None:
    path = tmp_path / "core.yaml"
    path.write_text("peer:\n  mspConfigPath: msp\n  gossip:\n    pullInterval: 5s\n")
    result = run("config", "show", str(path), env={"RUMOR_PEER_GOSSIP_PULLPEERNUM": "7"})
    assert result.returncode == 0, result.stderr
    data = yaml.safe_load(result.stdout)
    assert data["peer"]["gossip"]["pullInterval"] == "5s"
    assert data["peer"]["gossip"]["pullPeerNum"] == 7
    assert data["peer"]["mspConfigPath"] == str(tmp_path / "msp")


def test_config_show_bad_env(tmp_path: Path) -> None:
    result = run("config", "show", env={"RUMOR_PEER_GOSSIP_STATE_ENABLED": "perhaps"})
    assert_one_line_error(result, "peer.gossip.state.enabled", "RUMOR_PEER_GOSSIP_STATE_ENABLED", '"perhaps"')


# --------------------------------------------------------------------------------------------------
# crypto generate


def test_crypto_generate_writes_the_cryptogen_layout(tmp_path: Path) -> None:
    out = tmp_path / "crypto"
    result = run("crypto", "generate", "--orgs", "2", "--peers-per-org", "2", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "Org1MSP" in result.stdout and "Org2MSP" in result.stdout and "OrdererMSP" in result.stdout
    org1 = out / "peerOrganizations" / "org1.example.com"
    peer0 = org1 / "peers" / "peer0.org1.example.com"
    assert (peer0 / "msp" / "signcerts" / "peer0.org1.example.com-cert.pem").is_file()
    assert (peer0 / "msp" / "keystore" / "priv_sk").is_file()
    assert (peer0 / "tls" / "server.crt").is_file()
    assert (peer0 / "tls" / "server.key").is_file()
    assert (org1 / "peers" / "peer1.org1.example.com" / "tls" / "ca.crt").is_file()
    assert (out / "peerOrganizations" / "org2.example.com" / "peers" / "peer1.org2.example.com").is_dir()
    orderer = out / "ordererOrganizations" / "example.com" / "orderers" / "orderer.example.com"
    assert (orderer / "msp" / "keystore" / "priv_sk").is_file()


def test_crypto_generate_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    out = tmp_path / "crypto"
    assert run("crypto", "generate", "--orgs", "1", "--peers-per-org", "1", "--out", str(out)).returncode == 0
    assert_one_line_error(run("crypto", "generate", "--orgs", "1", "--peers-per-org", "1", "--out", str(out)))
    result = run("crypto", "generate", "--orgs", "1", "--peers-per-org", "2", "--out", str(out), "--force")
    assert result.returncode == 0, result.stderr
    assert (out / "peerOrganizations" / "org1.example.com" / "peers" / "peer1.org1.example.com").is_dir()


def test_crypto_generate_from_spec(tmp_path: Path) -> None:
    spec = tmp_path / "crypto-config.yaml"
    spec.write_text(
        "PeerOrgs:\n"
        "  - Name: Acme\n"
        "    Domain: acme.example.com\n"
        "    Template: {Count: 1}\n"
        "OrdererOrgs:\n"
        "  - Name: Orderer\n"
        "    Domain: example.com\n"
        "    Specs:\n"
        "      - Hostname: orderer\n"
    )
    out = tmp_path / "out"
    result = run("crypto", "generate", "--spec", str(spec), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert (out / "peerOrganizations" / "acme.example.com" / "peers" / "peer0.acme.example.com" / "tls").is_dir()


def test_crypto_generate_bad_arguments(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("PeerOrgs: 5\n")
    assert_one_line_error(run("crypto", "generate", "--spec", str(spec), "--out", str(tmp_path / "o")))
    assert_one_line_error(run("crypto", "generate", "--spec", str(spec), "--orgs", "2"), "--spec")
    assert_one_line_error(run("crypto", "generate", "--spec", str(tmp_path / "missing.yaml")))


# --------------------------------------------------------------------------------------------------
# In-process: the last-resort handler and the JSON log format


def test_unexpected_errors_are_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def explode(*_: object, **__: object) -> None:
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(cli, "load_config", explode)
    monkeypatch.setattr(sys, "argv", ["rumor", "config", "show"])
    with pytest.raises(SystemExit) as info:
        cli.main()
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "error: unexpected RuntimeError: boom second line (run with --log-level debug for the traceback)"
    ]


def test_json_log_format() -> None:
    record = logging.LogRecord("rumor.test", logging.WARNING, __file__, 1, "peer %s is dead", ("p1",), None)
    record.peer = "p1"
    entry = json.loads(cli.JSONFormatter().format(record))
    assert entry["level"] == "warning"
    assert entry["logger"] == "rumor.test"
    assert entry["message"] == "peer p1 is dead"
    assert entry["peer"] == "p1"
    assert entry["time"].endswith("+00:00")
