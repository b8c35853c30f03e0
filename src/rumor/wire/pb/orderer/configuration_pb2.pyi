from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ConsensusType(_message.Message):
    __slots__ = ("type", "metadata", "state")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATE_NORMAL: _ClassVar[ConsensusType.State]
        STATE_MAINTENANCE: _ClassVar[ConsensusType.State]
    STATE_NORMAL: ConsensusType.State
    STATE_MAINTENANCE: ConsensusType.State
    TYPE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    type: str
    metadata: bytes
    state: ConsensusType.State
    def __init__(self, type: _Optional[str] = ..., metadata: _Optional[bytes] = ..., state: _Optional[_Union[ConsensusType.State, str]] = ...) -> None: ...

class BatchSize(_message.Message):
    __slots__ = ("max_message_count", "absolute_max_bytes", "preferred_max_bytes")
    MAX_MESSAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    ABSOLUTE_MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    PREFERRED_MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    max_message_count: int
    absolute_max_bytes: int
    preferred_max_bytes: int
    def __init__(self, max_message_count: _Optional[int] = ..., absolute_max_bytes: _Optional[int] = ..., preferred_max_bytes: _Optional[int] = ...) -> None: ...

class BatchTimeout(_message.Message):
    __slots__ = ("timeout",)
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    timeout: str
    def __init__(self, timeout: _Optional[str] = ...) -> None: ...

class ChannelRestrictions(_message.Message):
    __slots__ = ("max_count",)
    MAX_COUNT_FIELD_NUMBER: _ClassVar[int]
    max_count: int
    def __init__(self, max_count: _Optional[int] = ...) -> None: ...
