"""grpc.AgentService: every request checked by the policy, then served.

This is the one boundary where the agent's errors become ttrpc statuses. RPCs not
defined here answer UNIMPLEMENTED (the ttrpc binding does that for missing methods).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

from google.protobuf import empty_pb2
from google.protobuf.message import Message

import ttrpc
from api.kata import agent_pb2, types_pb2
from guest.agent import VERSION, copyfile, details, policyinput
from guest.agent import spec as specs
from guest.agent.containers import Containers, Process
from guest.agent.errors import (
    AgentError,
    AlreadyExists,
    FailedPrecondition,
    InvalidRequest,
    NotFound,
    PolicyError,
)
from guest.agent.policy import Policy, untrusted
from guest.agent.sandbox import Sandbox
from guest.imagepull.errors import ImagePullError

log = logging.getLogger(__name__)

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)
Handler = Callable[["AgentService", Req, ttrpc.CallContext], Awaitable[Resp]]

MAX_SIGNAL = 64
# Requests of a pod's start and end, whose serving time is logged (bench.pod_bench reads
# it from the console); the rest, e.g. a probe's exec every few seconds, at debug level.
TIMED = frozenset(
    {
        "UpdateInterfaceRequest", "UpdateRoutesRequest", "AddARPNeighborsRequest",
        "CreateSandboxRequest", "DestroySandboxRequest", "CreateContainerRequest",
        "StartContainerRequest", "RemoveContainerRequest", "SetPolicyRequest",
    }
)  # fmt: skip


def to_status(err: AgentError) -> ttrpc.StatusError:
    """The ttrpc status for one of the agent's errors."""
    if isinstance(err, InvalidRequest | PolicyError):
        return ttrpc.InvalidArgument(str(err))
    if isinstance(err, NotFound):
        return ttrpc.NotFound(str(err))
    if isinstance(err, AlreadyExists):
        return ttrpc.AlreadyExists(str(err))
    if isinstance(err, FailedPrecondition):
        return ttrpc.FailedPrecondition(str(err))
    return ttrpc.Internal(str(err))


def guarded(handler: Handler[Req, Resp]) -> Handler[Req, Resp]:
    """Check the request against the policy first; translate errors to statuses."""

    @functools.wraps(handler)
    async def wrapper(self: AgentService, request: Req, ctx: ttrpc.CallContext) -> Resp:
        started = time.monotonic()
        await self.check(request)
        checked = time.monotonic()
        try:
            reply = await handler(self, request, ctx)
        except AgentError as err:
            log.warning("%s failed: %s", type(request).__name__, err)
            raise to_status(err) from err
        except ImagePullError as err:
            # The puller's modules (http.client, ssl, ...) load on first use, not at start.
            from guest.imagepull.service import status_for

            log.warning("%s: image pull failed: %s", type(request).__name__, err)
            raise status_for(err) from err
        name = request.DESCRIPTOR.name
        served, policy = time.monotonic() - started, checked - started
        level = logging.INFO if name in TIMED else logging.DEBUG
        log.log(level, "%s served in %.1f ms (policy %.1f ms)", name, 1000 * served, 1000 * policy)
        return reply

    return wrapper


