"""``python -m agent.demo``: the six steps, one temporary root, nothing left behind.

Exit codes: 0 the pod ran and showed what makes it confidential; 1 a step failed (the
last line names it); 2 this machine cannot run the demo (not root, a program missing).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from agent.demo import install, pod, policy
from agent.demo.errors import DemoError
from agent.demo.report import Report
from devkit.busybox import busybox_image
from devkit.containerd import Containerd, running_containerd
from devkit.forward import Forward
from devkit.node import SHIM, Node, node_env
from devkit.registry import Registry
from devkit.topology import PEER_IP, Topology, pod_topology
from guest.image.build import default_cache, ensure_image
from guest.image.manifest import GuestImage

PROGRAMS = (
    "containerd", "ctr", "qemu-system-x86_64", "docker-registry", "busybox", "ip", "tc",
    "mmdebstrap", "mkfs.erofs", "veritysetup", "pgrep",
)  # fmt: skip
REGISTRY_PORT = 5000  # where the pod network reaches the registry (PEER_IP)
POD_TIMEOUT = 900.0  # VM boot under TCG plus the guest's image pull


@contextlib.contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """``values`` in os.environ (containerd passes it on to the shim and the daemon)."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def guest_image(report: Report) -> GuestImage:
    report.step(1)
    cache = default_cache()
    before = {p.name for p in cache.iterdir()} if cache.is_dir() else set()
    image = ensure_image(cache)
    how = "reused from the cache" if image.directory.name in before else "built"
    report.info(f"{how}: {image.directory}")
    report.info(f"dm-verity root hash {image.manifest.root_hash}")
    return image


def workload_registry(report: Report, stack: ExitStack, root: Path) -> tuple[Registry, str]:
    report.step(2)
    registry = stack.enter_context(Registry(root / "registry"))
    image = busybox_image()
    digest = registry.upload(image.blobs, image.manifest, "demo/busybox", "v1")
    report.info(f"docker-registry on {registry.host} (storage in the temporary root)")
    report.info(f"pushed {registry.host}/demo/busybox@{digest}")
    report.info("(one layer built here from Debian's busybox-static: nothing downloaded)")
    return registry, digest


def runtime(
    report: Report, stack: ExitStack, root: Path, image: GuestImage
) -> tuple[install.Installed, Node, Containerd]:
    report.step(3)
    report.info(
        f"platform {install.PLATFORM}: this machine has no AMD SEV-SNP or Intel TDX, so the "
        "pod-VM is a plain QEMU VM (TCG); the initdata digest reaches it on the kernel "
        "command line and nothing is hardware-measured"
    )
    installed = install.install(root / "install", image, SHIM)
    for line in installed.log.splitlines():
        report.info(f"installer: {line}")
    report.info(f"handler {installed.handler} in {installed.containerd_config}")
    node = stack.enter_context(node_env("pod-vm", parent=root))
    env = {key: value for key, value in node.env.items() if key != "TTRPC_ADDRESS"}
    env["PATH"] = f"{installed.shim_dir}:{env['PATH']}"  # containerd finds the installed shim
    stack.enter_context(environment(env))
    containerd = stack.enter_context(
        running_containerd(installed.containerd_config.read_text(), root / "containerd")
    )
    ours = containerd.cri_runtimes().get(installed.handler)
    if ours is None:
        raise DemoError(f"containerd's CRI does not list the handler {installed.handler}")
    report.info(f"containerd 1.6 on {containerd.socket}: CRI lists {installed.handler}")
    report.info(f"  runtime_type {ours['runtimeType']}, options {ours['options']}")
    return installed, node, containerd


@dataclass(frozen=True)
class Setup:
    """What steps 1-3 brought up for the pod."""

    image: GuestImage
    registry: Registry
    digest: str
    installed: install.Installed
    node: Node
    containerd: Containerd


def run_pod(report: Report, stack: ExitStack, setup: Setup) -> None:
    image, installed, node, containerd = setup.image, setup.installed, setup.node, setup.containerd
    registry, digest = setup.registry, setup.digest
    guest_host = f"{PEER_IP}:{REGISTRY_PORT}"
    guest_ref = f"{guest_host}/demo/busybox@{digest}"
    host_ref = f"{registry.host}/demo/busybox@{digest}"

    report.step(4)
    doc = policy.initdata(guest_ref, pod.ARGS, guest_host)
    report.info(f"policy: CreateContainer only for {guest_ref}")
    report.info(f"        with args {pod.ARGS}; every exec refused")
    report.info(f"initdata digest ({doc.algorithm}) {doc.digest.hex()}")

    report.step(5)
    topo: Topology = stack.enter_context(pod_topology())
    port = int(registry.host.rsplit(":", 1)[1])
    stack.enter_context(
        Forward(topo.path(topo.peer), (PEER_IP, REGISTRY_PORT), ("127.0.0.1", port))
    )
    report.info(f"pod network: netns {topo.pod}; registry reachable at {guest_host}")
    ctr_pull = ("images", "pull", "--plain-http", "--snapshotter", "native", host_ref)
    pod.ctr_ok(containerd, *ctr_pull, timeout=300)
    report.info(f"containerd pulled {host_ref} (pinned by digest)")
    report.info(f"ctr run --runtime {pod.RUNTIME} {pod.CONTAINER} (boots a pod-VM under TCG)")
    with pod.run_pod(
        containerd,
        image=host_ref,
        guest_image=guest_ref,
        runtime_config=installed.runtime_config,
        netns=topo.path(topo.pod),
        initdata=policy.annotation(doc),
    ) as running:
        try:
            output = running.read_until("guest kernel cmdline:", POD_TIMEOUT)
        except DemoError as err:
            raise DemoError(f"{err}\ndaemon log (tail):\n{node.daemon_log()[-3000:]}") from err
        for line in output.lines:
            report.info(f"container> {line}")
        show_confidential(report, image, output, doc.digest.hex())
        report.info(f"exec {pod.DENIED_ARGS} in the pod:")
        report.info(f"  refused: {pod.denied_exec(containerd)}")
        status = pod.stop(containerd, running)
        report.info(f"pod killed and removed (ctr run exit status {status})")
    states = sorted(str(p) for p in node.state_dir.rglob("*.json"))
    if states:
        raise DemoError(f"the node daemon kept state for the removed pod: {states}")


