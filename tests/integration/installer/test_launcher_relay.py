"""The DaemonSet's relay, as the real shim launcher starts it: a "daemon container" is a
node daemon in a mount namespace of its own (``unshare --mount``, the shim installed at
``/usr/local/bin`` there only); containerd's role is played by this test, which runs
``packaging/node/shim-launcher.sh`` on the host. The relay the shim starts lives in the
daemon's mount namespace but not in its process tree: after the daemon is SIGKILLed
(as the kubelet does when it replaces the pod), the relay keeps containerd's
connection, starts no daemon itself, lets containerd's ``delete`` run the shim in its
namespace meanwhile, serves the next daemon (a new mount namespace) through the shared
run directory after the old image's files are gone (each container binds its own copy
of our packages; the relay imports nothing once serving) and after its own mount of the
run directory is detached (containerd removing the old container's root deletes the
mount points in it, which detaches their mounts in the relay's namespace as well), and
leaves once no containerd connection and no sandbox remain."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from api.containerd.task.v2 import shim_pb2
from shim.task import SERVICE
from tests.conftest import require_programs
from tests.integration.shim.node import (
    REPO,
    SHIM,
    Node,
    node_env,
    relay_pid,
    stop_daemon,
    stop_relay,
)
from ttrpc import Client, NotFound, ServiceStub

LAUNCHER = REPO / "packaging/node/shim-launcher.sh"
# The daemon container: the shim at the path the launcher runs, and the image's Python
# packages (a copy of ours, bound over the repository's), in this namespace only.
CONTAINER = (
    "mount -t tmpfs contrast-test /usr/local/bin && "
    'ln -s "$0" /usr/local/bin/containerd-shim-contrast-cc-v2 && '
    'for package in "$2"/*; do mount --bind "$package" "$3/${package##*/}" || exit 1; done && '
    'exec "$1" -m agent.daemon'
)
PACKAGES = ("agent", "api", "devkit", "guest", "installer", "shim", "ttrpc")


def image_copy(node: Node, name: str) -> Path:
    """The node image's files: our packages, copied."""
    image = node.root / name
    for package in PACKAGES:
        shutil.copytree(
            REPO / package, image / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    return image


def answers(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


@contextmanager
def daemon_container(node: Node, image: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", CONTAINER,
         str(SHIM), sys.executable, str(image), str(REPO)],
        cwd=REPO, env=node.env, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (node.daemon_pid() == proc.pid and answers(node.socket)):
            assert proc.poll() is None, "the daemon container's daemon exited"
            assert time.monotonic() < deadline, "the daemon did not come up"
            time.sleep(0.05)
        yield proc
    finally:
        proc.kill()
        proc.wait()


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, timeout=30, stdin=subprocess.DEVNULL)


@contextmanager
def detachable_run_dir(node: Node) -> Iterator[Callable[[], None]]:
    """The node's run directory as a bind mount of a directory of the host (``store``),
    and what containerd's removal of a container does to that container's mount of it.

    In a DaemonSet the container's ``/run/contrast`` is a mount on a directory of the
    container's root; containerd deletes that root when it removes the container, and
    deleting a mount point detaches its mounts in every namespace (Linux >= 3.18), the
    relay's among them. Here the relay's namespace and the host share the paths, so the
    mount point deleted is the host's: the function yielded unmounts and deletes it,
    then binds the store at a new directory of that name. In the relay's namespace the
    result is the DaemonSet's: its mount of the store is detached and the path leads to
    a directory without it."""
    store = node.root / "run-store"
    store.mkdir()
    node.run_dir.mkdir()
    mount("--bind", str(store), str(node.run_dir))

    def remove_mount_point() -> None:
        before = Path(f"/proc/{relay_pid(node)}/mountinfo").read_text()
        assert f" {node.run_dir} " in before
        subprocess.run(["umount", str(node.run_dir)], check=True, timeout=30)
        node.run_dir.rmdir()
        node.run_dir.mkdir()
        mount("--bind", str(store), str(node.run_dir))
        # The relay's namespace has no mount there any more: the path leads elsewhere.
        assert f" {node.run_dir} " not in Path(f"/proc/{relay_pid(node)}/mountinfo").read_text()

    try:
        yield remove_mount_point
    finally:
        stop_relay(node)  # while its pid file is reachable
        stop_daemon(node)
        subprocess.run(["umount", str(node.run_dir)], check=False, timeout=30)


def mount_ns(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/ns/mnt")


async def state_of_nothing(client: Client) -> str:
    with pytest.raises(NotFound) as raised:
        await ServiceStub(client, SERVICE).State(shim_pb2.StateRequest(id="nope"), timeout=60)
    return str(raised.value)


def test_the_relay_outlives_the_daemon_container_and_leaves_when_idle() -> None:
    require_programs("unshare", "nsenter", "mount")
    if os.geteuid() != 0:
        pytest.skip("needs root (mount namespaces)")
    with node_env(backend="local-agent", agent_socket=Path("/nonexistent/agent.sock")) as node:
        # containerd's own service variables, as containerd under systemd passes them on.
        env = {
            **node.env,
            "PYTHONVERBOSE": "1",
            "NOTIFY_SOCKET": str(node.root / "notify"),
            "JOURNAL_STREAM": "8:12345",
        }
        with detachable_run_dir(node) as remove_mount_point:
            asyncio.run(scenario(node, env, remove_mount_point))


async def launch(
    node: Node, env: dict[str, str], task: str, action: str = "start"
) -> subprocess.CompletedProcess[bytes]:
    bundle = node.root / task
    bundle.mkdir(exist_ok=True)
    started = await asyncio.to_thread(
        subprocess.run,
        ["sh", str(LAUNCHER), "-namespace", "default", "-address",
         str(node.root / "containerd.sock"), "-publish-binary", "/usr/bin/containerd",
         "-id", task, "-bundle", str(bundle), action],
        cwd=bundle, env=env, capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr.decode(errors="replace")[-3000:]
    return started


async def scenario(node: Node, env: dict[str, str], remove_mount_point: Callable[[], None]) -> None:
    with daemon_container(node, image_copy(node, "image1")) as first:
        started = await launch(node, env, "c1")
        address = started.stdout.decode()
        assert address == f"unix://{node.run_dir}/ns/default.sock"
        relay = relay_pid(node)
        assert relay is not None
        # In the daemon container's mount namespace, not in its process tree or cgroup:
        # in the cgroup of whoever ran the launcher (containerd).
        assert mount_ns(relay) == mount_ns(first.pid) != mount_ns(os.getpid())
        assert Path(f"/proc/{relay}/cgroup").read_text() == Path("/proc/self/cgroup").read_text()
        old_ns = mount_ns(relay)
        client = await Client.connect_unix(node.run_dir / "ns" / "default.sock")
        try:
            assert "in namespace default" in await state_of_nothing(client)
            first.send_signal(signal.SIGKILL)
            await asyncio.to_thread(first.wait)
            # The pod is gone; the relay holds containerd's connection, starts no daemon.
            await asyncio.sleep(3)
            assert not answers(node.socket)
            assert not (node.run_dir / "daemon.log").exists()  # never spawned one
            assert relay_pid(node) == relay
            # containerd's delete meanwhile runs in the relay's namespace (the daemon's
            # is gone with it): the shim releases the task on its own.
            deleted = await launch(node, env, "c1", "delete")
            assert shim_pb2.DeleteResponse.FromString(deleted.stdout).exit_status == 137
            # The old image's files go (containerd removes the container's snapshot, the
            # kubelet the image): the relay has all it needs in memory.
            assert f" {REPO}/agent " in Path(f"/proc/{relay}/mountinfo").read_text()
            shutil.rmtree(node.root / "image1")
            assert not any(Path(f"/proc/{relay}/root{REPO}/agent").iterdir())
            # ... and so does its root, with the mount points of its host directories.
            remove_mount_point()
            with daemon_container(node, image_copy(node, "image2")) as second:
                assert mount_ns(second.pid) != old_ns
                # A new daemon serves a namespace once it has a task there: the next
                # pod's start (the launcher now enters the new daemon's namespace) uses
                # the running relay, which then delivers the call it held.
                pending = asyncio.create_task(state_of_nothing(client))
                assert (await launch(node, env, "c2")).stdout.decode() == address
                assert "in namespace default" in await pending
                assert relay_pid(node) == relay
                assert mount_ns(relay) == old_ns
                await client.close()
                deadline = time.monotonic() + 60
                while Path(f"/proc/{relay}").exists():
                    assert time.monotonic() < deadline, "the relay did not leave when idle"
                    await asyncio.sleep(0.2)
                assert not (node.run_dir / "ns" / "default.sock").exists()
                assert not (node.run_dir / "relay.pid").exists()
        finally:
            await client.close()
    log = (node.run_dir / "relay.log").read_text(errors="replace")
    # The relay logged to its file (not to containerd's journal stream) ...
    ready = log.index(f"relaying {node.run_dir}/ns to ")  # READY
    assert "no containerd connection and no sandbox" in log[ready:]
    # ... and, once serving, imported nothing more from the image it started from.
    assert "import 'agent.relay.link'" in log[:ready]  # PYTHONVERBOSE reached the relay
    late = [line for line in log[ready:].splitlines() if line.startswith("import ")]
    assert late == []
