"""The agent's ttrpc services: grpc.Health and (part of) grpc.AgentService."""

from __future__ import annotations

import logging

from api.kata import agent_pb2, health_pb2
from guest.agent import VERSION, details
from ttrpc import CallContext, Server

log = logging.getLogger(__name__)

AGENT_SERVICE = agent_pb2.DESCRIPTOR.services_by_name["AgentService"]
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"]


class HealthService:
    """grpc.Health: the agent is serving as soon as it answers at all."""

    async def Check(
        self, request: health_pb2.CheckRequest, ctx: CallContext
    ) -> health_pb2.HealthCheckResponse:
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

    async def Version(
        self, request: health_pb2.CheckRequest, ctx: CallContext
    ) -> health_pb2.VersionCheckResponse:
        return health_pb2.VersionCheckResponse(grpc_version="ttrpc", agent_version=VERSION)


class AgentService:
    """grpc.AgentService. RPCs not defined here answer UNIMPLEMENTED."""

    async def GetGuestDetails(
        self, request: agent_pb2.GuestDetailsRequest, ctx: CallContext
    ) -> agent_pb2.GuestDetailsResponse:
        features = details.as_features(details.root_mount(), details.block_devices())
        return agent_pb2.GuestDetailsResponse(
            agent_details=agent_pb2.AgentDetails(
                version=VERSION,
                init_daemon=False,
                device_handlers=["blk"],
                extra_features=features,
            )
        )


def build_server() -> Server:
    """A ttrpc server with the agent's services registered.

    No peer check: the only transports are the virtio-serial port and vsock, whose
    peer is the host by construction.
    """
    server = Server(peer_check=None)
    server.register(HEALTH_SERVICE, HealthService())
    server.register(AGENT_SERVICE, AgentService())
    return server
