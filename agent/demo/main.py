"""``python -m agent.demo [--containerd 1.6|2.0.11|2.3.4]``: the six steps, one
temporary root, nothing left behind.

``--containerd`` picks the node's containerd: Debian's 1.6 (the default) or an upstream
2.x release from ``../shared/peers`` (``devkit.containerd``), each starting from its own
``containerd config default``.

Exit codes: 0 the pod ran and showed what makes it confidential; 1 a step failed (the
last line names it); 2 this machine cannot run the demo (not root, a program or the
chosen containerd missing) or bad usage.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from pathlib import Path

import grpc

from agent.demo import install, pod, policy
from agent.demo.errors import DemoError
from agent.demo.report import Report
from devkit.containerd import DEBIAN, VERSIONS, ContainerdRelease, ReleaseMissing, release
from devkit.crinode import CriNode, cri_node
from devkit.errors import DevkitError
from devkit.node import shim_launcher
from guest.image.build import default_cache, ensure_image
from guest.image.manifest import GuestImage

CONTAINERD_PROGRAMS = ("containerd", "ctr")  # Debian's; a peer release brings its own
PROGRAMS = (
    *CONTAINERD_PROGRAMS, "qemu-system-x86_64", "docker-registry", "busybox", "ip", "tc", "nsenter",
    "mmdebstrap", "mkfs.erofs", "veritysetup", "pgrep",
    "/usr/lib/cni/loopback",  # containerd's CRI sets up each pod's lo with it
)  # fmt: skip
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


def runtime(
    report: Report, root: Path, image: GuestImage, containerd: ContainerdRelease
) -> install.Installed:
    report.step(2)
    report.info(
        f"platform {install.PLATFORM}: this machine has no AMD SEV-SNP or Intel TDX, so the "
        "pod-VM is a plain QEMU VM (TCG); the initdata digest reaches it on the kernel "
        "command line and nothing is hardware-measured"
    )
    try:
        defaults = containerd.default_config()
    except DevkitError as err:
        raise DemoError(f"containerd {containerd.version} config default: {err}") from err
    try:
        shim = shim_launcher()
    except DevkitError as err:
        raise DemoError(str(err)) from err
    installed = install.install(root / "install", image, shim, defaults)
    report.info(
        f"node config: containerd {containerd.version}'s own `containerd config default` "
        f"(version {installed.config_version()})"
    )
    for line in installed.log.splitlines():
        report.info(f"installer: {line}")
    report.info(f"handler {installed.handler} in {installed.containerd_config}")
    return installed


def node(
    report: Report,
    stack: ExitStack,
    root: Path,
    image: GuestImage,
    installed: install.Installed,
    *,
    containerd: ContainerdRelease,
) -> CriNode:
    report.step(3)
    # containerd passes its environment on to the shim: the installed shim comes first.
    path = f"{installed.shim_dir}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
    stack.enter_context(environment({"PATH": path}))
    crinode = stack.enter_context(
        cri_node(
            image,
            parent=root,
            base_config=installed.containerd_config_text(),
            handler=installed.handler,
            containerd=containerd,
        )
    )
    topo = crinode.topology
    report.info(f"pod network: containerd runs in netns {topo.node}, pods get a veth on its")
    report.info(f"  bridge from a CNI plugin; the registry is reached at {crinode.registry_host}")
    report.info(f"docker-registry (storage in the temporary root) holds {crinode.image}")
    report.info("  (one layer built here from Debian's busybox-static: nothing downloaded)")
    ours = crinode.containerd.cri_runtimes().get(installed.handler)
    if ours is None:
        raise DemoError(f"containerd's CRI does not list the handler {installed.handler}")
    socket, version = crinode.containerd.socket, crinode.release.version
    report.info(f"containerd {version} on {socket}: CRI lists {installed.handler}")
    report.info(f"  runtime_type {ours['runtimeType']}, options {ours['options']}")
    return crinode


def run_pod(report: Report, image: GuestImage, crinode: CriNode) -> None:
    cri, reference = crinode.cri, crinode.image
    report.step(4)
    doc = policy.initdata(reference, pod.ARGS, crinode.registry_host)
    report.info(f"policy: CreateContainer only for {reference}")
    report.info(f"        with args {pod.ARGS}; every exec refused")
    report.info(f"initdata digest ({doc.algorithm}) {doc.digest.hex()}")

    report.step(5)
    try:
        cri.pull_image(reference)
    except grpc.RpcError as err:
        raise DemoError(f"PullImage {reference}: {err.details()}") from err
    report.info(f"CRI PullImage {reference} (pinned by digest)")
    report.info(f"CRI RunPodSandbox, handler {crinode.handler} (boots a pod-VM under TCG)")
    started = time.monotonic()
    spec = crinode.pod(pod.POD, {pod.INITDATA: policy.annotation(doc)})
    sockets = crinode.containerd.socket
    with pod.pod_sandbox(cri, sockets, crinode.handler, spec, POD_TIMEOUT) as running:
        report.info(f"  pod {running.pod_id[:12]} ready after {time.monotonic() - started:.1f} s")
        report.info(f"  its network namespace (containerd's, set up by CNI): {running.netns}")
        report.info("CRI CreateContainer + StartContainer (the guest pulls the image itself)")
        container_id = pod.run_container(running, reference, POD_TIMEOUT)
        log_file = running.container_log(pod.CONTAINER)
        try:
            output = pod.read_output(log_file, "guest kernel cmdline:", POD_TIMEOUT)
        except DemoError as err:
            tail = crinode.node.daemon_log()[-3000:]
            raise DemoError(f"{err}\ndaemon log (tail):\n{tail}") from err
        report.info(f"container log {log_file} (first output {time.monotonic() - started:.1f} s")
        report.info("  after RunPodSandbox began):")
        for line in output.lines:
            report.info(f"container> {line}")
        show_confidential(report, image, output, doc.digest.hex())
        report.info(f"CRI ExecSync {pod.DENIED_ARGS} in the container:")
        report.info(f"  refused: {pod.denied_exec(running, container_id)}")
        pod.remove(running)
        report.info("CRI StopPodSandbox + RemovePodSandbox: pod and container gone")
    left = crinode.leftovers()
    if left:
        raise DemoError(f"the removed pod left behind: {left}")


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
    """What the demo could have left behind: QEMU, processes whose environment names
    ``root`` (containerd, shim, relay, node daemon), mounts and files under ``root``."""
    found: list[str] = []
    qemus = subprocess.run(
        ["pgrep", "-a", "qemu-system"], stdin=subprocess.DEVNULL, capture_output=True,
        text=True, timeout=30, check=False,
    )  # fmt: skip
    found += [f"QEMU: {line}" for line in qemus.stdout.splitlines() if str(root) in line]
    found += [f"process {pid}: {cmd}" for pid, cmd in _processes_naming(root)]
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    found += [f"mount: {line}" for line in mounts if str(root) in line]
    if root.exists():
        found.append(f"directory {root}")
    return found


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m agent.demo", description="one confidential pod end to end"
    )
    parser.add_argument(
        "--containerd",
        choices=VERSIONS,
        default=DEBIAN,
        help="the node's containerd: Debian's 1.6 (default) or 2.0.11 / 2.3.4 from "
        "../shared/peers",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the demo; the exit code (see the module docstring)."""
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as err:  # argparse printed the usage error
        return 0 if err.code == 0 else 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    report = Report()
    report.line("contrast demo: one confidential pod end to end (CRI -> containerd")
    report.line(f"               {args.containerd} -> our shim -> node daemon -> QEMU pod-VM ->")
    report.line("               guest agent, Rego policy)")
    if os.geteuid() != 0:
        report.line("contrast demo: needs root (QEMU, network namespaces, containerd)")
        return 2
    needed = PROGRAMS if args.containerd == DEBIAN else PROGRAMS[len(CONTAINERD_PROGRAMS) :]
    missing = [name for name in needed if shutil.which(name) is None]
    if missing:
        report.line(
            f"contrast demo: missing programs (scripts/dev.sh setup installs them): {missing}"
        )
        return 2
    try:
        containerd = release(args.containerd)
    except ReleaseMissing as err:
        report.line(f"contrast demo: containerd {args.containerd} is not available: {err}")
        return 2
    except DevkitError as err:
        report.line(f"contrast demo: containerd {args.containerd} could not be unpacked: {err}")
        return 2
    root = Path(tempfile.mkdtemp(prefix="contrast-demo-", dir="/tmp"))
    own_netns: list[str] = []  # the pod network's namespaces (the pod's own is checked in step 5)
    try:
        with ExitStack() as stack:
            image = guest_image(report)
            installed = runtime(report, root, image, containerd)
            crinode = node(report, stack, root, image, installed, containerd=containerd)
            topo = crinode.topology
            own_netns += [topo.node, topo.pod, topo.peer]
            run_pod(report, image, crinode)
            report.step(6)
    except Exception as err:  # noqa: BLE001 - the one boundary: any failure names its step
        report.line(f"contrast demo: FAILED at step {report.current} ({report.step_name}): {err}")
        return 1
    finally:
        shutil.rmtree(root, ignore_errors=True)
    left = leftovers(root) + [f"netns {ns}" for ns in own_netns if ns in _netns()]
    if left:
        report.line(f"contrast demo: FAILED at step 6 (teardown): left behind {left}")
        return 1
    report.info("containerd, relay, node daemon, registry and pod network stopped; temporary")
    report.info("  root removed. Checked: no QEMU, no process of the demo, no mount, no veth,")
    report.info("  no network namespace and no state left")
    report.line("contrast demo: done")
    return 0


def _processes_naming(root: Path) -> list[tuple[int, str]]:
    found = []
    marker = str(root).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes():
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append((int(entry.name), cmd.strip()))
        except OSError:
            continue  # gone meanwhile
    return found


def _netns() -> list[str]:
    folder = Path("/var/run/netns")
    return [p.name for p in folder.iterdir()] if folder.is_dir() else []


if __name__ == "__main__":
    sys.exit(main())
