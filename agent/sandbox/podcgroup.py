"""The pod's cgroup for its QEMU: what containerd's CRI names in the sandbox container's
OCI spec (``linux.cgroupsPath``), on every mounted cgroup hierarchy.

Why: the daemon (in a DaemonSet, a container) spawns every pod's QEMU. Left in the
daemon's cgroup, the VMs die with the daemon container (the runtime kills every process
of a dead container's cgroup) and their CPU and memory count against the daemon instead
of the pod. So QEMU, and only QEMU, joins the pod sandbox's cgroup between fork and exec:
it never runs a guest instruction, nor allocates guest memory, anywhere else.

``cgroupsPath`` comes in the two forms runc understands:

* cgroupfs: ``/kubepods/besteffort/pod<uid>/<id>``, a path below each hierarchy's root;
* systemd: ``<slice>:<prefix>:<name>``, e.g.
  ``kubepods-besteffort-pod<uid>.slice:cri-containerd:<id>`` ->
  ``kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid>.slice/
  cri-containerd-<id>.scope`` (a dash in a slice name nests it in the slice named by the
  part before the dash; an empty slice is ``system.slice``, ``-.slice`` the root; the unit
  is ``<prefix>-<name>.scope`` unless ``name`` is itself a ``.slice``). We create the
  directory ourselves rather than asking systemd for a transient scope over D-Bus.

Usage (see :mod:`agent.sandbox.vm_backend`): :func:`prepare` creates what is missing and
returns a :class:`Placement`, whose :meth:`Placement.join` runs in the child between fork
and exec; :func:`verify` checks ``/proc/<pid>/cgroup`` afterwards; :func:`remove` takes
away, at destroy, only the directories :func:`prepare` created.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from agent.sandbox.errors import BackendError

log = logging.getLogger(__name__)

MOUNTINFO = Path("/proc/self/mountinfo")
# Keys of a VmRecord's details (persisted: a restarted daemon still cleans up).
CGROUPS_PATH_KEY = "cgroups_path"
CREATED_KEY = "cgroup_created"

# Characters a cgroup directory name of ours may hold (CRI ids, pod uids, slice names).
_PART = re.compile(r"[A-Za-z0-9_.@=+-]{1,255}\Z")
_SLICE = ".slice"


class CgroupError(BackendError):
    """The pod's cgroup path is invalid, or QEMU could not be placed in it; names it."""


def relative_path(cgroups_path: str) -> PurePosixPath:
    """The directory below each hierarchy's root that ``cgroups_path`` names.

    Raises CgroupError for anything but a clean absolute cgroupfs path or a
    ``slice:prefix:name`` systemd path: ``..``, ``.``, empty parts, characters outside
    ``[A-Za-z0-9_.@=+-]``, a slash in a systemd part.
    """
    if cgroups_path.startswith("/"):
        parts = cgroups_path[1:].split("/")
    elif cgroups_path.count(":") == 2:
        parts = _systemd_parts(cgroups_path)
    else:
        raise CgroupError(
            f"cgroupsPath {cgroups_path!r} is neither an absolute cgroupfs path "
            "nor a systemd slice:prefix:name"
        )
    for part in parts:
        if part in ("", ".", "..") or not _PART.match(part):
            raise CgroupError(f"cgroupsPath {cgroups_path!r}: invalid component {part!r}")
    return PurePosixPath(*parts)


def _systemd_parts(cgroups_path: str) -> list[str]:
    slice_name, prefix, name = cgroups_path.split(":")
    for what, value in (("slice", slice_name), ("prefix", prefix), ("name", name)):
        if "/" in value:
            raise CgroupError(f"cgroupsPath {cgroups_path!r}: a slash in the systemd {what}")
    if not name:
        raise CgroupError(f"cgroupsPath {cgroups_path!r}: the systemd name is empty")
    for value in (prefix, name):
        if value in (".", "..") or (value and not _PART.match(value)):
            raise CgroupError(f"cgroupsPath {cgroups_path!r}: invalid component {value!r}")
    parts = _expand_slice(slice_name or "system.slice", cgroups_path)
    if name.endswith(_SLICE):  # a slice as the unit itself, directly in the parent
        return [*parts, name]
    if not prefix:
        raise CgroupError(f"cgroupsPath {cgroups_path!r}: the systemd prefix is empty")
    return [*parts, f"{prefix}-{name}.scope"]


