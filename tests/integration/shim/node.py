"""A node daemon's environment for integration tests: short run/state directories, the
shim entry as containerd runs it, and a guest agent serving on a host unix socket."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent
SHIM = BIN / "containerd-shim-contrast-cc-v2"
REPO = Path(__file__).parents[3]


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
        return subprocess.run(
            [str(SHIM), "-namespace", "default", "-address", str(self.root / "containerd.sock"),
             "-publish-binary", "/usr/bin/containerd", *args],
            cwd=cwd, input=stdin, capture_output=True, env=env, timeout=60, check=False,
        )  # fmt: skip


def stop_daemon(node: Node, timeout: float = 10.0) -> int | None:
    """SIGTERM the daemon this node started (pid from its pid file); its exit status."""
    pid = node.daemon_pid()
    if pid is None:
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists():
            return 0
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    return None


@contextlib.contextmanager
def node_env(backend: str = "pod-vm", agent_socket: Path | None = None) -> Iterator[Node]:
    root = Path(tempfile.mkdtemp(prefix="node-", dir="/tmp"))
    env = {
        "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}",
        "CONTRAST_RUN_DIR": str(root / "run"),
        "CONTRAST_STATE_DIR": str(root / "state"),
        "CONTRAST_BACKEND": backend,
        "TTRPC_ADDRESS": str(root / "containerd.sock.ttrpc"),
        "PYTHONPATH": str(REPO),
    }
    if agent_socket is not None:
        env["CONTRAST_AGENT_SOCKET"] = str(agent_socket)
    node = Node(root, env)
    try:
        yield node
    finally:
        stop_daemon(node)
        shutil.rmtree(root, ignore_errors=True)


GUEST_AGENT = """
import asyncio, sys
from guest.agent.server import build_server

async def main():
    server = build_server()
    await server.serve_unix(sys.argv[1])
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


@contextlib.contextmanager
def guest_agent_on_host(path: Path) -> Iterator[Path]:
    """The real guest agent (guest.agent) serving on a host unix socket."""
    proc = subprocess.Popen(
        [sys.executable, "-c", GUEST_AGENT, str(path)],
        cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != b"ready":
            proc.kill()
            _, err = proc.communicate(timeout=10)
            raise RuntimeError(f"guest agent did not start: {err.decode(errors='replace')}")
        yield path
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def connect_as(path: Path, uid: int) -> str:
    """How the daemon treats a connection from ``uid``: "refused" when it closes the
    connection at once, "accepted" when it keeps it open. Plain python3, no venv: the
    other user needs nothing of ours but the socket."""
    code = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "s.connect(sys.argv[1])\n"
        "s.settimeout(2)\n"
        "try:\n"
        "    print('refused' if s.recv(1) == b'' else 'data')\n"
        "except TimeoutError:\n"
        "    print('accepted')\n"
    )
    done = subprocess.run(
        ["/usr/bin/python3", "-c", code, str(path)],
        user=uid, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    return (done.stdout + done.stderr).strip()


def notify_socket(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(10)
    return sock
