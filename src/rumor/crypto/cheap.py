"""A crypto service without public-key math, for tests and the simulator.

It keeps the contract of the real one where the protocol core can tell the
difference: identities are real ``SerializedIdentity`` bytes (id_bytes =
``b"cheap:" + name``), so PKI-IDs are still SHA-256(mspid || id_bytes); a
signature is a truncated HMAC-SHA-256, keyed by the registry's secret, over the
signer's identity and the message, so a tampered message or a signature passed
off as another identity's fails to verify; identities can be revoked or given an
expiry; blocks need the right number, data hash and an orderer's signature.

All peers of one simulation share one ``CheapRegistry`` (the orgs, enrolled
identities, channels' orderer orgs, revocations, expiries); each peer's
``CheapCryptoService`` is just that registry plus its own identity. Nothing here
reads a clock or draws random numbers: expiry is enforced only through the
``now`` callable given to the registry (the simulator's virtual clock).

This is not security: anyone holding the registry can sign as anyone.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable

from rumor.crypto.api import InvalidBlock, InvalidIdentity, InvalidSignature, OrgId, PKIid
from rumor.crypto.blocks import block_signatures, open_block
from rumor.crypto.identity import decode_identity, pki_id_of, serialize_identity

CHEAP_PREFIX = b"cheap:"
SIGNATURE_SIZE = 16


class CheapRegistry:
    """What every cheap crypto service of one network agrees on."""

    def __init__(self, secret: bytes = b"rumor-cheap", now: Callable[[], float] | None = None) -> None:
        self._secret = secret
        self.now = now
        self._orgs: set[str] = set()
        self._enrolled: dict[bytes, str] = {}
        self._revoked: set[bytes] = set()
        self._expirations: dict[bytes, float] = {}
        self._channels: dict[str, frozenset[str]] = {}

    @staticmethod
    def identity_of(mspid: str, name: str) -> bytes:
        """The identity ``name`` of ``mspid`` would have, whether or not it is enrolled."""
        return serialize_identity(mspid, CHEAP_PREFIX + name.encode())

    def add_org(self, mspid: str) -> None:
        self._orgs.add(mspid)

    def enroll(self, mspid: str, name: str) -> bytes:
        """Issue (or re-issue) the identity of ``name`` in ``mspid``; the org is added if new."""
        identity = self.identity_of(mspid, name)
        self._orgs.add(mspid)
        self._enrolled[identity] = mspid
        return identity

    def register_channel(self, channel: str, orderer_mspids: Iterable[str]) -> None:
        self._channels[channel] = frozenset(orderer_mspids)

    def channel_orderers(self, channel: str) -> frozenset[str] | None:
        return self._channels.get(channel)

    def revoke(self, identity: bytes) -> None:
        self._revoked.add(identity)

    def set_expiration(self, identity: bytes, when: float | None) -> None:
        """Make ``identity`` expire at ``when`` (seconds, on the registry's clock); None: never."""
        if when is None:
            self._expirations.pop(identity, None)
        else:
            self._expirations[identity] = when

    def expiration(self, identity: bytes) -> float | None:
        decode_identity(identity)
        return self._expirations.get(identity)

    def validate(self, identity: bytes) -> str:
        """MSP ID of a valid identity; InvalidIdentity saying why otherwise."""
        mspid = self._enrolled.get(identity)
        if mspid is None:
            mspid, _ = decode_identity(identity)
            if mspid not in self._orgs:
                raise InvalidIdentity(f"unknown MSP ID {mspid!r}")
            raise InvalidIdentity(f"identity not issued by {mspid}")
        if identity in self._revoked:
            raise InvalidIdentity("identity revoked")
        expiry = self._expirations.get(identity)
        if expiry is not None and self.now is not None and self.now() >= expiry:
            raise InvalidIdentity(f"identity expired at {expiry}")
        return mspid

    def signature(self, identity: bytes, message: bytes) -> bytes:
        mac = hmac.new(self._secret, len(identity).to_bytes(4, "big"), hashlib.sha256)
        mac.update(identity)
        mac.update(message)
        return mac.digest()[:SIGNATURE_SIZE]

    def check(self, identity: bytes, signature: bytes, message: bytes) -> None:
        if not hmac.compare_digest(self.signature(identity, message), signature):
            raise InvalidSignature("signature does not verify")


class CheapCryptoService:
    """MessageCryptoService and SecurityAdvisor for one peer (or orderer) of a cheap network."""

    def __init__(self, registry: CheapRegistry, identity: bytes) -> None:
        registry.validate(identity)
        self._registry = registry
        self._identity = identity
        self._pki_id = pki_id_of(identity)
        self._channels: dict[str, frozenset[str]] = {}

    @classmethod
    def for_peer(cls, mspid: str, name: str, registry: CheapRegistry) -> CheapCryptoService:
        return cls(registry, registry.enroll(mspid, name))

    @property
    def identity(self) -> bytes:
        return self._identity

    @property
    def pki_id(self) -> PKIid:
        return self._pki_id

    @property
    def registry(self) -> CheapRegistry:
        return self._registry

    def register_channel(self, channel: str, orderer_mspids: Iterable[str]) -> None:
        """Declare a channel's orderer orgs for this peer only (the registry's apply otherwise)."""
        self._channels[channel] = frozenset(orderer_mspids)

    def pki_id_of(self, identity: bytes) -> PKIid:
        return pki_id_of(identity)

    def sign(self, message: bytes) -> bytes:
        return self._registry.signature(self._identity, message)

    def verify(self, identity: bytes, signature: bytes, message: bytes) -> None:
        self._registry.validate(identity)
        self._registry.check(identity, signature, message)

    def validate_identity(self, identity: bytes) -> None:
        self._registry.validate(identity)

    def expiration(self, identity: bytes) -> float | None:
        return self._registry.expiration(identity)

    def org_of(self, identity: bytes) -> OrgId:
        mspid, _ = decode_identity(identity)
        return mspid.encode()

    def name_of(self, identity: bytes) -> str:
        return ""

    def verify_block(self, channel: str, seq_num: int, block: bytes) -> None:
        orderers = self._channels.get(channel)
        if orderers is None:
            orderers = self._registry.channel_orderers(channel)
        if orderers is None:
            raise InvalidBlock(f"unknown channel {channel!r}")
        decoded = open_block(block, seq_num)
        problems: list[str] = []
        for sig in block_signatures(decoded):
            try:
                mspid = self._registry.validate(sig.creator)
                if mspid not in orderers:
                    problems.append(f"signer of {mspid} is not an orderer org of {channel!r}")
                    continue
                self._registry.check(sig.creator, sig.signature, sig.signed_data)
            except (InvalidIdentity, InvalidSignature) as exc:
                problems.append(str(exc))
                continue
            return
        raise InvalidBlock(f"block {seq_num}: no valid orderer signature ({'; '.join(problems) or 'none present'})")
