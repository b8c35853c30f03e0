"""Parameters of the comm layer, and how they derive from rumor's configuration.

``CommConfig`` is a frozen dataclass holding what the shell needs at run time, with
TLS material as PEM bytes (files are read once, when the config is built, so a
running comm never touches the file system). ``CommConfig.from_config`` maps the
``peer`` section of ``rumor.config.Config`` onto it:

    peer.listenAddress                 -> listen_address
    peer.gossip.dialTimeout, connTimeout, sendBuffSize
    peer.maxRecvMsgSize / maxSendMsgSize -> max_message_size / max_send_message_size
    peer.tls.*                         -> tls (None when peer.tls.enabled is false)

Everything else has a default chosen here and documented on its field.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rumor.config import Config

MiB = 1024 * 1024


@dataclass(frozen=True)
class TLSMaterial:
    """The certificates and keys of one peer, as PEM bytes."""

    cert_pem: bytes
    """The peer's TLS server certificate (first PEM block; chain certificates may follow)."""
    key_pem: bytes = field(repr=False)
    """Private key of ``cert_pem``."""
    root_cas_pem: bytes
    """Trust anchors, concatenated PEM: servers we dial and clients dialing us must chain to one of them.
    Fabric trusts the TLS CAs of every org of the peer's channels; pass them all here."""
    client_cert_pem: bytes = b""
    """Certificate presented when dialing; empty means the server certificate (valid for client auth)."""
    client_key_pem: bytes = field(default=b"", repr=False)
    """Key of ``client_cert_pem``; empty means ``key_pem``."""
    server_name_override: str = ""
    """Host name to check in the servers' certificates instead of the dialed host (Fabric's serverhostoverride)."""

    def __post_init__(self) -> None:
        if not self.cert_pem or not self.key_pem:
            raise ValueError("TLS needs a certificate and its key")
        if not self.root_cas_pem:
            raise ValueError("TLS needs at least one root CA certificate")
        if bool(self.client_cert_pem) != bool(self.client_key_pem):
            raise ValueError("a TLS client certificate needs its key, and a key its certificate")

    @property
    def dial_cert_pem(self) -> bytes:
        return self.client_cert_pem or self.cert_pem

    @property
    def dial_key_pem(self) -> bytes:
        return self.client_key_pem or self.key_pem

    @classmethod
    def from_files(
        cls,
        cert: Path | str,
        key: Path | str,
        root_cas: Iterable[Path | str],
        *,
        client_cert: Path | str | None = None,
        client_key: Path | str | None = None,
        extra_root_cas_pem: Iterable[bytes] = (),
        server_name_override: str = "",
    ) -> TLSMaterial:
        roots = [Path(p).read_bytes() for p in root_cas] + list(extra_root_cas_pem)
        return cls(
            cert_pem=Path(cert).read_bytes(),
            key_pem=Path(key).read_bytes(),
            root_cas_pem=_join_pems(roots),
            client_cert_pem=Path(client_cert).read_bytes() if client_cert else b"",
            client_key_pem=Path(client_key).read_bytes() if client_key else b"",
            server_name_override=server_name_override,
        )


def _join_pems(pems: Iterable[bytes]) -> bytes:
    seen: list[bytes] = []
    for pem in pems:
        pem = pem.strip()
        if pem and pem not in seen:
            seen.append(pem)
    return b"\n".join(seen) + b"\n" if seen else b""


