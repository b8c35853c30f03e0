"""The operations endpoint as Fabric's: TLS when operations.tls says so, and admin calls only for an admin of the
peer's own org, shown by a TLS client certificate (its enrollment certificate, chained to the org's CA)."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
import yaml
from procnet import Cluster, make_network

from rumor.network import NetworkLayout


def _client(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    if cert is not None and key is not None:
        context.load_cert_chain(str(cert), str(key))
    return context


async def test_operations_tls_and_admin_certificates(
    clusters: Callable[[NetworkLayout], Cluster], tmp_path: Path
) -> None:
    layout = make_network(tmp_path / "net", orgs=1, peers_per_org=1)
    peer = layout.peers[0]
    crypto = layout.root / "crypto" / "peerOrganizations" / "org1.example.com"
    node = crypto / "peers" / peer.id
    doc = yaml.safe_load(peer.config.read_text())
    doc["operations"]["tls"] = {
        "enabled": True,
        "cert": {"file": str(node / "tls" / "server.crt")},
        "key": {"file": str(node / "tls" / "server.key")},
        "clientAuthRequired": False,
        "clientRootCAs": {"files": [str(crypto / "msp" / "cacerts" / "ca.org1.example.com-cert.pem")]},
    }
    peer.config.write_text(yaml.safe_dump(doc, sort_keys=False))
    cluster = clusters(layout)
    await cluster.start_peer(peer)

    tls_ca = node / "tls" / "ca.crt"
    base = f"https://{peer.operations}"

    def user(name: str) -> ssl.SSLContext:
        msp = crypto / "users" / f"{name}@org1.example.com" / "msp"
        return _client(tls_ca, next((msp / "signcerts").iterdir()), msp / "keystore" / "priv_sk")

    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/healthz", ssl=_client(tls_ca)) as r:
            assert r.status == 200  # reading needs no client certificate
        async with http.put(f"{base}/logspec", json={"spec": "error"}, ssl=_client(tls_ca)) as r:
            assert r.status == 401
        async with http.put(f"{base}/logspec", json={"spec": "error"}, ssl=user("User1")) as r:
            assert r.status == 403 and "not an admin" in (await r.json())["error"]
        async with http.put(f"{base}/logspec", json={"spec": "debug"}, ssl=user("Admin")) as r:
            assert r.status == 200
        async with http.get(f"{base}/logspec", ssl=_client(tls_ca)) as r:
            assert (await r.json())["spec"] == "debug"
        with pytest.raises(aiohttp.ClientError):
            async with http.get(f"http://{peer.operations}/healthz") as r:
                await r.read()
