"""rumor peers on a real Fabric channel: they join Fabric's genesis block with the channel's own material, take
blocks 1-8 from a Deliver server that speaks Fabric's rules, gossip them, apply the anchor-peer updates, and a
restarted peer catches up by state transfer.

The fixture's channel config names the orderer 127.0.0.1:17050 and the anchor peers 127.0.0.1:17051/17052 (Org1)
and 127.0.0.1:17061 (Org2), so the processes listen exactly there.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import signal
import socket
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import aiohttp
import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from fabric_fixture import BLOCKS, CHANNEL, CRYPTO, HEADER_HASHES, HEIGHT, block_bytes
from polling import wait_for
from rumor_processes import RUMOR, clean_env

from rumor import channelconfig as cc
from rumor.config import Config, GossipConfig, OperationsConfig, PeerConfig, TLSConfig, config_to_yaml
from rumor.crypto import X509CryptoService
from rumor.crypto.blocks import block_header_hash
from rumor.crypto.identity import load_signing_identity
from rumor.ledger import Ledger
from rumor.network import apply_gossip_overrides
from rumor.wire.pb.common import common_pb2
from rumor.wire.pb.orderer import ab_pb2

ORDERER_TLS = CRYPTO / "ordererOrganizations" / "example.com" / "orderers" / "orderer.example.com" / "tls"
FAST = {
    "aliveTimeInterval": "1s",
    "aliveExpirationTimeout": "6s",
    "reconnectInterval": "2s",
    "pullInterval": "1s",
    "requestStateInfoInterval": "1s",
    "publishStateInfoInterval": "500ms",
    "election.startupGracePeriod": "2s",
    "election.membershipSampleInterval": "500ms",
    "election.leaderAliveThreshold": "3s",
    "election.leaderElectionDuration": "1s",
    "state.checkInterval": "1s",
    "state.responseTimeout": "2s",
}


@dataclass
class FabricDeliver:
    """A Deliver server with a Fabric orderer's rules, serving the fixture's blocks up to ``released``.

    It refuses what a Fabric v2.2 orderer refuses: a request that is not DELIVER_SEEK_INFO for this channel, whose
    creator does not satisfy /Channel/Readers or whose signature does not verify, or whose channel header does
    not carry the hash of the client's TLS certificate.
    """

    released: int = 5
    clients: list[bytes] = field(default_factory=list)  # TLS certificate hashes of the clients served
    refusals: list[str] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def release(self, height: int) -> None:
        self.released = height
        self.changed.set()

    async def deliver(self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        config = cc.read_genesis(block_bytes(0))
        mcs = X509CryptoService(
            load_signing_identity(_org_peer_msp("org1", "peer0"), "Org1MSP"), cc.org_registry([config])
        )
        mcs.register_channel_config(config)
        async for raw in requests:
            opened = cc.open_envelope(raw)
            peer_cert = (context.auth_context() or {}).get("x509_pem_cert", [b""])[0]
            der = x509.load_pem_x509_certificate(peer_cert).public_bytes(serialization.Encoding.DER)
            problem = None
            if opened.channel_header.type != common_pb2.DELIVER_SEEK_INFO or opened.channel_id != CHANNEL:
                problem = "not a seek request for mychannel"
            elif opened.channel_header.tls_cert_hash != hashlib.sha256(der).digest():
                problem = "TLS certificate hash does not bind the request to this client"
            elif not config.policies.satisfied(cc.CHANNEL_READERS, [opened.signed_data()], mcs.resolver(CHANNEL)):
                problem = "creator does not satisfy /Channel/Readers"
            if problem is not None:
                self.refusals.append(problem)
                yield ab_pb2.DeliverResponse(status=common_pb2.FORBIDDEN).SerializeToString()
                return
            self.clients.append(hashlib.sha256(der).digest())
            seek = ab_pb2.SeekInfo.FromString(opened.payload.data)
            number = seek.start.specified.number
            while number < HEIGHT:
                while number >= self.released:
                    self.changed.clear()
                    await self.changed.wait()
                block = common_pb2.Block.FromString(block_bytes(number))
                yield ab_pb2.DeliverResponse(block=block).SerializeToString()
                number += 1
            await asyncio.Event().wait()  # BLOCK_UNTIL_READY: nothing more will come; hold the stream

    async def start(self) -> grpc.aio.Server:
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        server.add_generic_rpc_handlers(
            [
                grpc.method_handlers_generic_handler(
                    "orderer.AtomicBroadcast", {"Deliver": grpc.stream_stream_rpc_method_handler(self.deliver)}
                )
            ]
        )
        credentials = grpc.ssl_server_credentials(
            [((ORDERER_TLS / "server.key").read_bytes(), (ORDERER_TLS / "server.crt").read_bytes())],
            root_certificates=b"".join(
                (
                    CRYPTO / "peerOrganizations" / f"{o}.example.com" / "tlsca" / f"tlsca.{o}.example.com-cert.pem"
                ).read_bytes()
                for o in ("org1", "org2")
            ),
            require_client_auth=True,
        )
        server.add_secure_port("127.0.0.1:17050", credentials)
        await server.start()
        return server


def _org_peer_msp(org: str, peer: str) -> Path:
    return CRYPTO / "peerOrganizations" / f"{org}.example.com" / "peers" / f"{peer}.{org}.example.com" / "msp"


@dataclass
class FabricPeer:
    org: str
    name: str
    port: int
    operations: int
    bootstrap: tuple[str, ...]
    home: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def peer_id(self) -> str:
        return f"{self.name}.{self.org}.example.com"

    @property
    def tls_hash(self) -> bytes:
        pem = (_org_peer_msp(self.org, self.name).parent / "tls" / "server.crt").read_bytes()
        return hashlib.sha256(x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)).digest()

    def write_config(self) -> Path:
        node = _org_peer_msp(self.org, self.name).parent
        tlsca = [
            CRYPTO / "peerOrganizations" / f"{o}.example.com" / "tlsca" / f"tlsca.{o}.example.com-cert.pem"
            for o in ("org1", "org2")
        ] + [CRYPTO / "ordererOrganizations" / "example.com" / "tlsca" / "tlsca.example.com-cert.pem"]
        endpoint = f"127.0.0.1:{self.port}"
        config = Config(
            peer=PeerConfig(
                id=self.peer_id,
                network_id="fabric-fixture",
                listen_address=endpoint,
                address=endpoint,
                file_system_path=str(self.home / "data"),
                msp_config_path=str(node / "msp"),
                local_msp_id=f"{self.org.capitalize()}MSP",
                tls=TLSConfig(
                    enabled=True,
                    cert_file=str(node / "tls" / "server.crt"),
                    key_file=str(node / "tls" / "server.key"),
                    rootcert_file=str(node / "tls" / "ca.crt"),
                    client_root_cas_files=tuple(str(p) for p in tlsca),
                ),
                gossip=replace(
                    GossipConfig(),
                    bootstrap=self.bootstrap,
                    endpoint=endpoint,
                    external_endpoint=endpoint,
                    use_leader_election=True,
                    org_leader=False,
                ),
            ),
            operations=OperationsConfig(listen_address=f"127.0.0.1:{self.operations}"),
        )
        self.home.mkdir(parents=True, exist_ok=True)
        path = self.home / "core.yaml"
        path.write_text(config_to_yaml(config))
        apply_gossip_overrides(path, FAST)
        return path

    async def start(self, join: bool) -> None:
        args = [RUMOR, "peer", "start", "--config", str(self.home / "core.yaml")]
        if join:
            args += ["--join", str(block_bytes_path(0))]
        self.out = self.home / "peer.out"
        self.err = self.home / "peer.err"
        with self.out.open("ab") as out, self.err.open("ab") as err:
            self.proc = subprocess.Popen(args, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=clean_env())

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"{self.peer_id} exited:\n{self.err.read_text()[-3000:]}")
            return "peer ready on" in self.out.read_text()

        await wait_for(ready, 60, f"{self.peer_id} ready", describe=lambda: self.err.read_text()[-2000:])

    async def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        await wait_for(lambda: self.proc is not None and self.proc.poll() is not None, 30, f"{self.peer_id} exits")
        assert self.proc.returncode == 0, self.err.read_text()[-3000:]
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    async def status(self, http: aiohttp.ClientSession) -> dict | None:
        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
            async with http.get(f"http://127.0.0.1:{self.operations}/api/status") as reply:
                return await reply.json()
        return None

    async def height(self, http: aiohttp.ClientSession) -> int:
        status = await self.status(http)
        return int(status["channels"].get(CHANNEL, {}).get("height", 0)) if status else 0

    def chain(self) -> list[str]:
        ledger = Ledger(self.home / "data" / "ledger.sqlite")
        try:
            return [
                block_header_hash(common_pb2.Block.FromString(raw).header).hex()
                for raw in ledger.get_blocks(CHANNEL, 0, ledger.height(CHANNEL) - 1)
            ]
        finally:
            ledger.close()


def block_bytes_path(number: int) -> Path:

    return BLOCKS / f"{number}.block"


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def test_rumor_peers_share_a_fabric_channel(tmp_path: Path) -> None:
    ports = (17050, 17051, 17052, 17061, 17151, 17152, 17161)
    await wait_for(
        lambda: all(_port_free(p) for p in ports), 60, f"ports {ports} free (the fixture's config names them)"
    )
    deliver = FabricDeliver(released=5)
    server = await deliver.start()
    peers = [
        FabricPeer("org1", "peer0", 17051, 17151, (), tmp_path / "peer0.org1"),
        FabricPeer("org1", "peer1", 17052, 17152, ("127.0.0.1:17051",), tmp_path / "peer1.org1"),
        # Org2's peer knows nobody: it learns Org1's anchor peers from config block 1, or never meets Org1
        FabricPeer("org2", "peer0", 17061, 17161, (), tmp_path / "peer0.org2"),
    ]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        try:
            for peer in peers:
                peer.write_config()
                await peer.start(join=True)

            seen: list[int] = []

            def heights() -> str:
                return f"heights {seen}"

            async def all_at(height: int) -> bool:
                seen[:] = [await p.height(http) for p in peers]
                return all(h == height for h in seen)

            await wait_for(lambda: all_at(5), 90, "every peer commits blocks 0-4", describe=heights)

            # Org2's peer meets Org1 through the anchor peers of config block 1 (it has no other way to)
            async def org2_knows_org1() -> bool:
                status = await peers[2].status(http)
                return status is not None and "Org1MSP" in {m["org"] for m in status["membership"] if m["alive"]}

            await wait_for(org2_knows_org1, 60, "peer0.org2 knows Org1's peers alive")

            # peer1.org1 stops; blocks 5-8 come; it restarts and catches up from its peers
            await peers[1].stop()
            deliver.release(HEIGHT)
            await wait_for(lambda: all_at_subset(http, [peers[0], peers[2]], HEIGHT), 90, "blocks 5-8 committed")
            served_before_restart = list(deliver.clients)
            await peers[1].start(join=False)
            await wait_for(lambda: all_at(HEIGHT), 90, "the restarted peer catches up", describe=heights)
            status = await peers[1].status(http)
            assert status is not None and not status["channels"][CHANNEL]["leader"]
        finally:
            for peer in peers:
                peer.kill()
            await server.stop(None)

    # Every peer holds the fixture's chain, with the header hashes the Fabric peer reported for it.
    for peer in peers:
        assert peer.chain() == HEADER_HASHES, peer.peer_id
        assert "Traceback" not in peer.err.read_text(), peer.err.read_text()[-3000:]
        assert " ERROR " not in peer.err.read_text(), peer.err.read_text()[-3000:]
    assert deliver.refusals == []
    # Org1 has one leader pulling from the orderer at a time; the restarted peer, not leading, never asked it:
    # its blocks 5-8 came by gossip (state transfer or pull).
    assert peers[1].tls_hash not in deliver.clients[len(served_before_restart) :]


async def all_at_subset(http: aiohttp.ClientSession, peers: list[FabricPeer], height: int) -> bool:
    return all([await p.height(http) == height for p in peers])
