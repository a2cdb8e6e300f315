"""A sandbox's containers through the guest agent's ``grpc.AgentService``.

:class:`GuestSandbox` implements the container half of
:class:`~agent.sandbox.backend.PodSandbox` for every backend: whatever brought the VM
up (or, in development, found a guest agent on a unix socket) hands it an
:class:`~agent.transport.client.AgentClient`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from google.protobuf.message import Message

from agent.sandbox import metrics, oci
from agent.sandbox.backend import ContainerSpec, Stream
from agent.sandbox.devices import LaunchedVM, PodDevices, ReattachedVM
from agent.sandbox.errors import BackendError, GuestAgentError
from agent.sandbox.outputkeep import QemuOutputKeeper
from agent.sandbox.state import VmRecord
from agent.transport.client import AgentClient
from agent.volumes.pod import PodVolumes
from api.guest import termination_pb2
from api.kata import agent_pb2
from ttrpc import ServiceStub, StatusError, TtrpcError

log = logging.getLogger(__name__)

IMAGE_ANNOTATION = "io.kubernetes.cri.image-name"
CONTAINER_TYPE_ANNOTATION = "io.kubernetes.cri.container-type"
TERMINATION_SERVICE = termination_pb2.DESCRIPTOR.services_by_name["TerminationMessage"]
# Where the guest mounts a container's rootfs (the Kata agent's convention).
GUEST_ROOTFS = "/run/kata-containers/{id}/rootfs"
# The image puller's storage driver: the guest pulls the image, the host sends no rootfs.
IMAGE_GUEST_PULL = "image_guest_pull"
# The calls of a pod's start and end whose round trip is logged (not the waits).
TIMED = frozenset(
    {"CreateSandbox", "CreateContainer", "StartContainer", "ExecProcess", "RemoveContainer"}
)


class GuestSandbox:
    """Containers of one sandbox, run by its guest agent."""

    def __init__(
        self,
        agent: AgentClient,
        record: VmRecord,
        call_timeout: float,
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.agent = agent
        self._record = record
        self.call_timeout = call_timeout
        self._on_close = on_close
        # The pod's volumes (agent.volumes): copied in, kept current, termination message.
        self.volumes = PodVolumes(self)
        # Its block devices (agent.sandbox.devices); the pod-VM backend gives the attacher.
        self.devices = PodDevices(None, None)
        self._keeper: QemuOutputKeeper | None = None
        self._termination = ServiceStub(agent.client, TERMINATION_SERVICE)

    @property
    def record(self) -> VmRecord:
        return self._record

    def output_keeper(self) -> QemuOutputKeeper | None:
        """The pod's QEMU as holder of its containers' output FIFOs across a daemon
        restart (:mod:`agent.sandbox.outputkeep`); None without a QMP session."""
        attacher = self.devices.attacher
        if self._keeper is None and isinstance(attacher, (LaunchedVM, ReattachedVM)):
            self._keeper = QemuOutputKeeper(attacher)
        return self._keeper

    async def _call(
        self,
        rpc: str,
        request: Message,
        *,
        timeout: float | None = -1.0,
        stub: ServiceStub | None = None,
    ) -> Any:
        """One AgentService call (or of ``stub``'s service); ttrpc failures become
        GuestAgentError/BackendError."""
        limit = self.call_timeout if timeout == -1.0 else timeout
        started = time.monotonic()
        try:
            reply = await getattr(stub or self.agent.agent, rpc)(request, timeout=limit)
        except StatusError as err:
            raise GuestAgentError(rpc, int(err.code), err.message) from err
        except (TtrpcError, OSError, TimeoutError) as err:
            raise BackendError(f"guest agent {rpc}: {type(err).__name__}: {err}") from err
        if rpc in TIMED:  # beside the guest's "served in" line (bench.pod_bench)
            elapsed = 1000 * (time.monotonic() - started)
            log.info("pid %d: guest agent %s took %.1f ms", self._record.pid, rpc, elapsed)
        return reply

    async def create_sandbox(
        self, hostname: str, sandbox_id: str, dns: tuple[str, ...] = ()
    ) -> None:
        """AgentService/CreateSandbox: the guest prepares the pod (pause process, pidns,
        its hostname, hosts and resolv.conf from ``dns``)."""
        request = agent_pb2.CreateSandboxRequest(
            hostname=hostname, dns=dns, sandbox_id=sandbox_id, sandbox_pidns=True
        )
        await self._call("CreateSandbox", request)

    async def destroy_sandbox(self) -> None:
        await self._call("DestroySandbox", agent_pb2.DestroySandboxRequest())

    async def create_container(self, spec: ContainerSpec) -> None:
        """Its volumes first (copied in, or VolumeError naming the mount), then
        AgentService/CreateContainer: the image's storage first, the emptyDirs after."""
        is_pause = spec.annotations.get(CONTAINER_TYPE_ANNOTATION) == "sandbox"
        mounts = list(spec.oci.get("mounts") or [])
        prepared = await self.volumes.prepare(spec.id, mounts, sandbox=is_pause)
        try:
            devices = await self.devices.prepare(spec.id, spec.oci)
        except BaseException:
            self.volumes.forget(spec.id)
            raise
        message = oci.spec({**spec.oci, "mounts": prepared.mounts})
        request = agent_pb2.CreateContainerRequest(
            container_id=spec.id, OCI=message, devices=devices
        )
        image = spec.annotations.get(IMAGE_ANNOTATION)
        if image:
            mount_point = GUEST_ROOTFS.format(id=spec.id)
            request.storages.add(
                driver=IMAGE_GUEST_PULL, source=image, fstype="overlay", mount_point=mount_point
            )
            request.OCI.Root.Path = mount_point
        request.storages.extend(prepared.storages)
        request.sandbox_pidns = shares_pod_pid_namespace(spec.oci)
        try:
            await self._call("CreateContainer", request)
        except BaseException:
            self.volumes.forget(spec.id)
            await self.devices.remove(spec.id)
            raise

    async def copy_file(self, request: agent_pb2.CopyFileRequest) -> None:
        """AgentService/CopyFile (agent.volumes); raises GuestAgentError, BackendError."""
        await self._call("CopyFile", request)

    async def termination_message(self, container_id: str) -> bytes:
        """contrast.guest.v1.TerminationMessage/ReadContainerTerminationMessage."""
        request = termination_pb2.ReadContainerTerminationMessageRequest(
            container_id=container_id
        )
        reply = await self._call(
            "ReadContainerTerminationMessage", request, stub=self._termination
        )
        return bytes(reply.message)

    def follow_container(self, container_id: str, oci_spec: dict[str, Any]) -> None:
        """After a daemon restart: keep the running container's volumes current again
        and its termination message coming back (agent.volumes.PodVolumes.follow)."""
        if oci_spec.get("annotations", {}).get(CONTAINER_TYPE_ANNOTATION) == "sandbox":
            return
        count = self.volumes.follow(container_id, list(oci_spec.get("mounts") or []))
        if count:
            log.info("container %s: %d volumes followed again", container_id, count)

    async def container_exited(self, container_id: str) -> None:
        """After a container's init exited, before its exit is reported: its
        termination message back to the kubelet's file (failures logged)."""
        await self.volumes.container_exited(container_id)

    async def start_container(self, container_id: str) -> None:
        await self._call(
            "StartContainer", agent_pb2.StartContainerRequest(container_id=container_id)
        )

    async def exec_process(
        self, container_id: str, exec_id: str, process: dict[str, Any], terminal: bool
    ) -> None:
        message = oci.process(process)
        message.Terminal = terminal
        request = agent_pb2.ExecProcessRequest(
            container_id=container_id, exec_id=exec_id, process=message
        )
        await self._call("ExecProcess", request)

    async def signal(self, container_id: str, exec_id: str, signal: int) -> None:
        request = agent_pb2.SignalProcessRequest(
            container_id=container_id, exec_id=exec_id, signal=signal
        )
        await self._call("SignalProcess", request)

    async def wait(self, container_id: str, exec_id: str) -> int:
        request = agent_pb2.WaitProcessRequest(container_id=container_id, exec_id=exec_id)
        reply = await self._call("WaitProcess", request, timeout=None)
        return int(reply.status)

    async def next_oom(self) -> str:
        """The id of the next container the guest's OOM killer hit (GetOOMEvent,
        which answers only then)."""
        reply = await self._call("GetOOMEvent", agent_pb2.GetOOMEventRequest(), timeout=None)
        return str(reply.container_id)

    async def read_output(
        self, container_id: str, exec_id: str, stream: Stream, size: int
    ) -> bytes:
        rpc = "ReadStdout" if stream is Stream.STDOUT else "ReadStderr"
        request = agent_pb2.ReadStreamRequest(container_id=container_id, exec_id=exec_id, len=size)
        reply = await self._call(rpc, request, timeout=None)
        return bytes(reply.data)

    async def write_stdin(self, container_id: str, exec_id: str, data: bytes) -> int:
        request = agent_pb2.WriteStreamRequest(
            container_id=container_id, exec_id=exec_id, data=data
        )
        reply = await self._call("WriteStdin", request)
        return int(reply.len)

    async def close_stdin(self, container_id: str, exec_id: str) -> None:
        request = agent_pb2.CloseStdinRequest(container_id=container_id, exec_id=exec_id)
        await self._call("CloseStdin", request)

    async def resize_pty(self, container_id: str, exec_id: str, width: int, height: int) -> None:
        request = agent_pb2.TtyWinResizeRequest(
            container_id=container_id, exec_id=exec_id, row=height, column=width
        )
        await self._call("TtyWinResize", request)

    async def remove_container(self, container_id: str) -> None:
        self.volumes.forget(container_id)
        request = agent_pb2.RemoveContainerRequest(container_id=container_id, timeout=10)
        try:
            await self._call("RemoveContainer", request)
        finally:  # its block devices detached once the guest let go of them
            await self.devices.remove(container_id)

    async def update(self, container_id: str, resources: dict[str, Any]) -> None:
        request = agent_pb2.UpdateContainerRequest(
            container_id=container_id, resources=oci.resources(resources)
        )
        await self._call("UpdateContainer", request)

    async def pids(self, container_id: str) -> list[int]:
        """AgentService/ListProcesses ("json"): the container's pids in the guest.

        Raises GuestAgentError (e.g. the policy denies ListProcessesRequest) and
        BackendError for an answer that is not a JSON array of pids.
        """
        request = agent_pb2.ListProcessesRequest(container_id=container_id, format="json")
        reply = await self._call("ListProcesses", request)
        try:
            pids = json.loads(reply.process_list)
        except ValueError as err:
            raise BackendError(f"guest agent ListProcesses: the answer is not JSON: {err}") from err
        if not isinstance(pids, list) or not all(
            type(p) is int and p > 0
            for p in pids  # bool is an int subclass: exact type
        ):
            raise BackendError(
                f"guest agent ListProcesses: expected a JSON array of pids, got {pids!r:.200}"
            )
        return pids

    async def stats(self, container_id: str) -> bytes:
        """AgentService/StatsContainer as serialized ``io.containerd.cgroups.v2.Metrics``
        (:data:`agent.sandbox.metrics.TYPE_URL`). Raises GuestAgentError, BackendError."""
        request = agent_pb2.StatsContainerRequest(container_id=container_id)
        reply = await self._call("StatsContainer", request)
        return metrics.from_agent(reply.cgroup_stats).SerializeToString()

    async def close(self) -> None:
        """Drop the connection to the guest agent (the sandbox itself keeps running)."""
        await self.volumes.close()
        await self.devices.close()
        await self.agent.close()
        if self._on_close is not None:
            await self._on_close()


def shares_pod_pid_namespace(oci: dict[str, Any]) -> bool:
    """Whether the container joins the pod's PID namespace in the guest (as Kata's
    ``sandbox_pidns``). CRI's spec says it: the ``pid`` namespace has a path (the
    sandbox's, ``NamespaceMode`` POD) or none for a namespace of the container's own
    (CONTAINER). A spec without a ``pid`` entry keeps the pod's."""
    namespaces = (oci.get("linux") or {}).get("namespaces") or []
    pid = [ns for ns in namespaces if isinstance(ns, dict) and ns.get("type") == "pid"]
    return not pid or bool(pid[0].get("path"))
