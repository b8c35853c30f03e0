"""The block cutter on its own: explicit times, no event loop."""

from __future__ import annotations

import pytest

from rumor.channelconfig import batch_config
from rumor.orderer.cutter import BatchSettings, BlockCutter, EnvelopeTooLarge

SETTINGS = BatchSettings(max_message_count=3, preferred_max_bytes=100, absolute_max_bytes=500, batch_timeout=2.0)


def env(size: int, tag: int = 0) -> bytes:
    return bytes([tag % 256]) * size


def test_cuts_at_max_message_count() -> None:
    cutter = BlockCutter(SETTINGS)
    assert cutter.ordered(env(10, 1), now=0.0) == []
    assert cutter.ordered(env(10, 2), now=0.1) == []
    assert cutter.ordered(env(10, 3), now=0.2) == [[env(10, 1), env(10, 2), env(10, 3)]]
    assert cutter.pending_count == 0
    assert cutter.deadline is None


def test_cuts_when_pending_bytes_reach_preferred_size() -> None:
    cutter = BlockCutter(SETTINGS)
    assert cutter.ordered(env(60, 1), now=0.0) == []
    assert cutter.ordered(env(40, 2), now=0.0) == [[env(60, 1), env(40, 2)]]
    assert cutter.pending_bytes == 0


def test_envelope_that_would_overflow_the_batch_starts_the_next_one() -> None:
    cutter = BlockCutter(SETTINGS)
    cutter.ordered(env(60, 1), now=0.0)
    assert cutter.ordered(env(50, 2), now=1.0) == [[env(60, 1)]]
    assert cutter.pending_count == 1
    assert cutter.pending_bytes == 50
    # The new batch's timer starts with its own first envelope.
    assert cutter.deadline == 3.0


def test_envelope_of_preferred_size_goes_alone_after_the_pending_batch() -> None:
    cutter = BlockCutter(SETTINGS)
    cutter.ordered(env(10, 1), now=0.0)
    assert cutter.ordered(env(150, 2), now=0.0) == [[env(10, 1)], [env(150, 2)]]
    assert cutter.ordered(env(100, 3), now=0.0) == [[env(100, 3)]]
    assert cutter.pending_count == 0
    assert cutter.deadline is None


def test_timeout_cuts_the_pending_batch() -> None:
    cutter = BlockCutter(SETTINGS)
    assert cutter.deadline is None
    assert cutter.on_tick(100.0) == []
    cutter.ordered(env(10, 1), now=5.0)
    cutter.ordered(env(10, 2), now=6.0)
    assert cutter.deadline == 7.0  # armed by the first envelope, not moved by the second
    assert cutter.on_tick(6.99) == []
    assert cutter.on_tick(7.0) == [[env(10, 1), env(10, 2)]]
    assert cutter.deadline is None
    assert cutter.on_tick(50.0) == []


def test_oversized_envelope_is_refused_and_changes_nothing() -> None:
    cutter = BlockCutter(SETTINGS)
    cutter.ordered(env(10, 1), now=0.0)
    with pytest.raises(EnvelopeTooLarge) as info:
        cutter.ordered(env(501), now=0.0)
    assert info.value.size == 501 and info.value.limit == 500
    assert "501" in str(info.value) and "500" in str(info.value)
    assert cutter.pending_count == 1
    assert cutter.deadline == 2.0
    # Exactly the absolute maximum is still accepted.
    assert cutter.ordered(env(500, 2), now=0.0) == [[env(10, 1)], [env(500, 2)]]


def test_cut_empties_and_disarms() -> None:
    cutter = BlockCutter(SETTINGS)
    assert cutter.cut() == []
    cutter.ordered(env(1), now=0.0)
    assert cutter.cut() == [env(1)]
    assert (cutter.pending_count, cutter.pending_bytes, cutter.deadline) == (0, 0, None)


def test_settings_from_channel_config() -> None:
    settings = BatchSettings.from_config(
        batch_config(max_message_count=7, preferred_max_bytes=10, absolute_max_bytes=20, batch_timeout=0.25)
    )
    assert settings == BatchSettings(7, 10, 20, 0.25)
    with pytest.raises(ValueError):
        BatchSettings(0, 10, 20, 1.0)
    with pytest.raises(ValueError):
        BatchSettings(1, 10, 5, 1.0)
