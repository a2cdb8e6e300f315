"""Where the host reaches the agent: the named virtio-serial port, or vsock."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from pathlib import Path

from ttrpc import Server, TtrpcError, transport

log = logging.getLogger(__name__)

PORT_NAME = "agent.channel.0"
VSOCK_PORT = 1024
# A virtio-serial port reads as end-of-file while the host side is not connected;
# reading again at this pace costs nothing noticeable and reconnects quickly.
_REOPEN_DELAY = 0.1


def find_port(name: str = PORT_NAME, sys: Path = Path("/sys")) -> Path | None:
    """The /dev node of the virtio-serial port called ``name`` (no udev needed)."""
    for entry in sorted((sys / "class/virtio-ports").glob("vport*")):
        try:
            if (entry / "name").read_text().strip() == name:
                return Path("/dev") / entry.name
        except OSError:
            continue
    return None


async def wait_for_port(name: str = PORT_NAME, timeout: float = 30.0) -> Path | None:
    """Wait for the port to appear (its driver may still be probing)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (port := find_port(name)) is None and loop.time() < deadline:
        await asyncio.sleep(0.05)
    return port


async def serve_port(server: Server, port: Path) -> None:
    """Serve the port forever, a ttrpc connection per host connection.

    The port stays open throughout; each connection gets a duplicate of its fd. Closing
    the port would discard what the guest has received and not yet read: a host that
    connected just as the agent gave up on the previous connection (end of file) would
    lose its first request and wait for an answer forever. A host that goes and comes
    back between two reads is told apart by its requests starting again at stream 1
    (ttrpc.connection).
    """
    while True:
        try:
            fd = transport.open_device(port)
        except TtrpcError as err:
            log.warning("cannot open %s: %s", port, err)
            await asyncio.sleep(1.0)
            continue
        try:
            while True:
                connection = await server.serve_fd(os.dup(fd))
                await connection.wait_closed()
                await asyncio.sleep(_REOPEN_DELAY)
        except TtrpcError as err:
            log.warning("serving %s: %s", port, err)
        finally:
            os.close(fd)
        await asyncio.sleep(1.0)


async def serve_vsock(server: Server, port: int = VSOCK_PORT) -> None:
    """Accept vsock connections on ``port`` forever, one ttrpc connection each."""
    listener = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
    listener.bind((socket.VMADDR_CID_ANY, port))
    listener.listen(16)
    listener.setblocking(False)
    loop = asyncio.get_running_loop()
    while True:
        conn, _ = await loop.sock_accept(listener)
        await server.serve_fd(conn.detach())
