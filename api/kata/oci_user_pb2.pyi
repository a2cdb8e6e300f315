from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class User(_message.Message):
    __slots__ = ("UID", "GID", "AdditionalGids", "Username")
    UID_FIELD_NUMBER: _ClassVar[int]
    GID_FIELD_NUMBER: _ClassVar[int]
    ADDITIONALGIDS_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    UID: int
    GID: int
    AdditionalGids: _containers.RepeatedScalarFieldContainer[int]
    Username: str
    def __init__(self, UID: _Optional[int] = ..., GID: _Optional[int] = ..., AdditionalGids: _Optional[_Iterable[int]] = ..., Username: _Optional[str] = ...) -> None: ...
