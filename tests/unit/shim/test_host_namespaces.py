"""A CRI sandbox asking for a host namespace fails its Create before the backend starts
anything: containerd gets INVALID_ARGUMENT naming the option, no state is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.sandbox.backend import PodSandbox, SandboxSpec
from agent.sandbox.local_backend import LocalAgentBackend
from agent.sandbox.state import VmRecord
from api.containerd.task.v2 import shim_pb2
from tests.unit.shim.harness import running
from ttrpc import InvalidArgument


class CountingBackend(LocalAgentBackend):
    """The local-agent backend, counting what the daemon asked of it."""

    def __init__(self, socket: Path) -> None:
        super().__init__(socket, call_timeout=2)
        self.planned_for: list[str] = []
        self.created_for: list[str] = []

    def planned(self, spec: SandboxSpec) -> VmRecord:
        self.planned_for.append(spec.id)
        return super().planned(spec)

    async def create(self, spec: SandboxSpec) -> PodSandbox:
        self.created_for.append(spec.id)
        return await super().create(spec)


def cri_sandbox_bundle(folder: Path, pod_id: str, namespaces: list[dict[str, str]]) -> Path:
    bundle = folder / "bundles" / pod_id
    bundle.mkdir(parents=True)
    spec = {
        "ociVersion": "1.0.2",
        "process": {"args": ["/pause"]},
        "root": {"path": "rootfs"},
        "annotations": {
            "io.kubernetes.cri.container-type": "sandbox",
            "io.kubernetes.cri.sandbox-id": pod_id,
        },
        "linux": {"namespaces": namespaces},
    }
    (bundle / "config.json").write_text(json.dumps(spec))
    return bundle


@pytest.mark.parametrize(
    ("namespaces", "option"),
    [
        ([{"type": "pid"}, {"type": "ipc"}, {"type": "mount"}], "hostNetwork"),
        ([{"type": "ipc"}, {"type": "uts"}, {"type": "network", "path": "/n"}], "hostPID"),
        ([{"type": "pid"}, {"type": "uts"}, {"type": "network", "path": "/n"}], "hostIPC"),
    ],
)
async def test_host_namespace_pod_is_refused_before_anything_starts(
    sockets: Path, namespaces: list[dict[str, str]], option: str
) -> None:
    backend = CountingBackend(sockets / "no-agent.sock")
    async with running(sockets, backend) as daemon:
        await daemon.register("pod1")
        bundle = cri_sandbox_bundle(sockets, "pod1", namespaces)
        request = shim_pb2.CreateTaskRequest(
            id="pod1", bundle=str(bundle), options=daemon.options()
        )
        with pytest.raises(InvalidArgument) as refused:
            await daemon.task.Create(request)
        assert f"sandbox pod1: {option} is not supported by the contrast-cc runtime" in str(
            refused.value
        )
        assert (backend.planned_for, backend.created_for) == ([], [])
        assert daemon.sink.envelopes == []  # no TaskCreate
        assert daemon.store.load_all() == ([], [])


async def test_a_pod_with_namespaces_of_its_own_reaches_the_backend(sockets: Path) -> None:
    backend = CountingBackend(sockets / "no-agent.sock")
    async with running(sockets, backend) as daemon:
        await daemon.register("pod1")
        own = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
        bundle = cri_sandbox_bundle(sockets, "pod1", [*own, {"type": "network", "path": "/n"}])
        request = shim_pb2.CreateTaskRequest(
            id="pod1", bundle=str(bundle), options=daemon.options()
        )
        with pytest.raises(Exception, match="cannot reach the guest agent"):
            await daemon.task.Create(request)
        assert backend.created_for == ["pod1"]
