"""One py-libp2p gossipsub node of bench/gossipsub.py; runs in its own virtual environment (libp2p 0.8.1).

    python gossipsub_node.py INDEX PORT

Talks JSON lines with the driver. stdout: {"ev": "ready", "addr": MULTIADDR}, then for every message
received {"ev": "recv", "seq": N, "t": T} (time.time()), {"ev": "published", "seq": N, "t": T} on the
publisher, and at the end {"ev": "done", "cpu_s": S, "stdout_bytes": B}. stdin: {"connect": [MULTIADDR...]},
then {"publish": COUNT, "size": BYTES, "rate": PER_S} (the publisher only), then {"stop": true}.

Settings as bench/results/README.md states them: go-libp2p's mesh degrees D=6, D_lo=4, D_hi=12, heartbeat 1 s,
/meshsub/1.1.0, signing on; spam protection, adaptive gossip and eclipse protection off (they are not gossipsub and
distort a loopback benchmark).
"""

from __future__ import annotations

import json
import resource
import sys
import time

import multiaddr
import trio
from libp2p import new_host
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11, GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.tools.anyio_service import background_trio_service

TOPIC = "rumor-bench"
written = 0


def say(obj: dict[str, object]) -> None:
    global written
    line = json.dumps(obj) + "\n"
    written += len(line)
    sys.stdout.write(line)
    sys.stdout.flush()


async def read_commands(queue: trio.MemorySendChannel[dict[str, object]]) -> None:
    stdin = trio.lowlevel.FdStream(0)
    buffer = b""
    while True:
        chunk = await stdin.receive_some(65536)
        if not chunk:
            await queue.send({"stop": True})
            return
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip():
                await queue.send(json.loads(line))


async def main(index: int, port: int) -> None:
    host = new_host()
    router = GossipSub(
        [PROTOCOL_ID_V11],
        degree=6,
        degree_low=4,
        degree_high=12,
        heartbeat_interval=1,
        adaptive_gossip_enabled=False,
        spam_protection_enabled=False,
        eclipse_protection_enabled=False,
    )
    pubsub = Pubsub(host, router, strict_signing=True)
    listen = multiaddr.Multiaddr(f"/ip4/127.0.0.1/tcp/{port}")
    send, commands = trio.open_memory_channel[dict[str, object]](100)
    async with (
        host.run([listen]),
        trio.open_nursery() as nursery,
        background_trio_service(pubsub),
        background_trio_service(router),
    ):
        await pubsub.wait_until_ready()
        subscription = await pubsub.subscribe(TOPIC)
        say({"ev": "ready", "addr": f"{listen}/p2p/{host.get_id()}"})
        nursery.start_soon(read_commands, send)

        async def receive() -> None:
            while True:
                message = await subscription.get()
                seq = int.from_bytes(message.data[:8], "big")
                say({"ev": "recv", "seq": seq, "t": time.time()})

        nursery.start_soon(receive)
        async for command in commands:
            if "connect" in command:
                for addr in command["connect"]:  # type: ignore[union-attr]
                    try:
                        await host.connect(info_from_p2p_addr(multiaddr.Multiaddr(str(addr))))
                    except Exception as exc:
                        say({"ev": "connect_failed", "addr": str(addr), "error": str(exc)})
                say({"ev": "connected", "peers": len(host.get_network().connections)})
            elif "publish" in command:
                count, size, rate = int(command["publish"]), int(command["size"]), float(command["rate"])  # type: ignore[arg-type]
                period = 1.0 / rate
                start = trio.current_time()
                for seq in range(1, count + 1):
                    await trio.sleep_until(start + (seq - 1) * period)
                    payload = seq.to_bytes(8, "big") + b"." * max(0, size - 8)
                    say({"ev": "published", "seq": seq, "t": time.time()})
                    await pubsub.publish(TOPIC, payload)
            elif "stop" in command:
                usage = resource.getrusage(resource.RUSAGE_SELF)
                say({"ev": "done", "cpu_s": usage.ru_utime + usage.ru_stime, "stdout_bytes": written})
                nursery.cancel_scope.cancel()
                break


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]), int(sys.argv[2]))
