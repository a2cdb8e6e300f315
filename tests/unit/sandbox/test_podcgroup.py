"""The pod cgroup's name: containerd's two cgroupsPath forms mapped to a directory in
every mounted hierarchy (v1 and v2), hostile paths refused, the mount table read."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from agent.sandbox import podcgroup
from agent.sandbox.errors import BackendError
from agent.sandbox.podcgroup import CgroupError, Hierarchy

UID = "0b5e4a8c-1f7c-4a8e-9d4e-3f1b2c9a7d10"
ID = "4f1c" * 16

# This host's layout: v1 controllers, named systemd hierarchy, the empty v2 one (hybrid).
HYBRID = """\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset,clone_children
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,release_agent=/lib/systemd/systemd-cgroups-agent,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
90 31 0:32 / /mnt/memory\\040again rw,relatime - cgroup cgroup rw,memory
"""  # noqa: E501
V2 = "29 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n"  # noqa: E501


def test_cgroupfs_path_below_every_root() -> None:
    path = f"/kubepods/besteffort/pod{UID}/{ID}"
    assert podcgroup.relative_path(path) == PurePosixPath(f"kubepods/besteffort/pod{UID}/{ID}")


def test_systemd_path_expands_the_slice_like_runc() -> None:
    path = f"kubepods-besteffort-pod{UID.replace('-', '_')}.slice:cri-containerd:{ID}"
    pod = f"kubepods-besteffort-pod{UID.replace('-', '_')}.slice"
    assert podcgroup.relative_path(path) == PurePosixPath(
        "kubepods.slice", "kubepods-besteffort.slice", pod, f"cri-containerd-{ID}.scope"
    )
    # Guaranteed pods sit directly in kubepods.slice; an empty slice is system.slice,
    # "-" the root; a .slice name is the unit itself.
    assert str(podcgroup.relative_path(f"kubepods-pod1.slice:cri-containerd:{ID}")) == (
        f"kubepods.slice/kubepods-pod1.slice/cri-containerd-{ID}.scope"
    )
    assert str(podcgroup.relative_path(":runc:c1")) == "system.slice/runc-c1.scope"
    assert str(podcgroup.relative_path("-:runc:c1")) == "runc-c1.scope"
    assert str(podcgroup.relative_path("a-b.slice::c-d.slice")) == "a.slice/a-b.slice/c-d.slice"


@pytest.mark.parametrize(
    ("path", "complaint"),
    [
        ("/kubepods/../../etc", "'..'"),
        ("/kubepods/./pod1", "'.'"),
        ("/kubepods//pod1", "''"),
        ("/kubepods/pod1/", "''"),
        ("/", "''"),
        ("kubepods/pod1", "neither an absolute cgroupfs path"),
        ("", "neither an absolute cgroupfs path"),
        ("/kubepods/pod\n1", "invalid component"),
        ("/kubepods/pod 1", "invalid component"),
        ("../x.slice:cri-containerd:id", "a slash in the systemd slice"),
        ("kubepods.slice:cri/x:id", "a slash in the systemd prefix"),
        ("kubepods.slice:cri:../../etc", "a slash in the systemd name"),
        ("kubepods.slice:cri:..", "invalid component"),
        ("kubepods.slice:cri:", "the systemd name is empty"),
        ("kubepods.slice::id", "the systemd prefix is empty"),
        ("kubepods--x.slice:cri:id", "has an empty part"),
        ("kubepods-.slice:cri:id", "has an empty part"),
        ("kubepods:cri:id", "is not a .slice"),
        ("a:b:c:d", "neither an absolute cgroupfs path"),
    ],
)
def test_hostile_paths_are_refused(path: str, complaint: str) -> None:
    with pytest.raises(CgroupError, match="cgroupsPath") as caught:
        podcgroup.relative_path(path)
    assert complaint in str(caught.value)
    assert isinstance(caught.value, BackendError)  # fails the sandbox like any launch error


def test_hierarchies_of_a_hybrid_host_each_once() -> None:
    found = podcgroup.hierarchies(HYBRID)
    assert [(str(h.mount), h.version, h.controllers) for h in found] == [
        ("/sys/fs/cgroup/cpu,cpuacct", 1, ("cpu", "cpuacct")),
        ("/sys/fs/cgroup/cpuset", 1, ("cpuset",)),
        ("/sys/fs/cgroup/memory", 1, ("memory",)),
        ("/sys/fs/cgroup/systemd", 1, ("name=systemd",)),
        ("/sys/fs/cgroup/unified", 2, ()),
    ]


def test_leaf_per_controller_v1_and_v2() -> None:
    path = f"kubepods-besteffort-pod{UID.replace('-', '_')}.slice:cri-containerd:{ID}"
    relative = podcgroup.relative_path(path)
    v1 = podcgroup.leaf_paths(path, podcgroup.hierarchies(HYBRID))
    assert v1 == tuple(
        Path(mount) / relative
        for mount in (
            "/sys/fs/cgroup/cpu,cpuacct",
            "/sys/fs/cgroup/cpuset",
            "/sys/fs/cgroup/memory",
            "/sys/fs/cgroup/systemd",
            "/sys/fs/cgroup/unified",
        )
    )
    v2 = podcgroup.leaf_paths(f"/kubepods/pod{UID}/{ID}", podcgroup.hierarchies(V2))
    assert v2 == (Path(f"/sys/fs/cgroup/kubepods/pod{UID}/{ID}"),)


def test_a_container_view_of_the_hierarchy_is_refused(tmp_path: Path) -> None:
    mounts = (Hierarchy(tmp_path, 1, ("memory",), "/kubepods/pod1/daemon"),)
    with pytest.raises(CgroupError, match=r"cgroup /kubepods/pod2/x: .* shows only"):
        podcgroup.prepare("/kubepods/pod2/x", mounts)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(CgroupError, match="no cgroup hierarchy is mounted"):
        podcgroup.prepare("/kubepods/pod2/x", ())


def test_prepare_undoes_what_it_created_when_a_leaf_takes_no_process(tmp_path: Path) -> None:
    # A plain directory is no cgroup: no cgroup.procs appears in what we create.
    (tmp_path / "kubepods").mkdir()
    mounts = (Hierarchy(tmp_path, 2, ()),)
    with pytest.raises(CgroupError, match=r"cgroup /kubepods/pod1/x: .*cgroup.procs"):
        podcgroup.prepare("/kubepods/pod1/x", mounts)
    assert [p.name for p in tmp_path.rglob("*")] == ["kubepods"]  # ours gone, theirs kept


def test_created_directories_survive_the_record() -> None:
    placement = podcgroup.Placement(
        "/kubepods/pod1/x",
        (),
        (Path("/sys/fs/cgroup/kubepods/pod1/x"),),
        (Path("/sys/fs/cgroup/kubepods/pod1"), Path("/sys/fs/cgroup/kubepods/pod1/x")),
    )
    mounts = podcgroup.hierarchies(V2)
    details = placement.details()
    assert details[podcgroup.CGROUPS_PATH_KEY] == "/kubepods/pod1/x"
    assert podcgroup.created_dirs(details, mounts) == placement.created
    assert podcgroup.created_dirs({}, mounts) == ()
    assert podcgroup.created_dirs({podcgroup.CREATED_KEY: '{"not": "a list"}'}, mounts) == ()
    # A state file naming anything but directories below a cgroup mount removes nothing.
    for hostile in ('["/etc/ssl"]', '["/sys/fs/cgroup"]', '["/sys/fs/cgroup/../../etc"]'):
        assert podcgroup.created_dirs({podcgroup.CREATED_KEY: hostile}, mounts) == ()


def _shared_parent(tmp_path: Path) -> tuple[Path, ...]:
    """What prepare created for a pod on a node without a kubelet (containerd's CRI
    names ``/k8s.io/<id>``): the shared ``k8s.io`` and the pod's leaf, in two
    hierarchies; another pod's directory sits in one of them."""
    created = []
    for hierarchy in ("cpu", "memory"):
        created += [tmp_path / hierarchy / "k8s.io", tmp_path / hierarchy / "k8s.io" / "a"]
        created[-1].mkdir(parents=True)
    (tmp_path / "cpu" / "k8s.io" / "b").mkdir(exist_ok=True)  # the other pod's, made after ours
    return tuple(created)


