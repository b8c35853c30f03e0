"""A channel described in YAML: Fabric's configtx.yaml (a profile of it), read into a channel configuration.

``rumor channel create --config configtx.yaml --profile MyChannel --channel mychannel`` reads the same file
configtxgen reads, so a Fabric network's channel definition works unchanged, and writes a genesis block a Fabric
v2.2 peer joins. What is read, per profile (YAML anchors and ``<<`` merges resolve as usual)::

    Consortium: SampleConsortium                    # optional, written as /Channel/Consortium
    Policies:   {Readers: {Type: ImplicitMeta, Rule: "ANY Readers"}, ...}        # /Channel
    Capabilities: {V2_0: true}
    Orderer:
      OrdererType: solo | etcd | etcdraft           # rumor's orderer cuts "solo" and "etcd" channels
      BatchTimeout: 2s
      BatchSize: {MaxMessageCount: 10, AbsoluteMaxBytes: 99 MB, PreferredMaxBytes: 512 KB}
      EtcdRaft: {Consenters: [{Host, Port, ClientTLSCert, ServerTLSCert}], Options: {...}}   # etcdraft only
      Addresses: [host:port]                        # optional: the channel-level OrdererAddresses
      Organizations: [<org>]   Policies: {...}   Capabilities: {...}
    Application:
      Organizations: [<org>]   Policies: {...}   Capabilities: {...}

    <org>: {Name, ID (the MSP ID), MSPDir, Policies, OrdererEndpoints (orderer orgs), AnchorPeers: [{Host, Port}]}

Relative paths (MSPDir, TLS certificates) are relative to the YAML file, as configtxgen takes them. Keys rumor does
not use (ACLs, Kafka, a profile's Consortiums) are ignored, as Fabric peers ignore them; a misspelled key of the
sections above is an error. Sizes take configtxgen's units (``KB``, ``MB``, ``GB``: powers of 1024).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from rumor import channelconfig as cc
from rumor.policies import PolicyError, policies_by_name
from rumor.wire.pb.etcdraft import etcdraft_pb2

__all__ = ["ChannelSpecError", "load_profile"]

_SIZE = re.compile(r"^\s*(\d+)\s*(KB|MB|GB)?\s*$", re.IGNORECASE)
_UNITS = {None: 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}
# configtxgen's etcdraft defaults, written when a profile's EtcdRaft.Options leaves them out
_RAFT_DEFAULTS = {
    "TickInterval": "500ms",
    "ElectionTick": 10,
    "HeartbeatTick": 1,
    "MaxInflightBlocks": 5,
    "SnapshotIntervalSize": 16 * 1024 * 1024,
}


class ChannelSpecError(ValueError):
    """A channel description that cannot be used; the message names the file and the key."""


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ChannelSpecError(f"{where}: expected a mapping")
    return value


def _size(value: object, where: str) -> int:
    if isinstance(value, int):
        return value
    match = _SIZE.match(str(value))
    if match is None:
        raise ChannelSpecError(f"{where}: {value!r} is not a size such as 512 KB or 99 MB")
    return int(match.group(1)) * _UNITS[match.group(2).upper() if match.group(2) else None]


def _policies(section: object, where: str) -> dict[str, Any]:
    rules: dict[str, tuple[str, str]] = {}
    for name, body in _mapping(section, where).items():
        body = _mapping(body, f"{where}.{name}")
        if "Type" not in body or "Rule" not in body:
            raise ChannelSpecError(f"{where}.{name}: a policy needs Type and Rule")
        rules[str(name)] = (str(body["Type"]), str(body["Rule"]))
    try:
        return policies_by_name(rules)
    except PolicyError as exc:
        raise ChannelSpecError(f"{where}: {exc}") from None


def _implicit_rules(section: object, where: str) -> dict[str, str] | None:
    """A group-level Policies section, which rumor's builder takes as ImplicitMeta rules by name."""
    if section is None:
        return None
    out: dict[str, str] = {}
    for name, body in _mapping(section, where).items():
        body = _mapping(body, f"{where}.{name}")
        if body.get("Type") != "ImplicitMeta":
            raise ChannelSpecError(f"{where}.{name}: group policies must be ImplicitMeta (got {body.get('Type')!r})")
        out[str(name)] = str(body.get("Rule", ""))
    return out


