"""One pod's volumes in its pod-VM: what each container's bind mounts become.

:meth:`PodVolumes.prepare` turns a container's mounts (config.json) into guest mounts
and storages before its CreateContainer, copying with CopyFile (each call checked by
the pod's policy) into Kata's layout ``/run/kata-containers/shared/containers/
<container id>-<16 hex>-<name>`` (genpolicy's ``$(sfprefix)``):

- configMap, secret, projected, downwardAPI: the volume directory in the kubelet's
  atomic-writer layout (a timestamped directory, ``..data`` -> it, the visible names
  -> ``..data/<name>``); the container bind-mounts the directory, so its reads resolve
  ``..data`` at read time. A poller (every ``poll_seconds``) reads each such volume's
  ``..data`` link on the host; when the kubelet has swapped it, the new directory is
  copied completely, then ``..data`` (the guest renames it into place and removes the
  old directory), then any new visible names: a reader through ``..data`` sees the old
  or the new set, never a mix. Names the kubelet removed stay as dangling links.
- emptyDir: a ``local`` storage (disk medium) or an ``ephemeral`` tmpfs with the host
  tmpfs's size (``medium: Memory``: the kubelet mounts a tmpfs there), shared by the
  pod's containers under the same name;
- etc-hosts, a subPath of an atomic-writer volume, a read-only hostPath: copied once;
- the termination-log file: copied in (empty) and, after the container exited, read
  back (:meth:`container_exited`) into the kubelet's host file;
- containerd's /etc/hostname, /etc/hosts, /etc/resolv.conf and /dev/shm: left to the
  guest (its own files from CreateSandbox, a tmpfs);
- anything else: VolumeError naming the mount (a writable hostPath, other volume
  plugins, a volume over the size cap, a copy the policy refused, with its reason).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from agent.sandbox.errors import SandboxError
from agent.volumes import layout, tree
from agent.volumes.errors import VolumeError
from agent.volumes.layout import Classified, Kind
from agent.volumes.provider import (
    IN_GUEST,
    KEPT_CURRENT,
    Atomic,
    Payload,
    Provider,
    guest_path,
    side_by_side,
)
from api.kata import agent_pb2

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0


class Guest(Protocol):
    """What the volumes need of the guest agent."""

    async def copy_file(self, request: agent_pb2.CopyFileRequest) -> None:
        """AgentService/CopyFile; raises GuestAgentError (a policy refusal) or BackendError."""
        ...

    async def termination_message(self, container_id: str) -> bytes:
        """The container's termination message; raises SandboxError."""
        ...


@dataclass(frozen=True)
class Prepared:
    """A container's mounts for the guest and the storages its CreateContainer carries."""

    mounts: list[dict[str, Any]]
    storages: list[agent_pb2.Storage]


