"""A small CRI client (containerd's gRPC socket) for the calls our tests make."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc
from google.protobuf.message import Message

from api.containerd.cri.runtime.v1 import api_pb2

R = TypeVar("R", bound=Message)


@dataclass(frozen=True)
class Cri:
    socket: Path

    def call(self, method: str, request: Message, response: type[R], timeout: float = 120) -> R:
        """``/runtime.v1.RuntimeService/<method>``; raises grpc.RpcError."""
        with grpc.insecure_channel(f"unix://{self.socket}") as channel:
            stub = channel.unary_unary(
                f"/runtime.v1.RuntimeService/{method}",
                request_serializer=type(request).SerializeToString,
                response_deserializer=response.FromString,
            )
            reply: R = stub(request, timeout=timeout)
            return reply

    def run_pod(
        self,
        name: str,
        handler: str,
        annotations: dict[str, str] | None = None,
        network: api_pb2.NamespaceMode = api_pb2.NODE,
    ) -> api_pb2.RunPodSandboxResponse:
        """RunPodSandbox; by default a host-network pod (no CNI needed)."""
        config = api_pb2.PodSandboxConfig(
            metadata=api_pb2.PodSandboxMetadata(name=name, uid=f"uid-{name}", namespace="default"),
            hostname=name,
            annotations=annotations or {},
            linux=api_pb2.LinuxPodSandboxConfig(
                security_context=api_pb2.LinuxSandboxSecurityContext(
                    namespace_options=api_pb2.NamespaceOption(network=network)
                )
            ),
        )
        request = api_pb2.RunPodSandboxRequest(config=config, runtime_handler=handler)
        return self.call("RunPodSandbox", request, api_pb2.RunPodSandboxResponse)

    def pods(self) -> list[api_pb2.PodSandbox]:
        reply = self.call(
            "ListPodSandbox", api_pb2.ListPodSandboxRequest(), api_pb2.ListPodSandboxResponse
        )
        return list(reply.items)
