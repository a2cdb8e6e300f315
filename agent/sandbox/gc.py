"""Sandboxes containerd no longer knows: found and destroyed.

containerd forgets a task when it takes its shim for dead (our ``delete`` ran, or failed:
in the DaemonSet the launcher cannot run the shim while no daemon container runs), and
a pod-VM in its pod cgroup outlives the daemon: the next daemon reattaches a VM that no
one will ever delete. So the daemon asks containerd, after reattaching and then every
``CONTRAST_GC_SECONDS``, whether each sandbox's container still exists
(``containerd.services.containers.v1.Containers/Get`` on containerd's gRPC socket, the
sandbox's namespace in the ``containerd-namespace`` metadata). A sandbox whose container
containerd does not have, NOT_FOUND in two sweeps in a row, is destroyed (VM, network,
pod cgroup, state) and the reason logged. The container record is written before the
shim is started for it (CRI's CreateContainer/RunPodSandbox, ``ctr run``) and removed
only after its task is deleted, so a Create in flight is never mistaken for a leak.

containerd's address: the live registration's ``grpc_address`` (the shim's
``-address``) when the daemon still has one for the sandbox, else the one its
persisted ``ttrpc_address`` names (containerd serves ttrpc on ``<gRPC address>.ttrpc``).
A containerd that is unknown, unreachable or answers anything but the container or
NOT_FOUND changes nothing: the sandbox is kept and the answer logged.

Not covered: a container whose record containerd keeps after forgetting its task
(a sandbox CRI has not removed yet, ``ctr c rm`` not run) is kept until the record goes.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc

from agent.sandbox import containerd_client
from agent.sandbox.errors import SandboxError
from api.containerd.services.containers.v1 import containers_pb2

log = logging.getLogger(__name__)

NAMESPACE_HEADER = containerd_client.NAMESPACE_HEADER
GET = "/containerd.services.containers.v1.Containers/Get"
TTRPC_SUFFIX = ".ttrpc"
MISSES = 2
CALL_SECONDS = 10.0


class ContainerdLookupError(SandboxError):
    """containerd could not say whether a container exists; names it and the answer."""


class Presence(enum.Enum):
    EXISTS = "exists"
    GONE = "gone"


@dataclass(frozen=True)
class Candidate:
    """A sandbox the daemon keeps, and where its containerd listens ("" unknown)."""

    namespace: str
    id: str
    address: str


def grpc_address(registered: str, ttrpc_address: str) -> str:
    """containerd's gRPC address for a sandbox: the registration's, else the one its
    ttrpc address is derived from; "" when neither tells."""
    if registered:
        return registered
    if ttrpc_address.endswith(TTRPC_SUFFIX) and len(ttrpc_address) > len(TTRPC_SUFFIX):
        return ttrpc_address[: -len(TTRPC_SUFFIX)]
    return ""


async def container_presence(
    address: str, namespace: str, container_id: str, timeout: float = CALL_SECONDS
) -> Presence:
    """Whether containerd at ``address`` has container ``container_id`` in ``namespace``.
    Raises ContainerdLookupError for any answer but the container or NOT_FOUND."""
    request = containers_pb2.GetContainerRequest(id=container_id)
    try:
        reply = await containerd_client.unary(
            address, namespace, GET, request, containers_pb2.GetContainerResponse, timeout=timeout
        )
    except containerd_client.ContainerdCallError as err:
        if err.code is grpc.StatusCode.NOT_FOUND:
            return Presence.GONE
        raise ContainerdLookupError(
            f"container {namespace}/{container_id}: asking containerd ({address}) "
            f"failed: {err.code.name}: {err.details}"
        ) from err
    if reply.container.id != container_id:
        raise ContainerdLookupError(
            f"container {namespace}/{container_id}: containerd ({address}) answered with "
            f"container {reply.container.id!r}"
        )
    return Presence.EXISTS


Lookup = Callable[[str, str, str], Awaitable[Presence]]


class SandboxCollector:
    """Sweeps: ``candidates()`` lists the sandboxes, ``collect(namespace, id)`` destroys
    one (VM, network, cgroup, state); ``lookup`` asks containerd."""

    def __init__(
        self,
        candidates: Callable[[], list[Candidate]],
        collect: Callable[[str, str], Awaitable[object]],
        lookup: Lookup = container_presence,
    ) -> None:
        self._candidates = candidates
        self._collect = collect
        self._lookup = lookup
        self._misses: dict[tuple[str, str], int] = {}

    async def sweep(self) -> list[tuple[str, str]]:
        """One round over every sandbox; the (namespace, id) of those destroyed."""
        collected: list[tuple[str, str]] = []
        candidates = self._candidates()
        misses: dict[tuple[str, str], int] = {}
        for candidate in candidates:
            key = (candidate.namespace, candidate.id)
            presence = await self._ask(candidate)
            if presence is not Presence.GONE:
                continue
            misses[key] = self._misses.get(key, 0) + 1
            if misses[key] < MISSES:
                log.info(
                    "sandbox %s/%s: containerd (%s) has no such container; destroyed if it "
                    "still has none at the next sweep",
                    candidate.namespace, candidate.id, candidate.address,
                )  # fmt: skip
                continue
            log.warning(
                "sandbox %s/%s: containerd (%s) has had no such container for %d sweeps in "
                "a row: it forgot the pod, destroying its VM, network, cgroup and state",
                candidate.namespace, candidate.id, candidate.address, misses[key],
            )  # fmt: skip
            try:
                await self._collect(candidate.namespace, candidate.id)
            except (SandboxError, OSError) as err:
                log.error("sandbox %s/%s: destroying it failed: %s", *key, err)  # noqa: TRY400
                continue
            del misses[key]
            collected.append(key)
        self._misses = misses  # a sandbox found (or not asked about) starts again at 0
        return collected

    async def _ask(self, candidate: Candidate) -> Presence | None:
        if not candidate.address:
            log.info(
                "sandbox %s/%s: containerd's address is unknown, not checked",
                candidate.namespace, candidate.id,
            )  # fmt: skip
            return None
        try:
            return await self._lookup(candidate.address, candidate.namespace, candidate.id)
        except ContainerdLookupError as err:
            log.warning("sandbox %s/%s kept: %s", candidate.namespace, candidate.id, err)
            return None

    async def run(self, period: float) -> None:
        """Sweep now, then every ``period`` seconds, until cancelled (0: never). A sweep
        that fails unexpectedly is logged with its traceback; the next one still runs
        (this task has no caller to report to, and must not die silently)."""
        if period <= 0:
            return
        while True:
            try:
                await self.sweep()
            except Exception:
                log.exception("sandbox sweep failed; trying again in %.0f s", period)
            await asyncio.sleep(period)
