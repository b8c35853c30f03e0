"""The orderer on a disk that fills up: it never answers SUCCESS for what it could not store, refuses with
SERVICE_UNAVAILABLE and the reason while it cannot, loses nothing it acknowledged, and resumes by itself."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from orderer_helpers import CHANNEL, MAX_COUNT, SLOW_CHANNEL, payloads_of, raw_broadcast
from polling import wait_for
from smallfs import SmallFilesystem, small_filesystem

from rumor import channelconfig as cc
from rumor.crypto import SigningIdentity
from rumor.ledger import Ledger, LedgerStorageError
from rumor.orderer import ClientTLS, Orderer, ServerTLS
from rumor.wire.pb.common import common_pb2

Status = common_pb2.Status


class FillableLedger(Ledger):
    """A real ledger whose disk the test declares full: the pending queue, the blocks, or both refuse, as SQLite
    does on a full disk (nothing of the call stored)."""

    pending_full = False
    blocks_full = False

    def _full(self, what: str) -> LedgerStorageError:
        return LedgerStorageError(f"cannot store {what}: disk full at {self.path}", "disk full", self.path)

    def add_pending(self, items: Sequence[tuple[str, bytes]]) -> list[int]:
        if self.pending_full:
            raise self._full(f"{len(items)} envelopes")
        return super().add_pending(items)

    def commit_many(self, channel: str, blocks: Sequence[bytes], *, consumed_through: int | None = None) -> None:
        if self.blocks_full:
            raise self._full(f"block {self.height(channel)} of channel {channel}")
        super().commit_many(channel, blocks, consumed_through=consumed_through)


def envelopes(signer: SigningIdentity, tag: str, n: int, size: int = 8, channel: str = CHANNEL) -> list[bytes]:
    """``n`` envelopes whose payloads are ``<tag><i> `` padded with dots to ``size`` bytes."""
    return [
        cc.new_envelope(
            signer, channel, common_pb2.MESSAGE, f"{tag}{i} ".encode().ljust(size, b".")
        ).SerializeToString()
        for i in range(n)
    ]


def blocks_of(orderer: Orderer, channel: str = CHANNEL) -> list[common_pb2.Block]:
    ledger = orderer.ledger
    return [common_pb2.Block.FromString(raw) for raw in ledger.get_blocks(channel, 1, ledger.height(channel) - 1)]


async def test_blocks_the_disk_refuses_are_retried_and_new_envelopes_refused_meanwhile(
    tmp_path: Path, orderer_identity: SigningIdentity, genesis: bytes, slow_genesis: bytes, server_tls: ServerTLS,
    user1: SigningIdentity, client_tls: ClientTLS,
) -> None:  # fmt: skip
    ledger = FillableLedger(tmp_path / "ledger.sqlite")
    orderer = Orderer(
        orderer_identity, ledger, genesis_blocks=[genesis, slow_genesis], tls=server_tls, close_ledger=True,
        store_retry=0.05,
    )  # fmt: skip
    await orderer.start()
    try:
        ledger.blocks_full = True
        accepted = await raw_broadcast(orderer.address, client_tls, envelopes(user1, "a", MAX_COUNT))
        assert {r.status for r in accepted} == {Status.SUCCESS}  # durable in the pending queue: SUCCESS is true
        await wait_for(orderer.storage.problem, what="the writer to meet the full disk")
        assert orderer.storage.problem() == f"cannot store block 1 of channel {CHANNEL}: disk full at {ledger.path}"
        refused = await raw_broadcast(orderer.address, client_tls, envelopes(user1, "b", 3))
        assert {r.status for r in refused} == {Status.SERVICE_UNAVAILABLE}
        assert all("disk full" in r.info and "try again later" in r.info for r in refused), refused[0].info
        assert orderer.height(CHANNEL) == 1 and len(ledger.pending(CHANNEL)) == MAX_COUNT

        ledger.blocks_full = False  # space is back: the retry stores the block, and envelopes are taken again
        await wait_for(lambda: orderer.height(CHANNEL) == 2 and orderer.storage.problem() is None, what="block 1")
        assert [p.split(b" ")[0] for p in payloads_of(blocks_of(orderer))] == [b"a%d" % i for i in range(MAX_COUNT)]
        assert ledger.pending(CHANNEL) == []
        again = await raw_broadcast(orderer.address, client_tls, envelopes(user1, "c", MAX_COUNT))
        assert {r.status for r in again} == {Status.SUCCESS}
        await wait_for(lambda: orderer.height(CHANNEL) == 3, what="block 2")

        ledger.pending_full = True  # the queue cannot take them: refused, never SUCCESS
        refused = await raw_broadcast(orderer.address, client_tls, envelopes(user1, "d", 2))
        assert {r.status for r in refused} == {Status.SERVICE_UNAVAILABLE}
        assert "cannot store" in refused[0].info and "disk full" in refused[0].info
        assert orderer.storage.problem() is not None
        ledger.pending_full = False
        assert {r.status for r in await raw_broadcast(orderer.address, client_tls, envelopes(user1, "e", 1))} == {
            Status.SUCCESS
        }
        assert orderer.storage.problem() is None
    finally:
        await orderer.stop()


async def test_stopping_on_a_full_disk_keeps_the_acknowledged_envelopes_for_the_next_start(
    tmp_path: Path, orderer_identity: SigningIdentity, genesis: bytes, slow_genesis: bytes, server_tls: ServerTLS,
    user1: SigningIdentity, client_tls: ClientTLS,
) -> None:  # fmt: skip
    def make(ledger: Ledger) -> Orderer:
        return Orderer(
            orderer_identity, ledger, genesis_blocks=[genesis, slow_genesis], tls=server_tls, close_ledger=True,
            store_retry=0.05,
        )  # fmt: skip

    ledger = FillableLedger(tmp_path / "ledger.sqlite")
    first = make(ledger)
    await first.start()
    ledger.blocks_full = True
    accepted = await raw_broadcast(first.address, client_tls, envelopes(user1, "a", 3))
    assert {r.status for r in accepted} == {Status.SUCCESS}
    await first.stop()  # the last cut cannot be stored either: the envelopes stay pending

    second = make(Ledger(tmp_path / "ledger.sqlite"))
    await second.start()
    try:
        await wait_for(lambda: second.height(CHANNEL) == 2, what="the pending envelopes ordered")
        assert [p.split(b" ")[0] for p in payloads_of(blocks_of(second))] == [b"a0", b"a1", b"a2"]
    finally:
        await second.stop()


async def test_on_a_real_full_disk_nothing_acknowledged_is_lost(
    tmp_path: Path, orderer_identity: SigningIdentity, genesis: bytes, slow_genesis: bytes, server_tls: ServerTLS,
    user1: SigningIdentity, client_tls: ClientTLS,
) -> None:  # fmt: skip
    def make(fs: SmallFilesystem) -> Orderer:
        return Orderer(
            orderer_identity, Ledger(fs.mountpoint / "ledger.sqlite"), genesis_blocks=[genesis, slow_genesis],
            tls=server_tls, close_ledger=True, store_retry=0.05,
        )  # fmt: skip

    with small_filesystem(tmp_path / "fs", size_mib=4) as fs:
        orderer = make(fs)
        await orderer.start()
        try:
            # Envelopes of the slow channel wait in the pending queue: its block is cut only when the orderer stops.
            slow = envelopes(user1, "slow", 3, channel=SLOW_CHANNEL)
            assert {r.status for r in await raw_broadcast(orderer.address, client_tls, slow)} == {Status.SUCCESS}
            fs.fill()
            acknowledged: list[bytes] = []
            refusal = ""
            for round_ in range(200):  # a WAL with room left takes some: submit until the disk refuses
                items = envelopes(user1, f"r{round_}-", 4, size=16 * 1024)
                for item, reply in zip(items, await raw_broadcast(orderer.address, client_tls, items), strict=True):
                    if reply.status == Status.SUCCESS:
                        acknowledged.append(cc.open_envelope(item).payload.data)
                    else:
                        assert reply.status == Status.SERVICE_UNAVAILABLE, reply
                        refusal = reply.info
                if refusal:
                    break
            assert "disk full" in refusal and str(fs.mountpoint) in refusal, refusal
            assert orderer.storage.problem() is not None
        finally:
            await orderer.stop()  # on the full disk: what it cannot cut into a block stays in the pending queue

        fs.free()
        orderer = make(fs)
        await orderer.start()
        try:

            def ordered(channel: str = CHANNEL) -> list[bytes]:
                return payloads_of(blocks_of(orderer, channel))

            await wait_for(
                lambda: set(acknowledged) <= set(ordered()),
                what="every acknowledged envelope in a block",
                describe=lambda: f"{len(set(acknowledged) - set(ordered()))} of {len(acknowledged)} missing",
            )
            assert len(ordered()) == len(acknowledged)  # and none twice
            replies = await raw_broadcast(orderer.address, client_tls, envelopes(user1, "after", 1))
            assert replies[0].status == Status.SUCCESS
            assert orderer.storage.problem() is None
            orderer.ledger.check()
        finally:
            await orderer.stop()
        # Whether its last cut fitted on the full disk or waited in the pending queue, the slow channel's envelopes
        # are in one block now (the second orderer cut them when it stopped).
        ledger = Ledger(fs.mountpoint / "ledger.sqlite")
        try:
            block = common_pb2.Block.FromString(ledger.get_block(SLOW_CHANNEL, 1) or b"")
            assert [p.split(b" ")[0] for p in payloads_of([block])] == [b"slow0", b"slow1", b"slow2"]
            assert ledger.pending(SLOW_CHANNEL) == []
        finally:
            ledger.close()
