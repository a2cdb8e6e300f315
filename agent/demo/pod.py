"""Step 5: the pod through containerd's ``ctr`` into a pod-VM, and what it shows.

``ctr run`` streams the container's output while the pod runs; an ``exec`` outside the
policy is refused by the guest; SIGKILL ends the pod and ``--rm`` removes it.
"""

from __future__ import annotations

import contextlib
import queue
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from agent.demo.errors import DemoError
from devkit.containerd import Containerd

RUNTIME = "io.containerd.contrast-cc.v2"
IMAGE_NAME = "io.kubernetes.cri.image-name"
INITDATA = "io.katacontainers.config.hypervisor.cc_init_data"
CONTAINER = "contrast-demo"
GREETING = "hello from a confidential pod"
# What the workload prints: a greeting, the device-mapper identity of the guest's root
# file system (the initrd names it after the verity root hash) and the guest kernel's
# command line (root hash, initdata digest, platform). Then it waits to be killed.
SCRIPT = (
    f'echo "{GREETING}"; '
    'echo "guest root device: $(cat /sys/block/dm-0/dm/name) $(cat /sys/block/dm-0/dm/uuid)"; '
    'echo "guest kernel cmdline: $(cat /proc/cmdline)"; '
    "exec sleep 600"
)
ARGS = ["/bin/sh", "-c", SCRIPT]
DENIED_ARGS = ["/bin/cat", "/etc/hostname"]


def ctr(
    containerd: Containerd, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``ctr`` against the demo's containerd; the caller checks the exit code."""
    try:
        return subprocess.run(
            ["ctr", "-a", str(containerd.socket), *args],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
            check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired as err:
        raise DemoError(f"ctr {' '.join(args[:2])} timed out after {timeout}s") from err


def ctr_ok(containerd: Containerd, *args: str, timeout: float = 120) -> str:
    done = ctr(containerd, *args, timeout=timeout)
    if done.returncode != 0:
        raise DemoError(f"ctr {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


@dataclass(frozen=True)
class PodOutput:
    lines: tuple[str, ...]

    def value(self, prefix: str) -> str:
        for line in self.lines:
            if line.startswith(prefix):
                return line.removeprefix(prefix).strip()
        raise DemoError(f"the container printed no line {prefix!r}: {self.lines}")


class RunningPod:
    """``ctr run --rm`` in the background, its stdout lines collected by a thread."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name="ctr-run", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def read_until(self, prefix: str, timeout: float) -> PodOutput:
        """The lines up to and including the first starting with ``prefix``."""
        lines: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise DemoError(f"no {prefix!r} line from the pod within {timeout:.0f}s") from None
            if line is None:
                raise DemoError(f"ctr run ended (exit {self.proc.wait()}): {self._stderr()}")
            lines.append(line)
            if line.startswith(prefix):
                return PodOutput(tuple(lines))
            if time.monotonic() > deadline:
                raise DemoError(f"no {prefix!r} line from the pod within {timeout:.0f}s")

    def _stderr(self) -> str:
        assert self.proc.stderr is not None
        return self.proc.stderr.read().strip()

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)


@contextlib.contextmanager
def run_pod(
    containerd: Containerd,
    *,
    image: str,
    guest_image: str,
    runtime_config: Path,
    netns: Path,
    initdata: str,
) -> Iterator[RunningPod]:
    """``ctr run --rm`` of ``image`` with our runtime in the pod network ``netns``; the
    guest pulls ``guest_image`` (the same digest, at its pod-network address). The
    process is killed on the way out if it still runs."""
    proc = subprocess.Popen(
        ["ctr", "-a", str(containerd.socket), "run", "--rm", "--snapshotter", "native",
         "--runtime", RUNTIME, "--runtime-config-path", str(runtime_config),
         "--with-ns", f"network:{netns}",
         "--annotation", f"{IMAGE_NAME}={guest_image}",
         "--annotation", f"{INITDATA}={initdata}",
         image, CONTAINER, *ARGS],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        yield RunningPod(proc)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(DemoError):
                ctr(containerd, "tasks", "kill", "-s", "SIGKILL", CONTAINER, timeout=60)
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def denied_exec(containerd: Containerd) -> str:
    """``ctr tasks exec`` of a command the policy does not allow: ctr's error line.
    Raises DemoError when the exec was not refused by the policy."""
    done = ctr(containerd, "tasks", "exec", "--exec-id", "denied", CONTAINER, *DENIED_ARGS)
    message = done.stderr.strip()
    if done.returncode == 0 or "blocked by policy" not in message:
        raise DemoError(
            f"exec {DENIED_ARGS} was not refused by the policy (exit {done.returncode}): "
            f"{done.stdout.strip()} {message}"
        )
    return message


def stop(containerd: Containerd, pod: RunningPod) -> int:
    """SIGKILL the pod's task; ``ctr run --rm`` then removes it. Its exit status."""
    ctr_ok(containerd, "tasks", "kill", "-s", "SIGKILL", CONTAINER, timeout=60)
    try:
        status = pod.wait(180)
    except subprocess.TimeoutExpired as err:
        raise DemoError("ctr run did not end within 180s after SIGKILL") from err
    if CONTAINER in ctr_ok(containerd, "containers", "ls", "-q").split():
        raise DemoError(f"container {CONTAINER} still listed after ctr run --rm")
    return status
