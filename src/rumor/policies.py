"""Fabric's policies, evaluated the way a Fabric peer and orderer evaluate them.

A channel configuration is a tree of groups (``/Channel``, ``/Channel/Application``, ``/Channel/Application/Org1MSP``
...), each holding named policies. Two kinds matter:

- **Signature policies** (``SignaturePolicyEnvelope``): a rule over principals such as "a peer of Org1MSP".
  ``signed_by(i)`` is met by one signature, not used yet, of an identity that satisfies principal ``i`` and whose
  signature verifies; ``n_out_of(n, rules)`` is met when at least ``n`` of its rules are. An identity that met one
  rule is used up for the rest of the evaluation, so ``AND('A.member', 'A.member')`` needs two different members
  of A. Rules are tried in order and a rule that fails leaves no identity used, as in Fabric.
- **Implicit-meta policies** (``ANY``/``ALL``/``MAJORITY`` of ``sub_policy``): evaluate the policy named
  ``sub_policy`` in every direct sub-group and count how many are met. ``ANY`` needs one, ``ALL`` all, ``MAJORITY``
  more than half; a group without sub-groups meets every rule (Fabric's threshold 0). A sub-group that lacks the
  named policy counts as not met.

Evaluation is cheap checks first: signatures are de-duplicated by identity, each identity is resolved (decoded,
validated against its MSP, its roles found) once, and a signature is verified only when its identity already
satisfies the principal in question, and then only once per evaluation.

``parse_signature_rule`` reads the policy language of configtx.yaml (``OR('Org1MSP.admin', 'Org1MSP.peer')``,
``AND(...)``, ``OutOf(2, ...)``) into the same envelope that Fabric's configtxgen writes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from google.protobuf.message import DecodeError

from rumor.wire.pb.common import configtx_pb2, policies_pb2
from rumor.wire.pb.msp import identities_pb2, msp_principal_pb2

__all__ = [
    "IdentityResolver",
    "PolicyError",
    "PolicyTree",
    "ResolvedIdentity",
    "SignedData",
    "implicit_meta_policy",
    "parse_implicit_meta_rule",
    "parse_signature_rule",
    "signature_policy",
]

Role = msp_principal_pb2.MSPRole
ROLE_NAMES = {
    "member": Role.MEMBER,
    "admin": Role.ADMIN,
    "client": Role.CLIENT,
    "peer": Role.PEER,
    "orderer": Role.ORDERER,
}
# A policy nests sub-rules; a config from a peer could nest them deeply to exhaust the stack.
_MAX_RULE_DEPTH = 32
_MAX_RULES = 1024


class PolicyError(ValueError):
    """A policy that does not decode, names an unknown policy, or is not satisfied; the message says which."""


@dataclass(frozen=True)
class SignedData:
    """One signature offered to a policy: ``signature`` by ``identity`` (a serialized identity) over ``data``."""

    data: bytes
    identity: bytes
    signature: bytes


@dataclass(frozen=True)
class ResolvedIdentity:
    """What a policy needs to know of a valid identity: its org, the roles it holds there, its OUs."""

    mspid: str
    roles: frozenset[int]  # MSPRole values; MEMBER for every valid identity
    ous: frozenset[str] = frozenset()


class IdentityResolver(Protocol):
    def resolve(self, identity: bytes) -> ResolvedIdentity | None:
        """The identity's org and roles, or None when it is not a valid identity of a known org."""

    def verify(self, identity: bytes, signature: bytes, data: bytes) -> bool:
        """Whether ``signature`` by ``identity`` over ``data`` is valid."""


# --------------------------------------------------------------------------------------------------
# Evaluation


