"""The two small interfaces through which the rest of rumor uses cryptography.

The protocol core never parses a certificate: it asks a ``MessageCryptoService``
to sign, verify and validate, and a ``SecurityAdvisor`` which organization an
identity belongs to (Fabric's gossip is built the same way). rumor ships a real
implementation backed by X.509 and ECDSA P-256 (``rumor.crypto.mcs``) and a cheap
one for tests and the simulator (``rumor.crypto.cheap``), which keeps the same
contract without the cost of public-key operations.

Identities are always handled as the bytes of a serialized
``msp.SerializedIdentity``; a PKI-ID is SHA-256(mspid || id_bytes).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

PKIid = bytes
"""SHA-256 of (mspid || id_bytes) of a peer's serialized identity: 32 bytes."""

OrgId = bytes
"""An organization's MSP ID, as bytes (Fabric's api.OrgIdentityType)."""


class CryptoError(Exception):
    """Base of every error raised by rumor.crypto; the message says what failed."""


class InvalidSignature(CryptoError):
    """A signature that does not verify: wrong key, tampered data, high-S or malformed DER."""


class InvalidIdentity(CryptoError):
    """An identity that is malformed, issued by no known CA, expired, not yet valid or revoked."""


class InvalidBlock(CryptoError):
    """A block whose number, data hash or orderer signature does not check out."""


@runtime_checkable
class MessageCryptoService(Protocol):
    """Signing and verification as gossip needs them.

    Every method is synchronous and cheap enough to be called from the protocol
    core; none performs I/O beyond what the implementation loaded at construction.
    """

    def pki_id_of(self, identity: bytes) -> PKIid:
        """PKI-ID of a serialized identity. Raises InvalidIdentity if it does not decode."""
        ...

    def sign(self, message: bytes) -> bytes:
        """Signature of this peer over ``message`` (ECDSA over SHA-256, DER, low-S)."""
        ...

    def verify(self, identity: bytes, signature: bytes, message: bytes) -> None:
        """Raise InvalidSignature unless ``signature`` over ``message`` was made by ``identity``'s key.

        Raises InvalidIdentity when the identity itself is not valid.
        """
        ...

    def verify_block(self, channel: str, seq_num: int, block: bytes) -> None:
        """Raise InvalidBlock unless the serialized ``common.Block`` has number ``seq_num``,
        a correct data hash, and a valid signature of an orderer of ``channel``."""
        ...

    def validate_identity(self, identity: bytes) -> None:
        """Raise InvalidIdentity unless the identity was issued by a known org's CA,
        is inside its validity period and is not revoked."""
        ...

    def expiration(self, identity: bytes) -> float | None:
        """Expiry of the identity as seconds since the Unix epoch (None: never expires)."""
        ...


@runtime_checkable
class SecurityAdvisor(Protocol):
    """Maps identities to organizations."""

    def org_of(self, identity: bytes) -> OrgId:
        """MSP ID of the organization that issued the serialized identity.

        Raises InvalidIdentity if the identity does not decode.
        """
        ...

    def name_of(self, identity: bytes) -> str:
        """A name for log lines (an X.509 identity's common name), "" when there is none. Never raises."""
        ...
