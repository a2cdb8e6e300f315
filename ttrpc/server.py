"""The ttrpc server: registers services and serves them on any transport.

Each connection is a :class:`~ttrpc.connection.ServerConnection` (see there for how
requests and protocol violations are answered); the server tracks them, and the
handlers they leave running, for a graceful :meth:`Server.close`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from google.protobuf.descriptor import ServiceDescriptor

from ttrpc import transport
from ttrpc.connection import ServerConnection
from ttrpc.errors import TransportError
from ttrpc.service import Method, bind_service
from ttrpc.transport import PeerCheck, same_uid

__all__ = ["Server", "ServerConnection"]

log = logging.getLogger(__name__)


class Server:
    """A ttrpc server: register services, then serve any number of transports.

    ``peer_check`` decides about unix socket peers (default :func:`same_uid`; None
    accepts everyone). Connections without peer credentials (character devices,
    pipes) are not checked.
    """

    def __init__(self, *, peer_check: PeerCheck | None = same_uid) -> None:
        self.peer_check = peer_check
        self.services: dict[str, dict[str, Method]] = {}
        self._listeners: list[tuple[asyncio.Server, str | None]] = []
        self._connections: set[ServerConnection] = set()
        self._pumps: set[asyncio.Task[None]] = set()
        self._orphans: set[asyncio.Task[None]] = set()
        self._closing = False

    def register(
        self, descriptor: ServiceDescriptor, impl: object, *, name: str | None = None,
        waiting: Iterable[str] = (),
    ) -> None:  # fmt: skip
        """Serve ``descriptor``'s RPCs with ``impl``'s methods of the same names.

        ``name`` overrides the service name (default ``descriptor.full_name``).
        ``waiting`` names RPCs that only wait and consume nothing when cancelled (a
        long poll for output or an event): their handlers are cancelled when the client
        goes, so that a departed client's call cannot take what the next client waits
        for. Every other handler runs to its end, its answer dropped.
        Raises ValueError when the name is already registered or ``waiting`` names an
        RPC the service does not have, TypeError for an RPC attribute that is not an
        async method.
        """
        methods = bind_service(descriptor, impl, name)
        for rpc in waiting:
            if rpc not in methods:
                raise ValueError(f"{descriptor.full_name} has no RPC {rpc} (in waiting)")
            methods[rpc] = dataclasses.replace(methods[rpc], waits=True)
        service = name or descriptor.full_name
        if service in self.services:
            raise ValueError(f"service {service} is already registered")
        self.services[service] = methods

    # -- transports ----------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closing:
            raise TransportError("the server is closed")

    async def serve_unix(self, path: str | Path, *, mode: int = 0o600) -> None:
        """Listen on a unix socket and return once it accepts connections.

        The socket file gets ``mode``; peers are checked with ``peer_check``. The
        file is removed by :meth:`close`. Raises TransportError.
        """
        self._check_open()
        listener = await transport.listen_unix(path, lambda: ServerConnection(self), mode=mode)
        name = os.fspath(path)
        self._listeners.append((listener, None if name.startswith(("@", "\0")) else name))
        log.info("ttrpc: serving on %s", name)

    async def serve_fd(self, fd: int) -> ServerConnection:
        """Serve one connection over an open fd (stream socket or character device).

        The server owns ``fd`` from now on. Returns the connection; await its
        ``wait_closed()`` to learn when the peer is gone. Over a character device a
        request on stream 1 after others starts a new client's session (see
        ttrpc.connection). Raises TransportError.
        """
        self._check_open()
        device = transport.is_char_device(fd)
        return await transport.open_fd(fd, lambda: ServerConnection(self, new_sessions=device))

    async def serve_char_device(self, path: str | Path) -> ServerConnection:
        """Serve one connection over a character device such as a virtio-serial port
        (new client sessions as in :meth:`serve_fd`)."""
        self._check_open()
        return await transport.open_char_device(
            path, lambda: ServerConnection(self, new_sessions=True)
        )

    def serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> ServerConnection:
        """Serve one connection over an asyncio stream pair; returns at once.

        Await the connection's ``wait_closed()`` to learn when it ends.
        """
        self._check_open()
        connection, pump = transport.open_streams(reader, writer, lambda: ServerConnection(self))
        self._pumps.add(pump)
        pump.add_done_callback(self._pumps.discard)
        return connection

    # -- bookkeeping -----------------------------------------------------------------

    def _adopt(self, connection: ServerConnection) -> bool:
        """Track a new connection; False (refuse it) once the server is closing."""
        if self._closing:
            return False
        self._connections.add(connection)
        return True

    def _forget(self, connection: ServerConnection) -> None:
        """Stop tracking a connection that ended."""
        self._connections.discard(connection)

    def _keep_orphans(self, tasks: Iterable[asyncio.Task[None]]) -> None:
        """Hold on to handlers whose connection is gone until they finish."""
        for task in tasks:
            if not task.done():
                self._orphans.add(task)
                task.add_done_callback(self._orphans.discard)

    @property
    def connections(self) -> frozenset[ServerConnection]:
        """The open connections."""
        return frozenset(self._connections)

    async def close(self, timeout: float = 5.0) -> None:
        """Shut down gracefully: stop accepting, let running calls finish, close.

        New requests on open connections are answered UNAVAILABLE meanwhile; calls
        still running after ``timeout`` seconds are cancelled (answered CANCELLED).
        """
        self._closing = True
        for listener, _ in self._listeners:
            listener.close()
        for connection in self._connections:
            connection.start_draining()
        running = [task for c in self._connections for task in c.inflight]
        running.extend(self._orphans)
        if running:
            _, late = await asyncio.wait(running, timeout=timeout)
            for task in late:
                task.cancel()
            if late:
                log.warning("ttrpc: cancelled %d calls still running at shutdown", len(late))
                await asyncio.wait(late)
        connections = list(self._connections)
        for connection in connections:
            connection.close("server shut down")
        if connections:
            closing = [asyncio.ensure_future(c.wait_closed()) for c in connections]
            _, stuck = await asyncio.wait(closing, timeout=timeout)
            for waiter in stuck:
                waiter.cancel()
        for connection in connections:
            connection.abort("server shut down")
        for listener, path in self._listeners:
            await listener.wait_closed()
            if path is not None:
                Path(path).unlink(missing_ok=True)
        self._listeners.clear()
        if self._pumps:
            await asyncio.wait(list(self._pumps), timeout=timeout)
