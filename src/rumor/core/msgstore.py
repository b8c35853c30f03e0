"""A store of messages that keeps only what is still worth spreading.

Gossip keeps recent messages to forward and to answer pulls with, but most
messages are superseded by later ones from the same origin. When a message is
added, an *invalidation policy* compares it with the messages already held:

    new vs held  ->  NONE         both stay
                     INVALIDATES  the held one is dropped (on_invalidate), the new one stays
                     INVALIDATED  the new one is refused: a duplicate or older than what we hold

For gossip messages (``gossip_policy``): alive, state info and leadership
messages of one origin are ordered by PeerTime (newer replaces older); a block
with a number we hold is a duplicate, and a block more than
``max_block_count`` behind the newest is evicted (or refused when it is the
older one). Identities are never replaced: the first one per PKI-ID stays.

Messages also expire ``ttl`` seconds after they were added: ``expire(now)``
(called from the owner's tick, at ``next_deadline()``) removes them and calls
``on_expire`` for each. Since every entry lives exactly ``ttl``, entries expire
in insertion order, so a FIFO queue gives the next expiry in O(1).

Optionally the policy is applied only within a *scope* (e.g. one origin's
PKI-ID): messages of different scopes never invalidate each other, and an add
then costs O(1) instead of a scan of the whole store. Each item also has a
*key* under which it can be looked up (``get``, ``in``), which lets the store
double as the item store of a pull engine (digest -> item).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Generic, TypeVar

from rumor.wire.messages import kind_of
from rumor.wire.pb.gossip import message_pb2 as pb

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SignedMessage:
    """A gossip message as it travelled: the envelope (with its signature) and the decoded message."""

    envelope: pb.Envelope
    message: pb.GossipMessage


class Invalidation(Enum):
    """How a newly added message relates to one already held."""

    NONE = 0
    INVALIDATES = 1
    INVALIDATED = 2


Policy = Callable[[T, T], Invalidation]
"""``policy(new, held)``: what ``new`` does to ``held``."""


@dataclass(slots=True)
class _Entry(Generic[T]):
    item: T
    key: Hashable
    scope: Hashable
    expires: float | None
    live: bool = True


class MessageStore(Generic[T]):
    """Messages under an invalidation policy, with lookup by key and optional expiry."""

    def __init__(
        self,
        policy: Policy[T],
        *,
        key: Callable[[T], Hashable],
        scope: Callable[[T], Hashable] | None = None,
        ttl: float | None = None,
        on_expire: Callable[[T], None] | None = None,
        on_invalidate: Callable[[T], None] | None = None,
    ) -> None:
        self._policy = policy
        self._key = key
        self._scope = scope
        self._ttl = ttl
        self._on_expire = on_expire
        self._on_invalidate = on_invalidate
        # Both dicts keep insertion order, so iteration is deterministic whatever the hash seed.
        self._by_key: dict[Hashable, _Entry[T]] = {}
        self._by_scope: dict[Hashable, dict[Hashable, _Entry[T]]] = {}
        self._fifo: deque[_Entry[T]] = deque()
        self.version = 0
        """Moves on every change of the items held (for caches of views of the store)."""

    def __len__(self) -> int:
        return len(self._by_key)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._by_key

    def __iter__(self) -> Iterator[T]:
        return (entry.item for entry in self._by_key.values())

    def get(self, key: Hashable) -> T | None:
        entry = self._by_key.get(key)
        return entry.item if entry is not None else None

    def keys(self) -> list[Hashable]:
        return list(self._by_key)

    def items(self) -> list[T]:
        return [entry.item for entry in self._by_key.values()]

    def _peers_of(self, scope: Hashable) -> dict[Hashable, _Entry[T]]:
        return self._by_scope.get(scope, {}) if self._scope is not None else self._by_key

    def check_valid(self, item: T) -> bool:
        """Whether ``add(item)`` would keep ``item``, without changing anything."""
        key = self._key(item)
        same = self._by_key.get(key)
        # The item under the same key decides most cases (duplicates, repeats) without a scan.
        if same is not None and self._policy(item, same.item) is not Invalidation.INVALIDATES:
            return False
        scope = self._scope(item) if self._scope is not None else None
        for held in self._peers_of(scope).values():
            if held is not same and self._policy(item, held.item) is Invalidation.INVALIDATED:
                return False
        return True

    def add(self, item: T, now: float) -> bool:
        """Add ``item`` unless a held message invalidates it; True when it was added."""
        if not self.check_valid(item):
            return False
        key = self._key(item)
        scope = self._scope(item) if self._scope is not None else None
        peers = self._peers_of(scope)
        doomed = [held for held in peers.values() if self._policy(item, held.item) is Invalidation.INVALIDATES]
        for held in doomed:
            self._remove(held)
            if self._on_invalidate is not None:
                self._on_invalidate(held.item)
        entry = _Entry(item, key, scope, now + self._ttl if self._ttl is not None else None)
        self.version += 1
        self._by_key[key] = entry
        if self._scope is not None:
            self._by_scope.setdefault(scope, {})[key] = entry
        if self._ttl is not None:
            self._fifo.append(entry)
        return True

    def remove(self, key: Hashable) -> T | None:
        """Drop the item held under ``key`` (no callback); returns it."""
        entry = self._by_key.get(key)
        if entry is None:
            return None
        self._remove(entry)
        return entry.item

    def purge(self, should_purge: Callable[[T], bool]) -> list[T]:
        """Drop every item for which ``should_purge`` is true (no callback); returns them."""
        doomed = [entry for entry in self._by_key.values() if should_purge(entry.item)]
        for entry in doomed:
            self._remove(entry)
        return [entry.item for entry in doomed]

    def _remove(self, entry: _Entry[T]) -> None:
        self.version += 1
        entry.live = False
        del self._by_key[entry.key]
        if self._scope is not None:
            scoped = self._by_scope[entry.scope]
            del scoped[entry.key]
            if not scoped:
                del self._by_scope[entry.scope]

    def _drop_dead_head(self) -> None:
        while self._fifo and not self._fifo[0].live:
            self._fifo.popleft()

    def next_deadline(self) -> float | None:
        """When the oldest item expires (None: nothing will)."""
        self._drop_dead_head()
        return self._fifo[0].expires if self._fifo else None

    def expire(self, now: float) -> list[T]:
        """Remove the items whose time is up, calling ``on_expire`` for each; returns them."""
        expired: list[T] = []
        while True:
            self._drop_dead_head()
            if not self._fifo or (head := self._fifo[0]).expires is None or head.expires > now:
                return expired
            self._fifo.popleft()
            self._remove(head)
            expired.append(head.item)
            if self._on_expire is not None:
                self._on_expire(head.item)


# --- the gossip policy ---------------------------------------------------------------------------


def _compare_time(new: pb.PeerTime, held: pb.PeerTime) -> Invalidation:
    """A strictly newer PeerTime wins; an equal one is a duplicate."""
    if (new.inc_num, new.seq_num) > (held.inc_num, held.seq_num):
        return Invalidation.INVALIDATES
    return Invalidation.INVALIDATED


def _seq(msg: pb.GossipMessage) -> int:
    return msg.data_msg.payload.seq_num


def _compare_blocks(a: int, b: int, max_block_count: int) -> Invalidation:
    if a == b:
        return Invalidation.INVALIDATED
    if a - b > max_block_count:
        return Invalidation.INVALIDATES
    if b - a > max_block_count:
        return Invalidation.INVALIDATED
    return Invalidation.NONE


def block_policy(max_block_count: int, of: Callable[[T], pb.GossipMessage]) -> Policy[T]:
    """The gossip policy for a store that holds data messages only (no need to look at kinds)."""

    def compare(new_item: T, held_item: T) -> Invalidation:
        return _compare_blocks(_seq(of(new_item)), _seq(of(held_item)), max_block_count)

    return compare


def gossip_policy(max_block_count: int, of: Callable[[T], pb.GossipMessage] | None = None) -> Policy[T]:
    """Fabric's comparison of gossip messages (see the module docstring).

    ``of`` extracts the GossipMessage from a stored item (e.g. ``lambda m: m.message`` for
    ReceivedMessage); without it the items are GossipMessages themselves.
    """

    def compare(new_item: T, held_item: T) -> Invalidation:
        new = of(new_item) if of is not None else new_item
        held = of(held_item) if of is not None else held_item
        assert isinstance(new, pb.GossipMessage) and isinstance(held, pb.GossipMessage)
        kind = new.WhichOneof("content")
        if kind != held.WhichOneof("content"):
            return Invalidation.NONE
        if kind == "data_msg":
            return _compare_blocks(_seq(new), _seq(held), max_block_count)
        if kind == "alive_msg":
            if new.alive_msg.membership.pki_id != held.alive_msg.membership.pki_id:
                return Invalidation.NONE
            return _compare_time(new.alive_msg.timestamp, held.alive_msg.timestamp)
        if kind == "state_info":
            a_info, b_info = new.state_info, held.state_info
            if a_info.pki_id != b_info.pki_id or a_info.channel_MAC != b_info.channel_MAC:
                return Invalidation.NONE
            return _compare_time(a_info.timestamp, b_info.timestamp)
        if kind == "leadership_msg":
            if new.leadership_msg.pki_id != held.leadership_msg.pki_id:
                return Invalidation.NONE
            return _compare_time(new.leadership_msg.timestamp, held.leadership_msg.timestamp)
        if kind == "peer_identity":
            same = new.peer_identity.pki_id == held.peer_identity.pki_id
            return Invalidation.INVALIDATED if same else Invalidation.NONE
        return Invalidation.NONE

    return compare


def origin_of(msg: pb.GossipMessage) -> bytes | None:
    """PKI-ID of the peer a message speaks for (alive, state info, leadership, identity), else None."""
    kind = kind_of(msg)
    if kind == "alive_msg":
        return msg.alive_msg.membership.pki_id
    if kind == "state_info":
        return msg.state_info.pki_id
    if kind == "leadership_msg":
        return msg.leadership_msg.pki_id
    if kind == "peer_identity":
        return msg.peer_identity.pki_id
    return None


def block_digest(seq_num: int) -> bytes:
    """The pull digest of block ``seq_num``: its number in decimal ASCII."""
    return str(seq_num).encode()
