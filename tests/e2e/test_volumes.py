"""The issue's must-show for volumes, as a kubelet drives it: the same pod, with the
mounts a kubelet sends and its exact on-disk layout (devkit/kubelet.py), once in a
pod-VM through our handler and once on runc, through one containerd 1.6 CRI.

The workload container mounts a configMap, a secret, a projected service-account
token, a downward-API volume, a disk emptyDir shared with a second container, a
memory emptyDir, the pod's etc-hosts, a read-only hostPath and its termination-log.
It prints every file and writes into both emptyDirs; both runtimes must print the
same. Then the kubelet's updates (new timestamped directory, ``..data`` renamed): the
configMap edited and the token rotated reach the running container (the time is
printed), a reader looping through ``..data`` meanwhile never sees a mix of
versions; a last edit tells the container to stop, its termination message is then
in the kubelet's host file. In the pod-VM only: a copy the policy refuses fails the
container with the policy's reason, an oversized volume fails naming it, a writable
hostPath is refused (shim/README.md, "Volumes").
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from api.containerd.cri.runtime.v1 import api_pb2
from devkit.cri import read_log
from devkit.crinode import CriNode, cri_node
from devkit.kubelet import KubeletPod, create_container
from guest.image.manifest import GuestImage
from guest.initdata import codec, document
from tests.conftest import require_programs
from tests.integration.vm.conftest import guest_image

pytestmark = pytest.mark.vm
__all__ = ["guest_image"]

INITDATA = "io.katacontainers.config.hypervisor.cc_init_data"
REASON = "e2e volumes policy: the volume named forbidden is never copied in"
POD_TIMEOUT = 900.0  # a VM boot under TCG on a loaded machine, plus the guest's pull
UPDATE_TIMEOUT = 120.0  # generous under load; the figure printed is what counts
SA = "/var/run/secrets/kubernetes.io/serviceaccount"
MEMORY = 64 << 20
HOSTS = "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n10.1.2.3\tfoo.example\n"
STOP_MESSAGE = "stopped by the configMap"
ALLOWED = (
    "CreateSandboxRequest", "DestroySandboxRequest", "CreateContainerRequest",
    "StartContainerRequest", "RemoveContainerRequest", "ReadStreamRequest",
    "WriteStreamRequest", "CloseStdinRequest", "TtyWinResizeRequest", "WaitProcessRequest",
    "SignalProcessRequest", "GetOOMEventRequest", "StatsContainerRequest",
    "UpdateContainerRequest", "GuestDetailsRequest", "UpdateInterfaceRequest",
    "UpdateRoutesRequest", "AddARPNeighborsRequest", "ReadContainerTerminationMessageRequest",
)  # fmt: skip
POLICY = (
    "package agent_policy\n\nimport rego.v1\n\n"
    "default CopyFileRequest := false\ndefault ExecProcessRequest := false\n"
    f"policy_reason := {json.dumps(REASON)}\n\n"
    + "".join(f"{name} := true\n" for name in ALLOWED)
    + """
CopyFileRequest if {
    startswith(input.path, "/run/kata-containers/shared/containers/")
    not contains(input.path, "-forbidden")
}
"""
)
MAIN = f"""
for f in /etc/cfg/a /etc/cfg/b /etc/cfg/nested/c /etc/sec/password {SA}/token {SA}/ca.crt \
    {SA}/namespace /etc/podinfo/labels /hostdata/note; do echo "file $f $(cat $f)"; done
while read line; do echo "hosts $line"; done < /etc/hosts
echo main > /shared/from-main && echo "shared written"
echo mem > /mem/f && echo "mem $(cat /mem/f)"
busybox df -k /mem | while read fs blocks rest; do echo "memdf $blocks"; done
echo ready
while [ ! -e /etc/cfg/stop ]; do
    if cd /etc/cfg/..data 2>/dev/null; then echo "cfg $(cat a 2>/dev/null) $(cat b 2>/dev/null)"; fi
    cd /
    echo "tok $(cat {SA}/token)"
    sleep 0.2
