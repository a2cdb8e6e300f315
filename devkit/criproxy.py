"""A CRI proxy that puts a pod annotation where a user's pod spec would have it.

critest builds its own PodSandboxConfigs; it cannot give a pod our initdata annotation
(``io.katacontainers.config.hypervisor.cc_init_data``), without which the pod-VM denies
every request. In a cluster the annotation comes from the pod's manifest through the
kubelet. :class:`CriProxy` serves the CRI (RuntimeService and ImageService, every
method, bytes passed through unchanged) on a unix socket of its own and forwards to
containerd's; only ``RunPodSandbox`` requests for ``handler`` are decoded and get
``annotations`` added (a pod's own annotation of the same name wins). Streaming URLs
(exec, attach, port-forward) point at containerd's stream server directly, as with a
kubelet.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from concurrent import futures
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc

from api.containerd.cri.runtime.v1 import api_pb2

log = logging.getLogger(__name__)

RUN_POD = "/runtime.v1.RuntimeService/RunPodSandbox"
MAX_TIMEOUT = 7 * 24 * 3600.0
STREAMING = frozenset({"/runtime.v1.RuntimeService/GetContainerEvents"})


class CriProxy(grpc.GenericRpcHandler):
    """Serve ``socket``, forward to containerd's CRI at ``upstream``."""

    def __init__(
        self, socket: Path, upstream: Path, handler: str, annotations: Mapping[str, str]
    ) -> None:
        self.socket = socket
        self.handler = handler
        self.annotations = dict(annotations)
        self.rewritten = 0  # RunPodSandbox requests that got the annotations
        self._channel = grpc.insecure_channel(
            f"unix://{upstream}",
            options=[("grpc.max_receive_message_length", 64 << 20)],
        )
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=16),
            handlers=[self],
            options=[("grpc.max_receive_message_length", 64 << 20)],
        )

    @property
    def address(self) -> str:
        return f"unix://{self.socket}"

    def __enter__(self) -> CriProxy:
        self.socket.unlink(missing_ok=True)
        self._server.add_insecure_port(self.address)
        self._server.start()
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self._server.stop(grace=2).wait()
        self._channel.close()

    def rewrite(self, method: str, request: bytes) -> bytes:
        """The request as containerd gets it (annotations added for our handler's pods)."""
        if method != RUN_POD:
            return request
        message = api_pb2.RunPodSandboxRequest.FromString(request)
        if message.runtime_handler != self.handler:
            return request
        for key, value in self.annotations.items():
            message.config.annotations.setdefault(key, value)
        self.rewritten += 1
        return message.SerializeToString()

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = str(details.method)
        if method in STREAMING:
            return grpc.unary_stream_rpc_method_handler(
                lambda request, context: self._stream(method, request, context)
            )
        return grpc.unary_unary_rpc_method_handler(
            lambda request, context: self._unary(method, request, context)
        )

    def _unary(self, method: str, request: bytes, context: grpc.ServicerContext) -> Any:
        call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = self._channel.unary_unary(method)
        try:
            return call(self.rewrite(method, request), timeout=_deadline(context))
        except grpc.RpcError as err:
            context.abort(err.code(), err.details() or "")

    def _stream(self, method: str, request: bytes, context: grpc.ServicerContext) -> Iterator[Any]:
        call: grpc.UnaryStreamMultiCallable[bytes, bytes] = self._channel.unary_stream(method)
        try:
            yield from call(request, timeout=_deadline(context))
        except grpc.RpcError as err:
            context.abort(err.code(), err.details() or "")


def _deadline(context: grpc.ServicerContext) -> float | None:
    """The caller's remaining time; None without a deadline (grpc reports an unset one
    as an "infinite" remainder, which as a client timeout fails the call at once)."""
    remaining = context.time_remaining()
    return None if remaining is None or remaining > MAX_TIMEOUT else float(remaining)
