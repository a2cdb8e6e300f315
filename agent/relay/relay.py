"""The relay: containerd's per-namespace sockets, the control service, the daemon's restart.

- ``ns/<namespace>.sock`` (0600, peers root or our uid) for every namespace the
  daemon serves: each accepted connection becomes a :class:`~agent.relay.link.Link`
  to ``daemon-ns/<namespace>.sock``. At start-up the relay listens for every socket
  already in ``daemon-ns/`` (a restarted relay serves all namespaces again); later
  ones are added by ``contrast.node.v1.Relay/Listen`` on ``relay.sock``, which the
  shim entry calls at ``start``.
- When a link finds the daemon's socket refusing, the relay starts a daemon
  (:func:`~agent.daemon.lifecycle.spawn_detached`, as the shim entry does) unless a
  service manager supervises it (``CONTRAST_DAEMON_SUPERVISED=1``) or a daemon holds
  ``daemon.lock`` (starting up), at most one at a time.
- Unsupervised, the relay leaves by itself once it has held no containerd connection
  and no daemon answered for :data:`IDLE_SECONDS` (the next ``start`` runs a new one).
  Supervised with ``CONTRAST_RELAY_EXIT_IDLE=1`` (the DaemonSet: a shim started us,
  the kubelet runs the daemon, which is always there), it leaves once it has held no
  containerd connection, served no ``Listen`` and seen no sandbox in the state
  directory for :data:`IDLE_SECONDS`: the sandboxes keep it across a containerd
  restart (containerd dials the tasks' addresses again), a ``Listen`` covers a task
  registered but not created yet. The systemd unit's relay never leaves by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

from agent.daemon import settings as daemon_settings
from agent.daemon.lifecycle import lock_held, root_only, spawn_detached
from agent.relay.link import Downstream, Link
from agent.sandbox.errors import StateError
from agent.sandbox.state import check_id
from api.node import relay_pb2
from ttrpc import CallContext, InvalidArgument, Server, TtrpcError
from ttrpc import transport as ttrpc_transport

log = logging.getLogger(__name__)

SERVICE = relay_pb2.DESCRIPTOR.services_by_name["Relay"]
IDLE_SECONDS = 15.0
POLL_SECONDS = 1.0


async def _every(seconds: float) -> AsyncIterator[float]:
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(seconds)
        yield loop.time()


class RelayError(Exception):
    """The relay cannot serve; names what is wrong."""


DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def _names(folder: int, name: str) -> list[str]:
    """The visible entries of directory ``name`` in the directory open as ``folder``
    (none when it is gone or no directory); raises OSError."""
    try:
        fd = os.open(name, DIRECTORY, dir_fd=folder)
    except (FileNotFoundError, NotADirectoryError):
        return []
    try:
        return [n for n in os.listdir(fd) if not n.startswith(".")]  # noqa: PTH208 (an fd)
    finally:
        os.close(fd)


def sandboxes_exist(state_dir: int) -> bool:
    """The daemon keeps state for at least one sandbox (``sandboxes/<ns>/<id>.json``)
    in the state directory open as ``state_dir`` (a directory fd: it stays the host's
    directory when the path no longer leads there, see :mod:`agent.relay.main`)."""
    try:
        sandboxes = os.open("sandboxes", DIRECTORY, dir_fd=state_dir)
    except FileNotFoundError:
        return False
    except OSError:
        return True  # cannot tell: stay
    try:
        return any(
            name.endswith(".json")
            for namespace in _names(sandboxes, ".")
            for name in _names(sandboxes, namespace)
        )
    except OSError:
        return True
    finally:
        os.close(sandboxes)


def answers(path: Path) -> bool:
    """Somebody accepts connections on the unix socket ``path``."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


