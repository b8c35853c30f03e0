"""Discovery: which peers exist and which of them are alive (Fabric's gossip membership), sans-IO.

    every aliveTimeInterval   seq += 1; sign AliveMessage{me, PeerTime(inc_num = start time in ns, seq),
                              identity while publishCertPeriod lasts} + SecretEnvelope{internal endpoint};
                              send it to propagatePeerNum random alive peers
    on AliveMessage(X, t)     ignore X == me, and t <= the newest (inc_num, seq_num) known for X; verify the
                              signature with X's identity (remembered, or carried and checked by the identity
                              mapper); new X or dead X -> alive (peer_alive); forward to propagatePeerNum peers;
                              a forged one counts against its sender: maxForgedPerResponse of them within
                              penaltyDuration -> the sender is ignored and disconnected for penaltyDuration
    every timeout / 10        alive X unheard for aliveExpirationTimeout -> dead (peer_dead), Disconnect;
                              dead X unheard for msgExpirationFactor x timeout -> forgotten (peer_forgotten),
                              unless X is a bootstrap or anchor peer; a forgotten X comes back only with a newer
                              alive message than the last one known
    every reconnectInterval   Probe each dead X; when X answers, send it a MembershipRequest
    every pullInterval        MembershipRequest{my alive message} to pullPeerNum random alive peers
    on MembershipRequest      its self_information must be the alive message of the connection's proven PKI-ID
                              (else spoofed: no reply); reply MembershipResponse{alive, dead}, filtered for the
                              requester by the disclosure policy; the response echoes the request's nonce
    on MembershipResponse     only one answering our request to that very peer (its nonce), of at most
                              maxMembershipEntries entries; every envelope is handled as an alive message, dead
                              ones only for unknown peers; maxForgedPerResponse forged ones end the response and
                              penalize its sender
    start                     Handshake each bootstrap peer and each peer of the peer store; on success (bootstrap
                              peers: same org only) send a MembershipRequest; redo every reconnectInterval until
                              a response comes, up to maxConnectionAttempts. Anchor peers (channel config) alike.

Disclosure policy (what this peer may tell peer T about peer X):
    X's alive message reaches T only if org(X) == org(T), or both X and T have an external endpoint;
    its SecretEnvelope (internal endpoint) is stripped unless T is of our own org.
    Forwarding a foreign X's message goes only to peers of our org or of X's org.

The connection layer reports peers it lost (``on_connection_lost``); an alive peer is then presumed dead at
once, as Fabric does with comm's "presumed dead" notices. A peer whose alive messages we cannot check (its
identity unknown, its certificate no longer carried) is dialed once per reconnect interval so that the
handshake proves its identity.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from rumor.config import GossipConfig
from rumor.core.identity import IdentityError, IdentityMapper
from rumor.core.peerstore import PeerStore, PeerStoreError, StoredPeer
from rumor.core.types import (
    Disconnect,
    Effect,
    Handshake,
    HandshakeResult,
    NetworkMember,
    NullTracer,
    PKIid,
    Probe,
    ReceivedMessage,
    RemotePeer,
    Send,
    Tracer,
)
from rumor.crypto.api import InvalidIdentity, InvalidSignature, MessageCryptoService, SecurityAdvisor
from rumor.wire import messages as wire
from rumor.wire.pb.gossip import message_pb2 as pb

log = logging.getLogger("rumor.discovery")

STORE_LOG_INTERVAL = 60.0
"""Seconds between two log lines about a peer store that keeps failing (a full disk fails every save)."""

DISCOVERY_KINDS = frozenset({"alive_msg", "mem_req", "mem_res"})


def _short(pki_id: bytes) -> str:
    return pki_id.hex()[:16]


def may_disclose(subject_org: bytes, subject_endpoint: str, target_org: bytes, target_endpoint: str) -> bool:
    """Whether a peer (``subject``) may be revealed to another (``target``).

    Within an org everything is shared; across orgs only peers that chose to be reachable from outside
    (an external endpoint) are revealed, and only to peers that did the same.
    """
    return subject_org == target_org or bool(subject_endpoint and target_endpoint)


_CachedResponse = tuple[tuple[int, int], pb.MembershipResponse, dict[bytes, tuple[bool, int]]]
"""(versions it was built at, the response, where each listed member sits: (alive?, index))."""


@dataclass
class DiscoveryStats:
    """Counters of what discovery saw and did."""

    alive_created: int = 0
    alive_accepted: int = 0
    alive_forwarded: int = 0
    alive_stale: int = 0
    alive_forged: int = 0
    alive_rejected: int = 0
    alive_unknown_identity: int = 0
    own_alive_ignored: int = 0
    malformed: int = 0
    requests_sent: int = 0
    requests_answered: int = 0
    requests_refused: int = 0
    spoofed_requests: int = 0
    responses_received: int = 0
    responses_unsolicited: int = 0
    responses_oversized: int = 0
    responses_cut_short: int = 0
    penalized_messages: int = 0
    identify_throttled: int = 0
    bootstrap_refused: int = 0
    senders_rejected: int = 0
    peers_dead: int = 0
    peers_revived: int = 0
    peers_forgotten: int = 0


@dataclass(slots=True)
class _Member:
    pki_id: PKIid
    org: bytes
    envelope: pb.Envelope  # newest verified alive envelope; keeps its secret only for peers of our org
    inc_num: int
    seq_num: int
    endpoint: str
    internal_endpoint: str
    metadata: bytes
    last_seen: float
    alive: bool
    view: NetworkMember | None = None  # network_member(), cached until a field it shows changes

    @property
    def ts(self) -> tuple[int, int]:
        return (self.inc_num, self.seq_num)

    @property
    def preferred_endpoint(self) -> str:
        return self.internal_endpoint or self.endpoint

    def remote(self) -> RemotePeer:
        return RemotePeer(self.pki_id, self.preferred_endpoint)

    def network_member(self) -> NetworkMember:
        view = self.view
        if view is None:
            view = self.view = NetworkMember(
                pki_id=self.pki_id,
                endpoint=self.endpoint,
                internal_endpoint=self.internal_endpoint,
                metadata=self.metadata,
                org=self.org,
            )
        return view


@dataclass(slots=True)
class _Dial:
    """A peer known only by its endpoint (bootstrap, anchor, stored, or one whose identity we need)."""

    endpoint: str
    bootstrap: bool = False
    anchor: bool = False
    max_attempts: int = 1
    attempts: int = 0
    state: str = "due"  # due -> handshaking -> requested -> done; or refused / given_up
    next_at: float = 0.0
    nonce: int = 0
    pki_id: PKIid = b""

    @property
    def kind(self) -> str:
        return "bootstrap" if self.bootstrap else "anchor" if self.anchor else "known"


_PENDING_DIAL = frozenset({"due", "handshaking", "requested"})

FIRST_RETRY = 0.5
"""Seconds before the first retry of an unreachable bootstrap or anchor peer; doubled at each failure up to
reconnectInterval."""

# Outcome of handling one alive envelope.
_FRESH, _STALE, _IGNORED, _REJECTED = "fresh", "stale", "ignored", "rejected"


class Discovery:
    """Membership of one peer: a sans-IO state machine driven through the "node" interface.

    ``inc_num`` is the peer's start time in nanoseconds (any number larger than at its previous start);
    ``rng`` is the only source of randomness. ``identities`` may be shared with the rest of the peer
    (the certificate store fills it too); one is made when not given. ``peer_store`` remembers the
    members across restarts. ``internal_endpoint`` overrides ``config.endpoint`` (the shell passes
    peer.address when that is empty).
    """

    def __init__(
        self,
        config: GossipConfig,
        identity: bytes,
        mcs: MessageCryptoService,
        advisor: SecurityAdvisor,
        *,
        inc_num: int,
        rng: random.Random,
        identities: IdentityMapper | None = None,
        peer_store: PeerStore | None = None,
        tracer: Tracer | None = None,
        internal_endpoint: str | None = None,
        metadata: bytes = b"",
        persist_interval: float = 5.0,
    ) -> None:
        self.config = config
        self.identity = identity
        self._mcs = mcs
        self._advisor = advisor
        self._rng = rng
        self._inc_num = inc_num
        self._seq = 0
        self.identities = identities if identities is not None else IdentityMapper(mcs, identity)
        self.pki_id: PKIid = mcs.pki_id_of(identity)
        self.org: bytes = advisor.org_of(identity)
        self._store = peer_store
        self.tracer: Tracer = tracer if tracer is not None else NullTracer()
        self._internal = config.endpoint if internal_endpoint is None else internal_endpoint
        self._external = config.external_endpoint
        self._metadata = metadata
        self._persist_interval = persist_interval
        self.stats = DiscoveryStats()

        # Insertion-ordered: every choice below walks these in a reproducible order.
        self._members: dict[PKIid, _Member] = {}
        # _members again as a list (order: arrival, a forgotten member's slot taken by the last one), so that
        # a random member can be drawn in O(1); and the alive members as NetworkMembers, rebuilt when
        # ``members_version`` moves (see _changed).
        self._member_list: list[_Member] = []
        self._member_pos: dict[PKIid, int] = {}
        self.members_version = 0
        # Moves with members_version and also when a member's alive message is replaced by a newer one.
        self._envelopes_version = 0
        self._responses: dict[
            tuple[bytes, bool], tuple[object, pb.MembershipResponse, dict[PKIid, tuple[bool, int]]]
        ] = {}
        self._views_version = -1
        self._alive_view: tuple[NetworkMember, ...] = ()
        # Payload of each held alive envelope -> its peer: a repeat of it is stale without decoding it.
        self._held_payloads: dict[bytes, PKIid] = {}
        self._forgotten: dict[PKIid, tuple[int, int, float]] = {}
        self._dials: dict[str, _Dial] = {}
        # Membership requests we sent and await an answer to: peer -> (nonce, until). Only those get read.
        self._asked: dict[PKIid, tuple[int, float]] = {}
        # Peers that sent forged membership: ignored until the time given.
        self._penalized: dict[PKIid, float] = {}
        # Forged alive messages each peer sent us directly: (count, since when), over penaltyDuration.
        self._forged_by: dict[PKIid, tuple[int, float]] = {}
        self._identify_tokens = float(config.identify_dials)
        self._identify_refilled = 0.0
        self._warned: dict[tuple[str, PKIid], float] = {}
        self._identify_tried: dict[PKIid, float] = {}
        self._protected: set[PKIid] = set()
        self._anchors: set[str] = set()
        self._bootstrap = tuple(dict.fromkeys(ep for ep in config.bootstrap if not self._is_own_endpoint(ep)))

        self._started_at: float | None = None
        self._stopped = False
        self._clock = 0.0
        self._next_alive = self._next_check = self._next_pull = self._next_reconnect = 0.0
        self._outbox: list[Effect] = []
        self._own_alive: tuple[pb.Envelope, tuple[str, bytes, bool]] | None = None
        self._dirty = False
        self._last_save = float("-inf")
        self._store_logged_at = float("-inf")
        self.identities.subscribe(self._on_identity_purged)

    # --- configuration and queries --------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._started_at is not None and not self._stopped

    @property
    def endpoint(self) -> str:
        """The external endpoint this peer announces (empty: unknown outside its org)."""
        return self._external

    @property
    def internal_endpoint(self) -> str:
        return self._internal

    @property
    def metadata(self) -> bytes:
        return self._metadata

    def update_metadata(self, metadata: bytes) -> None:
        """Announce ``metadata`` from the next alive message on."""
        self._metadata = metadata

    def update_endpoint(self, endpoint: str) -> None:
        """Announce ``endpoint`` as the external endpoint from the next alive message on."""
        self._external = endpoint

    def add_anchor_peers(self, endpoints: Iterable[str]) -> None:
        """Dial the anchor peers of a channel (any org) and never forget them; dials start at the next tick."""
        for endpoint in endpoints:
            if not endpoint or self._is_own_endpoint(endpoint):
                continue
            self._anchors.add(endpoint)
            dial = self._dials.get(endpoint)
            if dial is None:
                self._add_dial(endpoint, anchor=True)
            elif not dial.anchor:
                dial.anchor = True
                if dial.state in ("refused", "given_up"):
                    dial.state, dial.attempts, dial.next_at = "due", 0, self._clock
                    dial.max_attempts = self.config.max_connection_attempts

    def self_member(self) -> NetworkMember:
        return NetworkMember(
            pki_id=self.pki_id,
            endpoint=self._external,
            internal_endpoint=self._internal,
            metadata=self._metadata,
            org=self.org,
        )

    def lookup(self, pki_id: PKIid) -> NetworkMember | None:
        """The member with ``pki_id`` (alive or dead), this peer itself, or None."""
        if pki_id == self.pki_id:
            return self.self_member()
        member = self._members.get(pki_id)
        return None if member is None else member.network_member()

    def expect_membership_response(self, pki_id: PKIid, nonce: int, now: float) -> None:
        """Accept one membership response from ``pki_id`` under ``nonce`` until reconnectInterval from now, as
        if we had asked it: for a harness that hands a peer such a response (the simulator's warm start). Peers
        never call it: their requests register themselves."""
        self._asked[pki_id] = (nonce, now + self.config.reconnect_interval)

    def self_alive(self, now: float) -> pb.Envelope:
        """Our newest signed alive message, as membership requests and responses carry it (started only)."""
        return self._self_alive(now)

    def alive_members(self) -> list[NetworkMember]:
        return list(self.alive_view())

    def alive_view(self) -> tuple[NetworkMember, ...]:
        """The alive members, as ``alive_members()`` but shared (the same tuple until membership changes)."""
        self._refresh_views()
        return self._alive_view

    def alive_count(self) -> int:
        """How many peers are alive."""
        return len(self.alive_view())

    def _changed(self) -> None:
        """A member appeared, vanished, died, revived, or changed what its NetworkMember shows."""
        self.members_version += 1
        self._envelopes_version += 1

    def _refresh_views(self) -> None:
        if self._views_version == self.members_version:
            return
        self._alive_view = tuple(m.network_member() for m in self._members.values() if m.alive)
        self._views_version = self.members_version

    def _add_member(self, member: _Member) -> None:
        self._members[member.pki_id] = member
        self._member_pos[member.pki_id] = len(self._member_list)
        self._member_list.append(member)
        self._changed()

    def _remove_member(self, member: _Member) -> None:
        del self._members[member.pki_id]
        pos = self._member_pos.pop(member.pki_id)
        last = self._member_list.pop()
        if last is not member:
            self._member_list[pos] = last
            self._member_pos[last.pki_id] = pos
        self._changed()

    def dead_members(self) -> list[NetworkMember]:
        return [m.network_member() for m in self._members.values() if not m.alive]

    def is_alive(self, pki_id: PKIid) -> bool:
        member = self._members.get(pki_id)
        return member is not None and member.alive

    def revalidate_identities(self, now: float) -> list[Effect]:
        """Check every known identity again (after a revocation); cut off the peers that fail."""
        self._clock = now
        self.identities.revalidate(now)
        return self._drain([])

    # --- the node interface ---------------------------------------------------------------------

    def start(self, now: float) -> list[Effect]:
        self._started_at = self._clock = now
        self._next_alive = now + self.config.alive_time_interval
        self._next_check = now + self._check_interval
        self._next_pull = now + self.config.pull_interval
        self._next_reconnect = now + self.config.reconnect_interval
        for endpoint in self._bootstrap:
            self._add_dial(endpoint, bootstrap=True)
        if self._store is not None:
            try:
                stored_peers = self._store.load()
            except PeerStoreError as exc:
                log.warning("%s; starting from the bootstrap and anchor peers alone", exc)
                stored_peers = []
            for stored in stored_peers:
                self._restore(stored, now)
        return self._drain(self._run_dials(now))

    def stop(self, now: float) -> list[Effect]:
        self._clock = now
        if self._store is not None and self._dirty:
            self._save(now)
        self._stopped = True
        self._outbox.clear()
        return []

    def next_deadline(self) -> float | None:
        if not self.running:
            return None
        if self._outbox:
            return self._clock
        best = min(self._next_alive, self._next_check, self._next_pull, self._next_reconnect)
        for dial in self._dials.values():
            if dial.next_at < best and dial.state in _PENDING_DIAL:
                best = dial.next_at
        mapper = self.identities.next_deadline()
        if mapper is not None and mapper < best:
            best = mapper
        if self._dirty and self._store is not None:
            best = min(best, max(self._last_save + self._persist_interval, self._clock))
        return best

    def on_tick(self, now: float) -> list[Effect]:
        if not self.running:
            return []
        self._clock = now
        effects: list[Effect] = []
        cfg = self.config
        if now >= self._next_alive:
            self._next_alive = self._advance(self._next_alive, cfg.alive_time_interval, now)
            effects += self._send_alive(now)
        if now >= self._next_check:
            self._next_check = self._advance(self._next_check, self._check_interval, now)
            effects += self._check_alive(now)
        if now >= self._next_pull:
            self._next_pull = self._advance(self._next_pull, cfg.pull_interval, now)
            effects += self._pull(now)
        if now >= self._next_reconnect:
            self._next_reconnect = self._advance(self._next_reconnect, cfg.reconnect_interval, now)
            effects += self._reconnect_dead(now)
        effects += self._run_dials(now)
        self.identities.on_tick(now)  # purges come back through _on_identity_purged
        if self._dirty and self._store is not None and now >= self._last_save + self._persist_interval:
            self._save(now)
        return self._drain(effects)

    def on_message(self, msg: ReceivedMessage, now: float) -> list[Effect]:
        kind = msg.message.WhichOneof("content")
        if not self.running or kind not in DISCOVERY_KINDS or msg.sender == self.pki_id:
            return []
        self._clock = now
        until = self._penalized.get(msg.sender)
        if until is not None:
            if now < until:
                self.stats.penalized_messages += 1
                return []
            del self._penalized[msg.sender]
        if msg.sender_identity:
            # The handshake proved this identity; remembering it lets us check the sender's own alive messages.
            try:
                self.identities.put(msg.sender, msg.sender_identity, now)
            except IdentityError as exc:
                self.stats.senders_rejected += 1
                log.info("dropping %s from %s: %s", kind, _short(msg.sender), exc)
                return self._drain([])
        if kind == "alive_msg":
            effects = self._on_alive_message(msg, now)
        elif kind == "mem_req":
            effects = self._on_membership_request(msg, now)
        else:
            effects = self._on_membership_response(msg, now)
        return self._drain(effects)

    def on_handshake(self, result: HandshakeResult, now: float) -> list[Effect]:
        dial = self._dials.get(result.endpoint)
        if not self.running or dial is None or dial.state != "handshaking":
            return []
        self._clock = now
        return self._drain(self._handshake_done(dial, result, now))

    def on_probe(self, peer: RemotePeer, alive: bool, now: float) -> list[Effect]:
        if not self.running:
            return []
        self._clock = now
        member = self._members.get(peer.pki_id)
        if not alive or member is None:
            return self._drain([])
        log.debug("dead peer %s answers, asking for its membership", _short(peer.pki_id))
        return self._drain(self._send_requests([member.remote()], [member.org], now))

    def on_connection_lost(self, pki_id: PKIid, now: float) -> list[Effect]:
        if not self.running:
            return []
        self._clock = now
        member = self._members.get(pki_id)
        if member is None or not member.alive:
            return self._drain([])
        return self._drain(self._mark_dead(member, now, "connection lost"))

    # --- alive messages -------------------------------------------------------------------------

    def _on_alive_message(self, msg: ReceivedMessage, now: float) -> list[Effect]:
        forged_before = self.stats.alive_forged
        outcome, member, effects = self._accept_alive(msg.envelope, now)
        if outcome == _FRESH and member is not None:
            effects += self._forward(member, msg.sender)
        if self.stats.alive_forged > forged_before:
            effects += self._count_forgery(msg.sender, now)
        return effects

    def _count_forgery(self, sender: PKIid, now: float) -> list[Effect]:
        """A forged alive message came straight from ``sender``; past maxForgedPerResponse of them within
        penaltyDuration, it is penalized as a forged membership response is.

        An honest peer forwards only alive messages it verified, with the identity their PKI-ID is bound to,
        so a forgery it hands us is its own: one at a time, such messages cost a signature check each and would
        otherwise be free to repeat.
        """
        count, since = self._forged_by.get(sender, (0, now))
        if now - since > self.config.penalty_duration:
            count, since = 0, now
        count += 1
        if count >= self.config.max_forged_per_response:
            self._forged_by.pop(sender, None)
            return self._penalize(sender, now, f"{count} forged alive messages within {now - since:.0f}s")
        if sender not in self._forged_by and len(self._forged_by) >= 1024:  # bounded: the oldest goes first
            del self._forged_by[next(iter(self._forged_by))]
        self._forged_by[sender] = (count, since)
        return []

    def _accept_alive(
        self, envelope: pb.Envelope, now: float, *, as_dead: bool = False, quiet: bool = False
    ) -> tuple[str, _Member | None, list[Effect]]:
        """Check one alive envelope and learn from it; returns (outcome, member when fresh, effects)."""
        if envelope.payload in self._held_payloads:
            # The very message we hold for its peer: not newer than itself (most alive messages are repeats).
            self.stats.alive_stale += 1
            return _STALE, None, []
        try:
            gm = wire.open_envelope(envelope)
        except wire.InvalidMessage:
            self.stats.malformed += 1
            return _REJECTED, None, []
        if gm.WhichOneof("content") != "alive_msg" or not gm.alive_msg.membership.pki_id:
            self.stats.malformed += 1
            return _REJECTED, None, []
        am = gm.alive_msg
        pki_id = am.membership.pki_id
        if pki_id == self.pki_id:
            self.stats.own_alive_ignored += 1
            return _IGNORED, None, []
        ts = (am.timestamp.inc_num, am.timestamp.seq_num)
        known = self._members.get(pki_id)
        tomb = self._forgotten.get(pki_id)
        # Checked before the signature: most alive messages are repeats, and this costs nothing.
        if (known is not None and ts <= known.ts) or (tomb is not None and ts <= tomb[:2]):
            self.stats.alive_stale += 1
            return _STALE, None, []
        if as_dead and known is not None:
            return _IGNORED, None, []

        if am.identity:
            try:
                self.identities.put(pki_id, am.identity, now)
            except IdentityError as exc:
                return self._refuse_alive(pki_id, now, str(exc), forged=exc.reason == "mismatch", quiet=quiet)
            identity = am.identity
        else:
            found = self.identities.get(pki_id, now)
            if found is None:
                self.stats.alive_unknown_identity += 1
                return _REJECTED, None, self._identify(pki_id, am.membership.endpoint, envelope, now)
            identity = found
        if not envelope.signature:
            return self._refuse_alive(pki_id, now, "unsigned alive message", forged=True, quiet=quiet)
        try:
            wire.verify_envelope(envelope, identity, self._mcs)
            org = self._advisor.org_of(identity)
            internal = wire.secret_endpoint(envelope, identity, self._mcs) if org == self.org else None
        except InvalidSignature as exc:
            return self._refuse_alive(pki_id, now, f"bad signature: {exc}", forged=True, quiet=quiet)
        except (InvalidIdentity, wire.InvalidMessage) as exc:
            return self._refuse_alive(pki_id, now, str(exc), forged=False)

        stored = envelope
        if org != self.org:
            # A foreign peer's internal endpoint is none of our business, and must not travel further.
            stored, internal = wire.strip_secret(envelope), None
        elif internal is None and known is not None and known.internal_endpoint:
            # Relayed through another org, it lost its secret; the one we hold is still the peer's own signature.
            stored = pb.Envelope()
            stored.CopyFrom(envelope)
            stored.secret_envelope.CopyFrom(known.envelope.secret_envelope)
            internal = known.internal_endpoint

        self.stats.alive_accepted += 1
        self._forgotten.pop(pki_id, None)
        self._identify_tried.pop(pki_id, None)
        if known is None:
            member = _Member(
                pki_id=pki_id,
                org=org,
                envelope=stored,
                inc_num=ts[0],
                seq_num=ts[1],
                endpoint=am.membership.endpoint,
                internal_endpoint=internal or "",
                metadata=am.membership.metadata,
                last_seen=now,
                alive=not as_dead,
            )
            self._add_member(member)
            self._held_payloads[stored.payload] = pki_id
            self._dirty = True
            if member.alive:
                log.info("new peer %s at %s (org %s)", self._who(pki_id), member.preferred_endpoint, org.decode())
                self.tracer.event("peer_alive", now, pki_id=pki_id, endpoint=member.preferred_endpoint, new=True)
            else:
                log.debug("learned of dead peer %s at %s", _short(pki_id), member.preferred_endpoint)
            return _FRESH, member, []

        member = known
        if (member.endpoint, member.internal_endpoint) != (am.membership.endpoint, internal or ""):
            self._dirty = True
        if (member.endpoint, member.internal_endpoint, member.metadata, member.alive) != (
            am.membership.endpoint,
            internal or "",
            am.membership.metadata,
            True,
        ):
            member.view = None
            self._changed()
        self._held_payloads.pop(member.envelope.payload, None)
        self._held_payloads[stored.payload] = pki_id
        member.envelope = stored
        self._envelopes_version += 1
        member.inc_num, member.seq_num = ts
        member.endpoint = am.membership.endpoint
        member.internal_endpoint = internal or ""
        member.metadata = am.membership.metadata
        member.last_seen = now
        if not member.alive:
            member.alive = True
            self.stats.peers_revived += 1
            log.info("peer %s at %s is alive again", self._who(pki_id), member.preferred_endpoint)
            self.tracer.event("peer_alive", now, pki_id=pki_id, endpoint=member.preferred_endpoint, new=False)
        return _FRESH, member, []

    def _refuse_alive(
        self, pki_id: PKIid, now: float, reason: str, *, forged: bool, quiet: bool = False
    ) -> tuple[str, _Member | None, list[Effect]]:
        if forged:
            self.stats.alive_forged += 1
            if not quiet:  # in a response the responder is to blame, and is penalized past a few
                self._warn_once("forged", pki_id, now, f"dropping forged alive message claiming %s: {reason}")
            self.tracer.event("alive_forged", now, pki_id=pki_id, reason=reason)
        else:
            self.stats.alive_rejected += 1
            log.debug("dropping alive message of %s: %s", _short(pki_id), reason)
        return _REJECTED, None, []

    def _identify(self, pki_id: PKIid, endpoint: str, envelope: pb.Envelope, now: float) -> list[Effect]:
        """Dial a peer whose alive message we cannot check, so that its handshake tells us who it is."""
        if pki_id in self._forgotten:
            return []
        tried = self._identify_tried.get(pki_id)
        if tried is not None and now - tried < self.config.reconnect_interval:
            return []
        if not endpoint and envelope.HasField("secret_envelope"):
            # Unverifiable so far, but only used as an address: whoever answers there proves who it is.
            secret = pb.Secret()
            try:
                secret.ParseFromString(envelope.secret_envelope.payload)
            except DecodeError:  # garbage just means no address
                return []
            endpoint = secret.internalEndpoint
        if not endpoint or self._is_own_endpoint(endpoint):
            return []
        dial = self._dials.get(endpoint)
        if dial is not None and dial.state in ("due", "handshaking", "requested"):
            return []
        # A token bucket: alive messages name any endpoints they like, and each dial here costs a connection
        # attempt to it; without a bound, one response could make this peer dial thousands of hosts.
        rate = self.config.identify_dials / self.config.reconnect_interval
        self._identify_tokens = min(
            float(self.config.identify_dials), self._identify_tokens + (now - self._identify_refilled) * rate
        )
        self._identify_refilled = now
        if self._identify_tokens < 1.0:
            self.stats.identify_throttled += 1
            return []
        self._identify_tokens -= 1.0
        self._identify_tried[pki_id] = now
        if dial is None:
            dial = self._add_dial(endpoint)
        else:
            dial.state, dial.attempts, dial.max_attempts, dial.next_at = "due", 0, 1, now
        return self._run_dials(now)

    def _forward(self, member: _Member, sender: PKIid) -> list[Effect]:
        """Pass a new alive message on to a few random peers allowed to see it."""
        subject, subject_org, subject_endpoint = member.pki_id, member.org, member.endpoint
        ours = subject_org == self.org

        def allowed(m: _Member) -> bool:
            return (
                m.alive
                and m.pki_id != subject
                and m.pki_id != sender
                and bool(m.preferred_endpoint)
                and may_disclose(subject_org, subject_endpoint, m.org, m.endpoint)
                and (ours or m.org == self.org or m.org == subject_org)
            )

        targets = self._pick(self.config.propagate_peer_num, allowed)
        self.stats.alive_forwarded += len(targets)
        return self._send_split(member.envelope, targets)

    def _may_hear_from_us(self, m: _Member) -> bool:
        return m.alive and bool(m.preferred_endpoint) and may_disclose(self.org, self._external, m.org, m.endpoint)

    def _send_alive(self, now: float) -> list[Effect]:
        targets = self._pick(self.config.propagate_peer_num, self._may_hear_from_us)
        if not targets:
            return []
        return self._send_split(self._self_alive(now, renew=True), targets)

    def _self_alive(self, now: float, *, renew: bool = False) -> pb.Envelope:
        """Our newest signed alive message; a new one (next seq_num) on each heartbeat or when it went stale.

        Requests and responses reuse the heartbeat's message rather than minting their own: every copy of
        our newest message then spreads by the same flood, so peers agree on when they last heard of us
        (with one message per request, the newest copies travel only by pull and refresh some peers'
        "last heard" seconds late). It also saves a signature per request.
        """
        assert self._started_at is not None
        include_identity = now < self._started_at + self.config.publish_cert_period
        cached = self._own_alive
        if not renew and cached is not None and cached[1] == (self._external, self._metadata, include_identity):
            return cached[0]
        self._seq += 1
        self.stats.alive_created += 1
        msg = wire.alive(
            self._external,
            self.pki_id,
            self._inc_num,
            self._seq,
            identity=self.identity if include_identity else b"",
            metadata=self._metadata,
        )
        envelope = wire.seal(msg, self._mcs.sign)
        if self._internal:
            envelope = wire.with_secret(envelope, self._internal, self._mcs.sign)
        self._own_alive = (envelope, (self._external, self._metadata, include_identity))
        return envelope

    def _for_org(self, envelope: pb.Envelope, target_org: bytes) -> pb.Envelope:
        if target_org == self.org or not envelope.HasField("secret_envelope"):
            return envelope
        return wire.strip_secret(envelope)

    def _send_split(self, envelope: pb.Envelope, targets: list[_Member]) -> list[Effect]:
        """Send ``envelope`` to ``targets``, without its secret to those of other orgs."""
        ours = tuple(m.remote() for m in targets if m.org == self.org)
        theirs = tuple(m.remote() for m in targets if m.org != self.org)
        effects: list[Effect] = []
        if ours:
            effects.append(Send(envelope, ours))
        if theirs:
            effects.append(Send(wire.strip_secret(envelope), theirs))
        return effects

    # --- liveness -------------------------------------------------------------------------------

    @property
    def _check_interval(self) -> float:
        return self.config.alive_expiration_timeout / 10

    @property
    def _forget_after(self) -> float:
        return self.config.alive_expiration_timeout * self.config.msg_expiration_factor

    def _check_alive(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        timeout = self.config.alive_expiration_timeout
        for member in list(self._members.values()):
            silent = now - member.last_seen
            if member.alive and silent > timeout:
                effects += self._mark_dead(member, now, f"unheard for {silent:.1f}s")
            elif not member.alive and silent > self._forget_after and not self._is_protected(member):
                effects += self._forget(member, now, "expired")
        for pki_id, (_, _, at) in list(self._forgotten.items()):
            if now - at > self._forget_after:
                del self._forgotten[pki_id]
        for pki_id, at in list(self._identify_tried.items()):
            if now - at > self.config.reconnect_interval:
                del self._identify_tried[pki_id]
        for pki_id, (_, until) in list(self._asked.items()):
            if now > until:
                del self._asked[pki_id]
        for pki_id, until in list(self._penalized.items()):
            if now >= until:
                del self._penalized[pki_id]
        for pki_id, (_, since) in list(self._forged_by.items()):
            if now - since > self.config.penalty_duration:
                del self._forged_by[pki_id]
        for endpoint, dial in list(self._dials.items()):
            # Dials made only to identify a peer are done once tried; keeping them would let the endpoints
            # named by alive messages pile up without bound.
            finished = dial.state in ("done", "given_up", "refused")
            if finished and not (dial.bootstrap or dial.anchor) and now - dial.next_at > self.config.reconnect_interval:
                del self._dials[endpoint]
        return effects

    def _mark_dead(self, member: _Member, now: float, reason: str) -> list[Effect]:
        member.alive = False
        self._changed()
        self.stats.peers_dead += 1
        log.info("peer %s at %s is dead (%s)", self._who(member.pki_id), member.preferred_endpoint, reason)
        self.tracer.event("peer_dead", now, pki_id=member.pki_id, endpoint=member.preferred_endpoint, reason=reason)
        return [Disconnect(member.pki_id)]

    def _forget(self, member: _Member, now: float, reason: str) -> list[Effect]:
        self._remove_member(member)
        self._held_payloads.pop(member.envelope.payload, None)
        self._forgotten[member.pki_id] = (member.inc_num, member.seq_num, now)
        self._dirty = True
        self.stats.peers_forgotten += 1
        log.info("forgetting peer %s at %s (%s)", self._who(member.pki_id), member.preferred_endpoint, reason)
        self.tracer.event("peer_forgotten", now, pki_id=member.pki_id, reason=reason)
        return [Disconnect(member.pki_id)]

    def _is_protected(self, member: _Member) -> bool:
        if member.pki_id in self._protected:
            return True
        keep = set(self._bootstrap) | self._anchors
        return member.endpoint in keep or member.internal_endpoint in keep

    def _on_identity_purged(self, pki_id: PKIid, identity: bytes, reason: str, now: float) -> None:
        # Called by the mapper, possibly from another component's call: the effects wait in the outbox.
        self._clock = max(self._clock, now)
        member = self._members.get(pki_id)
        if member is not None:
            self._outbox += self._forget(member, now, f"identity {reason}")
        elif reason != "unused":
            self._outbox.append(Disconnect(pki_id))

    def _reconnect_dead(self, now: float) -> list[Effect]:
        return [Probe(m.remote()) for m in self._members.values() if not m.alive and m.preferred_endpoint]

    # --- membership requests and responses ------------------------------------------------------

    def _pull(self, now: float) -> list[Effect]:
        targets = self._pick(self.config.pull_peer_num, self._may_hear_from_us)
        return self._send_requests([m.remote() for m in targets], [m.org for m in targets], now)

    def _send_requests(self, targets: list[RemotePeer], orgs: list[bytes], now: float, nonce: int = 0) -> list[Effect]:
        if not targets:
            return []
        own = self._self_alive(now)
        effects: list[Effect] = []
        for target, org in zip(targets, orgs, strict=True):
            asked = nonce or self._rng.getrandbits(64) or 1
            # One outstanding request per peer: a newer one replaces the older, so this holds a few entries.
            self._asked[target.pki_id] = (asked, now + self.config.reconnect_interval)
            request = wire.membership_request(self._for_org(own, org), nonce=asked)
            effects.append(Send(wire.seal(request), (target,)))
        self.stats.requests_sent += len(targets)
        return effects

    def _on_membership_request(self, msg: ReceivedMessage, now: float) -> list[Effect]:
        request = msg.message.mem_req
        try:
            self_info = wire.open_envelope(request.self_information)
        except wire.InvalidMessage:
            self.stats.malformed += 1
            return []
        if self_info.WhichOneof("content") != "alive_msg":
            self.stats.malformed += 1
            return []
        claimed = self_info.alive_msg.membership.pki_id
        if claimed != msg.sender:
            self.stats.spoofed_requests += 1
            log.warning(
                "membership request from %s carries the alive message of %s; not answering",
                _short(msg.sender),
                _short(claimed),
            )
            self.tracer.event("spoofed_membership_request", now, sender=msg.sender, claimed=claimed)
            return []
        outcome, member, effects = self._accept_alive(request.self_information, now)
        if outcome == _REJECTED:
            return effects
        if outcome == _FRESH and member is not None:
            effects += self._forward(member, msg.sender)
        identity = self.identities.get(msg.sender, now)
        if identity is None:
            return effects
        target_org = self._advisor.org_of(identity)
        target_endpoint = self_info.alive_msg.membership.endpoint
        if not may_disclose(self.org, self._external, target_org, target_endpoint):
            self.stats.requests_refused += 1
            log.warning(
                "peer %s of org %s asks for membership, but this peer is not disclosed to it; closing the connection",
                _short(msg.sender),
                target_org.decode(errors="replace"),
            )
            return [*effects, Disconnect(msg.sender)]
        membership = self._membership_for(msg.sender, target_org, target_endpoint, now)
        response = wire.seal(wire.membership_response_of(membership, nonce=msg.message.nonce))
        known = self._members.get(msg.sender)
        endpoint = (known.preferred_endpoint if known is not None else "") or msg.sender_endpoint
        self.stats.requests_answered += 1
        return [*effects, Send(response, (RemotePeer(msg.sender, endpoint),))]

    def _membership_for(
        self, requester: PKIid, target_org: bytes, target_endpoint: str, now: float
    ) -> pb.MembershipResponse:
        """What we tell ``requester``: our alive message, then every member it may see, but not itself.

        Built once per audience (its org, and whether it has an external endpoint) until a member or our
        own alive message changes: at N = 1,000 every peer answers 3 requests every pullInterval, each
        listing 1,000 members, and building that list was most of the simulator's time.
        """
        own = self._self_alive(now)
        audience = (target_org, bool(target_endpoint))
        key = (self._envelopes_version, self._seq)
        cached = self._responses.get(audience)
        if cached is None or cached[0] != key:
            alive, dead = [self._for_org(own, target_org)], []
            where: dict[PKIid, tuple[bool, int]] = {}
            for m in self._members.values():
                if not may_disclose(m.org, m.endpoint, target_org, target_endpoint):
                    continue
                listed = alive if m.alive else dead
                where[m.pki_id] = (m.alive, len(listed))
                listed.append(self._for_org(m.envelope, target_org))
            cached = (key, pb.MembershipResponse(alive=alive, dead=dead), where)
            self._responses[audience] = cached
        _, response, where = cached
        position = where.get(requester)
        if position is None:
            return response
        trimmed = pb.MembershipResponse()
        trimmed.CopyFrom(response)
        del (trimmed.alive if position[0] else trimmed.dead)[position[1]]
        return trimmed

    def _on_membership_response(self, msg: ReceivedMessage, now: float) -> list[Effect]:
        """Read a membership response, only one answering our request to its sender, at bounded cost.

        Cheap checks first: the nonce must be the one we sent to this very peer (anything else is unsolicited
        and dropped unread), and the entry count within maxMembershipEntries. Then each entry is checked as an
        alive message, repeats costing no signature check; once maxForgedPerResponse entries failed
        verification, the rest is dropped and the sender ignored (and disconnected) for penaltyDuration.
        """
        self.stats.responses_received += 1
        nonce = msg.message.nonce
        asked = self._asked.get(msg.sender)
        if asked is None or asked[0] != nonce or now > asked[1]:
            self.stats.responses_unsolicited += 1
            self._warn_once("unsolicited", msg.sender, now, "ignoring a membership response nobody asked %s for")
            return []
        del self._asked[msg.sender]
        for dial in self._dials.values():
            if dial.state == "requested" and dial.nonce == nonce and dial.pki_id == msg.sender:
                dial.state = "done"
                log.debug("%s peer %s answered", dial.kind, dial.endpoint)
        response = msg.message.mem_res
        if len(response.alive) + len(response.dead) > self.config.max_membership_entries:
            self.stats.responses_oversized += 1
            self._warn_once(
                "oversized",
                msg.sender,
                now,
                f"ignoring a membership response of {len(response.alive) + len(response.dead)} entries from %s "
                f"(maxMembershipEntries {self.config.max_membership_entries})",
            )
            return []
        effects: list[Effect] = []
        held = self._held_payloads
        forged_before = self.stats.alive_forged
        limit = self.config.max_forged_per_response
        for envelope, as_dead in itertools.chain(
            ((e, False) for e in response.alive), ((e, True) for e in response.dead)
        ):
            if envelope.payload in held:  # _accept_alive's first check, inlined: responses mostly repeat
                self.stats.alive_stale += 1
                continue
            effects += self._accept_alive(envelope, now, as_dead=as_dead, quiet=True)[2]
            if self.stats.alive_forged - forged_before >= limit:
                self.stats.responses_cut_short += 1
                return [*effects, *self._penalize(msg.sender, now, f"{limit} forged alive messages in one response")]
        return effects

    def _penalize(self, pki_id: PKIid, now: float, reason: str) -> list[Effect]:
        self._penalized[pki_id] = now + self.config.penalty_duration
        self._asked.pop(pki_id, None)
        log.warning(
            "ignoring peer %s for %.0fs and disconnecting it: %s", _short(pki_id), self.config.penalty_duration, reason
        )
        self.tracer.event("peer_penalized", now, pki_id=pki_id, reason=reason)
        return [Disconnect(pki_id)]

    def _warn_once(self, kind: str, pki_id: PKIid, now: float, message: str) -> None:
        """Log ``message % peer`` at most once a minute per kind and peer (the counters keep the totals)."""
        key = (kind, pki_id)
        last = self._warned.get(key)
        if last is not None and now - last < 60.0:
            return
        if len(self._warned) >= 1024:  # bounded: forget the oldest warnings first
            del self._warned[next(iter(self._warned))]
        self._warned[key] = now
        log.warning(message, _short(pki_id))

    # --- dialing peers known by endpoint only ---------------------------------------------------

    def _add_dial(self, endpoint: str, *, bootstrap: bool = False, anchor: bool = False) -> _Dial:
        attempts = self.config.max_connection_attempts if bootstrap or anchor else 1
        dial = _Dial(endpoint, bootstrap=bootstrap, anchor=anchor, max_attempts=attempts, next_at=self._clock)
        self._dials[endpoint] = dial
        return dial

    def _restore(self, stored: StoredPeer, now: float) -> None:
        pki_id, endpoint, identity = stored
        if pki_id == self.pki_id or not endpoint or self._is_own_endpoint(endpoint):
            return
        if identity:
            try:
                self.identities.put(pki_id, identity, now)
            except IdentityError as exc:
                log.info("stored peer %s at %s has an unusable identity: %s", _short(pki_id), endpoint, exc)
        if endpoint not in self._dials:
            # A peer store is remembered for as long as bootstrap peers are tried: it replaces them.
            self._add_dial(endpoint).max_attempts = self.config.max_connection_attempts

    def _run_dials(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        for dial in self._dials.values():
            if dial.state == "handshaking" and now >= dial.next_at:
                dial.state = "due"  # the shell never answered: count it as a failed attempt
            if dial.state == "requested" and now >= dial.next_at:
                log.debug("%s peer %s did not answer the membership request", dial.kind, dial.endpoint)
                dial.state = "due"
            if dial.state != "due" or now < dial.next_at:
                continue
            if dial.attempts >= dial.max_attempts:
                dial.state = "given_up"
                log.warning("giving up on %s peer %s after %d attempts", dial.kind, dial.endpoint, dial.attempts)
                continue
            dial.attempts += 1
            dial.state = "handshaking"
            dial.next_at = now + self.config.reconnect_interval
            effects.append(Handshake(dial.endpoint))
        return effects

    def _handshake_done(self, dial: _Dial, result: HandshakeResult, now: float) -> list[Effect]:
        if result.error or not result.pki_id:
            return self._dial_failed(dial, result.error or "no identity", now)
        if result.pki_id == self.pki_id:
            dial.state = "done"
            log.debug("%s peer %s is this peer; skipping it", dial.kind, dial.endpoint)
            return []
        try:
            self.identities.put(result.pki_id, result.identity, now)
            org = self._advisor.org_of(result.identity)
        except InvalidIdentity as exc:
            return self._dial_failed(dial, str(exc), now)
        if dial.bootstrap and not dial.anchor and org != self.org:
            dial.state = "refused"
            self.stats.bootstrap_refused += 1
            log.warning(
                "bootstrap peer %s belongs to org %s, not our org %s; ignoring it",
                dial.endpoint,
                org.decode(errors="replace"),
                self.org.decode(errors="replace"),
            )
            self.tracer.event("bootstrap_refused", now, endpoint=dial.endpoint, org=org, pki_id=result.pki_id)
            return []
        if dial.bootstrap or dial.anchor:
            self._protected.add(result.pki_id)
        dial.pki_id = result.pki_id
        dial.nonce = self._rng.getrandbits(64) or 1
        dial.state = "requested"
        dial.next_at = now + self.config.reconnect_interval
        return self._send_requests([RemotePeer(result.pki_id, dial.endpoint)], [org], now, nonce=dial.nonce)

    def _who(self, pki_id: PKIid) -> str:
        """A peer as log lines name it: its certificate's name where the advisor knows one, and its short PKI-ID."""
        identity = self.identities.peek(pki_id)
        name_of = getattr(self._advisor, "name_of", None)
        name = name_of(identity) if identity is not None and name_of is not None else ""
        return f"{name} ({_short(pki_id)})" if name else _short(pki_id)

    def _dial_failed(self, dial: _Dial, reason: str, now: float) -> list[Effect]:
        delay = self.config.reconnect_interval
        if dial.bootstrap or dial.anchor:
            # Peers of one network start together: the first dials often reach a peer that does not listen
            # yet. Retrying at once and backing off to reconnectInterval joins them in a second, not 25 s;
            # only a peer still unreachable at the slow pace is worth a warning.
            delay = min(delay, FIRST_RETRY * 2 ** max(0, dial.attempts - 1))
        slow = delay >= self.config.reconnect_interval
        log_at = log.warning if (dial.bootstrap or dial.anchor) and slow else log.debug
        log_at("could not reach %s peer %s: %s", dial.kind, dial.endpoint, reason)
        dial.state = "due"
        dial.next_at = now + delay
        if dial.attempts >= dial.max_attempts:
            dial.state = "given_up"
            if dial.bootstrap or dial.anchor:
                log.warning("giving up on %s peer %s after %d attempts", dial.kind, dial.endpoint, dial.attempts)
        return []

    # --- persistence ----------------------------------------------------------------------------

    def _save(self, now: float) -> None:
        assert self._store is not None
        peers = [
            StoredPeer(m.pki_id, m.preferred_endpoint, self.identities.peek(m.pki_id))
            for m in sorted(self._members.values(), key=lambda m: not m.alive)
            if m.preferred_endpoint
        ]
        self._last_save = now  # a failed save too: it is tried again persist_interval later, not at every tick
        try:
            self._store.save(peers)
        except PeerStoreError as exc:
            if now - self._store_logged_at >= STORE_LOG_INTERVAL:
                self._store_logged_at = now
                log.warning("%s; trying again every %gs", exc, self._persist_interval)
            return
        self._dirty = False

    # --- helpers --------------------------------------------------------------------------------

    def _is_own_endpoint(self, endpoint: str) -> bool:
        return bool(endpoint) and endpoint in (self._internal, self._external, self.config.endpoint)

    def _pick(self, k: int, allowed: Callable[[_Member], bool]) -> list[_Member]:
        """Up to ``k`` distinct random members for which ``allowed`` holds, each such set equally likely
        (all of them when there are no more than ``k``).

        Members are drawn at random and the disallowed ones skipped, which costs O(k) when most members are
        allowed, whatever their number; when a few draws did not fill the choice, the allowed members are
        listed and sampled instead (a fresh draw, so the choice stays uniform).
        """
        members = self._member_list
        n = len(members)
        if k <= 0 or n == 0:
            return []
        rng = self._rng
        chosen: list[_Member] = []
        tried: set[int] = set()
        for _ in range(2 * k + 8 if n > 4 * k else 0):
            i = rng.randrange(n)
            if i in tried:
                continue
            tried.add(i)
            if allowed(members[i]):
                chosen.append(members[i])
                if len(chosen) == k:
                    return chosen
        candidates = [m for m in members if allowed(m)]
        if len(candidates) <= k:
            return candidates
        return rng.sample(candidates, k)

    @staticmethod
    def _advance(deadline: float, interval: float, now: float) -> float:
        deadline += interval
        # After a long pause (a suspended process, a slow tick) skip the missed rounds instead of bursting.
        return deadline if deadline > now else now + interval

    def _drain(self, effects: list[Effect]) -> list[Effect]:
        if not self._outbox:
            return effects
        out, self._outbox = [*self._outbox, *effects], []
        return out


__all__ = ["DISCOVERY_KINDS", "Discovery", "DiscoveryStats", "may_disclose"]
