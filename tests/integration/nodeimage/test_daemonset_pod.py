"""The node image's daemon container, run as a kubelet runs packaging/daemonset.yaml.

Through containerd 1.6's CRI with runc (devkit.crinode): the image imported into
containerd, the DaemonSet's pod sandbox (hostPID, privileged) and its daemon
container's config read from the manifest (devkit.daemonset), with the hostPath volumes
under a node root of this test (``/dev`` and ``/sys/fs/cgroup`` are the kernel's). Then
the host side: the shim launcher, run on the host as containerd would, finds the
daemon through the node's ``/run/contrast/daemon.pid`` and runs the image's shim inside
the daemon container's mount namespace.

Not yet here (issue 18): the installer init container (its restart enters PID 1's
namespaces: it needs a pid namespace whose PID 1 serves a stand-in systemctl for the
inner containerd) and a pod-VM through that inner containerd.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from api.containerd.cri.runtime.v1 import api_pb2
from devkit import daemonset
from devkit.crinode import CriNode, cri_node
from guest.image.build import ensure_image as ensure_guest_image
from nodeimage import oci
from nodeimage.build import NodeImage
from tests.conftest import require_programs

pytestmark = pytest.mark.integration

REPO = Path(__file__).parents[3]
KERNEL_PATHS = ("/dev", "/sys/fs/cgroup")


def host_paths(root: Path) -> Callable[[str], Path]:
    return lambda path: Path(path) if path in KERNEL_PATHS else root / path.lstrip("/")


@contextmanager
def shared_mount(path: Path) -> Iterator[None]:
    """``path`` as a shared mount point, as a node's root is (systemd makes / shared):
    HostToContainer propagation needs a shared or slave source."""
    path.mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(path), str(path)], check=True, timeout=30)
    try:
        subprocess.run(["mount", "--make-shared", str(path)], check=True, timeout=30)
        yield
    finally:
        subprocess.run(["umount", "--recursive", "--lazy", str(path)], check=True, timeout=30)


def remove_pods(node: CriNode) -> None:
    for sandbox in node.cri.pods():
        node.cri.remove_pod(sandbox.id)


def import_node_image(node: CriNode, image: NodeImage, where: Path) -> None:
    """``image`` imported into ``node``'s containerd (k8s.io namespace, as the kubelet
    pulls it), through an OCI archive written under ``where`` and removed again."""
    archive = oci.archive(image.layout, where / "node-image.tar")
    imported = subprocess.run(
        [node.release.ctr, "-a", str(node.containerd.socket), "-n", "k8s.io", "images",
         "import", "--snapshotter", "native", str(archive)],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    archive.unlink()


def run_daemonset_sandbox(
    node: CriNode, pod: daemonset.DaemonSetPod, logs: Path, uid: str = "uid-daemonset"
) -> tuple[api_pb2.PodSandboxConfig, str]:
    """The DaemonSet's pod sandbox run with runc, as the kubelet runs it: its config and id."""
    sandbox = pod.sandbox_config(uid, str(logs))
    pod_id = node.cri.call(
        "RunPodSandbox",
        api_pb2.RunPodSandboxRequest(config=sandbox, runtime_handler=node.runc_handler),
        api_pb2.RunPodSandboxResponse,
    ).pod_sandbox_id
    return sandbox, pod_id


def live_pid(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text())
    except (OSError, ValueError):
        return None
    return pid if Path(f"/proc/{pid}").exists() else None


def test_the_daemon_container_serves_the_host_side_launcher(
    node_image: NodeImage, tmp_path: Path
) -> None:
    require_programs("containerd", "ctr", "runc", "nsenter")
    pod = daemonset.load()
    with ExitStack() as stack:
        node = stack.enter_context(cri_node(ensure_guest_image()))
        import_node_image(node, node_image, node.node.root)
        root = node.node.root / "host"
        stack.enter_context(shared_mount(root))
        logs = node.logs / "daemonset"
        logs.mkdir(parents=True)
        # The sandbox is removed before the node root is unmounted (ExitStack order).
        stack.callback(remove_pods, node)
        sandbox, pod_id = run_daemonset_sandbox(node, pod, logs)
        config = pod.container_config("daemon", node_image.reference, host_paths(root))
        cid = node.cri.call(
            "CreateContainer",
            api_pb2.CreateContainerRequest(
                pod_sandbox_id=pod_id, config=config, sandbox_config=sandbox
            ),
            api_pb2.CreateContainerResponse,
        ).container_id
        node.cri.start_container(cid)
        pidfile = root / "run/contrast/daemon.pid"
        deadline = time.monotonic() + 300  # a bound for a loaded machine, not a margin
        while (pid := live_pid(pidfile)) is None:
            status = node.cri.container_status(cid)
            assert status.state == api_pb2.CONTAINER_RUNNING, (
                status, (logs / "daemon_0.log").read_text(errors="replace")[-3000:],
            )  # fmt: skip
            assert time.monotonic() < deadline, "no daemon.pid from the daemon container"
            time.sleep(0.5)
        # The daemon runs in the container (its own mount namespace, the image's files),
        # in the host's pid namespace (hostPID: its pid is ours to see).
        assert os.readlink(f"/proc/{pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
        handler = Path(f"/proc/{pid}/root/usr/share/contrast/handler").read_text().strip()
        assert handler == node_image.handler
        launched = subprocess.run(
            ["sh", str(REPO / "packaging/node/shim-launcher.sh"), "-v"],
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CONTRAST_RUN_DIR": str(pidfile.parent)},
            # containerd's cwd for the shim is the bundle, at the same path in the
            # daemon container (its /run/containerd mount); "/" is on both sides too.
            cwd="/", capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert launched.returncode == 0, launched.stderr
        assert launched.stdout.startswith("containerd-shim-contrast-cc-v2 (contrast-node ")
        node.cri.stop_pod(pod_id)
        node.cri.remove_pod(pod_id)
        assert live_pid(pidfile) is None
