from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ConfigMetadata(_message.Message):
    __slots__ = ("consenters", "options")
    CONSENTERS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    consenters: _containers.RepeatedCompositeFieldContainer[Consenter]
    options: Options
    def __init__(self, consenters: _Optional[_Iterable[_Union[Consenter, _Mapping]]] = ..., options: _Optional[_Union[Options, _Mapping]] = ...) -> None: ...

class Consenter(_message.Message):
    __slots__ = ("host", "port", "client_tls_cert", "server_tls_cert")
    HOST_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    CLIENT_TLS_CERT_FIELD_NUMBER: _ClassVar[int]
    SERVER_TLS_CERT_FIELD_NUMBER: _ClassVar[int]
    host: str
    port: int
    client_tls_cert: bytes
    server_tls_cert: bytes
    def __init__(self, host: _Optional[str] = ..., port: _Optional[int] = ..., client_tls_cert: _Optional[bytes] = ..., server_tls_cert: _Optional[bytes] = ...) -> None: ...

class Options(_message.Message):
    __slots__ = ("tick_interval", "election_tick", "heartbeat_tick", "max_inflight_blocks", "snapshot_interval_size")
    TICK_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    ELECTION_TICK_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_TICK_FIELD_NUMBER: _ClassVar[int]
    MAX_INFLIGHT_BLOCKS_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_INTERVAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    tick_interval: str
    election_tick: int
    heartbeat_tick: int
    max_inflight_blocks: int
    snapshot_interval_size: int
    def __init__(self, tick_interval: _Optional[str] = ..., election_tick: _Optional[int] = ..., heartbeat_tick: _Optional[int] = ..., max_inflight_blocks: _Optional[int] = ..., snapshot_interval_size: _Optional[int] = ...) -> None: ...

class BlockMetadata(_message.Message):
    __slots__ = ("consenter_ids", "next_consenter_id", "raft_index")
    CONSENTER_IDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CONSENTER_ID_FIELD_NUMBER: _ClassVar[int]
    RAFT_INDEX_FIELD_NUMBER: _ClassVar[int]
    consenter_ids: _containers.RepeatedScalarFieldContainer[int]
    next_consenter_id: int
    raft_index: int
    def __init__(self, consenter_ids: _Optional[_Iterable[int]] = ..., next_consenter_id: _Optional[int] = ..., raft_index: _Optional[int] = ...) -> None: ...