class AgentService:
    """The Kata agent protocol on top of a Sandbox, under a Policy."""

    def __init__(self, sandbox: Sandbox, policy: Policy, enforce: bool = True) -> None:
        self.sandbox = sandbox
        self.containers: Containers = sandbox.containers
        self.policy = policy
        # Off only for benchmarks measuring the policy's cost.
        self.enforce = enforce

    async def check(self, request: Message) -> None:
        """Raises PermissionDenied "<RequestName> is blocked by policy[: reason]"."""
        if not self.enforce:
            return
        name = request.DESCRIPTOR.name
        decision = await self.policy.decide(name, policyinput.to_input(request))
        if not decision.allowed:
            message = f"{name} is blocked by policy"
            if decision.reason:
                message += f": {decision.reason}"
            log.warning("%s", message)
            raise ttrpc.PermissionDenied(message)

    def _process(self, cid: str, exec_id: str) -> Process:
        return self.containers.get(cid).process(exec_id)

    # ---- sandbox ----

    @guarded
    async def CreateSandbox(
        self, request: agent_pb2.CreateSandboxRequest, ctx: ttrpc.CallContext
    ) -> empty_pb2.Empty:
        self.sandbox.create(request)
        return empty_pb2.Empty()

    @guarded
    async def DestroySandbox(
        self, request: agent_pb2.DestroySandboxRequest, ctx: ttrpc.CallContext
    ) -> empty_pb2.Empty:
        await self.sandbox.destroy()
        return empty_pb2.Empty()

    @guarded
    async def SetPolicy(
        self, request: agent_pb2.SetPolicyRequest, ctx: ttrpc.CallContext
    ) -> empty_pb2.Empty:
        # A policy that does not compile is refused and the old one stays in force. It
        # is compiled in a child first (a crash must not end the agent), off the loop.
        self.policy = await self.policy.alone(
            functools.partial(untrusted, request.policy, "policy.rego")
        )
        log.info("policy replaced by SetPolicy")
        return empty_pb2.Empty()

    @guarded
    async def GetGuestDetails(
        self, request: agent_pb2.GuestDetailsRequest, ctx: ttrpc.CallContext
    ) -> agent_pb2.GuestDetailsResponse:
        features = details.as_features(
            details.root_mount(), details.block_devices(), details.crypto_drivers()
        )
        features += self.sandbox.leftovers()
        return agent_pb2.GuestDetailsResponse(
            agent_details=agent_pb2.AgentDetails(
                version=VERSION,
                init_daemon=False,
                device_handlers=["blk"],
                storage_handlers=["image_guest_pull"],
                extra_features=features,
            )
        )

    # ---- containers ----

    @guarded
    async def CreateContainer(
        self, request: agent_pb2.CreateContainerRequest, ctx: ttrpc.CallContext
    ) -> empty_pb2.Empty:
        await self.sandbox.create_container(request)
        return empty_pb2.Empty()

    @guarded
    async def StartContainer(
        self, request: agent_pb2.StartContainerRequest, ctx: ttrpc.CallContext
    ) -> empty_pb2.Empty:
        await self.containers.start(request.container_id)
        return empty_pb2.Empty()

    @guarded
    async def RemoveContainer(
        self, request: agent_pb2.RemoveContainerRequest, ctx: ttrpc.CallContext
    ) -> empty_pb2.Empty:
        await self.sandbox.remove_container(request.container_id, request.timeout or None)
        return empty_pb2.Empty()

    @guarded
    async def ExecProcess(
        self, request: agent_pb2.ExecProcessRequest, ctx: ttrpc.CallContext
    ) -> empty_pb2.Empty:
        await self.containers.exec(
            request.container_id, request.exec_id, specs.process(request.process)
        )
        return empty_pb2.Empty()

    @guarded
    async def SignalProcess(
        self, request: agent_pb2.SignalProcessRequest, ctx: ttrpc.CallContext
    ) -> empty_pb2.Empty:
        if not 0 < request.signal <= MAX_SIGNAL:
            raise InvalidRequest(f"signal {request.signal} is out of range")
        await self.containers.signal(request.container_id, request.exec_id, request.signal)
        return empty_pb2.Empty()

    @guarded
    async def WaitProcess(
        self, request: agent_pb2.WaitProcessRequest, ctx: ttrpc.CallContext
    ) -> agent_pb2.WaitProcessResponse:
        status = await self.containers.wait(request.container_id, request.exec_id)
        return agent_pb2.WaitProcessResponse(status=status)

    @guarded
    async def ListProcesses(
        self, request: agent_pb2.ListProcessesRequest, ctx: ttrpc.CallContext
    ) -> agent_pb2.ListProcessesResponse:
        # Kata's contract: "json" is a JSON array of pids (args are ps options, for
        # "table" only); "table" would run ps in the guest, which we do not serve.
        if request.format != "json":
            raise InvalidRequest(
                f'ListProcesses: format {request.format!r} is not served (only "json")'
            )
        pids = self.containers.pids(request.container_id)
        return agent_pb2.ListProcessesResponse(process_list=json.dumps(pids).encode())

    @guarded
    async def UpdateContainer(
        self, request: agent_pb2.UpdateContainerRequest, ctx: ttrpc.CallContext
    ) -> empty_pb2.Empty:
        await self.containers.update(request.container_id, specs.resources(request.resources))
        return empty_pb2.Empty()

    @guarded
    async def CopyFile(
        self, request: agent_pb2.CopyFileRequest, ctx: ttrpc.CallContext
    ) -> empty_pb2.Empty:
        try:
            copyfile.copy_file(request)
        except OSError as err:
            raise ttrpc.Internal(f"CopyFile {request.path}: {err}") from err
        return empty_pb2.Empty()

    @guarded
    async def PauseContainer(
        self, request: agent_pb2.PauseContainerRequest, ctx: ttrpc.CallContext
    ) -> empty_pb2.Empty:
        self.containers.get(request.container_id)
        await self.containers.runtime.pause(request.container_id)
        return empty_pb2.Empty()

    @guarded
    async def ResumeContainer(
        self, request: agent_pb2.ResumeContainerRequest, ctx: ttrpc.CallContext
    ) -> empty_pb2.Empty:
        self.containers.get(request.container_id)
        await self.containers.runtime.resume(request.container_id)
        return empty_pb2.Empty()

    @guarded
    async def StatsContainer(
        self, request: agent_pb2.StatsContainerRequest, ctx: ttrpc.CallContext
    ) -> agent_pb2.StatsContainerResponse:
        stats: Any = self.containers.stats(request.container_id)
        return agent_pb2.StatsContainerResponse(cgroup_stats=stats)

    @guarded
    async def GetOOMEvent(
        self, request: agent_pb2.GetOOMEventRequest, ctx: ttrpc.CallContext
    ) -> agent_pb2.OOMEvent:
        return agent_pb2.OOMEvent(container_id=await self.containers.next_oom())

    # ---- stdio ----

    @guarded
    async def WriteStdin(
        self, request: agent_pb2.WriteStreamRequest, ctx: ttrpc.CallContext
    ) -> agent_pb2.WriteStreamResponse:
        proc = self._process(request.container_id, request.exec_id)
        return agent_pb2.WriteStreamResponse(len=await proc.stdio.stdin.write(request.data))

    @guarded
    async def ReadStdout(
        self, request: agent_pb2.ReadStreamRequest, ctx: ttrpc.CallContext
    ) -> agent_pb2.ReadStreamResponse:
        data = await self.containers.read(request.container_id, request.exec_id, False, request.len)
        return agent_pb2.ReadStreamResponse(data=data)

    @guarded
    async def ReadStderr(
        self, request: agent_pb2.ReadStreamRequest, ctx: ttrpc.CallContext
    ) -> agent_pb2.ReadStreamResponse:
        data = await self.containers.read(request.container_id, request.exec_id, True, request.len)
        return agent_pb2.ReadStreamResponse(data=data)

    @guarded
    async def CloseStdin(
        self, request: agent_pb2.CloseStdinRequest, ctx: ttrpc.CallContext
    ) -> empty_pb2.Empty:
        await self._process(request.container_id, request.exec_id).stdio.stdin.close()
        return empty_pb2.Empty()

    @guarded
    async def TtyWinResize(
        self, request: agent_pb2.TtyWinResizeRequest, ctx: ttrpc.CallContext
    ) -> empty_pb2.Empty:
        proc = self._process(request.container_id, request.exec_id)
        proc.stdio.resize(request.row, request.column)
        return empty_pb2.Empty()

    # ---- networking (guest.agent.netconfig, blocking: on a thread) ----

    @guarded
    async def UpdateInterface(
        self, request: agent_pb2.UpdateInterfaceRequest, ctx: ttrpc.CallContext
    ) -> types_pb2.Interface:
        from guest.agent import netconfig

        with _netconfig_errors():
            return await asyncio.to_thread(netconfig.update_interface, request.interface)

    @guarded
    async def UpdateRoutes(
        self, request: agent_pb2.UpdateRoutesRequest, ctx: ttrpc.CallContext
    ) -> agent_pb2.Routes:
        from guest.agent import netconfig

        with _netconfig_errors():
            routes = await asyncio.to_thread(netconfig.update_routes, request.routes.Routes)
        return agent_pb2.Routes(Routes=routes)

    @guarded
    async def AddARPNeighbors(
        self, request: agent_pb2.AddARPNeighborsRequest, ctx: ttrpc.CallContext
    ) -> empty_pb2.Empty:
        from guest.agent import netconfig

        with _netconfig_errors():
            await asyncio.to_thread(netconfig.add_arp_neighbors, request.neighbors.ARPNeighbors)
        return empty_pb2.Empty()

    @guarded
    async def ListInterfaces(
        self, request: agent_pb2.ListInterfacesRequest, ctx: ttrpc.CallContext
    ) -> agent_pb2.Interfaces:
        from guest.agent import netconfig

        with _netconfig_errors():
            interfaces = await asyncio.to_thread(netconfig.list_interfaces)
        return agent_pb2.Interfaces(Interfaces=interfaces)

    @guarded
    async def ListRoutes(
        self, request: agent_pb2.ListRoutesRequest, ctx: ttrpc.CallContext
    ) -> agent_pb2.Routes:
        from guest.agent import netconfig

        with _netconfig_errors():
            routes = await asyncio.to_thread(netconfig.list_routes)
        return agent_pb2.Routes(Routes=routes)


@contextlib.contextmanager
def _netconfig_errors() -> Iterator[None]:
    """netconfig's errors as statuses: BadRequest is the caller's fault."""
    from guest.agent import netconfig

    try:
        yield
    except netconfig.BadRequest as err:
        raise ttrpc.InvalidArgument(str(err)) from err
    except netconfig.NetconfigError as err:
        raise ttrpc.Internal(str(err)) from err
