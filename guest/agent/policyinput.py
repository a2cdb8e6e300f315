"""A request as the policy's ``input``: the JSON shape Kata's agent gives its policy.

Kata serialises its protobuf requests with serde: keys are the proto field names
exactly as written (``container_id``, ``OCI``, ``Process``, ``Args``), every field is
present with its default value, an unset message field is ``null``, 64-bit integers
are JSON numbers, maps are objects, ``bytes`` are arrays of numbers. Enums are given
by name here. Policies written for Kata's agent (genpolicy's rules.rego) read the
same keys.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message


def to_input(message: Message) -> dict[str, Any]:
    """The policy input document for ``message``. CopyFileRequest is Kata's
    PolicyCopyFileRequest (:func:`guest.agent.copyfile.policy_input`: no ``data``)."""
    if message.DESCRIPTOR.full_name == "grpc.CopyFileRequest":
        from guest.agent import copyfile

        return copyfile.policy_input(message)  # type: ignore[arg-type]
    out: dict[str, Any] = {}
    fields: Any = message.DESCRIPTOR.fields
    for field in fields:
        value = getattr(message, field.name)
        if _is_map(field):
            value_field = field.message_type.fields_by_name["value"]
            out[field.name] = {str(k): _scalar(value_field, v) for k, v in value.items()}
        elif field.is_repeated:
            out[field.name] = [_scalar(field, v) for v in value]
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            out[field.name] = to_input(value) if message.HasField(field.name) else None
        elif field.containing_oneof is not None and not message.HasField(field.name):
            out[field.name] = None
        else:
            out[field.name] = _scalar(field, value)
    return out


def _is_map(field: Any) -> bool:
    return bool(
        field.type == FieldDescriptor.TYPE_MESSAGE
        and field.message_type.GetOptions().map_entry
        and field.is_repeated
    )


def _scalar(field: Any, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return to_input(value)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return list(value)
    if field.type == FieldDescriptor.TYPE_ENUM:
        enum_value = field.enum_type.values_by_number.get(value)
        return enum_value.name if enum_value is not None else value
    return value
