"""`rumor channel create` as a process: from the fixture's own configtx.yaml, and from flags."""

from __future__ import annotations

import subprocess
from pathlib import Path

from fabric_fixture import CHANNEL, CRYPTO, FABRIC, block_bytes
from rumor_processes import RUMOR, clean_env
from test_fabric_blocks import _without_versions

from rumor import channelconfig as cc
from rumor.crypto.blocks import decode_block


def rumor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RUMOR, *args], capture_output=True, text=True, env=clean_env(), timeout=60, check=False)


def test_channel_create_from_configtx_yaml_matches_fabrics_genesis(tmp_path: Path) -> None:
    out = tmp_path / "mychannel.block"
    done = rumor(
        "channel", "create", "--config", str(FABRIC / "configtx.yaml"), "--profile", "MyChannel",
        "--orderer-profile", "SystemChannel", "-C", CHANNEL, "-o", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "orgs Org1MSP, Org2MSP; orderers 127.0.0.1:17050; consensus etcdraft" in done.stdout
    ours, theirs = cc.read_genesis(out.read_bytes()), cc.read_genesis(block_bytes(0))
    assert _without_versions(ours.config.channel_group) == _without_versions(theirs.config.channel_group)
    opened = cc.open_envelope(decode_block(out.read_bytes()).data.data[0], require_creator=False)
    assert opened.creator == b"" and opened.envelope.signature == b""  # configtxgen's form: unsigned


def test_channel_create_from_flags_signed_by_an_orderer(tmp_path: Path) -> None:
    org1 = CRYPTO / "peerOrganizations" / "org1.example.com" / "msp"
    orderer = CRYPTO / "ordererOrganizations" / "example.com"
    out = tmp_path / "flags.block"
    done = rumor(
        "channel", "create", "-C", "flagchannel", "-o", str(out), "--org", f"Org1MSP={org1}@127.0.0.1:7051",
        "--orderer-org", f"OrdererMSP={orderer / 'msp'}@127.0.0.1:7050", "--batch-timeout", "0.5",
        "--sign-msp-dir", str(orderer / "orderers" / "orderer.example.com" / "msp"), "--sign-mspid", "OrdererMSP",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    config = cc.read_genesis(out.read_bytes())
    assert config.anchor_peers == {"Org1MSP": ["127.0.0.1:7051"]}
    assert config.orderer_endpoints == ["127.0.0.1:7050"]
    assert config.batch.batch_timeout == 0.5
    opened = cc.open_envelope(decode_block(out.read_bytes()).data.data[0])
    assert b"OrdererMSP" in opened.creator


def test_channel_create_errors(tmp_path: Path) -> None:
    cases = [
        (["--config", str(FABRIC / "configtx.yaml"), "--profile", "Nope"], "no profile 'Nope'"),
        (["--config", str(FABRIC / "configtx.yaml"), "--profile", "MyChannel"], "--orderer-profile"),
        (["--config", str(FABRIC / "configtx.yaml")], "--config needs --profile"),
        (["--org", "Org1MSP", "--orderer-org", "O=x@h:1"], "expected MSPID=MSPDIR"),
        ([], "give --config and --profile"),
    ]
    for extra, fragment in cases:
        done = rumor("channel", "create", "-C", CHANNEL, "-o", str(tmp_path / "x.block"), *extra)
        assert done.returncode == 2, (extra, done.stdout, done.stderr)
        assert fragment in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
