"""A ledger that cannot store is one health problem per key and a log that stays short however long it lasts."""

from __future__ import annotations

import logging

import pytest

from rumor.ledger.health import StorageHealth

log = logging.getLogger("rumor.test.health")


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == log.name]


def test_a_day_of_failed_retries_logs_a_line_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=log.name)
    health = StorageHealth(log, note="retrying every 5s", log_interval=60.0)
    assert health.problem() is None
    for step in range(24 * 60 * 12):  # a retry every 5 s for a day
        health.failed(
            "mychannel", f"cannot store block 7 of channel mychannel: disk full at /d (try {step})", step * 5.0
        )
    assert health.failures == 24 * 60 * 12
    assert health.problem() == "cannot store block 7 of channel mychannel: disk full at /d (try 17279)"
    logged = lines(caplog)
    assert len(logged) == 24 * 60
    assert logged[0] == (
        "ledger: cannot store block 7 of channel mychannel: disk full at /d (try 0); retrying every 5s"
    )
    assert logged[1].startswith("ledger: still failing: cannot store block 7") and "12 attempts failed" in logged[1]
    health.stored("mychannel")
    assert health.problem() is None
    assert lines(caplog)[-1] == "ledger: storing again (mychannel)"


def test_every_key_must_store_again_and_a_flapping_disk_stays_quiet(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=log.name)
    health = StorageHealth(log, note="retrying every 1s", log_interval=60.0)
    health.failed("a", "cannot store block 1 of channel a: disk full at /d", 0.0)
    health.failed("b", "cannot store block 4 of channel b: disk full at /d", 0.5)
    assert health.problem() == (
        "cannot store block 1 of channel a: disk full at /d; cannot store block 4 of channel b: disk full at /d"
    )
    health.stored("a")
    assert health.problem() == "cannot store block 4 of channel b: disk full at /d"
    health.stored("b")
    assert health.problem() is None
    for second in range(3, 60):  # fails and stores in turn: no more lines within the minute
        health.failed("a", "cannot store block 9 of channel a: disk full at /d", float(second))
        health.stored("a")
    assert len(lines(caplog)) == 2  # the first failure and its end
    health.stored("never-failed")
    assert len(lines(caplog)) == 2
