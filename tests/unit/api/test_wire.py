"""Wire facts of our .proto files that a typo would break.

Names and field numbers are checked against upstream (containerd, Kata, Contrast) as
read when the protos were written. Bytes encoded by hand: test_wire_bytes.py; import
hygiene of the generated modules: test_generated_modules.py.
"""

from __future__ import annotations

import pytest
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import FieldDescriptor

from api.containerd.events import task_pb2 as events_pb2
from api.containerd.services.events.ttrpc.v1 import events_pb2 as forward_pb2
from api.containerd.task.v2 import shim_pb2
from api.containerd.types import mount_pb2
from api.containerd.types.task import task_pb2
from api.guest import imagepull_pb2, securemount_pb2
from api.kata import agent_pb2, health_pb2, oci_pb2, oci_process_pb2, types_pb2
from api.runtimeoptions.v1 import api_pb2 as runtimeoptions_pb2

POOL = descriptor_pool.Default()
# The checks below look names up in the default pool, which holds a file's descriptors
# once its module is imported: these modules are here for that.
REGISTERED = (
    forward_pb2, shim_pb2, mount_pb2, imagepull_pb2, securemount_pb2, oci_pb2,
    oci_process_pb2, runtimeoptions_pb2,
)  # fmt: skip


# ---- service names and methods ----

SERVICES = {
    "containerd.task.v2.Task": {
        "State": ("containerd.task.v2.StateRequest", "containerd.task.v2.StateResponse"),
        "Create": ("containerd.task.v2.CreateTaskRequest", "containerd.task.v2.CreateTaskResponse"),
        "Start": ("containerd.task.v2.StartRequest", "containerd.task.v2.StartResponse"),
        "Delete": ("containerd.task.v2.DeleteRequest", "containerd.task.v2.DeleteResponse"),
        "Pids": ("containerd.task.v2.PidsRequest", "containerd.task.v2.PidsResponse"),
        "Pause": ("containerd.task.v2.PauseRequest", "google.protobuf.Empty"),
        "Resume": ("containerd.task.v2.ResumeRequest", "google.protobuf.Empty"),
        "Checkpoint": ("containerd.task.v2.CheckpointTaskRequest", "google.protobuf.Empty"),
        "Kill": ("containerd.task.v2.KillRequest", "google.protobuf.Empty"),
        "Exec": ("containerd.task.v2.ExecProcessRequest", "google.protobuf.Empty"),
        "ResizePty": ("containerd.task.v2.ResizePtyRequest", "google.protobuf.Empty"),
        "CloseIO": ("containerd.task.v2.CloseIORequest", "google.protobuf.Empty"),
        "Update": ("containerd.task.v2.UpdateTaskRequest", "google.protobuf.Empty"),
        "Wait": ("containerd.task.v2.WaitRequest", "containerd.task.v2.WaitResponse"),
        "Stats": ("containerd.task.v2.StatsRequest", "containerd.task.v2.StatsResponse"),
        "Connect": ("containerd.task.v2.ConnectRequest", "containerd.task.v2.ConnectResponse"),
        "Shutdown": ("containerd.task.v2.ShutdownRequest", "google.protobuf.Empty"),
    },
    "containerd.services.events.ttrpc.v1.Events": {
        "Forward": ("containerd.services.events.ttrpc.v1.ForwardRequest", "google.protobuf.Empty"),
    },
    "grpc.Health": {
        "Check": ("grpc.CheckRequest", "grpc.HealthCheckResponse"),
        "Version": ("grpc.CheckRequest", "grpc.VersionCheckResponse"),
    },
    "api.ImagePullService": {
        "PullImage": ("api.ImagePullRequest", "api.ImagePullResponse"),
    },
    "api.SecureMountService": {
        "SecureMount": ("api.SecureMountRequest", "api.SecureMountResponse"),
    },
}


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_service_methods_and_types(service: str) -> None:
    found = POOL.FindServiceByName(service)
    methods = {m.name: (m.input_type.full_name, m.output_type.full_name) for m in found.methods}
    assert methods == SERVICES[service]


AGENT_RPCS = {
    "CreateContainer": "CreateContainerRequest",
    "StartContainer": "StartContainerRequest",
    "RemoveContainer": "RemoveContainerRequest",
    "ExecProcess": "ExecProcessRequest",
    "SignalProcess": "SignalProcessRequest",
    "WaitProcess": "WaitProcessRequest",
    "UpdateContainer": "UpdateContainerRequest",
    "StatsContainer": "StatsContainerRequest",
    "PauseContainer": "PauseContainerRequest",
    "ResumeContainer": "ResumeContainerRequest",
    "WriteStdin": "WriteStreamRequest",
    "ReadStdout": "ReadStreamRequest",
    "ReadStderr": "ReadStreamRequest",
    "CloseStdin": "CloseStdinRequest",
    "TtyWinResize": "TtyWinResizeRequest",
    "UpdateInterface": "UpdateInterfaceRequest",
    "UpdateRoutes": "UpdateRoutesRequest",
    "ListInterfaces": "ListInterfacesRequest",
    "ListRoutes": "ListRoutesRequest",
    "AddARPNeighbors": "AddARPNeighborsRequest",
    "CreateSandbox": "CreateSandboxRequest",
    "DestroySandbox": "DestroySandboxRequest",
    "GetGuestDetails": "GuestDetailsRequest",
    "GetOOMEvent": "GetOOMEventRequest",
    "SetPolicy": "SetPolicyRequest",
}


