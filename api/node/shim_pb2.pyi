from google.protobuf import any_pb2 as _any_pb2
from api.containerd.task.v2 import shim_pb2 as _shim_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RegisterRequest(_message.Message):
    __slots__ = ("namespace", "id", "bundle", "ttrpc_address", "grpc_address", "options")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    TTRPC_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    GRPC_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    id: str
    bundle: str
    ttrpc_address: str
    grpc_address: str
    options: _any_pb2.Any
    def __init__(self, namespace: _Optional[str] = ..., id: _Optional[str] = ..., bundle: _Optional[str] = ..., ttrpc_address: _Optional[str] = ..., grpc_address: _Optional[str] = ..., options: _Optional[_Union[_any_pb2.Any, _Mapping]] = ...) -> None: ...

class RegisterResponse(_message.Message):
    __slots__ = ("address",)
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    address: str
    def __init__(self, address: _Optional[str] = ...) -> None: ...

class CleanupRequest(_message.Message):
    __slots__ = ("namespace", "id", "bundle")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    id: str
    bundle: str
    def __init__(self, namespace: _Optional[str] = ..., id: _Optional[str] = ..., bundle: _Optional[str] = ...) -> None: ...
