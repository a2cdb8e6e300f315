"""The Task service on a real ttrpc socket: what works without a pod-VM today, and the
errors containerd gets for the rest."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from agent.sandbox.local_backend import LocalAgentBackend
from agent.sandbox.state import (
    ContainerRecord,
    ProcessRecord,
    SandboxRecord,
    StateStore,
    Status,
    Stdio,
    VmRecord,
)
from agent.sandbox.vm_backend import PodVmBackend
from api.containerd.task.v2 import shim_pb2
from api.containerd.types.task import task_pb2 as types
from api.node import shim_pb2 as node_pb2
from shim.task import SERVICE, sandbox_run_dir
from tests.unit.shim.harness import running
from ttrpc import (
    Client,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    ServiceStub,
    Unimplemented,
)


def unreachable_agent(folder: Path) -> LocalAgentBackend:
    """A backend whose guest agent socket has nobody listening."""
    return LocalAgentBackend(folder / "no-agent.sock", call_timeout=2)


async def test_connect_and_unknown_tasks(sockets: Path) -> None:
    async with running(sockets, unreachable_agent(sockets)) as daemon:
        for stub in (daemon.task, daemon.task_v3):
            reply = await stub.Connect(shim_pb2.ConnectRequest(id="nope"))
            assert (reply.shim_pid, reply.task_pid) == (os.getpid(), 0)
            with pytest.raises(NotFound, match=r"task nope not found in namespace k8s\.io"):
                await stub.State(shim_pb2.StateRequest(id="nope"))
            with pytest.raises(NotFound):
                await stub.Kill(shim_pb2.KillRequest(id="nope", signal=9))


async def test_requests_need_containerds_namespace(sockets: Path) -> None:
    async with running(sockets, unreachable_agent(sockets)) as daemon:
        with pytest.raises(InvalidArgument, match="containerd-namespace-ttrpc"):
            await daemon.bare_task.State(shim_pb2.StateRequest(id="x"))


async def test_each_namespace_has_its_own_socket(sockets: Path) -> None:
    """containerd 1.6 sends no namespace metadata: the socket says which namespace."""
    async with running(sockets, unreachable_agent(sockets)) as daemon:
        reply = await daemon.control.Register(
            node_pb2.RegisterRequest(namespace="k8s.io", id="c1", ttrpc_address="/x")
        )
        assert isinstance(reply, node_pb2.RegisterResponse)
        assert reply.address == f"unix://{sockets}/daemon-ns/k8s.io.sock"
        async with await Client.connect_unix(sockets / "daemon-ns" / "k8s.io.sock") as client:
            stub = ServiceStub(client, SERVICE)
            with pytest.raises(NotFound, match=r"in namespace k8s\.io"):
                await stub.State(shim_pb2.StateRequest(id="c1"))
            with pytest.raises(InvalidArgument, match="namespace default on the socket of"):
                await stub.State(
                    shim_pb2.StateRequest(id="c1"),
                    metadata={"containerd-namespace-ttrpc": "default"},
                )


async def test_pause_resume_checkpoint_are_unimplemented(sockets: Path) -> None:
    async with running(sockets, unreachable_agent(sockets)) as daemon:
        with pytest.raises(Unimplemented, match="Pause is not supported"):
            await daemon.task.Pause(shim_pb2.PauseRequest(id="x"))
        with pytest.raises(Unimplemented, match="Resume"):
            await daemon.task.Resume(shim_pb2.ResumeRequest(id="x"))
        with pytest.raises(Unimplemented, match="never leaves it"):
            await daemon.task.Checkpoint(shim_pb2.CheckpointTaskRequest(id="x"))


async def test_create_needs_the_shims_registration(sockets: Path) -> None:
    async with running(sockets, unreachable_agent(sockets)) as daemon:
        bundle = daemon.bundle("c1")
        request = shim_pb2.CreateTaskRequest(id="c1", bundle=str(bundle), options=daemon.options())
        with pytest.raises(FailedPrecondition, match="not announced by the shim's start"):
            await daemon.task.Create(request)
        await daemon.register("c1")
        await daemon.task.Shutdown(shim_pb2.ShutdownRequest(id="c1"))  # forgets it again
        with pytest.raises(FailedPrecondition):
            await daemon.task.Create(request)


async def test_register_refuses_bad_input(sockets: Path) -> None:
    async with running(sockets, unreachable_agent(sockets)) as daemon:
        with pytest.raises(InvalidArgument, match="not a valid identifier"):
            await daemon.register("../escape")
        with pytest.raises(InvalidArgument, match="TTRPC_ADDRESS"):
            await daemon.control.Register(node_pb2.RegisterRequest(namespace="n", id="c"))


async def test_create_needs_a_valid_runtime_config(sockets: Path) -> None:
    async with running(sockets, unreachable_agent(sockets)) as daemon:
        await daemon.register("c1")
        bundle = str(daemon.bundle("c1"))
        with pytest.raises(InvalidArgument, match="carry no ConfigPath"):
            await daemon.task.Create(shim_pb2.CreateTaskRequest(id="c1", bundle=bundle))
        broken = sockets / "broken.toml"
        broken.write_text("platform = 'metal-qemu-sev'\n")
        request = shim_pb2.CreateTaskRequest(id="c1", bundle=bundle, options=daemon.options(broken))
        with pytest.raises(InvalidArgument, match=r"broken.toml: platform must be one of"):
            await daemon.task.Create(request)
        # The options may also come from the shim's start (stdin) instead of Create.
        await daemon.register("c1", options=daemon.options(broken))
        with pytest.raises(InvalidArgument, match=r"broken\.toml"):
            await daemon.task.Create(shim_pb2.CreateTaskRequest(id="c1", bundle=bundle))
    assert daemon.store.load_all() == ([], [])


async def test_refused_annotation_fails_before_any_vm(sockets: Path) -> None:
    async with running(sockets, unreachable_agent(sockets)) as daemon:
        await daemon.register("pod1")
        bundle = daemon.bundle("pod1", {"io.katacontainers.config.hypervisor.path": "/evil"})
        request = shim_pb2.CreateTaskRequest(
            id="pod1", bundle=str(bundle), options=daemon.options()
        )
        with pytest.raises(InvalidArgument, match=r"hypervisor\.path is not allowed"):
            await daemon.task.Create(request)
        assert daemon.sink.envelopes == []
    assert daemon.store.load_all() == ([], [])


async def test_unreachable_guest_agent_is_a_clean_error(sockets: Path) -> None:
    async with running(sockets, unreachable_agent(sockets)) as daemon:
        await daemon.register("pod1")
        bundle = daemon.bundle("pod1")
        request = shim_pb2.CreateTaskRequest(
            id="pod1", bundle=str(bundle), options=daemon.options()
        )
        with pytest.raises(Internal, match=r"cannot reach the guest agent at .*no-agent\.sock"):
            await daemon.task.Create(request)
        # A container of a sandbox that does not exist.
        await daemon.register("app")
        app = daemon.bundle(
            "app",
            {
                "io.kubernetes.cri.sandbox-id": "pod1",
                "io.kubernetes.cri.container-type": "container",
            },
        )
        request = shim_pb2.CreateTaskRequest(id="app", bundle=str(app), options=daemon.options())
        with pytest.raises(NotFound, match="sandbox pod1 of container app not found"):
            await daemon.task.Create(request)
        assert daemon.sink.envelopes == []
    assert daemon.store.load_all() == ([], [])


def running_process(marker: Path) -> subprocess.Popen[bytes]:
    """A stand-in for a pod-VM's QEMU: a process with the console log path in its argv."""
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", str(marker)],
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.allow_programs("python", "python3")
async def test_restart_with_an_unreattachable_vm_kills_it_and_reports_the_exit(
    sockets: Path,
) -> None:
    """A VM whose guest agent does not answer after a restart cannot be reattached: it
    is killed, never leaked, and containerd hears that its tasks exited (255), so CRI
    can clean them up."""
    console = sockets / "run" / "console.log"
    vm = running_process(console)
    try:
        init = ProcessRecord("", Stdio(), Status.RUNNING, pid=vm.pid)
        record = SandboxRecord(
            namespace="k8s.io",
            id="pod1",
            ttrpc_address=str(sockets / "containerd.sock.ttrpc"),
            config_path=str(sockets / "runtime.toml"),
            vm=VmRecord(
                "pod-vm",
                vm.pid,
                {"console_log": str(console), "agent_socket": str(sockets / "nobody.sock")},
            ),
            containers=(
                ContainerRecord("pod1", str(sockets / "b1"), init, is_sandbox=True),
                ContainerRecord("app", str(sockets / "b2"), init, is_sandbox=False),
            ),
        )
        (sockets / "runtime.toml").write_text("")  # replaced by the harness's config
        StateStore(sockets / "state").save(record)
        async with running(sockets, PodVmBackend()) as daemon:
            assert await asyncio.to_thread(vm.wait, 10) == -signal.SIGKILL
            envelopes = await daemon.sink.wait_for(2)
            assert [e.topic for e in envelopes] == ["/tasks/exit", "/tasks/exit"]
            state = await daemon.task.State(shim_pb2.StateRequest(id="app"))
            assert (state.status, state.exit_status) == (types.STOPPED, 255)
            waited = await daemon.task.Wait(shim_pb2.WaitRequest(id="pod1"))
            assert waited.exit_status == 255
            with pytest.raises(FailedPrecondition, match="sandbox pod1 is gone"):
                await daemon.task.ResizePty(shim_pb2.ResizePtyRequest(id="app", width=80))
            deleted = await daemon.task.Delete(shim_pb2.DeleteRequest(id="app"))
            assert deleted.exit_status == 255
            await daemon.task.Delete(shim_pb2.DeleteRequest(id="pod1"))
            envelopes = await daemon.sink.wait_for(4)
            assert [e.topic for e in envelopes[2:]] == ["/tasks/delete", "/tasks/delete"]
        assert daemon.store.load_all() == ([], [])
    finally:
        vm.kill()
        vm.wait()