def _capabilities(section: object, where: str) -> frozenset[str]:
    return frozenset(str(k) for k, v in _mapping(section, where).items() if v)


def _org(entry: object, base: Path, where: str, *, orderer: bool) -> cc.OrgConfig:
    entry = _mapping(entry, where)
    mspid = str(entry.get("ID") or entry.get("Name") or "")
    if not mspid:
        raise ChannelSpecError(f"{where}: an organization needs an ID (its MSP ID)")
    if "MSPDir" not in entry:
        raise ChannelSpecError(f"{where} ({mspid}): no MSPDir")
    msp_dir = base / str(entry["MSPDir"])
    policies = _policies(entry["Policies"], f"{where}.Policies") if entry.get("Policies") else None
    try:
        if orderer:
            endpoints = [str(e) for e in entry.get("OrdererEndpoints") or []]
            return cc.orderer_org_config(mspid, msp_dir, endpoints, policies=policies)
        anchors = [
            f"{_mapping(a, f'{where}.AnchorPeers')['Host']}:{_mapping(a, f'{where}.AnchorPeers')['Port']}"
            for a in entry.get("AnchorPeers") or []
        ]
        return cc.org_config(mspid, msp_dir, anchors, policies=policies)
    except cc.ChannelConfigError as exc:
        raise ChannelSpecError(f"{where} ({mspid}): {exc}") from None
    except KeyError as exc:
        raise ChannelSpecError(f"{where} ({mspid}): AnchorPeers entries need Host and Port ({exc})") from None


def _raft_metadata(section: object, base: Path, where: str) -> bytes:
    section = _mapping(section, where)
    metadata = etcdraft_pb2.ConfigMetadata()
    for i, consenter in enumerate(section.get("Consenters") or []):
        consenter = _mapping(consenter, f"{where}.Consenters[{i}]")
        try:
            metadata.consenters.add(
                host=str(consenter["Host"]),
                port=int(consenter["Port"]),
                client_tls_cert=(base / str(consenter["ClientTLSCert"])).read_bytes(),
                server_tls_cert=(base / str(consenter["ServerTLSCert"])).read_bytes(),
            )
        except KeyError as exc:
            raise ChannelSpecError(f"{where}.Consenters[{i}]: missing {exc}") from None
        except OSError as exc:
            raise ChannelSpecError(f"{where}.Consenters[{i}]: {exc.filename}: {exc.strerror}") from None
    options = {**_RAFT_DEFAULTS, **_mapping(section.get("Options"), f"{where}.Options")}
    metadata.options.tick_interval = str(options["TickInterval"])
    metadata.options.election_tick = int(options["ElectionTick"])
    metadata.options.heartbeat_tick = int(options["HeartbeatTick"])
    metadata.options.max_inflight_blocks = int(options["MaxInflightBlocks"])
    metadata.options.snapshot_interval_size = _size(options["SnapshotIntervalSize"], f"{where}.Options")
    return metadata.SerializeToString(deterministic=True)


