"""The pod inside the VM: its files, its pause container, and where rootfses come from.

- CreateSandbox writes the pod's hostname, hosts and resolv.conf in the guest (the
  host's copies are never mounted).
- The sandbox (pause) container (annotation ``io.kubernetes.cri.container-type:
  sandbox``) runs the guest image's own pause program: a static busybox copied into
  its bundle, sleeping. Its ipc/uts (and, on request, pid) namespaces are the pod's.
- Every other container's rootfs is pulled by the guest: the request must carry a
  storage with driver ``image_guest_pull``; the reference is that storage's source,
  else the spec annotation ``io.kubernetes.cri.image-name``. Nothing of the host's
  rootfs is used.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from api.kata import agent_pb2
from guest.agent import copyfile, devices, volumes
from guest.agent import spec as specs
from guest.agent.containers import Container, Containers, Release
from guest.agent.errors import FailedPrecondition, InvalidRequest, NotFound

log = logging.getLogger(__name__)

CONTAINER_TYPE_KEYS = ("io.kubernetes.cri.container-type", "io.kubernetes.cri-o.ContainerType")
IMAGE_NAME_KEYS = ("io.kubernetes.cri.image-name", "io.kubernetes.cri-o.ImageName")
GUEST_PULL_DRIVER = "image_guest_pull"
PAUSE_ARGS = ("/busybox", "sleep", "2147483647")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class RootfsSource(Protocol):
    """Mounts an image's rootfs at ``<bundle>/rootfs``; the returned callable undoes it."""

    def prepare(self) -> None:
        """Start setting up in the background (call in the loop); mount works without."""

    async def mount(self, image: str, bundle: Path) -> Release: ...


class PulledRootfs:
    """Rootfs from the guest image puller (digest-pinned, verified, overlayfs).

    The puller (and its store) is made by ``factory`` on a worker thread, at
    :meth:`prepare` (the agent calls it once it serves, so the imports behind the
    puller, a few hundred ms under TCG, overlap the host's work before the first
    container) or else at the first pull. Making it fetches nothing: every pull is
    still checked by the policy first and verified by digest.
    """

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self._making: asyncio.Future[Any] | None = None

    def prepare(self) -> None:
        if self._making is None:
            self._making = asyncio.ensure_future(asyncio.to_thread(self._factory))
            # A failure is raised by the pull that needs the puller (then made again).
            self._making.add_done_callback(lambda f: f.cancelled() or f.exception())

    async def _puller(self) -> Any:
        self.prepare()
        assert self._making is not None
        making = self._making
        try:
            return await asyncio.shield(making)
        except Exception:
            if self._making is making:
                self._making = None
            raise

    async def mount(self, image: str, bundle: Path) -> Release:
        puller = await self._puller()
        await asyncio.to_thread(puller.pull_into_bundle, image, bundle)

        async def release() -> None:
            await asyncio.to_thread(puller.remove_bundle, bundle)

        return release


def check_id(kind: str, value: str) -> str:
    """Ids become path names: refuse anything but a plain name. Raises InvalidRequest."""
    if not _ID.match(value):
        raise InvalidRequest(f"{kind} {value!r} is not a valid id")
    return value


def container_type(annotations: dict[str, str]) -> str:
    for key in CONTAINER_TYPE_KEYS:
        if key in annotations:
            return annotations[key]
    return ""


def image_reference(request: agent_pb2.CreateContainerRequest) -> str:
    """The image the guest must pull for this container. Raises InvalidRequest."""
    pulls = [s for s in request.storages if s.driver == GUEST_PULL_DRIVER]
    known = (GUEST_PULL_DRIVER, *volumes.DRIVERS)
    others = sorted({s.driver for s in request.storages if s.driver not in known})
    if others:
        raise InvalidRequest(f"storage drivers {others} are not supported by this guest")
    if len(pulls) != 1:
        raise InvalidRequest(
            f"container {request.container_id}: the rootfs must be pulled in the guest "
            f"(exactly one storage with driver {GUEST_PULL_DRIVER!r}, got {len(pulls)})"
        )
    if pulls[0].source:
        return pulls[0].source
    for key in IMAGE_NAME_KEYS:
        if request.OCI.Annotations.get(key):
            return request.OCI.Annotations[key]
    raise InvalidRequest(f"container {request.container_id}: no image reference")


@dataclass(frozen=True)
class SandboxConfig:
    run_dir: Path = Path("/run/contrast")
    image_store: Path | None = None  # the puller's store; default: <run_dir>/images
    pause_program: Callable[[], str | None] = lambda: shutil.which("busybox")


