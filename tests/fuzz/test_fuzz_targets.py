"""Every fuzz target, for a bounded number of hypothesis examples: 0 crashes, 0 hangs (the long run is make fuzz).

Two ways of driving the same targets (tests/fuzz/fuzz_targets.py):

- by seed: hypothesis draws a seed and a number of inputs; a seeded ``random.Random`` makes every decision of the
  mutations, as in the long run. Fast, so each target gets a few hundred inputs here.
- by draws: hypothesis makes every decision itself (``HypothesisChooser``), so that a failure shrinks to the few
  decisions that matter. Slower, so fewer examples; only for the targets whose inputs are deterministic (ECDSA
  signatures are not: an example replayed with another signature would confuse hypothesis).

``derandomize=True``: the examples are the same on every run and every machine. Each example of a peer target
starts from a fresh peer, so that a failure replays. An input running longer than HANG_SECONDS fails as a hang
(pytest-timeout stops an endless one).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator

import pytest
from fuzz_common import HANG_SECONDS, Target
from fuzz_mutate import Chooser, HypothesisChooser, RandomChooser
from fuzz_targets import TARGETS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FRESH_PER_EXAMPLE = {name for name in TARGETS if name.startswith("peer-")}
"""Targets with state that builds up (a peer): a fresh one for each example. The others are built once."""

BY_DRAWS = ("wire", "handshake", "peer-cheap-fabric", "peer-cheap-enhanced", "block", "config-block", "config-update")

EXAMPLES_BY_SEED = {"peer-x509-fabric": 40, "policies": 60, "config-block": 80, "config-update": 80}
"""Fewer examples for the slow targets (real ECDSA, policy evaluation); the rest get DEFAULT_EXAMPLES."""
DEFAULT_EXAMPLES = 150

_shared: dict[str, Target] = {}


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    # The core logs each refusal at INFO or WARNING; thousands of them slow the run and say nothing here.
    logging.disable(logging.CRITICAL)
    yield
    logging.disable(logging.NOTSET)


def _target(name: str) -> Target:
    if name in FRESH_PER_EXAMPLE:
        return TARGETS[name](0)
    if name not in _shared:
        _shared[name] = TARGETS[name](0)
    return _shared[name]


def _run(target: Target, chooser: Chooser, steps: int) -> list[str]:
    outcomes = []
    for _ in range(steps):
        started = time.perf_counter()
        outcomes.append(target.run(chooser))  # a crash raises here
        took = time.perf_counter() - started
        assert took < HANG_SECONDS, f"{target.name}: an input took {took:.1f} s (a hang)"
    return outcomes


@pytest.mark.parametrize("name", list(TARGETS))
def test_target_by_seed(name: str) -> None:
    seen: set[str] = set()

    @settings(
        max_examples=EXAMPLES_BY_SEED.get(name, DEFAULT_EXAMPLES),
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(seed=st.integers(0, 2**32 - 1), steps=st.integers(1, 12))
    def check(seed: int, steps: int) -> None:
        seen.update(_run(_target(name), RandomChooser(random.Random(seed)), steps))

    check()
    # The inputs must not all die at the first check: some get through to the code behind it.
    assert seen - {"rejected", "undecodable", "shell-rejected", "shell-handled"}, f"{name}: nothing got through: {seen}"


@pytest.mark.parametrize("name", BY_DRAWS)
def test_target_by_draws(name: str) -> None:
    @settings(
        max_examples=25,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        chooser = HypothesisChooser(data)
        _run(_target(name), chooser, data.draw(st.integers(1, 4)))

    check()
