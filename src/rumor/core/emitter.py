"""Push: batch outgoing messages and send each to a few random eligible peers, a few times.

    add(msg) ──> buffer ──(len(buffer) >= burst_size, or the batch is burst_latency old)──> flush
    flush:  for each buffered message:
                peers = up to peer_num random members that its route accepts, minus its excluded ones
                Send(message, peers);  iterations_left -= 1;  keep it buffered while iterations_left > 0

A message thus goes out ``iterations`` times over successive flushes, each time
to a fresh random choice of peers. The timer is expressed as ``next_deadline``:
``burst_latency`` after the first message entered an empty buffer, or after a
flush that left messages buffered for further iterations.

Each buffered message carries its *route*: a function from a member to the
envelope to send it (None: that member must not get the message). The route
decides eligibility from the message's tag (org only, channel and org, ...)
and may hand a member of another org a stripped copy (no SecretEnvelope).
``routing_filter`` builds the tag rules; the composition root combines it with
what it knows of channels and disclosure.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from rumor.core.types import Effect, NetworkMember, RemotePeer, Send
from rumor.wire import messages as wire
from rumor.wire.pb.gossip import message_pb2 as pb

Route = Callable[[NetworkMember], "pb.Envelope | None"]
"""The envelope to push to a member, or None when the member is not eligible."""

MemberFilter = Callable[[NetworkMember], bool]


def routing_filter(
    tag: int,
    *,
    self_org: bytes,
    in_channel: MemberFilter | None = None,
    disclose_to_other_orgs: bool = True,
) -> MemberFilter:
    """Who may receive a message with ``tag``.

    ``in_channel`` tells the channel's members (None: the message's channel is
    unknown here, so channel-scoped tags reach nobody outside our org). Without
    ``disclose_to_other_orgs`` (the message speaks for a peer that has no
    external endpoint) nothing leaves our org.
    """

    def same_org(m: NetworkMember) -> bool:
        return m.org == self_org

    def channel(m: NetworkMember) -> bool:
        return in_channel is not None and in_channel(m)

    rule: MemberFilter
    if tag == wire.ORG_ONLY:
        rule = same_org
    elif tag == wire.CHAN_AND_ORG:

        def rule(m: NetworkMember) -> bool:
            return same_org(m) and channel(m)

    elif tag == wire.CHAN_OR_ORG:

        def rule(m: NetworkMember) -> bool:
            return same_org(m) or channel(m)

    elif tag == wire.CHAN_ONLY:
        rule = channel
    elif tag == wire.EMPTY:

        def rule(m: NetworkMember) -> bool:
            return True

    else:
        # UNDEFINED (acks) and unknown tags are never pushed.
        def rule(m: NetworkMember) -> bool:
            return False

    if disclose_to_other_orgs:
        return rule

    def guarded(m: NetworkMember) -> bool:
        return same_org(m) and rule(m)

    return guarded


@dataclass(slots=True)
class _Item:
    envelope: pb.Envelope
    route: Route
    exclude: frozenset[bytes]
    iterations_left: int


class Emitter:
    """Batches pushed messages and picks their recipients (sans-IO; see the module docstring)."""

    def __init__(
        self,
        *,
        burst_size: int,
        burst_latency: float,
        iterations: int,
        peer_num: int,
        membership: Callable[[], Sequence[NetworkMember]],
        rng: random.Random,
    ) -> None:
        self.burst_size = max(1, burst_size)
        self.burst_latency = burst_latency
        self.iterations = iterations
        self.peer_num = peer_num
        self._membership = membership
        self._rng = rng
        self._buffer: list[_Item] = []
        self._deadline: float | None = None
        self._seen: tuple[NetworkMember, ...] | None = None
        self._sorted: list[NetworkMember] = []

    def __len__(self) -> int:
        return len(self._buffer)

    def add(self, envelope: pb.Envelope, route: Route, now: float, exclude: Collection[bytes] = ()) -> list[Effect]:
        """Queue ``envelope`` for push; ``exclude`` lists PKI-IDs never to send it to (its origin, its sender)."""
        if self.iterations <= 0 or self.peer_num <= 0:
            return []
        if not self._buffer:
            self._deadline = now + self.burst_latency
        self._buffer.append(_Item(envelope, route, frozenset(exclude), self.iterations))
        if len(self._buffer) >= self.burst_size:
            return self.flush(now)
        return []

    def next_deadline(self) -> float | None:
        return self._deadline

    def on_tick(self, now: float) -> list[Effect]:
        if self._deadline is not None and now >= self._deadline:
            return self.flush(now)
        return []

    def flush(self, now: float) -> list[Effect]:
        """Send every buffered message once (to fresh random peers) and keep those with iterations left."""
        if not self._buffer:
            self._deadline = None
            return []
        members = self._sorted_members()
        effects: list[Effect] = []
        for item in self._buffer:
            effects.extend(self._send(item, members))
            item.iterations_left -= 1
        self._buffer = [item for item in self._buffer if item.iterations_left > 0]
        self._deadline = now + self.burst_latency if self._buffer else None
        return effects

    def _sorted_members(self) -> list[NetworkMember]:
        """Members sorted by PKI-ID, so that the random choice depends on the seed only, not on how membership
        was stored. A membership that hands out the same tuple until it changes is sorted once per change."""
        members = self._membership()
        if isinstance(members, tuple):
            if members is not self._seen:
                self._seen = members
                self._sorted = sorted(members, key=lambda m: m.pki_id)
            return self._sorted
        return sorted(members, key=lambda m: m.pki_id)

    def _send(self, item: _Item, members: list[NetworkMember]) -> list[Effect]:
        # Like Fabric's SelectPeers: walk a random permutation and keep the first peer_num that qualify.
        # The permutation is drawn lazily (Fisher-Yates, one position at a time), so a pick costs in
        # proportion to the peers looked at, not to the size of the membership.
        pool = list(members)
        n = len(pool)
        randrange = self._rng.randrange
        chosen: list[tuple[NetworkMember, pb.Envelope]] = []
        for i in range(n):
            j = i + randrange(n - i)
            member = pool[j]
            pool[j] = pool[i]
            if member.pki_id in item.exclude:
                continue
            envelope = item.route(member)
            if envelope is None:
                continue
            chosen.append((member, envelope))
            if len(chosen) >= self.peer_num:
                break
        return group_sends(chosen)


def group_sends(targets: Sequence[tuple[NetworkMember, pb.Envelope]]) -> list[Effect]:
    """One Send per distinct envelope (e.g. full for our org, stripped for others), keeping target order."""
    groups: list[tuple[pb.Envelope, list[RemotePeer]]] = []
    for member, envelope in targets:
        peer = RemotePeer(member.pki_id, member.preferred_endpoint)
        for env, peers in groups:
            if env is envelope:
                peers.append(peer)
                break
        else:
            groups.append((envelope, [peer]))
    return [Send(envelope=env, to=tuple(peers)) for env, peers in groups]
