"""Pids, Stats and the pod's DNS from containerd's Task API to the guest agent's
protocol and back, through the daemon on real ttrpc sockets. The guest agent here is
a recording stand-in (the real one runs in tests/integration/guestagent and
tests/integration/shim); what is checked is the mapping of requests and answers."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import empty_pb2

from agent.sandbox.local_backend import LocalAgentBackend
from api.containerd.cgroups.v2 import metrics_pb2
from api.containerd.task.v2 import shim_pb2
from api.kata import agent_pb2
from tests.unit.shim.harness import Harness, running
from ttrpc import CallContext, Internal, PermissionDenied, Server

AGENT_SERVICE = agent_pb2.DESCRIPTOR.services_by_name["AgentService"]


class RecordingAgent:
    """Answers like the guest agent; records what the daemon asked."""

    def __init__(self) -> None:
        self.requests: list[Any] = []
        self.process_list = b"[1, 42]"
        self.deny_list = False
        self.released = asyncio.Event()

    async def CreateSandbox(
        self, request: agent_pb2.CreateSandboxRequest, ctx: CallContext
    ) -> empty_pb2.Empty:
        self.requests.append(request)
        return empty_pb2.Empty()

    async def CreateContainer(
        self, request: agent_pb2.CreateContainerRequest, ctx: CallContext
    ) -> empty_pb2.Empty:
        return empty_pb2.Empty()

    async def WaitProcess(
        self, request: agent_pb2.WaitProcessRequest, ctx: CallContext
    ) -> agent_pb2.WaitProcessResponse:
        await self.released.wait()  # the process runs until the test ends
        return agent_pb2.WaitProcessResponse(status=0)

    async def ListProcesses(
        self, request: agent_pb2.ListProcessesRequest, ctx: CallContext
    ) -> agent_pb2.ListProcessesResponse:
        self.requests.append(request)
        if self.deny_list:
            raise PermissionDenied("ListProcessesRequest is blocked by policy")
        return agent_pb2.ListProcessesResponse(process_list=self.process_list)

    async def StatsContainer(
        self, request: agent_pb2.StatsContainerRequest, ctx: CallContext
    ) -> agent_pb2.StatsContainerResponse:
        self.requests.append(request)
        return agent_pb2.StatsContainerResponse(
            cgroup_stats=agent_pb2.CgroupStats(
                cpu_stats=agent_pb2.CpuStats(
                    cpu_usage=agent_pb2.CpuUsage(total_usage=3_000_000, usage_in_usermode=2_000)
                ),
                memory_stats=agent_pb2.MemoryStats(
                    usage=agent_pb2.MemoryData(usage=1_048_576, limit=2**30),
                    stats={"anon": 524_288, "inactive_file": 4096},
                ),
                pids_stats=agent_pb2.PidsStats(current=2, limit=64),
            )
        )


@contextlib.asynccontextmanager
async def daemon_with_agent(sockets: Path) -> AsyncIterator[tuple[Harness, RecordingAgent]]:
    agent = RecordingAgent()
    server = Server()
    server.register(AGENT_SERVICE, agent)
    socket = sockets / "agent.sock"
    await server.serve_unix(socket)
    try:
        async with running(sockets, LocalAgentBackend(socket, call_timeout=5)) as daemon:
            yield daemon, agent
    finally:
        agent.released.set()
        await server.close()


async def create_sandbox(daemon: Harness, mounts: list[dict[str, Any]]) -> None:
    await daemon.register("pod")
    bundle = daemon.bundle("pod")
    spec = json.loads((bundle / "config.json").read_text())
    spec["hostname"] = "web-0"
    spec["mounts"] = mounts
    (bundle / "config.json").write_text(json.dumps(spec))
    request = shim_pb2.CreateTaskRequest(id="pod", bundle=str(bundle), options=daemon.options())
    await daemon.task.Create(request)


def resolv_mount(source: Path) -> dict[str, Any]:
    return {
        "destination": "/etc/resolv.conf",
        "type": "bind",
        "source": str(source),
        "options": ["rbind", "ro"],
    }


async def test_pod_dns_reaches_create_sandbox(sockets: Path) -> None:
    resolv = sockets / "resolv.conf"  # as containerd's CRI writes it from dns_config
    resolv.write_text("search ns.svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n")
    async with daemon_with_agent(sockets) as (daemon, agent):
        await create_sandbox(daemon, [resolv_mount(resolv)])
        created = [r for r in agent.requests if isinstance(r, agent_pb2.CreateSandboxRequest)]
        assert len(created) == 1
        assert created[0].hostname == "web-0"
        assert list(created[0].dns) == [
            "search ns.svc.cluster.local",
            "nameserver 10.96.0.10",
            "options ndots:5",
        ]


async def test_unreadable_resolv_conf_fails_the_sandbox_naming_it(sockets: Path) -> None:
    missing = sockets / "gone" / "resolv.conf"
    async with daemon_with_agent(sockets) as (daemon, agent):
        with pytest.raises(Internal, match=r"cannot read the pod's resolv\.conf .*gone"):
            await create_sandbox(daemon, [resolv_mount(missing)])
        assert agent.requests == []  # nothing reached the guest
    assert daemon.store.load_all() == ([], [])


async def test_pids_from_list_processes(sockets: Path) -> None:
    async with daemon_with_agent(sockets) as (daemon, agent):
        await create_sandbox(daemon, [])
        reply = await daemon.task.Pids(shim_pb2.PidsRequest(id="pod"))
        assert [p.pid for p in reply.processes] == [1, 42]
        asked = agent.requests[-1]
        assert isinstance(asked, agent_pb2.ListProcessesRequest)
        assert (asked.container_id, asked.format) == ("pod", "json")
        # A policy denial comes back as such; a malformed answer is an error, not pids.
        agent.deny_list = True
        with pytest.raises(PermissionDenied, match="blocked by policy"):
            await daemon.task.Pids(shim_pb2.PidsRequest(id="pod"))
        agent.deny_list = False
        agent.process_list = b'{"pids": [1]}'
        with pytest.raises(Internal, match="expected a JSON array of pids"):
            await daemon.task.Pids(shim_pb2.PidsRequest(id="pod"))


async def test_stats_as_cgroup_v2_metrics(sockets: Path) -> None:
    async with daemon_with_agent(sockets) as (daemon, agent):
        await create_sandbox(daemon, [])
        reply = await daemon.task.Stats(shim_pb2.StatsRequest(id="pod"))
        assert reply.stats.type_url == "io.containerd.cgroups.v2.Metrics"
        metrics = metrics_pb2.Metrics.FromString(reply.stats.value)
        assert metrics.cpu.usage_usec == 3_000
        assert metrics.cpu.user_usec == 2
        assert (metrics.memory.usage, metrics.memory.usage_limit) == (1_048_576, 2**30)
        assert (metrics.memory.anon, metrics.memory.inactive_file) == (524_288, 4096)
        assert (metrics.pids.current, metrics.pids.limit) == (2, 64)
        asked = agent.requests[-1]
        assert isinstance(asked, agent_pb2.StatsContainerRequest)
        assert asked.container_id == "pod"