def _expand_slice(slice_name: str, cgroups_path: str) -> list[str]:
    """``a-b-c.slice`` -> ``a.slice/a-b.slice/a-b-c.slice``; ``-.slice`` (root) -> []."""
    if slice_name in ("-", "-.slice"):
        return []
    if not slice_name.endswith(_SLICE):
        raise CgroupError(f"cgroupsPath {cgroups_path!r}: {slice_name!r} is not a .slice")
    stem = slice_name[: -len(_SLICE)]
    words = stem.split("-")
    if any(not word for word in words):
        raise CgroupError(f"cgroupsPath {cgroups_path!r}: {slice_name!r} has an empty part")
    return ["-".join(words[: i + 1]) + _SLICE for i in range(len(words))]


@dataclass(frozen=True)
class Hierarchy:
    """One mounted cgroup hierarchy: v1 (its controllers, e.g. ``memory`` or
    ``name=systemd``) or the v2 unified one (``controllers`` empty)."""

    mount: Path
    version: int
    controllers: tuple[str, ...]
    # The hierarchy's directory the mount shows; "/" unless a container sees only its own.
    root: str = "/"


def hierarchies(mountinfo: str) -> tuple[Hierarchy, ...]:
    """Every cgroup hierarchy in ``mountinfo`` (the text of /proc/self/mountinfo), each
    once (the first mount of a hierarchy mounted twice)."""
    found: dict[tuple[int, tuple[str, ...]], Hierarchy] = {}
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        mount = Path(_unescape(fields[4]))
        if tail[0] == "cgroup2":
            hierarchy = Hierarchy(mount, 2, (), _unescape(fields[3]))
        else:
            options = tail[2].split(",")
            controllers = tuple(sorted(o for o in options if _is_controller(o)))
            hierarchy = Hierarchy(mount, 1, controllers, _unescape(fields[3]))
        found.setdefault((hierarchy.version, hierarchy.controllers), hierarchy)
    return tuple(found.values())


# Superblock options of a v1 hierarchy that are not controllers (nor ``name=``).
_V1_OPTIONS = frozenset({"rw", "ro", "noprefix", "clone_children", "xattr", "cpuset_v2_mode"})


def _is_controller(option: str) -> bool:
    if "=" in option:  # release_agent=..., but name=systemd names the hierarchy
        return option.startswith("name=")
    return option not in _V1_OPTIONS


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


@dataclass(frozen=True)
class Placement:
    """Where a pod's QEMU goes: the leaf directory in every hierarchy, and which
    directories :func:`prepare` created (parents first), to remove at destroy."""

    cgroups_path: str
    hierarchies: tuple[Hierarchy, ...]
    leaves: tuple[Path, ...]
    created: tuple[Path, ...]

    def join(self) -> None:
        """Move the calling process into every leaf. Runs in the child between fork and
        exec: only system calls, no allocation beyond the pid's digits, no locks. An
        error propagates, the child exits before exec, and the VM never ran."""
        pid = str(os.getpid()).encode()
        for leaf in self.leaves:
            fd = os.open(leaf / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, pid)
            finally:
                os.close(fd)

    def details(self) -> dict[str, str]:
        """What a VmRecord keeps so that any later daemon can :func:`remove` it."""
        return {
            CGROUPS_PATH_KEY: self.cgroups_path,
            CREATED_KEY: json.dumps([str(p) for p in self.created]),
        }


