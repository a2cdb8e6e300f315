"""The host's view of the guest agent: typed calls over ttrpc."""

from __future__ import annotations

from api.kata import agent_pb2, health_pb2
from ttrpc import Client, ServiceStub

AGENT_SERVICE = agent_pb2.DESCRIPTOR.services_by_name["AgentService"]
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"]


# Callers with a configured bound (the daemon) pass their own. The default is generous: a
# freshly booted guest under TCG, on a cold page cache, is still importing and compiling its
# policy engine on another thread and can hold Health's answer for well over 10 s.
DEFAULT_CALL_SECONDS = 60.0


class AgentClient:
    """grpc.Health and grpc.AgentService stubs on one ttrpc connection."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.health = ServiceStub(client, HEALTH_SERVICE)
        self.agent = ServiceStub(client, AGENT_SERVICE)

    async def check(self, timeout: float = DEFAULT_CALL_SECONDS) -> bool:
        """Health/Check; True when the agent reports SERVING. Raises ttrpc errors."""
        reply = await self.health.Check(health_pb2.CheckRequest(), timeout=timeout)
        assert isinstance(reply, health_pb2.HealthCheckResponse)
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    async def guest_details(
        self, timeout: float = DEFAULT_CALL_SECONDS
    ) -> agent_pb2.GuestDetailsResponse:
        """AgentService/GetGuestDetails. Raises ttrpc errors."""
        reply = await self.agent.GetGuestDetails(agent_pb2.GuestDetailsRequest(), timeout=timeout)
        assert isinstance(reply, agent_pb2.GuestDetailsResponse)
        return reply

    @staticmethod
    def features(details: agent_pb2.GuestDetailsResponse) -> dict[str, str]:
        """extra_features ``key=value`` strings as a dict."""
        pairs = (f.partition("=") for f in details.agent_details.extra_features)
        return {key: value for key, _, value in pairs}

    async def close(self) -> None:
        await self.client.close()
