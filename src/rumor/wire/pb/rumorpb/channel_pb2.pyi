from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OrgConfig(_message.Message):
    __slots__ = ("mspid", "root_certs", "tls_root_certs", "anchor_peers", "crls")
    MSPID_FIELD_NUMBER: _ClassVar[int]
    ROOT_CERTS_FIELD_NUMBER: _ClassVar[int]
    TLS_ROOT_CERTS_FIELD_NUMBER: _ClassVar[int]
    ANCHOR_PEERS_FIELD_NUMBER: _ClassVar[int]
    CRLS_FIELD_NUMBER: _ClassVar[int]
    mspid: str
    root_certs: _containers.RepeatedScalarFieldContainer[bytes]
    tls_root_certs: _containers.RepeatedScalarFieldContainer[bytes]
    anchor_peers: _containers.RepeatedScalarFieldContainer[str]
    crls: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, mspid: _Optional[str] = ..., root_certs: _Optional[_Iterable[bytes]] = ..., tls_root_certs: _Optional[_Iterable[bytes]] = ..., anchor_peers: _Optional[_Iterable[str]] = ..., crls: _Optional[_Iterable[bytes]] = ...) -> None: ...

class OrdererOrgConfig(_message.Message):
    __slots__ = ("mspid", "root_certs", "tls_root_certs", "endpoints")
    MSPID_FIELD_NUMBER: _ClassVar[int]
    ROOT_CERTS_FIELD_NUMBER: _ClassVar[int]
    TLS_ROOT_CERTS_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    mspid: str
    root_certs: _containers.RepeatedScalarFieldContainer[bytes]
    tls_root_certs: _containers.RepeatedScalarFieldContainer[bytes]
    endpoints: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, mspid: _Optional[str] = ..., root_certs: _Optional[_Iterable[bytes]] = ..., tls_root_certs: _Optional[_Iterable[bytes]] = ..., endpoints: _Optional[_Iterable[str]] = ...) -> None: ...

class BatchConfig(_message.Message):
    __slots__ = ("max_message_count", "preferred_max_bytes", "absolute_max_bytes", "batch_timeout_ms")
    MAX_MESSAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    PREFERRED_MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    ABSOLUTE_MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    BATCH_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    max_message_count: int
    preferred_max_bytes: int
    absolute_max_bytes: int
    batch_timeout_ms: int
    def __init__(self, max_message_count: _Optional[int] = ..., preferred_max_bytes: _Optional[int] = ..., absolute_max_bytes: _Optional[int] = ..., batch_timeout_ms: _Optional[int] = ...) -> None: ...

class ChannelConfig(_message.Message):
    __slots__ = ("name", "orgs", "orderer_orgs", "batch")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ORGS_FIELD_NUMBER: _ClassVar[int]
    ORDERER_ORGS_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    name: str
    orgs: _containers.RepeatedCompositeFieldContainer[OrgConfig]
    orderer_orgs: _containers.RepeatedCompositeFieldContainer[OrdererOrgConfig]
    batch: BatchConfig
    def __init__(self, name: _Optional[str] = ..., orgs: _Optional[_Iterable[_Union[OrgConfig, _Mapping]]] = ..., orderer_orgs: _Optional[_Iterable[_Union[OrdererOrgConfig, _Mapping]]] = ..., batch: _Optional[_Union[BatchConfig, _Mapping]] = ...) -> None: ...