def leaf_paths(cgroups_path: str, mounts: Sequence[Hierarchy]) -> tuple[Path, ...]:
    """The directory of ``cgroups_path`` in each hierarchy of ``mounts`` (same order);
    raises CgroupError like :func:`relative_path`."""
    relative = relative_path(cgroups_path)
    return tuple(h.mount / relative for h in mounts)


def prepare(cgroups_path: str, mounts: Sequence[Hierarchy]) -> Placement:
    """Make ``cgroups_path`` exist in every hierarchy of ``mounts``; the Placement.

    Missing directories are created (a new v1 cpuset group inherits its parent's cpus
    and mems: an empty one refuses every process). Raises CgroupError naming the path
    when the path is invalid, no hierarchy is mounted, a hierarchy shows only part of
    the tree (a container's own cgroup), or a directory cannot be made usable; whatever
    was created by then is removed again.
    """
    relative = relative_path(cgroups_path)
    if not mounts:
        raise CgroupError(f"cgroup {cgroups_path}: no cgroup hierarchy is mounted")
    for hierarchy in mounts:
        if hierarchy.root != "/":
            raise CgroupError(
                f"cgroup {cgroups_path}: {hierarchy.mount} shows only {hierarchy.root} of its "
                "hierarchy; the daemon needs the host's cgroup tree (mount the host's "
                "/sys/fs/cgroup)"
            )
    created: list[Path] = []
    try:
        leaves = tuple(_make(h, relative, created, cgroups_path) for h in mounts)
    except OSError as err:
        _remove_now(created)
        raise CgroupError(f"cgroup {cgroups_path}: cannot create {err.filename}: {err}") from err
    except CgroupError:
        _remove_now(created)
        raise
    return Placement(cgroups_path, tuple(mounts), leaves, tuple(created))


def _make(
    hierarchy: Hierarchy, relative: PurePosixPath, created: list[Path], cgroups_path: str
) -> Path:
    """The leaf of ``relative`` in ``hierarchy``, creating what is missing (appended to
    ``created``). Raises OSError, or CgroupError when the leaf takes no process.

    A parent that another pod created and removes just as we go down through it (the
    shared ``/k8s.io`` of a kubelet-less node, kept only while another cgroup is in it)
    vanishes under our mkdir: the walk starts again from the top, a few times."""
    for attempt in range(_WALK_ATTEMPTS):
        try:
            return _walk(hierarchy, relative, created, cgroups_path)
        except FileNotFoundError:
            if attempt == _WALK_ATTEMPTS - 1:
                raise
            # What we made below the vanished parent went with it (rmdir takes only an
            # empty directory: it was none of ours, or it is gone).
            created[:] = [d for d in created if d.exists()]
    raise AssertionError("unreachable")


_WALK_ATTEMPTS = 5


def _walk(
    hierarchy: Hierarchy, relative: PurePosixPath, created: list[Path], cgroups_path: str
) -> Path:
    directory = hierarchy.mount
    for part in relative.parts:
        directory = directory / part
        try:
            directory.mkdir(mode=0o755)
        except FileExistsError:
            continue
        created.append(directory)
        if "cpuset" in hierarchy.controllers:
            for name in ("cpuset.cpus", "cpuset.mems"):
                if not (directory / name).read_text().strip():
                    (directory / name).write_text((directory.parent / name).read_text().strip())
    if not os.access(directory / "cgroup.procs", os.W_OK):
        raise CgroupError(f"cgroup {cgroups_path}: {directory}/cgroup.procs is not writable")
    return directory


def verify(pid: int, placement: Placement) -> None:
    """Check in ``/proc/<pid>/cgroup`` that ``pid`` is in the placement's cgroup in every
    hierarchy; raises CgroupError naming the hierarchies where it is not."""
    expected = "/" + str(relative_path(placement.cgroups_path))
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError as err:
        raise CgroupError(f"cgroup {placement.cgroups_path}: pid {pid}: {err}") from err
    actual = {}
    for line in lines:
        _, controllers, path = line.split(":", 2)
        key = tuple(sorted(controllers.split(","))) if controllers else ()
        actual[key] = path
    wrong = [
        f"{','.join(h.controllers) or 'unified'}={actual.get(h.controllers)}"
        for h in placement.hierarchies
        if actual.get(h.controllers) != expected
    ]
    if wrong:
        raise CgroupError(
            f"cgroup {placement.cgroups_path}: pid {pid} is not in it: {' '.join(wrong)}"
        )