class _Evaluation:
    """The signatures of one evaluation, de-duplicated by identity, resolved and verified lazily, once each."""

    def __init__(self, signed: Sequence[SignedData], resolver: IdentityResolver) -> None:
        seen: set[bytes] = set()
        self.signed: list[SignedData] = []
        for item in signed:
            if item.identity not in seen:
                seen.add(item.identity)
                self.signed.append(item)
        self._resolver = resolver
        self._resolved: dict[int, ResolvedIdentity | None] = {}
        self._verified: dict[int, bool] = {}

    def resolved(self, index: int) -> ResolvedIdentity | None:
        if index not in self._resolved:
            self._resolved[index] = self._resolver.resolve(self.signed[index].identity)
        return self._resolved[index]

    def verified(self, index: int) -> bool:
        if index not in self._verified:
            item = self.signed[index]
            self._verified[index] = self._resolver.verify(item.identity, item.signature, item.data)
        return self._verified[index]


def _satisfies(principal: msp_principal_pb2.MSPPrincipal, evaluation: _Evaluation, index: int) -> bool:
    kind = principal.principal_classification
    if kind == msp_principal_pb2.MSPPrincipal.IDENTITY:
        wanted = _decode(identities_pb2.SerializedIdentity, principal.principal, "identity principal")
        offered = _decode(identities_pb2.SerializedIdentity, evaluation.signed[index].identity, "identity")
        if (wanted.mspid, wanted.id_bytes) != (offered.mspid, offered.id_bytes):
            return False
        return evaluation.resolved(index) is not None
    resolved = evaluation.resolved(index)
    if resolved is None:
        return False
    if kind == msp_principal_pb2.MSPPrincipal.ROLE:
        role = _decode(msp_principal_pb2.MSPRole, principal.principal, "role principal")
        return role.msp_identifier == resolved.mspid and role.role in resolved.roles
    if kind == msp_principal_pb2.MSPPrincipal.ORGANIZATION_UNIT:
        unit = _decode(msp_principal_pb2.OrganizationUnit, principal.principal, "OU principal")
        return unit.msp_identifier == resolved.mspid and unit.organizational_unit_identifier in resolved.ous
    return False  # ANONYMITY and COMBINED concern Idemix, which rumor does not support


class _SignatureRule:
    def __init__(self, envelope: policies_pb2.SignaturePolicyEnvelope) -> None:
        self.identities = list(envelope.identities)
        count = _count_rules(envelope.rule, 0)
        if count > _MAX_RULES:
            raise PolicyError(f"signature policy has {count} rules, more than {_MAX_RULES}")
        self.rule = envelope.rule
        for index in _signed_by_indices(envelope.rule):
            if not 0 <= index < len(self.identities):
                raise PolicyError(f"signature policy names identity {index} of {len(self.identities)}")

    def met(self, evaluation: _Evaluation) -> bool:
        used = [False] * len(evaluation.signed)
        return self._met(self.rule, evaluation, used)

    def _met(self, rule: policies_pb2.SignaturePolicy, evaluation: _Evaluation, used: list[bool]) -> bool:
        if rule.WhichOneof("Type") == "signed_by":
            principal = self.identities[rule.signed_by]
            for index in range(len(evaluation.signed)):
                if used[index] or not _satisfies(principal, evaluation, index):
                    continue
                if evaluation.verified(index):
                    used[index] = True
                    return True
            return False
        if rule.WhichOneof("Type") == "n_out_of":
            met = 0
            for sub in rule.n_out_of.rules:
                attempt = list(used)
                if self._met(sub, evaluation, attempt):
                    met += 1
                    used[:] = attempt
            return met >= rule.n_out_of.n
        return False


def _count_rules(rule: policies_pb2.SignaturePolicy, depth: int) -> int:
    if depth > _MAX_RULE_DEPTH:
        raise PolicyError(f"signature policy nests deeper than {_MAX_RULE_DEPTH}")
    if rule.WhichOneof("Type") == "n_out_of":
        return 1 + sum(_count_rules(sub, depth + 1) for sub in rule.n_out_of.rules)
    return 1


def _signed_by_indices(rule: policies_pb2.SignaturePolicy) -> Iterable[int]:
    if rule.WhichOneof("Type") == "signed_by":
        yield rule.signed_by
    elif rule.WhichOneof("Type") == "n_out_of":
        for sub in rule.n_out_of.rules:
            yield from _signed_by_indices(sub)


@dataclass(frozen=True)
class _ImplicitMeta:
    sub_policy: str
    rule: int
    group: str


