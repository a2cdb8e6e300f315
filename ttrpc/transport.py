"""Carrying ttrpc frames: unix sockets, already-open fds, character devices, streams.

All functions hand bytes to a :class:`~ttrpc.protocol.FrameProtocol` made by a
factory, and return once its ``connection_made`` has run.

Character devices (a virtio-serial port such as ``/dev/vport0p1``, a pty in tests)
are opened ``O_RDWR | O_NONBLOCK`` and driven by asyncio's pipe transports
(``loop.connect_read_pipe`` and ``loop.connect_write_pipe`` on two descriptors of the
same open file). We chose those over hand-written ``add_reader`` loops because they
already implement non-blocking reads, buffered writes with flow control and error
reporting for character devices, and they are the same code paths asyncio uses for
pipes, so nothing here re-implements the event loop.

Unix sockets carry the peer's credentials (``SO_PEERCRED``): servers refuse peers
whose credentials fail a check, by default :func:`same_uid`.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import stat
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from ttrpc.errors import TransportError
from ttrpc.protocol import FrameProtocol, WriteSide, pump_stream

log = logging.getLogger(__name__)

P = TypeVar("P", bound=FrameProtocol)
_UCRED = struct.Struct("3i")


@dataclass(frozen=True, slots=True)
class PeerCredentials:
    """The process at the other end of a unix socket, as the kernel recorded it at connect."""

    pid: int
    uid: int
    gid: int


PeerCheck = Callable[[PeerCredentials], bool]
"""Decides whether a peer may talk to a server; False refuses the connection."""


def same_uid(peer: PeerCredentials) -> bool:
    """The default peer check: the peer runs under our effective uid."""
    return peer.uid == os.geteuid()


class _SocketLike(Protocol):
    """What we need of a socket; asyncio hands out TransportSocket wrappers, not sockets."""

    @property
    def family(self) -> int: ...

    def getsockopt(self, level: int, optname: int, buflen: int, /) -> bytes: ...


def peer_credentials(sock: _SocketLike) -> PeerCredentials | None:
    """The peer of a connected unix socket, or None for other socket families.

    Raises OSError when the kernel does not report them.
    """
    if sock.family != socket.AF_UNIX:
        return None
    pid, uid, gid = _UCRED.unpack(
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    )
    return PeerCredentials(pid=pid, uid=uid, gid=gid)


def _is_abstract(path: str) -> bool:
    return path.startswith("\0") or path.startswith("@")


def _socket_address(path: str) -> str:
    # "@name" is the usual spelling of a Linux abstract socket address.
    return "\0" + path[1:] if path.startswith("@") else path


def _remove_stale_socket(path: str) -> None:
    """Remove a socket file left by a dead server; refuse to touch anything else."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise TransportError(f"cannot listen on {path}: it exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except OSError as err:
        if err.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise TransportError(f"cannot listen on {path}: probing it failed: {err}") from err
    else:
        raise TransportError(f"cannot listen on {path}: a server is already listening there")
    finally:
        probe.close()
    Path(path).unlink(missing_ok=True)


async def listen_unix(
    path: str | Path, factory: Callable[[], FrameProtocol], *, mode: int = 0o600, backlog: int = 128
) -> asyncio.Server:
    """Listen on a unix socket; every accepted connection gets a protocol from ``factory``.

    The socket file gets ``mode`` before the socket listens, so no peer can connect
    while it is more open than asked. A stale socket file (nobody listening) is
    replaced. ``@name`` or ``\\0name`` is an abstract address (no file, no mode).
    Raises TransportError when the path is taken or cannot be bound.
    """
    name = os.fspath(path)
    address = _socket_address(name)
    if not _is_abstract(name):
        _remove_stale_socket(name)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(address)
        if not _is_abstract(name):
            Path(name).chmod(mode)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as err:
        sock.close()
        raise TransportError(f"cannot listen on {name}: {err}") from err
    loop = asyncio.get_running_loop()
    return await loop.create_unix_server(factory, sock=sock)


