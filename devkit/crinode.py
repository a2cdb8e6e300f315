"""A CRI node: containerd's CRI in a temporary root, ready to run pods the way a
kubelet does, with our runtime handler and runc side by side. containerd is Debian's
1.6 or, with ``containerd="2.0.11"`` / ``"2.3.4"``, an upstream 2.x release from
``../shared/peers`` (``devkit.containerd``), each on its own ``containerd config
default`` (config version 2, 3, 4) with our handler entered by the installer's code.

:func:`cri_node` brings up, in order (and tears down in reverse, whatever failed):

- a node daemon's environment (``devkit.node``): containerd passes it to our shim;
- a pod network (``devkit.topology``): containerd runs in its ``node`` netns, where the
  CNI plugin (``devkit/cni_plugin.py``) puts each pod's veth on the bridge ``cni0``,
  so the machine's own network is never touched;
- a docker-registry on loopback holding a busybox image (``devkit.busybox``) and a
  pause image, reached from the pod network (containerd in the node netns, and the
  guest inside a pod) at ``REGISTRY_HOST`` through a TCP forward in the ``peer``
  netns; containerd pulls over plain HTTP (``hosts.toml`` under the CRI registry's
  ``config_path``);
- containerd with our handler (entered by the installer's own code, runtime config
  naming the guest image) and ``runc``, and the pause image pulled.

At exit the pods still there are stopped and removed through CRI before containerd
stops. :meth:`CriNode.leftovers` lists what a removed pod could have left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import grpc
import tomlkit

from api.containerd.cri.runtime.v1 import api_pb2
from devkit import ocibuild as ob
from devkit.busybox import busybox_image
from devkit.containerd import (
    DEBIAN,
    DEBIAN_RELEASE,
    Containerd,
    ContainerdRelease,
    sandboxed_config,
)
from devkit.containerd import release as containerd_release
from devkit.cri import Cri, PodSpec
from devkit.errors import DevkitError
from devkit.forward import Forward
from devkit.node import SHIM, Node, node_env
from devkit.registry import Registry
from devkit.topology import GATEWAY, PEER_IP, PREFIX, SUBNET, Topology, ip, pod_topology
from guest.image.manifest import GuestImage
from installer import containerd_config

HANDLER = "contrast-cc-qemu-insecure-0123abcd"
RUNC = "runc"
REGISTRY_PORT = 5000
REGISTRY_HOST = f"{PEER_IP}:{REGISTRY_PORT}"  # the registry, seen from the pod network
PAUSE = f"{REGISTRY_HOST}/contrast/pause:3.6"
BUSYBOX = f"{REGISTRY_HOST}/test/busybox"
BUSYBOX_TAG = "v1"
POD_ADDRESSES = (20, 250)  # <SUBNET>.20 .. .250, handed out by the CNI plugin
PLUGIN = Path(__file__).with_name("cni_plugin.py")
NETNS_DIR = Path("/var/run/netns")
# The bridge's own members (devkit.topology): anything else on cni0 is a pod's veth.
BRIDGE_BASELINE = frozenset({"vethpod", "vethpeer"})


def runtime_config_text(image: GuestImage, boot_seconds: int = 300) -> str:
    """Our handler's runtime config (agent/sandbox/config.py) for ``image``."""
    return (
        'platform = "qemu-insecure"\n[guest]\n'
        f'kernel = "{image.kernel}"\ninitrd = "{image.initrd}"\nrootfs = "{image.root}"\n'
        f'manifest = "{image.directory / "manifest.json"}"\n'
        f"[timeouts]\nboot_seconds = {boot_seconds}\n"
    )