@dataclass
class PolicyTree:
    """Every policy of a configuration by its absolute path (``/Channel/Orderer/BlockValidation``).

    ``groups`` maps each group's path to the paths of its direct sub-groups, which implicit-meta policies need.
    """

    policies: dict[str, _SignatureRule | _ImplicitMeta] = field(default_factory=dict)
    groups: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def from_group(cls, group: configtx_pb2.ConfigGroup, path: str = "/Channel") -> PolicyTree:
        tree = cls()
        tree._add_group(group, path, 0)
        return tree

    def _add_group(self, group: configtx_pb2.ConfigGroup, path: str, depth: int) -> None:
        if depth > _MAX_RULE_DEPTH:
            raise PolicyError(f"{path}: config groups nest deeper than {_MAX_RULE_DEPTH}")
        self.groups[path] = [f"{path}/{name}" for name in sorted(group.groups)]
        for name in sorted(group.policies):
            self.policies[f"{path}/{name}"] = _compile(group.policies[name].policy, f"{path}/{name}", path)
        for name in sorted(group.groups):
            self._add_group(group.groups[name], f"{path}/{name}", depth + 1)

    def __contains__(self, path: str) -> bool:
        return path in self.policies

    def resolve_path(self, name: str, group: str) -> str:
        """The absolute path of policy ``name`` as seen from ``group`` (Fabric's rule: '/' starts an absolute path)."""
        return name if name.startswith("/") else f"{group}/{name}"

    def evaluate(self, path: str, signed: Sequence[SignedData], resolver: IdentityResolver) -> None:
        """Return when the signatures meet the policy at ``path``; PolicyError saying which policy failed otherwise."""
        evaluation = _Evaluation(signed, resolver)
        if path not in self.policies:
            raise PolicyError(f"no policy {path}")
        if not self._met(path, evaluation, 0):
            raise PolicyError(f"policy {path} is not satisfied by {_who(evaluation)}")

    def satisfied(self, path: str, signed: Sequence[SignedData], resolver: IdentityResolver) -> bool:
        try:
            self.evaluate(path, signed, resolver)
        except PolicyError:
            return False
        return True

    def _met(self, path: str, evaluation: _Evaluation, depth: int) -> bool:
        policy = self.policies.get(path)
        if policy is None or depth > _MAX_RULE_DEPTH:
            return False
        if isinstance(policy, _SignatureRule):
            return policy.met(evaluation)
        subgroups = self.groups.get(policy.group, [])
        met = sum(1 for sub in subgroups if self._met(f"{sub}/{policy.sub_policy}", evaluation, depth + 1))
        if not subgroups:
            return True
        if policy.rule == policies_pb2.ImplicitMetaPolicy.ANY:
            return met >= 1
        if policy.rule == policies_pb2.ImplicitMetaPolicy.ALL:
            return met == len(subgroups)
        return met >= len(subgroups) // 2 + 1

    def describe(self, path: str) -> str:
        """A one-line rendering of a policy, for status output and errors."""
        policy = self.policies.get(path)
        if policy is None:
            return "(none)"
        if isinstance(policy, _ImplicitMeta):
            rule = policies_pb2.ImplicitMetaPolicy.Rule.Name(policy.rule)
            return f"{rule} {policy.sub_policy}"
        return _render(policy.rule, policy.identities)


def _who(evaluation: _Evaluation) -> str:
    if not evaluation.signed:
        return "no signature"
    names = []
    for index in range(len(evaluation.signed)):
        resolved = evaluation.resolved(index)
        names.append(resolved.mspid if resolved is not None else "an invalid identity")
    return "signatures of " + ", ".join(names)


def _render(rule: policies_pb2.SignaturePolicy, identities: Sequence[msp_principal_pb2.MSPPrincipal]) -> str:
    if rule.WhichOneof("Type") == "signed_by":
        principal = identities[rule.signed_by]
        if principal.principal_classification == msp_principal_pb2.MSPPrincipal.ROLE:
            role = msp_principal_pb2.MSPRole()
            role.ParseFromString(principal.principal)
            return f"'{role.msp_identifier}.{msp_principal_pb2.MSPRole.MSPRoleType.Name(role.role).lower()}'"
        return "'<principal>'"
    subs = ", ".join(_render(sub, identities) for sub in rule.n_out_of.rules)
    n, count = rule.n_out_of.n, len(rule.n_out_of.rules)
    if n == 1:
        return f"OR({subs})"
    if n == count:
        return f"AND({subs})"
    return f"OutOf({n}, {subs})"


