"""Debian's Go `containerd-shim-runc-v2`, run as a ttrpc peer for interop tests and benches.

The shim's own `start` action forks a daemon at a socket path it picks under /run. We do
what its parent does instead: create the listening socket ourselves, hand it over as fd 3
(the shim serves on an inherited listener) and run the shim in serve mode from a bundle
directory. The shim insists on writing its log to a FIFO named `log` in the bundle; a
thread drains it so the shim never blocks on a full pipe. No containerd is needed for
`Connect`, `State` on unknown ids, and similar calls that publish no events.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SHIM = "containerd-shim-runc-v2"
LISTENER_FD = 3


@dataclass(frozen=True)
class RuncShim:
    """A running Go runc shim: where it listens, its pid, what it logged so far."""

    socket_path: Path
    pid: int
    log: list[bytes]


def _drain(fd: int, sink: list[bytes]) -> None:
    with os.fdopen(fd, "rb", buffering=0) as fifo:
        while chunk := fifo.read(65536):
            sink.append(chunk)


@contextlib.contextmanager
def run_runc_shim(workdir: Path, namespace: str = "contrast-test") -> Iterator[RuncShim]:
    """Start the Go shim serving ttrpc on a unix socket under ``workdir``; stop it after."""
    binary = shutil.which(SHIM)
    if binary is None:
        raise FileNotFoundError(f"{SHIM} is not installed (Debian package containerd)")
    bundle = workdir / "bundle"
    bundle.mkdir(parents=True)
    os.mkfifo(bundle / "log", 0o600)
    sock_path = workdir / "shim.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(sock_path))
    listener.listen(64)
    # Opening the FIFO for reading first, non-blocking, lets the shim's write-open succeed.
    log_fd = os.open(bundle / "log", os.O_RDONLY | os.O_NONBLOCK)
    # Our own writer end keeps the drain from seeing EOF before the shim has opened it.
    keep_open = os.open(bundle / "log", os.O_WRONLY)
    os.set_blocking(log_fd, True)
    log: list[bytes] = []
    drain = threading.Thread(target=_drain, args=(log_fd, log), daemon=True)
    drain.start()

    def hand_over_listener() -> None:
        if listener.fileno() != LISTENER_FD:
            os.dup2(listener.fileno(), LISTENER_FD)
        # dup2 onto itself keeps close-on-exec: clear it explicitly.
        os.set_inheritable(LISTENER_FD, True)

    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "TTRPC_ADDRESS": str(workdir / "containerd.sock.ttrpc"),
    }
    proc = subprocess.Popen(
        [
            binary,
            "-namespace",
            namespace,
            "-id",
            "interop",
            "-address",
            str(workdir / "containerd.sock"),
        ],
        cwd=bundle,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        # The listener must sit at exactly fd 3. Python's own fds are non-inheritable
        # (PEP 446), so keeping inherited fds open passes that one and nothing else.
        preexec_fn=hand_over_listener,  # noqa: PLW1509
        close_fds=False,
    )
    listener.close()
    try:
        yield RuncShim(socket_path=sock_path, pid=proc.pid, log=log)
    finally:
        proc.kill()
        _, stderr = proc.communicate(timeout=10)
        os.close(keep_open)
        drain.join(timeout=5)
        if proc.returncode not in (0, -9):
            log.append(stderr)
