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
import hashlib
import json
import logging
import os
import signal
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from google.protobuf import any_pb2, empty_pb2

from agent.events import EventForwarder, ForwardError
from agent.events.envelope import timestamp
from agent.sandbox import allowlist
from agent.sandbox import config as runtime_config
from agent.sandbox.backend import ContainerSpec, SandboxBackend, SandboxSpec
from agent.sandbox.errors import (
    BackendError,
    RuntimeConfigError,
    SandboxError,
    TaskStateError,
    UnknownTaskError,
)
from agent.sandbox.state import (
    ContainerRecord,
    ProcessRecord,
    SandboxRecord,
    Status,
    Stdio,
    check_id,
)
from agent.stdio import StdioBridge
from api.containerd.events import task_pb2 as events
from api.containerd.task.v2 import shim_pb2
from api.containerd.types.task import task_pb2 as types
from api.runtimeoptions.v1 import api_pb2 as runtimeoptions
from shim.control import Registrations
from shim.errors import translated
from shim.pods import Live, Pod, Pods, ProcessStdio
from ttrpc import CallContext, InvalidArgument, NotFound, Unimplemented

log = logging.getLogger(__name__)

SERVICE = shim_pb2.DESCRIPTOR.services_by_name["Task"]
NAMES = ("containerd.task.v2.Task", "containerd.task.v3.Task")
NAMESPACE_KEY = "containerd-namespace-ttrpc"
SANDBOX_ID = "io.kubernetes.cri.sandbox-id"
CONTAINER_TYPE = "io.kubernetes.cri.container-type"
OPTIONS_TYPE = "runtimeoptions.v1.Options"
# How long an exit waits for the process's output to reach containerd's FIFOs.
DRAIN_SECONDS = 5.0
STATUS = {
    Status.CREATED: types.CREATED,
    Status.RUNNING: types.RUNNING,
    Status.STOPPED: types.STOPPED,
}


def _namespace(ctx: CallContext) -> str:
    namespace = ctx.get(NAMESPACE_KEY)
    if not namespace:
        raise InvalidArgument(f"request without the {NAMESPACE_KEY} metadata")
    return namespace


def _config_path(options: Any) -> str:
    if options is None or not options.value:
        return ""
    if options.type_url.rsplit("/", 1)[-1] != OPTIONS_TYPE:
        raise RuntimeConfigError(
            f"runtime options of type {options.type_url!r}, not {OPTIONS_TYPE}"
        )
    parsed = runtimeoptions.Options()
    parsed.ParseFromString(options.value)
    return parsed.config_path


def _netns(oci: dict[str, Any]) -> Path | None:
    for namespace in oci.get("linux", {}).get("namespaces", []):
        if namespace.get("type") == "network" and namespace.get("path"):
            return Path(namespace["path"])
    return None


def sandbox_run_dir(run_dir: Path, namespace: str, sandbox_id: str) -> Path:
    """A sandbox's directory for sockets, logs and disks: named by a short hash, since
    CRI's 64-hex sandbox ids would push socket paths past the 107-byte limit."""
    digest = hashlib.sha256(f"{namespace}/{sandbox_id}".encode()).hexdigest()[:16]
    return run_dir / "vm" / digest


def _read_spec(bundle: str) -> dict[str, Any]:
    path = Path(bundle) / "config.json"
    try:
        spec = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise TaskStateError(f"cannot read the OCI spec {path}: {err}") from err
    if not isinstance(spec, dict):
        raise TaskStateError(f"{path} is not a JSON object")
    return spec