def _decode(cls, data: bytes, what: str):  # type: ignore[no-untyped-def]
    message = cls()
    try:
        message.ParseFromString(data)
    except (DecodeError, ValueError, TypeError) as exc:
        raise PolicyError(f"{what} does not decode: {exc}") from None
    return message


def _compile(policy: policies_pb2.Policy, path: str, group: str) -> _SignatureRule | _ImplicitMeta:
    if policy.type == policies_pb2.Policy.SIGNATURE:
        envelope = _decode(policies_pb2.SignaturePolicyEnvelope, policy.value, f"{path}: signature policy")
        try:
            return _SignatureRule(envelope)
        except PolicyError as exc:
            raise PolicyError(f"{path}: {exc}") from None
    if policy.type == policies_pb2.Policy.IMPLICIT_META:
        meta = _decode(policies_pb2.ImplicitMetaPolicy, policy.value, f"{path}: implicit-meta policy")
        if meta.rule not in policies_pb2.ImplicitMetaPolicy.Rule.values():
            raise PolicyError(f"{path}: implicit-meta rule {meta.rule} is not ANY, ALL or MAJORITY")
        if not meta.sub_policy or "/" in meta.sub_policy:
            raise PolicyError(f"{path}: implicit-meta sub-policy {meta.sub_policy!r} is not a policy name")
        return _ImplicitMeta(meta.sub_policy, meta.rule, group)
    raise PolicyError(f"{path}: policy type {policy.type} is not supported (only Signature and ImplicitMeta)")


# --------------------------------------------------------------------------------------------------
# Writing policies


def signature_policy(envelope: policies_pb2.SignaturePolicyEnvelope) -> policies_pb2.Policy:
    return policies_pb2.Policy(type=policies_pb2.Policy.SIGNATURE, value=envelope.SerializeToString(deterministic=True))


def implicit_meta_policy(rule: str, sub_policy: str) -> policies_pb2.Policy:
    meta = policies_pb2.ImplicitMetaPolicy(sub_policy=sub_policy, rule=policies_pb2.ImplicitMetaPolicy.Rule.Value(rule))
    return policies_pb2.Policy(type=policies_pb2.Policy.IMPLICIT_META, value=meta.SerializeToString(deterministic=True))


def parse_implicit_meta_rule(text: str) -> policies_pb2.Policy:
    """``"ANY Readers"``, ``"MAJORITY Admins"`` ... as configtx.yaml writes them."""
    parts = text.split()
    if len(parts) != 2 or parts[0].upper() not in ("ANY", "ALL", "MAJORITY"):
        raise PolicyError(f"implicit-meta rule {text!r} is not '<ANY|ALL|MAJORITY> <policy name>'")
    return implicit_meta_policy(parts[0].upper(), parts[1])


_TOKEN = re.compile(
    r"\s*(?:(?P<name>[A-Za-z]+)\s*\(|(?P<close>\))|(?P<comma>,)|(?P<int>\d+)|'(?P<sq>[^']*)'|\"(?P<dq>[^\"]*)\")"
)


