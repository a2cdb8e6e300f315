"""A confidential pod on a node set up the DaemonSet's way (issue 18): the node image's
installer init container, then its daemon container, both run from
packaging/daemonset.yaml through an outer containerd 1.6 with runc; then a pod through
the node's own (inner) containerd 1.6 and our handler, into a pod-VM, end to end.

The node (tests/integration/nodeimage/test_daemonset_install.py explains the pid and
mount namespace): the outer containerd is PID 1 of a namespace pair of this test, in
which ``/usr/bin/systemctl`` is fake_systemd (the inner containerd's unit), ``/opt``,
``/run/contrast`` and ``/run/containerd`` are the node root's, and mounts propagate
into the containers (HostToContainer: the pods' netns under ``/run/netns``). The inner
containerd runs the installed shim launcher, which enters the daemon container.
The runtime config's boot bound is raised for TCG under load. containerd 1.6 ignores
runtime_path and finds the shim through the installer's /usr/local/bin link (the node
root's /usr/local/bin is bound there in the node's namespace). Both containerds are of
one release: Debian's 1.6, or 2.3.4 from ../shared/peers (the test is parametrized).

Day 2: the daemon container killed and restarted (attempt 1), the pod-VM survives and
an exec in its container is served by the new daemon; then a rollout (the DaemonSet's
pod removed, a new one of the same image: installer, daemon), after which the pod-VM
still runs and an exec is served again; then uninstall: refused while the pod runs
(naming it, nothing changed), then after the pod's removal, as packaging/README says:
runtime table, assets and the shim link gone, the inner containerd restarted without
the handler.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import pytest

from api.containerd.cri.runtime.v1 import api_pb2
from bench.pod_cri import ALLOW_EVERY_REQUEST, INITDATA
from devkit import daemonset
from devkit.containerd import DEBIAN, Containerd
from devkit.cri import Cri, PodSpec, read_log
from devkit.crilog import wait_for_line
from devkit.crinode import (
    PAUSE,
    REGISTRY_HOST,
    CriNode,
    containerd_config_with_handler,
    cri_node,
    write_cni,
    write_registry_hosts,
)
from guest.image.build import ensure_image as ensure_guest_image
from guest.initdata import codec, document
from nodeimage.build import NodeImage
from tests.conftest import require_programs
from tests.integration.nodeimage.conftest import built_node_image
from tests.integration.nodeimage.test_daemonset_install import TO_PID1_CGROUPS
from tests.integration.nodeimage.test_daemonset_pod import (
    host_paths,
    import_node_image,
    remove_pods,
    run_daemonset_sandbox,
    shared_mount,
)
from tests.support.containerd_releases import require_release

pytestmark = [pytest.mark.e2e, pytest.mark.vm]

REPO = Path(__file__).parents[2]
NODE_BINDS = 'mount --bind "$1" /usr/bin/systemctl && mount --bind "$2" /opt \
&& mkdir -p /run/contrast && mount --bind "$3" /run/contrast \
&& mount --bind "$4" /run/containerd && mount --bind "$5" /usr/local/bin \
&& mount --make-rshared / && shift 5 && exec "$@"'
FAKE_STATE = "/run/containerd/fake"  # the inner containerd's, a path of the node
# The pod's container: a line to its CRI log every 2 s, to follow across the day 2 steps.
TICKS = "echo hello; i=0; while true; do i=$((i + 1)); echo tick $i; sleep 2; done"
# The inner containerd's pods get other addresses of the bridge than the outer's.
INNER_ADDRESSES = (100, 150)


def node_wrap(root: Path, systemctl: Path) -> tuple[str, ...]:
    binds = [
        systemctl, root / "opt", root / "run/contrast", root / "run/containerd",
        root / "usr/local/bin",
    ]  # fmt: skip
    return (
        "unshare", "--pid", "--fork", "--kill-child=SIGTERM", "--mount", "--mount-proc",
        "--propagation", "slave", "--", "sh", "-c", NODE_BINDS, "sh", *map(str, binds),
    )  # fmt: skip


@pytest.fixture(scope="module")
def node_image() -> NodeImage:
    return built_node_image()


def run_container(
    node: CriNode, pod_id: str, sandbox: api_pb2.PodSandboxConfig, config: api_pb2.ContainerConfig
) -> str:
    cid = node.cri.call(
        "CreateContainer",
        api_pb2.CreateContainerRequest(
            pod_sandbox_id=pod_id, config=config, sandbox_config=sandbox
        ),
        api_pb2.CreateContainerResponse,
    ).container_id
    node.cri.start_container(cid)
    return cid


def uninstaller(
    pod: daemonset.DaemonSetPod, image: NodeImage, paths: Callable[[str], Path], name: str
) -> api_pb2.ContainerConfig:
    """The installer container with the image's own uninstall command."""
    removal = pod.container_config(pod.container_names(init=True)[0], image.reference, paths)
    removal.metadata.name = name
    removal.log_path = f"{name}_0.log"
    del removal.command[:]
    removal.command.extend([
        "contrast-node-installer", "uninstall", "--manifest",
        "/usr/share/contrast/manifest.toml", "--host-root", "/host",
    ])  # fmt: skip
    return removal