done
printf '{STOP_MESSAGE}' > /dev/termination-log
echo done
"""
PEER = """
while [ ! -e /shared/from-main ]; do sleep 0.2; done
echo "peer read $(cat /shared/from-main)"
"""


@dataclass
class Side:
    """One runtime's pod: its kubelet directory and CRI ids."""

    name: str
    kubelet: KubeletPod
    pod_id: str
    main: str = ""
    log: Path = Path()

    def lines(self) -> list[str]:
        return [entry.text for entry in read_log(self.log)] if self.log.exists() else []

    def wait_for(self, wanted: str, timeout: float, container: str = "main") -> float:
        """Seconds until ``wanted`` is a line of the container's log."""
        started = time.monotonic()
        log = self.log.with_name(f"{container}.log")
        while True:
            found = [e.text for e in read_log(log)] if log.exists() else []
            if wanted in found:
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise AssertionError(f"{self.name}: {wanted!r} not in {log}: {found[-20:]}")
            time.sleep(0.2)


@pytest.fixture(scope="module")
def kubelet_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="kubelet-"))
    before = os.environ.get("CONTRAST_KUBELET_ROOT")
    os.environ["CONTRAST_KUBELET_ROOT"] = str(root)  # containerd passes it to our daemon
    try:
        yield root
    finally:
        if before is None:
            os.environ.pop("CONTRAST_KUBELET_ROOT", None)
        else:
            os.environ["CONTRAST_KUBELET_ROOT"] = before
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def node(guest_image: GuestImage, kubelet_root: Path) -> Iterator[CriNode]:
    require_programs("containerd", "ip", "nsenter", "docker-registry", "busybox", "mount")
    with cri_node(guest_image) as crinode:
        yield crinode


def kubelet_pod(kubelet: KubeletPod, host_dir: Path) -> list[api_pb2.Mount]:
    """The pod's volumes as the kubelet writes them; the main container's mounts."""
    kubelet.atomic("configmap", "cfg", {"a": b"v1", "b": b"v1", "nested/c": b"deep"}, "/etc/cfg")
    kubelet.atomic("secret", "sec", {"password": b"hunter2"}, "/etc/sec", mode=0o400)
    kubelet.atomic("projected", "kube-api-access-e2e",
                   {"token": b"t1", "ca.crt": b"CA", "namespace": b"default"}, SA)  # fmt: skip
    kubelet.atomic("downward-api", "podinfo", {"labels": b'app="volumes"'}, "/etc/podinfo")
    kubelet.empty_dir("shared", "/shared")
    kubelet.empty_dir("mem", "/mem", memory_bytes=MEMORY)
    kubelet.etc_hosts(HOSTS)
    kubelet.host_path(host_dir, "/hostdata", readonly=True)
    kubelet.termination_log("main")
    return kubelet.mounts()


def start_side(node: CriNode, kubelet: KubeletPod, handler: str, host_dir: Path) -> Side:
    cri = node.cri
    name = kubelet.uid.removeprefix("uid-")
    annotations = {}
    if handler == node.handler:
        data = {document.POLICY_NAME: POLICY, "imagepull.toml": node.puller_settings()}
        annotations[INITDATA] = codec.encode_annotation(document.create(data, "sha384").raw)
    pod = node.pod(name, annotations)
    mounts = kubelet_pod(kubelet, host_dir)
    pod_id = cri.run_pod_spec(pod, handler, timeout=POD_TIMEOUT).pod_sandbox_id
    side = Side(name, kubelet, pod_id, log=Path(pod.log_directory) / "main.log")
    side.main = create_container(
        cri, pod_id, pod, "main", image=node.image, command=["sh", "-c", MAIN], mounts=mounts,
        timeout=POD_TIMEOUT,
    )  # fmt: skip
    cri.start_container(side.main, timeout=POD_TIMEOUT)
    # The second container shares the disk emptyDir (the kubelet sends the same path).
    peer_mounts = [m for m in mounts if m.container_path == "/shared"]
    peer = create_container(
        cri, pod_id, pod, "peer", image=node.image, command=["sh", "-c", PEER],
        mounts=peer_mounts, timeout=POD_TIMEOUT,
    )  # fmt: skip
    cri.start_container(peer, timeout=POD_TIMEOUT)
    return side


def start_error(
    node: CriNode, side: Side, name: str, mounts: list[api_pb2.Mount], command: list[str]
) -> str:
    pod = node.pod(side.name, {})
    # The sandbox config only names the pod (its annotations were read at RunPodSandbox).
    cid = create_container(node.cri, side.pod_id, pod, name, image=node.image,
                           command=command, mounts=mounts, timeout=POD_TIMEOUT)  # fmt: skip
    with pytest.raises(grpc.RpcError) as failed:
        node.cri.start_container(cid, timeout=POD_TIMEOUT)
    return failed.value.details() or ""


