"""A pod directory in the kubelet's exact on-disk layout, and the CRI mounts a kubelet
sends for it (there is no kubelet on our machines: this writes what it writes).

Under ``<root>/pods/<uid>/`` (pkg/kubelet's pod directories):

- ``volumes/kubernetes.io~<plugin>/<name>/``, configMap, secret, projected and
  downwardAPI volumes written as pkg/volume/util/atomic_writer.go does: the payload
  in a new timestamped directory ``..<UTC time>.<random>``, a ``..data_tmp`` symlink
  to it renamed over ``..data``, the top-level names as symlinks ``<name> ->
  ..data/<name>``, then the previous directory and names no longer in the payload
  removed;
- ``volumes/kubernetes.io~empty-dir/<name>/``: a directory (mode 0777), with a tmpfs
  mounted on it for ``medium: Memory``;
- ``etc-hosts`` (the pod's hosts file) and ``containers/<name>/<id>`` (the empty file
  a container's termination message comes back in).
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from api.containerd.cri.runtime.v1 import api_pb2
from devkit.command import run
from devkit.cri import Cri, PodSpec
from devkit.errors import CommandFailed, DevkitError

TERMINATION_PATH = "/dev/termination-log"


def write_atomic(volume: Path, payload: dict[str, bytes], mode: int = 0o644) -> str:
    """Write ``payload`` (relative path -> content) into ``volume`` the atomic writer's
    way; the new timestamped directory's name."""
    volume.mkdir(parents=True, exist_ok=True)
    link = volume / "..data"
    old = str(link.readlink()) if link.is_symlink() else None
    stamp = time.strftime("..%Y_%m_%d_%H_%M_%S.", time.gmtime())
    version = Path(tempfile.mkdtemp(prefix=stamp, dir=volume))
    version.chmod(0o755)
    for rel, data in payload.items():
        path = version / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(mode)
    tmp = volume / "..data_tmp"
    tmp.symlink_to(version.name)
    tmp.rename(volume / "..data")
    top = {rel.split("/")[0] for rel in payload}
    for name in sorted(top):
        if not (volume / name).is_symlink():
            (volume / name).symlink_to(f"..data/{name}")
    if old is not None and old != version.name:
        shutil.rmtree(volume / old)
    for entry in volume.iterdir():
        if not entry.name.startswith("..") and entry.name not in top:
            entry.unlink()
    return version.name


@dataclass
class KubeletPod:
    """One pod's directory under a kubelet root; :meth:`mounts` its CRI mounts."""

    root: Path
    uid: str
    _mounts: list[api_pb2.Mount] = field(default_factory=list)
    _tmpfs: list[Path] = field(default_factory=list)

    @property
    def directory(self) -> Path:
        return self.root / "pods" / self.uid

    def volume(self, plugin: str, name: str) -> Path:
        return self.directory / "volumes" / f"kubernetes.io~{plugin}" / name

    def atomic(
        self, plugin: str, name: str, payload: dict[str, bytes], at: str, mode: int = 0o644
    ) -> Path:
        """A configMap/secret/projected/downward-api volume mounted read-only at ``at``."""
        path = self.volume(plugin, name)
        write_atomic(path, payload, mode)
        self._mounts.append(api_pb2.Mount(container_path=at, host_path=str(path), readonly=True))
        return path

    def update(self, plugin: str, name: str, payload: dict[str, bytes], mode: int = 0o644) -> str:
        """The kubelet's update of a volume (a configMap edit, the token's rotation)."""
        return write_atomic(self.volume(plugin, name), payload, mode)

    def empty_dir(self, name: str, at: str, memory_bytes: int = 0) -> Path:
        """An emptyDir at ``at``; ``memory_bytes``: ``medium: Memory`` with that size
        limit (a tmpfs mounted as the kubelet does; needs root)."""
        path = self.volume("empty-dir", name)
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o777)
        if memory_bytes:
            run(["mount", "-t", "tmpfs", "-o", f"size={memory_bytes}", "tmpfs", str(path)],
                timeout=30)  # fmt: skip
            self._tmpfs.append(path)
            path.chmod(0o777)
        self._mounts.append(api_pb2.Mount(container_path=at, host_path=str(path)))
        return path

    def etc_hosts(self, text: str) -> Path:
        path = self.directory / "etc-hosts"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o644)
        self._mounts.append(api_pb2.Mount(container_path="/etc/hosts", host_path=str(path)))
        return path

    def termination_log(self, container: str, at: str = TERMINATION_PATH) -> Path:
        folder = self.directory / "containers" / container
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / secrets.token_hex(4)
        path.touch(mode=0o666)
        self._mounts.append(api_pb2.Mount(container_path=at, host_path=str(path)))
        return path

    def host_path(self, source: Path, at: str, readonly: bool) -> None:
        self._mounts.append(
            api_pb2.Mount(container_path=at, host_path=str(source), readonly=readonly)
        )

    def mounts(self) -> list[api_pb2.Mount]:
        """The CRI mounts added so far, in order; clears the list (the next container's)."""
        out, self._mounts = self._mounts, []
        return out

    def remove(self) -> None:
        """Unmount the tmpfs emptyDirs and remove the pod's directory."""
        for path in self._tmpfs:
            with contextlib.suppress(CommandFailed):
                run(["umount", str(path)], timeout=30)
        self._tmpfs.clear()
        shutil.rmtree(self.directory, ignore_errors=True)


def create_container(
    cri: Cri,
    pod_id: str,
    pod: PodSpec,
    name: str,
    *,
    image: str,
    command: list[str],
    mounts: list[api_pb2.Mount],
    timeout: float = 300,
) -> str:
    """CRI CreateContainer as the kubelet sends it, with ``mounts``; the container id.
    Raises grpc.RpcError."""
    config = api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name=name),
        image=api_pb2.ImageSpec(image=image),
        command=command,
        log_path=f"{name}.log",
        mounts=mounts,
    )
    request = api_pb2.CreateContainerRequest(
        pod_sandbox_id=pod_id, config=config, sandbox_config=pod.config()
    )
    reply = cri.call("CreateContainer", request, api_pb2.CreateContainerResponse, timeout)
    if not reply.container_id:
        raise DevkitError(f"CreateContainer {name}: no container id")
    return reply.container_id