def test_agent_service_has_the_rpcs_the_guest_agent_serves() -> None:
    service = agent_pb2.DESCRIPTOR.services_by_name["AgentService"]
    assert service.full_name == "grpc.AgentService"
    inputs = {m.name: m.input_type.full_name for m in service.methods}
    for rpc, request in AGENT_RPCS.items():
        assert inputs.get(rpc) == f"grpc.{request}", rpc
    outputs = {m.name: m.output_type.full_name for m in service.methods}
    assert outputs["UpdateInterface"] == "types.Interface"
    assert outputs["WaitProcess"] == "grpc.WaitProcessResponse"
    assert outputs["ReadStdout"] == "grpc.ReadStreamResponse"
    assert outputs["GetOOMEvent"] == "grpc.OOMEvent"


# ---- field numbers, names and types ----

T = FieldDescriptor
FIELDS = [
    ("containerd.types.Mount", "type", 1, T.TYPE_STRING),
    ("containerd.types.Mount", "source", 2, T.TYPE_STRING),
    ("containerd.types.Mount", "target", 3, T.TYPE_STRING),
    ("containerd.types.Mount", "options", 4, T.TYPE_STRING),
    ("containerd.task.v2.CreateTaskRequest", "rootfs", 3, T.TYPE_MESSAGE),
    ("containerd.task.v2.CreateTaskRequest", "stdout", 6, T.TYPE_STRING),
    ("containerd.task.v2.CreateTaskRequest", "options", 10, T.TYPE_MESSAGE),
    ("containerd.task.v2.StateResponse", "status", 4, T.TYPE_ENUM),
    ("containerd.task.v2.StateResponse", "exited_at", 10, T.TYPE_MESSAGE),
    ("containerd.task.v2.StateResponse", "exec_id", 11, T.TYPE_STRING),
    ("containerd.task.v2.DeleteResponse", "exit_status", 2, T.TYPE_UINT32),
    ("containerd.task.v2.KillRequest", "all", 4, T.TYPE_BOOL),
    ("containerd.task.v2.UpdateTaskRequest", "annotations", 3, T.TYPE_MESSAGE),
    ("containerd.task.v2.ConnectResponse", "task_pid", 2, T.TYPE_UINT32),
    ("containerd.task.v2.ShutdownRequest", "now", 2, T.TYPE_BOOL),
    ("containerd.v1.types.ProcessInfo", "info", 2, T.TYPE_MESSAGE),
    ("containerd.events.TaskCreate", "io", 4, T.TYPE_MESSAGE),
    ("containerd.events.TaskCreate", "pid", 6, T.TYPE_UINT32),
    ("containerd.events.TaskExit", "id", 2, T.TYPE_STRING),
    ("containerd.events.TaskExit", "exit_status", 4, T.TYPE_UINT32),
    ("containerd.events.TaskExit", "exited_at", 5, T.TYPE_MESSAGE),
    ("containerd.events.TaskDelete", "id", 5, T.TYPE_STRING),
    ("containerd.events.TaskExecStarted", "pid", 3, T.TYPE_UINT32),
    ("containerd.services.events.ttrpc.v1.Envelope", "topic", 3, T.TYPE_STRING),
    ("containerd.services.events.ttrpc.v1.Envelope", "event", 4, T.TYPE_MESSAGE),
    ("runtimeoptions.v1.Options", "type_url", 1, T.TYPE_STRING),
    ("runtimeoptions.v1.Options", "config_path", 2, T.TYPE_STRING),
    ("runtimeoptions.v1.Options", "config_body", 3, T.TYPE_BYTES),
    ("grpc.CreateContainerRequest", "OCI", 6, T.TYPE_MESSAGE),
    ("grpc.CreateContainerRequest", "storages", 5, T.TYPE_MESSAGE),
    ("grpc.CreateContainerRequest", "sandbox_pidns", 7, T.TYPE_BOOL),
    ("grpc.ExecProcessRequest", "process", 4, T.TYPE_MESSAGE),
    ("grpc.ReadStreamRequest", "len", 3, T.TYPE_UINT32),
    ("grpc.WaitProcessResponse", "status", 1, T.TYPE_INT32),
    ("grpc.TtyWinResizeRequest", "column", 4, T.TYPE_UINT32),
    ("grpc.CreateSandboxRequest", "sandbox_id", 5, T.TYPE_STRING),
    ("grpc.Storage", "mount_point", 6, T.TYPE_STRING),
    ("grpc.FSGroup", "group_id", 2, T.TYPE_UINT32),
    ("grpc.ReseedRandomDevRequest", "data", 2, T.TYPE_BYTES),
    ("grpc.StringUser", "additionalGids", 3, T.TYPE_STRING),
    ("grpc.Spec", "Process", 2, T.TYPE_MESSAGE),
    ("grpc.Spec", "Annotations", 7, T.TYPE_MESSAGE),
    ("grpc.Spec", "Linux", 8, T.TYPE_MESSAGE),
    ("grpc.Process", "User", 3, T.TYPE_MESSAGE),
    ("grpc.Process", "OOMScoreAdj", 11, T.TYPE_INT64),
    ("grpc.Mount", "destination", 1, T.TYPE_STRING),
    ("grpc.Linux", "Namespaces", 6, T.TYPE_MESSAGE),
    ("grpc.LinuxSyscall", "errnoret", 3, T.TYPE_UINT32),
    ("grpc.HealthCheckResponse", "status", 1, T.TYPE_ENUM),
    ("grpc.VersionCheckResponse", "agent_version", 2, T.TYPE_STRING),
    ("types.Interface", "hwAddr", 5, T.TYPE_STRING),
    ("types.Interface", "devicePath", 6, T.TYPE_STRING),
    ("types.Route", "family", 6, T.TYPE_ENUM),
    ("types.ARPNeighbor", "toIPAddress", 1, T.TYPE_MESSAGE),
    ("api.ImagePullRequest", "image_url", 1, T.TYPE_STRING),
    ("api.ImagePullRequest", "bundle_path", 2, T.TYPE_STRING),
    ("api.SecureMountRequest", "options", 2, T.TYPE_MESSAGE),
    ("api.SecureMountRequest", "mount_point", 4, T.TYPE_STRING),
    ("api.SecureMountResponse", "mount_path", 1, T.TYPE_STRING),
]


