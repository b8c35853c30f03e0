"""Issue 5: a peer of an org outside a channel gets none of its blocks, by gossip, pull or state transfer.

Three orgs; ``mychannel`` admits Org1 and Org2 only. All three share a second channel, ``allchannel``, so the
members know Org3's identities, talk to its peer and list it alive: the outsider is inside the gossip network
and only the channel's access rules keep ``mychannel`` from it (without a shared channel it could not even
complete a handshake, which would prove less). A gossip client of Org3, and one of Org1 for comparison, send a
member peer the same RemoteStateRequest for ``mychannel``: only Org1's gets an answer.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from procnet import (
    Cluster,
    block_hash,
    channel_config,
    gossip_client,
    ledger_channels,
    make_network,
    read_chain,
    wait_for,
)

from rumor import channelconfig
from rumor.core.types import RemotePeer
from rumor.crypto.identity import load_signing_identity
from rumor.network import NetworkLayout
from rumor.wire import messages

SHARED = "allchannel"


def shared_channel(layout: NetworkLayout) -> tuple[Path, channelconfig.ChannelConfig]:
    """Write the genesis block of a channel of every org, and have the orderer serve it too."""
    crypto = layout.root / "crypto"
    orgs = []
    for n, org in enumerate(sorted({p.org for p in layout.peers}), start=1):
        first = next(p for p in layout.peers if p.org == org)
        msp = crypto / "peerOrganizations" / f"org{n}.example.com" / "msp"
        orgs.append(channelconfig.org_config(org, msp, anchor_peers=[first.endpoint]))
    orderer_org = channelconfig.orderer_org_config(
        "OrdererMSP", crypto / "ordererOrganizations/example.com/msp", [layout.orderer_endpoint]
    )
    config = channelconfig.channel_config(SHARED, orgs, [orderer_org], channelconfig.batch_config(max_message_count=1))
    signer = load_signing_identity(
        crypto / "ordererOrganizations/example.com/orderers/orderer.example.com/msp", "OrdererMSP"
    )
    block = channelconfig.save_block(
        layout.root / "channels" / f"{SHARED}.block", channelconfig.genesis_block(config, signer)
    )
    orderer_yaml = yaml.safe_load(layout.orderer_config.read_text())
    orderer_yaml["Channels"].append(f"../channels/{SHARED}.block")
    layout.orderer_config.write_text(yaml.safe_dump(orderer_yaml, sort_keys=False))
    return block, config


async def test_outsider_org_gets_no_block_of_the_channel(
    clusters: Callable[[NetworkLayout], Cluster], tmp_path: Path
) -> None:
    layout = make_network(
        tmp_path / "net", orgs=3, peers_per_org=2, max_message_count=1, channel_orgs=["Org1MSP", "Org2MSP"]
    )
    assert [o.mspid for o in channel_config(layout).orgs] == ["Org1MSP", "Org2MSP"]
    shared_block, shared = shared_channel(layout)
    cluster = clusters(layout)
    running = [p for p in cluster.peers if p.id.startswith("peer0.")]
    members = [p for p in running if p.org != "Org3MSP"]
    outsider = next(p for p in running if p.org == "Org3MSP")

    await cluster.start_orderer()
    for peer in running:
        joins = [layout.genesis, shared_block] if layout.in_channel(peer) else [shared_block]
        await cluster.start_peer(peer, join=joins)

    # Everyone knows everyone, the outsider included.
    seen: dict[str, Any] = {}

    async def all_alive() -> bool:
        statuses = await cluster.statuses(running)
        seen.update(statuses)
        for peer_id, status in statuses.items():
            if status is None:
                return False
            alive = {m["endpoint"] for m in status["membership"] if m["alive"]}
            if alive != {p.endpoint for p in running if p.id != peer_id}:
                return False
        return True

    await wait_for(all_alive, 40, "the three peers list each other alive", describe=lambda: str(seen))

    await cluster.submit(count=10)
    await cluster.submit(count=2, channel=SHARED)
    await cluster.wait_heights(members, 11, 60)
    await cluster.wait_heights(running, 3, 60, channel=SHARED)  # the outsider does get the channel it is in

    # Ask a member for mychannel's blocks by state transfer: as Org3 (refused), then as Org1 (served).
    member = members[0]
    status = await cluster.status(member)
    assert status is not None
    to = [RemotePeer(bytes.fromhex(status["pki_id"]), member.endpoint)]
    spare = {p.org: p for p in cluster.peers if p.id.startswith("peer1.")}
    as_outsider = gossip_client(layout, spare["Org3MSP"], [shared])
    as_member = gossip_client(layout, spare["Org1MSP"], [shared])
    await as_outsider.start()
    await as_member.start()
    try:
        outsider_answers = as_outsider.subscribe(lambda m: m.message.HasField("state_response"))
        member_answers = as_member.subscribe(lambda m: m.message.HasField("state_response"))
        request = messages.state_request(layout.channel.encode(), 0, 5, secrets.randbits(63))
        as_outsider.send(messages.seal(request), to)

        async def denied() -> bool:
            status = await cluster.status(member)
            return any(
                e["event"] == "channel_access_denied"
                and e.get("sender") == as_outsider.pki_id.hex()
                and e.get("kind") == "state_request"
                for e in (status or {}).get("events", [])
            )

        await wait_for(denied, 30, "the member denies the outsider's state request")
        as_member.send(messages.seal(request), to)
        await wait_for(lambda: len(member_answers) > 0, 30, "the member's state request is answered")
        answer = member_answers.get_nowait()
        assert answer is not None
        assert [p.seq_num for p in answer.message.state_response.payloads] == [0, 1, 2, 3, 4, 5]
        assert len(outsider_answers) == 0
        assert as_outsider.connection(to[0].pki_id) is not None  # refused the data, not the connection
    finally:
        await as_outsider.stop()
        await as_member.stop()

    status = await cluster.status(outsider)
    assert status is not None
    assert sorted(status["channels"]) == [SHARED]
    for peer in running:
        await cluster.stop(peer.id)
    await cluster.stop("orderer")
    assert ledger_channels(outsider) == [SHARED]
    assert read_chain(outsider, layout.channel) == []
    chains = [read_chain(p, layout.channel) for p in members]
    assert len(chains[0]) == 11
    assert [block_hash(b) for b in chains[0]] == [block_hash(b) for b in chains[1]]
