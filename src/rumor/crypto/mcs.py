"""The real crypto service: X.509 identities, ECDSA P-256 signatures, orderer-signed blocks.

``X509CryptoService`` implements both ``MessageCryptoService`` and
``SecurityAdvisor`` on top of the local ``SigningIdentity`` and an
``OrgRegistry``. Validating an identity means parsing a certificate and checking
a chain signature, which costs far more than checking a message signature, and
gossip verifies the same few identities over and over; so validated identities
are cached with their public key and validity period. The cache is keyed by the
identity bytes, bounded, re-checks the validity period on every hit and is
dropped whenever the registry changes (a new org or CRL).

A block is accepted for a channel when it decodes, has the expected number and
data hash, and its orderer signatures pass. For a channel registered with its
configuration (``register_channel_config``), that is Fabric's rule: every
envelope's channel header names this channel (checked first, it is cheap), and
the signatures in metadata SIGNATURES satisfy the channel's
/Channel/Orderer/BlockValidation policy. A channel registered with only its
orderer orgs (``register_channel``, as the simulator does) needs one valid
signature by a member of one of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from rumor.crypto import signing
from rumor.crypto.api import InvalidBlock, InvalidIdentity, InvalidSignature, OrgId, PKIid
from rumor.crypto.blocks import block_signatures, open_block
from rumor.crypto.identity import SigningIdentity, identity_name, pki_id_of
from rumor.crypto.msp import OrgRegistry, ValidIdentity

if TYPE_CHECKING:
    from rumor.channelconfig import ChannelConfig

DEFAULT_CACHE_SIZE = 4096
BLOCK_VALIDATION = "/Channel/Orderer/BlockValidation"


class X509CryptoService:
    def __init__(self, signer: SigningIdentity, registry: OrgRegistry, *, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        self._signer = signer
        self._registry = registry
        self._cache_size = max(1, cache_size)
        self._cache: dict[bytes, ValidIdentity] = {}
        self._cache_generation = registry.generation
        self._channels: dict[str, frozenset[str]] = {}
        self._configs: dict[str, tuple[ChannelConfig, Any]] = {}

    @property
    def identity(self) -> bytes:
        return self._signer.identity

    @property
    def pki_id(self) -> PKIid:
        return self._signer.pki_id

    @property
    def registry(self) -> OrgRegistry:
        return self._registry

    def register_channel(self, channel: str, orderer_mspids: Iterable[str]) -> None:
        """Declare (or redeclare) which orgs' orderers may sign ``channel``'s blocks."""
        self._channels[channel] = frozenset(orderer_mspids)

    def register_channel_config(self, config: ChannelConfig) -> None:
        """Verify ``config.name``'s blocks as a Fabric peer does, under this configuration (replacing any earlier)."""
        from rumor.channelconfig import ChannelResolver

        self._channels[config.name] = frozenset(o.mspid for o in config.orderer_orgs)
        self._configs[config.name] = (config, ChannelResolver(config, self._validated, self.verify))

    def channel_config(self, channel: str) -> ChannelConfig | None:
        entry = self._configs.get(channel)
        return entry[0] if entry is not None else None

    def resolver(self, channel: str) -> Any:
        """The channel's identity resolver for policy evaluation (None for a channel without a configuration)."""
        entry = self._configs.get(channel)
        return entry[1] if entry is not None else None

    def pki_id_of(self, identity: bytes) -> PKIid:
        return pki_id_of(identity)

    def sign(self, message: bytes) -> bytes:
        return self._signer.sign(message)

    def verify(self, identity: bytes, signature: bytes, message: bytes) -> None:
        signing.verify(self._validated(identity).public_key, signature, message)

    def validate_identity(self, identity: bytes) -> None:
        self._validated(identity)

    def expiration(self, identity: bytes) -> float | None:
        cached = self._cache.get(identity)
        if cached is not None:
            return cached.not_after
        return self._registry.expiration(identity)

    def org_of(self, identity: bytes) -> OrgId:
        return self._registry.org_of(identity)

    def name_of(self, identity: bytes) -> str:
        return identity_name(identity)

    def verify_block(self, channel: str, seq_num: int, block: bytes) -> None:
        orderers = self._channels.get(channel)
        if orderers is None:
            raise InvalidBlock(f"unknown channel {channel!r}")
        decoded = open_block(block, seq_num)
        configured = self._configs.get(channel)
        if configured is not None:
            self._verify_fabric_block(channel, decoded, *configured)
            return
        problems: list[str] = []
        for sig in block_signatures(decoded):
            try:
                valid = self._validated(sig.creator)
            except InvalidIdentity as exc:
                problems.append(str(exc))
                continue
            if valid.mspid not in orderers:
                problems.append(f"signer of {valid.mspid} is not an orderer org of {channel!r}")
                continue
            try:
                signing.verify(valid.public_key, sig.signature, sig.signed_data)
            except InvalidSignature as exc:
                problems.append(str(exc))
                continue
            return
        raise InvalidBlock(f"block {seq_num}: no valid orderer signature ({'; '.join(problems) or 'none present'})")

    def _verify_fabric_block(self, channel: str, block: Any, config: ChannelConfig, resolver: Any) -> None:
        from rumor.channelconfig import EnvelopeError, open_envelope
        from rumor.policies import PolicyError, SignedData

        number = block.header.number
        for index, data in enumerate(block.data.data):
            try:
                opened = open_envelope(data, require_creator=False)
            except EnvelopeError as exc:
                raise InvalidBlock(f"block {number}: envelope {index}: {exc}") from None
            if opened.channel_id != channel:
                raise InvalidBlock(
                    f"block {number}: envelope {index} is for channel {opened.channel_id!r}, not {channel!r}"
                )
        signed = [SignedData(s.signed_data, s.creator, s.signature) for s in block_signatures(block)]
        try:
            config.policies.evaluate(BLOCK_VALIDATION, signed, resolver)
        except PolicyError as exc:
            raise InvalidBlock(f"block {number}: {exc}") from None

    def _validated(self, identity: bytes) -> ValidIdentity:
        if self._registry.generation != self._cache_generation:
            self._cache.clear()
            self._cache_generation = self._registry.generation
        cached = self._cache.get(identity)
        if cached is not None:
            if cached.not_before <= self._registry.now() < cached.not_after:
                return cached
            # Out of its validity period now: let the registry say why.
            del self._cache[identity]
        valid = self._registry.validate(identity)
        if len(self._cache) >= self._cache_size:
            # Evict the oldest entry; a flood of fresh valid identities is bounded by the orgs' enrollments anyway.
            del self._cache[next(iter(self._cache))]
        self._cache[identity] = valid
        return valid
