"""Which kind each bind mount a kubelet (through containerd's CRI) sends is, by its path."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.volumes.errors import VolumeError
from agent.volumes.layout import Kind, classify, kubelet_root

ROOT = Path("/var/lib/kubelet")
POD = ROOT / "pods" / "1f2e"


def bind(dest: str, source: Path | str, ro: bool = False) -> dict[str, object]:
    return {"destination": dest, "type": "bind", "source": str(source),
            "options": ["rbind", "rprivate", "ro" if ro else "rw"]}  # fmt: skip


@pytest.mark.parametrize(
    ("dest", "source", "kind", "name"),
    [
        ("/etc/config", POD / "volumes/kubernetes.io~configmap/cfg", Kind.CONFIG_MAP, "cfg"),
        ("/etc/secret", POD / "volumes/kubernetes.io~secret/sec", Kind.SECRET, "sec"),
        ("/var/run/secrets/kubernetes.io/serviceaccount",
         POD / "volumes/kubernetes.io~projected/kube-api-access-x", Kind.PROJECTED,
         "kube-api-access-x"),
        ("/etc/podinfo", POD / "volumes/kubernetes.io~downward-api/info", Kind.DOWNWARD_API,
         "info"),
        ("/cache", POD / "volumes/kubernetes.io~empty-dir/cache", Kind.EMPTY_DIR, "cache"),
        ("/etc/hosts", POD / "etc-hosts", Kind.ETC_HOSTS, "hosts"),
        ("/dev/termination-log", POD / "containers/app/4e1f0a2b", Kind.TERMINATION_LOG,
         "termination-log"),
        ("/etc/hostname", "/var/lib/containerd/io.containerd.grpc.v1.cri/sandboxes/s/hostname",
         Kind.POD_FILE, "hostname"),
        ("/etc/hosts", "/var/lib/containerd/io.containerd.grpc.v1.cri/sandboxes/s/hosts",
         Kind.POD_FILE, "hosts"),
        ("/etc/resolv.conf", "/var/lib/containerd/sandboxes/s/resolv.conf", Kind.POD_FILE,
         "resolv.conf"),
        ("/dev/shm", "/run/containerd/io.containerd.grpc.v1.cri/sandboxes/s/shm", Kind.SHM, ""),
        ("/data", "/srv/data", Kind.HOST_PATH, ""),
    ],
)  # fmt: skip
def test_kinds(dest: str, source: Path | str, kind: Kind, name: str) -> None:
    found = classify(bind(dest, source, ro=True), ROOT)
    assert (found.kind, found.name, found.readonly) == (kind, name, True)
    assert found.describe().startswith(f"mount {dest} (")


def test_subpath_takes_its_volumes_kind(tmp_path: Path) -> None:
    pod = tmp_path / "pods" / "u1"
    (pod / "volumes/kubernetes.io~configmap/cfg").mkdir(parents=True)
    (pod / "volumes/kubernetes.io~empty-dir/scratch").mkdir(parents=True)
    found = classify(bind("/etc/app.conf", pod / "volume-subpaths/cfg/app/0"), tmp_path)
    assert (found.kind, found.name, found.of) == (Kind.SUB_PATH, "cfg", Kind.CONFIG_MAP)
    with pytest.raises(VolumeError, match=r"subPath of volume 'scratch' \(empty-dir\)"):
        classify(bind("/s", pod / "volume-subpaths/scratch/app/1"), tmp_path)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (POD / "volumes/kubernetes.io~csi/pvc-1/mount", "a kubelet path the pod-VM does not"),
        (POD / "volumes/kubernetes.io~nfs/share", "volume 'share' of plugin nfs cannot be"),
        (POD / "plugins/x", "a kubelet path the pod-VM does not provide"),
        (ROOT / "device-plugins/kubelet.sock", "outside pods/"),
        ("/srv/../etc", "not a normalized path"),
    ],
)
def test_refused_naming_the_mount(source: Path | str, message: str) -> None:
    with pytest.raises(VolumeError, match=r"^mount /data: ") as refused:
        classify(bind("/data", source), ROOT)
    assert message in str(refused.value)


def test_kubelet_root_from_the_environment() -> None:
    assert kubelet_root({}) == ROOT
    assert kubelet_root({"CONTRAST_KUBELET_ROOT": "/tmp/k"}) == Path("/tmp/k")
    with pytest.raises(VolumeError, match="CONTRAST_KUBELET_ROOT=k: not an absolute path"):
        kubelet_root({"CONTRAST_KUBELET_ROOT": "k"})
