"""Opening a ttrpc connection to the guest agent over the VM's transport."""

from __future__ import annotations

import asyncio
import socket

from agent.transport.errors import AgentTransportError
from agent.vm.config import Transport, VirtioSerialTransport, VsockTransport
from ttrpc import Client, TtrpcError


async def connect(transport: Transport, timeout: float = 10.0) -> Client:
    """A ttrpc client to the guest agent.

    For virtio-serial this connects to QEMU's end of the port, which works before
    the guest has booted: requests wait in the socket until the agent opens the
    port. Connect right after launch so the guest sees the host side connected.
    Raises AgentTransportError.
    """
    try:
        if isinstance(transport, VirtioSerialTransport):
            return await asyncio.wait_for(Client.connect_unix(transport.socket), timeout)
        assert isinstance(transport, VsockTransport)
        return await asyncio.wait_for(_connect_vsock(transport), timeout)
    except (TtrpcError, OSError, TimeoutError) as err:
        raise AgentTransportError(f"cannot reach the guest agent over {transport}: {err}") from err


async def _connect_vsock(transport: VsockTransport) -> Client:
    sock = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (transport.guest_cid, transport.port))
    except OSError:
        sock.close()
        raise
    return await Client.from_fd(sock.detach())
