"""containerd's Task API (the node daemon's TaskService with the local-agent backend)
on the real guest agent, running containers with runc on this host: the pod's
resolv.conf reaches the container, Pids lists the container's processes and Stats
reports its cgroup's figures as containerd's cgroup v2 Metrics."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import ttrpc
from agent.sandbox.local_backend import LocalAgentBackend
from api.containerd.cgroups.v2 import metrics_pb2
from api.containerd.events import task_pb2
from api.containerd.task.v2 import shim_pb2
from api.kata import agent_pb2
from tests.integration.guestagent import requests as rq
from tests.integration.guestagent.conftest import AGENT_SERVICE, Pushed, start_agent, stop_agent
from tests.integration.guestagent.requests import ALLOW_ALL
from tests.unit.shim.harness import Harness, running
from tests.unit.shim.sinks import socket_dir

POLICY = ALLOW_ALL + "default ListProcessesRequest := true\n"
SANDBOX = "pod1"
CRI_SANDBOX_ID = "io.kubernetes.cri.sandbox-id"
CRI_TYPE = "io.kubernetes.cri.container-type"
CRI_IMAGE = "io.kubernetes.cri.image-name"


def oci_config(args: list[str], annotations: dict[str, str], resolv: Path) -> dict[str, Any]:
    """config.json as containerd's CRI writes it (host paths the guest must not use)."""
    return {
        "ociVersion": "1.0.2",
        "process": {
            "args": args, "cwd": "/", "user": {"uid": 0, "gid": 0},
            "env": ["PATH=/bin:/usr/bin:/sbin:/usr/sbin"],
        },
        "root": {"path": "rootfs"},
        "hostname": "pod-one",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/etc/resolv.conf", "type": "bind", "source": str(resolv),
             "options": ["rbind", "rprivate", "ro"]},
            {"destination": "/etc/hosts", "type": "bind",
             "source": "/var/lib/containerd/io.containerd.grpc.v1.cri/sandboxes/x/hosts",
             "options": ["rbind", "rw"]},
            {"destination": "/etc/hostname", "type": "bind",
             "source": "/var/lib/containerd/io.containerd.grpc.v1.cri/sandboxes/x/hostname",
             "options": ["rbind", "rw"]},
        ],
        "annotations": annotations,
        "linux": {
            # A pod network of its own (CRI lists it with the netns path; a sandbox
            # without one is a hostNetwork pod, which our handler refuses).
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"},
                           {"type": "network", "path": "/var/run/netns/cni-test"}]
        },
    }  # fmt: skip


async def create(daemon: Harness, task_id: str, config: dict[str, Any]) -> None:
    await daemon.register(task_id)
    bundle = daemon.folder / "bundles" / task_id
    bundle.mkdir(parents=True)
    (bundle / "config.json").write_text(json.dumps(config))
    await daemon.task.Create(
        shim_pb2.CreateTaskRequest(id=task_id, bundle=str(bundle), options=daemon.options())
    )
    await daemon.task.Start(shim_pb2.StartRequest(id=task_id))


async def stop(daemon: Harness, task_id: str) -> None:
    with contextlib.suppress(ttrpc.NotFound):  # exited already
        await daemon.task.Kill(shim_pb2.KillRequest(id=task_id, signal=signal.SIGKILL))
    await asyncio.wait_for(daemon.task.Wait(shim_pb2.WaitRequest(id=task_id)), 60)
    await daemon.task.Delete(shim_pb2.DeleteRequest(id=task_id))


async def read_until(stub: Any, cid: str, wanted: bytes) -> bytes:
    data = b""
    while wanted not in data:
        request = agent_pb2.ReadStreamRequest(container_id=cid, len=4096)
        chunk = (await asyncio.wait_for(stub.ReadStdout(request), 60)).data
        if not chunk:
            break
        data += chunk
    return data


@pytest.fixture
async def daemon(pushed: Pushed, agent_dir: Path) -> AsyncIterator[tuple[Harness, Any]]:
    proc = start_agent(pushed, POLICY, agent_dir)
    try:
        client = await ttrpc.Client.connect_unix(str(proc.socket))
        try:
            with socket_dir() as sockets:
                backend = LocalAgentBackend(proc.socket, call_timeout=120)
                async with running(sockets, backend) as harness:
                    yield harness, ttrpc.ServiceStub(client, AGENT_SERVICE)
        finally:
            await client.close()
    finally:
        stop_agent(proc)


