"""Fixtures: a loopback registry with a busybox image, and the agent as a process.

The agent runs as its own process (``python -m guest.agent --listen``), as in the
guest: it becomes a child subreaper and reaps every child, which must not happen
inside pytest. On this host the runtime is runc (the host's cgroup layout is the
legacy one, which crun refuses); in the guest it is crun.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import ttrpc
from api.kata import agent_pb2
from devkit import ocibuild as ob
from devkit.registry import Registry, registry_settings_toml
from tests.conftest import require_programs
from tests.integration.guestagent.requests import ALLOW_ALL

ROOT = Path(__file__).resolve().parents[3]
AGENT_SERVICE = agent_pb2.DESCRIPTOR.services_by_name["AgentService"]
APPLETS = ("sh", "echo", "cat", "sleep", "true", "ls", "head", "dd", "mount", "kill", "ps")


def busybox_image() -> ob.Image:
    """A one-layer image: static busybox and its applet links, as a test workload."""
    busybox = Path(shutil.which("busybox") or "/bin/busybox").read_bytes()
    entries = [ob.directory("bin"), ob.file("bin/busybox", busybox, 0o755)]
    entries += [ob.symlink(f"bin/{name}", "busybox") for name in APPLETS]
    entries += [ob.directory(d) for d in ("etc", "proc", "sys", "dev", "tmp")]
    return ob.build_image([ob.Layer(ob.layer_tar(entries))])


@dataclass(frozen=True)
class Pushed:
    registry: Registry
    reference: str  # digest-pinned


@pytest.fixture(scope="module")
def pushed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pushed]:
    if os.geteuid() != 0:
        pytest.skip("the agent needs root (overlay mounts, namespaces)")
    require_programs("docker-registry", "runc", "busybox")
    with Registry(tmp_path_factory.mktemp("registry")) as reg:
        image = busybox_image()
        digest = reg.upload(image.blobs, image.manifest, "test/busybox", "v1")
        yield Pushed(reg, f"{reg.host}/test/busybox@{digest}")


@dataclass
class AgentProcess:
    process: subprocess.Popen[bytes]
    socket: Path
    run_dir: Path
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_agent(pushed: Pushed, policy: str, directory: Path) -> AgentProcess:
    (directory / "policy.rego").write_text(policy)
    (directory / "registries.toml").write_text(registry_settings_toml(pushed.registry))
    sock = directory / "agent.sock"
    log = directory / "agent.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "guest.agent", "--listen", str(sock), "--runtime", "runc",
             "--run-dir", str(directory / "run"), "--policy", str(directory / "policy.rego"),
             "--registry-config", str(directory / "registries.toml")],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    agent = AgentProcess(proc, sock, directory / "run", log)
    deadline = time.monotonic() + 30
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"the agent did not start:\n{agent.output()}")
        time.sleep(0.05)
    return agent


def stop_agent(agent: AgentProcess) -> None:
    agent.process.send_signal(signal.SIGTERM)
    try:
        agent.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        agent.process.kill()
        agent.process.wait()
        raise AssertionError(f"the agent did not stop on SIGTERM:\n{agent.output()}") from None


@pytest.fixture
def agent_dir() -> Iterator[Path]:
    # Short: unix socket paths (console sockets) are limited to 107 bytes.
    directory = Path(tempfile.mkdtemp(prefix="ga-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
async def agent(
    pushed: Pushed, agent_dir: Path
) -> AsyncIterator[tuple[ttrpc.ServiceStub, AgentProcess]]:
    proc = start_agent(pushed, ALLOW_ALL, agent_dir)
    client = await ttrpc.Client.connect_unix(str(proc.socket))
    try:
        yield ttrpc.ServiceStub(client, AGENT_SERVICE), proc
    finally:
        await client.close()
        stop_agent(proc)