def created_dirs(
    details: dict[str, str], mounts: Sequence[Hierarchy] | None = None
) -> tuple[Path, ...]:
    """The directories a VmRecord says :func:`prepare` created, each strictly below a
    cgroup mount of ``mounts`` (default: the mounted ones); () when none or unreadable.
    A record we cannot read, or a path elsewhere, is never a reason to remove something."""
    value: object = None
    with contextlib.suppress(ValueError, TypeError):
        value = json.loads(details.get(CREATED_KEY, "[]"))
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        return ()
    if not value:
        return ()
    if mounts is None:
        try:
            mounts = mounted()
        except CgroupError:
            return ()
    roots = [h.mount for h in mounts]
    paths = tuple(Path(p) for p in value)
    for path in paths:
        if ".." in path.parts or not any(path.is_relative_to(r) and path != r for r in roots):
            log.warning("state names %s as a pod cgroup of ours: ignored", path)
            return ()
    return paths


def _remove_now(created: Sequence[Path]) -> list[OSError]:
    errors = []
    for directory in reversed(created):
        try:
            directory.rmdir()
        except FileNotFoundError:
            pass
        except OSError as err:
            errors.append(err)
    return errors


def _split(created: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """``created`` as its leaves (QEMU's own directories) and the parents we made for
    them, which other pods' directories may sit in (``/k8s.io`` on a node without a
    kubelet: containerd's CRI names ``/k8s.io/<id>`` for every pod)."""
    leaves = [d for d in created if not any(o != d and o.is_relative_to(d) for o in created)]
    return leaves, [d for d in created if d not in leaves]


def _remove_parents(parents: Sequence[Path]) -> None:
    """Parents we created, once; one holding another pod's directory stays (that pod,
    which may live for days, is no reason to wait: the last one out leaves it)."""
    for error in _remove_now(parents):
        log.info("cgroup %s kept: %s (another cgroup is in it)", error.filename, error.strerror)


async def remove(created: Sequence[Path], timeout: float = 10.0) -> None:
    """Remove the directories ``created`` (children first). A killed QEMU leaves its
    cgroup a moment after the kill: busy leaves are retried until ``timeout``; a busy
    parent is left (see :func:`_remove_parents`). Raises CgroupError naming the leaves
    left."""
    leaves, parents = _split(created)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while errors := _remove_now(leaves):
        if loop.time() > deadline:
            left = ", ".join(f"{e.filename}: {e.strerror}" for e in errors)
            raise CgroupError(f"cgroup directories left behind: {left}")
        await asyncio.sleep(0.1)
    _remove_parents(parents)


def remove_blocking(created: Sequence[Path], timeout: float = 5.0) -> None:
    """:func:`remove` for callers without an event loop (the shim's ``delete`` while no
    daemon runs); blocks up to ``timeout``. Raises CgroupError naming the leaves left."""
    leaves, parents = _split(created)
    deadline = time.monotonic() + timeout
    while errors := _remove_now(leaves):
        if time.monotonic() > deadline:
            left = ", ".join(f"{e.filename}: {e.strerror}" for e in errors)
            raise CgroupError(f"cgroup directories left behind: {left}")
        time.sleep(0.05)
    _remove_parents(parents)


def mounted() -> tuple[Hierarchy, ...]:
    """The cgroup hierarchies this process sees; raises CgroupError when unreadable."""
    try:
        return hierarchies(MOUNTINFO.read_text())
    except OSError as err:
        raise CgroupError(f"cannot read {MOUNTINFO}: {err}") from err
