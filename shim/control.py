"""``contrast.node.v1.Shim``: what the shim entry asks of the daemon.

``Register`` (from ``start``) records, per task, which containerd it belongs to (its
ttrpc address, for events) and the runtime options it was started with. ``Cleanup``
(from ``delete``) releases a task containerd considers dead, whatever state it is in.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from google.protobuf import any_pb2

from agent.sandbox.errors import StateError
from agent.sandbox.state import check_id
from api.containerd.task.v2 import shim_pb2
from api.node import shim_pb2 as node_pb2
from shim.errors import translated
from ttrpc import CallContext, InvalidArgument

if TYPE_CHECKING:
    from shim.task import TaskService

log = logging.getLogger(__name__)

SERVICE = node_pb2.DESCRIPTOR.services_by_name["Shim"]


@dataclass(frozen=True)
class Registration:
    namespace: str
    id: str
    bundle: str
    ttrpc_address: str
    options: any_pb2.Any | None
    # containerd's gRPC socket (the shim's -address): images are looked up there.
    grpc_address: str = ""


class Registrations:
    """Tasks announced by ``start``, by (namespace, id); forgotten at Shutdown."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], Registration] = {}

    def add(self, registration: Registration) -> None:
        self._entries[(registration.namespace, registration.id)] = registration

    def get(self, namespace: str, task_id: str) -> Registration | None:
        return self._entries.get((namespace, task_id))

    def forget(self, namespace: str, task_id: str) -> None:
        self._entries.pop((namespace, task_id), None)


def process_age(pid: int) -> float | None:
    """Seconds since process ``pid`` was started (its fork; to a clock tick, 10 ms on
    most kernels), None when /proc does not tell."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            stat = file.read()
        # Fields after the command's ")": state is field 3, starttime field 22.
        ticks = int(stat[stat.rindex(b")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return None
    return time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")


class ControlService:
    """Serves ``contrast.node.v1.Shim`` for the shim entry."""

    def __init__(
        self,
        registrations: Registrations,
        tasks: TaskService,
        endpoint: Callable[[str], Awaitable[str]],
    ) -> None:
        self.registrations = registrations
        self.tasks = tasks
        # The Task address for a namespace (serving it first if needed).
        self.endpoint = endpoint

    async def Register(
        self, request: node_pb2.RegisterRequest, ctx: CallContext
    ) -> node_pb2.RegisterResponse:
        try:
            check_id(request.namespace, "namespace")
            check_id(request.id, "task id")
        except StateError as err:
            raise InvalidArgument(str(err)) from err
        if not request.ttrpc_address:
            raise InvalidArgument(f"task {request.id}: no containerd ttrpc address (TTRPC_ADDRESS)")
        self.registrations.add(
            Registration(
                namespace=request.namespace,
                id=request.id,
                bundle=request.bundle,
                ttrpc_address=request.ttrpc_address,
                options=request.options if request.HasField("options") else None,
                grpc_address=request.grpc_address,
            )
        )
        address = await self.endpoint(request.namespace)
        pid = ctx.peer.pid if ctx.peer is not None else 0
        age = process_age(pid) if pid else None
        # bench.pod_steps reads the shim's age: containerd's share of a step ends there.
        log.info(
            "task %s/%s registered (events to %s; shim %s)",
            request.namespace,
            request.id,
            request.ttrpc_address,
            "age unknown" if age is None else f"pid {pid} started {1000 * age:.0f} ms ago",
        )
        return node_pb2.RegisterResponse(address=address)

    @translated
    async def Cleanup(
        self, request: node_pb2.CleanupRequest, ctx: CallContext
    ) -> shim_pb2.DeleteResponse:
        self.registrations.forget(request.namespace, request.id)
        return await self.tasks.cleanup(request.namespace, request.id)
