"""Prometheus metrics of one peer, fed by tracer events.

Each peer owns its registry (several peers may run in one process, as tests and
the embeddable API do), and the metric names are Fabric's (namespace
``gossip``) so dashboards made for Fabric peers read rumor's too.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

NAMESPACE = "gossip"


class PeerMetrics:
    """The metrics of docs/protocol.md ("Metrics"), plus a few of rumor's own, in one registry."""

    def __init__(self) -> None:
        self.refresh: Callable[[], None] | None = None
        """Called before each scrape, to copy in values kept elsewhere (comm counters, buffer sizes)."""
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.state_height = Gauge(
            "state_height", "Ledger height of the channel", ["channel"], namespace=NAMESPACE, registry=r
        )
        self.state_commit_duration = Histogram(
            "state_commit_duration", "Seconds to commit a block", ["channel"], namespace=NAMESPACE, registry=r
        )
        self.payload_buffer_size = Gauge(
            "payload_buffer_size", "Blocks waiting in the in-order buffer", ["channel"], namespace=NAMESPACE, registry=r
        )
        self.leader_election_leader = Gauge(
            "leader_election_leader",
            "1 when this peer leads its org on the channel",
            ["channel"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.comm_messages_sent = Counter("comm_messages_sent", "Messages sent", namespace=NAMESPACE, registry=r)
        self.comm_messages_received = Counter(
            "comm_messages_received", "Messages received", namespace=NAMESPACE, registry=r
        )
        self.comm_overflow_count = Counter(
            "comm_overflow_count", "Messages dropped because a send queue was full", namespace=NAMESPACE, registry=r
        )
        self.comm_write_timeouts = Counter(
            "comm_write_timeouts",
            "Connections closed because a write outlasted writeTimeout (the peer stopped reading)",
            namespace=NAMESPACE,
            registry=r,
        )
        # The defences against hostile peers, each a count an operator may alert on.
        self.membership_responses_refused = Counter(
            "membership_responses_refused",
            "Membership responses not read (unsolicited, oversized) or cut short and their sender penalized (forged)",
            ["reason"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.membership_identify_dials_throttled = Counter(
            "membership_identify_dials_throttled",
            "Dials to learn an unknown peer's identity not made (identifyDials token bucket empty)",
            namespace=NAMESPACE,
            registry=r,
        )
        self.state_requests_throttled = Counter(
            "state_requests_throttled",
            "State-transfer requests not served (serveBytesPerSecond of the requester spent)",
            ["channel"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.state_peers_distrusted = Counter(
            "state_peers_distrusted",
            "Peers not asked for blocks for distrustPeriod (they answered without the blocks their height promised)",
            ["channel"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.membership_total_peers_known = Gauge(
            "membership_total_peers_known", "Alive peers known", namespace=NAMESPACE, registry=r
        )
        self.messages_rejected = Counter(
            "messages_rejected",
            "Messages refused by a protocol check (forged, unsolicited, tampered, not of the channel), by check",
            ["reason"],
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.blocks_rejected = Counter(
            "blocks_rejected",
            "Blocks refused (bad signature, broken chain)",
            ["channel"],
            namespace=NAMESPACE,
            registry=r,
        )
        # rumor's own, in Fabric's ledger namespace: attempts to commit that the file system refused (disk full,
        # I/O error), each retry counted; /healthz names the problem while it lasts.
        self.ledger_store_failures = Counter(
            "store_failures",
            "Commits the file system refused (disk full, I/O error), retries included",
            ["channel"],
            namespace="ledger",
            registry=r,
        )

        # rumor's own, beyond Fabric's families (Fabric's private-data metrics are left out: rumor has none).
        self.block_propagation = Histogram(
            "block_propagation_seconds",
            "From the newest envelope's timestamp in a block (its client's clock) to this peer's commit of it",
            ["channel"],
            namespace=NAMESPACE,
            registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 60, 300),
        )
        self.comm_bytes_sent = Counter("comm_bytes_sent", "Bytes of messages sent", namespace=NAMESPACE, registry=r)
        self.comm_bytes_received = Counter(
            "comm_bytes_received", "Bytes of messages received", namespace=NAMESPACE, registry=r
        )
        self.comm_handshakes_failed = Counter(
            "comm_handshakes_failed", "Connections that failed before or during the handshake", namespace=NAMESPACE,
            registry=r,
        )  # fmt: skip
        self.comm_connections = Gauge("comm_connections", "Open gossip connections", namespace=NAMESPACE, registry=r)
        self.membership_dead_peers = Gauge(
            "membership_dead_peers", "Peers known but presumed dead", namespace=NAMESPACE, registry=r
        )
        self.leader_election_changes = Counter(
            "leader_election_changes", "Times this peer became or stopped being its org's leader", ["channel"],
            namespace=NAMESPACE, registry=r,
        )  # fmt: skip
        self.state_requests_sent = Counter(
            "state_requests_sent", "State-transfer requests sent", ["channel"], namespace=NAMESPACE, registry=r
        )
        self.state_requests_served = Counter(
            "state_requests_served", "State-transfer requests answered", ["channel"], namespace=NAMESPACE, registry=r
        )
        self.state_blocks_committed = Counter(
            "state_blocks_committed", "Blocks committed, by any path (push, pull, state transfer, deliver)",
            ["channel"], namespace=NAMESPACE, registry=r,
        )  # fmt: skip

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        if self.refresh is not None:
            self.refresh()
        return generate_latest(self.registry)
