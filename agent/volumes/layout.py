"""What each bind mount of a container is, from the kubelet's layout and its destination.

The kubelet (pkg/kubelet, pkg/volume) keeps a pod's files under
``<kubelet root>/pods/<pod uid>/``:

- ``volumes/kubernetes.io~<plugin>/<name>/``: one directory per volume. configMap,
  secret, projected (the service-account token, CA, namespace) and downwardAPI volumes
  are written by the atomic writer (pkg/volume/util/atomic_writer.go): the visible
  names are symlinks into ``..data``, itself a symlink to a timestamped directory
  ``..<time>.<random>``; an update writes a new directory and renames ``..data`` over
  the old link. emptyDir is a plain directory, a tmpfs mounted there for
  ``medium: Memory``.
- ``volume-subpaths/<volume>/<container>/<index>``: a bind of a ``subPath`` (a
  snapshot: the kubelet does not update subPath mounts either);
- ``etc-hosts``: the pod's hosts file (pod IP, hostAliases);
- ``containers/<container>/<id>``: the file the kubelet reads the termination message
  from after the container exited.

containerd adds its own ``/etc/hostname``, ``/etc/hosts`` (when the kubelet sent none),
``/etc/resolv.conf`` and ``/dev/shm`` from its sandbox directory. Anything outside the
kubelet root is a hostPath (or a ``ctr run --mount``). containerd resolves symlinks in
host paths before writing config.json, so the root is compared resolved.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.volumes.errors import VolumeError

KUBELET_ROOT_ENV = "CONTRAST_KUBELET_ROOT"
KUBELET_ROOT = Path("/var/lib/kubelet")


class Kind(enum.Enum):
    CONFIG_MAP = "configMap"
    SECRET = "secret"  # noqa: S105 - a volume kind
    PROJECTED = "projected"
    DOWNWARD_API = "downwardAPI"
    EMPTY_DIR = "emptyDir"
    SUB_PATH = "subPath"
    ETC_HOSTS = "etc-hosts"
    TERMINATION_LOG = "termination-log"
    # containerd's /etc/hostname, /etc/hosts, /etc/resolv.conf: the guest's own files,
    # written from CreateSandboxRequest (hostname, dns), the same content.
    POD_FILE = "pod file"
    SHM = "/dev/shm"
    HOST_PATH = "hostPath"


# The atomic writer's volumes: copied in and kept current.
ATOMIC = {
    "kubernetes.io~configmap": Kind.CONFIG_MAP,
    "kubernetes.io~secret": Kind.SECRET,
    "kubernetes.io~projected": Kind.PROJECTED,
    "kubernetes.io~downward-api": Kind.DOWNWARD_API,
}
EMPTY_DIR_PLUGIN = "kubernetes.io~empty-dir"
POD_FILES = ("/etc/hostname", "/etc/hosts", "/etc/resolv.conf")
# Options asking for mount propagation (CRI's HostToContainer: rslave, Bidirectional:
# rshared); rprivate (CRI's default) propagates nothing.
PROPAGATING = ("rshared", "shared", "rslave", "slave")


def kubelet_root(env: Mapping[str, str] = os.environ) -> Path:
    """The kubelet's root directory (``--root-dir``): ``$CONTRAST_KUBELET_ROOT`` or
    /var/lib/kubelet. Raises VolumeError for a relative path."""
    root = Path(env.get(KUBELET_ROOT_ENV) or KUBELET_ROOT)
    if not root.is_absolute():
        raise VolumeError(f"{KUBELET_ROOT_ENV}={root}: not an absolute path")
    return root


@dataclass(frozen=True)
class Classified:
    """One bind mount of a container and what it is."""

    kind: Kind
    destination: str
    source: Path
    readonly: bool
    # The volume's name (subPath: its volume's), else the file's role.
    name: str
    # subPath: the kind of the volume it is a part of.
    of: Kind | None = None
    # A propagation the mount asks for (PROPAGATING), or "".
    propagation: str = ""

    def describe(self) -> str:
        """``mount <dest> (<kind> <name>, <source>)`` for messages."""
        what = f"{self.kind.value} {self.name}" if self.name else self.kind.value
        if self.of is not None:
            what += f" of {self.of.value}"
        return f"mount {self.destination} ({what}, {self.source})"


def is_bind(mount: Mapping[str, Any]) -> bool:
    options = mount.get("options") or []
    return mount.get("type") == "bind" or "bind" in options or "rbind" in options


def readonly(mount: Mapping[str, Any]) -> bool:
    return "ro" in (mount.get("options") or [])


def propagation(mount: Mapping[str, Any]) -> str:
    return next((o for o in mount.get("options") or [] if o in PROPAGATING), "")


def classify(mount: Mapping[str, Any], root: Path) -> Classified:
    """What the bind ``mount`` (an OCI mount of config.json) is. Raises VolumeError for
    a kubelet path of a kind the pod-VM does not provide."""
    dest = str(mount.get("destination", ""))
    source = Path(str(mount.get("source", "")))
    ro = readonly(mount)
    shared = propagation(mount)

    def make(kind: Kind, name: str, of: Kind | None = None) -> Classified:
        return Classified(kind, dest, source, ro, name, of, shared)

    if dest == "/dev/shm":
        return make(Kind.SHM, "")
    if dest == "/etc/resolv.conf":
        return make(Kind.POD_FILE, "resolv.conf")
    pods = Path(os.path.realpath(root)) / "pods"
    if not source.is_absolute() or ".." in source.parts:
        raise VolumeError(f"mount {dest}: source {str(source)!r} is not a normalized path")
    if source.is_relative_to(pods):
        return _kubelet(make, source.relative_to(pods).parts, pods, dest, source)
    if source.is_relative_to(root) or source.is_relative_to(os.path.realpath(root)):
        raise VolumeError(
            f"mount {dest}: {source} is a kubelet path outside pods/ that the pod-VM "
            "does not provide"
        )
    if dest in POD_FILES:
        return make(Kind.POD_FILE, dest.removeprefix("/etc/"))
    return make(Kind.HOST_PATH, "")


def _kubelet(
    make: Callable[..., Classified], parts: tuple[str, ...], pods: Path, dest: str, source: Path
) -> Classified:
    refused = f"mount {dest}: {source}"
    if len(parts) == 2 and parts[1] == "etc-hosts":
        return make(Kind.ETC_HOSTS, "hosts")
    if len(parts) == 4 and parts[1] == "volumes":
        plugin, name = parts[2], parts[3]
        if plugin in ATOMIC:
            return make(ATOMIC[plugin], name)
        if plugin == EMPTY_DIR_PLUGIN:
            return make(Kind.EMPTY_DIR, name)
        raise VolumeError(
            f"{refused}: volume {name!r} of plugin {plugin.removeprefix('kubernetes.io~')} "
            "cannot be provided in the pod-VM (configMap, secret, projected, downwardAPI "
            "and emptyDir volumes can)"
        )
    if len(parts) == 5 and parts[1] == "volume-subpaths":
        volume = parts[2]
        plugins = sorted(p.parent.name for p in (pods / parts[0] / "volumes").glob(f"*/{volume}"))
        kinds = [ATOMIC[p] for p in plugins if p in ATOMIC]
        if len(plugins) == 1 and kinds:
            return make(Kind.SUB_PATH, volume, kinds[0])
        plugin = plugins[0].removeprefix("kubernetes.io~") if plugins else "unknown"
        raise VolumeError(
            f"{refused}: a subPath of volume {volume!r} ({plugin}) cannot be provided in "
            "the pod-VM (subPaths of configMap, secret, projected and downwardAPI volumes "
            "are copied once)"
        )
    if len(parts) == 4 and parts[1] == "containers":
        return make(Kind.TERMINATION_LOG, "termination-log")
    raise VolumeError(f"{refused}: a kubelet path the pod-VM does not provide")
