"""Our encoding is Fabric's: bytes built by hand from the protobuf rules must match."""

from __future__ import annotations

import pytest

from rumor.wire import messages as m
from rumor.wire.pb.common import common_pb2
from rumor.wire.pb.gossip import message_pb2 as pb
from rumor.wire.pb.msp import identities_pb2


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low = n & 0x7F
        n >>= 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def vfield(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def lfield(number: int, data: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(data)) + data


def test_alive_message_bytes() -> None:
    msg = m.alive("peer0:7051", b"\x01\x02", inc_num=1_700_000_000_000_000_000, seq_num=7, identity=b"id")
    member = lfield(1, b"peer0:7051") + lfield(3, b"\x01\x02")
    timestamp = vfield(1, 1_700_000_000_000_000_000) + vfield(2, 7)
    alive = lfield(1, member) + lfield(2, timestamp) + lfield(4, b"id")
    expected = vfield(3, 1) + lfield(5, alive)  # tag EMPTY = 1, alive_msg = field 5
    assert m.seal(msg).payload == expected


def test_data_message_bytes() -> None:
    msg = m.data_message(b"mychannel", seq_num=3, block=b"block-bytes", nonce=9)
    payload = vfield(1, 3) + lfield(2, b"block-bytes")
    expected = vfield(1, 9) + lfield(2, b"mychannel") + vfield(3, 4) + lfield(8, lfield(1, payload))
    assert m.seal(msg).payload == expected


def test_conn_establish_bytes() -> None:
    msg = m.conn_establish(b"P" * 32, b"identity", b"H" * 32, probe=True)
    conn = lfield(1, b"P" * 32) + lfield(2, b"identity") + lfield(3, b"H" * 32) + vfield(4, 1)
    expected = vfield(3, 1) + lfield(14, conn)
    assert m.seal(msg).payload == expected


def test_envelope_and_secret_envelope_bytes() -> None:
    env = pb.Envelope(payload=b"p", signature=b"s", secret_envelope=pb.SecretEnvelope(payload=b"q", signature=b"t"))
    expected = lfield(1, b"p") + lfield(2, b"s") + lfield(3, lfield(1, b"q") + lfield(2, b"t"))
    assert env.SerializeToString(deterministic=True) == expected
    secret = pb.Secret(internalEndpoint="10.0.0.1:7051")
    assert secret.SerializeToString() == lfield(1, b"10.0.0.1:7051")


def test_identity_and_block_bytes() -> None:
    ident = identities_pb2.SerializedIdentity(mspid="Org1MSP", id_bytes=b"PEM")
    assert ident.SerializeToString() == lfield(1, b"Org1MSP") + lfield(2, b"PEM")
    block = common_pb2.Block(
        header=common_pb2.BlockHeader(number=5, previous_hash=b"p", data_hash=b"d"),
        data=common_pb2.BlockData(data=[b"tx1", b"tx2"]),
        metadata=common_pb2.BlockMetadata(metadata=[b"sig", b""]),
    )
    header = vfield(1, 5) + lfield(2, b"p") + lfield(3, b"d")
    data = lfield(1, b"tx1") + lfield(1, b"tx2")
    meta = lfield(1, b"sig") + lfield(1, b"")
    assert block.SerializeToString(deterministic=True) == lfield(1, header) + lfield(2, data) + lfield(3, meta)


# docs/protocol.md, "Envelopes and messages": the content field numbers of GossipMessage.
CONTENT_FIELDS = {
    "alive_msg": 5,
    "mem_req": 6,
    "mem_res": 7,
    "data_msg": 8,
    "hello": 9,
    "data_dig": 10,
    "data_req": 11,
    "data_update": 12,
    "empty": 13,
    "conn": 14,
    "state_info": 15,
    "state_snapshot": 16,
    "state_info_pull_req": 17,
    "state_request": 18,
    "state_response": 19,
    "leadership_msg": 20,
    "peer_identity": 21,
    "ack": 22,
    "privateReq": 23,
    "privateRes": 24,
    "private_data": 25,
}

# docs/protocol.md: every other message, field name -> number.
MESSAGE_FIELDS = {
    "Envelope": {"payload": 1, "signature": 2, "secret_envelope": 3},
    "AliveMessage": {"membership": 1, "timestamp": 2, "identity": 4},
    "Member": {"endpoint": 1, "metadata": 2, "pki_id": 3},
    "PeerTime": {"inc_num": 1, "seq_num": 2},
    "MembershipRequest": {"self_information": 1, "known": 2},
    "MembershipResponse": {"alive": 1, "dead": 2},
    "ConnEstablish": {"pki_id": 1, "identity": 2, "tls_cert_hash": 3, "probe": 4},
    "PeerIdentity": {"pki_id": 1, "cert": 2, "metadata": 3},
    "GossipHello": {"nonce": 1, "metadata": 2, "msg_type": 3},
    "DataDigest": {"nonce": 1, "digests": 2, "msg_type": 3},
    "DataRequest": {"nonce": 1, "digests": 2, "msg_type": 3},
    "DataUpdate": {"nonce": 1, "data": 2, "msg_type": 3},
    "DataMessage": {"payload": 1},
    "Payload": {"seq_num": 1, "data": 2, "private_data": 3},
    "StateInfo": {"timestamp": 2, "pki_id": 3, "channel_MAC": 4, "properties": 5},
    "Properties": {"ledger_height": 1, "left_channel": 2, "chaincodes": 3},
    "Chaincode": {"name": 1, "version": 2, "metadata": 3},
    "StateInfoSnapshot": {"elements": 1},
    "StateInfoPullRequest": {"channel_MAC": 1},
    "LeadershipMessage": {"pki_id": 1, "timestamp": 2, "is_declaration": 3},
    "RemoteStateRequest": {"start_seq_num": 1, "end_seq_num": 2},
    "RemoteStateResponse": {"payloads": 1},
    "Acknowledgement": {"error": 1},
    "PrivatePayload": {
        "collection_name": 1,
        "namespace": 2,
        "tx_id": 3,
        "private_rwset": 4,
        "private_sim_height": 5,
        "collection_configs": 6,
    },
    "PvtDataDigest": {"tx_id": 1, "namespace": 2, "collection": 3, "block_seq": 4, "seq_in_block": 5},
    "PvtDataElement": {"digest": 1, "payload": 2},
}


def test_gossip_message_field_numbers() -> None:
    fields = {f.name: f.number for f in pb.GossipMessage.DESCRIPTOR.fields}
    assert fields.pop("nonce") == 1
    assert fields.pop("channel") == 2
    assert fields.pop("tag") == 3
    assert fields == CONTENT_FIELDS


RUMOR_EXTENSIONS = {
    "DataDigest": {"advertise_ttl": 100},
    "DataMessage": {"push_ttl": 100, "advertise_ttl": 101},
}
"""rumor's own optional fields (enhanced dissemination), at numbers Fabric does not use; Fabric ignores them."""


@pytest.mark.parametrize("name", sorted(MESSAGE_FIELDS))
def test_message_field_numbers(name: str) -> None:
    descriptor = pb.DESCRIPTOR.message_types_by_name[name]
    fields = {f.name: f.number for f in descriptor.fields}
    extensions = RUMOR_EXTENSIONS.get(name, {})
    for field_name, number in extensions.items():
        assert fields.pop(field_name) == number
        assert number >= 100
        assert descriptor.fields_by_name[field_name].has_presence  # optional: absent unless set
    assert fields == MESSAGE_FIELDS[name]


def test_enums() -> None:
    assert dict(pb.GossipMessage.Tag.items()) == {
        "UNDEFINED": 0,
        "EMPTY": 1,
        "ORG_ONLY": 2,
        "CHAN_ONLY": 3,
        "CHAN_AND_ORG": 4,
        "CHAN_OR_ORG": 5,
    }
    assert dict(pb.PullMsgType.items()) == {"UNDEFINED": 0, "BLOCK_MSG": 1, "IDENTITY_MSG": 2}


def test_service_method_paths() -> None:
    service = pb.DESCRIPTOR.services_by_name["Gossip"]
    assert service.full_name == "gossip.Gossip"
    methods = {meth.name: meth for meth in service.methods}
    assert set(methods) == {"GossipStream", "Ping"}
    stream = methods["GossipStream"]
    assert stream.client_streaming and stream.server_streaming
    assert stream.input_type.full_name == stream.output_type.full_name == "gossip.Envelope"
    assert methods["Ping"].input_type.full_name == "gossip.Empty"
