"""A container's termination message, read back by the host after the container exits.

The kubelet mounts a file of its own at the container's ``terminationMessagePath``
and reads it once the container has exited (``kubectl describe`` shows it). In the
pod-VM the container writes a copy: the host copied the kubelet's (empty) file in
with CopyFile as ``<SHARED_DIR>/<container id>-<hex>-termination-log`` and the
container's spec bind-mounts it. The host asks for it back with
``contrast.guest.v1.TerminationMessage/ReadContainerTerminationMessage``, naming only
the container: the guest reads the one file of that shape the container's own
config.json mounts, never a path the host chose, at most :data:`MAX_MESSAGE` bytes
(the kubelet's limit), not through a symlink. The policy decides first, as
``ReadContainerTerminationMessageRequest``.
"""

from __future__ import annotations

import inspect
import json
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ttrpc
from api.guest import termination_pb2
from guest.agent.copyfile import SHARED_DIR
from guest.agent.errors import InvalidRequest, NotFound

if TYPE_CHECKING:
    from guest.agent.server import DeferredAgentService
    from guest.agent.service import AgentService

SERVICE = termination_pb2.DESCRIPTOR.services_by_name["TerminationMessage"]
MAX_MESSAGE = 4096
SUFFIX = "-termination-log"


def message_file(container_id: str, bundle: Path, base: Path = SHARED_DIR) -> Path:
    """The termination-log copy ``container_id``'s config.json mounts. Raises NotFound
    (none), InvalidRequest (more than one, or an unreadable config)."""
    try:
        config = json.loads((bundle / "config.json").read_text())
    except (OSError, ValueError) as err:
        raise InvalidRequest(f"container {container_id}: config.json unreadable: {err}") from err
    found = {
        Path(m["source"])
        for m in config.get("mounts", [])
        if isinstance(m.get("source"), str)
        and Path(m["source"]).parent == base
        and Path(m["source"]).name.startswith(f"{container_id}-")
        and m["source"].endswith(SUFFIX)
    }
    if not found:
        raise NotFound(f"container {container_id} mounts no termination-log copy")
    if len(found) > 1:
        raise InvalidRequest(f"container {container_id} mounts {len(found)} termination logs")
    return found.pop()


def read_message(path: Path) -> bytes:
    """The head of ``path`` (a regular file, not a symlink), at most MAX_MESSAGE bytes.
    Raises InvalidRequest, NotFound."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError as err:
        raise NotFound(f"termination log {path} is gone") from err
    except OSError as err:
        raise InvalidRequest(f"termination log {path}: {err}") from err
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InvalidRequest(f"termination log {path} is not a regular file")
        return os.pread(fd, MAX_MESSAGE, 0)
    finally:
        os.close(fd)


class TerminationMessages:
    """The TerminationMessage service on top of the agent (policy, containers)."""

    def __init__(self, agent: AgentService | DeferredAgentService, base: Path = SHARED_DIR):
        self._agent = agent
        self._base = base

    async def _service(self) -> AgentService:
        from guest.agent.server import DeferredAgentService

        agent: Any = self._agent
        return await agent.service() if isinstance(agent, DeferredAgentService) else agent

    async def ReadContainerTerminationMessage(
        self,
        request: termination_pb2.ReadContainerTerminationMessageRequest,
        ctx: ttrpc.CallContext,
    ) -> termination_pb2.ReadContainerTerminationMessageResponse:
        from guest.agent.errors import AgentError
        from guest.agent.service import to_status

        service = await self._service()
        checked: Any = service.check(request)
        if inspect.isawaitable(checked):  # the policy check became async (policy engine work)
            await checked
        try:
            container = service.containers.get(request.container_id)
            data = read_message(message_file(request.container_id, container.bundle, self._base))
        except AgentError as err:
            raise to_status(err) from err
        return termination_pb2.ReadContainerTerminationMessageResponse(message=data)
