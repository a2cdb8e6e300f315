"""Send a pod's network to the guest agent, in Kata's order: every interface
(UpdateInterface), then the routes (UpdateRoutes), then the static neighbours
(AddARPNeighbors). The guest checks each request against its policy."""

from __future__ import annotations

import logging
from typing import Protocol

from google.protobuf.message import Message

from agent.network.pod import PodNetwork

log = logging.getLogger(__name__)


class RpcMethod(Protocol):
    """One unary RPC of a ttrpc.ServiceStub."""

    async def __call__(self, request: Message, *, timeout: float | None = None) -> object: ...


class AgentNetworkStub(Protocol):
    """The part of the grpc.AgentService stub used here (ttrpc.ServiceStub fits)."""

    @property
    def UpdateInterface(self) -> RpcMethod: ...
    @property
    def UpdateRoutes(self) -> RpcMethod: ...
    @property
    def AddARPNeighbors(self) -> RpcMethod: ...


async def configure_guest(
    agent: AgentNetworkStub, network: PodNetwork, sandbox_id: str, timeout: float = 60.0
) -> None:
    """Apply ``network`` in the guest, each call within ``timeout`` seconds. Raises the
    transport's errors (DEADLINE_EXCEEDED, or a ttrpc status from the guest, e.g.
    PERMISSION_DENIED when its policy refuses)."""
    for request in network.update_interface_requests():
        await agent.UpdateInterface(request, timeout=timeout)
    if network.routes:
        await agent.UpdateRoutes(network.update_routes_request(), timeout=timeout)
    if network.neighbors:
        await agent.AddARPNeighbors(network.add_arp_neighbors_request(), timeout=timeout)
    log.info(
        "sandbox %s: guest network set (%d interfaces, %d routes, %d neighbours)",
        sandbox_id, len(network.interfaces), len(network.routes), len(network.neighbors),
    )  # fmt: skip