class TaskService:
    """The Task RPCs. ``run_dir`` holds each sandbox's sockets, logs and disks."""

    def __init__(
        self,
        backend: SandboxBackend,
        pods: Pods,
        registrations: Registrations,
        events: EventForwarder,
        run_dir: Path,
    ) -> None:
        self.backend = backend
        self.pods = pods
        self.registrations = registrations
        self.events = events
        self.run_dir = run_dir

    # -- helpers -----------------------------------------------------------------

    def _publish(self, pod: Pod, event: Any) -> None:
        try:
            self.events.publish(pod.record.ttrpc_address, pod.record.namespace, event)
        except ForwardError as err:
            log.warning("sandbox %s: event not sent: %s", pod.record.id, err)

    def _pid(self, pod: Pod) -> int:
        vm = pod.record.vm
        return vm.pid if vm is not None and vm.pid > 0 else os.getpid()

    def _sandbox(self, pod: Pod) -> Any:
        if pod.sandbox is None:
            raise TaskStateError(
                f"sandbox {pod.record.id} is gone (its VM could not be reattached)"
            )
        return pod.sandbox

    async def _set_process(self, pod: Pod, container_id: str, process: ProcessRecord) -> None:
        def change(record: SandboxRecord) -> SandboxRecord:
            container = record.container(container_id)
            if container is None:
                return record
            return record.with_container(container.with_process(process))

        await self.pods.update(pod, change)

    def _open_stdio(self, pod: Pod, container_id: str, process: ProcessRecord, live: Live) -> None:
        stdio = process.stdio
        if not (stdio.stdin or stdio.stdout or stdio.stderr):
            return
        name = f"{pod.record.id}/{container_id}/{process.exec_id or 'init'}"
        bridge = StdioBridge(
            name,
            ProcessStdio(self._sandbox(pod), container_id, process.exec_id),
            stdin=stdio.stdin,
            stdout=stdio.stdout,
            stderr="" if stdio.terminal else stdio.stderr,
        )
        bridge.open()
        live.bridge = bridge

    def _watch(self, pod: Pod, container_id: str, exec_id: str) -> None:
        live = pod.live_of(container_id, exec_id)
        if live.watcher is None:
            live.watcher = asyncio.create_task(self._await_exit(pod, container_id, exec_id, live))

    async def _await_exit(self, pod: Pod, container_id: str, exec_id: str, live: Live) -> None:
        try:
            status = await self._sandbox(pod).wait(container_id, exec_id)
        except (SandboxError, NotImplementedError) as err:
            log.warning("%s/%s %s: lost the process: %s", pod.record.id, container_id, exec_id, err)
            status = 255
        if live.bridge is not None and not await live.bridge.drained(DRAIN_SECONDS):
            log.warning(
                "%s/%s: output still flowing %s s after exit",
                pod.record.id,
                container_id,
                DRAIN_SECONDS,
            )
        await self._exited(pod, container_id, exec_id, status)

    async def _exited(self, pod: Pod, container_id: str, exec_id: str, status: int) -> None:
        container = pod.record.container(container_id)
        process = container.process(exec_id) if container else None
        if process is None or process.status is Status.STOPPED:
            return
        done = replace(
            process, status=Status.STOPPED, exit_status=status, exited_at_ns=time.time_ns()
        )
        await self._set_process(pod, container_id, done)
        self._publish(
            pod,
            events.TaskExit(
                container_id=container_id,
                id=exec_id or container_id,
                pid=done.pid,
                exit_status=status,
                exited_at=timestamp(done.exited_at_ns),
            ),
        )
        live = pod.live_of(container_id, exec_id)
        if not live.exited.done():
            live.exited.set_result(done)
        log.info("%s/%s %s exited with %d", pod.record.id, container_id, exec_id or "init", status)

    # -- lifecycle -----------------------------------------------------------------

    @translated
    async def Create(
        self, request: shim_pb2.CreateTaskRequest, ctx: CallContext
    ) -> shim_pb2.CreateTaskResponse:
        namespace = _namespace(ctx)
        check_id(request.id, "task id")
        registration = self.registrations.get(namespace, request.id)
        if registration is None:
            raise TaskStateError(f"task {request.id} was not announced by the shim's start")
        if request.checkpoint:
            raise Unimplemented("restoring from a checkpoint is not supported")
        options = request.options if request.HasField("options") else registration.options
        config_path = _config_path(options)
        if not config_path:
            raise RuntimeConfigError(
                f"task {request.id}: the runtime options carry no ConfigPath "
                "(containerd's runtime entry needs options.ConfigPath)"
            )
        config = runtime_config.load(Path(config_path))
        oci = _read_spec(request.bundle)
        annotations = {str(k): str(v) for k, v in oci.get("annotations", {}).items()}
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

    async def _create_sandbox(
        self,
        *,
        namespace: str,
        sandbox_id: str,
        config: runtime_config.RuntimeConfig,
        annotations: dict[str, str],
        oci: dict[str, Any],
        ttrpc_address: str,
    ) -> Pod:
        if self.pods.pod(namespace, sandbox_id) is not None:
            raise TaskStateError(f"sandbox {sandbox_id} exists already")
        settings = allowlist.vm_settings(annotations, config)
        spec = SandboxSpec(
            namespace=namespace,
            id=sandbox_id,
            config=config,
            settings=settings,
            run_dir=sandbox_run_dir(self.run_dir, namespace, sandbox_id),
            netns=_netns(oci),
            hostname=str(oci.get("hostname", "")),
        )
        # Recorded before the VM starts: a daemon dying during the launch leaves a record
        # from which the next one finds and stops the VM.
        record = SandboxRecord(
            namespace=namespace,
            id=sandbox_id,
            ttrpc_address=ttrpc_address,
            config_path=str(config.path),
            vm=self.backend.planned(spec),
        )
        pod = Pod(record=record, config=config, sandbox=None)
        await self.pods.add(pod)
        try:
            pod.sandbox = await self.backend.create(spec)
        except BaseException:
            await self.pods.remove(pod)
            raise
        try:
            await self.pods.update(
                pod, lambda r: replace(r, vm=pod.sandbox.record if pod.sandbox else r.vm)
            )
        except SandboxError:
            await self._destroy(pod)
            raise
        return pod

    async def _destroy(self, pod: Pod) -> None:
        for live in pod.live.values():
            if live.bridge is not None:
                await live.bridge.close()
            if live.watcher is not None:
                live.watcher.cancel()
        if pod.sandbox is not None:
            try:
                await self.backend.destroy(pod.sandbox)
            except SandboxError as err:
                log.warning("sandbox %s: destroy failed: %s", pod.record.id, err)
        else:
            await self.backend.cleanup(pod.record)
        await self.pods.remove(pod)

    @translated
    async def Start(
        self, request: shim_pb2.StartRequest, ctx: CallContext
    ) -> shim_pb2.StartResponse:
        namespace = _namespace(ctx)
        pod, _, process = self.pods.process(namespace, request.id, request.exec_id)
        if process.status is not Status.CREATED:
            raise TaskStateError(
                f"task {request.id} {request.exec_id}: already {process.status.value}"
            )
        sandbox = self._sandbox(pod)
        live = pod.live_of(request.id, request.exec_id)
        if request.exec_id:
            assert live.spec is not None
            await sandbox.exec_process(
                request.id, request.exec_id, live.spec, process.stdio.terminal
            )
            self._open_stdio(pod, request.id, process, live)
            self._watch(pod, request.id, request.exec_id)
        else:
            await sandbox.start_container(request.id)
        running = replace(process, status=Status.RUNNING, pid=self._pid(pod))
        # The process may have exited already (watcher): never turn STOPPED back.
        current = pod.record.container(request.id)
        if (
            current is not None
            and (now := current.process(request.exec_id))
            and now.status is Status.CREATED
        ):
            await self._set_process(pod, request.id, running)
        if request.exec_id:
            event: Any = events.TaskExecStarted(
                container_id=request.id, exec_id=request.exec_id, pid=running.pid
            )
        else:
            event = events.TaskStart(container_id=request.id, pid=running.pid)
        self._publish(pod, event)
        return shim_pb2.StartResponse(pid=running.pid)

    @translated
    async def Exec(self, request: shim_pb2.ExecProcessRequest, ctx: CallContext) -> empty_pb2.Empty:
        namespace = _namespace(ctx)
        check_id(request.exec_id, "exec id")
        pod, container = self.pods.find(namespace, request.id)
        if container.process(request.exec_id) is not None:
            raise TaskStateError(f"exec {request.exec_id} of task {request.id} exists already")
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
        await self._set_process(pod, request.id, process)
        pod.live_of(request.id, request.exec_id).spec = spec
        self._publish(pod, events.TaskExecAdded(container_id=request.id, exec_id=request.exec_id))
        return empty_pb2.Empty()

    @translated
    async def Wait(self, request: shim_pb2.WaitRequest, ctx: CallContext) -> shim_pb2.WaitResponse:
        namespace = _namespace(ctx)
        pod, _, process = self.pods.process(namespace, request.id, request.exec_id)
        if process.status is not Status.STOPPED:
            process = await asyncio.shield(pod.live_of(request.id, request.exec_id).exited)
        return shim_pb2.WaitResponse(
            exit_status=process.exit_status, exited_at=timestamp(process.exited_at_ns)
        )

    @translated
    async def Kill(self, request: shim_pb2.KillRequest, ctx: CallContext) -> empty_pb2.Empty:
        namespace = _namespace(ctx)
        pod, _, process = self.pods.process(namespace, request.id, request.exec_id)
        if process.status is Status.STOPPED:
            raise NotFound(f"task {request.id} {request.exec_id}: process already finished")
        await self._sandbox(pod).signal(request.id, request.exec_id, request.signal)
        return empty_pb2.Empty()

    @translated
    async def Delete(
        self, request: shim_pb2.DeleteRequest, ctx: CallContext
    ) -> shim_pb2.DeleteResponse:
        namespace = _namespace(ctx)
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
        namespace = _namespace(ctx)
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
        namespace = _namespace(ctx)
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
        self.registrations.forget(_namespace(ctx), request.id)
        return empty_pb2.Empty()

    @translated
    async def CloseIO(self, request: shim_pb2.CloseIORequest, ctx: CallContext) -> empty_pb2.Empty:
        namespace = _namespace(ctx)
        pod, _, _ = self.pods.process(namespace, request.id, request.exec_id)
        live = pod.live.get((request.id, request.exec_id))
        if request.stdin and live is not None and live.bridge is not None:
            live.bridge.close_stdin()
        return empty_pb2.Empty()

    @translated
    async def ResizePty(
        self, request: shim_pb2.ResizePtyRequest, ctx: CallContext
    ) -> empty_pb2.Empty:
        namespace = _namespace(ctx)
        pod, _, _ = self.pods.process(namespace, request.id, request.exec_id)
        await self._sandbox(pod).resize_pty(
            request.id, request.exec_id, request.width, request.height
        )
        return empty_pb2.Empty()

    @translated
    async def Pids(self, request: shim_pb2.PidsRequest, ctx: CallContext) -> shim_pb2.PidsResponse:
        pod, _ = self.pods.find(_namespace(ctx), request.id)
        pids = await self._sandbox(pod).pids(request.id)
        return shim_pb2.PidsResponse(processes=[types.ProcessInfo(pid=p) for p in pids])

    @translated
    async def Stats(
        self, request: shim_pb2.StatsRequest, ctx: CallContext
    ) -> shim_pb2.StatsResponse:
        pod, _ = self.pods.find(_namespace(ctx), request.id)
        metrics = await self._sandbox(pod).stats(request.id)
        return shim_pb2.StatsResponse(
            stats=any_pb2.Any(type_url="io.containerd.cgroups.v1.Metrics", value=metrics)
        )

    @translated
    async def Update(
        self, request: shim_pb2.UpdateTaskRequest, ctx: CallContext
    ) -> empty_pb2.Empty:
        pod, _ = self.pods.find(_namespace(ctx), request.id)
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

    # -- daemon life -------------------------------------------------------------------

    async def cleanup(self, namespace: str, task_id: str) -> shim_pb2.DeleteResponse:
        """The shim's ``delete``: release ``task_id`` whatever its state (containerd
        considers it dead). Unknown tasks are fine: there is nothing to release."""
        now = time.time_ns()
        try:
            pod, container = self.pods.find(namespace, task_id)
        except UnknownTaskError:
            return shim_pb2.DeleteResponse(
                exit_status=128 + signal.SIGKILL, exited_at=timestamp(now)
            )
        process = container.init
        if process.status is not Status.STOPPED and pod.sandbox is not None:
            try:
                await pod.sandbox.signal(task_id, "", signal.SIGKILL)
            except (SandboxError, NotImplementedError) as err:
                log.warning("cleanup of %s: kill failed: %s", task_id, err)
        status = process.exit_status if process.status is Status.STOPPED else 128 + signal.SIGKILL
        exited = process.exited_at_ns if process.status is Status.STOPPED else now
        if container.is_sandbox:
            await self._destroy(pod)
        else:
            for key in [k for k in pod.live if k[0] == task_id]:
                live = pod.live.pop(key)
                if live.bridge is not None:
                    await live.bridge.close()
                if live.watcher is not None:
                    live.watcher.cancel()
            await self.pods.update(pod, lambda r: r.without_container(task_id))
        return shim_pb2.DeleteResponse(
            pid=process.pid, exit_status=status, exited_at=timestamp(exited)
        )

    async def reattach(self) -> None:
        """Load every persisted sandbox and reattach it; a sandbox that cannot be
        reattached has its VM killed and its processes reported exited (255)."""
        records, errors = self.pods.store.load_all()
        for error in errors:
            log.error("unreadable sandbox state, left in place: %s", error)
        for record in records:
            await self._reattach_one(record)

    async def _reattach_one(self, record: SandboxRecord) -> None:
        config = None
        sandbox = None
        try:
            config = runtime_config.load(Path(record.config_path))
            sandbox = await self.backend.reattach(record, config)
        except (SandboxError, NotImplementedError) as err:
            log.warning("sandbox %s/%s: cannot reattach: %s", record.namespace, record.id, err)
        pod = Pod(record=record, config=config, sandbox=sandbox)
        self.pods.adopt(pod)
        if sandbox is None:
            await self.backend.cleanup(record)
            for container in record.containers:
                for process in (container.init, *container.execs):
                    await self._exited(pod, container.id, process.exec_id, 255)
            return
        log.info("sandbox %s/%s reattached", record.namespace, record.id)
        for container in record.containers:
            for process in (container.init, *container.execs):
                if process.status is Status.STOPPED:
                    continue
                live = pod.live_of(container.id, process.exec_id)
                try:
                    self._open_stdio(pod, container.id, process, live)
                except SandboxError as err:
                    log.warning("%s/%s: stdio not reattached: %s", record.id, container.id, err)
                if process.exec_id == "" or process.status is Status.RUNNING:
                    self._watch(pod, container.id, process.exec_id)

    async def close(self) -> None:
        """Stop watching (the sandboxes keep running for the next daemon)."""
        for pod in self.pods.all():
            for live in pod.live.values():
                if live.watcher is not None:
                    live.watcher.cancel()
                if live.bridge is not None:
                    await live.bridge.close()
            close = getattr(pod.sandbox, "close", None)
            if close is not None:
                await close()
        await self.backend.close()
