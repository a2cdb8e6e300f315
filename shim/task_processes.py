"""The processes behind :class:`shim.task.TaskService`: exit watchers, stdio
bridges and exit events, sandbox creation and teardown, and the daemon's cleanup,
reattach and close, which run outside any Task RPC."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from agent.events import EventForwarder, ForwardError
from agent.events.envelope import timestamp
from agent.sandbox import allowlist, hostns, resolv
from agent.sandbox import config as runtime_config
from agent.sandbox.backend import SandboxBackend, SandboxSpec
from agent.sandbox.errors import SandboxError, TaskStateError, UnknownTaskError
from agent.sandbox.state import ProcessRecord, SandboxRecord, Status
from agent.stdio import StdioBridge
from api.containerd.events import task_pb2 as events
from api.containerd.task.v2 import shim_pb2
from shim.control import Registrations
from shim.pods import Live, Pod, Pods, ProcessStdio
from shim.task_requests import netns_of, read_spec, sandbox_run_dir

log = logging.getLogger(__name__)

# How long an exit waits for the process's output to reach containerd's FIFOs.
DRAIN_SECONDS = 5.0


class TaskProcesses:
    """Process and sandbox bookkeeping shared by the Task RPCs and the daemon."""

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

    def _open_stdio(self, pod: Pod, container_id: str, process: ProcessRecord, live: Live) -> None:
        stdio = process.stdio
        if not (stdio.stdin or stdio.stdout or stdio.stderr):
            return
        name = f"{pod.record.id}/{container_id}/{process.exec_id or 'init'}"
        # An init's output (the CRI log) held by the pod-VM across a daemon restart.
        keeper = getattr(self._sandbox(pod), "output_keeper", None)
        bridge = StdioBridge(
            name,
            ProcessStdio(self._sandbox(pod), container_id, process.exec_id),
            stdin=stdio.stdin,
            stdout=stdio.stdout,
            stderr="" if stdio.terminal else stdio.stderr,
            keeper=keeper() if keeper is not None and not process.exec_id else None,
        )
        bridge.open()
        live.bridge = bridge

    def _watch_ooms(self, pod: Pod) -> None:
        next_oom = getattr(pod.sandbox, "next_oom", None)
        if pod.oom_watcher is None and next_oom is not None:
            pod.oom_watcher = asyncio.create_task(self._forward_ooms(pod, next_oom))

    async def _forward_ooms(self, pod: Pod, next_oom: Callable[[], Awaitable[str]]) -> None:
        """Each OOM kill the guest reports, as containerd's TaskOOM: its CRI then gives
        the container the reason OOMKilled (else "Error"), on 1.6 and 2.x alike."""
        while True:
            try:
                container_id = await next_oom()
            except (SandboxError, NotImplementedError) as err:
                log.info("sandbox %s: no more OOM events: %s", pod.record.id, err)
                return
            log.info("%s/%s: OOM kill in the guest", pod.record.id, container_id)
            self._publish(pod, events.TaskOOM(container_id=container_id))

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
        if not exec_id and (exited := getattr(pod.sandbox, "container_exited", None)):
            # Before the exit is reported: the kubelet reads the termination message then.
            await exited(container_id)
        await self._exited(pod, container_id, exec_id, status)

    async def _record_stop(
        self, pod: Pod, container_id: str, exec_id: str, status: int
    ) -> ProcessRecord | None:
        """Record the process STOPPED with ``status`` unless it is already (judged on
        its record as it is once earlier writes landed); the record written, or None."""

        def stopped(now: ProcessRecord) -> ProcessRecord | None:
            if now.status is Status.STOPPED:
                return None
            return replace(
                now, status=Status.STOPPED, exit_status=status, exited_at_ns=time.time_ns()
            )

        return await self.pods.update_process(pod, container_id, exec_id, stopped)

    async def _exited(self, pod: Pod, container_id: str, exec_id: str, status: int) -> None:
        done = await self._record_stop(pod, container_id, exec_id, status)
        if done is None:
            return
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

    async def _never_started(self, pod: Pod, container_id: str, exec_id: str) -> None:
        """Record an exec whose start failed as stopped (255, no TaskExit: it never
        ran) and answer its waiters."""
        done = await self._record_stop(pod, container_id, exec_id, 255)
        if done is None:
            return
        live = pod.live_of(container_id, exec_id)
        if not live.exited.done():
            live.exited.set_result(done)

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
        hostns.refuse_host_namespaces(sandbox_id, oci, annotations)
        settings = allowlist.vm_settings(annotations, config)
        spec = SandboxSpec(
            namespace=namespace,
            id=sandbox_id,
            config=config,
            settings=settings,
            run_dir=sandbox_run_dir(self.run_dir, namespace, sandbox_id),
            netns=netns_of(oci),
            hostname=str(oci.get("hostname", "")),
            dns=resolv.pod_dns(oci),
            cgroups_path=str(oci.get("linux", {}).get("cgroupsPath", "")),
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
        self._watch_ooms(pod)
        return pod

    async def _destroy(self, pod: Pod) -> None:
        if pod.oom_watcher is not None:
            pod.oom_watcher.cancel()
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

    async def collect(self, namespace: str, sandbox_id: str) -> bool:
        """Destroy a sandbox containerd no longer knows (:mod:`agent.sandbox.gc`): VM,
        network, cgroup, state, whatever its containers' state; no events (containerd has
        no task left to tell). False when there is no such sandbox."""
        pod = self.pods.pod(namespace, sandbox_id)
        if pod is None:
            return False
        await self._destroy(pod)
        return True

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
                    await live.bridge.close(release=True)
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
        self._watch_ooms(pod)
        follow = getattr(sandbox, "follow_container", None)
        for container in record.containers:
            if follow is not None and container.init.status is not Status.STOPPED:
                try:  # its volumes kept current again (agent.volumes)
                    follow(container.id, read_spec(container.bundle))
                except (SandboxError, OSError) as err:
                    log.warning("%s/%s: volumes not followed: %s", record.id, container.id, err)
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
            if pod.oom_watcher is not None:
                pod.oom_watcher.cancel()
            for live in pod.live.values():
                if live.watcher is not None:
                    live.watcher.cancel()
                if live.bridge is not None:
                    await live.bridge.close()
            close = getattr(pod.sandbox, "close", None)
            if close is not None:
                await close()
        await self.backend.close()
