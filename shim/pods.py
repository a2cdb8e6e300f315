"""The daemon's live view of its sandboxes: records plus what only exists in memory
(the backend's sandbox handle, stdio bridges, exit futures, exec specs).

Every change of a record goes through :meth:`Pods.update`, which persists it
atomically before the change is visible to anyone else.

The writes (temp file, fsync, rename, fsync of the directory: tens of milliseconds on
a busy disk) run in a worker thread, so the daemon's event loop keeps serving every
other pod meanwhile. ``Pods._lock`` stays held across each write, so records reach the
disk one at a time, in the order of the calls, and a change is applied in memory only
once its write is done. A caller cancelled while its write runs still waits for it
(and applies it when it succeeded) before the cancellation goes on: memory never lags
behind the disk, nor the disk behind memory.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.sandbox.backend import PodSandbox, Stream
from agent.sandbox.config import RuntimeConfig
from agent.sandbox.errors import TaskStateError, UnknownTaskError
from agent.sandbox.state import ContainerRecord, ProcessRecord, SandboxRecord, StateStore
from agent.stdio import StdioBridge

log = logging.getLogger(__name__)


async def _written(write: Callable[[], None], apply: Callable[[], None]) -> None:
    """``write`` in a worker thread, then ``apply`` on the loop; raises what ``write``
    raises (and applies nothing). Cancelled while writing, it waits for the write to end
    and applies it if it succeeded before raising CancelledError."""
    writing = asyncio.ensure_future(asyncio.to_thread(write))
    cancelled = False
    while not writing.done():
        try:
            await asyncio.wait({writing})  # never cancels ``writing`` itself
        except asyncio.CancelledError:
            cancelled = True
    try:
        writing.result()
    except Exception as err:
        if cancelled:
            log.exception("a cancelled call's state write failed")
            raise asyncio.CancelledError from err
        raise
    apply()
    if cancelled:
        raise asyncio.CancelledError


class ProcessStdio:
    """One process's stdio calls, bound to its sandbox (agent.stdio's ProcessIO)."""

    def __init__(self, sandbox: PodSandbox, container_id: str, exec_id: str) -> None:
        self.sandbox = sandbox
        self.container_id = container_id
        self.exec_id = exec_id

    async def read_stdout(self, size: int) -> bytes:
        return await self.sandbox.read_output(self.container_id, self.exec_id, Stream.STDOUT, size)

    async def read_stderr(self, size: int) -> bytes:
        return await self.sandbox.read_output(self.container_id, self.exec_id, Stream.STDERR, size)

    async def write_stdin(self, data: bytes) -> int:
        return await self.sandbox.write_stdin(self.container_id, self.exec_id, data)

    async def close_stdin(self) -> None:
        await self.sandbox.close_stdin(self.container_id, self.exec_id)


@dataclass
class Live:
    """In-memory companions of one process record."""

    exited: asyncio.Future[ProcessRecord]
    bridge: StdioBridge | None = None
    watcher: asyncio.Task[None] | None = None
    # An exec's OCI process spec, kept from Exec until Start.
    spec: dict[str, Any] | None = None


@dataclass
class Pod:
    record: SandboxRecord
    config: RuntimeConfig | None
    # None when the sandbox could not be reattached after a restart.
    sandbox: PodSandbox | None
    live: dict[tuple[str, str], Live] = field(default_factory=dict)
    # Forwards the guest's OOM kills as TaskOOM events (TaskProcesses._forward_ooms).
    oom_watcher: asyncio.Task[None] | None = None

    def live_of(self, container_id: str, exec_id: str) -> Live:
        key = (container_id, exec_id)
        if key not in self.live:
            self.live[key] = Live(exited=asyncio.get_running_loop().create_future())
        return self.live[key]


class Pods:
    """Sandboxes by (namespace, sandbox id), and which sandbox holds which container."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self._pods: dict[tuple[str, str], Pod] = {}
        self._lock = asyncio.Lock()

    def all(self) -> list[Pod]:
        return list(self._pods.values())

    def pod(self, namespace: str, sandbox_id: str) -> Pod | None:
        return self._pods.get((namespace, sandbox_id))

    def find(self, namespace: str, container_id: str) -> tuple[Pod, ContainerRecord]:
        """The pod and record of a container; raises UnknownTaskError."""
        for (ns, _), pod in self._pods.items():
            if ns != namespace:
                continue
            container = pod.record.container(container_id)
            if container is not None:
                return pod, container
        raise UnknownTaskError(f"task {container_id} not found in namespace {namespace}")

    def process(
        self, namespace: str, container_id: str, exec_id: str
    ) -> tuple[Pod, ContainerRecord, ProcessRecord]:
        pod, container = self.find(namespace, container_id)
        process = container.process(exec_id)
        if process is None:
            raise UnknownTaskError(f"exec {exec_id} of task {container_id} not found")
        return pod, container, process

    async def add(self, pod: Pod) -> None:
        """Persist and register a new sandbox; raises StateError."""

        def register() -> None:
            self._pods[(pod.record.namespace, pod.record.id)] = pod

        async with self._lock:
            await _written(functools.partial(self.store.save, pod.record), register)

    async def update(self, pod: Pod, change: Callable[[SandboxRecord], SandboxRecord]) -> None:
        """Apply ``change`` to the pod's record and persist it; raises StateError."""

        def apply() -> None:
            pod.record = record

        async with self._lock:
            record = change(pod.record)
            await _written(functools.partial(self.store.save, record), apply)

    async def update_process(
        self,
        pod: Pod,
        container_id: str,
        exec_id: str,
        step: Callable[[ProcessRecord], ProcessRecord | None],
    ) -> ProcessRecord | None:
        """Change one process's record from what it is once every earlier change is on
        disk, not from what the caller saw before it awaited: ``step`` gets the current
        record and returns the new one, or None to leave it (nothing is written then).
        Returns the record written, or None. Raises StateError.

        A check made before an ``await`` is stale by the time an earlier write lands:
        an init that exited while its Start was in flight was recorded STOPPED, then
        overwritten RUNNING by the Start that had seen CREATED, and containerd's Delete
        after the TaskExit got "task must be stopped" forever (containerd 2.3.4, e2e).
        """
        async with self._lock:
            container = pod.record.container(container_id)
            current = container.process(exec_id) if container is not None else None
            new = step(current) if current is not None else None
            if container is None or new is None:
                return None
            record = pod.record.with_container(container.with_process(new))

            def apply() -> None:
                pod.record = record

            await _written(functools.partial(self.store.save, record), apply)
            return new

    async def add_process(self, pod: Pod, container_id: str, process: ProcessRecord) -> None:
        """Persist a new exec ``process`` of a container, checked against the record as it
        is once every earlier change is on disk: raises TaskStateError when that exec id
        exists already (two Execs of one id at once: one wins, the other is refused),
        UnknownTaskError when the container is gone, StateError."""
        async with self._lock:
            container = pod.record.container(container_id)
            if container is None:
                raise UnknownTaskError(f"task {container_id} not found")
            if container.process(process.exec_id) is not None:
                raise TaskStateError(
                    f"exec {process.exec_id} of task {container_id} exists already"
                )
            record = pod.record.with_container(container.with_process(process))

            def apply() -> None:
                pod.record = record

            await _written(functools.partial(self.store.save, record), apply)

    async def remove(self, pod: Pod) -> None:
        """Forget a sandbox on disk, then here; raises StateError."""
        key = (pod.record.namespace, pod.record.id)

        def forget() -> None:
            self._pods.pop(key, None)

        async with self._lock:
            await _written(functools.partial(self.store.remove, *key), forget)

    def adopt(self, pod: Pod) -> None:
        """Register a sandbox loaded from disk (already persisted)."""
        self._pods[(pod.record.namespace, pod.record.id)] = pod
