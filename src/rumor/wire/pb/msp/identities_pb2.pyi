from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class SerializedIdentity(_message.Message):
    __slots__ = ("mspid", "id_bytes")
    MSPID_FIELD_NUMBER: _ClassVar[int]
    ID_BYTES_FIELD_NUMBER: _ClassVar[int]
    mspid: str
    id_bytes: bytes
    def __init__(self, mspid: _Optional[str] = ..., id_bytes: _Optional[bytes] = ...) -> None: ...
