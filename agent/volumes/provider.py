"""What one mount becomes in the pod-VM, for :class:`agent.volumes.pod.PodVolumes`.

Its content read from the host (held to the cap) and copied into the guest with
CopyFile, tree entry by tree entry; an atomic-writer volume one ``..data`` version at a
time (the version's directory completely, then ``..data``, then new visible names); an
emptyDir a storage the guest makes. Which volumes a pod keeps current, polls and reads
back at exit is :mod:`agent.volumes.pod`'s.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import stat
from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Protocol, TypeVar, cast

from agent.sandbox.errors import SandboxError
from agent.volumes import tree
from agent.volumes.errors import VolumeError
from agent.volumes.layout import Classified, Kind
from api.kata import agent_pb2

log = logging.getLogger(__name__)

GUEST_VOLUMES = PurePosixPath("/run/kata-containers/sandbox")
KEPT_CURRENT = frozenset({Kind.CONFIG_MAP, Kind.SECRET, Kind.PROJECTED, Kind.DOWNWARD_API})
COPIED_ONCE = frozenset({Kind.SUB_PATH, Kind.ETC_HOSTS, Kind.TERMINATION_LOG, Kind.HOST_PATH})
LEFT_TO_GUEST = frozenset({Kind.POD_FILE, Kind.SHM})
# Made by the guest: nothing to read or copy.
IN_GUEST = LEFT_TO_GUEST | {Kind.EMPTY_DIR}
_LEAF = re.compile(r"[^A-Za-z0-9._-]")
T = TypeVar("T")


class CopyTarget(Protocol):
    """What a copy needs of the guest agent."""

    async def copy_file(self, request: agent_pb2.CopyFileRequest) -> None:
        """AgentService/CopyFile; raises GuestAgentError (a policy refusal) or BackendError."""
        ...


@dataclass(frozen=True)
class Payload:
    """A copy read from the host: ``entries`` (tree.read_tree); for a kept-current
    volume also the ``..data`` version they are and the volume directory itself."""

    entries: list[tree.Entry]
    version: str = ""
    root: tree.Entry | None = None


@dataclass
class Atomic:
    """An atomic-writer volume copied for one container and kept current."""

    container_id: str
    mount: Classified
    guest: PurePosixPath
    version: str = ""
    visible: set[str] = field(default_factory=set)


def guest_path(container_id: str, mount: Classified) -> PurePosixPath:
    """Where a container's copy of ``mount`` lives in the guest (Kata's naming)."""
    digest = hashlib.sha256(f"{container_id}\0{mount.destination}".encode()).hexdigest()[:16]
    leaf = mount.name or mount.source.name or "hostpath"
    return tree.SHARED_DIR / f"{container_id}-{digest}-{_LEAF.sub('_', leaf)}"


def tmpfs_size(path: Path, mountinfo: str | None = None) -> int | None:
    """The size in bytes of the tmpfs mounted at ``path``, None when none is."""
    if mountinfo is None:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    where = os.path.realpath(path)
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) < 7 or "-" not in fields:
            continue
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
        fstype = fields[fields.index("-") + 1]
        if point == where and fstype == "tmpfs":
            info = os.statvfs(path)
            return info.f_blocks * info.f_frsize
    return None


class Provider:
    """Mounts provided through ``guest``, each copy held to ``cap`` bytes."""

    def __init__(self, guest: CopyTarget, cap: int = tree.MAX_VOLUME_BYTES) -> None:
        self.guest = guest
        self.cap = cap
        self.sent = (0, 0)  # CopyFile requests and bytes, for the log

    async def _copy(self, request: agent_pb2.CopyFileRequest) -> None:
        self.sent = (self.sent[0] + 1, self.sent[1] + len(request.data))
        await self.guest.copy_file(request)

    def read(self, cid: str, c: Classified) -> Payload:
        """What will be copied for ``c``, read now. Raises VolumeError (the cap, not the
        atomic writer's layout, unreadable)."""
        try:
            if c.kind in KEPT_CURRENT:
                root = _directory(c)
                version = self.data_version(c)
                entries = tree.read_tree(c.source / version, c.describe(), self.cap)
                return Payload(entries, version, root)
            return Payload(tree.read_tree(c.source, c.describe(), self.cap))
        except VolumeError as err:
            raise VolumeError(f"container {cid}: {err}") from err
        except OSError as err:
            raise VolumeError(f"container {cid}: {c.describe()}: cannot be read: {err}") from err

    async def provide(
        self,
        cid: str,
        mount: Mapping[str, Any],
        c: Classified,
        payload: Payload | None,
        *,
        storages: dict[str, agent_pb2.Storage],
        atomics: list[Atomic],
    ) -> dict[str, Any]:
        """The guest's mount for ``mount`` (``payload``: read already), its copy sent;
        an emptyDir's storage into ``storages``, a kept-current copy into ``atomics``.
        Raises VolumeError naming the container and the mount."""
        rewritten = {**mount, "type": "bind"}
        if c.kind in LEFT_TO_GUEST:
            return dict(mount)
        if c.kind is Kind.EMPTY_DIR:
            storage = self._empty_dir(c)
            storages[storage.mount_point] = storage
            return {**rewritten, "source": storage.mount_point}
        assert payload is not None
        guest = guest_path(cid, c)
        try:
            if payload.root is not None:
                atomic = Atomic(cid, c, guest)
                await self._send([payload.root], guest)
                await self.copy_version(atomic, payload.version, payload.entries)
                atomics.append(atomic)
            else:
                await self._send(payload.entries, guest)
        except VolumeError as err:
            raise VolumeError(f"container {cid}: {err}") from err
        except SandboxError as err:
            raise VolumeError(f"container {cid}: {c.describe()}: {err}") from err
        except OSError as err:
            raise VolumeError(f"container {cid}: {c.describe()}: cannot be read: {err}") from err
        log.info("container %s: %s copied to %s", cid, c.describe(), guest)
        return {**rewritten, "source": str(guest)}

    def _empty_dir(self, c: Classified) -> agent_pb2.Storage:
        name = _LEAF.sub("_", c.name)
        size = tmpfs_size(c.source)
        if size is None:
            return agent_pb2.Storage(
                driver="local", source="local", fstype="local", options=["mode=0777"],
                mount_point=str(GUEST_VOLUMES / "local" / name),
            )  # fmt: skip
        return agent_pb2.Storage(
            driver="ephemeral", source="tmpfs", fstype="tmpfs",
            options=[f"size={size}", "mode=0777"],
            mount_point=str(GUEST_VOLUMES / "ephemeral" / name),
        )  # fmt: skip

    @staticmethod
    def data_version(c: Classified) -> str:
        """The version ``..data`` points at. Raises VolumeError (not the atomic writer's
        layout)."""
        try:
            version = str((c.source / "..data").readlink())
        except OSError as err:
            raise VolumeError(
                f"{c.describe()}: not in the kubelet's atomic-writer layout (..data: {err})"
            ) from err
        if "/" in version or not version.startswith("..") or version in ("..", "..data"):
            raise VolumeError(f"{c.describe()}: ..data points at {version!r}")
        return version

    async def copy_version(
        self, atomic: Atomic, version: str, entries: list[tree.Entry] | None = None
    ) -> None:
        """Copy ``version`` (``entries``: read already) completely, then swap ``..data``,
        then add new visible names."""
        c = atomic.mount
        if entries is None:
            entries = await asyncio.to_thread(
                tree.read_tree, c.source / version, c.describe(), self.cap
            )
        await self._send(entries, atomic.guest / version)
        await self._copy(tree.symlink(atomic.guest / "..data", version))
        atomic.version = version
        new: list[str] = []
        for name in sorted(p.name for p in c.source.iterdir()):
            if name.startswith("..") or name in atomic.visible:
                continue
            target = str((c.source / name).readlink()) if (c.source / name).is_symlink() else ""
            if target != f"..data/{name}":
                log.warning("%s: %s is not a link into ..data, not copied", c.describe(), name)
                continue
            new.append(name)
        await side_by_side(self._copy(tree.symlink(atomic.guest / n, f"..data/{n}")) for n in new)
        atomic.visible.update(new)

    async def _send(self, entries: list[tree.Entry], guest: PurePosixPath) -> None:
        """``entries`` (tree.read_tree) to ``guest``: the directories in order (parents
        first), then the files side by side (each one's chunks in order: the first
        truncates), then the symlinks side by side."""
        kinds = [(e, stat.S_IFMT(e.mode)) for e in entries]
        for request in tree.requests([e for e, k in kinds if k == stat.S_IFDIR], guest):
            await self._copy(request)

        async def file(entry: tree.Entry) -> None:
            for request in tree.requests([entry], guest):
                await self._copy(request)

        await side_by_side(file(e) for e, k in kinds if k == stat.S_IFREG)
        links = tree.requests([e for e, k in kinds if k == stat.S_IFLNK], guest)
        await side_by_side(self._copy(r) for r in links)


def _directory(c: Classified) -> tree.Entry:
    """The volume's own directory as an entry. Raises VolumeError, OSError."""
    info = c.source.lstat()
    if not stat.S_ISDIR(info.st_mode):
        raise VolumeError(f"{c.describe()}: not a directory")
    return tree.Entry("", info.st_mode, info.st_uid, info.st_gid)


async def side_by_side(calls: Iterable[Awaitable[T]]) -> list[T]:
    """Await ``calls`` side by side; their results in order. The first failure is
    raised once every call has finished (none is left running)."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return cast(list[T], results)
