"""packaging/daemonset.yaml as a kubelet hands it to containerd's CRI: the pod sandbox
config and each container's config, read from the manifest, not restated.

What a kubelet does with the fields the DaemonSet uses (and only those: any other field
of the pod or a container is an error naming it, so a manifest change cannot be ignored
silently by the tier that runs it):

- ``hostPID`` → the sandbox's and every container's pid namespace mode NODE;
  ``hostNetwork`` absent → POD network; a privileged container → a privileged sandbox;
- ``command`` → CRI ``command`` (the image's entrypoint replaced), ``env`` → ``envs``;
- each ``volumeMount`` of a ``hostPath`` volume → a CRI Mount of the volume's path
  (``host_path(path)`` may move it under a test node's root), ``readOnly``,
  ``mountPropagation`` (None → private, HostToContainer, Bidirectional); the kubelet
  checks the ``type`` first: ``Directory`` must exist, ``DirectoryOrCreate`` is made
  (0755);
- ``resources.requests.cpu`` → ``cpu_shares`` (milli-CPU * 1024 / 1000, at least 2, as
  the kubelet's MilliCPUToShares, 2 without a request); no limits → no quota and no
  memory limit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from api.containerd.cri.runtime.v1 import api_pb2
from devkit.errors import DevkitError

DAEMONSET = Path(__file__).resolve().parents[1] / "packaging" / "daemonset.yaml"
_POD_KEYS = {
    "nodeSelector", "hostPID", "automountServiceAccountToken", "priorityClassName",
    "tolerations", "initContainers", "containers", "volumes",
}  # fmt: skip
_CONTAINER_KEYS = {
    "name", "image", "command", "securityContext", "volumeMounts", "resources", "env",
}  # fmt: skip
_MOUNT_KEYS = {"name", "mountPath", "mountPropagation", "readOnly"}
_PROPAGATION = {
    None: api_pb2.PROPAGATION_PRIVATE,
    "None": api_pb2.PROPAGATION_PRIVATE,
    "HostToContainer": api_pb2.PROPAGATION_HOST_TO_CONTAINER,
    "Bidirectional": api_pb2.PROPAGATION_BIDIRECTIONAL,
}


class DaemonSetError(DevkitError):
    """The DaemonSet uses a field this reading does not implement, or a bad value."""


@dataclass(frozen=True)
class DaemonSetPod:
    """The DaemonSet's pod template, ready for CRI."""

    spec: dict[str, Any]
    namespace: str
    name: str

    @property
    def host_pid(self) -> bool:
        return bool(self.spec.get("hostPID", False))

    def container_names(self, init: bool = False) -> list[str]:
        return [c["name"] for c in self.spec["initContainers" if init else "containers"]]

    def container(self, name: str) -> dict[str, Any]:
        for c in [*self.spec.get("initContainers", []), *self.spec["containers"]]:
            if c["name"] == name:
                return dict(c)
        raise DaemonSetError(f"the DaemonSet has no container {name!r}")

    def sandbox_config(
        self, uid: str, log_directory: str, attempt: int = 0
    ) -> api_pb2.PodSandboxConfig:
        privileged = any(
            c.get("securityContext", {}).get("privileged", False)
            for c in [*self.spec.get("initContainers", []), *self.spec["containers"]]
        )
        return api_pb2.PodSandboxConfig(
            metadata=api_pb2.PodSandboxMetadata(
                name=self.name, uid=uid, namespace=self.namespace, attempt=attempt
            ),
            hostname=self.name,
            log_directory=log_directory,
            labels={"io.kubernetes.pod.name": self.name, "io.kubernetes.pod.uid": uid},
            linux=api_pb2.LinuxPodSandboxConfig(
                security_context=api_pb2.LinuxSandboxSecurityContext(
                    namespace_options=self._namespaces(), privileged=privileged
                )
            ),
        )

    def _namespaces(self) -> api_pb2.NamespaceOption:
        return api_pb2.NamespaceOption(
            network=api_pb2.POD, pid=api_pb2.NODE if self.host_pid else api_pb2.POD
        )

    def container_config(
        self,
        name: str,
        image: str,
        host_path: Callable[[str], Path] = Path,
        attempt: int = 0,
    ) -> api_pb2.ContainerConfig:
        """CreateContainer's config for container ``name`` running ``image``.

        hostPath directories are checked (and made) as the kubelet does, at
        ``host_path(path)``. Raises DaemonSetError naming a field not implemented here.
        """
        c = self.container(name)
        unknown = sorted(set(c) - _CONTAINER_KEYS)
        if unknown:
            raise DaemonSetError(f"container {name}: fields not implemented: {unknown}")
        security = c.get("securityContext", {})
        if set(security) - {"privileged"}:
            raise DaemonSetError(f"container {name}: securityContext {sorted(security)}")
        return api_pb2.ContainerConfig(
            metadata=api_pb2.ContainerMetadata(name=name, attempt=attempt),
            image=api_pb2.ImageSpec(image=image),
            command=[str(w) for w in c.get("command", [])],
            envs=[api_pb2.KeyValue(key=e["name"], value=str(e["value"])) for e in c.get("env", [])],
            mounts=[self._mount(name, m, host_path) for m in c.get("volumeMounts", [])],
            log_path=f"{name}_{attempt}.log",
            linux=api_pb2.LinuxContainerConfig(
                resources=api_pb2.LinuxContainerResources(cpu_shares=_cpu_shares(c)),
                security_context=api_pb2.LinuxContainerSecurityContext(
                    privileged=bool(security.get("privileged", False)),
                    namespace_options=self._namespaces(),
                ),
            ),
        )

    def _mount(
        self, container: str, mount: dict[str, Any], host_path: Callable[[str], Path]
    ) -> api_pb2.Mount:
        unknown = sorted(set(mount) - _MOUNT_KEYS)
        if unknown:
            raise DaemonSetError(f"container {container}: volumeMount fields {unknown}")
        volume = self._volume(mount["name"])
        source = host_path(volume["path"])
        kind = volume.get("type", "")
        if kind == "DirectoryOrCreate":
            source.mkdir(mode=0o755, parents=True, exist_ok=True)
        elif kind == "Directory" and not source.is_dir():
            raise DaemonSetError(f"volume {mount['name']}: hostPath {source} is no directory")
        elif kind not in ("Directory", "DirectoryOrCreate"):
            raise DaemonSetError(f"volume {mount['name']}: hostPath type {kind!r}")
        propagation = mount.get("mountPropagation")
        if propagation not in _PROPAGATION:
            raise DaemonSetError(f"volumeMount {mount['name']}: mountPropagation {propagation!r}")
        return api_pb2.Mount(
            container_path=mount["mountPath"],
            host_path=str(source),
            readonly=bool(mount.get("readOnly", False)),
            propagation=_PROPAGATION[propagation],
        )

    def _volume(self, name: str) -> dict[str, Any]:
        for volume in self.spec["volumes"]:
            if volume["name"] == name:
                if set(volume) != {"name", "hostPath"}:
                    raise DaemonSetError(f"volume {name}: only hostPath volumes are implemented")
                return dict(volume["hostPath"])
        raise DaemonSetError(f"no volume {name!r} in the DaemonSet")


