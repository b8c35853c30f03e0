"""Certificate exchange: peers pull each other's identities, so that signatures can be checked later.

An alive message carries its sender's identity only during ``publishCertPeriod``
after the sender started; a peer that joins later learns that identity through
this store instead. Each peer signs one ``PeerIdentity{pki_id, cert}`` message
(tag ORG_ONLY) about itself, and the pull engine (IDENTITY_MSG, tag EMPTY,
digest = PKI-ID) spreads these signed messages:

    pulled PeerIdentity item ->  pki_id == SHA-256(mspid || id_bytes) of cert   (mcs.pki_id_of)
                                 cert is a valid identity                         (mcs.validate_identity)
                                 envelope signed by the key of cert itself        (verify_envelope)
                                 identity mapper accepts it (not expired, ...)    (IdentityMapper.put)
                             ->  kept, and offered in later pulls

Because an item must be signed by the identity it describes, a relay can
neither forge nor alter one. What we offer a requester of another org is
limited as Fabric's peers do: identities of peers that have an external
endpoint, and only those of our org or of the requester's org. A requester of
our own org sees everything. When the identity mapper purges an identity
(expired, revoked, unused), its item goes too.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from rumor.config import GossipConfig
from rumor.core.identity import IdentityMapper
from rumor.core.msgstore import MessageStore, SignedMessage, gossip_policy
from rumor.core.pull import Membership, PullEngine
from rumor.core.types import Effect, NetworkMember, NullTracer, ReceivedMessage, Tracer
from rumor.crypto.api import CryptoError, MessageCryptoService, SecurityAdvisor
from rumor.wire import messages as wire
from rumor.wire.pb.gossip import message_pb2 as pb


def _pki_of(item: SignedMessage) -> bytes:
    return item.message.peer_identity.pki_id


class CertStore:
    """Holds signed identity messages and runs the identity pull (sans-IO)."""

    def __init__(
        self,
        *,
        config: GossipConfig,
        identity: bytes,
        mcs: MessageCryptoService,
        advisor: SecurityAdvisor,
        identities: IdentityMapper,
        membership: Membership,
        rng: random.Random,
        tracer: Tracer | None = None,
    ) -> None:
        self._mcs = mcs
        self._advisor = advisor
        self._identities = identities
        self._membership = membership
        self._tracer: Tracer = tracer if tracer is not None else NullTracer()
        self.pki_id = mcs.pki_id_of(identity)
        self.org = advisor.org_of(identity)
        self.rejected = 0
        self._known: tuple[int, tuple[bytes, ...]] | None = None
        self._store: MessageStore[SignedMessage] = MessageStore(
            gossip_policy(0, of=lambda s: s.message), key=_pki_of, scope=_pki_of
        )
        self._orgs: dict[bytes, bytes] = {}
        own = wire.peer_identity(self.pki_id, identity)
        self._store.add(SignedMessage(wire.seal(own, mcs.sign), own), 0.0)
        self._orgs[self.pki_id] = self.org
        self.engine = PullEngine(
            msg_type=wire.IDENTITY_MSG,
            adapter=self,
            rng=rng,
            interval=config.pull_interval,
            peer_num=config.pull_peer_num,
            digest_wait=config.digest_wait_time,
            request_wait=config.request_wait_time,
            response_wait=config.response_wait_time,
            tracer=self._tracer,
        )
        identities.subscribe(self._on_purged)

    def __contains__(self, pki_id: bytes) -> bool:
        return pki_id in self._store

    def __len__(self) -> int:
        return len(self._store)

    def known(self) -> Sequence[bytes]:
        """PKI-IDs whose signed identity we hold (ours included); the same tuple until the store changes."""
        version = self._store.version
        if self._known is None or self._known[0] != version:
            self._known = (version, tuple(_pki_of(item) for item in self._store))
        return self._known[1]

    # --- node interface ---------------------------------------------------------------------------

    def start(self, now: float) -> None:
        self.engine.start(now)

    def stop(self) -> None:
        self.engine.stop()

    def next_deadline(self) -> float | None:
        return self.engine.next_deadline()

    def on_tick(self, now: float) -> list[Effect]:
        return self.engine.on_tick(now)

    def on_message(self, msg: ReceivedMessage, now: float) -> list[Effect]:
        return self.engine.on_message(msg, now)

    # --- pull adapter -----------------------------------------------------------------------------

    def pull_candidates(self) -> Sequence[NetworkMember]:
        return self._membership.alive_members()

    def _disclosable(self, requester: ReceivedMessage) -> tuple[bytes, bool] | None:
        """(requester org, whether it is ours), or None when its identity says nothing."""
        try:
            org = self._advisor.org_of(requester.sender_identity)
        except CryptoError:
            return None
        return org, org == self.org

    def _may_disclose(self, pki_id: bytes, requester_org: bytes) -> bool:
        # Fabric's rule for foreign requesters: never reveal a peer hidden from other orgs (no external
        # endpoint, or unknown to membership), and reveal only our org's peers or the requester's own.
        member = self._membership.lookup(pki_id)
        if member is None or not member.endpoint:
            return False
        return self._orgs.get(pki_id) in (self.org, requester_org)

    def digests_for(self, requester: ReceivedMessage) -> list[bytes]:
        scope = self._disclosable(requester)
        if scope is None:
            return []
        org, ours = scope
        if ours:
            return list(self.known())
        return [pki for pki in self.known() if self._may_disclose(pki, org)]

    def items_for(self, digests: Sequence[bytes], requester: ReceivedMessage) -> list[pb.Envelope]:
        scope = self._disclosable(requester)
        if scope is None:
            return []
        org, ours = scope
        out: list[pb.Envelope] = []
        for digest in digests:
            item = self._store.get(digest)
            if item is not None and (ours or self._may_disclose(digest, org)):
                out.append(item.envelope)
        return out

    def wants(self, digest: bytes) -> bool:
        return digest not in self._store

    def digest_of(self, item: pb.GossipMessage) -> bytes | None:
        return item.peer_identity.pki_id if item.WhichOneof("content") == "peer_identity" else None

    def accept(
        self, envelope: pb.Envelope, item: pb.GossipMessage, source: ReceivedMessage, now: float
    ) -> list[Effect] | None:
        try:
            self.validate(envelope, item, now)
        except CryptoError as exc:
            self.rejected += 1
            self._tracer.event(
                "identity_rejected", now, pki_id=item.peer_identity.pki_id, sender=source.sender, reason=str(exc)
            )
            return None
        if self._store.add(SignedMessage(envelope, item), now):
            self._orgs[item.peer_identity.pki_id] = self._advisor.org_of(item.peer_identity.cert)
            self._tracer.event("identity_learned", now, pki_id=item.peer_identity.pki_id, sender=source.sender)
        return []

    def validate(self, envelope: pb.Envelope, item: pb.GossipMessage, now: float) -> None:
        """Raise CryptoError unless ``item`` is a PeerIdentity signed by the identity it carries.

        On success the identity is in the identity mapper.
        """
        if item.WhichOneof("content") != "peer_identity":
            raise CryptoError("not a peer identity message")
        claimed, cert = item.peer_identity.pki_id, item.peer_identity.cert
        if not cert or self._mcs.pki_id_of(cert) != claimed:
            raise CryptoError("identity does not match its PKI-ID")
        self._mcs.validate_identity(cert)
        if not envelope.signature:
            raise CryptoError("unsigned identity message")
        wire.verify_envelope(envelope, cert, self._mcs)
        self._identities.put(claimed, cert, now)

    def _on_purged(self, pki_id: bytes, identity: bytes, reason: str, now: float) -> None:
        if pki_id != self.pki_id:
            self._store.remove(pki_id)
            self._orgs.pop(pki_id, None)
