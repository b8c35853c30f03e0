"""Silent rejections are counted and logged at most once a minute per peer and reason."""

from __future__ import annotations

import logging
from collections import Counter

import pytest

from rumor.ops import rejections
from rumor.ops.rejections import RejectionLog


def test_a_flood_of_rejections_is_counted_whole_and_logged_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    counted: Counter[str] = Counter()
    log = RejectionLog(lambda reason: counted.update([reason]), lambda: now[0])
    caplog.set_level(logging.WARNING, "rumor.rejections")
    for _ in range(1000):
        log.event("alive_forged", {"pki_id": b"\x01" * 32, "reason": "bad signature"})
        now[0] += 0.01
    log.event("block_rejected", {"sender": b"\x02" * 32, "channel": "ch", "seq_num": 7})
    log.event("message_rejected", {"sender": b"\x03" * 32, "kind": "alive_msg"})
    log.event("peer_alive", {"pki_id": b"\x01" * 32})  # not a rejection
    assert counted == {"alive_forged": 1000, "block_rejected": 1, "message_rejected": 1}
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines
    assert lines[0].startswith("rejected from " + "01" * 8 + ": alive_forged reason=bad signature"), lines[0]
    assert "channel=ch seq_num=7" in lines[1]
    now[0] += 60
    log.event("alive_forged", {"pki_id": b"\x01" * 32, "reason": "bad signature"})
    assert "(999 more from this peer in the last minute, not logged)" in caplog.records[-1].getMessage()


def test_the_table_of_peers_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rejections, "MAX_TRACKED", 100)
    log = RejectionLog(lambda _r: None, lambda: 0.0)
    logging.getLogger("rumor.rejections").disabled = True
    try:
        for i in range(10_000):
            log.event("alive_forged", {"pki_id": i.to_bytes(32, "little")})
    finally:
        logging.getLogger("rumor.rejections").disabled = False
    assert len(log._last) == 100
