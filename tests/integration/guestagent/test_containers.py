"""The agent's container lifecycle with a real runtime, image pull and stdio (host level)."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

import ttrpc
from api.kata import agent_pb2, oci_linux_pb2
from tests.integration.guestagent import requests as rq
from tests.integration.guestagent.conftest import AGENT_SERVICE, AgentProcess, Pushed

# Replies are typed Message by the stub; the tests read their fields.
Agent = tuple[Any, AgentProcess]


async def read_all(stub: Any, cid: str, exec_id: str = "", stderr: bool = False) -> bytes:
    """ReadStdout/ReadStderr until the empty answer that means end of stream."""
    call = stub.ReadStderr if stderr else stub.ReadStdout
    data = b""
    while True:
        reply = await call(agent_pb2.ReadStreamRequest(container_id=cid, exec_id=exec_id, len=7))
        assert len(reply.data) <= 7
        if not reply.data:
            return data
        data += reply.data


async def sandbox(stub: Any) -> None:
    await stub.CreateSandbox(
        agent_pb2.CreateSandboxRequest(hostname="pod-host", dns=["nameserver 10.0.0.10"],
                                       sandbox_id="sandbox1")
    )  # fmt: skip
    await stub.CreateContainer(rq.create_pause("pause"))
    await stub.StartContainer(agent_pb2.StartContainerRequest(container_id="pause"))


async def wait(stub: Any, cid: str, exec_id: str = "") -> int:
    reply = await stub.WaitProcess(agent_pb2.WaitProcessRequest(container_id=cid, exec_id=exec_id))
    return int(reply.status)


def processes_under(run_dir: Path) -> list[str]:
    """Command lines of processes whose cwd or root is under the agent's run dir."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            root = os.readlink(f"/proc/{pid}/root")
        except OSError:
            continue
        if root.startswith(str(run_dir)):
            found.append(Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"))
    return found


def mounts_under(run_dir: Path) -> list[str]:
    return [line for line in open("/proc/self/mountinfo") if str(run_dir) in line]


async def test_echo_output_and_exit_code(agent: Agent, pushed: Pushed) -> None:
    stub, proc = agent
    await sandbox(stub)
    await stub.CreateContainer(
        rq.create_container(
            "echo",
            ["sh", "-c", "echo hello from the container; echo oops >&2; exit 3"],
            pushed.reference,
        )
    )
    await stub.StartContainer(agent_pb2.StartContainerRequest(container_id="echo"))
    assert await read_all(stub, "echo") == b"hello from the container\n"
    assert await read_all(stub, "echo", stderr=True) == b"oops\n"
    assert await wait(stub, "echo") == 3
    await stub.RemoveContainer(agent_pb2.RemoveContainerRequest(container_id="echo"))
    await stub.DestroySandbox(agent_pb2.DestroySandboxRequest())
    assert processes_under(proc.run_dir) == []
    assert mounts_under(proc.run_dir) == []


async def test_signal_exec_stdin_and_removal(agent: Agent, pushed: Pushed) -> None:
    stub, proc = agent
    await sandbox(stub)
    # In the sandbox's pid namespace the container is not pid 1: SIGTERM kills it.
    await stub.CreateContainer(
        rq.create_container("long", ["sleep", "1000"], pushed.reference, sandbox_pidns=True)
    )
    await stub.StartContainer(agent_pb2.StartContainerRequest(container_id="long"))

    await stub.ExecProcess(
        agent_pb2.ExecProcessRequest(
            container_id="long", exec_id="e1", process=rq.process(["sh", "-c", "echo exec says hi"])
        )
    )
    assert await read_all(stub, "long", "e1") == b"exec says hi\n"
    assert await read_all(stub, "long", "e1", stderr=True) == b""
    assert await wait(stub, "long", "e1") == 0
    with pytest.raises(ttrpc.NotFound):  # waited for and drained: forgotten (no fd leak)
        await read_all(stub, "long", "e1")
    # ... but its exit code stays: a restarted host daemon replays the Wait it had pending.
    assert await wait(stub, "long", "e1") == 0

    await stub.ExecProcess(
        agent_pb2.ExecProcessRequest(
            container_id="long", exec_id="cat", process=rq.process(["cat"])
        )
    )
    written = await stub.WriteStdin(
        agent_pb2.WriteStreamRequest(container_id="long", exec_id="cat", data=b"to cat and back\n")
    )
    assert written.len == 16
    await stub.CloseStdin(agent_pb2.CloseStdinRequest(container_id="long", exec_id="cat"))
    assert await read_all(stub, "long", "cat") == b"to cat and back\n"
    assert await wait(stub, "long", "cat") == 0

    # A signal that kills an exec'd process: 128+9.
    await stub.ExecProcess(
        agent_pb2.ExecProcessRequest(
            container_id="long", exec_id="s", process=rq.process(["sleep", "1000"])
        )
    )
    await stub.SignalProcess(
        agent_pb2.SignalProcessRequest(container_id="long", exec_id="s", signal=9)
    )
    assert await wait(stub, "long", "s") == 128 + 9

    stats = await stub.StatsContainer(agent_pb2.StatsContainerRequest(container_id="long"))
    assert stats.cgroup_stats.memory_stats.usage.usage > 0
    assert stats.cgroup_stats.pids_stats.current >= 1

    limit = 48 << 20
    await stub.UpdateContainer(
        agent_pb2.UpdateContainerRequest(
            container_id="long", resources=oci_linux_pb2.LinuxResources(
                Memory=oci_linux_pb2.LinuxMemory(Limit=limit, Swap=limit)
            ),
        )
    )  # fmt: skip
    stats = await stub.StatsContainer(agent_pb2.StatsContainerRequest(container_id="long"))
    assert stats.cgroup_stats.memory_stats.usage.limit == limit

    await stub.PauseContainer(agent_pb2.PauseContainerRequest(container_id="long"))
    await stub.ResumeContainer(agent_pb2.ResumeContainerRequest(container_id="long"))
    await stub.SignalProcess(agent_pb2.SignalProcessRequest(container_id="long", signal=15))
    assert await wait(stub, "long") == 128 + 15
    await stub.RemoveContainer(agent_pb2.RemoveContainerRequest(container_id="long"))
    with pytest.raises(ttrpc.NotFound):
        await wait(stub, "long")
    await stub.DestroySandbox(agent_pb2.DestroySandboxRequest())
    assert processes_under(proc.run_dir) == []
    assert mounts_under(proc.run_dir) == []
    details = await stub.GetGuestDetails(agent_pb2.GuestDetailsRequest())
    facts = details.agent_details.extra_features
    assert "contrast.mounts=0" in facts
    assert "contrast.children=0" in facts


async def test_shared_pid_namespace_init_exit_ends_its_other_processes(
    agent: Agent, pushed: Pushed
) -> None:
    """A container in the pod's pid namespace whose init started a daemon: the init's
    SIGKILL ends the daemon too (as runc's shim does), so the output the daemon held
    open reaches its end. Before, it stayed open and containerd 2.x, which reads it to
    the end before deleting the task, waited forever (critest's web server pod)."""
    stub, proc = agent
    await sandbox(stub)
    script = "sleep 1000 & echo daemon started; wait"
    await stub.CreateContainer(
        rq.create_container("web", ["sh", "-c", script], pushed.reference, sandbox_pidns=True)
    )
    await stub.StartContainer(agent_pb2.StartContainerRequest(container_id="web"))
    first = await stub.ReadStdout(agent_pb2.ReadStreamRequest(container_id="web", len=64))
    assert first.data == b"daemon started\n"
    await stub.SignalProcess(agent_pb2.SignalProcessRequest(container_id="web", signal=9))
    assert await wait(stub, "web") == 128 + 9
    # A bound only so that the old hang fails instead of blocking the suite.
    assert await asyncio.wait_for(read_all(stub, "web"), 60) == b""
    assert [c for c in processes_under(proc.run_dir) if "sleep" in c] == []
    await stub.RemoveContainer(agent_pb2.RemoveContainerRequest(container_id="web"))
    await stub.DestroySandbox(agent_pb2.DestroySandboxRequest())
    assert processes_under(proc.run_dir) == []


async def test_terminal_process(agent: Agent, pushed: Pushed) -> None:
    stub, _ = agent
    await sandbox(stub)
    await stub.CreateContainer(
        rq.create_container("tty", ["sh", "-c", "read line; echo got $line; stty size"],
                            pushed.reference, terminal=True)
    )  # fmt: skip
    await stub.TtyWinResize(agent_pb2.TtyWinResizeRequest(container_id="tty", row=33, column=77))
    await stub.StartContainer(agent_pb2.StartContainerRequest(container_id="tty"))
    await stub.WriteStdin(agent_pb2.WriteStreamRequest(container_id="tty", data=b"typed\n"))
    output = await read_all(stub, "tty")
    assert b"got typed\r\n" in output
    assert b"33 77" in output
    assert await read_all(stub, "tty", stderr=True) == b""  # one stream with a terminal
    assert await wait(stub, "tty") == 0
    await stub.DestroySandbox(agent_pb2.DestroySandboxRequest())


async def test_oom_kill_is_reported(agent: Agent, pushed: Pushed) -> None:
    stub, _ = agent
    await sandbox(stub)
    oom = asyncio.ensure_future(stub.GetOOMEvent(agent_pb2.GetOOMEventRequest()))
    # Fill a tmpfs-backed /dev/shm? No: memory the process itself holds (sh's string).
    hog = "x=a; while true; do x=$x$x; done"
    await stub.CreateContainer(
        rq.create_container("hog", ["sh", "-c", hog], pushed.reference, memory_limit=16 << 20)
    )
    await stub.StartContainer(agent_pb2.StartContainerRequest(container_id="hog"))
    assert await wait(stub, "hog") == 128 + 9
    event = await asyncio.wait_for(oom, 10)
    assert event.container_id == "hog"
    await stub.DestroySandbox(agent_pb2.DestroySandboxRequest())


async def test_sandbox_files_reach_the_container(agent: Agent, pushed: Pushed) -> None:
    stub, _ = agent
    with pytest.raises(ttrpc.InvalidArgument, match="DNS line"):
        await stub.CreateSandbox(agent_pb2.CreateSandboxRequest(hostname="h", dns=["rm -rf /"]))
    await sandbox(stub)
    await stub.CreateContainer(
        rq.create_container(
            "files", ["sh", "-c", "cat /etc/resolv.conf; hostname; ls /var/run/secrets"],
            pushed.reference,
        )
    )  # fmt: skip
    await stub.StartContainer(agent_pb2.StartContainerRequest(container_id="files"))
    out = await read_all(stub, "files")
    # The guest's resolv.conf, the pause container's uts namespace (hostname from the
    # pause spec), and no host volume (its source does not exist in the guest).
    assert out == b"nameserver 10.0.0.10\npod-host\n"
    assert b"No such file" in await read_all(stub, "files", stderr=True)
    assert await wait(stub, "files") == 1
    await stub.DestroySandbox(agent_pb2.DestroySandboxRequest())


async def test_copied_file_is_mounted(agent: Agent, pushed: Pushed) -> None:
    stub, _ = agent
    shared = Path("/run/kata-containers/shared/containers")
    token_dir = shared / "copytest-token"
    try:
        await stub.CopyFile(
            agent_pb2.CopyFileRequest(
                path=str(token_dir / "token"), file_size=9, file_mode=0o100644, dir_mode=0o755,
                data=b"secret-1\n",
            )
        )  # fmt: skip
        await sandbox(stub)
        request = rq.create_container("tok", ["cat", "/var/run/secrets/token"], pushed.reference)
        request.OCI.Mounts.add(destination="/var/run/secrets", type="bind",
                               source=str(token_dir), options=["rbind", "ro"])  # fmt: skip
        await stub.CreateContainer(request)
        await stub.StartContainer(agent_pb2.StartContainerRequest(container_id="tok"))
        assert await read_all(stub, "tok") == b"secret-1\n"
        assert await wait(stub, "tok") == 0
        await stub.DestroySandbox(agent_pb2.DestroySandboxRequest())
    finally:
        shutil.rmtree(token_dir, ignore_errors=True)


def with_volume(
    request: agent_pb2.CreateContainerRequest, driver: str, point: str
) -> agent_pb2.CreateContainerRequest:
    request.storages.add(driver=driver, source=driver, fstype="tmpfs", mount_point=point,
                         options=["mode=0777"] if driver == "local" else ["size=1m"])  # fmt: skip
    request.OCI.Mounts.add(destination="/cache", type="bind", source=point,
                           options=["rbind", "rw"])  # fmt: skip
    return request


@pytest.mark.parametrize("driver", ["ephemeral", "local"])
async def test_empty_dir_volume_shared_and_removed(
    agent: Agent, pushed: Pushed, driver: str
) -> None:
    stub, _ = agent
    point = f"/run/kata-containers/sandbox/{driver}/cache"
    await sandbox(stub)
    writer = rq.create_container("w", ["sh", "-c", "echo shared > /cache/f"], pushed.reference)
    await stub.CreateContainer(with_volume(writer, driver, point))
    await stub.StartContainer(agent_pb2.StartContainerRequest(container_id="w"))
    assert await wait(stub, "w") == 0
    reader = rq.create_container("r", ["sh", "-c", "cat /cache/f; df /cache"], pushed.reference)
    await stub.CreateContainer(with_volume(reader, driver, point))
    await stub.StartContainer(agent_pb2.StartContainerRequest(container_id="r"))
    out = await read_all(stub, "r")
    assert out.startswith(b"shared\n")
    assert (b"tmpfs" in out) == (driver == "ephemeral")
    assert await wait(stub, "r") == 0
    await stub.DestroySandbox(agent_pb2.DestroySandboxRequest())
    assert not Path(point).exists()
    assert point not in Path("/proc/self/mountinfo").read_text()

    bad = with_volume(rq.create_container("b", ["true"], pushed.reference), driver, "/etc/x")
    await sandbox(stub)
    with pytest.raises(ttrpc.InvalidArgument, match="is not under"):
        await stub.CreateContainer(bad)
    await stub.DestroySandbox(agent_pb2.DestroySandboxRequest())


async def test_a_departed_hosts_waiting_calls_take_nothing(agent: Agent, pushed: Pushed) -> None:
    # A daemon SIGKILLed with a ReadStdout and a GetOOMEvent pending: the next daemon's
    # calls get the output and the OOM event, not the dead connection's orphans.
    stub, proc = agent
    await sandbox(stub)
    await stub.CreateContainer(
        rq.create_container("hog", ["sleep", "1000"], pushed.reference, memory_limit=16 << 20)
    )
    await stub.StartContainer(agent_pb2.StartContainerRequest(container_id="hog"))
    script = "echo ready; read go; echo more; x=a; while true; do x=$x$x; done"
    await stub.ExecProcess(agent_pb2.ExecProcessRequest(
        container_id="hog", exec_id="talk", process=rq.process(["sh", "-c", script])))  # fmt: skip
    first = await ttrpc.Client.connect_unix(str(proc.socket))
    gone = ttrpc.ServiceStub(first, AGENT_SERVICE)
    got = b""
    while got != b"ready\n":
        request = agent_pb2.ReadStreamRequest(container_id="hog", exec_id="talk", len=64)
        got += (await gone.ReadStdout(request)).data  # type: ignore[attr-defined]
    pending = [
        asyncio.ensure_future(gone.ReadStdout(request)),
        asyncio.ensure_future(gone.GetOOMEvent(agent_pb2.GetOOMEventRequest())),
    ]
    await asyncio.sleep(0.5)  # both reach the agent and wait there
    await first.close()
    await asyncio.gather(*pending, return_exceptions=True)

    oom = asyncio.ensure_future(stub.GetOOMEvent(agent_pb2.GetOOMEventRequest()))
    await stub.WriteStdin(
        agent_pb2.WriteStreamRequest(container_id="hog", exec_id="talk", data=b"go\n")
    )
    assert await read_all(stub, "hog", "talk") == b"more\n"
    assert await wait(stub, "hog", "talk") == 128 + 9
    event = await asyncio.wait_for(oom, 30)
    assert event.container_id == "hog"
    await stub.DestroySandbox(agent_pb2.DestroySandboxRequest())
