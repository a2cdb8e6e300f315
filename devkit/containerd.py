"""A real containerd in a temporary root, and its CRI runtime configuration over gRPC.

Which containerd: Debian's 1.6 (``containerd`` on ``PATH``) or an upstream 2.x release
from ``../shared/peers`` (:func:`release`), unpacked by the folder's own ``install.sh``
into a cache outside the repository (``$CONTRAST_PEERS_CACHE``, default
``/var/tmp/contrast-peers``). Each release's own ``containerd config default`` is the
starting config (version 2 for 1.6, 3 for 2.0, 4 for 2.3); :func:`sandboxed_config`
moves its host-wide paths and sockets into the temporary root, in the place each
config version keeps them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import tomlkit

from api.containerd.cri.runtime.v1 import api_pb2
from devkit import command, ownership
from devkit.errors import DevkitError

REPO = Path(__file__).parents[1]
PEERS = REPO.parent / "shared" / "peers"
PEERS_CACHE_ENV = "CONTRAST_PEERS_CACHE"
DEFAULT_PEERS_CACHE = Path("/var/tmp/contrast-peers")
DEBIAN = "1.6"
PEER_VERSIONS = ("2.0.11", "2.3.4")
VERSIONS = (DEBIAN, *PEER_VERSIONS)
RUNC_SHIM_TAG = "2.3.4"  # the release whose containerd-shim-runc-v2 the peers carry
CONFIG_DEFAULT_TIMEOUT = 60.0
INSTALL_TIMEOUT = 300.0


class ReleaseMissing(DevkitError):
    """The containerd release asked for is not on this machine (tests skip, or fail in CI)."""


@dataclass(frozen=True)
class ContainerdRelease:
    """One containerd build: Debian's (``bin_dir`` None: found on ``PATH``) or a peer's."""

    version: str
    bin_dir: Path | None = None

    @property
    def containerd(self) -> str:
        return "containerd" if self.bin_dir is None else str(self.bin_dir / "containerd")

    @property
    def ctr(self) -> str:
        return "ctr" if self.bin_dir is None else str(self.bin_dir / "ctr")

    def path(self, base: str) -> str:
        """``base`` (a ``PATH``) with this release's programs first: containerd 2.x looks
        up ``containerd-shim-runc-v2`` there."""
        return base if self.bin_dir is None else f"{self.bin_dir}:{base}"

    def default_config(self) -> str:
        """``containerd config default`` of this release; raises CommandFailed."""
        return command.run([self.containerd, "config", "default"], timeout=CONFIG_DEFAULT_TIMEOUT)


def peers_cache() -> Path:
    return Path(os.environ.get(PEERS_CACHE_ENV) or DEFAULT_PEERS_CACHE)


def unpacked_peers(peers: Path = PEERS, cache: Path | None = None) -> Path:
    """The peer programs unpacked (``install.sh`` of ``peers``, checked against its
    SHA256SUMS) into ``cache``; unpacked once, then reused while SHA256SUMS is the same.
    Raises ReleaseMissing when ``peers`` is absent, CommandFailed when unpacking fails."""
    script, sums = peers / "install.sh", peers / "SHA256SUMS"
    if not script.is_file() or not sums.is_file():
        raise ReleaseMissing(f"{peers} has no install.sh and SHA256SUMS (the peer programs)")
    dest = cache or peers_cache()
    dest.mkdir(parents=True, exist_ok=True)
    stamp = dest / ".installed"
    wanted = sums.read_text()
    with open(dest / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test sessions must not unpack at once
        names = [line.split()[1] for line in wanted.splitlines() if line.strip()]
        done = stamp.exists() and stamp.read_text() == wanted
        if not done or not all((dest / name).is_file() for name in names):
            command.run(["sh", str(script), str(dest)], timeout=INSTALL_TIMEOUT)
            stamp.write_text(wanted)
    return dest


def release(version: str = DEBIAN, peers: Path = PEERS) -> ContainerdRelease:
    """The containerd ``version`` (one of VERSIONS); raises ReleaseMissing when this
    machine lacks it, DevkitError for a version we do not know."""
    if version == DEBIAN:
        if shutil.which("containerd") is None:
            raise ReleaseMissing("Debian's containerd 1.6 is not installed (apt: containerd)")
        return ContainerdRelease(DEBIAN)
    if version not in PEER_VERSIONS:
        raise DevkitError(f"unknown containerd version {version!r}; known: {', '.join(VERSIONS)}")
    cache = unpacked_peers(peers)
    bin_dir = cache / f"v{version}" / "bin"
    if not (bin_dir / "containerd").exists():
        raise ReleaseMissing(f"{peers}: install.sh made no {bin_dir / 'containerd'}")
    if version != RUNC_SHIM_TAG:
        bin_dir = _without_runc_shim(bin_dir, cache / f"node-v{version}" / "bin")
    return ContainerdRelease(version, bin_dir)


def _without_runc_shim(peer_bin: Path, own: Path) -> Path:
    """``own``: the peer's containerd and ctr, but not the runc shim install.sh links
    there. The peers' only runc shim is 2.3.4's, and containerd 2.0.11 fails to start it
    for a CRI pod ("failed to create TTRPC connection: unsupported protocol: Yunix": by
    the look of it a protobuf BootstrapResult, its address's length byte "Y" first, read
    as a plain address), so runc pods on 2.0.11 use Debian's containerd-shim-runc-v2
    (1.6, task API v2) instead: seen working for a CRI pod and container here."""
    own.mkdir(parents=True, exist_ok=True)
    for name in ("containerd", "ctr"):
        link, target = own / name, (peer_bin / name).resolve()
        if not link.is_symlink() or link.resolve() != target:
            temp = own / f".{name}.{os.getpid()}"
            temp.unlink(missing_ok=True)
            temp.symlink_to(target)
            temp.replace(link)  # atomic: concurrent sessions see one or the other
    return own


DEBIAN_RELEASE = ContainerdRelease(DEBIAN)

# Plugins that only probe the host (and log errors) in a temporary root.
UNNEEDED_PLUGINS = [
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
]


@dataclass(frozen=True)
class Containerd:
    socket: Path
    log: Path
    release: ContainerdRelease = DEBIAN_RELEASE
    # Set by the context that started it: stop containerd (SIGTERM, as systemd's restart
    # does; shims and what they started keep running) and start it again on the same
    # config, root and state, returning once its CRI answers.
    restarter: Callable[[], None] | None = field(default=None, compare=False, repr=False)

    def restart(self) -> None:
        """Restart this containerd (see ``restarter``); raises DevkitError."""
        if self.restarter is None:
            raise DevkitError(f"containerd on {self.socket} was not started restartable")
        self.restarter()

    def cri_status(self, timeout: float = 10.0) -> api_pb2.StatusResponse:
        """CRI ``RuntimeService/Status`` with verbose=true."""
        with grpc.insecure_channel(f"unix://{self.socket}") as channel:
            status = channel.unary_unary(
                "/runtime.v1.RuntimeService/Status",
                request_serializer=api_pb2.StatusRequest.SerializeToString,
                response_deserializer=api_pb2.StatusResponse.FromString,
            )
            response: api_pb2.StatusResponse = status(
                api_pb2.StatusRequest(verbose=True), timeout=timeout
            )
            return response

    def cri_runtimes(self) -> dict[str, Any]:
        """The runtimes of the running CRI plugin, from its verbose status."""
        config = json.loads(self.cri_status().info["config"])
        runtimes = config["containerd"]["runtimes"]
        assert isinstance(runtimes, dict)
        return runtimes


def unpack_platform() -> str:
    """containerd's default platform for this machine (``linux/amd64``)."""
    machine = platform.machine()
    return "linux/" + {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def _table(parent: Any, key: str) -> Any:
    return parent.setdefault(key, tomlkit.table())


def sandboxed_config(
    patched: str,
    work: Path,
    *,
    socket: Path | None = None,
    release: ContainerdRelease = DEBIAN_RELEASE,
) -> str:
    """The patched config with host-wide paths moved into ``work`` (runtimes untouched),
    for its config version: plugin ``opt`` dir, CNI dirs, no ``imports`` of the host's
    drop-ins and, given containerd's ``socket``, its ttrpc socket next to it (2.3's
    default names ``/run/containerd/…``). For a 2.x ``release`` (whatever the config's
    version, which 2.x migrates) NRI is off (its socket is host-wide) and the transfer
    service gets unpack platforms for the native and overlayfs snapshotters (without
    them 2.x refuses to unpack into native: "no unpack platforms defined")."""
    doc = tomlkit.parse(patched)
    version = doc["version"]
    doc["disabled_plugins"] = UNNEEDED_PLUGINS
    if "imports" in doc:
        doc["imports"] = []
    plugins = doc.setdefault("plugins", tomlkit.table(is_super_table=True))
    _table(plugins, "io.containerd.internal.v1.opt")["path"] = str(work / "opt")
    if version == 2:
        cni = _table(_table(plugins, "io.containerd.grpc.v1.cri"), "cni")
    else:
        cni = _table(_table(plugins, "io.containerd.cri.v1.runtime"), "cni")
    if version >= 3 or release.version != DEBIAN:
        _table(plugins, "io.containerd.nri.v1.nri")["disable"] = True
        transfer = _table(plugins, "io.containerd.transfer.v1.local")
        if "unpack_config" not in transfer:
            unpack = tomlkit.aot()
            for snapshotter in ("native", "overlayfs"):
                entry = tomlkit.table()
                entry["platform"] = unpack_platform()
                entry["snapshotter"] = snapshotter
                unpack.append(entry)
            transfer["unpack_config"] = unpack
    cni["conf_dir"] = str(work / "cni")
    if "bin_dirs" in cni:  # 2.3: a list; bin_dir is deprecated there
        cni["bin_dirs"] = [str(work / "cni-bin")]
        cni["bin_dir"] = ""
    else:
        cni["bin_dir"] = str(work / "cni-bin")
    if socket is not None:
        ttrpc = f"{socket}.ttrpc"
        if version >= 4:
            _table(plugins, "io.containerd.server.v1.ttrpc")["address"] = ttrpc
        else:
            _table(doc, "ttrpc")["address"] = ttrpc
    return doc.as_string()


@contextlib.contextmanager
def running_containerd(
    config_text: str, work: Path, release: ContainerdRelease = DEBIAN_RELEASE
) -> Iterator[Containerd]:
    """Start containerd (``release``) on ``config_text`` in ``work``; stop it (and wait)
    afterwards. Its programs come first on the ``PATH`` it gets (and passes on)."""
    work.mkdir(parents=True, exist_ok=True)
    # Unix socket paths are limited to 108 bytes and containerd adds ".ttrpc": keep the
    # sockets in a short directory of their own rather than under pytest's tmp_path.
    sockets = Path(tempfile.mkdtemp(prefix="ctd-", dir="/tmp"))
    socket = sockets / "c.sock"
    config = work / "containerd.toml"
    config.write_text(sandboxed_config(config_text, work, socket=socket, release=release))
    log = work / "containerd.log"
    ownership.claim()  # containerd, its shims and their daemon carry the owner marker
    env = {**os.environ, "PATH": release.path(os.environ.get("PATH", "/usr/bin:/bin"))}
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(
            [
                release.containerd,
                "--config",
                str(config),
                "--root",
                str(work / "root"),
                "--state",
                str(work / "state"),
                "--address",
                str(socket),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        daemon = Containerd(socket, log, release)
        _wait_for_cri(daemon, proc)
        yield daemon
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(sockets, ignore_errors=True)


def _wait_for_cri(daemon: Containerd, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DevkitError(f"containerd exited: {daemon.log.read_text()[-3000:]}")
        if daemon.socket.exists():
            try:
                daemon.cri_status(timeout=2)
            except grpc.RpcError as err:
                last = err
            else:
                return
        time.sleep(0.2)
    raise DevkitError(f"containerd's CRI did not answer: {last}\n{daemon.log.read_text()[-3000:]}")