def show_confidential(
    report: Report, image: GuestImage, output: pod.PodOutput, digest: str
) -> None:
    """Check and print the guest's own view: verity root, initdata digest, platform."""
    if pod.GREETING not in output.lines:
        raise DemoError(f"the container did not print {pod.GREETING!r}: {output.lines}")
    root_hash = image.manifest.root_hash
    device = output.value("guest root device:").split()
    if device != ["root", f"CONTRAST-VERITY-{root_hash}"]:
        raise DemoError(f"the guest's root is not the verity device for {root_hash}: {device}")
    words = output.value("guest kernel cmdline:").split()
    expected = {
        f"contrast.verity.roothash={root_hash}",
        f"contrast.initdata_digest={digest}",
        "contrast.platform=insecure",
    }
    if not expected <= set(words):
        raise DemoError(f"the guest kernel command line lacks {sorted(expected - set(words))}")
    report.info("confidential, as seen from inside the guest:")
    report.info(f"  root file system on dm-verity device 'root' with root hash {root_hash}")
    report.info("    (the guest image's manifest hash: every block read is verified)")
    report.info(f"  initdata digest {digest} (the policy above is in force)")
    report.info("  platform insecure (no SEV-SNP/TDX here: nothing is hardware-attested)")


def leftovers(
    root: Path, topo_prefixes: tuple[str, ...] = ("cnode-", "cpod-", "cpeer-")
) -> list[str]:
    """What the demo could have left behind: QEMU, mounts and files under ``root``."""
    found: list[str] = []
    qemus = subprocess.run(
        ["pgrep", "-a", "qemu-system"], stdin=subprocess.DEVNULL, capture_output=True,
        text=True, timeout=30, check=False,
    )  # fmt: skip
    found += [f"QEMU: {line}" for line in qemus.stdout.splitlines() if str(root) in line]
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    found += [f"mount: {line}" for line in mounts if str(root) in line]
    if root.exists():
        found.append(f"directory {root}")
    return found


def main(argv: list[str] | None = None) -> int:
    """Run the demo; the exit code (see the module docstring)."""
    del argv  # no options yet
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    report = Report()
    report.line("contrast demo: one confidential pod end to end (containerd 1.6 -> our shim ->")
    report.line("               node daemon -> QEMU pod-VM -> guest agent with a Rego policy)")
    if os.geteuid() != 0:
        report.line("contrast demo: needs root (QEMU, network namespaces, containerd)")
        return 2
    missing = [name for name in PROGRAMS if shutil.which(name) is None]
    if missing:
        report.line(
            f"contrast demo: missing programs (scripts/dev.sh setup installs them): {missing}"
        )
        return 2
    root = Path(tempfile.mkdtemp(prefix="contrast-demo-", dir="/tmp"))
    netns_before = set(_netns())
    try:
        with ExitStack() as stack:
            image = guest_image(report)
            registry, digest = workload_registry(report, stack, root)
            installed, node, containerd = runtime(report, stack, root, image)
            setup = Setup(image, registry, digest, installed, node, containerd)
            run_pod(report, stack, setup)
            report.step(6)
    except Exception as err:  # noqa: BLE001 - the one boundary: any failure names its step
        report.line(f"contrast demo: FAILED at step {report.current} ({report.step_name}): {err}")
        return 1
    finally:
        shutil.rmtree(root, ignore_errors=True)
    left = leftovers(root) + [f"netns {ns}" for ns in set(_netns()) - netns_before]
    if left:
        report.line(f"contrast demo: FAILED at step 6 (teardown): left behind {left}")
        return 1
    report.info("containerd, node daemon, registry and pod network stopped; temporary root removed")
    report.info("checked: no QEMU, no mount, no network namespace and no state left")
    report.line("contrast demo: done")
    return 0


def _netns() -> list[str]:
    folder = Path("/var/run/netns")
    return [p.name for p in folder.iterdir()] if folder.is_dir() else []


if __name__ == "__main__":
    sys.exit(main())
