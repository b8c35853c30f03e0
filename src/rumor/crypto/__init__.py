"""Identities, signatures, organizations and crypto material for rumor.

``api`` holds the two interfaces the protocol core uses and the error types.
``mcs.X509CryptoService`` is the real implementation (X.509 + ECDSA P-256, built
from a ``SigningIdentity`` and an ``OrgRegistry``); ``cheap.CheapCryptoService``
keeps the same contract without public-key math for tests and the simulator.
``material.generate`` writes Fabric cryptogen-style material; ``blocks`` holds
Fabric's block hashing and orderer signatures.
"""

from rumor.crypto.api import (
    CryptoError,
    InvalidBlock,
    InvalidIdentity,
    InvalidSignature,
    MessageCryptoService,
    OrgId,
    PKIid,
    SecurityAdvisor,
)
from rumor.crypto.blocks import (
    BlockSigner,
    block_data_hash,
    block_header_hash,
    header_bytes,
    new_block,
    sign_block,
)
from rumor.crypto.ca import CertificateAuthority
from rumor.crypto.cheap import CheapCryptoService, CheapRegistry
from rumor.crypto.identity import (
    SigningIdentity,
    decode_identity,
    deserialize_identity,
    load_signing_identity,
    pki_id_of,
    serialize_identity,
)
from rumor.crypto.material import (
    GeneratedMaterial,
    MaterialExistsError,
    NetworkSpec,
    NodeMaterial,
    OrdererOrgSpec,
    OrgMaterial,
    OrgSpec,
    SpecError,
    default_spec,
    generate,
    load_spec,
)
from rumor.crypto.mcs import X509CryptoService
from rumor.crypto.msp import NodeOUs, Org, OrgRegistry, ValidIdentity, load_org
from rumor.crypto.signing import generate_key, load_private_key, sign, verify

__all__ = [
    "BlockSigner",
    "CertificateAuthority",
    "CheapCryptoService",
    "CheapRegistry",
    "CryptoError",
    "GeneratedMaterial",
    "InvalidBlock",
    "InvalidIdentity",
    "InvalidSignature",
    "MaterialExistsError",
    "MessageCryptoService",
    "NetworkSpec",
    "NodeMaterial",
    "NodeOUs",
    "OrdererOrgSpec",
    "Org",
    "OrgId",
    "OrgMaterial",
    "OrgRegistry",
    "OrgSpec",
    "PKIid",
    "SecurityAdvisor",
    "SigningIdentity",
    "SpecError",
    "ValidIdentity",
    "X509CryptoService",
    "block_data_hash",
    "block_header_hash",
    "decode_identity",
    "default_spec",
    "deserialize_identity",
    "generate",
    "generate_key",
    "header_bytes",
    "load_org",
    "load_private_key",
    "load_signing_identity",
    "load_spec",
    "new_block",
    "pki_id_of",
    "serialize_identity",
    "sign",
    "sign_block",
    "verify",
]