def test_volumes_in_the_pod_vm_as_on_runc(node: CriNode, kubelet_root: Path) -> None:
    host_dir = kubelet_root.with_name(kubelet_root.name + "-hostpath")  # outside the root
    host_dir.mkdir()
    (host_dir / "note").write_text("hello from the host")
    assert node.cri.pull_image(node.image)
    sides: list[Side] = []
    kubelets = [KubeletPod(kubelet_root, "uid-vol-vm"), KubeletPod(kubelet_root, "uid-vol-runc")]
    try:
        ours = start_side(node, kubelets[0], node.handler, host_dir)
        sides.append(ours)
        theirs = start_side(node, kubelets[1], node.runc_handler, host_dir)
        sides.append(theirs)
        for side in (ours, theirs):
            side.wait_for("ready", POD_TIMEOUT)
            side.wait_for("peer read main", POD_TIMEOUT, container="peer")
        before_loop = ours.lines()[: ours.lines().index("ready") + 1]
        assert before_loop == theirs.lines()[: theirs.lines().index("ready") + 1]
        expected = [
            "file /etc/cfg/a v1", "file /etc/cfg/b v1", "file /etc/cfg/nested/c deep",
            "file /etc/sec/password hunter2", f"file {SA}/token t1", f"file {SA}/ca.crt CA",
            f"file {SA}/namespace default", 'file /etc/podinfo/labels app="volumes"',
            "file /hostdata/note hello from the host",
            *(f"hosts {line}" for line in HOSTS.splitlines()),
            "shared written", "mem mem", "memdf 1K-blocks", f"memdf {MEMORY >> 10}", "ready",
        ]  # fmt: skip
        assert before_loop == expected

        # The kubelet's updates: a configMap edit and the token's rotation.
        updated = time.monotonic()
        for side in sides:
            side.kubelet.update("configmap", "cfg", {"a": b"v2", "b": b"v2", "nested/c": b"d2"})
            rotated = {"token": b"t2", "ca.crt": b"CA", "namespace": b"default"}
            side.kubelet.update("projected", "kube-api-access-e2e", rotated)
        changes = ("cfg v2 v2", "tok t2")
        pending = {(side.name, wanted): side for side in sides for wanted in changes}
        while pending:  # every log polled in turn: each figure is its own
            for (name, wanted), side in list(pending.items()):
                if wanted in side.lines():
                    del pending[(name, wanted)]
                    seen = time.monotonic() - updated
                    print(f"\n{name}: {wanted!r} read {seen:.1f} s after the kubelet's update")
            assert time.monotonic() - updated < UPDATE_TIMEOUT, sorted(pending)
            time.sleep(0.1)
        # More edits while the reader loops, then the one that stops it.
        for n in range(3, 8):
            for side in sides:
                value = f"v{n}".encode()
                side.kubelet.update("configmap", "cfg", {"a": value, "b": value})
            time.sleep(1.5)
        for side in sides:
            side.kubelet.update("configmap", "cfg", {"a": b"v8", "b": b"v8", "stop": b"1"})
        for side in sides:
            side.wait_for("done", UPDATE_TIMEOUT)
            status = node.cri.wait_exited(side.main, timeout=UPDATE_TIMEOUT)
            assert status.exit_code == 0, side.name
            host_log = next(side.kubelet.directory.glob("containers/main/*"))
            assert host_log.read_text() == STOP_MESSAGE, side.name
            pairs = [line.split(" ")[1:] for line in side.lines() if line.startswith("cfg ")]
            complete = [p for p in pairs if len(p) == 2 and all(p)]
            assert complete and all(a == b for a, b in complete), (side.name, pairs)
            versions = {a for a, _ in complete}
            assert {"v1", "v2"} <= versions, (side.name, sorted(versions))
            print(f"{side.name}: {len(pairs)} reads through ..data, "
                  f"{len(pairs) - len(complete)} between a removal and the next version, "
                  f"versions {sorted(versions)}")  # fmt: skip

        # In the pod-VM only: what is refused, and how it reads in CRI's error.
        forbidden = ours.kubelet
        forbidden.atomic("configmap", "forbidden", {"x": b"1"}, "/etc/forbidden")
        details = start_error(node, ours, "forbidden", forbidden.mounts(), ["true"])
        assert "mount /etc/forbidden (configMap forbidden" in details, details
        assert f"CopyFileRequest is blocked by policy: {REASON}" in details, details
        print(f"refused copy: {details}")
        forbidden.atomic("configmap", "big", {"blob": b"x" * (9 << 20)}, "/etc/big")
        details = start_error(node, ours, "big", forbidden.mounts(), ["true"])
        assert "mount /etc/big (configMap big" in details, details
        assert "more than 8388608 bytes (8 MiB)" in details, details
        print(f"oversized: {details}")
        forbidden.host_path(host_dir, "/rw", readonly=False)
        details = start_error(node, ours, "rwhost", forbidden.mounts(), ["true"])
        assert "mount /rw (hostPath" in details and "a writable hostPath" in details, details
        print(f"writable hostPath: {details}")
    except BaseException:
        print(node.node.daemon_log()[-8000:])
        raise
    finally:
        for side in sides:
            with contextlib.suppress(grpc.RpcError):
                node.cri.stop_pod(side.pod_id)
            with contextlib.suppress(grpc.RpcError):
                node.cri.remove_pod(side.pod_id)
        for kubelet in kubelets:
            kubelet.remove()
        shutil.rmtree(host_dir, ignore_errors=True)
    assert node.leftovers() == []