async def connect_unix(path: str | Path, factory: Callable[[], P]) -> P:
    """Connect to a unix socket (``@name`` for an abstract address).

    Raises TransportError when nobody listens there or access is denied.
    """
    name = os.fspath(path)
    loop = asyncio.get_running_loop()
    try:
        _, protocol = await loop.create_unix_connection(factory, _socket_address(name))
    except OSError as err:
        raise TransportError(f"cannot connect to {name}: {err}") from err
    return protocol


def is_char_device(fd: int) -> bool:
    """Whether ``fd`` is a character device (False when it cannot be examined)."""
    try:
        return stat.S_ISCHR(os.fstat(fd).st_mode)
    except OSError:
        return False


async def open_fd(fd: int, factory: Callable[[], P]) -> P:
    """Run a protocol over an already-open fd, which it then owns (it is closed with it).

    A stream socket (a socketpair end, an inherited connection) becomes a socket
    transport; a character device (virtio-serial port, tty) becomes a pair of pipe
    transports on ``fd`` and a duplicate of it. Raises TransportError for anything else.
    """
    try:
        mode = os.fstat(fd).st_mode
    except OSError as err:
        raise TransportError(f"fd {fd} is not usable: {err}") from err
    loop = asyncio.get_running_loop()
    if stat.S_ISSOCK(mode):
        sock = socket.socket(fileno=fd)
        if sock.type != socket.SOCK_STREAM:
            sock.detach()
            raise TransportError(f"fd {fd} is a socket but not a stream socket")
        sock.setblocking(False)
        try:
            _, protocol = await loop.connect_accepted_socket(factory, sock)
        except OSError as err:
            sock.close()
            raise TransportError(f"cannot use socket fd {fd}: {err}") from err
        return protocol
    if stat.S_ISCHR(mode):
        return await open_pipes(fd, os.dup(fd), factory)
    raise TransportError(f"fd {fd} is neither a stream socket nor a character device")


async def open_pipes(read_fd: int, write_fd: int, factory: Callable[[], P]) -> P:
    """Run a protocol over two fds (pipes, fifos or a character device), which it owns.

    Raises TransportError when asyncio cannot drive them (e.g. a regular file).
    """
    loop = asyncio.get_running_loop()
    reading = os.fdopen(read_fd, "rb", buffering=0)
    writing = os.fdopen(write_fd, "wb", buffering=0)
    protocol = factory()
    try:
        write_transport, _ = await loop.connect_write_pipe(lambda: WriteSide(protocol), writing)
    except (ValueError, OSError) as err:
        reading.close()
        writing.close()
        raise TransportError(f"cannot write to fd {write_fd}: {err}") from err
    protocol.attach_writer(write_transport)
    try:
        await loop.connect_read_pipe(lambda: protocol, reading)
    except (ValueError, OSError) as err:
        write_transport.close()
        reading.close()
        raise TransportError(f"cannot read from fd {read_fd}: {err}") from err
    return protocol


def open_device(path: str | Path) -> int:
    """Open a character device (``/dev/vport0p1``) read-write, non-blocking; its fd.

    Raises TransportError when it cannot be opened or is not a character device.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as err:
        raise TransportError(f"cannot open {path}: {err}") from err
    if not stat.S_ISCHR(os.fstat(fd).st_mode):
        os.close(fd)
        raise TransportError(f"{path} is not a character device")
    return fd


async def open_char_device(path: str | Path, factory: Callable[[], P]) -> P:
    """Open a character device as :func:`open_device` does and run over it.

    Raises TransportError when it cannot be opened or is not a character device.
    """
    return await open_fd(open_device(path), factory)


def open_streams(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, factory: Callable[[], P]
) -> tuple[P, asyncio.Task[None]]:
    """Run a protocol over an asyncio stream pair; returns it and the task feeding it.

    Keep a reference to the task: it ends when the stream does.
    """
    protocol = factory()
    protocol.attach_streams(reader, writer)
    task = asyncio.get_running_loop().create_task(pump_stream(reader, protocol))
    return protocol, task