@pytest.mark.parametrize(("message", "field", "number", "kind"), FIELDS)
def test_field_number_and_type(message: str, field: str, number: int, kind: int) -> None:
    descriptor = POOL.FindMessageTypeByName(message).fields_by_name[field]
    assert (descriptor.number, descriptor.type) == (number, kind)


def test_message_types_of_fields() -> None:
    def type_of(message: str, field: str) -> str:
        found = POOL.FindMessageTypeByName(message).fields_by_name[field]
        target = found.message_type or found.enum_type
        assert target is not None, f"{message}.{field} is a scalar"
        return str(target.full_name)

    assert type_of("containerd.task.v2.CreateTaskRequest", "rootfs") == "containerd.types.Mount"
    assert type_of("containerd.task.v2.CreateTaskRequest", "options") == "google.protobuf.Any"
    assert type_of("containerd.task.v2.StateResponse", "status") == "containerd.v1.types.Status"
    assert type_of("containerd.task.v2.PidsResponse", "processes") == (
        "containerd.v1.types.ProcessInfo"
    )
    assert type_of("grpc.CreateContainerRequest", "OCI") == "grpc.Spec"
    assert type_of("grpc.UpdateContainerRequest", "resources") == "grpc.LinuxResources"
    assert type_of("grpc.Interfaces", "Interfaces") == "types.Interface"


def test_task_status_enum_values() -> None:
    assert dict(task_pb2.Status.items()) == {
        "UNKNOWN": 0,
        "CREATED": 1,
        "RUNNING": 2,
        "STOPPED": 3,
        "PAUSED": 4,
        "PAUSING": 5,
    }


def test_other_enum_values() -> None:
    serving = health_pb2.HealthCheckResponse.ServingStatus
    assert (serving.Value("SERVING"), serving.Value("NOT_SERVING")) == (1, 2)
    assert (types_pb2.IPFamily.Value("v4"), types_pb2.IPFamily.Value("v6")) == (0, 1)
    assert types_pb2.FSGroupChangePolicy.Value("OnRootMismatch") == 1


def test_events_exist_under_containerd_events() -> None:
    names = [
        "TaskCreate",
        "TaskStart",
        "TaskDelete",
        "TaskIO",
        "TaskExit",
        "TaskOOM",
        "TaskExecAdded",
        "TaskExecStarted",
        "TaskPaused",
        "TaskResumed",
        "TaskCheckpointed",
    ]
    assert sorted(events_pb2.DESCRIPTOR.message_types_by_name) == sorted(names)
    assert events_pb2.DESCRIPTOR.package == "containerd.events"
