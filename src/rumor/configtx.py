"""Config updates: checking a CONFIG envelope as a Fabric peer checks it, and computing the configuration it yields.

A config block carries ``ConfigEnvelope{config, last_update}``; ``last_update`` is the signed CONFIG_UPDATE that
produced ``config``. The peer accepts the new configuration only when, against the configuration in force:

1. ``config.sequence`` is the current sequence + 1;
2. the update names this channel, and every element of its ``read_set`` exists at the version it names;
3. the *delta* (the ``write_set`` elements whose version differs from the ``read_set``'s, or that the read set
   lacks) is not empty; each existing element in it moves to exactly its version + 1 and each new one is at
   version 0;
4. every changed existing element's ``mod_policy`` (relative names resolved from the element's group; for a group,
   from the group itself) is met by the update's signatures, each ``ConfigSignature`` signing
   ``signature_header || config_update``;
5. applying the delta to the current tree (a changed group lists its members anew: members it no longer lists are
   removed, unchanged ones keep their current content) gives exactly ``config.channel_group``.

The tree is handled as a flat map from keys such as ``[Group] /Channel/Application/Org1MSP`` or
``[Value] /Channel/Application/Org1MSP/AnchorPeers`` to elements, which makes steps 2-5 plain map operations.
Signature checks run last, after every cheap check passed.
"""

from __future__ import annotations

from dataclasses import dataclass

from rumor.channelconfig import (
    ChannelConfig,
    ChannelConfigError,
    EnvelopeError,
    OpenedEnvelope,
    open_envelope,
    parse_config,
)
from rumor.policies import IdentityResolver, PolicyError, SignedData
from rumor.wire.pb.common import common_pb2, configtx_pb2

__all__ = ["ConfigUpdateError", "apply_config_envelope", "signed_data_of_update"]

_MAX_DEPTH = 32
_MAX_ELEMENTS = 100_000


class ConfigUpdateError(ValueError):
    """A config transaction that must not take effect; the message says which check failed."""


@dataclass
class _Element:
    kind: str  # "Group", "Value" or "Policy"
    path: tuple[str, ...]  # the groups above the element, starting with "Channel"
    name: str
    version: int
    mod_policy: str
    message: configtx_pb2.ConfigGroup | configtx_pb2.ConfigValue | configtx_pb2.ConfigPolicy

    @property
    def key(self) -> str:
        return f"[{self.kind}] /" + "/".join((*self.path, self.name))


def _flatten(group: configtx_pb2.ConfigGroup, name: str = "Channel") -> dict[str, _Element]:
    out: dict[str, _Element] = {}

    def walk(group: configtx_pb2.ConfigGroup, path: tuple[str, ...], name: str, depth: int) -> None:
        if depth > _MAX_DEPTH:
            raise ConfigUpdateError(f"config groups nest deeper than {_MAX_DEPTH}")
        element = _Element("Group", path, name, group.version, group.mod_policy, group)
        out[element.key] = element
        inner = (*path, name)
        for key, value in group.values.items():
            item = _Element("Value", inner, key, value.version, value.mod_policy, value)
            out[item.key] = item
        for key, policy in group.policies.items():
            item = _Element("Policy", inner, key, policy.version, policy.mod_policy, policy)
            out[item.key] = item
        if len(out) > _MAX_ELEMENTS:
            raise ConfigUpdateError(f"config has more than {_MAX_ELEMENTS} elements")
        for key, sub in group.groups.items():
            walk(sub, inner, key, depth + 1)

    walk(group, (), name, 0)
    return out


def signed_data_of_update(update_envelope: configtx_pb2.ConfigUpdateEnvelope) -> list[SignedData]:
    signed: list[SignedData] = []
    for signature in update_envelope.signatures:
        header = common_pb2.SignatureHeader()
        try:
            header.ParseFromString(signature.signature_header)
        except Exception:  # a malformed signature header signs nothing
            continue
        signed.append(
            SignedData(signature.signature_header + update_envelope.config_update, header.creator, signature.signature)
        )
    return signed


def _policy_path(element: _Element) -> str:
    """The absolute path of the policy that guards a change of ``element`` (Fabric's policyForItem)."""
    policy = element.mod_policy
    if policy.startswith("/"):
        return policy
    group = element.path if element.kind != "Group" else (*element.path, element.name)
    return "/" + "/".join((*group, policy))