def containerd_config_with_handler(
    config_path: Path,
    *,
    sandbox_image: str,
    handler: str = HANDLER,
    shim: Path = SHIM,
    registry_hosts: Path | None = None,
    base: str | None = None,
) -> str:
    """containerd's config with our handler entered by the installer's own code (which
    writes ``runc`` next to it when the config names no runtime), ``sandbox_image`` as
    the pause image, the native snapshotter (works in /tmp), restricted oom_score_adj
    and, when given, the registry hosts directory, each where the config's version
    keeps it (2: the ``grpc.v1.cri`` plugin; 3 and 4: ``cri.v1.images`` and
    ``cri.v1.runtime``, hosts also for the transfer service, which pulls for 2.x's CRI).
    ``base``: the starting config (a release's ``containerd config default``, or what the
    installer wrote), ``version = 2`` when None; a ``handler`` it names already is kept."""
    doc = containerd_config.parse(base or "version = 2\n", "devkit")
    version = containerd_config.read_version(doc, "devkit")
    if containerd_config.get_runtime(doc, version, handler, "devkit") is None:
        entry = containerd_config.RuntimeEntry(handler, str(shim), str(config_path))
        containerd_config.set_runtime(doc, version, entry, "devkit")
    plugins = doc["plugins"]
    if version == 2:
        cri = plugins["io.containerd.grpc.v1.cri"]
        cri["sandbox_image"] = sandbox_image
        cri["containerd"]["snapshotter"] = "native"
        runtime, registry_parent = cri, cri
    else:
        images = plugins.setdefault("io.containerd.cri.v1.images", tomlkit.table())
        images["snapshotter"] = "native"
        images.setdefault("pinned_images", tomlkit.table())["sandbox"] = sandbox_image
        runtime, registry_parent = plugins["io.containerd.cri.v1.runtime"], images
    # No lowering of oom_score_adj below containerd's own (not permitted everywhere;
    # runc then fails with "can't get final child's PID from pipe").
    runtime["restrict_oom_score_adj"] = True
    if registry_hosts is not None:
        registry_parent.setdefault("registry", tomlkit.table())["config_path"] = str(registry_hosts)
        if version != 2:
            transfer = plugins.setdefault("io.containerd.transfer.v1.local", tomlkit.table())
            transfer["config_path"] = str(registry_hosts)
    return tomlkit.dumps(doc)


def write_registry_hosts(folder: Path, host: str) -> Path:
    """``<folder>/<host>/hosts.toml``: containerd pulls from ``host`` over plain HTTP."""
    (folder / host).mkdir(parents=True)
    (folder / host / "hosts.toml").write_text(
        f'server = "http://{host}"\n\n[host."http://{host}"]\n'
        '  capabilities = ["pull", "resolve"]\n'
    )
    return folder


def write_cni(work: Path, topo: Topology) -> None:
    """The CNI config and bin dirs containerd's config names (devkit.containerd)."""
    (work / "cni").mkdir(parents=True)
    first, last = POD_ADDRESSES
    (work / "cni" / "10-contrast.conf").write_text(json.dumps({
        "cniVersion": "0.4.0", "name": "contrast-devkit", "type": "contrast-devkit",
        "node_netns": topo.node, "bridge": "cni0", "subnet": SUBNET, "prefix": PREFIX,
        "first": first, "last": last, "gateway": GATEWAY, "data_dir": str(work / "ipam"),
    }))  # fmt: skip
    bins = work / "cni-bin"
    bins.mkdir()
    wrapper = bins / "contrast-devkit"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} {PLUGIN} "$@"\n')
    wrapper.chmod(0o755)
    (bins / "loopback").symlink_to("/usr/lib/cni/loopback")


def with_command(image: ob.Image, command: list[str]) -> ob.Image:
    """``image`` with ``command`` as its config's Cmd (a new config and manifest)."""
    config = json.loads(image.config)
    config["config"] = {"Cmd": command}
    config_blob = json.dumps(config).encode()
    manifest = json.loads(image.manifest)
    manifest["config"] = {**manifest["config"], "digest": ob.sha256(config_blob),
                          "size": len(config_blob)}  # fmt: skip
    manifest_blob = json.dumps(manifest).encode()
    blobs = {
        d: b for d, b in image.blobs.items() if b is not image.config and b is not image.manifest
    }
    blobs[ob.sha256(config_blob)] = config_blob
    blobs[ob.sha256(manifest_blob)] = manifest_blob
    return ob.Image(blobs, manifest_blob, config_blob, image.layers)