@dataclass(frozen=True)
class CommConfig:
    """What the comm layer needs; defaults are Fabric's where Fabric has the setting."""

    listen_address: str = "127.0.0.1:0"
    """host:port the gRPC server binds; port 0 picks a free port (read it back from ``Comm.endpoint``)."""
    tls: TLSMaterial | None = None
    """TLS material; None runs plaintext (local experiments only) and skips the certificate-hash binding."""
    dial_timeout: float = 3.0
    """Seconds to open a connection (TCP + TLS) to a peer (peer.gossip.dialTimeout)."""
    conn_timeout: float = 2.0
    """Seconds for the Ping and for each side's ConnEstablish to arrive (peer.gossip.connTimeout)."""
    send_buff_size: int = 200
    """Outgoing messages queued per connection; beyond it messages are dropped (peer.gossip.sendBuffSize)."""
    recv_buff_size: int = 20
    """Received messages of one connection that may wait for the peer's handler; beyond it the connection stops
    reading until the handler catches up (peer.gossip.recvBuffSize)."""
    send_buff_bytes: int = 16 * MiB
    """Outgoing bytes queued per connection; beyond it messages are dropped, except that one message of any size
    may wait alone (peer.gossip.sendBuffBytes). A peer that never reads holds at most this much of our memory."""
    write_timeout: float = 30.0
    """Seconds one message may take to write; a connection whose reader stalled longer is closed
    (peer.gossip.writeTimeout)."""
    subscription_buff_size: int = 1000
    """Default queue length of a subscription; a full subscriber loses messages, counted per kind."""
    max_message_size: int = 100 * MiB
    """Largest envelope accepted from a peer (peer.maxRecvMsgSize); a larger one is dropped, the stream goes on."""
    max_send_message_size: int = 100 * MiB
    """Largest envelope this peer sends (peer.maxSendMsgSize); ``send`` drops a larger one."""
    frame_slack: int = 1 * MiB
    """gRPC's own frame limit is max size + this much, so that a frame a little too large reaches our check
    (which drops it and keeps the stream) instead of gRPC's (which kills the stream)."""
    max_invalid_frames: int = 10
    """A connection delivering more invalid frames than this within ``invalid_frame_window`` is closed."""
    invalid_frame_window: float = 10.0
    """Seconds over which invalid frames are counted."""
    presumed_dead_grace: float = 0.5
    """Seconds between a connection breaking and its peer being reported presumed dead, unless a new connection
    to it appears meanwhile (two peers dialing each other at once close one of the two connections)."""
    duplicate_window: float | None = None
    """Two connections to one peer established this close together (seconds) are treated as a simultaneous
    dial and settled by PKI-ID order; older ones are replaced by the newer. None means ``conn_timeout``."""
    keepalive_interval: float = 60.0
    """Seconds of silence before a gRPC keepalive ping (Fabric's peer.keepalive.client.interval)."""
    keepalive_timeout: float = 20.0
    """Seconds to wait for the keepalive answer before the connection is declared broken."""
    stop_grace: float = 1.0
    """Seconds ``stop`` gives in-flight RPCs before cancelling them."""

    def __post_init__(self) -> None:
        for name in (
            "dial_timeout",
            "conn_timeout",
            "invalid_frame_window",
            "keepalive_interval",
            "keepalive_timeout",
            "write_timeout",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        for name in (
            "send_buff_size",
            "send_buff_bytes",
            "subscription_buff_size",
            "max_message_size",
            "max_send_message_size",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.presumed_dead_grace < 0 or self.frame_slack < 0 or self.stop_grace < 0:
            raise ValueError("presumed_dead_grace, frame_slack and stop_grace cannot be negative")

    @property
    def tls_enabled(self) -> bool:
        return self.tls is not None

    @property
    def simultaneous_window(self) -> float:
        return self.conn_timeout if self.duplicate_window is None else self.duplicate_window

    @property
    def grpc_receive_limit(self) -> int:
        return self.max_message_size + self.frame_slack

    @property
    def grpc_send_limit(self) -> int:
        return self.max_send_message_size + self.frame_slack

    def with_(self, **changes: object) -> CommConfig:
        return replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def from_config(
        cls, config: Config, *, extra_root_cas_pem: Iterable[bytes] = (), **overrides: object
    ) -> CommConfig:
        """The comm settings of a loaded rumor configuration.

        ``extra_root_cas_pem`` adds TLS trust anchors beyond ``peer.tls.rootcert.file`` and
        ``peer.tls.clientRootCAs.files``; a peer talking to other orgs needs their TLS CAs (Fabric learns them
        from channel configuration; rumor's MSP registry has them as each org's ``tls_root_certs``).
        """
        peer = config.peer
        gossip = peer.gossip
        tls: TLSMaterial | None = None
        if peer.tls.enabled:
            roots = [p for p in (peer.tls.rootcert_file, *peer.tls.client_root_cas_files) if p]
            tls = TLSMaterial.from_files(
                peer.tls.cert_file,
                peer.tls.key_file,
                roots,
                client_cert=peer.tls.client_cert_file or None,
                client_key=peer.tls.client_key_file or None,
                extra_root_cas_pem=extra_root_cas_pem,
            )
        values: dict[str, object] = {
            "listen_address": peer.listen_address,
            "tls": tls,
            "dial_timeout": gossip.dial_timeout,
            "conn_timeout": gossip.conn_timeout,
            "send_buff_size": gossip.send_buff_size,
            "recv_buff_size": gossip.recv_buff_size,
            "send_buff_bytes": gossip.send_buff_bytes,
            "write_timeout": gossip.write_timeout,
            "max_message_size": peer.max_recv_msg_size,
            "max_send_message_size": peer.max_send_msg_size,
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]
