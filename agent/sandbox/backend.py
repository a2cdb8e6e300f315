"""The seam between the Task service and whatever runs a pod: a pod-VM with its guest
agent in production (:mod:`agent.sandbox.vm_backend`), or a guest agent reached over a
plain unix socket (:mod:`agent.sandbox.local_backend`, development and tests).

The Task service only ever talks to these two protocols: a :class:`SandboxBackend`
creates, reattaches and destroys sandboxes; a :class:`PodSandbox` runs containers
and processes inside one. Every method raises :class:`~agent.sandbox.errors.SandboxError`
subclasses (BackendError for failures of the VM or the guest agent), or
NotImplementedError for what the backend does not do yet.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from agent.sandbox.allowlist import PodVmSettings
from agent.sandbox.config import RuntimeConfig
from agent.sandbox.state import SandboxRecord, VmRecord


class Stream(enum.Enum):
    STDOUT = "stdout"
    STDERR = "stderr"


@dataclass(frozen=True)
class SandboxSpec:
    """Everything needed to bring up one pod's VM."""

    namespace: str
    id: str
    config: RuntimeConfig
    settings: PodVmSettings
    # The sandbox's own directory for sockets, logs and the initdata disk.
    run_dir: Path
    # The pod's network namespace (CNI), None for pods without one (ctr run).
    netns: Path | None
    hostname: str = ""
    # The pod's resolv.conf directives, for the guest (agent.sandbox.resolv).
    dns: tuple[str, ...] = ()
    # The sandbox container's linux.cgroupsPath (CRI: the pod's cgroup); "" for none.
    cgroups_path: str = ""


@dataclass(frozen=True)
class ContainerSpec:
    """One container to create in a sandbox, from containerd's bundle."""

    id: str
    bundle: Path
    # config.json of the bundle, as parsed JSON.
    oci: dict[str, Any]
    terminal: bool
    annotations: dict[str, str] = field(default_factory=dict)


class PodSandbox(Protocol):
    """A running sandbox: containers and processes in its VM, through the guest agent."""

    @property
    def record(self) -> VmRecord:
        """What to persist so that :meth:`SandboxBackend.reattach` finds the VM again."""
        ...

    async def create_container(self, spec: ContainerSpec) -> None: ...

    async def start_container(self, container_id: str) -> None: ...

    async def exec_process(
        self, container_id: str, exec_id: str, process: dict[str, Any], terminal: bool
    ) -> None: ...

    async def signal(self, container_id: str, exec_id: str, signal: int) -> None: ...

    async def wait(self, container_id: str, exec_id: str) -> int:
        """Block until the process ends; its exit status (128+n after signal n)."""
        ...

    async def read_output(
        self, container_id: str, exec_id: str, stream: Stream, size: int
    ) -> bytes:
        """Up to ``size`` bytes of output; empty at end of stream."""
        ...

    async def write_stdin(self, container_id: str, exec_id: str, data: bytes) -> int: ...

    async def close_stdin(self, container_id: str, exec_id: str) -> None: ...

    async def resize_pty(
        self, container_id: str, exec_id: str, width: int, height: int
    ) -> None: ...

    async def remove_container(self, container_id: str) -> None: ...

    async def update(self, container_id: str, resources: dict[str, Any]) -> None: ...

    async def pids(self, container_id: str) -> list[int]: ...

    async def stats(self, container_id: str) -> bytes:
        """Serialized cgroup metrics (``agent.sandbox.metrics.TYPE_URL``: containerd's
        ``io.containerd.cgroups.v2.Metrics``)."""
        ...


class SandboxBackend(Protocol):
    """Creates and ends sandboxes; one per daemon."""

    name: str

    def planned(self, spec: SandboxSpec) -> VmRecord:
        """What to persist *before* :meth:`create`: enough for :meth:`cleanup` to find
        and stop a VM whose daemon died while creating it (pid still 0)."""
        ...

    async def create(self, spec: SandboxSpec) -> PodSandbox:
        """Start the sandbox (VM, transport, guest CreateSandbox); raises SandboxError."""
        ...

    async def reattach(self, record: SandboxRecord, config: RuntimeConfig) -> PodSandbox:
        """Find a sandbox of an earlier daemon again; raises SandboxError when it is gone."""
        ...

    async def destroy(self, sandbox: PodSandbox) -> None:
        """Stop the sandbox and release everything it held; safe when already gone."""
        ...

    async def cleanup(self, record: SandboxRecord) -> None:
        """Release what a sandbox of a dead daemon left behind (kill its VM)."""
        ...

    async def close(self) -> None:
        """Let go of every sandbox without stopping it (daemon shutdown: the next
        daemon reattaches)."""
        ...
