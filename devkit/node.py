"""A node daemon's environment in a temporary root: short run/state directories (unix
socket paths are limited to 107 bytes), the variables containerd passes on to the shim,
and the shim entry as containerd runs it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from devkit import ownership
from devkit.errors import DevkitError
from shim import launcher

BIN = Path(sys.executable).parent
REPO = Path(__file__).parents[1]
# The shim entry as containerd runs it: shim.launcher's script for this interpreter and
# checkout (python -I -S, no site: the editable install's finder costs every start),
# written by shim_launcher(); node_env puts its directory first on PATH (containerd 1.6
# looks the shim up there).
SHIM = REPO / "build/shim" / launcher.NAME


def shim_launcher() -> Path:
    """:data:`SHIM`, written first when it is missing or not current; raises DevkitError."""
    try:
        launcher.write(SHIM, launcher.script(sys.executable, launcher.search_path()))
    except (launcher.LauncherError, OSError) as err:
        raise DevkitError(f"cannot write the shim launcher {SHIM}: {err}") from err
    return SHIM


@dataclass(frozen=True)
class Node:
    root: Path
    env: dict[str, str]

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def socket(self) -> Path:
        return self.run_dir / "daemon.sock"

    def daemon_pid(self) -> int | None:
        try:
            return int((self.run_dir / "daemon.pid").read_text())
        except (OSError, ValueError):
            return None

    def daemon_log(self) -> str:
        """What a daemon started by the shim entry logged (for failure messages)."""
        path = self.run_dir / "daemon.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def shim(
        self, *args: str, cwd: Path, stdin: bytes = b"", extra_env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        """The shim entry with containerd 1.6's arguments and environment."""
        env = {**self.env, **(extra_env or {})}
        try:
            # Longer than the entry's own wait for a daemon, so that its error (with the
            # daemon log's tail) is what a failing test shows.
            return subprocess.run(
                [str(SHIM), "-namespace", "default", "-address",
                 str(self.root / "containerd.sock"), "-publish-binary", "/usr/bin/containerd",
                 *args],
                cwd=cwd, input=stdin, capture_output=True, env=env, timeout=120, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired as err:
            raise DevkitError(
                f"shim {' '.join(args)} did not finish in 120 s; daemon log ends:\n"
                f"{self.daemon_log()[-4000:]}"
            ) from err


def _terminate(pid: int, timeout: float) -> bool:
    """SIGTERM ``pid``, SIGKILL after ``timeout``; True when it ended by itself."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists():
            return True
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return False


def stop_daemon(node: Node, timeout: float = 10.0) -> int | None:
    """SIGTERM the daemon this node started (pid from its pid file); its exit status."""
    pid = node.daemon_pid()
    if pid is None:
        return None
    return 0 if _terminate(pid, timeout) else None


def stop_relay(node: Node, timeout: float = 10.0) -> None:
    """SIGTERM the relay a shim started on this node (pid from ``run/relay.pid``)."""
    try:
        pid = int((node.run_dir / "relay.pid").read_text())
    except (OSError, ValueError):
        return
    _terminate(pid, timeout)


@contextlib.contextmanager
def node_env(
    backend: str = "pod-vm", agent_socket: Path | None = None, parent: Path = Path("/tmp")
) -> Iterator[Node]:
    """A node root under ``parent`` (short: socket paths), removed afterwards with the
    relay and daemon a shim started there stopped."""
    shim_launcher()
    root = Path(tempfile.mkdtemp(prefix="node-", dir=parent))
    path = os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    env = {
        "PATH": f"{SHIM.parent}:{BIN}:{path}",
        "CONTRAST_RUN_DIR": str(root / "run"),
        "CONTRAST_STATE_DIR": str(root / "state"),
        "CONTRAST_BACKEND": backend,
        "TTRPC_ADDRESS": str(root / "containerd.sock.ttrpc"),
        "PYTHONPATH": str(REPO),
        # The daemon a shim starts here, and its QEMUs, are swept when we were killed.
        ownership.MARKER: ownership.claim(),
    }
    if agent_socket is not None:
        env["CONTRAST_AGENT_SOCKET"] = str(agent_socket)
    node = Node(root, env)
    try:
        yield node
    finally:
        stop_relay(node)  # first: a relay restarts a daemon that went away
        stop_daemon(node)
        shutil.rmtree(root, ignore_errors=True)
