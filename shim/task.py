"""``containerd.task.v2.Task`` for every pod of the node, on a SandboxBackend.

Containers are grouped into sandboxes by the ``io.kubernetes.cri.sandbox-id``
annotation; the sandbox (pause) container brings up the pod-VM, later containers are
created in it. A container without CRI annotations (``ctr run``) is a sandbox of its
own. Events go to the containerd that registered the task, in the order create,
start, exit, delete (see :mod:`agent.events`).

Each task's pid is the pod-VM's QEMU pid (the processes themselves live in the
guest); a backend without a VM reports the daemon's pid.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from google.protobuf import any_pb2, empty_pb2

from agent.events.envelope import timestamp
from agent.sandbox import imageref
from agent.sandbox import metrics as sandbox_metrics
from agent.sandbox.backend import ContainerSpec
from agent.sandbox.errors import (
    BackendError,
    TaskStateError,
    UnknownTaskError,
)
from agent.sandbox.guest import IMAGE_ANNOTATION
from agent.sandbox.state import (
    ContainerRecord,
    ProcessRecord,
    Status,
    Stdio,
    check_id,
)
from api.containerd.events import task_pb2 as events
from api.containerd.task.v2 import shim_pb2
from api.containerd.types.task import task_pb2 as types
from shim.errors import translated
from shim.task_processes import TaskProcesses
from shim.task_requests import (
    CONTAINER_TYPE,
    NAMESPACE_KEY,
    SANDBOX_ID,
    read_spec,
    request_namespace,
    runtime_config_of,
    sandbox_run_dir,
)
from ttrpc import CallContext, InvalidArgument, NotFound, Unimplemented

__all__ = ["NAMES", "NAMESPACE_KEY", "SERVICE", "STATUS", "TaskService", "sandbox_run_dir"]

log = logging.getLogger(__name__)

SERVICE = shim_pb2.DESCRIPTOR.services_by_name["Task"]
NAMES = ("containerd.task.v2.Task", "containerd.task.v3.Task")
STATUS = {
    Status.CREATED: types.CREATED,
    Status.RUNNING: types.RUNNING,
    Status.STOPPED: types.STOPPED,
}


class TaskService(TaskProcesses):
    """The Task RPCs. ``run_dir`` holds each sandbox's sockets, logs and disks."""

    # -- lifecycle -----------------------------------------------------------------

    @translated
    async def Create(
        self, request: shim_pb2.CreateTaskRequest, ctx: CallContext
    ) -> shim_pb2.CreateTaskResponse:
        namespace = request_namespace(ctx)
        check_id(request.id, "task id")
        registration = self.registrations.get(namespace, request.id)
        if registration is None:
            raise TaskStateError(f"task {request.id} was not announced by the shim's start")
        if request.checkpoint:
            raise Unimplemented("restoring from a checkpoint is not supported")
        options = request.options if request.HasField("options") else registration.options
        config = runtime_config_of(request.id, options)
        oci = read_spec(request.bundle)
        annotations = {str(k): str(v) for k, v in oci.get("annotations", {}).items()}
        if image := annotations.get(IMAGE_ANNOTATION):
            # The guest pulls exactly what containerd resolved the name to.
            pinned = await imageref.pin(image, registration.grpc_address, namespace)
            annotations[IMAGE_ANNOTATION] = pinned
            oci["annotations"] = {**oci.get("annotations", {}), IMAGE_ANNOTATION: pinned}
        sandbox_id = annotations.get(SANDBOX_ID, request.id)
        check_id(sandbox_id, "sandbox id")
        is_sandbox = (
            annotations.get(CONTAINER_TYPE, "sandbox") == "sandbox" or sandbox_id == request.id
        )
        process = ProcessRecord(
            exec_id="",
            stdio=Stdio(request.stdin, request.stdout, request.stderr, request.terminal),
        )
        container = ContainerRecord(
            id=request.id, bundle=request.bundle, init=process, is_sandbox=is_sandbox
        )
        spec = ContainerSpec(
            id=request.id,
            bundle=Path(request.bundle),
            oci=oci,
            terminal=request.terminal,
            annotations=annotations,
        )
        if is_sandbox:
            pod = await self._create_sandbox(
                namespace=namespace,
                sandbox_id=sandbox_id,
                config=config,
                annotations=annotations,
                oci=oci,
                ttrpc_address=registration.ttrpc_address,
            )
        else:
            found = self.pods.pod(namespace, sandbox_id)
            if found is None:
                raise UnknownTaskError(f"sandbox {sandbox_id} of container {request.id} not found")
            pod = found
        sandbox = self._sandbox(pod)
        try:
            await sandbox.create_container(spec)
        except BaseException:
            if is_sandbox:
                await self._destroy(pod)
            raise
        process = replace(process, pid=self._pid(pod))
        await self.pods.update(pod, lambda r: r.with_container(replace(container, init=process)))
        live = pod.live_of(request.id, "")
        self._open_stdio(pod, request.id, process, live)
        self._watch(pod, request.id, "")
        self._publish(
            pod,
            events.TaskCreate(
                container_id=request.id,
                bundle=request.bundle,
                rootfs=request.rootfs,
                io=events.TaskIO(
                    stdin=request.stdin,
                    stdout=request.stdout,
                    stderr=request.stderr,
                    terminal=request.terminal,
                ),
                pid=process.pid,
            ),
        )
        log.info("task %s/%s created in sandbox %s", namespace, request.id, sandbox_id)
        return shim_pb2.CreateTaskResponse(pid=process.pid)

    @translated
    async def Start(
        self, request: shim_pb2.StartRequest, ctx: CallContext
    ) -> shim_pb2.StartResponse:
        namespace = request_namespace(ctx)
        pod, _, process = self.pods.process(namespace, request.id, request.exec_id)
        if process.status is not Status.CREATED:
            raise TaskStateError(
                f"task {request.id} {request.exec_id}: already {process.status.value}"
            )
        sandbox = self._sandbox(pod)
        live = pod.live_of(request.id, request.exec_id)
        if request.exec_id:
            assert live.spec is not None
            try:
                await sandbox.exec_process(
                    request.id, request.exec_id, live.spec, process.stdio.terminal
                )
            except BaseException:
                # As runc's shim: an exec that failed to start has ended (containerd
                # then Waits for it before Delete, e.g. after a policy refusal).
                await self._never_started(pod, request.id, request.exec_id)
                raise
            self._open_stdio(pod, request.id, process, live)
            self._watch(pod, request.id, request.exec_id)
        else:
            await sandbox.start_container(request.id)
        pid = self._pid(pod)

        def started(now: ProcessRecord) -> ProcessRecord | None:
            # The process may have exited already (its watcher): never turn STOPPED back.
            if now.status is not Status.CREATED:
                return None
            return replace(now, status=Status.RUNNING, pid=pid)

        await self.pods.update_process(pod, request.id, request.exec_id, started)
        if request.exec_id:
            event: Any = events.TaskExecStarted(
                container_id=request.id, exec_id=request.exec_id, pid=pid
            )
        else:
            event = events.TaskStart(container_id=request.id, pid=pid)
            log.info("task %s/%s started", namespace, request.id)
        self._publish(pod, event)
        return shim_pb2.StartResponse(pid=pid)

    @translated
    async def Exec(self, request: shim_pb2.ExecProcessRequest, ctx: CallContext) -> empty_pb2.Empty:
        namespace = request_namespace(ctx)
        check_id(request.exec_id, "exec id")
        pod, _ = self.pods.find(namespace, request.id)
        try:
            spec = json.loads(request.spec.value)
        except ValueError as err:
            raise InvalidArgument(
                f"exec {request.exec_id}: the process spec is not JSON: {err}"
            ) from err
        process = ProcessRecord(
            exec_id=request.exec_id,
            stdio=Stdio(request.stdin, request.stdout, request.stderr, request.terminal),
            pid=self._pid(pod),
        )
        await self.pods.add_process(pod, request.id, process)
        pod.live_of(request.id, request.exec_id).spec = spec
        self._publish(pod, events.TaskExecAdded(container_id=request.id, exec_id=request.exec_id))
        return empty_pb2.Empty()

    @translated
    async def Wait(self, request: shim_pb2.WaitRequest, ctx: CallContext) -> shim_pb2.WaitResponse:
        namespace = request_namespace(ctx)
        pod, _, process = self.pods.process(namespace, request.id, request.exec_id)
        if process.status is not Status.STOPPED:
            process = await asyncio.shield(pod.live_of(request.id, request.exec_id).exited)
        return shim_pb2.WaitResponse(
            exit_status=process.exit_status, exited_at=timestamp(process.exited_at_ns)
        )

    @translated
    async def Kill(self, request: shim_pb2.KillRequest, ctx: CallContext) -> empty_pb2.Empty:
        namespace = request_namespace(ctx)
        pod, _, process = self.pods.process(namespace, request.id, request.exec_id)
        if process.status is Status.STOPPED:
            raise NotFound(f"task {request.id} {request.exec_id}: process already finished")
        await self._sandbox(pod).signal(request.id, request.exec_id, request.signal)
        return empty_pb2.Empty()

    @translated
    async def Delete(
        self, request: shim_pb2.DeleteRequest, ctx: CallContext
    ) -> shim_pb2.DeleteResponse:
        namespace = request_namespace(ctx)
        pod, container, process = self.pods.process(namespace, request.id, request.exec_id)
        if process.status is Status.RUNNING:
            raise TaskStateError(
                f"task {request.id} {request.exec_id}: cannot delete a running process"
            )
        live = pod.live.pop((request.id, request.exec_id), None)
        if live is not None and live.bridge is not None:
            await live.bridge.close()
        if live is not None and live.watcher is not None:
            live.watcher.cancel()
        response = shim_pb2.DeleteResponse(
            pid=process.pid,
            exit_status=process.exit_status,
            exited_at=timestamp(process.exited_at_ns),
        )
        if request.exec_id:
            await self.pods.update(
                pod, lambda r: r.with_container(container.without_exec(request.exec_id))
            )
            return response
        if pod.sandbox is not None:
            try:
                await pod.sandbox.remove_container(request.id)
            except BackendError as err:
                log.warning("task %s: guest RemoveContainer failed: %s", request.id, err)
        if container.is_sandbox:
            await self._destroy(pod)
        else:
            await self.pods.update(pod, lambda r: r.without_container(request.id))
        self._publish(
            pod,
            events.TaskDelete(
                container_id=request.id,
                pid=process.pid,
                exit_status=process.exit_status,
                exited_at=timestamp(process.exited_at_ns),
            ),
        )
        return response

    # -- inspection and stdio --------------------------------------------------------

    @translated
    async def State(
        self, request: shim_pb2.StateRequest, ctx: CallContext
    ) -> shim_pb2.StateResponse:
        namespace = request_namespace(ctx)
        _, container, process = self.pods.process(namespace, request.id, request.exec_id)
        stopped = process.status is Status.STOPPED
        return shim_pb2.StateResponse(
            id=request.id,
            bundle=container.bundle,
            pid=process.pid,
            status=STATUS[process.status],
            stdin=process.stdio.stdin,
            stdout=process.stdio.stdout,
            stderr=process.stdio.stderr,
            terminal=process.stdio.terminal,
            exit_status=process.exit_status,
            exited_at=timestamp(process.exited_at_ns) if stopped else None,
            exec_id=request.exec_id,
        )

    @translated
    async def Connect(
        self, request: shim_pb2.ConnectRequest, ctx: CallContext
    ) -> shim_pb2.ConnectResponse:
        namespace = request_namespace(ctx)
        try:
            pod, _ = self.pods.find(namespace, request.id)
            task_pid = self._pid(pod)
        except UnknownTaskError:
            task_pid = 0
        return shim_pb2.ConnectResponse(shim_pid=os.getpid(), task_pid=task_pid)

    @translated
    async def Shutdown(
        self, request: shim_pb2.ShutdownRequest, ctx: CallContext
    ) -> empty_pb2.Empty:
        # containerd asks a per-task shim to exit; the daemon serves every pod and
        # stays, it only forgets the task's registration.
        self.registrations.forget(request_namespace(ctx), request.id)
        return empty_pb2.Empty()

    @translated
    async def CloseIO(self, request: shim_pb2.CloseIORequest, ctx: CallContext) -> empty_pb2.Empty:
        namespace = request_namespace(ctx)
        pod, _, _ = self.pods.process(namespace, request.id, request.exec_id)
        live = pod.live.get((request.id, request.exec_id))
        if request.stdin and live is not None and live.bridge is not None:
            live.bridge.close_stdin()
        return empty_pb2.Empty()

    @translated
    async def ResizePty(
        self, request: shim_pb2.ResizePtyRequest, ctx: CallContext
    ) -> empty_pb2.Empty:
        namespace = request_namespace(ctx)
        pod, _, _ = self.pods.process(namespace, request.id, request.exec_id)
        await self._sandbox(pod).resize_pty(
            request.id, request.exec_id, request.width, request.height
        )
        return empty_pb2.Empty()

    @translated
    async def Pids(self, request: shim_pb2.PidsRequest, ctx: CallContext) -> shim_pb2.PidsResponse:
        pod, _ = self.pods.find(request_namespace(ctx), request.id)
        pids = await self._sandbox(pod).pids(request.id)
        return shim_pb2.PidsResponse(processes=[types.ProcessInfo(pid=p) for p in pids])

    @translated
    async def Stats(
        self, request: shim_pb2.StatsRequest, ctx: CallContext
    ) -> shim_pb2.StatsResponse:
        pod, _ = self.pods.find(request_namespace(ctx), request.id)
        metrics = await self._sandbox(pod).stats(request.id)
        return shim_pb2.StatsResponse(
            stats=any_pb2.Any(type_url=sandbox_metrics.TYPE_URL, value=metrics)
        )

    @translated
    async def Update(
        self, request: shim_pb2.UpdateTaskRequest, ctx: CallContext
    ) -> empty_pb2.Empty:
        pod, _ = self.pods.find(request_namespace(ctx), request.id)
        try:
            resources = json.loads(request.resources.value) if request.resources.value else {}
        except ValueError as err:
            raise InvalidArgument(f"Update {request.id}: resources are not JSON: {err}") from err
        await self._sandbox(pod).update(request.id, resources)
        return empty_pb2.Empty()

    async def Pause(self, request: shim_pb2.PauseRequest, ctx: CallContext) -> empty_pb2.Empty:
        raise Unimplemented("Pause is not supported for confidential pod-VMs")

    async def Resume(self, request: shim_pb2.ResumeRequest, ctx: CallContext) -> empty_pb2.Empty:
        raise Unimplemented("Resume is not supported for confidential pod-VMs")

    async def Checkpoint(
        self, request: shim_pb2.CheckpointTaskRequest, ctx: CallContext
    ) -> empty_pb2.Empty:
        raise Unimplemented(
            "Checkpoint is not supported: a confidential VM's memory never leaves it"
        )