class Sandbox:
    """The pod: created once, then containers; destroyed with everything in it."""

    def __init__(self, containers: Containers, rootfs: RootfsSource, config: SandboxConfig) -> None:
        self.containers = containers
        self.rootfs = rootfs
        self.config = config
        self.id = ""
        self.created = False
        self.pause_id = ""
        self.files = config.run_dir / "sandbox"
        self.volumes = volumes.Volumes(containers.reaper)
        self.bundles = config.run_dir / "containers"
        self._secure_store: Any = None  # guest.securemount.store.SecureStore, at first use

    def create(self, request: agent_pb2.CreateSandboxRequest) -> None:
        """Write the pod's files. Raises FailedPrecondition when it exists already."""
        if self.created:
            raise FailedPrecondition(f"sandbox {self.id} already exists")
        if request.sandbox_id:
            check_id("sandbox_id", request.sandbox_id)
        hostname = request.hostname or "localhost"
        if not re.match(r"^[A-Za-z0-9.-]{1,253}$", hostname):
            raise InvalidRequest(f"hostname {hostname!r} is not a valid host name")
        from guest.agent import netconfig

        try:
            resolv = netconfig.resolv_conf_text(list(request.dns))
        except netconfig.BadRequest as err:
            raise InvalidRequest(str(err)) from err
        # Validated above: nothing is written for a bad request.
        self.files.mkdir(parents=True, exist_ok=True)
        self.bundles.mkdir(parents=True, exist_ok=True)
        (self.files / "hostname").write_text(hostname + "\n")
        (self.files / "hosts").write_text(
            f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n127.0.1.1\t{hostname}\n"
        )
        (self.files / "resolv.conf").write_text(resolv)
        self.id = request.sandbox_id
        self.created = True
        log.info("sandbox %s created (hostname %s)", self.id, hostname)

    def _pause_pid(self) -> int | None:
        if not self.pause_id:
            return None
        try:
            pause = self.containers.get(self.pause_id)
        except NotFound:
            return None
        return None if pause.init.exited.done() else pause.init.pid

    async def create_container(self, request: agent_pb2.CreateContainerRequest) -> Container:
        """Prepare the bundle (pause program or pulled image) and create the container.

        Raises InvalidRequest, FailedPrecondition, AlreadyExists, ImagePullError,
        CommandError.
        """
        if not self.created:
            raise FailedPrecondition("CreateSandbox must come first")
        cid = check_id("container_id", request.container_id)
        self.containers.reserve(cid)
        is_pause = container_type(dict(request.OCI.Annotations)) == "sandbox"
        if is_pause and self.pause_id:
            raise FailedPrecondition(f"the sandbox container {self.pause_id} exists already")
        image = "" if is_pause else image_reference(request)
        provided = await devices.provide(request)  # request.OCI now has the guest's numbers
        store = devices.image_store(provided)
        if store is not None:  # before any pull: the puller's store on the encrypted disk
            await self._mount_image_store(cid, store)
        for storage in request.storages:
            if storage.driver in volumes.DRIVERS:
                await self.volumes.prepare(storage)
        bundle = self.bundles / cid
        bundle.mkdir(parents=True)
        release: Release | None = None
        try:
            if is_pause:
                self._pause_rootfs(bundle)
            else:
                release = await self.rootfs.mount(image, bundle)
            ctx = specs.GuestContext(
                container_id=cid,
                sandbox_files=self.files,
                sandbox_pid=None if is_pause else self._pause_pid(),
                join_pid_ns=request.sandbox_pidns,
                devices=frozenset(p.container_path for p in provided),
            )
            adapted = specs.adapt(request.OCI, ctx)
            if is_pause:
                adapted.config["process"]["args"] = list(PAUSE_ARGS)
                adapted.config["process"]["terminal"] = False
            for note in adapted.notes:
                log.info("container %s: %s", cid, note)
            specs.apply_pod_sysctls(adapted.pod_sysctls)
            container = await self.containers.create(cid, bundle, adapted.config, release)
        except BaseException:
            if release is not None:
                await release()
            shutil.rmtree(bundle, ignore_errors=True)
            copyfile.remove_copies(cid)  # what the host copied in for it
            raise
        if is_pause:
            self.pause_id = cid
        return container

    async def _mount_image_store(self, cid: str, device: devices.Provided) -> None:
        """The pod's image store formatted and mounted on ``device`` (once: a later
        container with the same disk finds it mounted). Raises FailedPrecondition naming
        the device and the step; never falls back to the RAM store."""
        from guest.securemount.errors import SecureMountError
        from guest.securemount.store import SecureStore

        root = self.config.image_store or self.config.run_dir / "images"
        if self._secure_store is None:
            self._secure_store = SecureStore(self.containers.reaper, root)
        try:
            await self._secure_store.mount(device.device_id, root)
        except SecureMountError as err:
            raise FailedPrecondition(
                f"container {cid}: secure image store on {device}: {err}"
            ) from err

    def _pause_rootfs(self, bundle: Path) -> None:
        program = self.config.pause_program()
        if program is None:
            raise FailedPrecondition("the guest image has no pause program (busybox)")
        rootfs = bundle / "rootfs"
        rootfs.mkdir()
        for sub in ("proc", "sys", "dev", "etc"):
            (rootfs / sub).mkdir()
        shutil.copy2(program, rootfs / "busybox")

    async def remove_container(self, cid: str, timeout: float | None) -> None:
        await self.containers.remove(cid, timeout)
        copyfile.remove_copies(cid)  # its volumes' copies (CopyFile)
        if cid == self.pause_id:
            self.pause_id = ""

    def leftovers(self) -> list[str]:
        """Facts proving a destroyed sandbox left nothing: ``key=value`` strings.

        ``contrast.mounts``: mounts under the agent's run directory; ``contrast.children``:
        live (non-zombie) children of the agent, i.e. container processes.
        """
        run_dir = str(self.config.run_dir.resolve()) + "/"
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text().splitlines()
        except OSError:
            mountinfo = []
        mounts = sum(1 for line in mountinfo if line.split()[4].startswith(run_dir))
        me = os.getpid()
        children = 0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if fields[0] != "Z" and int(fields[1]) == me:
                children += 1
        return [f"contrast.mounts={mounts}", f"contrast.children={children}"]

    async def destroy(self) -> None:
        """Remove every container (the pause container last) and the pod's files."""
        for cid in [c for c in self.containers.ids() if c != self.pause_id]:
            await self.remove_container(cid, timeout=10.0)
        if self.pause_id:
            await self.remove_container(self.pause_id, timeout=10.0)
        await self.volumes.cleanup()
        shutil.rmtree(self.files, ignore_errors=True)
        self.created = False
        log.info("sandbox %s destroyed", self.id)
        self.id = ""