class Relay:
    """Every containerd-facing socket of the node, and the links through them."""

    def __init__(
        self, config: daemon_settings.Settings, public_run_dir: Path | None = None
    ) -> None:
        """``public_run_dir``: the run directory as containerd names it, when
        ``config.run_dir`` is relative (our working directory, :mod:`agent.relay.main`)."""
        self.config = config
        self._public_ns_dir = (public_run_dir or config.run_dir) / daemon_settings.NS_DIR
        self.links: set[Link] = set()
        self._listeners: dict[str, asyncio.Server] = {}
        self._control = Server(peer_check=root_only)
        self._daemon: subprocess.Popen[bytes] | None = None
        self._listened = False  # a Listen since the idle watch last looked
        self._state_dir: int | None = None  # config.state_dir, open once it exists
        self.idle = asyncio.Event()

    # -- serving -------------------------------------------------------------------

    async def start(self) -> None:
        """Listen for every namespace the daemon serves, then serve ``relay.sock``."""
        with contextlib.suppress(OSError):  # not there yet: the idle watch tries again
            self._open_state_dir()
        daemon_ns = self.config.daemon_ns_dir
        if daemon_ns.is_dir():
            for path in sorted(daemon_ns.glob("*.sock")):
                try:
                    await self.listen(path.stem)
                except RelayError as err:
                    log.warning("not relaying %s: %s", path, err)
        self._control.register(SERVICE, self)
        try:
            await self._control.serve_unix(self.config.relay_socket, mode=0o600)
        except TtrpcError as err:
            raise RelayError(f"cannot serve on {self.config.relay_socket}: {err}") from err

    async def listen(self, namespace: str) -> str:
        """The address containerd dials for ``namespace``, listening first if needed."""
        try:
            name = check_id(namespace, "namespace")
        except StateError as err:
            raise RelayError(str(err)) from err
        path = self.config.ns_dir / f"{name}.sock"
        self._listened = True
        if name not in self._listeners:
            self.config.ns_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            upstream = self.config.daemon_ns_dir / f"{name}.sock"

            def accept() -> Downstream:
                return Downstream(lambda d: self._adopt(Link(self, name, upstream, d)), root_only)

            try:
                self._listeners[name] = await ttrpc_transport.listen_unix(path, accept)
            except TtrpcError as err:
                raise RelayError(str(err)) from err
            log.info("relaying %s to %s", self._public_ns_dir / path.name, upstream)
        return f"unix://{self._public_ns_dir / path.name}"

    async def Listen(
        self, request: relay_pb2.ListenRequest, ctx: CallContext
    ) -> relay_pb2.ListenResponse:
        try:
            return relay_pb2.ListenResponse(address=await self.listen(request.namespace))
        except RelayError as err:
            raise InvalidArgument(str(err)) from err

    def _adopt(self, link: Link) -> Link:
        self.links.add(link)
        return link

    def forget(self, link: Link) -> None:
        self.links.discard(link)

    # -- the daemon ----------------------------------------------------------------

    def daemon_wanted(self) -> None:
        if self.config.supervised:
            return
        if self._daemon is not None:
            if self._daemon.poll() is None:
                return  # ours, still starting (it reattaches its pods before serving)
            self._daemon = None
        if self._daemon_runs():
            return  # up or starting; the namespace's socket is not (yet) served
        log.warning("no node daemon answers on %s: starting one", self.config.socket)
        try:
            self._daemon = spawn_detached(
                "agent.daemon", self.config.run_dir.absolute(), daemon_settings.LOG_FILE
            )
        except (OSError, subprocess.SubprocessError) as err:
            log.error("cannot start the node daemon: %s", err)  # noqa: TRY400 (says it all)

    def _daemon_runs(self) -> bool:
        """A daemon answers, or holds the run directory's lock (reattaching, not yet
        serving: a daemon started by a shim entry, say)."""
        return answers(self.config.socket) or lock_held(
            self.config.run_dir / daemon_settings.LOCK_FILE
        )

    def _open_state_dir(self) -> None:
        """Hold the state directory open while its path leads there; raises OSError."""
        if self._state_dir is None:
            self._state_dir = os.open(self.config.state_dir, DIRECTORY)

    def _sandboxes_exist(self) -> bool:
        try:
            self._open_state_dir()  # the daemon may create it after we started
        except FileNotFoundError:
            return False
        except OSError:
            return True  # cannot tell: stay
        return self._state_dir is not None and sandboxes_exist(self._state_dir)

    def _needed(self) -> bool:
        if self.links:
            return True
        if self.config.supervised:
            listened, self._listened = self._listened, False
            return listened or self._sandboxes_exist()
        if self._daemon is not None and self._daemon.poll() is not None:
            self._daemon = None  # reaped
        return self._daemon is not None or self._daemon_runs()

    async def watch_idle(self, polls: AsyncIterator[float] | None = None) -> None:
        """Set :attr:`idle` once nothing needed us for :data:`IDLE_SECONDS`
        (unsupervised, or supervised with ``relay_exit_idle``). ``polls`` yields the
        time of each look (default: every :data:`POLL_SECONDS` on the loop's clock;
        tests drive their own)."""
        if self.config.supervised and not self.config.relay_exit_idle:
            return
        idle_since: float | None = None
        async for now in polls or _every(POLL_SECONDS):
            if self._needed():
                idle_since = None
            elif idle_since is None:
                idle_since = now
            elif now - idle_since >= IDLE_SECONDS:
                what = "no sandbox" if self.config.supervised else "no daemon"
                log.info("no containerd connection and %s for %.0f s", what, IDLE_SECONDS)
                self.idle.set()
                return

    async def close(self) -> None:
        """Stop listening and close every link (containerd takes the shims for dead)."""
        listeners, self._listeners = dict(self._listeners), {}
        for listener in listeners.values():
            listener.close()
        for link in list(self.links):
            link.close("the relay is stopping")
        for name, listener in listeners.items():
            await listener.wait_closed()
            with contextlib.suppress(OSError):
                (self.config.ns_dir / f"{name}.sock").unlink()
        await self._control.close()
        if self._state_dir is not None:
            os.close(self._state_dir)
            self._state_dir = None