def pause_image() -> ob.Image:
    """A pause image runc can run: busybox's sleep for ~68 years (CRI stops a sandbox
    with SIGKILL, so PID 1 need not handle SIGTERM)."""
    return with_command(busybox_image(("sleep",)), ["/bin/sleep", "2147483647"])


@contextlib.contextmanager
def containerd_in(
    netns: str,
    config_text: str,
    work: Path,
    env: dict[str, str],
    release: ContainerdRelease = DEBIAN_RELEASE,
    *,
    wrap: tuple[str, ...] = (),
) -> Iterator[Containerd]:
    """containerd (``release``) on ``config_text`` inside ``netns`` with ``env`` (which
    it passes on to the shims; the release's programs first on its ``PATH``); stopped
    (and waited for) afterwards. ``wrap``: a command line the launch runs under (it
    ends by exec'ing its arguments), e.g. into namespaces of a test's own."""
    work.mkdir(parents=True, exist_ok=True)
    socket = work / "c.sock"  # work is short (node root): containerd adds ".ttrpc"
    config = work / "containerd.toml"
    config.write_text(sandboxed_config(config_text, work, socket=socket, release=release))
    log = work / "containerd.log"
    env = {**env, "PATH": release.path(env.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"))}
    argv = [release.containerd, "--config", str(config), "--root", str(work / "root"),
            "--state", str(work / "state"), "--address", str(socket)]  # fmt: skip
    # nsenter, not ``ip netns exec``: that remounts /sys for the netns, hiding the
    # cgroup mounts runc needs.
    enter = ["nsenter", f"--net={NETNS_DIR / netns}", "--"]
    running: list[subprocess.Popen[bytes]] = []

    def launch() -> None:
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [*wrap, *enter, *argv], stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
        running.append(proc)
        _wait_for_cri(daemon, proc, log)

    def restart() -> None:
        _stop(running[-1])
        launch()

    daemon = Containerd(socket, log, release, restarter=restart)
    try:
        launch()
        yield daemon
    finally:
        if running:
            _stop(running[-1])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait_for_cri(daemon: Containerd, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise DevkitError(f"containerd exited: {log.read_text()[-3000:]}")
        try:
            daemon.cri_status(timeout=2)
        except grpc.RpcError as err:
            if time.monotonic() > deadline:
                raise DevkitError(
                    f"containerd's CRI did not answer: {err}\n{log.read_text()[-3000:]}"
                ) from err
        else:
            return
        time.sleep(0.2)


@dataclass(frozen=True)
class CriNode:
    """What a caller needs to run pods: the CRI client and everything behind it."""

    cri: Cri
    containerd: Containerd
    node: Node
    topology: Topology
    registry: Registry
    env: dict[str, str]  # containerd's (and so the shim's and daemon's) environment
    runtime_config: Path
    digest: str  # the busybox image's manifest digest
    handler: str = HANDLER
    runc_handler: str = RUNC
    registry_host: str = REGISTRY_HOST

    @property
    def release(self) -> ContainerdRelease:
        """Which containerd runs (its ``version``, its ``ctr``)."""
        return self.containerd.release

    @property
    def image(self) -> str:
        """The busybox image pinned by digest (the same name for containerd and guest)."""
        return f"{BUSYBOX}@{self.digest}"

    @property
    def image_tag(self) -> str:
        return f"{BUSYBOX}:{BUSYBOX_TAG}"

    @property
    def logs(self) -> Path:
        return self.node.root / "pods"

    def puller_settings(self) -> str:
        """The guest image puller's settings (initdata ``imagepull.toml``): plain HTTP
        to the registry."""
        return f'[registries."{self.registry_host}"]\ninsecure = true\n'

    def pod(self, name: str, annotations: dict[str, str] | None = None) -> PodSpec:
        """A pod on the CNI network with its log directory (``logs/<name>``) made."""
        folder = self.logs / name
        folder.mkdir(parents=True, exist_ok=True)
        return PodSpec(
            name, annotations=annotations or {}, network=api_pb2.POD, log_directory=str(folder)
        )

    def qemus(self) -> list[str]:
        """QEMU command lines of this node's pod-VMs."""
        found = subprocess.run(
            ["pgrep", "-a", "qemu-system"], stdin=subprocess.DEVNULL, capture_output=True,
            text=True, timeout=30, check=False,
        )  # fmt: skip
        return [line for line in found.stdout.splitlines() if str(self.node.root) in line]

    def pod_veths(self) -> list[str]:
        """Pods' veths on the node's bridge (the CNI plugin's host ends)."""
        out = ip("-n", self.topology.node, "-o", "link", "show", "master", "cni0")
        names = {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}
        return sorted(names - BRIDGE_BASELINE)

    def leftovers(self) -> list[str]:
        """What removed pods left behind: QEMUs, veths on the bridge, taps in pod
        netns, mounts under the node root, sandbox state files."""
        found = [f"QEMU: {line}" for line in self.qemus()]
        found += [f"veth on cni0: {name}" for name in self.pod_veths()]
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
        found += [f"mount: {line}" for line in mounts if str(self.node.root) in line]
        found += [f"state: {p}" for p in self.node.state_dir.rglob("*.json")]
        found += [f"address held: {p.name}" for p in (self.node.root / "ctd/ipam").glob("*")]
        return found


def _remove_pods(cri: Cri) -> None:
    """Best effort: every pod still there, stopped and removed (a failed caller's)."""
    try:
        pods = cri.pods()
    except grpc.RpcError:
        return
    for pod in pods:
        with contextlib.suppress(grpc.RpcError):
            cri.stop_pod(pod.id)
        with contextlib.suppress(grpc.RpcError):
            cri.remove_pod(pod.id)


@contextlib.contextmanager
def cri_node(
    image: GuestImage,
    parent: Path = Path("/tmp"),
    *,
    base_config: str | None = None,
    handler: str = HANDLER,
    containerd: str | ContainerdRelease = DEBIAN,
    wrap: tuple[str, ...] = (),
) -> Iterator[CriNode]:
    """A CRI node for ``image`` under ``parent`` (see the module docstring). Raises
    DevkitError (or CommandFailed) naming what did not come up; ReleaseMissing when
    ``containerd`` (a version of ``devkit.containerd.VERSIONS``, or a release) is not
    on this machine. The node's config starts from ``base_config``, else from the
    release's own ``containerd config default``. ``base_config``: a containerd config
    naming ``handler`` already (the installer's, as the demo has it); its runtime config
    is used then, not ``CriNode.runtime_config``. ``wrap``: see :func:`containerd_in`."""
    chosen = containerd_release(containerd) if isinstance(containerd, str) else containerd
    base = base_config if base_config is not None else chosen.default_config()
    with ExitStack() as stack:
        node = stack.enter_context(node_env("pod-vm", parent=parent))
        topo = stack.enter_context(pod_topology())
        registry = stack.enter_context(Registry(node.root / "registry"))
        busybox = busybox_image()
        digest = registry.upload(busybox.blobs, busybox.manifest, "test/busybox", BUSYBOX_TAG)
        pause = pause_image()
        registry.upload(pause.blobs, pause.manifest, "contrast/pause", "3.6")
        stack.enter_context(
            Forward(topo.path(topo.peer), (PEER_IP, REGISTRY_PORT), ("127.0.0.1", registry.port))
        )
        runtime_config = node.root / "runtime.toml"
        runtime_config.write_text(runtime_config_text(image))
        work = node.root / "ctd"
        write_cni(work, topo)
        hosts = write_registry_hosts(work / "certs.d", REGISTRY_HOST)
        text = containerd_config_with_handler(
            runtime_config, sandbox_image=PAUSE, registry_hosts=hosts, handler=handler,
            base=base,
        )  # fmt: skip
        env = {**os.environ, **{k: v for k, v in node.env.items() if k != "TTRPC_ADDRESS"}}
        daemon = stack.enter_context(containerd_in(topo.node, text, work, env, chosen, wrap=wrap))
        cri = Cri(daemon.socket)
        stack.callback(_remove_pods, cri)
        cri.pull_image(PAUSE)
        yield CriNode(
            cri, daemon, node, topo, registry, env, runtime_config, digest, handler=handler
        )
