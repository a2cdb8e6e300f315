"""Test-only helpers around a node daemon: a guest agent serving on a host unix socket,
connections as another user, a notify socket. The node environment itself is
``devkit.node`` (its ``node_env`` stops the relay and the daemon a shim started)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from devkit.node import REPO, SHIM, Node, node_env, stop_daemon, stop_relay

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
    """The pid in the relay's pid file (a shim's ``start`` started the relay)."""
    try:
        return int((node.run_dir / "relay.pid").read_text())
    except (OSError, ValueError):
        return None


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
