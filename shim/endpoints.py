"""One Task socket per containerd namespace (see :class:`NamespaceBound`).

``<run dir>/daemon-ns/<namespace>.sock``, created when the first task of the namespace
is registered (or a persisted sandbox of it is loaded), mode 0600, same peer check as
the daemon's main socket. containerd does not dial these: it dials the relay's
``<run dir>/ns/<namespace>.sock`` (:mod:`agent.relay`), which holds containerd's
connections across a daemon restart and passes every frame on to these sockets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.daemon import settings as daemon_settings
from agent.sandbox.state import check_id
from shim import task
from ttrpc import CallContext, InvalidArgument, PeerCheck, Server


class NamespaceBound:
    """The Task service for one containerd namespace, served on that namespace's socket.

    containerd 1.6 sends no namespace metadata on shim calls (a per-task shim knows
    its namespace from ``-namespace``). Our daemon serves every namespace, so each gets
    its own socket (``start`` prints it) and calls on it are bound to that namespace.
    A call that names a different namespace is refused.
    """

    def __init__(self, tasks: task.TaskService, namespace: str) -> None:
        self.namespace = namespace
        for method in task.SERVICE.methods:
            setattr(self, method.name, self._bind(getattr(tasks, method.name)))

    def _bind(self, rpc: Any) -> Any:
        async def call(request: Any, ctx: CallContext) -> Any:
            sent = ctx.get(task.NAMESPACE_KEY)
            if sent and sent != self.namespace:
                raise InvalidArgument(
                    f"namespace {sent} on the socket of namespace {self.namespace}"
                )
            bound = CallContext(
                ctx.service,
                ctx.method,
                {**ctx.metadata, task.NAMESPACE_KEY: (self.namespace,)},
                deadline=ctx.deadline,
                peer=ctx.peer,
                stream_id=ctx.stream_id,
            )
            return await rpc(request, bound)

        return call


class Endpoints:
    """The per-namespace Task servers of one daemon."""

    def __init__(self, run_dir: Path, tasks: task.TaskService, peer_check: PeerCheck) -> None:
        self.folder = run_dir / daemon_settings.DAEMON_NS_DIR
        self.tasks = tasks
        self.peer_check = peer_check
        self._servers: dict[str, Server] = {}

    def path(self, namespace: str) -> Path:
        return self.folder / f"{check_id(namespace, 'namespace')}.sock"

    async def ensure(self, namespace: str) -> str:
        """The address (``unix://…``) serving ``namespace``, serving it first if needed.

        Raises StateError for a namespace that is no valid identifier, TtrpcError when
        the socket cannot be served.
        """
        path = self.path(namespace)
        if namespace not in self._servers:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            server = Server(peer_check=self.peer_check)
            bound = NamespaceBound(self.tasks, namespace)
            for name in task.NAMES:
                server.register(task.SERVICE, bound, name=name)
            await server.serve_unix(path, mode=0o600)
            self._servers[namespace] = server
        return f"unix://{path}"

    async def close(self) -> None:
        """Stop serving. The relay's connections are dropped unanswered, as by a crash:
        the relay then replays what it may (a pending Wait) to the next daemon, which a
        graceful close would have answered CANCELLED. Handlers still running finish."""
        servers, self._servers = list(self._servers.values()), {}
        for server in servers:
            for connection in server.connections:
                connection.abort("the node daemon is stopping")
        for server in servers:
            await server.close()
