"""Policy evaluation as Fabric does it, on the fixture's real identities, and the configtx.yaml rule language."""

from __future__ import annotations

import pytest
from fabric_fixture import crypto_service, identity

from rumor.policies import PolicyError, PolicyTree, SignedData, parse_signature_rule, signature_policy
from rumor.wire.pb.common import configtx_pb2, policies_pb2


def tree_with(rule: str) -> PolicyTree:
    group = configtx_pb2.ConfigGroup()
    group.policies["P"].policy.CopyFrom(signature_policy(parse_signature_rule(rule)))
    return PolicyTree.from_group(group)


def signed(org: str, name: str, data: bytes = b"d") -> SignedData:
    signer = identity(org, name)
    return SignedData(data, signer.identity, signer.sign(data))


@pytest.mark.parametrize(
    ("rule", "signers", "met"),
    [
        ("OR('Org1MSP.member')", [("org1", "User1")], True),
        ("OR('Org1MSP.admin')", [("org1", "User1")], False),
        ("OR('Org1MSP.peer', 'Org2MSP.peer')", [("org2", "peer0")], True),
        ("AND('Org1MSP.member', 'Org2MSP.member')", [("org1", "User1")], False),
        ("AND('Org1MSP.member', 'Org2MSP.member')", [("org1", "User1"), ("org2", "User1")], True),
        # one identity satisfies one principal only: two members need two identities
        ("AND('Org1MSP.member', 'Org1MSP.member')", [("org1", "User1")], False),
        ("AND('Org1MSP.member', 'Org1MSP.member')", [("org1", "User1"), ("org1", "User1")], False),  # deduplicated
        ("AND('Org1MSP.member', 'Org1MSP.member')", [("org1", "User1"), ("org1", "Admin")], True),
        ("OutOf(2, 'Org1MSP.admin', 'Org2MSP.admin', 'Org1MSP.peer')", [("org1", "Admin"), ("org1", "peer0")], True),
        ("OutOf(2, 'Org1MSP.admin', 'Org2MSP.admin', 'Org1MSP.peer')", [("org2", "Admin")], False),
        ("OR(AND('Org1MSP.client', 'Org2MSP.client'), 'Org2MSP.admin')", [("org2", "Admin")], True),
        ("OR('Org1MSP.orderer')", [("org1", "peer0")], False),
        ("OR('OtherMSP.member')", [("org1", "User1")], False),
    ],
)
def test_signature_policies(genesis_config, rule: str, signers, met: bool) -> None:  # type: ignore[no-untyped-def]
    resolver = crypto_service(genesis_config).resolver("mychannel")
    assert tree_with(rule).satisfied("/Channel/P", [signed(*s) for s in signers], resolver) is met


def test_a_signature_over_other_data_counts_for_nothing(genesis_config) -> None:  # type: ignore[no-untyped-def]
    resolver = crypto_service(genesis_config).resolver("mychannel")
    good = signed("org1", "Admin")
    replayed = SignedData(b"other data", good.identity, good.signature)
    with pytest.raises(PolicyError, match="policy /Channel/P is not satisfied by signatures of Org1MSP"):
        tree_with("OR('Org1MSP.admin')").evaluate("/Channel/P", [replayed], resolver)
    junk = SignedData(b"d", b"\xff not an identity", b"")
    with pytest.raises(PolicyError, match="an invalid identity"):
        tree_with("OR('Org1MSP.admin')").evaluate("/Channel/P", [junk], resolver)


def test_rule_language_as_configtxgen_encodes_it() -> None:
    envelope = parse_signature_rule("OR('A.admin', AND('B.peer', \"A.admin\"))")
    assert envelope.identities[0].principal.endswith(b"\x10\x01")  # A, ADMIN
    assert len(envelope.identities) == 2  # 'A.admin' listed once
    outer = envelope.rule.n_out_of
    assert outer.n == 1 and outer.rules[0].signed_by == 0
    assert outer.rules[1].n_out_of.n == 2 and [r.signed_by for r in outer.rules[1].n_out_of.rules] == [1, 0]
    for bad, fragment in [
        ("OR('A.boss')", "is not '<MSP ID>"),
        ("XOR('A.admin')", "unknown operator"),
        ("OR('A.admin'", "expected \\)"),
        ("OutOf(3, 'A.admin')", "OutOf\\(3\\) of 1"),
        ("OR('A.admin') junk", "cannot read"),
        ("AND(" * 40 + "'A.admin'" + ")" * 40, "nests deeper"),
    ]:
        with pytest.raises(PolicyError, match=fragment):
            parse_signature_rule(bad)


def test_hostile_policies_are_refused_when_read() -> None:
    deep = policies_pb2.SignaturePolicy(signed_by=0)
    for _ in range(40):
        deep = policies_pb2.SignaturePolicy(n_out_of=policies_pb2.SignaturePolicy.NOutOf(n=1, rules=[deep]))
    group = configtx_pb2.ConfigGroup()
    group.policies["Deep"].policy.CopyFrom(
        signature_policy(
            policies_pb2.SignaturePolicyEnvelope(
                rule=deep, identities=[policies_pb2.SignaturePolicyEnvelope().identities.add()]
            )
        )
    )
    with pytest.raises(PolicyError, match="nests deeper"):
        PolicyTree.from_group(group)
    dangling = configtx_pb2.ConfigGroup()
    dangling.policies["P"].policy.CopyFrom(
        signature_policy(policies_pb2.SignaturePolicyEnvelope(rule=policies_pb2.SignaturePolicy(signed_by=3)))
    )
    with pytest.raises(PolicyError, match="names identity 3 of 0"):
        PolicyTree.from_group(dangling)
