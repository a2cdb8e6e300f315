"""Issue 14's must-show: the node daemon keeps creating containers after an exec with a
terminal and stdin, and one daemon runs many pods in a row.

Before the fix, an exec with a terminal whose stdin containerd still held open when the
exec was deleted left the daemon's event loop watching a closed file descriptor
(``agent.stdio.fifo``): the next file opened under that number (gRPC's wake-up socket,
for the image lookup every workload container makes) was never polled again, and every
later StartContainer hung until CRI's deadline.

- ``test_new_container_after_a_terminal_exec``: a pod, a workload container, a terminal
  exec with stdin (``ctr task exec -t``, containerd's Task API as its CRI calls it), then
  a new container named by its tag: it starts and runs.
- ``test_pods_in_a_row``: ``CONTRAST_CHURN_PODS`` pods (12 by default; the issue's 60 with
  ``CONTRAST_CHURN_PODS=60``) one after the other through CRI in one daemon, each with a
  workload container, an exec without a terminal (ExecSync) and one with a terminal and
  stdin; all complete, the same daemon served them with no more files open after the
  last pod than after the first, and nothing is left afterwards.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit.cri import LogLine, PodSpec, read_log
from devkit.crinode import CriNode, cri_node
from guest.image.manifest import GuestImage
from guest.initdata import codec, document
from tests.conftest import require_programs
from tests.e2e.ttyexec import tty_exec
from tests.integration.vm.conftest import ALLOW_ALL, guest_image

pytestmark = pytest.mark.vm
__all__ = ["guest_image"]

INITDATA = "io.katacontainers.config.hypervisor.cc_init_data"
NAMESPACE = "k8s.io"  # containerd's CRI namespace
POD_TIMEOUT = 900.0  # a VM boot under TCG on a loaded machine, plus the guest's pull
PODS = int(os.environ.get("CONTRAST_CHURN_PODS", "12"))
FD_SLACK = 4
# Typed into the terminal: the output line is only there if the shell ran it.
TTY_SCRIPT = b"echo tty-$((6*7)); exit 5\n"


@pytest.fixture(scope="module")
def node(guest_image: GuestImage) -> Iterator[CriNode]:
    require_programs("containerd", "ctr", "ip", "nsenter", "docker-registry", "busybox", "pgrep")
    with cri_node(guest_image) as crinode:
        yield crinode


def wait_for_log(path: Path, line: str, timeout: float = POD_TIMEOUT) -> list[LogLine]:
    deadline = time.monotonic() + timeout
    while True:
        lines = read_log(path) if path.exists() else []
        if any(entry.text == line for entry in lines):
            return lines
        if time.monotonic() > deadline:
            raise AssertionError(f"{line!r} not in {path} after {timeout:.0f} s: {lines}")
        time.sleep(0.5)


def allow_all_pod(node: CriNode, name: str) -> PodSpec:
    data = {document.POLICY_NAME: ALLOW_ALL, "imagepull.toml": node.puller_settings()}
    initdata = codec.encode_annotation(document.create(data, "sha384").raw)
    return node.pod(name, {INITDATA: initdata})


def start_workload(node: CriNode, pod_id: str, pod: PodSpec, name: str, command: str) -> str:
    """A container of the busybox image named by its tag (the daemon looks its digest
    up in containerd), started; its id."""
    cid = node.cri.create_container(
        pod_id, pod, name, image=node.image_tag, command=["sh", "-c", command],
        timeout=POD_TIMEOUT,
    )  # fmt: skip
    node.cri.start_container(cid, timeout=POD_TIMEOUT)
    return cid


def terminal_exec(node: CriNode, container_id: str, exec_id: str) -> None:
    result = tty_exec(
        node.containerd.socket, NAMESPACE, container_id, exec_id, TTY_SCRIPT,
        fifo_dir=node.node.root / "ctr-fifo",
    )  # fmt: skip
    assert b"tty-42" in result.output, result.output
    assert result.exit_code == 5, result


def show_daemon_log(node: CriNode) -> None:
    print(node.node.daemon_log()[-8000:])  # pytest shows it with the failure


def test_new_container_after_a_terminal_exec(node: CriNode) -> None:
    cri = node.cri
    assert cri.pull_image(node.image_tag)
    pod = allow_all_pod(node, "tty")
    pod_id = cri.run_pod_spec(pod, node.handler, timeout=POD_TIMEOUT).pod_sandbox_id
    try:
        first = start_workload(node, pod_id, pod, "first", "echo first; exec sleep 3600")
        wait_for_log(Path(pod.log_directory) / "first.log", "first")
        terminal_exec(node, first, "tty-1")
        # Before the fix this StartContainer hung (no answer until CRI's deadline).
        second = start_workload(node, pod_id, pod, "second", "echo second")
        assert cri.wait_exited(second, timeout=POD_TIMEOUT).exit_code == 0
        assert read_log(Path(pod.log_directory) / "second.log") == [LogLine("stdout", "second")]
    except BaseException:
        show_daemon_log(node)
        raise
    finally:
        cri.stop_pod(pod_id)
        cri.remove_pod(pod_id)
    assert cri.pods() == []
    assert node.leftovers() == []


def one_pod(node: CriNode, n: int) -> None:
    cri = node.cri
    pod = allow_all_pod(node, f"churn-{n}")
    pod_id = cri.run_pod_spec(pod, node.handler, timeout=POD_TIMEOUT).pod_sandbox_id
    try:
        workload = start_workload(
            node, pod_id, pod, "workload", f"echo workload {n}; exec sleep 3600"
        )
        wait_for_log(Path(pod.log_directory) / "workload.log", f"workload {n}")
        plain = cri.exec_sync(workload, ["sh", "-c", f"echo exec {n}; exit 3"])
        assert (plain.stdout, plain.stderr, plain.exit_code) == (f"exec {n}\n".encode(), b"", 3)
        terminal_exec(node, workload, f"tty-{n}")
        again = cri.exec_sync(workload, ["sh", "-c", "echo after the terminal"])
        assert (again.stdout, again.exit_code) == (b"after the terminal\n", 0)
    finally:
        cri.stop_pod(pod_id)
        cri.remove_pod(pod_id)


def test_pods_in_a_row(node: CriNode) -> None:
    cri = node.cri
    assert cri.pull_image(node.image_tag)
    daemons: set[int | None] = set()
    fds: list[int] = []  # the daemon's open files after each pod
    took: list[float] = []
    try:
        for n in range(PODS):
            started = time.monotonic()
            one_pod(node, n)
            took.append(time.monotonic() - started)
            daemons.add(pid := node.node.daemon_pid())
            fds.append(len(os.listdir(f"/proc/{pid}/fd")))
            print(f"pod {n}: {took[-1]:.1f} s, daemon files {fds[-1]}", flush=True)
    except BaseException:
        show_daemon_log(node)
        raise
    finally:
        if took:
            print(f"{len(took)} of {PODS} pods in {sum(took):.0f} s, "
                  f"{sum(took) / len(took):.1f} s per pod")  # fmt: skip
    assert len(daemons) == 1 and None not in daemons, daemons  # one daemon served them all
    # Nothing per pod stays open (a FIFO, a guest connection, a socket): a leak of one
    # file per pod would show as PODS - 1 here. The slack is for what a pod's end may
    # still be closing.
    assert fds[-1] <= fds[0] + FD_SLACK, fds
    assert cri.pods() == []
    assert cri.containers() == []
    assert node.leftovers() == []
