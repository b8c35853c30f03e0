"""Each kind is built with its legal tag, and an illegal tag is refused on receipt."""

from __future__ import annotations

import pytest

from rumor.wire import messages as m
from rumor.wire.pb.gossip import message_pb2 as pb

ENV = pb.Envelope(payload=b"x")

BUILT = {
    "alive": (m.alive("e:1", b"p", 1, 1), m.EMPTY),
    "mem_req": (m.membership_request(ENV, [b"a"]), m.EMPTY),
    "mem_res": (m.membership_response([ENV], []), m.EMPTY),
    "conn": (m.conn_establish(b"p", b"i", b"h"), m.EMPTY),
    "data": (m.data_message(b"ch", 1, b"b"), m.CHAN_AND_ORG),
    "block hello": (m.hello(1, m.BLOCK_MSG, b"ch"), m.CHAN_AND_ORG),
    "block digest": (m.data_digest(1, m.BLOCK_MSG, [b"1"], b"ch"), m.CHAN_AND_ORG),
    "block request": (m.data_request(1, m.BLOCK_MSG, [b"1"], b"ch"), m.CHAN_AND_ORG),
    "block update": (m.data_update(1, m.BLOCK_MSG, [ENV], b"ch"), m.CHAN_AND_ORG),
    "identity hello": (m.hello(1, m.IDENTITY_MSG), m.EMPTY),
    "identity digest": (m.data_digest(1, m.IDENTITY_MSG, [b"p"]), m.EMPTY),
    "state_info": (m.state_info(b"mac", b"p", 1, 1, 5), m.CHAN_OR_ORG),
    "state_info_pull": (m.state_info_pull_request(b"mac", 3), m.CHAN_OR_ORG),
    "state_snapshot": (m.state_info_snapshot([ENV], 3), m.CHAN_OR_ORG),
    "state_request": (m.state_request(b"ch", 1, 10, 4), m.CHAN_OR_ORG),
    "state_response": (m.state_response(b"ch", [pb.Payload(seq_num=1)], 4), m.CHAN_OR_ORG),
    "leadership": (m.leadership(b"ch", b"p", 1, 1, True), m.CHAN_AND_ORG),
    "peer_identity": (m.peer_identity(b"p", b"cert"), m.ORG_ONLY),
    "ack": (m.ack(5), m.UNDEFINED),
    "empty": (m.empty(), m.EMPTY),
}


@pytest.mark.parametrize("name", sorted(BUILT))
def test_builder_sets_legal_tag_and_round_trips(name: str) -> None:
    msg, tag = BUILT[name]
    assert msg.tag == tag
    opened = m.open_envelope(m.seal(msg))
    assert opened == msg


@pytest.mark.parametrize("name", sorted(BUILT))
def test_every_other_tag_is_refused(name: str) -> None:
    msg, legal = BUILT[name]
    for tag in pb.GossipMessage.Tag.values():
        if tag == legal:
            continue
        bad = pb.GossipMessage()
        bad.CopyFrom(msg)
        bad.tag = tag
        with pytest.raises(m.InvalidMessage, match="must carry tag"):
            m.open_envelope(m.seal(bad))


def test_pull_message_with_undefined_type_is_refused() -> None:
    msg = m.hello(1, pb.UNDEFINED)
    with pytest.raises(m.InvalidMessage, match="invalid pull message type"):
        m.check_tag(msg)


def test_garbage_and_empty_content_are_refused() -> None:
    with pytest.raises(m.InvalidMessage, match="undecodable"):
        m.open_envelope(pb.Envelope(payload=b"\xff\xff\xff\xff"))
    with pytest.raises(m.InvalidMessage, match="no content"):
        m.open_envelope(pb.Envelope(payload=pb.GossipMessage(tag=m.EMPTY).SerializeToString()))


def test_strip_secret_removes_only_the_secret() -> None:
    env = m.with_secret(m.seal(m.alive("e:1", b"p", 1, 1)), "10.0.0.5:7051", lambda data: b"sig:" + data)
    assert env.secret_envelope.payload
    stripped = m.strip_secret(env)
    assert not stripped.HasField("secret_envelope")
    assert stripped.payload == env.payload
    assert env.HasField("secret_envelope")  # the original is untouched
