"""One peer of the loopback benchmark: a real rumor.node.Peer that reports what it sees as JSON lines.

    python bench/loopback_peer.py CORE_YAML GENESIS_BLOCK [PARENT_PID]

With PARENT_PID, the peer gets SIGTERM (and stops cleanly) when that process dies.

stdout, one JSON object per line (times are time.time(), shared by all processes of this machine):
    {"ev": "ready", "pki": HEX}
    {"ev": "recv", "seq": N, "via": "push"|"pull"|"advert", "t": T}     a block accepted from gossip
    {"ev": "commit", "seq": N, "t": T}                                   a block in the ledger
    {"ev": "alive", "pki": HEX, "new": BOOL, "t": T}                    a peer listed alive (new, or back from dead)
    {"ev": "dead", "pki": HEX, "reason": TEXT, "t": T}                   a peer declared dead
    {"ev": "stat", "t": T, "peers": N, "channel_peers": N, "leader": BOOL, "height": N, "cpu_s": S}   every 0.25 s
    {"ev": "bytes", "by_kind": {...}, "msgs_by_kind": {...}, "copies": N, "cpu_s": S}   at SIGTERM, then exit
"""

from __future__ import annotations

import asyncio
import json
import resource
import signal
import sys
import time
from pathlib import Path

from rumor.config import load_config
from rumor.netup import die_with_parent
from rumor.node import Peer
from rumor.wire import messages as wire
from rumor.wire.pb.gossip import message_pb2 as pb

BLOCK_KINDS = frozenset({"data_msg", "data_update", "state_response"})


def pki_hex(value: object) -> str:
    return value.hex() if isinstance(value, bytes) else str(value)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def say(obj: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def main(core_yaml: Path, genesis: Path) -> None:
    config = load_config(core_yaml, env={})
    peer = Peer(config, operations=False)
    by_kind: dict[str, int] = {}
    msgs_by_kind: dict[str, int] = {}

    def on_event(name: str, _now: float, fields: dict[str, object]) -> None:
        if name == "block_received":
            say({"ev": "recv", "seq": fields["seq_num"], "via": fields.get("via", "push"), "t": time.time()})
        elif name == "peer_alive":
            say({"ev": "alive", "pki": pki_hex(fields.get("pki_id")), "new": fields.get("new"), "t": time.time()})
        elif name == "peer_dead":
            say({"ev": "dead", "pki": pki_hex(fields.get("pki_id")), "reason": fields.get("reason"), "t": time.time()})

    peer.tracer.listeners.append(on_event)
    await peer.start()
    send = peer.comm.send

    def counting_send(envelope: pb.Envelope, to: object) -> object:
        try:
            kind = wire.kind_of(wire.open_envelope(envelope))
        except wire.InvalidMessage:
            kind = "?"
        n = len(to)  # type: ignore[arg-type]
        by_kind[kind] = by_kind.get(kind, 0) + n * envelope.ByteSize()
        msgs_by_kind[kind] = msgs_by_kind.get(kind, 0) + n
        return send(envelope, to)  # type: ignore[arg-type]

    peer.comm.send = counting_send  # type: ignore[method-assign]
    channel = await peer.join_channel(genesis.read_bytes())
    say({"ev": "ready", "pki": peer.pki_id.hex()})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    async def commits() -> None:
        async for block in peer.blocks(channel, start=1):
            say({"ev": "commit", "seq": block.header.number, "t": time.time()})

    async def stats() -> None:
        while True:
            say(
                {
                    "ev": "stat",
                    "t": time.time(),
                    "peers": len(peer.peers()),
                    "channel_peers": len(peer.peers_of_channel(channel)),
                    "leader": peer.is_leader(channel),
                    "height": peer.height(channel),
                    "cpu_s": round(cpu_seconds(), 3),
                }
            )
            await asyncio.sleep(0.25)

    tasks = [asyncio.create_task(commits()), asyncio.create_task(stats())]
    await stop.wait()
    for task in tasks:
        task.cancel()
    gossip = peer.core.node.channel(channel).stats
    say(
        {
            "ev": "bytes",
            "by_kind": by_kind,
            "msgs_by_kind": msgs_by_kind,
            "copies": gossip.blocks_received + gossip.blocks_duplicate,
            "cpu_s": cpu_seconds(),
        }
    )
    await peer.stop()


if __name__ == "__main__":
    if len(sys.argv) > 3:
        die_with_parent(int(sys.argv[3]))
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2])))
