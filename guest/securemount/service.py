"""``api.SecureMountService``: the request checked, the store mounted, errors as statuses.

The request is what Kata's agent sends for Contrast's image store: ``volume_type``
``block-device`` (older agents: ``BlockDevice``), options ``deviceId`` (the guest's
``major:minor``), ``encryptionType`` ``luks2`` and ``dataIntegrity`` (``true`` or
``false``; integrity is on either way: the store is always formatted with
hmac-sha256), no flags, and the mount point. Any other option is refused, a key above
all: the key is born in the guest and nowhere else. This module is the one boundary
where the secure mount's errors become ttrpc statuses.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ttrpc
from api.guest import securemount_pb2
from guest.securemount import errors

if TYPE_CHECKING:
    from guest.agent.server import DeferredAgentService
    from guest.agent.service import AgentService
    from guest.securemount.store import SecureStore

log = logging.getLogger(__name__)
SERVICE = securemount_pb2.DESCRIPTOR.services_by_name["SecureMountService"]

VOLUME_TYPES = ("block-device", "BlockDevice")
ENCRYPTION = "luks2"
KNOWN_OPTIONS = frozenset({"deviceId", "encryptionType", "dataIntegrity"})


@dataclass(frozen=True)
class MountRequest:
    device_id: str
    mount_point: Path


def parse(request: securemount_pb2.SecureMountRequest) -> MountRequest:
    """The checked request. Raises InvalidRequest naming the offending field."""
    if request.volume_type not in VOLUME_TYPES:
        raise errors.InvalidRequest(
            f"volume_type {request.volume_type!r} is not supported (only {VOLUME_TYPES[0]!r})"
        )
    options = dict(request.options)
    unknown = sorted(set(options) - KNOWN_OPTIONS)
    if unknown:
        raise errors.InvalidRequest(f"options {unknown} are not supported")
    if not options.get("deviceId"):
        raise errors.InvalidRequest('options["deviceId"] (major:minor) is required')
    if options.get("encryptionType") != ENCRYPTION:
        raise errors.InvalidRequest(
            f'options["encryptionType"] is {options.get("encryptionType")!r}, '
            f"only {ENCRYPTION!r} is supported"
        )
    if options.get("dataIntegrity") not in ("true", "false"):
        raise errors.InvalidRequest(
            f'options["dataIntegrity"] is {options.get("dataIntegrity")!r}, not "true" or "false"'
        )
    if request.flags:
        raise errors.InvalidRequest(f"flags {list(request.flags)} are not supported")
    mount_point = Path(request.mount_point)
    if not request.mount_point or not mount_point.is_absolute() or ".." in mount_point.parts:
        raise errors.InvalidRequest(
            f"mount_point {request.mount_point!r} must be an absolute path without '..'"
        )
    return MountRequest(options["deviceId"], mount_point)


def status_for(err: errors.SecureMountError) -> ttrpc.StatusError:
    """The ttrpc status answering a failed secure mount."""
    if isinstance(err, errors.InvalidRequest):
        return ttrpc.InvalidArgument(str(err))
    if isinstance(err, errors.DeviceError | errors.StateError):
        return ttrpc.FailedPrecondition(str(err))
    return ttrpc.Internal(str(err))


class SecureMountService:
    """Implements ``api.SecureMountService`` on top of a SecureStore."""

    def __init__(self, store: SecureStore) -> None:
        self.store = store

    async def SecureMount(
        self, request: securemount_pb2.SecureMountRequest, ctx: ttrpc.CallContext
    ) -> securemount_pb2.SecureMountResponse:
        """Format and mount the device as the image store; see the module docstring.

        Raises StatusError: INVALID_ARGUMENT (bad request), FAILED_PRECONDITION (no
        such device, too small, store in the wrong state), INTERNAL (a step failed).
        """
        try:
            checked = parse(request)
            log.info("SecureMount of %s at %s", checked.device_id, checked.mount_point)
            mounted = await self.store.mount(checked.device_id, checked.mount_point)
        except errors.SecureMountError as err:
            log.warning("SecureMount failed: %s", err)
            raise status_for(err) from err
        return securemount_pb2.SecureMountResponse(mount_path=str(mounted.mount_point))


class PolicyCheckedSecureMount:
    """``api.SecureMountService`` on the agent's own channel, behind the agent's policy.

    Each request is checked first as ``SecureMountRequest`` (denied unless the policy
    allows it, like every agent request); the store (with the agent's reaper) is made
    at the first allowed request. ``agent`` is the AgentService or the deferred one
    the agent serves while it is being built.
    """

    def __init__(self, agent: AgentService | DeferredAgentService, store_root: Path) -> None:
        self._agent = agent
        self._store_root = store_root
        self._service: SecureMountService | None = None

    async def _agent_service(self) -> AgentService:
        from guest.agent.server import DeferredAgentService

        agent = self._agent
        return await agent.service() if isinstance(agent, DeferredAgentService) else agent

    async def SecureMount(
        self, request: securemount_pb2.SecureMountRequest, ctx: ttrpc.CallContext
    ) -> securemount_pb2.SecureMountResponse:
        """Raises PermissionDenied when the policy refuses, else as SecureMountService."""
        agent = await self._agent_service()
        check: Any = agent.check  # a coroutine function in newer agents
        checked = check(request)
        if inspect.isawaitable(checked):
            await checked
        if self._service is None:
            from guest.securemount.store import SecureStore

            store = SecureStore(agent.containers.reaper, self._store_root)
            self._service = SecureMountService(store)
        return await self._service.SecureMount(request, ctx)
