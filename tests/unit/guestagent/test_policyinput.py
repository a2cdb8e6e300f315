"""The policy input has Kata's JSON shape: proto field names, defaults present."""

from __future__ import annotations

from api.kata import agent_pb2, oci_pb2, oci_process_pb2
from guest.agent.policyinput import to_input


def test_create_container_shape() -> None:
    request = agent_pb2.CreateContainerRequest(
        container_id="c1",
        OCI=oci_pb2.Spec(
            Process=oci_process_pb2.Process(Args=["echo", "hi"], OOMScoreAdj=-998),
            Annotations={"io.kubernetes.cri.image-name": "img"},
        ),
        storages=[agent_pb2.Storage(driver="image_guest_pull", source="img")],
    )
    doc = to_input(request)
    assert doc["container_id"] == "c1"
    assert doc["exec_id"] == ""  # defaults are present, as serde writes them
    assert doc["sandbox_pidns"] is False
    assert doc["string_user"] is None  # an unset message is null
    assert doc["OCI"]["Process"]["Args"] == ["echo", "hi"]
    assert doc["OCI"]["Process"]["OOMScoreAdj"] == -998  # int64 stays a number
    assert doc["OCI"]["Process"]["Terminal"] is False
    assert doc["OCI"]["Annotations"] == {"io.kubernetes.cri.image-name": "img"}
    assert doc["OCI"]["Root"] is None
    assert doc["storages"][0]["driver"] == "image_guest_pull"
    assert doc["storages"][0]["options"] == []


def test_bytes_are_number_arrays() -> None:
    doc = to_input(agent_pb2.WriteStreamRequest(container_id="c", data=b"\x00A"))
    assert doc == {"container_id": "c", "exec_id": "", "data": [0, 65]}
