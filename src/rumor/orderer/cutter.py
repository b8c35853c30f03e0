"""The block cutter: when a channel's pending envelopes become a block (pure; time comes in as ``now``).

For each envelope accepted for ordering, in order of arrival::

    size > absolute_max_bytes                 -> refused (EnvelopeTooLarge), nothing changes
    size >= preferred_max_bytes               -> cut what is pending (if anything), then the envelope alone
    pending_bytes + size > preferred_max_bytes -> cut what is pending, then start a new batch with it
    otherwise                                 -> append it; cut when max_message_count is reached
                                                 or the batch has grown to preferred_max_bytes
    the first envelope of a batch arms a timer: at first_arrival + batch_timeout the batch is cut

So a block never holds more than max_message_count envelopes, and never more than preferred_max_bytes of
them unless it holds a single oversized one, which is Fabric's rule. ``ordered`` and ``on_tick`` return the
batches cut (oldest first); the caller turns each into a block. The owner of the clock asks ``deadline``
when to call ``on_tick`` next.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rumor.channelconfig import BatchSettings as ChannelBatch


Batch = list[bytes]


class EnvelopeTooLarge(ValueError):
    """An envelope above the channel's absolute_max_bytes; ``size`` and ``limit`` say by how much."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"envelope of {size} bytes exceeds the channel's absolute maximum of {limit} bytes")
        self.size = size
        self.limit = limit


@dataclass(frozen=True)
class BatchSettings:
    """When to cut: the channel config's BatchSize and BatchTimeout, the timeout in seconds."""

    max_message_count: int
    preferred_max_bytes: int
    absolute_max_bytes: int
    batch_timeout: float

    def __post_init__(self) -> None:
        if self.max_message_count < 1 or self.preferred_max_bytes < 1 or self.batch_timeout <= 0:
            raise ValueError(f"unusable batch settings: {self}")
        if self.absolute_max_bytes < self.preferred_max_bytes:
            raise ValueError(f"absolute_max_bytes below preferred_max_bytes: {self}")

    @classmethod
    def from_config(cls, batch: ChannelBatch) -> BatchSettings:
        return cls(
            max_message_count=batch.max_message_count,
            preferred_max_bytes=batch.preferred_max_bytes,
            absolute_max_bytes=batch.absolute_max_bytes,
            batch_timeout=batch.batch_timeout_ms / 1000,
        )


@dataclass
class BlockCutter:
    settings: BatchSettings
    _pending: Batch = field(default_factory=list, init=False)
    _pending_bytes: int = field(default=0, init=False)
    _deadline: float | None = field(default=None, init=False)

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    @property
    def pending_bytes(self) -> int:
        return self._pending_bytes

    @property
    def deadline(self) -> float | None:
        """When ``on_tick`` will cut the pending batch; None when nothing is pending."""
        return self._deadline

    def check_size(self, envelope: bytes) -> None:
        """Raise EnvelopeTooLarge if ``envelope`` could never be ordered on this channel."""
        if len(envelope) > self.settings.absolute_max_bytes:
            raise EnvelopeTooLarge(len(envelope), self.settings.absolute_max_bytes)

    def ordered(self, envelope: bytes, now: float) -> list[Batch]:
        """Accept ``envelope``; the batches this cuts, oldest first. Raises EnvelopeTooLarge."""
        self.check_size(envelope)
        size = len(envelope)
        settings = self.settings
        batches: list[Batch] = []
        if size >= settings.preferred_max_bytes:
            if self._pending:
                batches.append(self.cut())
            batches.append([envelope])
            return batches
        if self._pending_bytes + size > settings.preferred_max_bytes:
            batches.append(self.cut())
        if not self._pending:
            self._deadline = now + settings.batch_timeout
        self._pending.append(envelope)
        self._pending_bytes += size
        if len(self._pending) >= settings.max_message_count or self._pending_bytes >= settings.preferred_max_bytes:
            batches.append(self.cut())
        return batches

    def on_tick(self, now: float) -> list[Batch]:
        """The pending batch if its timeout has passed at ``now``, else nothing."""
        if self._deadline is not None and now >= self._deadline:
            return [self.cut()]
        return []

    def cut(self) -> Batch:
        """Everything pending, as one batch (possibly empty), and a disarmed timer."""
        batch, self._pending, self._pending_bytes, self._deadline = self._pending, [], 0, None
        return batch
