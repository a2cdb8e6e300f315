"""A pod's volumes end to end without a VM: the host side (agent.volumes) sends its
CopyFile requests to the guest agent's own CopyFile code writing into a temp
directory, so what a container would read there is checked, not the requests."""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from agent.sandbox.errors import GuestAgentError
from agent.volumes import pod as pod_volumes
from agent.volumes import provider, tree
from agent.volumes.errors import VolumeError
from agent.volumes.pod import PodVolumes
from agent.volumes.provider import tmpfs_size
from api.kata import agent_pb2
from devkit.kubelet import KubeletPod
from guest.agent import copyfile
from guest.agent import termination as guest_termination

CID = "c" * 64
PERMISSION_DENIED = 7


class FakeGuest:
    """The guest agent's CopyFile into ``base`` standing in for SHARED_DIR; a policy
    refusing the paths ``refuse`` says no to."""

    def __init__(self, base: Path, refuse: str = "") -> None:
        self.base = base
        self.refuse = refuse
        self.requests: list[agent_pb2.CopyFileRequest] = []

    def local(self, guest: str | PurePosixPath) -> Path:
        return self.base / PurePosixPath(guest).relative_to(tree.SHARED_DIR)

    async def copy_file(self, request: agent_pb2.CopyFileRequest) -> None:
        if self.refuse and self.refuse in request.path:
            raise GuestAgentError(
                "CopyFile", PERMISSION_DENIED, "CopyFileRequest is blocked by policy: no secrets"
            )
        self.requests.append(request)
        local = agent_pb2.CopyFileRequest()
        local.CopyFrom(request)
        local.path = str(self.local(request.path))
        copyfile.copy_file(local, self.base)

    async def termination_message(self, container_id: str) -> bytes:
        (found,) = self.base.glob(f"{container_id}-*-termination-log")
        return guest_termination.read_message(found)


def guest_mounts(prepared: pod_volumes.Prepared) -> dict[str, dict[str, Any]]:
    return {m["destination"]: m for m in prepared.mounts}


def oci_mounts(mounts: list[Any], root: Path) -> list[dict[str, Any]]:
    """config.json's mounts as containerd writes them from CRI mounts (plus its own)."""
    out: list[dict[str, Any]] = [{"destination": "/proc", "type": "proc", "source": "proc"}]
    for m in mounts:
        out.append({"destination": m.container_path, "type": "bind", "source": m.host_path,
                    "options": ["rbind", "rprivate", "ro" if m.readonly else "rw"]})  # fmt: skip
    hostname = str(root / "ctd/sandboxes/s/hostname")
    out.append({"destination": "/etc/hostname", "type": "bind", "source": hostname,
                "options": ["rbind", "rw"]})  # fmt: skip
    return out


@pytest.fixture
def kubelet(tmp_path: Path) -> KubeletPod:
    return KubeletPod(tmp_path / "kubelet", "pod-uid-1")


@pytest.fixture
def guest(tmp_path: Path) -> FakeGuest:
    base = tmp_path / "guest-shared"
    base.mkdir()
    return FakeGuest(base)