def parse_signature_rule(text: str) -> policies_pb2.SignaturePolicyEnvelope:
    """A configtx.yaml signature rule (``OR('A.member', AND('B.admin', 'C.peer'))``) as configtxgen encodes it.

    Principals are ``'<MSP ID>.<member|admin|client|peer|orderer>'``; identities are listed in order of first use,
    each once, and every rule refers to them by index.
    """
    tokens = _tokenize(text)
    identities: list[msp_principal_pb2.MSPPrincipal] = []
    index_of: dict[tuple[str, int], int] = {}

    def principal(value: str) -> policies_pb2.SignaturePolicy:
        mspid, _, role_name = value.rpartition(".")
        role = ROLE_NAMES.get(role_name.lower())
        if not mspid or role is None:
            raise PolicyError(f"{value!r} is not '<MSP ID>.<member|admin|client|peer|orderer>'")
        key = (mspid, role)
        if key not in index_of:
            index_of[key] = len(identities)
            identities.append(
                msp_principal_pb2.MSPPrincipal(
                    principal_classification=msp_principal_pb2.MSPPrincipal.ROLE,
                    principal=msp_principal_pb2.MSPRole(msp_identifier=mspid, role=role).SerializeToString(
                        deterministic=True
                    ),
                )
            )
        return policies_pb2.SignaturePolicy(signed_by=index_of[key])

    position = 0

    def expression(depth: int) -> policies_pb2.SignaturePolicy:
        nonlocal position
        if depth > _MAX_RULE_DEPTH:
            raise PolicyError(f"rule {text!r} nests deeper than {_MAX_RULE_DEPTH}")
        if position >= len(tokens):
            raise PolicyError(f"rule {text!r} ends too early")
        kind, value = tokens[position]
        position += 1
        if kind == "str":
            return principal(value)
        if kind != "name":
            raise PolicyError(f"rule {text!r}: unexpected {value!r}")
        operator = value.lower()
        threshold: int | None = None
        if operator == "outof":
            if position >= len(tokens) or tokens[position][0] != "int":
                raise PolicyError(f"rule {text!r}: OutOf needs a count first")
            threshold = int(tokens[position][1])
            position += 1
            _expect("comma")
        elif operator not in ("or", "and"):
            raise PolicyError(f"rule {text!r}: unknown operator {value!r} (OR, AND, OutOf)")
        rules = [expression(depth + 1)]
        while position < len(tokens) and tokens[position][0] == "comma":
            position += 1
            rules.append(expression(depth + 1))
        _expect("close")
        n = 1 if operator == "or" else len(rules) if operator == "and" else threshold or 0
        if not 0 < n <= len(rules) and operator == "outof":
            raise PolicyError(f"rule {text!r}: OutOf({n}) of {len(rules)} rules")
        return policies_pb2.SignaturePolicy(n_out_of=policies_pb2.SignaturePolicy.NOutOf(n=n, rules=rules))

    def _expect(kind: str) -> None:
        nonlocal position
        if position >= len(tokens) or tokens[position][0] != kind:
            raise PolicyError(f"rule {text!r}: expected {'a comma' if kind == 'comma' else ')'}")
        position += 1

    rule = expression(0)
    if position != len(tokens):
        raise PolicyError(f"rule {text!r}: unexpected text after the rule")
    return policies_pb2.SignaturePolicyEnvelope(version=0, rule=rule, identities=identities)


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    position = 0
    stripped = text.rstrip()
    while position < len(stripped):
        match = _TOKEN.match(stripped, position)
        if match is None:
            raise PolicyError(f"rule {text!r}: cannot read {stripped[position:]!r}")
        position = match.end()
        if match.group("name") is not None:
            tokens.append(("name", match.group("name")))
        elif match.group("close") is not None:
            tokens.append(("close", ")"))
        elif match.group("comma") is not None:
            tokens.append(("comma", ","))
        elif match.group("int") is not None:
            tokens.append(("int", match.group("int")))
        else:
            tokens.append(("str", match.group("sq") if match.group("sq") is not None else match.group("dq")))
    return tokens


def policies_by_name(rules: Mapping[str, tuple[str, str]]) -> dict[str, policies_pb2.Policy]:
    """configtx.yaml's ``Policies:`` section ({name: (Type, Rule)}) as Policy messages."""
    out: dict[str, policies_pb2.Policy] = {}
    for name, (kind, rule) in rules.items():
        if kind == "Signature":
            out[name] = signature_policy(parse_signature_rule(rule))
        elif kind == "ImplicitMeta":
            out[name] = parse_implicit_meta_rule(rule)
        else:
            raise PolicyError(f"policy {name}: type {kind!r} is not Signature or ImplicitMeta")
    return out
