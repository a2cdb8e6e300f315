"""A backend whose "VM" is a guest agent already listening on a unix socket.

For development and the Task service's tests: the real guest agent
(``guest.agent``) runs on the host, and every sandbox talks to it exactly as it would
to the agent inside a pod-VM. Nothing here starts or stops a VM; the rest of the pod
path (Task service, stdio, events, state) is the production code.
"""

from __future__ import annotations

import logging
from pathlib import Path

from agent.sandbox.backend import PodSandbox, SandboxSpec
from agent.sandbox.config import RuntimeConfig
from agent.sandbox.errors import BackendError, SandboxError
from agent.sandbox.guest import GuestSandbox
from agent.sandbox.state import SandboxRecord, VmRecord
from agent.transport.client import AgentClient
from ttrpc import Client, TtrpcError

log = logging.getLogger(__name__)

NAME = "local-agent"


class LocalAgentBackend:
    """Sandboxes served by the guest agent at ``socket``."""

    name = NAME

    def __init__(self, socket: Path, call_timeout: float = 30.0) -> None:
        self.socket = socket
        self.call_timeout = call_timeout

    async def _connect(self) -> GuestSandbox:
        try:
            client = await Client.connect_unix(self.socket)
        except (TtrpcError, OSError) as err:
            raise BackendError(f"cannot reach the guest agent at {self.socket}: {err}") from err
        record = VmRecord(backend=NAME, pid=0, details={"socket": str(self.socket)})
        return GuestSandbox(AgentClient(client), record, self.call_timeout)

    def planned(self, spec: SandboxSpec) -> VmRecord:
        return VmRecord(backend=NAME, pid=0, details={"socket": str(self.socket)})

    async def create(self, spec: SandboxSpec) -> PodSandbox:
        sandbox = await self._connect()
        try:
            await sandbox.create_sandbox(spec.hostname, spec.id, spec.dns)
        except SandboxError:
            await sandbox.close()
            raise
        log.info("sandbox %s/%s: using the guest agent at %s", spec.namespace, spec.id, self.socket)
        return sandbox

    async def reattach(self, record: SandboxRecord, config: RuntimeConfig) -> PodSandbox:
        if record.vm is None or record.vm.backend != NAME:
            raise BackendError(f"sandbox {record.id} was not created by the {NAME} backend")
        return await self._connect()

    async def destroy(self, sandbox: PodSandbox) -> None:
        assert isinstance(sandbox, GuestSandbox)
        try:
            await sandbox.destroy_sandbox()
        finally:
            await sandbox.close()

    async def cleanup(self, record: SandboxRecord) -> None:
        """Nothing to release: no VM was started for this backend."""

    async def close(self) -> None:
        """Nothing held beyond the sandboxes' own connections."""
