"""Step 5: the pod through containerd's CRI (the calls a kubelet makes) into a pod-VM.

RunPodSandbox boots the pod-VM on the pod network with the initdata annotation; PullImage,
CreateContainer and StartContainer run the digest-pinned workload (the guest pulls it
again itself); its output is read from the container's CRI log file; an ExecSync outside
the policy is refused by the guest; StopPodSandbox and RemovePodSandbox end it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc

from agent.demo.errors import DemoError
from devkit.command import run
from devkit.cri import Cri, PodSpec
from devkit.crilog import wait_for_line
from devkit.errors import DevkitError

INITDATA = "io.katacontainers.config.hypervisor.cc_init_data"
POD = "contrast-demo"
CONTAINER = "workload"
GREETING = "hello from a confidential pod"
# What the workload prints: a greeting, the device-mapper identity of the guest's root
# file system (the initrd names it after the verity root hash) and the guest kernel's
# command line (root hash, initdata digest, platform). Then it waits to be stopped.
SCRIPT = (
    f'echo "{GREETING}"; '
    'echo "guest root device: $(cat /sys/block/dm-0/dm/name) $(cat /sys/block/dm-0/dm/uuid)"; '
    'echo "guest kernel cmdline: $(cat /proc/cmdline)"; '
    "exec sleep 600"
)
ARGS = ["/bin/sh", "-c", SCRIPT]
DENIED_ARGS = ["/bin/cat", "/etc/hostname"]


@dataclass(frozen=True)
class PodOutput:
    lines: tuple[str, ...]

    def value(self, prefix: str) -> str:
        for line in self.lines:
            if line.startswith(prefix):
                return line.removeprefix(prefix).strip()
        raise DemoError(f"the container printed no line {prefix!r}: {self.lines}")


def read_output(path: Path, prefix: str, timeout: float) -> PodOutput:
    """The container's log lines up to and including the first starting with ``prefix``."""
    try:
        return PodOutput(tuple(wait_for_line(path, prefix, timeout)))
    except DevkitError as err:
        raise DemoError(str(err)) from err


@dataclass(frozen=True)
class RunningPod:
    cri: Cri
    spec: PodSpec
    pod_id: str
    netns: Path  # the pod's network namespace, made by containerd for CNI

    @property
    def log_directory(self) -> Path:
        return Path(self.spec.log_directory)

    def container_log(self, name: str) -> Path:
        return self.log_directory / f"{name}.log"


@contextlib.contextmanager
def pod_sandbox(
    cri: Cri, containerd: Path, handler: str, spec: PodSpec, timeout: float
) -> Iterator[RunningPod]:
    """RunPodSandbox of ``spec`` (a pod-network pod with its log directory); on the way
    out StopPodSandbox and RemovePodSandbox if the pod is still there (after a failure)."""
    try:
        pod_id = cri.run_pod_spec(spec, handler, timeout=timeout).pod_sandbox_id
    except grpc.RpcError as err:
        raise DemoError(f"RunPodSandbox: {err.details()}") from err
    try:
        netns = sandbox_netns(containerd, pod_id)
    except DemoError:
        with contextlib.suppress(grpc.RpcError):
            cri.stop_pod(pod_id)
            cri.remove_pod(pod_id)
        raise
    pod = RunningPod(cri, spec, pod_id, netns)
    try:
        yield pod
    finally:
        with contextlib.suppress(grpc.RpcError, DemoError):
            if any(p.id == pod_id for p in cri.pods()):
                remove(pod)  # after a failure: the failure is what gets reported


def sandbox_netns(containerd: Path, pod_id: str) -> Path:
    """The pod's network namespace: the path in its sandbox container's OCI spec
    (``ctr containers info`` on containerd's socket ``containerd``)."""
    try:
        info = json.loads(
            run(["ctr", "-a", str(containerd), "-n", "k8s.io", "containers", "info", pod_id])
        )
    except (DevkitError, ValueError) as err:
        raise DemoError(f"the pod's sandbox container: {err}") from err
    for namespace in info.get("Spec", {}).get("linux", {}).get("namespaces", []):
        if namespace.get("type") == "network" and namespace.get("path"):
            return Path(namespace["path"])
    raise DemoError(f"the sandbox container of pod {pod_id} names no network namespace")


def run_container(pod: RunningPod, image: str, timeout: float) -> str:
    """CreateContainer + StartContainer of ``image`` with ``ARGS``; the container id."""
    try:
        container_id = pod.cri.create_container(
            pod.pod_id, pod.spec, CONTAINER, image=image, command=ARGS, timeout=timeout
        )
    except grpc.RpcError as err:
        raise DemoError(f"CreateContainer: {err.details()}") from err
    try:
        pod.cri.start_container(container_id, timeout=timeout)
    except grpc.RpcError as err:
        raise DemoError(f"StartContainer: {err.details()}") from err
    return container_id


def denied_exec(pod: RunningPod, container_id: str) -> str:
    """ExecSync of a command the policy does not allow: CRI's error. Raises DemoError
    when the exec was not refused by the policy."""
    try:
        reply = pod.cri.exec_sync(container_id, DENIED_ARGS, timeout=60)
    except grpc.RpcError as err:
        message = err.details() or ""
        if "blocked by policy" not in message:
            raise DemoError(f"ExecSync {DENIED_ARGS} failed, not by the policy: {message}") from err
        return message
    raise DemoError(
        f"ExecSync {DENIED_ARGS} was not refused by the policy (exit {reply.exit_code}): "
        f"{reply.stdout!r} {reply.stderr!r}"
    )


def remove(pod: RunningPod) -> None:
    """StopPodSandbox (its containers are killed) and RemovePodSandbox; then CRI must
    list neither the pod nor a container of it."""
    try:
        pod.cri.stop_pod(pod.pod_id)
        pod.cri.remove_pod(pod.pod_id)
        pods = [p.id for p in pod.cri.pods()]
        containers = [c.id for c in pod.cri.containers(pod.pod_id)]
    except grpc.RpcError as err:
        raise DemoError(f"Stop/RemovePodSandbox: {err.details()}") from err
    if pod.pod_id in pods:
        raise DemoError(f"pod {pod.pod_id} still listed after RemovePodSandbox")
    if containers:
        raise DemoError(f"containers {containers} still listed after their pod's removal")
    if pod.netns.exists():
        raise DemoError(f"the pod's network namespace {pod.netns} is still there")
