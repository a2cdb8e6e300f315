"""The agent's ttrpc services (grpc.Health, grpc.AgentService, and our
contrast.guest.v1.TerminationMessage) and how they are built.

Start-up is split so that Health answers as early as possible: this module imports
only ttrpc and the generated messages; the AgentService with its heavy imports
(regopy, the image puller) and the compiled policy is built afterwards,
while the server already listens (:class:`DeferredAgentService`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ttrpc
from api.kata import agent_pb2, health_pb2
from guest.agent import VERSION
from ttrpc import CallContext, Server

if TYPE_CHECKING:
    from guest.agent import policy
    from guest.agent.children import Reaper
    from guest.agent.service import AgentService

log = logging.getLogger(__name__)

AGENT_SERVICE = agent_pb2.DESCRIPTOR.services_by_name["AgentService"]
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"]
MEASURED_CFG = Path("/run/measured-cfg")
# AgentService calls that only wait and consume nothing when cancelled.
WAITING_RPCS = ("GetOOMEvent", "ReadStdout", "ReadStderr", "WaitProcess")


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
    """The AgentService with its sandbox; nothing is created on disk until used.

    Imports the service's modules (regopy among them) and compiles the policy: the
    slow part of the agent's start, see :class:`DeferredAgentService`.
    """
    from guest.agent import regolib

    regolib.preload()  # before regopy's import holds the GIL for its dlopen
    from guest.agent import policy
    from guest.agent.children import Reaper
    from guest.agent.containers import Containers
    from guest.agent.runtime import Runtime, RuntimeConfig
    from guest.agent.sandbox import PulledRootfs, Sandbox, SandboxConfig
    from guest.agent.service import AgentService

    config = config or AgentConfig()
    reaper = reaper or Reaper()
    runtime = Runtime(RuntimeConfig(config.runtime, config.run_dir / "runtime"), reaper)
    containers = Containers(runtime, reaper, config.run_dir / "sockets")
    sandbox = Sandbox(
        containers,
        PulledRootfs(_puller_factory(config)),
        SandboxConfig(config.run_dir, image_store=config.image_store),
    )
    return AgentService(sandbox, agent_policy or policy.load(config.policy_path))


Handler = Callable[[Any, CallContext], Awaitable[Any]]


class DeferredAgentService:
    """grpc.AgentService while the real one is still being built.

    Registered in its place so the server can listen (and Health answer) before the
    service's modules are imported and the policy is compiled. Every RPC waits until
    :meth:`start`'s build is done and then goes to the real service, policy check
    included: nothing is served before the policy is in force. If the build failed,
    every RPC fails UNAVAILABLE naming the error. An RPC the real service does not implement
    answers UNIMPLEMENTED, as it would when registered directly.
    """

    def __init__(self) -> None:
        self._service: asyncio.Future[AgentService] | None = None
        # Set once the first AgentService call has been answered (or failed).
        self.answered = asyncio.Event()
        for method in AGENT_SERVICE.methods:
            setattr(self, method.name, self._forward(method.name))

    def start(self, build: Callable[[], AgentService]) -> asyncio.Future[AgentService]:
        """Run ``build`` on a worker thread (imports release the event loop to Health
        between bytecodes); returns the future of the service. Call it once, in the loop."""
        if self._service is not None:
            raise RuntimeError("the agent service is already being built")
        self._service = asyncio.ensure_future(asyncio.to_thread(build))
        return self._service

    async def service(self) -> AgentService:
        """The real service, once built. Raises ttrpc.Unavailable if the build failed."""
        if self._service is None:
            raise RuntimeError("DeferredAgentService.start was not called")
        try:
            return await asyncio.shield(self._service)
        except Exception as err:
            raise ttrpc.Unavailable(f"the agent service failed to start: {err}") from err

    def _forward(self, name: str) -> Handler:
        async def forward(request: Any, ctx: CallContext) -> Any:
            try:
                handler = getattr(await self.service(), name, None)
                if handler is None:
                    raise ttrpc.Unimplemented(f"method {name}")
                return await handler(request, ctx)
            finally:
                # The server writes the answer as soon as this returns, before the loop
                # runs the callback: once set, the answer is out.
                if not self.answered.is_set():
                    asyncio.get_running_loop().call_soon(self.answered.set)

        forward.__name__ = name
        return forward


def build_server(service: AgentService | DeferredAgentService | None = None) -> Server:
    """A ttrpc server with the agent's services registered.

    No peer check: the only transports are the virtio-serial port and vsock, whose
    peer is the host by construction (and a root-only unix socket for development).
    """
    from guest.agent import termination

    server = Server(peer_check=None)
    server.register(HEALTH_SERVICE, HealthService())
    agent = service or build_agent()
    # A departed host's waiting calls must not take what the next host waits for (an
    # OOM event, output it would then lose): cancelled when their connection ends.
    server.register(AGENT_SERVICE, agent, waiting=WAITING_RPCS)
    # Contrast's own: the termination message back to the host (policy-checked).
    server.register(termination.SERVICE, termination.TerminationMessages(agent))
    return server
