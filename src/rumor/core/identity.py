"""The identity mapper: which serialized identity stands behind each PKI-ID a peer has seen.

Alive messages carry their sender's full identity only for a short while after it starts
(publishCertPeriod); after that a receiver can check their signatures only if it remembered the
identity. The mapper is that memory, and the gate in front of it:

    put(pki_id, identity, now)   validate (known CA, not revoked), not expired, pki_id == hash(identity)
                                 -> store, or raise IdentityError saying which check failed
    get(pki_id, now)             the identity, and "used at now"
    on_tick(now)                 purge at the certificate's expiry, and purge what nobody used for
                                 usage_threshold (an hour, as Fabric), checked every tenth of it
    revalidate(now)              validate every stored identity again (after a revocation)

Every purge is announced to the listeners given to ``subscribe`` (discovery forgets the member and
closes its connection) and returned by the call that caused it. The peer's own identity is never purged.

Certificate expiry is wall-clock time (seconds since the Unix epoch) while ``now`` is the shell's clock
(monotonic for a real peer, virtual in the simulator): ``clock_offset`` converts the latter into the
former (the real peer passes ``time.time() - time.monotonic()`` once; a simulator whose crypto uses its
virtual clock passes 0).
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable
from dataclasses import dataclass

from rumor.crypto.api import InvalidIdentity, MessageCryptoService, PKIid

USAGE_THRESHOLD = 3600.0
"""An identity nobody used for this long is purged (Fabric's identity usage threshold: one hour)."""

log = logging.getLogger("rumor.identity")

PurgeListener = Callable[[PKIid, bytes, str, float], None]
"""Called as ``listener(pki_id, identity, reason, now)``; reason is "expired", "unused" or "invalid"."""


class IdentityError(InvalidIdentity):
    """An identity refused by the mapper; the message says which check failed.

    ``reason`` names the check for code that reacts differently: "empty", "undecodable", "mismatch"
    (the identity is not the PKI-ID's: a forgery or a bug), "invalid" or "expired".
    """

    def __init__(self, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(slots=True)
class _Stored:
    identity: bytes
    last_used: float
    expires_at: float | None  # on the shell's clock


class IdentityMapper:
    """PKI-ID -> serialized identity, validated on the way in and purged when it expires or goes unused."""

    def __init__(
        self,
        mcs: MessageCryptoService,
        self_identity: bytes,
        *,
        usage_threshold: float = USAGE_THRESHOLD,
        clock_offset: float = 0.0,
    ) -> None:
        self._mcs = mcs
        self._usage_threshold = usage_threshold
        self._clock_offset = clock_offset
        self.self_pki_id: PKIid = mcs.pki_id_of(self_identity)
        # Insertion-ordered, so that purges (and what follows them) happen in a reproducible order.
        self._ids: dict[PKIid, _Stored] = {
            self.self_pki_id: _Stored(self_identity, float("inf"), None),
        }
        self._expiry_heap: list[tuple[float, PKIid]] = []
        self._next_usage_check: float | None = None
        self._listeners: list[PurgeListener] = []

    # --- storing and looking up ---------------------------------------------------------------

    def put(self, pki_id: PKIid, identity: bytes, now: float) -> None:
        """Remember ``identity`` for ``pki_id``; raise IdentityError unless it is valid and matches."""
        if not pki_id:
            raise IdentityError("empty PKI-ID", "empty")
        if not identity:
            raise IdentityError(f"empty identity for PKI-ID {pki_id.hex()[:16]}", "empty")
        stored = self._ids.get(pki_id)
        if stored is not None and stored.identity == identity:
            # Already checked when it came in; a revocation since then is revalidate()'s business.
            stored.last_used = max(stored.last_used, now)
            return
        try:
            computed = self._mcs.pki_id_of(identity)
        except InvalidIdentity as exc:
            raise IdentityError(
                f"undecodable identity claimed for PKI-ID {pki_id.hex()[:16]}: {exc}", "undecodable"
            ) from None
        if computed != pki_id:
            raise IdentityError(
                f"identity does not match PKI-ID {pki_id.hex()[:16]} (it hashes to {computed.hex()[:16]})", "mismatch"
            )
        try:
            self._mcs.validate_identity(identity)
        except InvalidIdentity as exc:
            raise IdentityError(f"invalid identity for PKI-ID {pki_id.hex()[:16]}: {exc}") from None
        expiry = self._mcs.expiration(identity)
        expires_at = None if expiry is None else expiry - self._clock_offset
        if expires_at is not None and expires_at <= now:
            raise IdentityError(f"identity of PKI-ID {pki_id.hex()[:16]} expired at {expiry}", "expired")
        self._ids[pki_id] = _Stored(identity, now, expires_at)
        if expires_at is not None:
            heapq.heappush(self._expiry_heap, (expires_at, pki_id))
        if self._next_usage_check is None:
            self._next_usage_check = now + self._usage_threshold / 10

    def get(self, pki_id: PKIid, now: float) -> bytes | None:
        """The identity of ``pki_id`` (None when unknown), noting that it was used at ``now``."""
        stored = self._ids.get(pki_id)
        if stored is None:
            return None
        stored.last_used = max(stored.last_used, now)
        return stored.identity

    def peek(self, pki_id: PKIid) -> bytes | None:
        """The identity of ``pki_id`` without counting it as a use (for persisting, logging)."""
        stored = self._ids.get(pki_id)
        return None if stored is None else stored.identity

    def __contains__(self, pki_id: object) -> bool:
        return pki_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def pki_id_of(self, identity: bytes) -> PKIid:
        return self._mcs.pki_id_of(identity)

    # --- signing ------------------------------------------------------------------------------

    def sign(self, message: bytes) -> bytes:
        return self._mcs.sign(message)

    def verify(self, pki_id: PKIid, signature: bytes, message: bytes, now: float) -> None:
        """Check ``signature`` by the peer ``pki_id``; InvalidIdentity if its identity is unknown."""
        identity = self.get(pki_id, now)
        if identity is None:
            raise IdentityError(f"no identity known for PKI-ID {pki_id.hex()[:16]}", "unknown")
        self._mcs.verify(identity, signature, message)

    # --- purging ------------------------------------------------------------------------------

    def subscribe(self, listener: PurgeListener) -> None:
        """Have ``listener`` told of every identity removed from now on."""
        self._listeners.append(listener)

    def remove(self, pki_id: PKIid, now: float, reason: str = "removed") -> bool:
        if pki_id == self.self_pki_id or pki_id not in self._ids:
            return False
        stored = self._ids.pop(pki_id)
        log.info("identity of %s purged (%s)", pki_id.hex()[:16], reason)
        for listener in list(self._listeners):
            listener(pki_id, stored.identity, reason, now)
        return True

    def next_deadline(self) -> float | None:
        deadlines = [d for d in (self._next_usage_check, self._next_expiry()) if d is not None]
        return min(deadlines) if deadlines else None

    def _next_expiry(self) -> float | None:
        while self._expiry_heap:
            at, pki_id = self._expiry_heap[0]
            stored = self._ids.get(pki_id)
            if stored is not None and stored.expires_at == at:
                return at
            heapq.heappop(self._expiry_heap)  # superseded or already purged
        return None

    def on_tick(self, now: float) -> list[PKIid]:
        """Purge expired identities, and (every tenth of the threshold) unused ones; return their PKI-IDs."""
        purged: list[PKIid] = []
        while (at := self._next_expiry()) is not None and at <= now:
            _, pki_id = heapq.heappop(self._expiry_heap)
            if self.remove(pki_id, now, "expired"):
                purged.append(pki_id)
        if self._next_usage_check is not None and now >= self._next_usage_check:
            stale = [p for p, s in self._ids.items() if now - s.last_used > self._usage_threshold]
            for pki_id in stale:
                if self.remove(pki_id, now, "unused"):
                    purged.append(pki_id)
            self._next_usage_check = now + self._usage_threshold / 10 if len(self._ids) > 1 else None
        return purged

    def revalidate(self, now: float, suspect: Callable[[bytes], bool] | None = None) -> list[PKIid]:
        """Validate again every stored identity (or those ``suspect`` picks); purge and return the failures.

        Meant for when the set of valid identities shrank: a revocation, a CA or org removed.
        """
        purged: list[PKIid] = []
        for pki_id, stored in list(self._ids.items()):
            if pki_id == self.self_pki_id or (suspect is not None and not suspect(stored.identity)):
                continue
            try:
                self._mcs.validate_identity(stored.identity)
            except InvalidIdentity as exc:
                log.warning("identity of %s is no longer valid: %s", pki_id.hex()[:16], exc)
                if self.remove(pki_id, now, "invalid"):
                    purged.append(pki_id)
        return purged
