"""The agent's ttrpc services (grpc.Health, grpc.AgentService) and how they are built."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from api.kata import agent_pb2, health_pb2
from guest.agent import VERSION, policy
from guest.agent.children import Reaper
from guest.agent.containers import Containers
from guest.agent.runtime import Runtime, RuntimeConfig
from guest.agent.sandbox import PulledRootfs, Sandbox, SandboxConfig
from guest.agent.service import AgentService
from ttrpc import CallContext, Server

log = logging.getLogger(__name__)

AGENT_SERVICE = agent_pb2.DESCRIPTOR.services_by_name["AgentService"]
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"]
MEASURED_CFG = Path("/run/measured-cfg")


class HealthService:
    """grpc.Health: the agent is serving as soon as it answers at all (no policy)."""

    async def Check(
        self, request: health_pb2.CheckRequest, ctx: CallContext
    ) -> health_pb2.HealthCheckResponse:
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

    async def Version(
        self, request: health_pb2.CheckRequest, ctx: CallContext
    ) -> health_pb2.VersionCheckResponse:
        return health_pb2.VersionCheckResponse(grpc_version="ttrpc", agent_version=VERSION)


@dataclass(frozen=True)
class AgentConfig:
    run_dir: Path = Path("/run/contrast")
    runtime: str = "crun"
    policy_path: Path = MEASURED_CFG / "policy.rego"
    # The image puller's registry settings (a [data] entry of initdata), if present.
    registry_config: Path = MEASURED_CFG / "imagepull.toml"
    image_store: Path | None = None  # default: <run_dir>/images


def _puller_factory(config: AgentConfig) -> Any:
    def make() -> Any:
        from guest.imagepull import config as pull_config
        from guest.imagepull.puller import ImagePuller
        from guest.imagepull.store import LayerStore

        settings = config.registry_config if config.registry_config.exists() else None
        store = LayerStore(config.image_store or config.run_dir / "images")
        return ImagePuller(store, pull_config.load(settings))

    return make


def build_agent(
    config: AgentConfig | None = None,
    reaper: Reaper | None = None,
    agent_policy: policy.Policy | None = None,
) -> AgentService:
    """The AgentService with its sandbox; nothing is created on disk until used."""
    config = config or AgentConfig()
    reaper = reaper or Reaper()
    runtime = Runtime(RuntimeConfig(config.runtime, config.run_dir / "runtime"), reaper)
    containers = Containers(runtime, reaper, config.run_dir / "sockets")
    sandbox = Sandbox(
        containers, PulledRootfs(_puller_factory(config)), SandboxConfig(config.run_dir)
    )
    return AgentService(sandbox, agent_policy or policy.load(config.policy_path))


def build_server(service: AgentService | None = None) -> Server:
    """A ttrpc server with the agent's services registered.

    No peer check: the only transports are the virtio-serial port and vsock, whose
    peer is the host by construction (and a root-only unix socket for development).
    """
    server = Server(peer_check=None)
    server.register(HEALTH_SERVICE, HealthService())
    server.register(AGENT_SERVICE, service or build_agent())
    return server