def _rebuild(elements: dict[str, _Element], path: tuple[str, ...], name: str, depth: int) -> configtx_pb2.ConfigGroup:
    if depth > _MAX_DEPTH:
        raise ConfigUpdateError(f"config groups nest deeper than {_MAX_DEPTH}")
    key = "[Group] /" + "/".join((*path, name))
    element = elements.get(key)
    if element is None:
        raise ConfigUpdateError(f"the update lists {key} in a group but never defines it")
    source = element.message
    assert isinstance(source, configtx_pb2.ConfigGroup)
    group = configtx_pb2.ConfigGroup(version=source.version, mod_policy=source.mod_policy)
    inner = (*path, name)
    for value_name in source.values:
        found = elements.get("[Value] /" + "/".join((*inner, value_name)))
        if found is None:
            raise ConfigUpdateError(f"value {'/'.join((*inner, value_name))} is listed but never defined")
        group.values[value_name].CopyFrom(found.message)
    for policy_name in source.policies:
        found = elements.get("[Policy] /" + "/".join((*inner, policy_name)))
        if found is None:
            raise ConfigUpdateError(f"policy {'/'.join((*inner, policy_name))} is listed but never defined")
        group.policies[policy_name].CopyFrom(found.message)
    for sub in source.groups:
        group.groups[sub].CopyFrom(_rebuild(elements, inner, sub, depth + 1))
    return group


def apply_config_envelope(
    current: ChannelConfig, config_envelope: configtx_pb2.ConfigEnvelope, resolver: IdentityResolver
) -> ChannelConfig:
    """The configuration ``config_envelope`` brings, checked against ``current``; ConfigUpdateError when refused."""
    channel = current.name
    new_config = config_envelope.config
    if new_config.sequence != current.sequence + 1:
        raise ConfigUpdateError(
            f"channel {channel}: config sequence {new_config.sequence}, expected {current.sequence + 1}"
        )
    if not config_envelope.HasField("last_update"):
        raise ConfigUpdateError(f"channel {channel}: the config envelope carries no update")
    try:
        opened: OpenedEnvelope = open_envelope(config_envelope.last_update, require_creator=False)
    except EnvelopeError as exc:
        raise ConfigUpdateError(f"channel {channel}: config update: {exc}") from None
    if opened.channel_header.type != common_pb2.CONFIG_UPDATE:
        raise ConfigUpdateError(f"channel {channel}: last_update is not a CONFIG_UPDATE envelope")
    update_envelope = configtx_pb2.ConfigUpdateEnvelope()
    update = configtx_pb2.ConfigUpdate()
    try:
        update_envelope.ParseFromString(opened.payload.data)
        update.ParseFromString(update_envelope.config_update)
    except Exception as exc:  # DecodeError and friends: a malformed update is refused, never raised further
        raise ConfigUpdateError(f"channel {channel}: config update does not decode: {exc}") from None
    if update.channel_id != channel:
        raise ConfigUpdateError(f"channel {channel}: the update is for channel {update.channel_id!r}")

    existing = _flatten(current.config.channel_group)
    read_set = _flatten(update.read_set) if update.HasField("read_set") else {}
    write_set = _flatten(update.write_set) if update.HasField("write_set") else {}
    for key, element in read_set.items():
        have = existing.get(key)
        if have is None:
            raise ConfigUpdateError(f"channel {channel}: the update reads {key}, which does not exist")
        if have.version != element.version:
            raise ConfigUpdateError(
                f"channel {channel}: the update reads {key} at version {element.version}, it is at {have.version}"
            )
    delta = {
        key: element
        for key, element in write_set.items()
        if key not in read_set or read_set[key].version != element.version
    }
    if not delta:
        raise ConfigUpdateError(f"channel {channel}: the update changes nothing")
    guarded: list[tuple[str, str]] = []
    for key, element in sorted(delta.items()):
        if not element.mod_policy:
            raise ConfigUpdateError(f"channel {channel}: {key} has an empty mod_policy")
        have = existing.get(key)
        if have is None:
            if element.version != 0:
                raise ConfigUpdateError(f"channel {channel}: new element {key} at version {element.version}, not 0")
            continue
        if element.version != have.version + 1:
            raise ConfigUpdateError(
                f"channel {channel}: {key} set to version {element.version}, but it is at {have.version}"
            )
        guarded.append((key, _policy_path(have)))

    merged = dict(existing)
    merged.update(delta)
    result = _rebuild(merged, (), "Channel", 0)
    if result != new_config.channel_group:
        raise ConfigUpdateError(f"channel {channel}: the update does not produce the configuration in the block")

    signed = signed_data_of_update(update_envelope)
    for key, policy_path in guarded:
        try:
            current.policies.evaluate(policy_path, signed, resolver)
        except PolicyError as exc:
            raise ConfigUpdateError(f"channel {channel}: changing {key} needs {policy_path}: {exc}") from None
    try:
        return parse_config(new_config, channel)
    except ChannelConfigError as exc:
        raise ConfigUpdateError(f"channel {channel}: the new configuration is unusable: {exc}") from None