class PodVolumes:
    """The volumes of one pod's containers, provided through ``guest``."""

    def __init__(
        self,
        guest: Guest,
        root: Path | None = None,
        *,
        poll_seconds: float = POLL_SECONDS,
        cap: int = tree.MAX_VOLUME_BYTES,
    ) -> None:
        self.guest = guest
        self.root = root
        self.poll_seconds = poll_seconds
        self.cap = cap
        self._atomic: dict[str, list[Atomic]] = {}
        self._termination: dict[str, list[Path]] = {}
        self._watcher: asyncio.Task[None] | None = None
        self._update = asyncio.Lock()
        self._provider = Provider(guest, cap)

    def _root(self) -> Path:
        if self.root is None:
            self.root = layout.kubelet_root()
        return self.root

    async def prepare(
        self, container_id: str, mounts: Sequence[Mapping[str, Any]], *, sandbox: bool = False
    ) -> Prepared:
        """The guest's mounts and storages for a container, its volumes copied in.

        ``sandbox``: the pod's own (pause) container, whose program is the guest's; its
        binds other than the pod files and /dev/shm are not used (logged). Raises
        VolumeError naming the mount. Every mount is classified (and refused) and every
        copy read from the host (and held to the cap) before anything is sent; a copy
        the policy refuses leaves the ones sent before it in the guest until the pod
        ends."""
        plan: list[tuple[Mapping[str, Any], Classified | None]] = []
        for mount in mounts:
            if not layout.is_bind(mount):
                plan.append((mount, None))
            elif sandbox:
                if mount.get("destination") in (*layout.POD_FILES, "/dev/shm"):
                    plan.append((mount, None))
                else:
                    log.info("sandbox container %s: mount %s not used by the guest's pause",
                             container_id, mount.get("destination"))  # fmt: skip
            else:
                try:
                    classified = layout.classify(mount, self._root())
                    plan.append((mount, self._refuse(classified)))
                except VolumeError as err:
                    raise VolumeError(f"container {container_id}: {err}") from err
        # Every copy read (and checked against the cap) before the first one is sent;
        # on a thread: up to the cap per volume, while the daemon serves every pod.
        def read_all() -> list[Payload | None]:
            return [
                self._provider.read(container_id, c)
                if c is not None and c.kind not in IN_GUEST
                else None
                for _, c in plan
            ]

        payloads = await asyncio.to_thread(read_all)
        storages: dict[str, agent_pb2.Storage] = {}
        atomics: list[Atomic] = []

        async def one(
            mount: Mapping[str, Any], planned: Classified | None, payload: Payload | None
        ) -> dict[str, Any]:
            if planned is None:
                return dict(mount)
            return await self._provider.provide(
                container_id, mount, planned, payload, storages=storages, atomics=atomics
            )

        # The volumes are copied side by side (each one in order: see Provider._send).
        started, before = time.monotonic(), self._provider.sent
        jobs = zip(plan, payloads, strict=True)
        out = await side_by_side(one(mount, planned, payload) for (mount, planned), payload in jobs)
        if self._provider.sent != before:
            sent_now = self._provider.sent
            requests, sent = (now - then for now, then in zip(sent_now, before, strict=True))
            log.info("container %s: volumes provided in %.1f ms (%d CopyFile requests, %d bytes)",
                     container_id, 1000 * (time.monotonic() - started), requests, sent)  # fmt: skip
        logs = [c.source for _, c in plan if c is not None and c.kind is Kind.TERMINATION_LOG]
        if atomics:
            self._atomic.setdefault(container_id, []).extend(atomics)
            self._start_watching()
        if logs:
            self._termination[container_id] = logs
        return Prepared(out, list(storages.values()))

    def follow(self, container_id: str, mounts: Sequence[Mapping[str, Any]]) -> int:
        """Take up a running container's volumes after a daemon restart: its kept-current
        volumes are copied again at the next poll (their current version: the same
        again, or the one the kubelet swapped in meanwhile), its termination message
        read back at exit. Nothing is copied now; mounts that no longer classify are
        logged and skipped. How many volumes are followed."""
        atomics: list[Atomic] = []
        logs: list[Path] = []
        for mount in mounts:
            if not layout.is_bind(mount):
                continue
            try:
                c = layout.classify(mount, self._root())
            except VolumeError as err:
                log.warning("container %s: not followed: %s", container_id, err)
                continue
            if c.kind in KEPT_CURRENT:
                atomics.append(Atomic(container_id, c, guest_path(container_id, c)))
            elif c.kind is Kind.TERMINATION_LOG:
                logs.append(c.source)
        if atomics:
            self._atomic[container_id] = atomics
            self._start_watching()
        if logs:
            self._termination[container_id] = logs
        return len(atomics)

    @staticmethod
    def _refuse(c: Classified) -> Classified:
        """``c``, unless it is refused before any copy (VolumeError)."""
        if c.propagation:
            raise VolumeError(
                f"{c.describe()}: mount propagation ({c.propagation}) cannot be provided in "
                "the pod-VM (the node's mounts are not shared with it; volumes are copies)"
            )
        if c.kind is Kind.HOST_PATH and not c.readonly:
            raise VolumeError(
                f"{c.describe()}: a writable hostPath cannot be provided in the pod-VM "
                "(writes would never reach the host); a readOnly one is copied in once"
            )
        return c

    # -- kept current -------------------------------------------------------------

    def _start_watching(self) -> None:
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.poll_seconds)
            await self.refresh()

    async def refresh(self) -> int:
        """Copy every volume whose ``..data`` the kubelet swapped since the last copy,
        side by side; how many were updated. Failures are logged and tried again at the
        next poll."""

        async def update(atomic: Atomic, version: str) -> bool:
            try:
                await self._provider.copy_version(atomic, version)
            except (VolumeError, SandboxError, OSError) as err:
                what = atomic.mount.describe()
                log.warning("container %s: %s: update to %s failed: %s",
                            atomic.container_id, what, version, err)  # fmt: skip
                return False
            log.info("container %s: %s updated to %s", atomic.container_id,
                     atomic.mount.describe(), version)  # fmt: skip
            return True

        async with self._update:
            changed = []
            for atomic in [a for group in self._atomic.values() for a in group]:
                try:
                    version = self._provider.data_version(atomic.mount)
                except VolumeError:
                    continue  # the kubelet is tearing the volume down
                if version != atomic.version:
                    changed.append(update(atomic, version))
            return sum(await side_by_side(changed))

    # -- exit and removal -----------------------------------------------------------

    async def container_exited(self, container_id: str) -> None:
        """Write the container's termination message into the kubelet's file(s). A
        failure (the policy refuses, the guest lost the file) is logged: the exit
        itself is reported either way."""
        for host in self._termination.pop(container_id, []):
            try:
                data = await self.guest.termination_message(container_id)
                fd = os.open(host, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC)
                try:
                    os.write(fd, data)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except (SandboxError, OSError) as err:
                log.warning("container %s: termination message not copied to %s: %s",
                            container_id, host, err)  # fmt: skip
                continue
            log.info("container %s: termination message (%d bytes) copied to %s",
                     container_id, len(data), host)  # fmt: skip

    def forget(self, container_id: str) -> None:
        """Stop keeping the container's volumes current (it is removed)."""
        self._atomic.pop(container_id, None)
        self._termination.pop(container_id, None)

    async def close(self) -> None:
        """Stop the poller."""
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
