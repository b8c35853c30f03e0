"""The public Python API: what ``rumor`` exports, what ``Peer`` returns, and that all of it is documented."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from polling import wait_for

import rumor
from rumor import Member, Peer, free_base_port, init_network, load_config

ROOT = Path(__file__).resolve().parents[1]
API_PAGE = ROOT / "docs" / "api.md"
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


def documented(name: str, page: str) -> bool:
    """Whether ``name`` appears as code on the page (`peer.stop()`, `Member`, `name`...)."""
    spans = re.findall(r"`([^`\n]+)`", page)  # left to right, so each match is one code span
    return any(re.search(rf"\b{re.escape(name)}\b", span) for span in spans)


def public_members(cls: type) -> dict[str, object]:
    return {name: value for name, value in vars(cls).items() if not name.startswith("_")}


def test_the_public_names_are_importable_from_rumor() -> None:
    assert set(rumor.__all__) - {"__version__"} == set(rumor._EXPORTS)
    for name in rumor._EXPORTS:
        assert getattr(rumor, name) is not None, name
    with pytest.raises(AttributeError):
        rumor.no_such_name  # noqa: B018


def test_import_rumor_stays_cheap() -> None:
    """The command line imports rumor for its version: the exports are loaded on first use, not then."""
    code = (
        "import sys, rumor; print(sorted(m for m in ('grpc', 'cryptography', 'google.protobuf') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"


def test_every_public_member_of_peer_and_member_has_a_docstring() -> None:
    for cls in (Peer, Member):
        assert inspect.getdoc(cls), cls
        for name, value in public_members(cls).items():
            if isinstance(value, property):
                value = value.fget
            if not callable(value):
                continue  # dataclass fields: documented in the class docstring, checked below
            assert (getattr(value, "__doc__", None) or "").strip(), f"{cls.__name__}.{name} has no docstring"
    member_doc = inspect.getdoc(Member) or ""
    for field in dataclasses.fields(Member):
        assert f"``{field.name}``" in member_doc, field.name


def example_imports(path: Path) -> list[tuple[str, str]]:
    tree = ast.parse(path.read_text())
    return [
        (node.module or "", alias.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rumor")
        for alias in node.names
    ]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_examples_use_only_documented_names_exported_from_rumor(example: Path) -> None:
    page = API_PAGE.read_text()
    for module, name in example_imports(example):
        assert module == "rumor", f"{example.name} imports {name} from {module}: export it from rumor"
        assert name in rumor.__all__, name
        assert documented(name, page), f"{name} (used by {example.name}) is not in docs/api.md"
    used = {node.attr for node in ast.walk(ast.parse(example.read_text())) if isinstance(node, ast.Attribute)}
    for name in sorted(used & (set(public_members(Peer)) | {f.name for f in dataclasses.fields(Member)})):
        assert documented(name, page), f"{name} (used by {example.name}) is not in docs/api.md"


def test_the_api_page_lists_every_public_call_of_peer_and_is_linked() -> None:
    page = API_PAGE.read_text()
    for name in public_members(Peer):
        assert documented(name, page), f"Peer.{name} is not in docs/api.md"
    for name in rumor._EXPORTS:
        assert documented(name, page), f"rumor.{name} is not in docs/api.md"
    assert "docs/api.md" in (ROOT / "README.md").read_text()


# --- two live peers in this process ----------------------------------------------------------------------------

FAST = {
    "RUMOR_PEER_GOSSIP_PULLINTERVAL": "1s",
    "RUMOR_PEER_GOSSIP_PUBLISHSTATEINFOINTERVAL": "500ms",
    "RUMOR_PEER_GOSSIP_REQUESTSTATEINFOINTERVAL": "500ms",
    "RUMOR_PEER_GOSSIP_ELECTION_STARTUPGRACEPERIOD": "1s",
    "RUMOR_PEER_GOSSIP_ELECTION_MEMBERSHIPSAMPLEINTERVAL": "200ms",
    "RUMOR_PEER_GOSSIP_ELECTION_LEADERELECTIONDURATION": "500ms",
}


@pytest.fixture
async def two_peers(tmp_path: Path) -> AsyncIterator[tuple[Peer, Peer, str]]:
    """Two peers of one org in this process, joined to the channel, electing a leader (no orderer runs: the
    leader's attempts to reach it are retried quietly)."""
    layout = init_network(tmp_path / "net", orgs=1, peers_per_org=2, base_port=free_base_port(2))
    genesis = layout.genesis.read_bytes()
    alice_config, bob_config = (load_config(p.config, env=FAST) for p in layout.peers)
    async with Peer(alice_config, operations=False) as alice, Peer(bob_config, operations=False) as bob:
        channel = await alice.join_channel(genesis)
        await bob.join_channel(genesis)
        yield alice, bob, channel


async def test_peers_and_leader_are_typed_members(two_peers: tuple[Peer, Peer, str]) -> None:
    alice, bob, channel = two_peers
    await wait_for(lambda: alice.peers() and bob.peers(), 30, "alice and bob know each other")
    (seen_by_alice,) = alice.peers()
    assert seen_by_alice == Member(
        org="Org1MSP", endpoint=bob.endpoint, pki_id=bob.pki_id.hex(), alive=True, name="peer1.org1.example.com"
    )
    assert bob.peers() == [alice.me()]
    assert alice.me().name == "peer0.org1.example.com" and alice.me().org == "Org1MSP"
    with pytest.raises(dataclasses.FrozenInstanceError):
        seen_by_alice.alive = False  # type: ignore[misc]
    await wait_for(lambda: alice.peers_of_channel(channel) and bob.peers_of_channel(channel), 30, "channel views")
    assert alice.peers_of_channel(channel) == [seen_by_alice]
    assert alice.peers_of_channel("no-such-channel") == []

    # Both agree on one leader, which each returns as a Member: the leader itself as me(), the other as a peer.
    await wait_for(lambda: alice.leader(channel) and alice.leader(channel) == bob.leader(channel), 30, "one leader")
    leader = alice.leader(channel)
    assert isinstance(leader, Member) and leader.alive and leader.org == "Org1MSP"
    leading, following = (alice, bob) if alice.is_leader(channel) else (bob, alice)
    assert leader == leading.me() and not following.is_leader(channel)
    assert leader.name == leading.config.peer.id and leader.endpoint == leading.endpoint
    assert alice.leader("no-such-channel") is None

    # status() serves the same members, as JSON values.
    membership = alice.status()["membership"]
    assert membership == [dataclasses.asdict(seen_by_alice)]