async def test_cleanup_of_an_unknown_task(sockets: Path) -> None:
    async with running(sockets, unreachable_agent(sockets)) as daemon:
        reply = await daemon.control.Cleanup(node_pb2.CleanupRequest(namespace="k8s.io", id="gone"))
        assert isinstance(reply, shim_pb2.DeleteResponse)
        assert reply.exit_status == 128 + signal.SIGKILL
        assert reply.exited_at.seconds > 0


@pytest.mark.allow_programs("python", "python3")
async def test_vm_of_a_sandbox_recorded_before_its_launch_finished_is_found(sockets: Path) -> None:
    """The daemon died while launching: the record has no pid yet, only the planned
    console log; the next daemon finds the QEMU by it and stops it."""
    console = sandbox_run_dir(sockets / "run", "k8s.io", "pod1") / "console.log"
    vm = running_process(console)
    try:
        backend = PodVmBackend()
        (sockets / "runtime.toml").write_text("")
        StateStore(sockets / "state").save(
            SandboxRecord(
                namespace="k8s.io",
                id="pod1",
                ttrpc_address=str(sockets / "containerd.sock.ttrpc"),
                config_path=str(sockets / "runtime.toml"),
                vm=VmRecord("pod-vm", 0, {"console_log": str(console)}),
            )
        )
        async with running(sockets, backend):
            assert await asyncio.to_thread(vm.wait, 10) == -signal.SIGKILL
    finally:
        vm.kill()
        vm.wait()