def _cpu_shares(container: dict[str, Any]) -> int:
    resources = container.get("resources", {})
    if set(resources) - {"requests"} or set(resources.get("requests", {})) - {"cpu", "memory"}:
        raise DaemonSetError(f"container {container['name']}: resources {resources}")
    cpu = str(resources.get("requests", {}).get("cpu", "0"))
    milli = int(cpu[:-1]) if cpu.endswith("m") else int(float(cpu) * 1000)
    return max(2, milli * 1024 // 1000)


def load(path: Path = DAEMONSET) -> DaemonSetPod:
    """The pod template of the DaemonSet at ``path``; raises DaemonSetError."""
    [doc] = [d for d in yaml.safe_load_all(path.read_text()) if d]
    if doc.get("kind") != "DaemonSet":
        raise DaemonSetError(f"{path}: kind {doc.get('kind')!r}, not DaemonSet")
    spec = doc["spec"]["template"]["spec"]
    unknown = sorted(set(spec) - _POD_KEYS)
    if unknown:
        raise DaemonSetError(f"{path}: pod fields not implemented: {unknown}")
    if spec.get("hostNetwork"):
        raise DaemonSetError(f"{path}: hostNetwork is not implemented")
    meta = doc["metadata"]
    return DaemonSetPod(spec, meta.get("namespace", "default"), meta["name"])
