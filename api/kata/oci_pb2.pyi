from api.kata import oci_linux_pb2 as _oci_linux_pb2
from api.kata import oci_process_pb2 as _oci_process_pb2
from api.kata import oci_root_pb2 as _oci_root_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Spec(_message.Message):
    __slots__ = ("Version", "Process", "Root", "Hostname", "Mounts", "Hooks", "Annotations", "Linux", "Solaris", "Windows")
    class AnnotationsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PROCESS_FIELD_NUMBER: _ClassVar[int]
    ROOT_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    MOUNTS_FIELD_NUMBER: _ClassVar[int]
    HOOKS_FIELD_NUMBER: _ClassVar[int]
    ANNOTATIONS_FIELD_NUMBER: _ClassVar[int]
    LINUX_FIELD_NUMBER: _ClassVar[int]
    SOLARIS_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    Version: str
    Process: _oci_process_pb2.Process
    Root: _oci_root_pb2.Root
    Hostname: str
    Mounts: _containers.RepeatedCompositeFieldContainer[_oci_root_pb2.Mount]
    Hooks: _oci_process_pb2.Hooks
    Annotations: _containers.ScalarMap[str, str]
    Linux: _oci_linux_pb2.Linux
    Solaris: _oci_linux_pb2.Solaris
    Windows: _oci_linux_pb2.Windows
    def __init__(self, Version: _Optional[str] = ..., Process: _Optional[_Union[_oci_process_pb2.Process, _Mapping]] = ..., Root: _Optional[_Union[_oci_root_pb2.Root, _Mapping]] = ..., Hostname: _Optional[str] = ..., Mounts: _Optional[_Iterable[_Union[_oci_root_pb2.Mount, _Mapping]]] = ..., Hooks: _Optional[_Union[_oci_process_pb2.Hooks, _Mapping]] = ..., Annotations: _Optional[_Mapping[str, str]] = ..., Linux: _Optional[_Union[_oci_linux_pb2.Linux, _Mapping]] = ..., Solaris: _Optional[_Union[_oci_linux_pb2.Solaris, _Mapping]] = ..., Windows: _Optional[_Union[_oci_linux_pb2.Windows, _Mapping]] = ...) -> None: ...
