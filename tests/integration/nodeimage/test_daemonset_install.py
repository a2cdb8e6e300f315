"""The node image's installer init container, run as a kubelet runs packaging/daemonset.yaml.

The outer containerd (1.6, runc, devkit.crinode) runs as PID 1 of a pid and mount
namespace of this test, so the DaemonSet's ``hostPID`` pods share that pid namespace and
the installer's ``nsenter --target 1`` reaches the node this test makes, not the
machine: in that mount namespace ``/usr/bin/systemctl`` is the stand-in
``tests.integration.installer.fake_systemd`` (``restart containerd.service`` starts a
real containerd 1.6, the node's inner one, on the node root's config) and ``/opt`` is
the node root's. The installer container gets the DaemonSet's exact command and its
``/host`` mount of the node root (devkit.daemonset). Then: assets under the node's
``/opt/contrast/<handler>``, the handler in the node's config and in the inner
containerd's CRI runtimes after the installer's restart.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import tomllib
from contextlib import ExitStack
from pathlib import Path

import pytest

from api.containerd.cri.runtime.v1 import api_pb2
from devkit import daemonset
from devkit.containerd import DEBIAN, Containerd
from devkit.containerd import release as containerd_release
from devkit.crinode import cri_node
from guest.image.build import ensure_image as ensure_guest_image
from nodeimage import layout
from nodeimage.build import NodeImage
from tests.conftest import require_programs
from tests.integration.installer import fake_systemd
from tests.integration.nodeimage.test_daemonset_pod import (
    host_paths,
    import_node_image,
    remove_pods,
    run_daemonset_sandbox,
    shared_mount,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).parents[3]


TO_PID1_CGROUPS = r"""while IFS=: read -r _ ctrl path; do
    dir=/sys/fs/cgroup/${ctrl#name=}; [ -n "$ctrl" ] || dir=/sys/fs/cgroup/unified
    [ ! -f "$dir$path/cgroup.procs" ] || echo $$ > "$dir$path/cgroup.procs"
done < /proc/1/cgroup"""


def node_namespaces(systemctl: Path, opt: Path) -> tuple[str, ...]:
    """The outer containerd's launch wrapper: a pid namespace it is PID 1 of, and a mount
    namespace (slave: the machine's mounts show, ours stay) with the node's systemctl
    and /opt bound in."""
    script = (
        'mount --bind "$1" /usr/bin/systemctl && mount --bind "$2" /opt && shift 2 && exec "$@"'
    )
    return (
        "unshare", "--pid", "--fork", "--kill-child=SIGTERM", "--mount", "--mount-proc",
        "--propagation", "slave", "--", "sh", "-c", script, "sh", str(systemctl), str(opt),
    )  # fmt: skip


def test_the_installer_init_container_registers_the_runtime_with_the_nodes_containerd(
    node_image: NodeImage,
) -> None:
    require_programs("containerd", "ctr", "runc", "nsenter", "unshare", "/usr/bin/systemctl")
    release = containerd_release(DEBIAN)
    pod = daemonset.load()
    [installer] = pod.container_names(init=True)
    state = Path(tempfile.mkdtemp(prefix="sysd-", dir="/tmp"))  # short: sockets
    root = Path(tempfile.mkdtemp(prefix="dsn-", dir="/tmp")) / "host"
    try:
        with ExitStack() as stack:
            stack.enter_context(shared_mount(root))
            (root / "etc/containerd").mkdir(parents=True)
            config = root / "etc/containerd/config.toml"
            config.write_text(release.default_config())
            (root / "opt").mkdir()
            systemctl = root.parent / "systemctl"
            systemctl.write_text(
                "#!/bin/sh\n"
                # As systemd runs a unit in a cgroup of its own, not its caller's: out of
                # the installer container's cgroups (whose processes runc kills when the
                # container ends) into PID 1's (the outer containerd's), every hierarchy.
                f"{TO_PID1_CGROUPS}\n"
                f"export FAKE_SYSTEMD_STATE={state} FAKE_SYSTEMD_CONFIG={config}"
                f" FAKE_SYSTEMD_CONTAINERD={release.version} PYTHONPATH={REPO}\n"
                f'exec {sys.executable} -m tests.integration.installer.fake_systemd "$@"\n'
            )
            systemctl.chmod(0o755)
            wrap = node_namespaces(systemctl, root / "opt")
            node = stack.enter_context(cri_node(ensure_guest_image(), wrap=wrap))
            import_node_image(node, node_image, node.node.root)
            logs = node.logs / "daemonset"
            logs.mkdir(parents=True)
            stack.callback(remove_pods, node)
            sandbox, pod_id = run_daemonset_sandbox(node, pod, logs)
            spec = pod.container_config(installer, node_image.reference, host_paths(root))
            cid = node.cri.call(
                "CreateContainer",
                api_pb2.CreateContainerRequest(
                    pod_sandbox_id=pod_id, config=spec, sandbox_config=sandbox
                ),
                api_pb2.CreateContainerResponse,
            ).container_id
            node.cri.start_container(cid)
            status = node.cri.wait_exited(cid, timeout=600)
            log = (logs / f"{installer}_0.log").read_text(errors="replace")
            calls = (state / "calls").read_text() if (state / "calls").exists() else ""
            assert status.exit_code == 0, (log, calls)
            handler = node_image.handler
            assert "restart containerd.service: done" in log, log
            installed = root / "opt/contrast" / handler
            for name in layout.guest_files("qemu-insecure"):
                assert (installed / "share" / name).is_file(), name
            assert (installed / "bin/containerd-shim-contrast-cc-v2").stat().st_mode & 0o111
            table = tomllib.loads(config.read_text())["plugins"]["io.containerd.grpc.v1.cri"]
            ours = table["containerd"]["runtimes"][handler]
            assert (
                ours["runtime_path"]
                == f"/opt/contrast/{handler}/bin/containerd-shim-contrast-cc-v2"
            )
            # The inner containerd, restarted by the installer through PID 1's systemctl,
            # serves the node's config with our handler in it.
            inner = Containerd(fake_systemd.socket_of(state), state / "containerd.log", release)
            runtimes = inner.cri_runtimes()
            assert runtimes[handler]["options"] == {
                "ConfigPath": f"/opt/contrast/{handler}/etc/runtime.toml"
            }
            assert "restart containerd.service" in calls.splitlines()
    finally:
        # The inner containerd ran in the test's pid namespace, ended with its PID 1 (the
        # outer containerd); its pid file holds a pid of that namespace: not ours to kill.
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(root.parent, ignore_errors=True)
