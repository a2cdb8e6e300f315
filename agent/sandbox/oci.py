"""OCI runtime-spec JSON (containerd's config.json) to the Kata agent's ``grpc.Spec``.

The agent protocol mirrors the OCI structs with Go field names (``Process.Args``,
``User.UID``, ``Linux.CgroupsPath``); JSON uses lower camel case (``args``, ``uid``,
``cgroupsPath``). Names match case-insensitively except ``ociVersion`` ->
``Version``. Keys the agent protocol has no field for are dropped with a warning
naming them (the guest could not apply them anyway); a value of the wrong type is an
error naming its path.
"""

from __future__ import annotations

import logging
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from agent.sandbox.errors import BackendError
from api.kata import oci_linux_pb2, oci_pb2, oci_process_pb2

log = logging.getLogger(__name__)

_RENAMED = {"ociversion": "version"}
# The range of each integer type: a value outside it is the caller's error (protobuf
# would raise a bare ValueError).
_INTS = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
}


def _fields(message: Message) -> dict[str, FieldDescriptor]:
    descriptor = message.DESCRIPTOR
    assert isinstance(descriptor, Descriptor)
    return {f.name.lower(): f for f in descriptor.fields}


def _scalar(field: FieldDescriptor, value: Any, where: str) -> Any:
    if field.type == FieldDescriptor.TYPE_STRING and isinstance(value, str):
        return value
    if field.type == FieldDescriptor.TYPE_BOOL and isinstance(value, bool):
        return value
    if field.type in _INTS and isinstance(value, int) and not isinstance(value, bool):
        low, high = _INTS[field.type]
        if low <= value <= high:
            return value
        raise BackendError(
            f"OCI spec {where}: {value} is out of range for {field.full_name} ({low}..{high})"
        )
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT) and isinstance(
        value, int | float
    ):
        return value
    raise BackendError(f"OCI spec {where}: {value!r} does not fit {field.full_name}")


def _is_map(field: FieldDescriptor) -> bool:
    message = field.message_type
    return message is not None and message.GetOptions().map_entry


def fill(message: Message, data: dict[str, Any], where: str, dropped: list[str]) -> None:
    """Set ``message``'s fields from the JSON object ``data``; raises BackendError."""
    if not isinstance(data, dict):
        raise BackendError(f"OCI spec {where}: expected an object, got {data!r}")
    fields = _fields(message)
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        field = fields.get(_RENAMED.get(key.lower(), key.lower()))
        if field is None:
            dropped.append(path)
            continue
        if value is None:
            continue
        target = getattr(message, field.name)
        if _is_map(field):
            if not isinstance(value, dict):
                raise BackendError(f"OCI spec {path}: expected an object")
            entry = field.message_type
            assert entry is not None
            value_field = entry.fields_by_name["value"]
            for k, v in value.items():
                if value_field.message_type is not None:
                    fill(target[k], v, f"{path}.{k}", dropped)
                else:
                    target[k] = _scalar(value_field, v, f"{path}.{k}")
        elif field.is_repeated:
            if not isinstance(value, list):
                raise BackendError(f"OCI spec {path}: expected a list")
            for i, item in enumerate(value):
                if field.message_type is not None:
                    fill(target.add(), item, f"{path}[{i}]", dropped)
                else:
                    target.append(_scalar(field, item, f"{path}[{i}]"))
        elif field.message_type is not None:
            fill(target, value, path, dropped)
        else:
            setattr(message, field.name, _scalar(field, value, path))


def spec(data: dict[str, Any]) -> oci_pb2.Spec:
    """The agent's Spec for an OCI config.json document; raises BackendError."""
    message = oci_pb2.Spec()
    dropped: list[str] = []
    fill(message, data, "", dropped)
    if dropped:
        log.warning("OCI spec keys the guest agent protocol cannot carry: %s", ", ".join(dropped))
    return message


def process(data: dict[str, Any]) -> oci_process_pb2.Process:
    """The agent's Process for an OCI process object (an exec's spec)."""
    message = oci_process_pb2.Process()
    dropped: list[str] = []
    fill(message, data, "process", dropped)
    if dropped:
        log.warning(
            "OCI process keys the guest agent protocol cannot carry: %s", ", ".join(dropped)
        )
    return message


def resources(data: dict[str, Any]) -> oci_linux_pb2.LinuxResources:
    """The agent's LinuxResources for an OCI ``linux.resources`` object (Update)."""
    message = oci_linux_pb2.LinuxResources()
    dropped: list[str] = []
    fill(message, data, "linux.resources", dropped)
    if dropped:
        log.warning("OCI resources the guest agent protocol cannot carry: %s", ", ".join(dropped))
    return message
