"""The host's OCI spec adapted to the guest: host paths dropped, guest choices applied."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.kata import oci_linux_pb2, oci_pb2, oci_process_pb2, oci_root_pb2
from guest.agent.errors import InvalidRequest
from guest.agent.spec import GuestContext, adapt, resources
from tests.integration.guestagent.requests import spec

FILES = Path("/run/contrast/sandbox")
SHARED = "/run/kata-containers/shared/containers/c1-token"
EXISTING = {SHARED, "/etc", "/run/kata-containers/shared/containers/../../../etc"}


def ctx(**kw: object) -> GuestContext:
    defaults: dict[str, object] = {
        "container_id": "c1", "sandbox_files": FILES, "exists": lambda p: p in EXISTING,
    }  # fmt: skip
    defaults.update(kw)
    return GuestContext(**defaults)  # type: ignore[arg-type]


def test_mounts_shared_kept_sandbox_files_used() -> None:
    host = spec(["sh"], image="img")
    host.Mounts.append(oci_root_pb2.Mount(destination="/token", type="bind", source=SHARED))
    copied_hosts = "/run/kata-containers/shared/containers/c1-0123-hosts"
    host.Mounts.append(
        oci_root_pb2.Mount(destination="/etc/hostname", type="bind", source=copied_hosts)
    )
    out = adapt(host, ctx(exists=lambda p: p in {*EXISTING, copied_hosts}))
    mounts = {m["destination"]: m for m in out.config["mounts"]}
    assert mounts["/proc"]["type"] == "proc"
    assert mounts["/etc/hosts"]["source"] == str(FILES / "hosts")  # a host path: the guest's
    assert mounts["/etc/resolv.conf"]["source"] == str(FILES / "resolv.conf")
    assert mounts["/etc/resolv.conf"]["options"] == ["rbind", "ro"]
    assert mounts["/etc/hostname"]["source"] == copied_hosts  # copied in by the host: its
    assert mounts["/dev/shm"]["type"] == "tmpfs"
    assert mounts["/token"]["source"] == SHARED  # copied into the guest by CopyFile: kept


@pytest.mark.parametrize(
    ("source", "kind", "message"),
    [
        ("/etc", "bind", "is not in the guest"),  # the guest's own files: never
        ("/run/kata-containers/shared/containers/../../../etc", "bind", "is not in the guest"),
        ("/var/lib/kubelet/pods/u/volumes/kubernetes.io~secret/s", "bind", "is not in the guest"),
        ("/run/kata-containers/shared/containers/c1-gone", "bind", "was not provided"),
        ("server:/export", "nfs", "nfs of 'server:/export' is not in the guest"),
    ],
)
def test_a_mount_the_guest_lacks_is_refused_naming_it(source: str, kind: str, message: str) -> None:
    host = spec(["sh"], image="img")
    options = ["rbind"] if kind == "bind" else []
    host.Mounts.append(
        oci_root_pb2.Mount(destination="/data", type=kind, source=source, options=options)
    )
    with pytest.raises(InvalidRequest, match="mount /data: ") as refused:
        adapt(host, ctx())
    assert message in str(refused.value)


def test_namespaces_join_the_sandbox_and_network_is_dropped() -> None:
    out = adapt(spec(["sh"]), ctx(sandbox_pid=77))
    namespaces = {n["type"]: n.get("path") for n in out.config["linux"]["namespaces"]}
    assert namespaces == {
        "pid": None,
        "ipc": "/proc/77/ns/ipc",
        "uts": "/proc/77/ns/uts",
        "mount": None,
        "cgroup": None,
    }
    assert "namespace network: dropped" in out.notes
    assert "hostname" not in out.config  # a joined uts namespace keeps the pod's name


def test_sandbox_pidns_joins_the_pause_pid_namespace() -> None:
    out = adapt(spec(["sh"]), ctx(sandbox_pid=77, join_pid_ns=True))
    namespaces = {n["type"]: n.get("path") for n in out.config["linux"]["namespaces"]}
    assert namespaces["pid"] == "/proc/77/ns/pid"


def test_pause_container_gets_its_own_namespaces_and_hostname() -> None:
    out = adapt(spec(["/pause"], sandbox=True), ctx(sandbox_pid=None))
    assert all("path" not in n for n in out.config["linux"]["namespaces"])
    assert out.config["hostname"] == "pod-host"


def test_root_cgroup_and_process() -> None:
    out = adapt(spec(["echo", "hi"], memory_limit=1 << 20), ctx())
    config = out.config
    assert config["root"] == {"path": "rootfs", "readonly": False}
    assert config["linux"]["cgroupsPath"] == "/contrast/c1"
    assert config["linux"]["resources"]["memory"] == {"limit": 1 << 20, "swap": 1 << 20}
    assert config["process"]["args"] == ["echo", "hi"]
    assert config["process"]["cwd"] == "/"
    assert config["process"]["capabilities"]["bounding"] == ["CAP_KILL", "CAP_CHOWN"]
    assert config["linux"]["maskedPaths"] == ["/proc/kcore", "/proc/keys"]


def test_hooks_and_host_devices_dropped() -> None:
    host = spec(["sh"])
    host.Hooks.Prestart.add(Path="/usr/bin/nvidia-hook")
    host.Linux.Devices.append(oci_linux_pb2.LinuxDevice(Path="/dev/host-only", Type="c"))
    out = adapt(host, ctx())
    assert "hooks" not in out.config
    assert "devices" not in out.config["linux"]
    assert "hooks: host programs, dropped" in out.notes


def test_seccomp_carried_over() -> None:
    host = spec(["sh"])
    host.Linux.Seccomp.DefaultAction = "SCMP_ACT_ERRNO"
    call = host.Linux.Seccomp.Syscalls.add(Names=["read"], Action="SCMP_ACT_ALLOW")
    call.errnoret = 0
    seccomp = adapt(host, ctx()).config["linux"]["seccomp"]
    assert seccomp == {
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW", "errnoRet": 0}],
    }


def test_spec_without_args_refused() -> None:
    with pytest.raises(InvalidRequest):
        adapt(oci_pb2.Spec(Process=oci_process_pb2.Process()), ctx())


def test_resources_for_update() -> None:
    res = oci_linux_pb2.LinuxResources(
        CPU=oci_linux_pb2.LinuxCPU(Quota=50000, Period=100000),
        Pids=oci_linux_pb2.LinuxPids(Limit=5),
    )
    assert resources(res) == {"cpu": {"quota": 50000, "period": 100000}, "pids": {"limit": 5}}