def remove_inner_pods(inner: Cri) -> None:
    for pod in inner.pods():
        inner.stop_pod(pod.id)
        inner.remove_pod(pod.id)


@pytest.mark.parametrize("version", [DEBIAN, "2.3.4"])
def test_a_confidential_pod_on_a_node_the_daemonset_set_up(
    node_image: NodeImage, version: str
) -> None:
    require_programs("containerd", "ctr", "runc", "nsenter", "unshare", "/usr/bin/systemctl")
    release = require_release(version)
    pod = daemonset.load()
    [installer] = pod.container_names(init=True)
    [daemon] = pod.container_names()
    made_run_contrast = not Path("/run/contrast").exists()
    top = Path(tempfile.mkdtemp(prefix="dsn-", dir="/tmp"))
    root = top / "host"
    try:
        with ExitStack() as stack:
            stack.enter_context(shared_mount(root))
            for sub in (
                "etc/containerd", "opt", "run/contrast", "run/containerd/fake", "usr/local/bin",
            ):  # fmt: skip
                (root / sub).mkdir(parents=True)
            state = root / FAKE_STATE.lstrip("/")
            config = root / "etc/containerd/config.toml"
            hosts = write_registry_hosts(top / "certs.d", REGISTRY_HOST)
            config.write_text(
                containerd_config_with_handler(
                    Path("/unused"),
                    sandbox_image=PAUSE,
                    handler="runc",
                    registry_hosts=hosts,
                    base=release.default_config(),
                )
            )
            systemctl = top / "systemctl"
            systemctl.write_text(
                f"#!/bin/sh\n{TO_PID1_CGROUPS}\n"
                # containerd 1.6 ignores runtime_path (containerd issue 8207) and finds
                # the shim on its PATH: the installer's /usr/local/bin link (the node's,
                # bound there in the node's namespace).
                "export PATH=/usr/local/bin:$PATH\n"
                f"export FAKE_SYSTEMD_STATE={FAKE_STATE} FAKE_SYSTEMD_CONFIG={config}"
                f" FAKE_SYSTEMD_CONTAINERD={release.version} PYTHONPATH={REPO}\n"
                f'exec {sys.executable} -m tests.integration.installer.fake_systemd "$@"\n'
            )
            systemctl.chmod(0o755)
            node = stack.enter_context(
                cri_node(ensure_guest_image(), containerd=release, wrap=node_wrap(root, systemctl))
            )
            # The inner containerd's CNI (fake_systemd's sandbox names <state>/work/cni).
            write_cni(state / "work", node.topology)
            cni = state / "work/cni/10-contrast.conf"
            conf = json.loads(cni.read_text())
            conf["first"], conf["last"] = INNER_ADDRESSES
            cni.write_text(json.dumps(conf))
            import_node_image(node, node_image, top)
            logs = node.logs / "daemonset"
            logs.mkdir(parents=True)
            stack.callback(remove_pods, node)
            sandbox, pod_id = run_daemonset_sandbox(node, pod, logs)
            # The node's pods' netns are the machine's /run/netns (the inner containerd's
            # CNI makes them there); every other hostPath is the node root's.
            node_paths = host_paths(root)
            paths = lambda path: Path(path) if path == "/run/netns" else node_paths(path)  # noqa: E731
            install = pod.container_config(installer, node_image.reference, paths)
            status = node.cri.wait_exited(run_container(node, pod_id, sandbox, install), 600)
            log = (logs / f"{installer}_0.log").read_text(errors="replace")
            assert status.exit_code == 0, log
            handler = node_image.handler
            # This machine runs TCG under load: a longer boot bound than the image's 120 s.
            runtime = root / "opt/contrast" / handler / "etc/runtime.toml"
            runtime.write_text(
                runtime.read_text().replace("boot_seconds = 120", "boot_seconds = 400")
            )
            serving = pod.container_config(daemon, node_image.reference, paths)
            daemon_id = run_container(node, pod_id, sandbox, serving)
            # daemon.pid holds a pid of the node's pid namespace, not ours: wait for the
            # socket the daemon serves the shims on instead.
            deadline = time.monotonic() + 300  # a bound for a loaded machine, not a margin
            while not (root / "run/contrast/daemon.sock").exists():
                running = node.cri.container_status(daemon_id).state == api_pb2.CONTAINER_RUNNING
                assert running, (logs / f"{daemon}_0.log").read_text(errors="replace")[-3000:]
                assert time.monotonic() < deadline, "the daemon container serves no socket"
                time.sleep(0.5)
            inner = Cri(state / "c.sock")
            stack.callback(remove_inner_pods, inner)
            inner.pull_image(node.image)
            policy = document.create(
                {
                    document.POLICY_NAME: ALLOW_EVERY_REQUEST,
                    "imagepull.toml": node.puller_settings(),
                },
                "sha384",
            )
            pod_logs = top / "pods/web"
            pod_logs.mkdir(parents=True)
            spec = PodSpec(
                "web", annotations={INITDATA: codec.encode_annotation(policy.raw)},
                network=api_pb2.POD, log_directory=str(pod_logs),
            )  # fmt: skip
            try:
                web = inner.run_pod_spec(spec, handler).pod_sandbox_id
            except BaseException:
                for name in ("daemon.log", "relay.log"):
                    path = root / "run/contrast" / name
                    print(name, path.read_text(errors="replace")[-3000:] if path.exists() else "-")
                print((logs / f"{daemon}_0.log").read_text(errors="replace")[-3000:])
                raise
            cid = inner.create_container(
                web, spec, "hello", image=node.image,
                command=["/bin/sh", "-c", TICKS],
            )  # fmt: skip
            inner.start_container(cid)
            wait_for_line(pod_logs / "hello.log", "hello", 900)
            # The pod's VM: a QEMU on the kernel the installer put on the node.
            kernel = f"/opt/contrast/{handler}/share/vmlinuz"
            found = subprocess.run(
                ["pgrep", "-f", f"qemu-system.* -kernel {kernel} "],
                capture_output=True, text=True, timeout=30, check=False,
            )  # fmt: skip
            qemus = found.stdout.split()
            assert qemus, "no pod-VM on the installed kernel"
            # Day 2, the daemon container killed (StopContainer with no grace: SIGKILL)
            # and restarted as the kubelet does (attempt 1): the pod-VM lives on in its
            # pod's cgroup, and the next daemon serves the running container.
            node.cri.stop_container(daemon_id, grace=0)
            (root / "run/contrast/daemon.sock").unlink(missing_ok=True)
            again = pod.container_config(daemon, node_image.reference, paths, attempt=1)
            daemon_id = run_container(node, pod_id, sandbox, again)
            deadline = time.monotonic() + 300
            while not (root / "run/contrast/daemon.sock").exists():
                assert time.monotonic() < deadline, "the restarted daemon serves no socket"
                time.sleep(0.5)
            assert all(Path(f"/proc/{pid}").exists() for pid in qemus), "the pod-VM died"
            reply = inner.exec_sync(cid, ["echo", "after the daemon's restart"], timeout=300)
            assert (reply.exit_code, reply.stdout) == (0, b"after the daemon's restart\n"), reply
            # Day 2, a rollout (RollingUpdate, maxUnavailable 1: the old pod goes first).
            # The DaemonSet's pod is removed with its containers, whose roots containerd
            # deletes: the relay, started in the first daemon container, loses its mounts
            # of the node's directories (agent/relay/main.py). A new pod of the image
            # follows: its installer finds everything in place and restarts nothing, its
            # daemon reattaches the pod-VM and serves the running container.
            node.cri.stop_pod(pod_id)
            node.cri.remove_pod(pod_id)
            (root / "run/contrast/daemon.sock").unlink(missing_ok=True)
            logs = node.logs / "daemonset-2"
            logs.mkdir()
            sandbox, pod_id = run_daemonset_sandbox(node, pod, logs, uid="uid-daemonset-2")
            install = pod.container_config(installer, node_image.reference, paths)
            status = node.cri.wait_exited(run_container(node, pod_id, sandbox, install), 600)
            log = (logs / f"{installer}_0.log").read_text(errors="replace")
            assert status.exit_code == 0, log
            # Everything in place; only the runtime config this test edited is restored.
            verbs = {
                line.split(" asset ", 1)[1].rsplit(": ", 1)[1]
                for line in log.splitlines()
                if " asset " in line and "/etc/runtime.toml" not in line
            }  # fmt: skip
            assert verbs == {"unchanged"}, log
            assert "etc/runtime.toml: update" in log, log
            assert "config /etc/containerd/config.toml: unchanged" in log, log
            assert "restart containerd.service: not needed" in log, log
            runtime.write_text(
                runtime.read_text().replace("boot_seconds = 120", "boot_seconds = 400")
            )
            serving = pod.container_config(daemon, node_image.reference, paths)
            daemon_id = run_container(node, pod_id, sandbox, serving)
            deadline = time.monotonic() + 300
            while not (root / "run/contrast/daemon.sock").exists():
                running = node.cri.container_status(daemon_id).state == api_pb2.CONTAINER_RUNNING
                assert running, (logs / f"{daemon}_0.log").read_text(errors="replace")[-3000:]
                assert time.monotonic() < deadline, "the new pod's daemon serves no socket"
                time.sleep(0.5)
            assert all(Path(f"/proc/{pid}").exists() for pid in qemus), "the pod-VM died"
            try:
                reply = inner.exec_sync(cid, ["echo", "after the rollout"], timeout=300)
            except BaseException:
                relay_log = root / "run/contrast/relay.log"
                print("relay.log", relay_log.read_text(errors="replace")[-3000:])
                raise
            assert (reply.exit_code, reply.stdout) == (0, b"after the rollout\n"), reply
            assert inner.container_status(cid).state == api_pb2.CONTAINER_RUNNING
            # Its output still reaches the CRI log after both (the pod's QEMU holds the
            # container's FIFO while no daemon runs: shim/README).
            ticks = [
                int(line.text.split()[1])
                for line in read_log(pod_logs / "hello.log")
                if line.text.startswith("tick ")
            ]
            wait_for_line(pod_logs / "hello.log", f"tick {max(ticks) + 2}", 300)
            # Uninstall while the Contrast pod runs: refused, naming it, nothing changed.
            refusal = uninstaller(pod, node_image, paths, "refused")
            refused = node.cri.wait_exited(run_container(node, pod_id, sandbox, refusal), 600)
            out = (logs / "refused_0.log").read_text(errors="replace")
            assert refused.exit_code == 1, out
            assert f"Contrast pod(s) of {handler} still run on this node: pod default/web" in out
            assert (root / "opt/contrast" / handler).is_dir()
            assert handler in config.read_text()
            inner.stop_pod(web)
            inner.remove_pod(web)
            # Uninstall with the Contrast pods gone (packaging/README: delete them first):
            # the installer's own uninstall, from the image, into the same node root.
            removal = uninstaller(pod, node_image, paths, "uninstaller")
            done = node.cri.wait_exited(run_container(node, pod_id, sandbox, removal), 600)
            out = (logs / "uninstaller_0.log").read_text(errors="replace")
            assert done.exit_code == 0, out
            assert "restart containerd.service: done" in out, out
            assert not (root / "opt/contrast" / handler).exists()
            assert not (root / "usr/local/bin/containerd-shim-contrast-cc-v2").is_symlink()
            assert handler not in config.read_text()
            inner_ctd = Containerd(state / "c.sock", state / "containerd.log", release)
            assert handler not in inner_ctd.cri_runtimes()
            assert "runc" in inner_ctd.cri_runtimes()
    finally:
        shutil.rmtree(top, ignore_errors=True)
        if made_run_contrast:
            Path("/run/contrast").rmdir()