def load_profile(
    path: Path | str, profile: str, channel: str, *, orderer_profile: str | None = None
) -> cc.ChannelConfig:
    """Channel ``channel`` as profile ``profile`` of the configtx.yaml at ``path`` describes it.

    An application-channel profile of Fabric v2.2 often has no Orderer section: the ordering service copies it from
    its system channel. ``orderer_profile`` names the profile whose Orderer section to use then (configtx.yaml's
    top-level ``Orderer`` is the fallback, if it lists organizations).
    """
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ChannelSpecError(f"{path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ChannelSpecError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    profiles = _mapping(_mapping(document, str(path)).get("Profiles"), f"{path}: Profiles")
    if profile not in profiles:
        raise ChannelSpecError(f"{path}: no profile {profile!r} (profiles: {', '.join(sorted(profiles)) or 'none'})")
    spec = _mapping(profiles[profile], f"{path}: Profiles.{profile}")
    where = f"{path}: Profiles.{profile}"
    base = path.parent
    orderer = _mapping(spec.get("Orderer"), f"{where}.Orderer")
    if orderer_profile is not None:
        if orderer_profile not in profiles:
            raise ChannelSpecError(f"{path}: no profile {orderer_profile!r} for the Orderer section")
        orderer = _mapping(_mapping(profiles[orderer_profile], orderer_profile).get("Orderer"), orderer_profile)
        where_orderer = f"{path}: Profiles.{orderer_profile}"
    elif not orderer:
        orderer = _mapping(_mapping(document, str(path)).get("Orderer"), f"{path}: Orderer")
        where_orderer = f"{path}"
    else:
        where_orderer = where
    application = _mapping(spec.get("Application"), f"{where}.Application")
    if not orderer.get("Organizations"):
        raise ChannelSpecError(
            f"{where}: no Orderer section with Organizations; name the profile whose Orderer section the ordering "
            "service uses (--orderer-profile, e.g. the system channel's)"
        )
    if not application:
        raise ChannelSpecError(f"{where}: no Application section (a system-channel profile cannot be joined by peers)")
    orderer_orgs = [
        _org(o, base, f"{where_orderer}.Orderer.Organizations[{i}]", orderer=True)
        for i, o in enumerate(orderer.get("Organizations") or [])
    ]
    orgs = [
        _org(o, base, f"{where}.Application.Organizations[{i}]", orderer=False)
        for i, o in enumerate(application.get("Organizations") or [])
    ]
    size = _mapping(orderer.get("BatchSize"), f"{where}.Orderer.BatchSize")
    try:
        timeout = cc.parse_duration(str(orderer.get("BatchTimeout", "2s")))
    except cc.ChannelConfigError as exc:
        raise ChannelSpecError(f"{where}.Orderer.BatchTimeout: {exc}") from None
    batch = cc.BatchSettings(
        max_message_count=int(size.get("MaxMessageCount", cc.DEFAULT_MAX_MESSAGE_COUNT)),
        absolute_max_bytes=_size(size.get("AbsoluteMaxBytes", cc.DEFAULT_ABSOLUTE_MAX_BYTES), f"{where}.BatchSize"),
        preferred_max_bytes=_size(size.get("PreferredMaxBytes", cc.DEFAULT_PREFERRED_MAX_BYTES), f"{where}.BatchSize"),
        batch_timeout=timeout,
    )
    consensus = str(orderer.get("OrdererType", "solo"))
    metadata = b""
    if consensus == "etcdraft":
        metadata = _raft_metadata(orderer.get("EtcdRaft"), base, f"{where}.Orderer.EtcdRaft")
    try:
        return cc.channel_config(
            channel,
            orgs,
            orderer_orgs,
            batch,
            consensus_type=consensus,
            consensus_metadata=metadata,
            capabilities=cc.Capabilities(
                channel=_capabilities(spec.get("Capabilities"), f"{where}.Capabilities"),
                orderer=_capabilities(orderer.get("Capabilities"), f"{where}.Orderer.Capabilities"),
                application=_capabilities(application.get("Capabilities"), f"{where}.Application.Capabilities"),
            ),
            channel_policies=_implicit_rules(spec.get("Policies"), f"{where}.Policies"),
            orderer_policies=_implicit_rules(orderer.get("Policies"), f"{where}.Orderer.Policies"),
            application_policies=_implicit_rules(application.get("Policies"), f"{where}.Application.Policies"),
            consortium=str(spec.get("Consortium") or ""),
            orderer_addresses=[str(a) for a in orderer.get("Addresses") or []],
        )
    except cc.ChannelConfigError as exc:
        raise ChannelSpecError(f"{where}: {exc}") from None
