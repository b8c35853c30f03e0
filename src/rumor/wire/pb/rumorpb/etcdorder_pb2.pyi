from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class BlockRecord(_message.Message):
    __slots__ = ("block", "keys", "last_revision", "writer", "term")
    BLOCK_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    LAST_REVISION_FIELD_NUMBER: _ClassVar[int]
    WRITER_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    block: bytes
    keys: _containers.RepeatedScalarFieldContainer[bytes]
    last_revision: int
    writer: str
    term: int
    def __init__(self, block: _Optional[bytes] = ..., keys: _Optional[_Iterable[bytes]] = ..., last_revision: _Optional[int] = ..., writer: _Optional[str] = ..., term: _Optional[int] = ...) -> None: ...