async def test_remove_leaves_a_parent_another_pod_uses(tmp_path: Path) -> None:
    # A busy parent is not retried: the other pod may live for days, and the wait ran
    # into containerd's Delete deadline, every retry again (critest on 2.3.4).
    created = _shared_parent(tmp_path)
    await podcgroup.remove(created, timeout=0.5)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [
        "cpu", "cpu/k8s.io", "cpu/k8s.io/b", "memory",
    ]  # fmt: skip
    podcgroup.remove_blocking(_shared_parent(tmp_path), timeout=0.5)
    assert not (tmp_path / "cpu" / "k8s.io" / "a").exists()


async def test_remove_still_waits_for_the_leaf(tmp_path: Path) -> None:
    created = _shared_parent(tmp_path)
    (created[1] / "busy").mkdir()  # a leaf QEMU has not left: rmdir fails
    with pytest.raises(CgroupError, match=r"left behind: .*/cpu/k8s.io/a"):
        await podcgroup.remove(created, timeout=0.3)
    with pytest.raises(CgroupError, match=r"left behind: .*/cpu/k8s.io/a"):
        podcgroup.remove_blocking(created, timeout=0.3)
    assert not (tmp_path / "memory" / "k8s.io" / "a").exists()  # the free leaf is gone


def test_prepare_goes_down_again_when_a_shared_parent_vanishes_under_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another pod removes the shared /k8s.io it created (empty, kept only while in use)
    # between our seeing it exist and our mkdir of the leaf inside it.
    (tmp_path / "k8s.io").mkdir()
    real_mkdir = Path.mkdir
    vanished: list[Path] = []

    def racing_mkdir(self: Path, mode: int = 0o777, *args: object, **kw: object) -> None:
        if self.name == "pod1" and not vanished:
            vanished.append(self.parent)
            self.parent.rmdir()
        real_mkdir(self, mode, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "mkdir", racing_mkdir)
    mounts = (Hierarchy(tmp_path, 2, ()),)
    with pytest.raises(CgroupError, match=r"cgroup\.procs"):  # plain dirs take no process
        podcgroup.prepare("/k8s.io/pod1", mounts)
    assert vanished == [tmp_path / "k8s.io"]  # the race happened, and was not the error
