"""rumor's wire format: Fabric's gossip messages and the helpers around them.

``rumor.wire.pb`` holds the modules generated from ``proto/``; ``rumor.wire.messages``
builds each kind of GossipMessage with its legal tag, signs it into an Envelope
and checks what arrives.
"""

from rumor.wire.messages import (
    REQUIRED_TAG,
    SIGNED_KINDS,
    Envelope,
    GossipMessage,
    InvalidMessage,
    PullMsgType,
    Tag,
    check_tag,
    kind_of,
    open_envelope,
    seal,
    secret_endpoint,
    strip_secret,
    verify_envelope,
    with_secret,
)

__all__ = [
    "REQUIRED_TAG",
    "SIGNED_KINDS",
    "Envelope",
    "GossipMessage",
    "InvalidMessage",
    "PullMsgType",
    "Tag",
    "check_tag",
    "kind_of",
    "open_envelope",
    "seal",
    "secret_endpoint",
    "strip_secret",
    "verify_envelope",
    "with_secret",
]
