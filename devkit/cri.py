"""A small CRI client (containerd's gRPC socket): the calls a kubelet makes to run a
pod, for the e2e test, the demo and the pod benchmark.

Errors are grpc.RpcError from grpcio, except :meth:`Cri.wait_exited`, which raises
:class:`CriTimeout` (a :class:`~devkit.errors.DevkitError`) naming the container and the
state it stayed in.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from api.containerd.cri.runtime.v1 import api_pb2
from devkit.errors import DevkitError

R = TypeVar("R", bound=Message)

RUNTIME = "runtime.v1.RuntimeService"
IMAGES = "runtime.v1.ImageService"


class CriTimeout(DevkitError):
    """A container did not reach the awaited state in time."""


@dataclass(frozen=True)
class PodSpec:
    """What a kubelet puts into a PodSandboxConfig, reduced to what we vary."""

    name: str
    namespace: str = "default"
    annotations: dict[str, str] = field(default_factory=dict)
    network: api_pb2.NamespaceMode = api_pb2.NODE
    log_directory: str = ""
    dns_servers: tuple[str, ...] = ()

    def config(self) -> api_pb2.PodSandboxConfig:
        return api_pb2.PodSandboxConfig(
            metadata=api_pb2.PodSandboxMetadata(
                name=self.name, uid=f"uid-{self.name}", namespace=self.namespace
            ),
            hostname=self.name,
            log_directory=self.log_directory,
            dns_config=api_pb2.DNSConfig(servers=list(self.dns_servers)),
            annotations=self.annotations,
            linux=api_pb2.LinuxPodSandboxConfig(
                security_context=api_pb2.LinuxSandboxSecurityContext(
                    namespace_options=api_pb2.NamespaceOption(network=self.network)
                )
            ),
        )


@dataclass(frozen=True)
class Cri:
    socket: Path

    def _call(
        self, service: str, method: str, request: Message, response: type[R], timeout: float
    ) -> R:
        with grpc.insecure_channel(f"unix://{self.socket}") as channel:
            stub = channel.unary_unary(
                f"/{service}/{method}",
                request_serializer=type(request).SerializeToString,
                response_deserializer=response.FromString,
            )
            reply: R = stub(request, timeout=timeout)
            return reply

    def call(self, method: str, request: Message, response: type[R], timeout: float = 120) -> R:
        """``/runtime.v1.RuntimeService/<method>``; raises grpc.RpcError."""
        return self._call(RUNTIME, method, request, response, timeout)

    # ---- images ----

    def pull_image(self, reference: str, pod: PodSpec | None = None, timeout: float = 300) -> str:
        """PullImage; the image id containerd answers (its config digest)."""
        request = api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=reference))
        if pod is not None:
            request.sandbox_config.CopyFrom(pod.config())
        reply = self._call(IMAGES, "PullImage", request, api_pb2.PullImageResponse, timeout)
        return reply.image_ref

    def remove_image(self, reference: str) -> None:
        request = api_pb2.RemoveImageRequest(image=api_pb2.ImageSpec(image=reference))
        self._call(IMAGES, "RemoveImage", request, api_pb2.RemoveImageResponse, 60)

    # ---- pods ----

    def run_pod(
        self,
        name: str,
        handler: str,
        annotations: dict[str, str] | None = None,
        network: api_pb2.NamespaceMode = api_pb2.NODE,
    ) -> api_pb2.RunPodSandboxResponse:
        """RunPodSandbox; by default a host-network pod (no CNI needed)."""
        spec = PodSpec(name, annotations=annotations or {}, network=network)
        return self.run_pod_spec(spec, handler)

    def run_pod_spec(
        self, spec: PodSpec, handler: str, timeout: float = 600
    ) -> api_pb2.RunPodSandboxResponse:
        request = api_pb2.RunPodSandboxRequest(config=spec.config(), runtime_handler=handler)
        return self.call("RunPodSandbox", request, api_pb2.RunPodSandboxResponse, timeout)

    def stop_pod(self, pod_id: str) -> None:
        request = api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod_id)
        self.call("StopPodSandbox", request, api_pb2.StopPodSandboxResponse)

    def remove_pod(self, pod_id: str) -> None:
        request = api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod_id)
        self.call("RemovePodSandbox", request, api_pb2.RemovePodSandboxResponse)

    def pods(self) -> list[api_pb2.PodSandbox]:
        reply = self.call(
            "ListPodSandbox", api_pb2.ListPodSandboxRequest(), api_pb2.ListPodSandboxResponse
        )
        return list(reply.items)

    # ---- containers ----

    def create_container(
        self,
        pod_id: str,
        pod: PodSpec,
        name: str,
        *,
        image: str,
        command: list[str],
        annotations: dict[str, str] | None = None,
        timeout: float = 300,
    ) -> str:
        """CreateContainer (log at ``<pod log dir>/<name>.log``); the container id."""
        config = api_pb2.ContainerConfig(
            metadata=api_pb2.ContainerMetadata(name=name),
            image=api_pb2.ImageSpec(image=image),
            command=command,
            annotations=annotations or {},
            log_path=f"{name}.log",
        )
        request = api_pb2.CreateContainerRequest(
            pod_sandbox_id=pod_id, config=config, sandbox_config=pod.config()
        )
        reply = self.call("CreateContainer", request, api_pb2.CreateContainerResponse, timeout)
        return reply.container_id

    def start_container(self, container_id: str, timeout: float = 300) -> None:
        request = api_pb2.StartContainerRequest(container_id=container_id)
        self.call("StartContainer", request, api_pb2.StartContainerResponse, timeout)

    def stop_container(self, container_id: str, grace: int = 10) -> None:
        request = api_pb2.StopContainerRequest(container_id=container_id, timeout=grace)
        self.call("StopContainer", request, api_pb2.StopContainerResponse, grace + 120)

    def remove_container(self, container_id: str) -> None:
        request = api_pb2.RemoveContainerRequest(container_id=container_id)
        self.call("RemoveContainer", request, api_pb2.RemoveContainerResponse)

    def containers(self, pod_id: str = "") -> list[api_pb2.Container]:
        request = api_pb2.ListContainersRequest(
            filter=api_pb2.ContainerFilter(pod_sandbox_id=pod_id)
        )
        reply = self.call("ListContainers", request, api_pb2.ListContainersResponse)
        return list(reply.containers)

    def container_status(self, container_id: str) -> api_pb2.ContainerStatus:
        request = api_pb2.ContainerStatusRequest(container_id=container_id)
        return self.call("ContainerStatus", request, api_pb2.ContainerStatusResponse).status

    def container_info(self, container_id: str) -> dict[str, Any]:
        """containerd's verbose ContainerStatus ``info`` (its runtime spec...)."""
        request = api_pb2.ContainerStatusRequest(container_id=container_id, verbose=True)
        reply = self.call("ContainerStatus", request, api_pb2.ContainerStatusResponse)
        info: dict[str, Any] = json.loads(reply.info["info"])
        return info

    def wait_exited(self, container_id: str, timeout: float = 120) -> api_pb2.ContainerStatus:
        """Poll ContainerStatus until the container has exited; its final status."""
        deadline = time.monotonic() + timeout
        status = self.container_status(container_id)
        while status.state != api_pb2.CONTAINER_EXITED:
            if time.monotonic() > deadline:
                state = api_pb2.ContainerState.Name(status.state)
                raise CriTimeout(f"container {container_id} still {state} after {timeout:.0f} s")
            time.sleep(0.2)
            status = self.container_status(container_id)
        return status

    def exec_sync(
        self, container_id: str, cmd: list[str], timeout: int = 60
    ) -> api_pb2.ExecSyncResponse:
        request = api_pb2.ExecSyncRequest(container_id=container_id, cmd=cmd, timeout=timeout)
        return self.call("ExecSync", request, api_pb2.ExecSyncResponse, timeout + 60)


@dataclass(frozen=True)
class LogLine:
    stream: str  # "stdout" or "stderr"
    text: str


def read_log(path: Path) -> list[LogLine]:
    """A container's CRI log file (``<time> <stream> <P|F> <content>`` per line, ``P``
    a partial line continued by the next of its stream), joined into whole lines."""
    lines: list[LogLine] = []
    partial: dict[str, str] = {}
    for raw in path.read_text(errors="replace").splitlines():
        parts = raw.split(" ", 3)
        if len(parts) < 3:
            raise DevkitError(f"{path}: not a CRI log line: {raw!r}")
        _, stream, tag = parts[:3]
        content = parts[3] if len(parts) == 4 else ""
        text = partial.pop(stream, "") + content
        if tag == "P":
            partial[stream] = text
        else:
            lines.append(LogLine(stream, text))
    lines += [LogLine(stream, text) for stream, text in partial.items()]
    return lines
