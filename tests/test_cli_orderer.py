"""`rumor orderer start` and `rumor submit` as real processes, on a network directory laid out as planned.

DIR/crypto (material), DIR/orderer/orderer.yaml, DIR/channels/<channel>.block; blocks are read back in-process
with a DeliverClient.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from rumor_processes import RUMOR, clean_env

from rumor import channelconfig as cc
from rumor.crypto import GeneratedMaterial, default_spec, generate, load_signing_identity
from rumor.orderer import ClientTLS, DeliverClient

CHANNEL = "mychannel"


async def run(*args: str, timeout: float = 60) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        RUMOR, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=clean_env()
    )
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, stdout.decode(), stderr.decode()


def one_line_error(code: int, stderr: str, expected_code: int, *fragments: str) -> None:
    assert code == expected_code, stderr
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def free_port() -> int:
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Network:
    root: Path
    material: GeneratedMaterial
    port: int

    @property
    def config(self) -> Path:
        return self.root / "orderer" / "orderer.yaml"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def write_network(root: Path, material: GeneratedMaterial, port: int) -> Network:
    orderer_org = material.orderer_orgs[0]
    orderer = orderer_org.nodes[0]
    config = cc.channel_config(
        CHANNEL,
        [cc.org_config(o.mspid, o.msp_dir) for o in material.peer_orgs],
        [cc.orderer_org_config(orderer_org.mspid, orderer_org.msp_dir, [f"127.0.0.1:{port}"])],
        cc.batch_config(max_message_count=5, batch_timeout=0.2),
    )
    signer = load_signing_identity(orderer.msp_dir, orderer_org.mspid)
    cc.save_block(root / "channels" / f"{CHANNEL}.block", cc.genesis_block(config, signer))
    crypto = os.path.relpath(material.root, root / "orderer")
    node = os.path.relpath(orderer.msp_dir.parent, material.root)
    (root / "orderer").mkdir(parents=True, exist_ok=True)
    (root / "orderer" / "orderer.yaml").write_text(
        f"""\
General:
  ListenAddress: 127.0.0.1:{port}
  LocalMSPDir: {crypto}/{node}/msp
  LocalMSPID: {orderer_org.mspid}
  TLS:
    Enabled: true
    Certificate: {crypto}/{node}/tls/server.crt
    PrivateKey: {crypto}/{node}/tls/server.key
    RootCAs: [{crypto}/{node}/tls/ca.crt]
FileLedger:
  Location: data
Channels:
  - ../channels/{CHANNEL}.block
