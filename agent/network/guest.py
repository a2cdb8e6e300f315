"""Send a pod's network to the guest agent, in Kata's order: every interface
(UpdateInterface), then the routes (UpdateRoutes), then the static neighbours
(AddARPNeighbors). The guest checks each request against its policy."""

from __future__ import annotations

import logging
from typing import Protocol

from agent.network.pod import PodNetwork
from api.kata import agent_pb2

log = logging.getLogger(__name__)


class AgentNetworkStub(Protocol):
    """The part of the grpc.AgentService stub used here (ttrpc.ServiceStub fits)."""

    async def UpdateInterface(self, request: agent_pb2.UpdateInterfaceRequest) -> object: ...
    async def UpdateRoutes(self, request: agent_pb2.UpdateRoutesRequest) -> object: ...
    async def AddARPNeighbors(self, request: agent_pb2.AddARPNeighborsRequest) -> object: ...


async def configure_guest(agent: AgentNetworkStub, network: PodNetwork, sandbox_id: str) -> None:
    """Apply ``network`` in the guest. Raises the transport's errors (a ttrpc status
    from the guest, e.g. PERMISSION_DENIED when its policy refuses)."""
    for request in network.update_interface_requests():
        await agent.UpdateInterface(request)
    if network.routes:
        await agent.UpdateRoutes(network.update_routes_request())
    if network.neighbors:
        await agent.AddARPNeighbors(network.add_arp_neighbors_request())
    log.info(
        "sandbox %s: guest network set (%d interfaces, %d routes, %d neighbours)",
        sandbox_id, len(network.interfaces), len(network.routes), len(network.neighbors),
    )  # fmt: skip
