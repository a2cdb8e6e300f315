"""The daemon's calls to containerd's gRPC API end in time, whatever containerd or grpcio
do (issue 14: no outbound call may hold a Task request forever)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from agent.sandbox import containerd_client, imageref
from agent.sandbox.containerd_client import ContainerdCallError
from agent.sandbox.errors import ImageRefError
from api.containerd.services.images.v1 import images_pb2

GET = imageref.GET
WAIT = 60.0  # only bounds a failure


@pytest.fixture
async def silent_containerd(tmp_path: Path) -> AsyncIterator[str]:
    """A gRPC server that takes Images/Get and never answers."""
    never = asyncio.Event()

    async def get(request: images_pb2.GetImageRequest, context: Any) -> Any:
        await never.wait()

    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "containerd.services.images.v1.Images",
        {
            "Get": grpc.unary_unary_rpc_method_handler(
                get,
                request_deserializer=images_pb2.GetImageRequest.FromString,
                response_serializer=images_pb2.GetImageResponse.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))
    socket = tmp_path / "containerd.sock"
    server.add_insecure_port(f"unix://{socket}")
    await server.start()
    try:
        yield str(socket)
    finally:
        never.set()
        await server.stop(None)


async def test_an_unanswered_call_fails_with_deadline_exceeded(silent_containerd: str) -> None:
    request = images_pb2.GetImageRequest(name="busybox:1")
    with pytest.raises(ContainerdCallError) as err:
        await asyncio.wait_for(
            containerd_client.unary(
                silent_containerd, "k8s.io", GET, request, images_pb2.GetImageResponse,
                timeout=0.5,
            ),
            WAIT,
        )  # fmt: skip
    assert err.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert GET in str(err.value)
    assert silent_containerd in str(err.value)


async def test_the_bound_holds_when_grpc_itself_never_returns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    release = threading.Event()

    def wedged(*args: Any, **kwargs: Any) -> Any:
        release.wait(WAIT)  # grpcio misbehaving: its own deadline never fires
        raise AssertionError("released")

    monkeypatch.setattr(containerd_client, "_blocking_unary", wedged)
    monkeypatch.setattr(containerd_client, "GRACE_SECONDS", 0.2)
    try:
        with pytest.raises(ImageRefError) as err:
            await asyncio.wait_for(
                imageref.pin("reg.example/app:1", "/nowhere.sock", "k8s.io", timeout=0.1), WAIT
            )
    finally:
        release.set()
    message = str(err.value)
    assert "image reg.example/app:1: asking containerd (/nowhere.sock) for its digest" in message
    assert "DEADLINE_EXCEEDED: no answer within 0.3 s" in message


async def test_a_refused_connection_is_unavailable(tmp_path: Path) -> None:
    request = images_pb2.GetImageRequest(name="busybox:1")
    with pytest.raises(ContainerdCallError) as err:
        await containerd_client.unary(
            str(tmp_path / "gone.sock"), "k8s.io", GET, request, images_pb2.GetImageResponse,
            timeout=5,
        )  # fmt: skip
    assert err.value.code is grpc.StatusCode.UNAVAILABLE