async def test_every_kind_provided_and_kept_current(
    kubelet: KubeletPod, guest: FakeGuest, tmp_path: Path
) -> None:
    kubelet.atomic("configmap", "cfg", {"a": b"a1", "b": b"b1", "nested/c": b"c1"}, "/etc/cfg")
    kubelet.atomic("secret", "sec", {"password": b"hunter2"}, "/etc/sec", mode=0o400)
    kubelet.atomic("projected", "kube-api-access-1",
                   {"token": b"t1", "ca.crt": b"ca", "namespace": b"default"},
                   "/var/run/secrets/kubernetes.io/serviceaccount")  # fmt: skip
    kubelet.atomic("downward-api", "info", {"labels": b'app="x"'}, "/etc/podinfo")
    kubelet.empty_dir("cache", "/cache")
    kubelet.etc_hosts("10.0.0.7\tpod-1\n")
    log = kubelet.termination_log("app")
    volumes = PodVolumes(guest, kubelet.root, poll_seconds=3600)
    prepared = await volumes.prepare(CID, oci_mounts(kubelet.mounts(), tmp_path))
    mounts = guest_mounts(prepared)

    def read(dest: str, name: str) -> bytes:
        return (guest.local(mounts[dest]["source"]) / name).read_bytes()

    assert read("/etc/cfg", "a") == b"a1" and read("/etc/cfg", "nested/c") == b"c1"
    assert read("/etc/sec", "password") == b"hunter2"
    secret = guest.local(mounts["/etc/sec"]["source"]) / "password"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o400
    assert read("/var/run/secrets/kubernetes.io/serviceaccount", "token") == b"t1"
    assert read("/etc/podinfo", "labels") == b'app="x"'
    assert guest.local(mounts["/etc/hosts"]["source"]).read_text() == "10.0.0.7\tpod-1\n"
    assert mounts["/cache"]["source"] == "/run/kata-containers/sandbox/local/cache"
    assert [(s.driver, s.options[:]) for s in prepared.storages] == [("local", ["mode=0777"])]
    # containerd's own pod files and kernel file systems are left to the guest.
    assert mounts["/etc/hostname"]["source"].endswith("/ctd/sandboxes/s/hostname")
    assert mounts["/proc"] == {"destination": "/proc", "type": "proc", "source": "proc"}
    # Kata's layout, which genpolicy's $(sfprefix) allows.
    for dest in ("/etc/cfg", "/etc/hosts", "/dev/termination-log"):
        assert PurePosixPath(mounts[dest]["source"]).parent == tree.SHARED_DIR
        assert mounts[dest]["source"].startswith(f"{tree.SHARED_DIR}/{CID}-")
    assert all(r.path.startswith(f"{tree.SHARED_DIR}/{CID}-") for r in guest.requests)

    # The kubelet's update: new version copied, ..data swapped, old version removed.
    assert await volumes.refresh() == 0
    kubelet.update("configmap", "cfg", {"a": b"a2", "b": b"b2", "new": b"n2"})
    assert await volumes.refresh() == 1
    assert (read("/etc/cfg", "a"), read("/etc/cfg", "b"), read("/etc/cfg", "new")) == (
        b"a2", b"b2", b"n2",
    )  # fmt: skip
    volume = guest.local(mounts["/etc/cfg"]["source"])
    versions = [p.name for p in volume.iterdir() if p.name.startswith("..2")]
    assert versions == [os.readlink(kubelet.volume("configmap", "cfg") / "..data")]
    assert not (volume / "nested").exists()  # gone from the payload: a dangling link

    # The termination message the container wrote goes back to the kubelet's file.
    guest.local(mounts["/dev/termination-log"]["source"]).write_text("bye\n")
    await volumes.container_exited(CID)
    assert log.read_text() == "bye\n"
    volumes.forget(CID)
    kubelet.update("configmap", "cfg", {"a": b"a3"})
    assert await volumes.refresh() == 0  # removed: no longer followed
    await volumes.close()