FOLLOW = """
echo "cfg $(cat /etc/cfg/a)"
while [ "$(cat /etc/cfg/a)" != v2 ]; do sleep 0.2; done
printf 'v2 read after the restart' > /dev/termination-log
"""


def test_volumes_followed_across_a_daemon_crash(node: CriNode, kubelet_root: Path) -> None:
    """The daemon SIGKILLed while the pod runs: the next one (started by the relay)
    reattaches and follows the container's volumes again from its bundle, so a
    configMap edited while no daemon ran reaches the container (which then exits), and
    its termination message still comes back. Only CRI and files are read after the
    crash: the container's output is not (stdio across a daemon crash is not this
    test's subject)."""
    assert node.cri.pull_image(node.image)
    kubelet = KubeletPod(kubelet_root, "uid-vol-crash")
    data = {document.POLICY_NAME: POLICY, "imagepull.toml": node.puller_settings()}
    initdata = codec.encode_annotation(document.create(data, "sha384").raw)
    pod = node.pod("vol-crash", {INITDATA: initdata})
    kubelet.atomic("configmap", "cfg", {"a": b"v1"}, "/etc/cfg")
    log = kubelet.termination_log("main")
    pod_id = node.cri.run_pod_spec(pod, node.handler, timeout=POD_TIMEOUT).pod_sandbox_id
    side = Side("vol-crash", kubelet, pod_id, log=Path(pod.log_directory) / "main.log")
    try:
        side.main = create_container(node.cri, pod_id, pod, "main", image=node.image,
                                     command=["sh", "-c", FOLLOW], mounts=kubelet.mounts(),
                                     timeout=POD_TIMEOUT)  # fmt: skip
        node.cri.start_container(side.main, timeout=POD_TIMEOUT)
        side.wait_for("cfg v1", POD_TIMEOUT)
        first = node.node.daemon_pid()
        assert first is not None
        os.kill(first, signal.SIGKILL)
        kubelet.update("configmap", "cfg", {"a": b"v2"})  # while no daemon runs
        deadline = time.monotonic() + POD_TIMEOUT
        while node.node.daemon_pid() in (None, first) and time.monotonic() < deadline:
            time.sleep(0.5)  # the relay starts the next one; its pid file once it serves
        assert node.node.daemon_pid() not in (None, first), node.node.daemon_log()[-3000:]
        assert node.cri.wait_exited(side.main, timeout=UPDATE_TIMEOUT).exit_code == 0
        assert log.read_text() == "v2 read after the restart"
    except BaseException:
        print(node.node.daemon_log()[-8000:])
        raise
    finally:
        with contextlib.suppress(grpc.RpcError):
            node.cri.stop_pod(pod_id)
        with contextlib.suppress(grpc.RpcError):
            node.cri.remove_pod(pod_id)
        kubelet.remove()
    assert node.leftovers() == []
