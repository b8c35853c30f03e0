"""Messages built by hypothesis from their descriptors (fuzz_strategies.messages), fed to the same code the fuzz
targets feed: any frame, any GossipMessage, any block, any part of a channel config, any policy group.

The mutation targets (test_fuzz_targets.py) start from valid messages; these start from nothing, with every
field at values hypothesis likes (0, the extremes, empty, the wrong member of a oneof). Expected refusals are the
documented ones; anything else fails the test.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator

import pytest
from fuzz_fabric import CHANNEL as FABRIC_CHANNEL
from fuzz_fabric import _adopt, material
from fuzz_peer import PeerWorld, WireTarget, origin_of_safe
from fuzz_strategies import messages
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rumor import channelconfig as cc
from rumor.crypto.api import CryptoError
from rumor.policies import PolicyError, PolicyTree, SignedData
from rumor.wire import messages as wire
from rumor.wire.pb.common import common_pb2, configtx_pb2, policies_pb2
from rumor.wire.pb.gossip import message_pb2 as pb
from rumor.wire.pb.msp import msp_config_pb2
from rumor.wire.pb.orderer import configuration_pb2 as orderer_config_pb2
from rumor.wire.pb.peer import configuration_pb2 as peer_config_pb2

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

_TEMPLATE = PeerWorld(0)
"""A world only to take ids, identities and MACs from: hypothesis' bytes come from them too, so that a message can
name a real peer and get past the first lookup."""
DICTIONARY = _TEMPLATE.dictionary
_WIRE = WireTarget(0)


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    logging.disable(logging.CRITICAL)
    yield
    logging.disable(logging.NOTSET)


@SETTINGS
@given(
    frame=st.binary(max_size=600) | messages(pb.Envelope, dictionary=DICTIONARY).map(lambda e: e.SerializeToString())
)
def test_any_frame_is_decoded_or_refused(frame: bytes) -> None:
    _WIRE.decode(frame)


@SETTINGS
@given(
    message=messages(pb.GossipMessage, dictionary=DICTIONARY),
    fix_tag=st.booleans(),
    sender=st.integers(0, 4),
    signer=st.sampled_from(["origin", "sender", "none"]),
    later=st.sampled_from([0.0, 1.0, 30.0]),
)
def test_any_gossip_message_is_handled_or_dropped(
    message: pb.GossipMessage, fix_tag: bool, sender: int, signer: str, later: float
) -> None:
    world = PeerWorld(0)  # fresh each time: an example must replay the same
    actor = world.actors[sender]
    if fix_tag:
        with contextlib.suppress(wire.InvalidMessage):
            message.tag = wire.required_tag(message)
    origin = world.by_pki.get(origin_of_safe(message) or b"") or actor
    by = {"origin": origin if origin is not world.me else actor, "sender": actor, "none": None}[signer]
    world.deliver(actor, world.seal(message, by))  # world.apply checks every effect
    world.now += later
    deadline = world.core.next_deadline()
    if deadline is not None and deadline <= world.now:
        world.apply(world.core.on_tick(world.now))


@SETTINGS
@given(block=messages(common_pb2.Block, dictionary=DICTIONARY, max_depth=4), seq=st.integers(0, 2**64 - 1))
def test_any_block_verifies_or_is_refused(block: common_pb2.Block, seq: int) -> None:
    raw = block.SerializeToString()
    m = material()
    for mcs in (m.mcs, _TEMPLATE.me.svc):
        with contextlib.suppress(CryptoError):
            mcs.verify_block(FABRIC_CHANNEL, seq, raw)
    cc.is_config_block(block)
    cc.last_config_index(block)


_CONFIG_PARTS = [
    (("Application", "Org1MSP"), "MSP", msp_config_pb2.MSPConfig),
    (("Application", "Org1MSP"), "AnchorPeers", peer_config_pb2.AnchorPeers),
    (("Orderer",), "BatchSize", orderer_config_pb2.BatchSize),
    (("Orderer",), "BatchTimeout", orderer_config_pb2.BatchTimeout),
    (("Orderer",), "ConsensusType", orderer_config_pb2.ConsensusType),
    (("Orderer", "OrdererMSP"), "Endpoints", configtx_pb2.OrdererAddresses),
    ((), "Capabilities", configtx_pb2.Capabilities),
    ((), "OrdererAddresses", configtx_pb2.OrdererAddresses),
]


@SETTINGS
@given(
    part=st.sampled_from(_CONFIG_PARTS).flatmap(
        lambda p: st.tuples(st.just(p[0]), st.just(p[1]), messages(p[2], dictionary=DICTIONARY, max_depth=4))
    ),
    fabric=messages(msp_config_pb2.FabricMSPConfig, dictionary=DICTIONARY),
    as_msp=st.booleans(),
)
def test_any_config_value_is_read_or_refused(
    part: tuple[tuple[str, ...], str, object], fabric: msp_config_pb2.FabricMSPConfig, as_msp: bool
) -> None:
    m = material()
    config = configtx_pb2.Config()
    config.CopyFrom(m.config.config)
    path, key, value = part
    group = config.channel_group
    for name in path:
        group = group.groups[name]
    if as_msp and key == "MSP":
        # A whole FabricMSPConfig of hypothesis' making, where an org's MSP goes.
        value = msp_config_pb2.MSPConfig(type=0, config=fabric.SerializeToString())
    group.values[key].value = value.SerializeToString()  # type: ignore[attr-defined]
    try:
        parsed = cc.parse_config(config, FABRIC_CHANNEL)
    except cc.ChannelConfigError:
        return
    _adopt(parsed, m)


@SETTINGS
@given(
    policy=messages(policies_pb2.Policy, max_depth=2),
    envelope=messages(policies_pb2.SignaturePolicyEnvelope, dictionary=DICTIONARY, max_depth=5),
    use_envelope=st.booleans(),
    where=st.sampled_from(["Readers", "Writers", "Admins", "BlockValidation"]),
)
def test_any_policy_compiles_and_evaluates_or_is_refused(
    policy: policies_pb2.Policy, envelope: policies_pb2.SignaturePolicyEnvelope, use_envelope: bool, where: str
) -> None:
    m = material()
    group = configtx_pb2.ConfigGroup()
    group.CopyFrom(m.config.config.channel_group)
    if use_envelope:
        policy = policies_pb2.Policy(type=policies_pb2.Policy.SIGNATURE, value=envelope.SerializeToString())
    group.groups["Orderer"].policies[where].policy.CopyFrom(policy)
    try:
        tree = PolicyTree.from_group(group)
    except PolicyError:
        return
    resolver = m.mcs.resolver(FABRIC_CHANNEL)
    for path in tree.policies:
        with contextlib.suppress(PolicyError):
            tree.evaluate(path, _signatures(), resolver)


@functools.cache
def _signatures() -> list[SignedData]:
    """A good signature by each identity of the material (made once: ECDSA takes a while)."""
    return [SignedData(b"d", s.identity, s.sign(b"d")) for s in material().signers]
