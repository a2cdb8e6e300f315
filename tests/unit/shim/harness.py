"""The daemon's services on a real ttrpc socket, with a client as containerd uses it."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import any_pb2
from google.protobuf.message import Message

from agent.events import EventForwarder
from agent.sandbox.backend import SandboxBackend
from agent.sandbox.state import StateStore
from api.node import shim_pb2 as node_pb2
from api.runtimeoptions.v1 import api_pb2 as runtimeoptions
from shim import control, task
from shim.endpoints import Endpoints
from shim.pods import Pods
from tests.unit.shim.sinks import EventSink, event_sink
from ttrpc import Client, Server, ServiceStub, same_uid

RUNTIME_CONFIG = """
platform = "qemu-insecure"
[guest]
kernel = "/nonexistent/vmlinuz"
initrd = "/nonexistent/initrd.img"
rootfs = "/nonexistent/rootfs.img"
cmdline = ["console=ttyS0"]
"""


class NamespacedStub:
    """A Task stub that sends containerd's namespace metadata with every call."""

    def __init__(self, stub: ServiceStub, namespace: str) -> None:
        self._stub = stub
        self._metadata = {"containerd-namespace-ttrpc": namespace}

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        method = getattr(self._stub, name)

        async def call(request: Message, **kw: Any) -> Any:
            return await method(request, metadata=self._metadata, **kw)

        return call


@dataclass
class Harness:
    service: task.TaskService
    client: Client
    task: NamespacedStub
    task_v3: NamespacedStub
    bare_task: ServiceStub
    control: ServiceStub
    sink: EventSink
    store: StateStore
    events_address: str
    config_path: Path
    folder: Path

    def options(self, config_path: Path | None = None) -> any_pb2.Any:
        message = runtimeoptions.Options(config_path=str(config_path or self.config_path))
        return any_pb2.Any(type_url="runtimeoptions.v1.Options", value=message.SerializeToString())

    async def register(self, task_id: str, namespace: str = "k8s.io", **kw: Any) -> None:
        request = node_pb2.RegisterRequest(
            namespace=namespace, id=task_id, ttrpc_address=self.events_address, **kw
        )
        await self.control.Register(request)

    def bundle(self, task_id: str, annotations: dict[str, str] | None = None) -> Path:
        folder = self.folder / "bundles" / task_id
        folder.mkdir(parents=True)
        spec = {"ociVersion": "1.0.2", "process": {"args": ["/pause"]}, "root": {"path": "rootfs"}}
        spec["annotations"] = annotations or {}
        (folder / "config.json").write_text(json.dumps(spec))
        return folder


@contextlib.asynccontextmanager
async def running(folder: Path, backend: SandboxBackend) -> AsyncIterator[Harness]:
    """Task (v2 and v3) and the control service on ``folder/daemon.sock``."""
    store = StateStore(folder / "state")
    registrations = control.Registrations()
    events = EventForwarder(retry_seconds=2)
    service = task.TaskService(backend, Pods(store), registrations, events, folder / "run")
    config_path = folder / "runtime.toml"
    config_path.write_text(RUNTIME_CONFIG)
    server = Server()
    for name in task.NAMES:
        server.register(task.SERVICE, service, name=name)
    socket = folder / "daemon.sock"
    endpoints = Endpoints(folder, service, same_uid)
    server.register(
        control.SERVICE, control.ControlService(registrations, service, endpoints.ensure)
    )
    events_address = folder / "containerd.sock.ttrpc"
    async with event_sink(events_address) as sink:
        await service.reattach()
        await server.serve_unix(socket)
        client = await Client.connect_unix(socket)
        try:
            yield Harness(
                service=service,
                client=client,
                task=NamespacedStub(ServiceStub(client, task.SERVICE), "k8s.io"),
                task_v3=NamespacedStub(
                    ServiceStub(client, task.SERVICE, name="containerd.task.v3.Task"), "k8s.io"
                ),
                bare_task=ServiceStub(client, task.SERVICE),
                control=ServiceStub(client, control.SERVICE),
                sink=sink,
                store=store,
                events_address=str(events_address),
                config_path=config_path,
                folder=folder,
            )
        finally:
            await client.close()
            await server.close()
            await endpoints.close()
            await service.close()
            await events.close()