async def test_dns_pids_and_stats_through_the_task_api(
    daemon: tuple[Harness, Any], pushed: Pushed, tmp_path: Path
) -> None:
    harness, agent = daemon
    # What containerd's CRI writes for a PodSandboxConfig.dns_config.
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("search ns1.svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n")
    pause = oci_config(["/pause"], {CRI_TYPE: "sandbox", CRI_SANDBOX_ID: SANDBOX}, resolv)
    await create(harness, SANDBOX, pause)
    app_annotations = {CRI_TYPE: "container", CRI_SANDBOX_ID: SANDBOX, CRI_IMAGE: pushed.reference}
    # sh stays (sleep in the background), dd spends some CPU time.
    script = "cat /etc/resolv.conf /etc/hosts /etc/hostname; echo ready; "
    script += "dd if=/dev/zero of=/dev/null count=20000; "
    script += "sleep 1000 & wait"
    app = oci_config(["sh", "-c", script], app_annotations, resolv)
    try:
        await create(harness, "app", app)
        out = await read_until(agent, "app", b"ready\n")
        # resolv.conf: the host's file, sent as CreateSandboxRequest.dns. hosts and
        # hostname: containerd's own (no kubelet etc-hosts here), written by the guest
        # from the pod's hostname (a kubelet's etc-hosts is copied in: agent.volumes).
        assert out.startswith(
            b"search ns1.svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
            b"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n127.0.1.1\tpod-one\n"
            b"pod-one\nready\n"
        ), out

        # Pids: the container's processes (the agent's pid namespace is this host's).
        commands: list[str] = []
        for _ in range(100):  # until dd has finished and sleep runs
            reply = await harness.task.Pids(shim_pb2.PidsRequest(id="app"))
            pids = [p.pid for p in reply.processes]
            commands = [Path(f"/proc/{pid}/cmdline").read_bytes().decode() for pid in pids]
            if any(c.startswith("sleep\0") for c in commands):
                break
            await asyncio.sleep(0.1)
        assert any(c.startswith("sleep\0") for c in commands), commands
        assert any(c.startswith("sh\0") for c in commands), commands
        assert len(pids) == len(set(pids)) >= 2

        # Stats: the container's cgroup, as io.containerd.cgroups.v2.Metrics.
        reply = await harness.task.Stats(shim_pb2.StatsRequest(id="app"))
        assert reply.stats.type_url == "io.containerd.cgroups.v2.Metrics"
        metrics = metrics_pb2.Metrics.FromString(reply.stats.value)
        # busybox sh + sleep + runc's leftovers: more than a page, far less than 1 GiB.
        assert 4096 < metrics.memory.usage < 2**30, metrics.memory
        # sh, cat, dd ran in the cgroup: some CPU time, and not more than the wall time.
        assert 0 < metrics.cpu.usage_usec < 600 * 10**6, metrics.cpu
        assert metrics.pids.current == len(pids), (metrics.pids, pids)
        # The sandbox's own container has its own figures.
        pause_stats = await harness.task.Stats(shim_pb2.StatsRequest(id=SANDBOX))
        pause_metrics = metrics_pb2.Metrics.FromString(pause_stats.stats.value)
        assert pause_metrics.pids.current == 1
    finally:
        await stop(harness, "app")
        await stop(harness, SANDBOX)
    assert harness.store.load_all() == ([], [])


async def test_list_processes_is_under_the_policy(agent: tuple[Any, Any]) -> None:
    stub, _ = agent  # ALLOW_ALL: every request the host sends today, not ListProcesses
    await stub.CreateSandbox(agent_pb2.CreateSandboxRequest(hostname="h", sandbox_id="s"))
    await stub.CreateContainer(rq.create_pause("pause"))
    try:
        request = agent_pb2.ListProcessesRequest(container_id="pause", format="json")
        with pytest.raises(ttrpc.PermissionDenied, match="ListProcessesRequest is blocked"):
            await stub.ListProcesses(request)
    finally:
        await stub.DestroySandbox(agent_pb2.DestroySandboxRequest())


async def test_list_processes_formats(daemon: tuple[Harness, Any]) -> None:
    _, stub = daemon
    await stub.CreateSandbox(agent_pb2.CreateSandboxRequest(hostname="h", sandbox_id="s"))
    await stub.CreateContainer(rq.create_pause("pause"))
    try:
        table = agent_pb2.ListProcessesRequest(container_id="pause", format="table")
        with pytest.raises(ttrpc.InvalidArgument, match="format 'table' is not served"):
            await stub.ListProcesses(table)
        reply = await stub.ListProcesses(
            agent_pb2.ListProcessesRequest(container_id="pause", format="json")
        )
        # Created, not started: runc's init waiting for start is the one process.
        pids = json.loads(reply.process_list)
        assert len(pids) == 1 and Path(f"/proc/{pids[0]}").exists(), pids
        with pytest.raises(ttrpc.NotFound, match="no container 'nope'"):
            await stub.ListProcesses(
                agent_pb2.ListProcessesRequest(container_id="nope", format="json")
            )
    finally:
        await stub.DestroySandbox(agent_pb2.DestroySandboxRequest())


async def test_oom_kill_reaches_containerd_as_task_oom(
    daemon: tuple[Harness, Any], pushed: Pushed, tmp_path: Path
) -> None:
    """The guest's OOM kill of a container becomes containerd's TaskOOM (its CRI's
    OOMKilled reason; critest v1.36's OOM spec saw "Error" before)."""
    harness, _ = daemon
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 10.96.0.10\n")
    pause = oci_config(["/pause"], {CRI_TYPE: "sandbox", CRI_SANDBOX_ID: SANDBOX}, resolv)
    await create(harness, SANDBOX, pause)
    annotations = {CRI_TYPE: "container", CRI_SANDBOX_ID: SANDBOX, CRI_IMAGE: pushed.reference}
    hog = oci_config(["sh", "-c", "x=a; while true; do x=$x$x; done"], annotations, resolv)
    hog["linux"]["resources"] = {"memory": {"limit": 16 << 20, "swap": 16 << 20}}
    try:
        await create(harness, "hog", hog)
        waited = await asyncio.wait_for(harness.task.Wait(shim_pb2.WaitRequest(id="hog")), 120)
        assert waited.exit_status == 128 + signal.SIGKILL
        # exit and OOM come from separate guest calls: either order (containerd's CRI
        # takes the reason from TaskOOM whenever it arrives).
        sink = harness.sink
        async with sink.arrived:  # a bound only so that a missing event fails the test
            await asyncio.wait_for(
                sink.arrived.wait_for(lambda: any(e.topic == "/tasks/oom" for e in sink.envelopes)),
                60,
            )
        envelopes = list(sink.envelopes)
        ooms = [e for e in envelopes if e.topic == "/tasks/oom"]
        assert len(ooms) == 1, [e.topic for e in envelopes]
        assert task_pb2.TaskOOM.FromString(ooms[0].event.value).container_id == "hog"
    finally:
        await stop(harness, "hog")
        await stop(harness, SANDBOX)
    assert harness.store.load_all() == ([], [])
