from api.kata import oci_user_pb2 as _oci_user_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Process(_message.Message):
    __slots__ = ("Terminal", "ConsoleSize", "User", "Args", "Env", "Cwd", "Capabilities", "Rlimits", "NoNewPrivileges", "ApparmorProfile", "OOMScoreAdj", "SelinuxLabel")
    TERMINAL_FIELD_NUMBER: _ClassVar[int]
    CONSOLESIZE_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    CWD_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    RLIMITS_FIELD_NUMBER: _ClassVar[int]
    NONEWPRIVILEGES_FIELD_NUMBER: _ClassVar[int]
    APPARMORPROFILE_FIELD_NUMBER: _ClassVar[int]
    OOMSCOREADJ_FIELD_NUMBER: _ClassVar[int]
    SELINUXLABEL_FIELD_NUMBER: _ClassVar[int]
    Terminal: bool
    ConsoleSize: Box
    User: _oci_user_pb2.User
    Args: _containers.RepeatedScalarFieldContainer[str]
    Env: _containers.RepeatedScalarFieldContainer[str]
    Cwd: str
    Capabilities: LinuxCapabilities
    Rlimits: _containers.RepeatedCompositeFieldContainer[POSIXRlimit]
    NoNewPrivileges: bool
    ApparmorProfile: str
    OOMScoreAdj: int
    SelinuxLabel: str
    def __init__(self, Terminal: _Optional[bool] = ..., ConsoleSize: _Optional[_Union[Box, _Mapping]] = ..., User: _Optional[_Union[_oci_user_pb2.User, _Mapping]] = ..., Args: _Optional[_Iterable[str]] = ..., Env: _Optional[_Iterable[str]] = ..., Cwd: _Optional[str] = ..., Capabilities: _Optional[_Union[LinuxCapabilities, _Mapping]] = ..., Rlimits: _Optional[_Iterable[_Union[POSIXRlimit, _Mapping]]] = ..., NoNewPrivileges: _Optional[bool] = ..., ApparmorProfile: _Optional[str] = ..., OOMScoreAdj: _Optional[int] = ..., SelinuxLabel: _Optional[str] = ...) -> None: ...

class Box(_message.Message):
    __slots__ = ("Height", "Width")
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    Height: int
    Width: int
    def __init__(self, Height: _Optional[int] = ..., Width: _Optional[int] = ...) -> None: ...

class LinuxCapabilities(_message.Message):
    __slots__ = ("Bounding", "Effective", "Inheritable", "Permitted", "Ambient")
    BOUNDING_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_FIELD_NUMBER: _ClassVar[int]
    INHERITABLE_FIELD_NUMBER: _ClassVar[int]
    PERMITTED_FIELD_NUMBER: _ClassVar[int]
    AMBIENT_FIELD_NUMBER: _ClassVar[int]
    Bounding: _containers.RepeatedScalarFieldContainer[str]
    Effective: _containers.RepeatedScalarFieldContainer[str]
    Inheritable: _containers.RepeatedScalarFieldContainer[str]
    Permitted: _containers.RepeatedScalarFieldContainer[str]
    Ambient: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, Bounding: _Optional[_Iterable[str]] = ..., Effective: _Optional[_Iterable[str]] = ..., Inheritable: _Optional[_Iterable[str]] = ..., Permitted: _Optional[_Iterable[str]] = ..., Ambient: _Optional[_Iterable[str]] = ...) -> None: ...

class POSIXRlimit(_message.Message):
    __slots__ = ("Type", "Hard", "Soft")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    HARD_FIELD_NUMBER: _ClassVar[int]
    SOFT_FIELD_NUMBER: _ClassVar[int]
    Type: str
    Hard: int
    Soft: int
    def __init__(self, Type: _Optional[str] = ..., Hard: _Optional[int] = ..., Soft: _Optional[int] = ...) -> None: ...

class Hooks(_message.Message):
    __slots__ = ("Prestart", "Poststart", "Poststop", "CreateRuntime", "CreateContainer", "StartContainer")
    PRESTART_FIELD_NUMBER: _ClassVar[int]
    POSTSTART_FIELD_NUMBER: _ClassVar[int]
    POSTSTOP_FIELD_NUMBER: _ClassVar[int]
    CREATERUNTIME_FIELD_NUMBER: _ClassVar[int]
    CREATECONTAINER_FIELD_NUMBER: _ClassVar[int]
    STARTCONTAINER_FIELD_NUMBER: _ClassVar[int]
    Prestart: _containers.RepeatedCompositeFieldContainer[Hook]
    Poststart: _containers.RepeatedCompositeFieldContainer[Hook]
    Poststop: _containers.RepeatedCompositeFieldContainer[Hook]
    CreateRuntime: _containers.RepeatedCompositeFieldContainer[Hook]
    CreateContainer: _containers.RepeatedCompositeFieldContainer[Hook]
    StartContainer: _containers.RepeatedCompositeFieldContainer[Hook]
    def __init__(self, Prestart: _Optional[_Iterable[_Union[Hook, _Mapping]]] = ..., Poststart: _Optional[_Iterable[_Union[Hook, _Mapping]]] = ..., Poststop: _Optional[_Iterable[_Union[Hook, _Mapping]]] = ..., CreateRuntime: _Optional[_Iterable[_Union[Hook, _Mapping]]] = ..., CreateContainer: _Optional[_Iterable[_Union[Hook, _Mapping]]] = ..., StartContainer: _Optional[_Iterable[_Union[Hook, _Mapping]]] = ...) -> None: ...

class Hook(_message.Message):
    __slots__ = ("Path", "Args", "Env", "Timeout")
    PATH_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    Path: str
    Args: _containers.RepeatedScalarFieldContainer[str]
    Env: _containers.RepeatedScalarFieldContainer[str]
    Timeout: int
    def __init__(self, Path: _Optional[str] = ..., Args: _Optional[_Iterable[str]] = ..., Env: _Optional[_Iterable[str]] = ..., Timeout: _Optional[int] = ...) -> None: ...
