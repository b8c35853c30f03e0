"""Leader election among the peers of one organization on one channel (sans-IO).

The leader is the peer that pulls blocks from the ordering service; the others
get them by gossip. The algorithm (Fabric's):

    start:     sample membership every membershipSampleInterval until two samples agree
               or startupGracePeriod passes (let the view settle before competing)
    follower:  a declaration from a leader resets the silence timer;
               after leaderAliveThreshold of silence -> campaign
    campaign:  send a proposal; for leaderElectionDuration collect proposals and declarations;
               a declaration, or a proposal from a lower PKI-ID, ends the campaign as follower;
               otherwise become leader
    leader:    declare every leaderAliveThreshold/2; a declaration from a lower PKI-ID -> step down
    yield:     a leader whose block source fails steps down and does not campaign
               for 6 x leaderAliveThreshold, giving another peer the chance to lead

PKI-IDs compare bytewise; the lowest wins. Messages are handed back to the
caller as ``Outgoing`` values: the caller signs them into LeadershipMessages
(with its PeerTime) and gossips them to same-org peers of the channel.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from rumor.config import ElectionConfig

__all__ = ["ElectionConfig", "LeaderElection", "Outgoing", "Phase"]

PKIid = bytes

YIELD_FACTOR = 6


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A leadership message to gossip: a declaration ("I lead") or a proposal ("I could lead")."""

    is_declaration: bool


class Phase(Enum):
    SETTLING = "settling"
    FOLLOWER = "follower"
    CAMPAIGN = "campaign"
    LEADER = "leader"


class LeaderElection:
    """One peer's election state for one channel."""

    def __init__(self, self_id: PKIid, config: ElectionConfig, membership_size: int = 0) -> None:
        self.self_id = self_id
        self.config = config
        self.phase = Phase.SETTLING
        self.leader: PKIid | None = None
        self._deadline: float | None = None
        self._settle_until = 0.0
        self._last_sample = membership_size
        self._last_heard = 0.0
        self._lower_proposal = False
        self._yield_until = 0.0
        self.changes = 0

    @property
    def is_leader(self) -> bool:
        return self.phase is Phase.LEADER

    def start(self, now: float, membership_size: int) -> list[Outgoing]:
        self.phase = Phase.SETTLING
        self._settle_until = now + self.config.startup_grace_period
        self._last_sample = membership_size
        self._deadline = now + self.config.membership_sample_interval
        return []

    def next_deadline(self) -> float | None:
        return self._deadline

    def on_tick(self, now: float, membership_size: int) -> list[Outgoing]:
        """Advance timers; ``membership_size`` is how many same-org channel peers are alive now."""
        if self._deadline is None or now < self._deadline:
            return []
        if self.phase is Phase.SETTLING:
            stable = membership_size == self._last_sample
            self._last_sample = membership_size
            if self.leader is not None:
                return self._follow(now)
            if stable or now >= self._settle_until:
                return self._campaign(now)
            self._deadline = now + self.config.membership_sample_interval
            return []
        if self.phase is Phase.FOLLOWER:
            silence_ends = self._last_heard + self.config.leader_alive_threshold
            # compared in the same form the deadline was computed, so float rounding cannot stall the timer
            if now >= silence_ends:
                self._set_leader(None)
                if now < self._yield_until:
                    self._deadline = self._yield_until
                    return []
                return self._campaign(now)
            self._deadline = silence_ends
            return []
        if self.phase is Phase.CAMPAIGN:
            if self._lower_proposal or self.leader is not None:
                return self._follow(now)
            return self._lead(now)
        # leader: declare again
        self._deadline = now + self.config.leader_alive_threshold / 2
        return [Outgoing(is_declaration=True)]

    def on_message(self, sender: PKIid, is_declaration: bool, now: float) -> list[Outgoing]:
        """A verified leadership message from ``sender``, a same-org peer of the channel."""
        if sender == self.self_id:
            return []
        if is_declaration:
            if self.phase is Phase.LEADER:
                if sender < self.self_id:
                    self._set_leader(sender)
                    self._last_heard = now
                    return self._follow(now)
                return [Outgoing(is_declaration=True)]  # remind the usurper who leads
            self._set_leader(sender)
            self._last_heard = now
            if self.phase is Phase.FOLLOWER:
                self._deadline = now + self.config.leader_alive_threshold
            return []
        if self.phase is Phase.CAMPAIGN and sender < self.self_id:
            self._lower_proposal = True
        return []

    def yield_leadership(self, now: float) -> list[Outgoing]:
        """Step down (the block source failed) and stay out of elections for a while."""
        self._yield_until = now + YIELD_FACTOR * self.config.leader_alive_threshold
        if self.phase is Phase.LEADER:
            self._set_leader(None)
        self.phase = Phase.FOLLOWER
        self._last_heard = now
        self._deadline = now + self.config.leader_alive_threshold
        return []

    def _campaign(self, now: float) -> list[Outgoing]:
        self.phase = Phase.CAMPAIGN
        self._lower_proposal = False
        self._deadline = now + self.config.leader_election_duration
        return [Outgoing(is_declaration=False)]

    def _follow(self, now: float) -> list[Outgoing]:
        self.phase = Phase.FOLLOWER
        if self.leader is None:
            self._last_heard = now
        self._deadline = self._last_heard + self.config.leader_alive_threshold
        return []

    def _lead(self, now: float) -> list[Outgoing]:
        self.phase = Phase.LEADER
        self._set_leader(self.self_id)
        self._deadline = now + self.config.leader_alive_threshold / 2
        return [Outgoing(is_declaration=True)]

    def _set_leader(self, leader: PKIid | None) -> None:
        if leader != self.leader:
            self.leader = leader
            self.changes += 1
