"""Peer stores: what a peer remembers of its network across restarts."""

from __future__ import annotations

from pathlib import Path

import pytest

from rumor.core.peerstore import MemoryPeerStore, PeerStoreError, SqlitePeerStore, StoredPeer


def test_sqlite_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "peers.sqlite"
    store = SqlitePeerStore(path)
    assert store.load() == []
    peers = [
        StoredPeer(b"\x01" * 32, "p1.org1:7051", b"identity-1"),
        StoredPeer(b"\x02" * 32, "p2.org2:7051", None),
    ]
    store.save(peers)
    assert SqlitePeerStore(path).load() == peers  # a new object, as after a restart

    store.save([StoredPeer(b"\x03" * 32, "p3.org1:7051")])  # a save replaces, it does not append
    assert store.load() == [StoredPeer(b"\x03" * 32, "p3.org1:7051", None)]
    store.save([])
    assert store.load() == []


def test_sqlite_load_gives_plain_bytes(tmp_path: Path) -> None:
    store = SqlitePeerStore(str(tmp_path / "p.db"))
    store.save([StoredPeer(b"id", "e:1", b"x")])
    (loaded,) = store.load()
    assert type(loaded.pki_id) is bytes and type(loaded.identity) is bytes
    assert loaded == (b"id", "e:1", b"x")  # usable as a plain tuple


def test_memory_store() -> None:
    store = MemoryPeerStore()
    assert store.load() == []
    store.save([StoredPeer(b"a", "a:1", None)])
    loaded = store.load()
    loaded.clear()  # a copy: the caller cannot change what is stored
    assert store.load() == [StoredPeer(b"a", "a:1", None)]
    assert store.saves == 1


def test_sqlite_failures_are_peer_store_errors_naming_the_file(tmp_path: Path) -> None:
    store = SqlitePeerStore(tmp_path / "no such directory" / "peers.sqlite")
    with pytest.raises(PeerStoreError, match=r"cannot save the known peers to .*no such directory.*: unable to open"):
        store.save([StoredPeer(b"a", "a:1", None)])
    with pytest.raises(PeerStoreError, match=r"cannot read the known peers from "):
        store.load()