async def test_memory_empty_dir_is_a_tmpfs_of_the_hosts_size(
    kubelet: KubeletPod, guest: FakeGuest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = kubelet.empty_dir("mem", "/mem")
    monkeypatch.setattr(provider, "tmpfs_size", lambda p: 64 << 20 if p == path else None)
    prepared = await PodVolumes(guest, kubelet.root).prepare(
        CID, oci_mounts(kubelet.mounts(), tmp_path)
    )
    (storage,) = prepared.storages
    assert (storage.driver, storage.fstype, list(storage.options)) == (
        "ephemeral", "tmpfs", [f"size={64 << 20}", "mode=0777"],
    )  # fmt: skip
    assert guest_mounts(prepared)["/mem"]["source"] == storage.mount_point


def test_tmpfs_size_from_mountinfo(tmp_path: Path) -> None:
    where = tmp_path / "with space"
    where.mkdir()
    escaped = str(where).replace(" ", "\\040")
    mountinfo = f"36 25 0:32 / {escaped} rw,relatime shared:1 - tmpfs tmpfs rw,size=1024k\n"
    info = os.statvfs(where)
    assert tmpfs_size(where, mountinfo) == info.f_blocks * info.f_frsize
    assert tmpfs_size(where, mountinfo.replace("- tmpfs", "- ext4")) is None


async def test_oversized_volume_fails_naming_it(
    kubelet: KubeletPod, guest: FakeGuest, tmp_path: Path
) -> None:
    kubelet.atomic("configmap", "small", {"a": b"x"}, "/etc/small")
    kubelet.atomic("configmap", "big", {"a": b"x" * 600, "b": b"y" * 600}, "/etc/big")
    volumes = PodVolumes(guest, kubelet.root, cap=1000)
    with pytest.raises(VolumeError, match=r"mount /etc/big \(configMap big, .*than 1000 bytes"):
        await volumes.prepare(CID, oci_mounts(kubelet.mounts(), tmp_path))
    assert guest.requests == []  # read before anything is sent: nothing half-copied


async def test_refused_copy_fails_with_the_policys_reason(
    kubelet: KubeletPod, tmp_path: Path
) -> None:
    guest = FakeGuest(tmp_path, refuse="-sec")
    kubelet.atomic("secret", "sec", {"p": b"x"}, "/etc/sec")
    with pytest.raises(VolumeError) as refused:
        await PodVolumes(guest, kubelet.root).prepare(CID, oci_mounts(kubelet.mounts(), tmp_path))
    message = str(refused.value)
    assert f"container {CID}: mount /etc/sec (secret sec" in message
    assert "CopyFileRequest is blocked by policy: no secrets" in message


async def test_host_paths_read_only_copied_writable_refused(
    kubelet: KubeletPod, guest: FakeGuest, tmp_path: Path
) -> None:
    data = tmp_path / "srv"
    (data / "sub").mkdir(parents=True)
    (data / "sub" / "f").write_text("host file")
    (data / "link").symlink_to("sub/f")
    kubelet.host_path(data, "/data", readonly=True)
    prepared = await PodVolumes(guest, kubelet.root).prepare(
        CID, oci_mounts(kubelet.mounts(), tmp_path)
    )
    copied = guest.local(guest_mounts(prepared)["/data"]["source"])
    assert (copied / "link").read_text() == "host file"
    kubelet.host_path(data, "/rw", readonly=False)
    with pytest.raises(VolumeError, match=r"mount /rw \(hostPath, .*a writable hostPath cannot"):
        await PodVolumes(guest, kubelet.root).prepare(CID, oci_mounts(kubelet.mounts(), tmp_path))
    (data / "escape").symlink_to("/etc/passwd")
    kubelet.host_path(data, "/ro", readonly=True)
    with pytest.raises(VolumeError, match="symlink escape -> /etc/passwd leaves the volume"):
        await PodVolumes(guest, kubelet.root).prepare(CID, oci_mounts(kubelet.mounts(), tmp_path))


@pytest.mark.parametrize("option", ["rslave", "rshared"])
async def test_mount_propagation_refused_naming_the_mount(
    option: str, guest: FakeGuest, tmp_path: Path
) -> None:
    """CRI's HostToContainer (rslave) and Bidirectional (rshared), even read-only: a
    copy in the pod-VM cannot propagate mounts either way."""
    (tmp_path / "srv").mkdir()
    mount = {"destination": "/mnt", "type": "bind", "source": str(tmp_path / "srv"),
             "options": ["rbind", option, "ro"]}  # fmt: skip
    with pytest.raises(VolumeError) as refused:
        await PodVolumes(guest, tmp_path / "kubelet").prepare(CID, [mount])
    assert str(refused.value) == (
        f"container {CID}: mount /mnt (hostPath, {tmp_path / 'srv'}): mount propagation "
        f"({option}) cannot be provided in the pod-VM (the node's mounts are not shared "
        "with it; volumes are copies)"
    )
    assert guest.requests == []  # refused before any copy


async def test_sandbox_container_keeps_only_what_the_guest_provides(
    guest: FakeGuest, tmp_path: Path
) -> None:
    mounts = [
        {"destination": "/dev/shm", "type": "bind", "source": "/run/c/shm", "options": ["rbind"]},
        {"destination": "/x", "type": "bind", "source": "/srv", "options": ["rbind"]},
    ]
    prepared = await PodVolumes(guest, tmp_path).prepare(CID, mounts, sandbox=True)
    assert [m["destination"] for m in prepared.mounts] == ["/dev/shm"]
    assert guest.requests == []


async def test_a_restarted_daemon_follows_running_containers_again(
    kubelet: KubeletPod, guest: FakeGuest, tmp_path: Path
) -> None:
    kubelet.atomic("projected", "token", {"token": b"t1"}, "/var/run/secrets/x")
    log = kubelet.termination_log("app")
    mounts = oci_mounts(kubelet.mounts(), tmp_path)
    first = PodVolumes(guest, kubelet.root, poll_seconds=3600)
    prepared = guest_mounts(await first.prepare(CID, mounts))
    copied = guest.local(prepared["/var/run/secrets/x"]["source"])
    await first.close()  # the daemon is gone; the kubelet rotates the token meanwhile
    kubelet.update("projected", "token", {"token": b"t2"})
    again = PodVolumes(guest, kubelet.root, poll_seconds=3600)
    assert again.follow(CID, mounts) == 1
    assert (copied / "token").read_bytes() == b"t1"  # nothing copied by follow itself
    assert await again.refresh() == 1
    assert (copied / "token").read_bytes() == b"t2"
    assert len([p for p in copied.iterdir() if p.name.startswith("..2")]) == 1
    guest.local(prepared["/dev/termination-log"]["source"]).write_text("after restart")
    await again.container_exited(CID)
    assert log.read_text() == "after restart"
    await again.close()


async def test_refusals_come_before_any_copy(
    kubelet: KubeletPod, guest: FakeGuest, tmp_path: Path
) -> None:
    kubelet.atomic("configmap", "cfg", {"a": b"1"}, "/etc/cfg")
    kubelet.host_path(tmp_path, "/rw", readonly=False)
    with pytest.raises(VolumeError, match=f"container {CID}: mount /rw"):
        await PodVolumes(guest, kubelet.root).prepare(CID, oci_mounts(kubelet.mounts(), tmp_path))
    assert guest.requests == []


async def test_sub_path_of_a_config_map_copied_once(
    kubelet: KubeletPod, guest: FakeGuest, tmp_path: Path
) -> None:
    volume = kubelet.atomic("configmap", "cfg", {"app.conf": b"x=1"}, "/unused")
    kubelet.mounts()
    # The kubelet bind-mounts the subPath here; its content is what the daemon reads.
    bound = kubelet.directory / "volume-subpaths" / "cfg" / "app" / "0"
    bound.parent.mkdir(parents=True)
    bound.write_bytes((volume / "app.conf").read_bytes())
    kubelet.host_path(bound, "/etc/app.conf", readonly=True)
    volumes = PodVolumes(guest, kubelet.root, poll_seconds=3600)
    prepared = await volumes.prepare(CID, oci_mounts(kubelet.mounts(), tmp_path))
    copied = guest.local(guest_mounts(prepared)["/etc/app.conf"]["source"])
    assert copied.read_bytes() == b"x=1"
    kubelet.update("configmap", "cfg", {"app.conf": b"x=2"})
    assert await volumes.refresh() == 0  # as the kubelet: a subPath is not updated
    await volumes.close()
