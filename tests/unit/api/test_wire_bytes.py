"""Bytes on the wire of our .proto messages, encoded by hand from the protobuf encoding
rules (so they do not depend on our generated code being right), and round trips of the
nested messages the shim and the agent exchange. Schema facts: test_wire.py.
"""

from __future__ import annotations

from google.protobuf import any_pb2, timestamp_pb2

from api.containerd.events import task_pb2 as events_pb2
from api.containerd.services.events.ttrpc.v1 import events_pb2 as forward_pb2
from api.containerd.task.v2 import shim_pb2
from api.containerd.types import mount_pb2
from api.guest import imagepull_pb2, securemount_pb2
from api.kata import agent_pb2, oci_pb2, oci_process_pb2
from api.runtimeoptions.v1 import api_pb2 as runtimeoptions_pb2


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def top_level_fields(data: bytes) -> list[tuple[int, int]]:
    """(field number, wire type) of each top-level field, decoded without protobuf."""
    fields = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire_type = key >> 3, key & 7
        fields.append((number, wire_type))
        if wire_type == 0:
            _, pos = _varint(data, pos)
        elif wire_type == 2:
            length, pos = _varint(data, pos)
            pos += length
        else:
            raise AssertionError(f"unexpected wire type {wire_type}")
    return fields


# ---- bytes on the wire, encoded by hand ----


def test_mount_bytes() -> None:
    mount = mount_pb2.Mount(type="bind", source="/a", target="/b", options=["ro"])
    expected = b"\x0a\x04bind" + b"\x12\x02/a" + b"\x1a\x02/b" + b"\x22\x02ro"
    assert mount.SerializeToString() == expected


def test_connect_response_bytes() -> None:
    # shim_pid=1234 (varint d2 09), task_pid=7, version="2"
    response = shim_pb2.ConnectResponse.FromString(b"\x08\xd2\x09\x10\x07\x1a\x012")
    assert (response.shim_pid, response.task_pid, response.version) == (1234, 7, "2")


def test_agent_read_stream_request_bytes() -> None:
    request = agent_pb2.ReadStreamRequest(container_id="c", exec_id="e", len=4096)
    assert request.SerializeToString() == b"\x0a\x01c\x12\x01e\x18\x80\x20"


def test_image_pull_request_bytes() -> None:
    request = imagepull_pb2.ImagePullRequest(image_url="r@sha256:0", bundle_path="/b")
    assert request.SerializeToString() == b"\x0a\x0ar@sha256:0\x12\x02/b"


def test_secure_mount_request_bytes() -> None:
    request = securemount_pb2.SecureMountRequest(
        volume_type="block-device", options={"deviceId": "253:1"}, mount_point="/m"
    )
    entry = b"\x0a\x08deviceId" + b"\x12\x05253:1"
    expected = b"\x0a\x0cblock-device" + b"\x12\x11" + entry + b"\x22\x02/m"
    assert request.SerializeToString() == expected


def test_create_task_request_round_trips_with_mount_and_any() -> None:
    options = any_pb2.Any()
    options.Pack(runtimeoptions_pb2.Options(config_path="/opt/contrast/config.toml"))
    request = shim_pb2.CreateTaskRequest(
        id="c1",
        bundle="/run/bundle",
        rootfs=[mount_pb2.Mount(type="overlay", source="overlay", options=["lowerdir=/l"])],
        stdout="/fifo/out",
        options=options,
    )
    data = request.SerializeToString()
    assert top_level_fields(data) == [(1, 2), (2, 2), (3, 2), (6, 2), (10, 2)]

    back = shim_pb2.CreateTaskRequest.FromString(data)
    assert back == request
    assert back.rootfs[0].options == ["lowerdir=/l"]
    unpacked = runtimeoptions_pb2.Options()
    assert back.options.Unpack(unpacked)
    assert unpacked.config_path == "/opt/contrast/config.toml"
    assert back.options.TypeName() == "runtimeoptions.v1.Options"


def test_forward_request_carries_an_event_envelope() -> None:
    event = events_pb2.TaskExit(container_id="c1", id="c1", pid=42, exit_status=143)
    envelope = forward_pb2.Envelope(
        timestamp=timestamp_pb2.Timestamp(seconds=1),
        namespace="k8s.io",
        topic="/tasks/exit",
        event=any_pb2.Any(type_url="containerd.events.TaskExit", value=event.SerializeToString()),
    )
    data = forward_pb2.ForwardRequest(envelope=envelope).SerializeToString()
    assert top_level_fields(data) == [(1, 2)]
    inner = data[2:]  # one length byte: the envelope is short
    assert top_level_fields(inner) == [(1, 2), (2, 2), (3, 2), (4, 2)]
    back = forward_pb2.ForwardRequest.FromString(data)
    decoded = events_pb2.TaskExit.FromString(back.envelope.event.value)
    assert (decoded.pid, decoded.exit_status) == (42, 143)


def test_oci_spec_nests_process_user_and_annotations() -> None:
    spec = oci_pb2.Spec(
        Version="1.1.0",
        Process=oci_process_pb2.Process(Args=["sh"], User={"UID": 1000}),
        Annotations={"io.kubernetes.cri.sandbox-id": "s1"},
    )
    request = agent_pb2.CreateContainerRequest(container_id="c", OCI=spec)
    back = agent_pb2.CreateContainerRequest.FromString(request.SerializeToString())
    assert back.OCI.Process.User.UID == 1000
    assert back.OCI.Annotations["io.kubernetes.cri.sandbox-id"] == "s1"
    assert top_level_fields(request.SerializeToString()) == [(1, 2), (6, 2)]


# ---- the `types` proto package must not shadow the standard library ----