async def test_failed_sandbox_creation_leaves_no_record(sockets: Path) -> None:
    async with running(sockets, unreachable_agent(sockets)) as daemon:
        await daemon.register("pod1")
        bundle = daemon.bundle("pod1")
        request = shim_pb2.CreateTaskRequest(
            id="pod1", bundle=str(bundle), options=daemon.options()
        )
        with pytest.raises(Internal):
            await daemon.task.Create(request)
        with pytest.raises(NotFound):
            await daemon.task.State(shim_pb2.StateRequest(id="pod1"))
    assert daemon.store.load_all() == ([], [])


async def test_an_image_that_cannot_be_pinned_fails_the_create_naming_it(sockets: Path) -> None:
    """The guest pulls only digest-pinned images: a tag containerd cannot resolve for
    the shim (here: no containerd at the shim's -address) fails before any VM."""
    async with running(sockets, unreachable_agent(sockets)) as daemon:
        await daemon.register("pod1", grpc_address=str(sockets / "gone.sock"))
        bundle = daemon.bundle("pod1", {"io.kubernetes.cri.image-name": "reg.example/app:1"})
        request = shim_pb2.CreateTaskRequest(
            id="pod1", bundle=str(bundle), options=daemon.options()
        )
        with pytest.raises(
            FailedPrecondition, match=r"image reg\.example/app:1: asking containerd"
        ):
            await daemon.task.Create(request)
        assert daemon.sink.envelopes == []
    assert daemon.store.load_all() == ([], [])
