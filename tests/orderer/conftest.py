"""Shared material for the orderer tests: crypto generated once per session, a channel, a running orderer.

Org1 and Org2 are members of the test channel; Org3 exists in the material (and so has a valid CA) but is no
member, which makes it the "unknown org". The channel cuts at 10 envelopes or 100 ms.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from orderer_helpers import ABSOLUTE_MAX, CHANNEL, MAX_COUNT, SLOW_CHANNEL, user

from rumor import channelconfig as cc
from rumor.crypto import GeneratedMaterial, SigningIdentity, default_spec, generate, load_signing_identity
from rumor.ledger import Ledger
from rumor.orderer import ClientTLS, Orderer, ServerTLS


@pytest.fixture(scope="session")
def material(tmp_path_factory: pytest.TempPathFactory) -> GeneratedMaterial:
    return generate(default_spec(3, 1), tmp_path_factory.mktemp("orderer-material") / "crypto")


def _config(material: GeneratedMaterial, name: str, timeout: float) -> cc.ChannelConfig:
    orderer_org = material.orderer_orgs[0]
    return cc.channel_config(
        name,
        [cc.org_config(o.mspid, o.msp_dir, [f"{o.nodes[0].host}:7051"]) for o in material.peer_orgs[:2]],
        [cc.orderer_org_config(orderer_org.mspid, orderer_org.msp_dir, ["127.0.0.1:7050"])],
        cc.batch_config(
            max_message_count=MAX_COUNT,
            preferred_max_bytes=32 * 1024,
            absolute_max_bytes=ABSOLUTE_MAX,
            batch_timeout=timeout,
        ),
    )


@pytest.fixture(scope="session")
def channel_config(material: GeneratedMaterial) -> cc.ChannelConfig:
    return _config(material, CHANNEL, 0.1)


@pytest.fixture(scope="session")
def slow_channel_config(material: GeneratedMaterial) -> cc.ChannelConfig:
    return _config(material, SLOW_CHANNEL, 3600)


@pytest.fixture(scope="session")
def orderer_identity(material: GeneratedMaterial) -> SigningIdentity:
    org = material.orderer_orgs[0]
    return load_signing_identity(org.nodes[0].msp_dir, org.mspid)


@pytest.fixture(scope="session")
def genesis(channel_config: cc.ChannelConfig, orderer_identity: SigningIdentity) -> bytes:
    return cc.genesis_block(channel_config, orderer_identity).SerializeToString()


@pytest.fixture(scope="session")
def slow_genesis(slow_channel_config: cc.ChannelConfig, orderer_identity: SigningIdentity) -> bytes:
    return cc.genesis_block(slow_channel_config, orderer_identity).SerializeToString()


@pytest.fixture(scope="session")
def user1(material: GeneratedMaterial) -> SigningIdentity:
    return user(material, "Org1MSP")


@pytest.fixture(scope="session")
def user2(material: GeneratedMaterial) -> SigningIdentity:
    return user(material, "Org2MSP")


@pytest.fixture(scope="session")
def outsider(material: GeneratedMaterial) -> SigningIdentity:
    return user(material, "Org3MSP")


@pytest.fixture(scope="session")
def server_tls(material: GeneratedMaterial) -> ServerTLS:
    node = material.orderers[0]
    return ServerTLS.from_files(node.tls_cert, node.tls_key)


@pytest.fixture(scope="session")
def client_tls(material: GeneratedMaterial) -> ClientTLS:
    return ClientTLS.from_files([material.orderers[0].tls_ca_cert])


StartOrderer = Callable[..., Awaitable[Orderer]]


@pytest.fixture
async def start_orderer(
    tmp_path: Path, orderer_identity: SigningIdentity, genesis: bytes, slow_genesis: bytes, server_tls: ServerTLS
) -> AsyncIterator[StartOrderer]:
    """Start an orderer on a loopback port (TLS by default) over ``tmp_path/ledger.sqlite``; stopped at the end.

    Calling it again after stopping the first one starts a new orderer over the same ledger.
    """
    started: list[Orderer] = []

    async def start(*, port: int = 0, tls: bool | ServerTLS = True, **kwargs: object) -> Orderer:
        options: dict = {
            "genesis_blocks": [genesis, slow_genesis],
            "listen_address": f"127.0.0.1:{port}",
            "tls": tls if isinstance(tls, ServerTLS) else (server_tls if tls else None),
            "close_ledger": True,
        }
        options.update(kwargs)
        orderer = Orderer(orderer_identity, Ledger(tmp_path / "ledger.sqlite"), **options)  # type: ignore[arg-type]
        await orderer.start()
        started.append(orderer)
        return orderer

    yield start
    for orderer in started:
        await orderer.stop()