"""
    )
    return Network(root, material, port)


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> GeneratedMaterial:
    return generate(default_spec(2, 1), tmp_path_factory.mktemp("cli-orderer") / "net" / "crypto")


@pytest.fixture
def network(material: GeneratedMaterial) -> Network:
    # The material sits in DIR/crypto; each test gets a fresh orderer directory, ledger and port beside it.
    root = material.root.parent
    shutil.rmtree(root / "orderer", ignore_errors=True)
    shutil.rmtree(root / "channels", ignore_errors=True)
    return write_network(root, material, free_port())


@contextlib.asynccontextmanager
async def orderer_process(network: Network, log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    with log.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            RUMOR, "orderer", "start", "--config", str(network.config),
            stdout=asyncio.subprocess.PIPE, stderr=stderr, env=clean_env(),
        )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert line.startswith(f"orderer ready on {network.address}"), (line, log.read_text())
        assert CHANNEL in line
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def stop(proc: asyncio.subprocess.Process, signum: int, log: Path) -> None:
    proc.send_signal(signum)
    code = await asyncio.wait_for(proc.wait(), 30)
    text = log.read_text()
    assert code == 0, text
    assert "Traceback" not in text
    assert "orderer stopped" in text


async def test_orderer_and_submit_as_processes(network: Network, tmp_path: Path) -> None:
    org2 = network.material.org("Org2MSP")
    user = next(u for u in org2.users if u.name == "User1")
    tls_ca = network.material.orderers[0].tls_ca_cert
    log = tmp_path / "orderer.log"
    async with orderer_process(network, log) as proc:
        code, out, err = await run("submit", "--network", str(network.root), "--channel", CHANNEL, "hello", "world")
        assert (code, err) == (0, ""), err
        assert "submitted 2 envelopes to channel mychannel" in out
        printed_tx_ids = [line.split()[1] for line in out.splitlines() if line.startswith("tx ")]
        assert len(printed_tx_ids) == 2

        code, out, err = await run(
            "submit", "-o", network.address, "-C", CHANNEL, "--msp-dir", str(user.msp_dir), "--mspid", "Org2MSP",
            "--tls-ca", str(tls_ca), "--count", "12", "--size", "100",
        )  # fmt: skip
        assert code == 0, err
        assert "submitted 12 envelopes" in out

        code, _, err = await run(
            "submit", "-o", network.address, "-C", "nochannel", "--msp-dir", str(user.msp_dir), "--mspid", "Org2MSP",
            "--tls-ca", str(tls_ca), "data",
        )  # fmt: skip
        one_line_error(code, err, 2, "orderer refused: NOT_FOUND", "nochannel")

        reader = load_signing_identity(user.msp_dir, "Org2MSP")
        client = DeliverClient(network.address, reader, tls=ClientTLS.from_files([tls_ca]))
        payloads: list[bytes] = []
        async with asyncio.timeout(20), contextlib.aclosing(client.deliver(CHANNEL, 1)) as blocks:
            async for block in blocks:
                payloads += [cc.open_envelope(entry).payload.data for entry in block.data.data]
                if len(payloads) >= 14:
                    break
        assert payloads[:2] == [b"hello", b"world"]
        assert len(payloads) == 14
        assert all(len(p) == 100 and p.startswith(f"rumor payload {i} ".encode()) for i, p in enumerate(payloads[2:]))

        # --wait: each payload's tx id and the block that holds it, as the orderer's blocks show it
        code, out, err = await run("submit", "--network", str(network.root), "-C", CHANNEL, "--wait", "x", "y")
        assert code == 0, err
        lines = [line.split() for line in out.splitlines() if line.startswith("tx ")]
        assert [len(w) for w in lines] == [5, 5], out
        found: dict[str, int] = {}
        async with asyncio.timeout(20), contextlib.aclosing(client.deliver(CHANNEL, 1)) as blocks:
            async for block in blocks:
                for entry in block.data.data:
                    opened = cc.open_envelope(entry)
                    found[opened.tx_id] = block.header.number
                    assert opened.channel_id == CHANNEL and opened.channel_header.timestamp.seconds > 0
                if all(w[1] in found for w in lines):
                    break
        assert all(found[w[1]] == int(w[4]) for w in lines), (lines, found)
        assert all(tx_id in found for tx_id in printed_tx_ids)

        await stop(proc, signal.SIGINT, log)


async def test_sigterm_stops_cleanly_and_a_restart_continues(network: Network, tmp_path: Path) -> None:
    log = tmp_path / "orderer.log"
    async with orderer_process(network, log) as proc:
        code, _, err = await run("submit", "--network", str(network.root), "-C", CHANNEL, "a", "b", "c", "d", "e")
        assert code == 0, err
        await stop(proc, signal.SIGTERM, log)
    async with orderer_process(network, log) as proc:
        code, _, err = await run("submit", "--network", str(network.root), "-C", CHANNEL, "f", "g", "h", "i", "j")
        assert code == 0, err
        await stop(proc, signal.SIGINT, log)
    assert "height 2" in log.read_text()  # the second start found the first block


async def test_orderer_start_errors(network: Network, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("General:\n  ListenAdress: 127.0.0.1:1\n")
    code, _, err = await run("orderer", "start", "--config", str(bad))
    one_line_error(code, err, 2, "General.ListenAdress: unknown key", "ListenAddress")

    code, _, err = await run("orderer", "start", "--config", str(tmp_path / "missing.yaml"))
    one_line_error(code, err, 2, "config file not found")

    (network.root / "channels" / f"{CHANNEL}.block").unlink()
    code, _, err = await run("orderer", "start", "--config", str(network.config))
    one_line_error(code, err, 2, "Channels:", "no such block file")


async def test_orderer_start_on_a_port_in_use(network: Network) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", network.port))
        taken.listen()
        code, _, err = await run("orderer", "start", "--config", str(network.config))
    one_line_error(code, err, 2, f"cannot listen on {network.address}", "in use")


async def test_submit_errors(network: Network) -> None:
    code, _, err = await run("submit", "--network", str(network.root), "-C", CHANNEL, "nobody listens")
    one_line_error(code, err, 1, "SERVICE_UNAVAILABLE", network.address)

    code, _, err = await run("submit", "-o", network.address, "-C", CHANNEL, "x")
    one_line_error(code, err, 2, "--msp-dir and --mspid are required")

    code, _, err = await run("submit", "--network", str(network.root), "-C", CHANNEL)
    one_line_error(code, err, 2, "nothing to submit")

    code, _, err = await run("submit", "--network", str(network.root), "-C", "otherchannel", "x")
    one_line_error(code, err, 2, "channel otherchannel", "no such block file")


@pytest.mark.parametrize("command", [["orderer"], ["orderer", "start"], ["submit"]])
async def test_help_has_an_example(command: list[str]) -> None:
    code, out, _ = await run(*command, "--help")
    assert code == 0
    assert "Example" in out
