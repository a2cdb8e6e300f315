from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class SecureMountRequest(_message.Message):
    __slots__ = ("volume_type", "options", "flags", "mount_point")
    class OptionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    VOLUME_TYPE_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    MOUNT_POINT_FIELD_NUMBER: _ClassVar[int]
    volume_type: str
    options: _containers.ScalarMap[str, str]
    flags: _containers.RepeatedScalarFieldContainer[str]
    mount_point: str
    def __init__(self, volume_type: _Optional[str] = ..., options: _Optional[_Mapping[str, str]] = ..., flags: _Optional[_Iterable[str]] = ..., mount_point: _Optional[str] = ...) -> None: ...

class SecureMountResponse(_message.Message):
    __slots__ = ("mount_path",)
    MOUNT_PATH_FIELD_NUMBER: _ClassVar[int]
    mount_path: str
    def __init__(self, mount_path: _Optional[str] = ...) -> None: ...
