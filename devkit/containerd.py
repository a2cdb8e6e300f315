"""A real containerd in a temporary root, and its CRI runtime configuration over gRPC."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import tomlkit

from api.containerd.cri.runtime.v1 import api_pb2
from devkit import ownership
from devkit.errors import DevkitError

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


def sandboxed_config(patched: str, work: Path) -> str:
    """The patched config with host-wide paths moved into ``work`` (runtimes untouched)."""
    doc = tomlkit.parse(patched)
    doc["disabled_plugins"] = UNNEEDED_PLUGINS
    plugins = doc.setdefault("plugins", tomlkit.table(is_super_table=True))
    if doc["version"] == 2:
        plugins.setdefault("io.containerd.internal.v1.opt", tomlkit.table())["path"] = str(
            work / "opt"
        )
        cri = plugins.setdefault("io.containerd.grpc.v1.cri", tomlkit.table())
        cni = cri.setdefault("cni", tomlkit.table())
        cni["conf_dir"] = str(work / "cni")
        cni["bin_dir"] = str(work / "cni-bin")
    return doc.as_string()


@contextlib.contextmanager
def running_containerd(config_text: str, work: Path) -> Iterator[Containerd]:
    """Start containerd on ``config_text`` in ``work``; stop it (and wait) afterwards."""
    work.mkdir(parents=True, exist_ok=True)
    config = work / "containerd.toml"
    config.write_text(sandboxed_config(config_text, work))
    # Unix socket paths are limited to 108 bytes and containerd adds ".ttrpc": keep the
    # sockets in a short directory of their own rather than under pytest's tmp_path.
    sockets = Path(tempfile.mkdtemp(prefix="ctd-", dir="/tmp"))
    socket = sockets / "c.sock"
    log = work / "containerd.log"
    ownership.claim()  # containerd, its shims and their daemon carry the owner marker
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(
            [
                "containerd",
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
        )
    try:
        daemon = Containerd(socket, log)
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
