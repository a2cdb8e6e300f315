"""A workload container exits inside a running pod-VM while no node daemon runs (real
containerd 1.6, TCG): the daemon is SIGKILLed right after the container started, and
its restart is held back (the test holds ``daemon.lock``) until the container's
``sleep 5`` is over. The next daemon reattaches, learns the real exit status from the
guest agent and publishes the TaskExit containerd never got, after the container's
create and start; ``ctr run``'s Wait, replayed by the relay, ends with status 3 (ctr's
exit code); the pod's sandbox task keeps running in the same VM."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit.containerd import Containerd
from devkit.forward import Forward
from devkit.registry import Registry
from devkit.topology import PEER_IP, pod_topology
from guest.initdata import codec, document
from tests.conftest import require_programs
from tests.integration.network.test_vm_workload import REGISTRY_PORT, registry
from tests.integration.shim.node import Node, relay_pid
from tests.integration.shim.test_containerd import IMAGE, ctr
from tests.integration.shim.test_ctr_pod_vm import task_line, vm_node
from tests.integration.shim.test_daemon_crash import wait_status
from tests.integration.shim.test_daemon_restart import wait_gone
from tests.integration.shim.test_pod_vm import NETWORK_POLICY, qemus_under
from tests.integration.vm.conftest import guest_image

pytestmark = pytest.mark.vm
__all__ = ["guest_image", "registry", "vm_node"]

RUNTIME = "io.containerd.contrast-cc.v2"
# Longer than the container's `sleep 5` after its start: it exits while no daemon runs.
DAEMON_DOWN_SECONDS = 9.0


@contextlib.contextmanager
def daemon_held_down(node: Node) -> Iterator[int]:
    """SIGKILL the daemon and keep the relay from starting another one while inside
    (the relay starts none while somebody holds ``daemon.lock``); yields the dead pid.
    The relay is stopped for the moment between the kill and our lock, so that it
    cannot start a daemon in between."""
    relay = relay_pid(node)
    daemon = node.daemon_pid()
    assert relay is not None
    assert daemon is not None
    fd = os.open(node.run_dir / "daemon.lock", os.O_RDWR | os.O_CLOEXEC)
    os.kill(relay, signal.SIGSTOP)
    try:
        os.kill(daemon, signal.SIGKILL)
        wait_gone(daemon)
        fcntl.flock(fd, fcntl.LOCK_EX)
    finally:
        os.kill(relay, signal.SIGCONT)
    try:
        yield daemon
    finally:
        os.close(fd)  # releases the lock: the relay starts the next daemon


def run_pod(containerd: Containerd, config: Path, netns: Path, initdata: str) -> None:
    run = ctr(
        containerd, "run", "-d", "--snapshotter", "native",
        "--runtime", RUNTIME, "--runtime-config-path", str(config),
        "--with-ns", f"network:{netns}",
        "--annotation", "io.kubernetes.cri.container-type=sandbox",
        "--annotation", "io.kubernetes.cri.sandbox-id=pod",
        "--annotation", f"io.katacontainers.config.hypervisor.cc_init_data={initdata}",
        IMAGE, "pod", "/pause",
        timeout=400,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr


def workload(containerd: Containerd, config: Path, image: str) -> subprocess.Popen[str]:
    """``ctr run`` (in the foreground: it waits for the exit) of a container in the pod."""
    return subprocess.Popen(
        ["ctr", "-a", str(containerd.socket), "run", "--snapshotter", "native",
         "--runtime", RUNTIME, "--runtime-config-path", str(config),
         "--annotation", "io.kubernetes.cri.container-type=container",
         "--annotation", "io.kubernetes.cri.sandbox-id=pod",
         "--annotation", f"io.kubernetes.cri.image-name={image}",
         IMAGE, "app", "/bin/sh", "-c", "sleep 5; exit 3"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


TASK_EVENT = re.compile(r" (/tasks/\S+) (\{.*\})$")


def app_topics(events: str) -> list[tuple[str, str]]:
    """(topic, event JSON) of the app container's task events in ``ctr events`` output
    (``<time> <namespace> <topic> <json>`` per line)."""
    found = []
    for line in events.splitlines():
        match = TASK_EVENT.search(line)
        if match and '"container_id":"app"' in match[2]:
            found.append((match[1], match[2]))
    return found


def test_a_container_exiting_while_the_daemon_is_down_reports_its_status(
    vm_node: tuple[Node, Containerd, Path], registry: tuple[Registry, str], tmp_path: Path
) -> None:
    require_programs("ip", "tc")
    node, containerd, config = vm_node
    reg, digest = registry
    host = f"{PEER_IP}:{REGISTRY_PORT}"
    data = {
        document.POLICY_NAME: NETWORK_POLICY,
        "imagepull.toml": f'[registries."{host}"]\ninsecure = true\n',
    }
    initdata = codec.encode_annotation(document.create(data, "sha384").raw)
    port = int(reg.host.rsplit(":", 1)[1])
    events_out = tmp_path / "events.txt"
    app: subprocess.Popen[str] | None = None
    with (
        pod_topology() as topo,
        Forward(topo.path(topo.peer), (PEER_IP, REGISTRY_PORT), ("127.0.0.1", port)),
        open(events_out, "w") as sink,
    ):
        watcher = subprocess.Popen(
            ["ctr", "-a", str(containerd.socket), "events"],
            stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            run_pod(containerd, config, topo.path(topo.pod), initdata)
            [vm] = qemus_under(node.root)
            app = workload(containerd, config, f"{host}/test/busybox@{digest}")
            running = wait_status(containerd, "app", "RUNNING", seconds=600)
            assert running[2:3] == ["RUNNING"], node.daemon_log()[-3000:]

            with daemon_held_down(node) as first:
                time.sleep(DAEMON_DOWN_SECONDS)
                assert app.poll() is None  # ctr's Wait is held by the relay
            out, err = app.communicate(timeout=400)
            assert app.returncode == 3, err + node.daemon_log()[-3000:]
            assert out == ""  # the container prints nothing
            assert node.daemon_pid() not in (None, first)
            assert "app: lost the process" not in node.daemon_log()
            assert "pod/app init exited with 3" in node.daemon_log()  # told by the guest

            # ctr run deletes the task after its Wait; the pod's sandbox task runs on.
            assert task_line(containerd, "app") == []
            assert task_line(containerd, "pod")[2:3] == ["RUNNING"]
            assert qemus_under(node.root) == [vm]  # the same pod-VM
            time.sleep(1)  # let `ctr events` print what containerd has forwarded
            printed = events_out.read_text()
            topics = app_topics(printed)
            assert [topic for topic, _ in topics] == [
                "/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"
            ], printed  # fmt: skip
            assert '"exit_status":3' in topics[2][1].replace(" ", ""), printed
            assert '"exit_status":3' in topics[3][1].replace(" ", ""), printed

            assert ctr(containerd, "containers", "rm", "app").returncode == 0
            killed = ctr(containerd, "tasks", "kill", "-s", "KILL", "pod")
            assert killed.returncode == 0, killed.stderr
            assert wait_status(containerd, "pod", "STOPPED")[2:3] == ["STOPPED"]
            assert ctr(containerd, "tasks", "rm", "pod").returncode == 0
            assert ctr(containerd, "containers", "rm", "pod").returncode == 0
            assert qemus_under(node.root) == []
            assert list(node.state_dir.rglob("*.json")) == []
        finally:
            if app is not None and app.poll() is None:
                app.kill()
                app.wait()
            watcher.kill()
            watcher.wait()
            for leftover in qemus_under(node.root):  # only when an assertion failed
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(leftover.split()[0]), signal.SIGKILL)
