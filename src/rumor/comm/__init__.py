"""rumor's network shell: gRPC GossipStream and Ping, mutual TLS, the authenticated handshake, one connection per peer.

Everything that crosses a socket goes through ``Comm``; the protocol core only
ever sees ``ReceivedMessage`` objects whose sender the handshake proved.

    comm = Comm(CommConfig.from_config(cfg), mcs, mcs, mcs.identity)
    await comm.start()
    comm.send(envelope, [RemotePeer(pki_id, "peer1:7051")])     # never waits
    async for msg in comm.subscribe(lambda m: m.message.HasField("data_msg")): ...
    await comm.stop()
"""

from rumor.comm.comm import AckResults, Comm, CommMetrics
from rumor.comm.config import CommConfig, TLSMaterial
from rumor.comm.feed import Feed, Subscription
from rumor.comm.handshake import CommError, ConnectionInfo, HandshakeError, certificate_hash

__all__ = [
    "AckResults",
    "Comm",
    "CommConfig",
    "CommError",
    "CommMetrics",
    "ConnectionInfo",
    "Feed",
    "HandshakeError",
    "Subscription",
    "TLSMaterial",
    "certificate_hash",
]
