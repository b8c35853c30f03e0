"""A gossip peer in its own process, for the comm tests: it acks every message with a nonce and echoes
data messages back to their sender. Prints ``READY <port> <pki_id hex>`` once it listens.

    python peer_proc.py <port> <tls|plain> [--dial host:port:pki_hex] <PeerFiles args...>
"""

from __future__ import annotations

import asyncio
import sys

from comm_helpers import PeerFiles, make_comm

from rumor.core.types import RemotePeer
from rumor.wire import messages


async def main(argv: list[str]) -> None:
    port, mode, rest = int(argv[0]), argv[1], argv[2:]
    dial: RemotePeer | None = None
    if rest[0] == "--dial":
        host, dial_port, pki_hex = rest[1].rsplit(":", 2)
        dial = RemotePeer(bytes.fromhex(pki_hex), f"{host}:{dial_port}")
        rest = rest[2:]
    comm = make_comm(PeerFiles.from_args(rest), tls=mode == "tls", listen_address=f"127.0.0.1:{port}")
    await comm.start()
    sub = comm.subscribe()
    print(f"READY {comm.port} {comm.pki_id.hex()}", flush=True)
    if dial is not None:
        comm.send(messages.seal(messages.data_message(b"ch", 0, b"hello")), [dial])
    async for received in sub:
        if received.message.nonce:
            comm.ack(received)
        if received.message.HasField("data_msg"):
            comm.send(received.envelope, [RemotePeer(received.sender, received.sender_endpoint)])


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
