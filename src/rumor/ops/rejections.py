"""Rejections made visible without letting a hostile peer fill the log.

The core refuses many messages quietly (a forged alive message, a block of another channel, an unsolicited
response, forged leadership...) and reports each as a tracer event. Here each such event is counted
(``gossip_messages_rejected_total{reason}`` on /metrics) and logged at most once per minute per (peer, reason):
the first one at WARNING with its reason, then nothing until the minute is over, when the next one says how many
were suppressed meanwhile. The table of last log times is bounded (``MAX_TRACKED`` pairs, oldest dropped first), so a
peer cannot grow it by changing PKI-IDs.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable

log = logging.getLogger("rumor.rejections")

# Tracer events that mean "a message was refused by a protocol check".
REJECTION_EVENTS = frozenset(
    {
        "alive_forged",
        "spoofed_membership_request",
        "identity_rejected",
        "message_rejected",
        "channel_access_denied",
        "state_info_rejected",
        "leadership_rejected",
        "block_rejected",
        "pull_item_rejected",
        "pull_message_ignored",
        "config_rejected",
    }
)
LOG_INTERVAL = 60.0
MAX_TRACKED = 4096


class RejectionLog:
    """Counts and rate-limits the logging of rejection events; ``clock`` is the shell's monotonic clock."""

    def __init__(self, count: Callable[[str], None], clock: Callable[[], float]) -> None:
        self._count = count
        self._clock = clock
        # (peer, reason) -> (time of the last line, events suppressed since)
        self._last: OrderedDict[tuple[str, str], tuple[float, int]] = OrderedDict()

    def event(self, name: str, fields: dict[str, object]) -> None:
        if name not in REJECTION_EVENTS:
            return
        self._count(name)
        raw = fields.get("sender") or fields.get("pki_id") or b""
        peer = raw.hex()[:16] if isinstance(raw, bytes | bytearray) else str(raw)
        key = (peer, name)
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last[0] < LOG_INTERVAL:
            self._last[key] = (last[0], last[1] + 1)
            return
        suppressed = last[1] if last is not None else 0
        self._last[key] = (now, 0)
        self._last.move_to_end(key)
        while len(self._last) > MAX_TRACKED:
            self._last.popitem(last=False)
        detail = " ".join(
            f"{k}={v.hex()[:16] if isinstance(v, bytes | bytearray) else v}"
            for k, v in fields.items()
            if k not in ("sender", "pki_id")
        )
        more = f" ({suppressed} more from this peer in the last minute, not logged)" if suppressed else ""
        log.warning("rejected from %s: %s %s%s", peer or "?", name, detail, more)
