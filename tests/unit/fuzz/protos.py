"""Hypothesis strategies built from protobuf descriptors: well-typed messages with
arbitrary values, and OCI-style JSON (lower camel case keys) that is mostly well-typed."""

from __future__ import annotations

import base64
from typing import Any

from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

F = FieldDescriptor
MAX_DEPTH = 4

# Strings that mean something to the code under test, next to arbitrary ones.
MEANINGFUL = [
    "", "/", ".", "..", "../../etc/passwd", "/etc/hosts", "/etc/resolv.conf", "/dev/shm",
    "/run/kata-containers/shared/containers/c1-token", "/run/kata-containers/sandbox/local/v",
    "sandbox", "container", "c1", "bind", "rbind", "ro", "tmpfs", "proc", "cgroup2",
    "io.kubernetes.cri.container-type", "image_guest_pull", "local", "ephemeral",
    "registry.example/app@sha256:" + "a" * 64, "net.ipv4.ip_forward", "kernel.shm_rmid_forced",
    "SCMP_ACT_ERRNO", "SCMP_ARCH_X86_64", "pid", "ipc", "uts", "mount", "network", "\x00",
]  # fmt: skip
STRINGS = st.one_of(st.sampled_from(MEANINGFUL), st.text(max_size=30))
INT_RANGES = {
    F.TYPE_INT32: (-(2**31), 2**31 - 1),
    F.TYPE_SINT32: (-(2**31), 2**31 - 1),
    F.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    F.TYPE_UINT32: (0, 2**32 - 1),
    F.TYPE_FIXED32: (0, 2**32 - 1),
    F.TYPE_INT64: (-(2**63), 2**63 - 1),
    F.TYPE_SINT64: (-(2**63), 2**63 - 1),
    F.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    F.TYPE_UINT64: (0, 2**64 - 1),
    F.TYPE_FIXED64: (0, 2**64 - 1),
}


def _is_map(field: Any) -> bool:
    return bool(field.type == F.TYPE_MESSAGE and field.message_type.GetOptions().map_entry)


def _skipped(field: Any) -> bool:
    # Well-known types (Any, Timestamp, ...) have their own JSON forms: not worth it here.
    return bool(
        field.type == F.TYPE_MESSAGE
        and field.message_type.full_name.startswith("google.protobuf.")
    )


def _scalar(field: Any) -> st.SearchStrategy[Any]:
    """A value of ``field``'s type in proto JSON form (what json_format.ParseDict takes)."""
    if field.type in INT_RANGES:
        low, high = INT_RANGES[field.type]
        return st.one_of(st.integers(max(low, -2), min(high, 70000)), st.integers(low, high))
    if field.type in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        if field.type == F.TYPE_FLOAT:
            return st.floats(allow_nan=False, allow_infinity=False, width=32)
        return st.floats(allow_nan=False, allow_infinity=False)
    if field.type == F.TYPE_BOOL:
        return st.booleans()
    if field.type == F.TYPE_STRING:
        return STRINGS
    if field.type == F.TYPE_BYTES:
        return st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode())
    if field.type == F.TYPE_ENUM:
        return st.sampled_from([v.name for v in field.enum_type.values])
    raise AssertionError(f"no strategy for {field.full_name}")


def _value(field: Any, depth: int) -> st.SearchStrategy[Any]:
    if field.type == F.TYPE_MESSAGE:
        return _json(field.message_type, depth + 1)
    return _scalar(field)


def _json(descriptor: Any, depth: int) -> st.SearchStrategy[dict[str, Any]]:
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        if _skipped(field) or (field.type == F.TYPE_MESSAGE and depth >= MAX_DEPTH):
            continue
        if _is_map(field):
            entry = field.message_type.fields_by_name
            keys = _scalar(entry["key"]).map(str)
            value = entry["value"]
            optional[field.name] = st.dictionaries(keys, _value(value, depth), max_size=3)
        elif field.is_repeated:
            optional[field.name] = st.lists(_value(field, depth), max_size=3)
        else:
            optional[field.name] = _value(field, depth)
    return st.fixed_dictionaries({}, optional=optional)


def messages(descriptor: Any) -> st.SearchStrategy[Message]:
    """Messages of ``descriptor``'s type with arbitrary (well-typed) field values."""
    cls = message_factory.GetMessageClass(descriptor)
    return _json(descriptor, 0).map(lambda doc: json_format.ParseDict(doc, cls()))


def _oci_key(name: str) -> str:
    return name[:1].lower() + name[1:]


def oci_json(descriptor: Any, depth: int = 0) -> st.SearchStrategy[Any]:
    """JSON shaped like ``descriptor`` with OCI key names, values mostly of the right
    type, sometimes of any JSON type, with unknown keys now and then."""
    anything = st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), STRINGS),
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(STRINGS, inner, max_size=3)
        ),
        max_leaves=8,
    )
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        if field.type == F.TYPE_MESSAGE and depth >= MAX_DEPTH:
            continue
        if _is_map(field):
            value_field = field.message_type.fields_by_name["value"]
            right: st.SearchStrategy[Any] = st.dictionaries(
                STRINGS, _oci_value(value_field, depth), max_size=3
            )
        elif field.is_repeated:
            right = st.lists(_oci_value(field, depth), max_size=3)
        else:
            right = _oci_value(field, depth)
        key = _oci_key(field.name)
        if (descriptor.name, field.name) == ("Spec", "Version"):
            key = "ociVersion"
        optional[key] = st.one_of(right, right, right, anything)
    return st.fixed_dictionaries({}, optional=optional | {"unknownKey": anything})


def _oci_value(field: Any, depth: int) -> st.SearchStrategy[Any]:
    if field.type == F.TYPE_MESSAGE:
        if _skipped(field):
            return st.just({})
        return oci_json(field.message_type, depth + 1)
    if field.type == F.TYPE_BYTES:
        return st.text(max_size=10)
    if field.type == F.TYPE_ENUM:
        return st.sampled_from([v.name for v in field.enum_type.values])
    if field.type in INT_RANGES:  # JSON numbers know no width: beyond the type's too
        return st.one_of(_scalar(field), st.integers(-(2**65), 2**65))
    return _scalar(field)
