"""Test-only helpers around a node daemon: a guest agent serving on a host unix socket,
connections as another user, a notify socket. The node environment itself is
``devkit.node``'s; :func:`node_env` here also stops the relay a shim started."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from devkit import node as devkit_node
from devkit.node import REPO, SHIM, Node, stop_daemon

__all__ = [
    "REPO",
    "SHIM",
    "Node",
    "guest_agent_on_host",
    "node_env",
    "relay_pid",
    "stop_daemon",
    "stop_relay",
]


def relay_pid(node: Node) -> int | None:
    try:
        return int((node.run_dir / "relay.pid").read_text())
    except (OSError, ValueError):
        return None


def stop_relay(node: Node, timeout: float = 10.0) -> bool:
    """SIGTERM the relay a shim started on this node (SIGKILL after ``timeout``);
    True when it exited by itself (or none ran)."""
    pid = relay_pid(node)
    if pid is None:
        return True
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


@contextlib.contextmanager
def node_env(
    backend: str = "pod-vm", agent_socket: Path | None = None, parent: Path = Path("/tmp")
) -> Iterator[Node]:
    """``devkit.node.node_env``, stopping the relay first at the end (a relay left
    running with containerd's connections would start the daemon again)."""
    with devkit_node.node_env(backend, agent_socket, parent) as node:
        try:
            yield node
        finally:
            stop_relay(node)


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
