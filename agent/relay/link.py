"""One containerd connection held by the relay, and its connection to the daemon.

Frames pass through unchanged both ways, stream ids kept. Of containerd's frames only
a request is decoded, to learn its method and timeout; the daemon's frames are not
decoded at all. The link remembers every request the daemon has not answered yet.

When the daemon's side drops (the daemon died), containerd's side stays open:

- requests in flight for a method in :data:`REPLAYABLE` are sent again, with their
  original stream ids and bytes, once a daemon serves the namespace again;
- every other request in flight is answered UNAVAILABLE naming the method: the relay
  cannot know whether the dead daemon acted on it (a Create half done, a Kill
  delivered), and running it twice could do harm;
- requests arriving meanwhile wait for the daemon;
- a request still waiting at its own deadline (``timeout_nano``), or after
  :data:`WAIT_SECONDS` without a daemon when it has none, is answered UNAVAILABLE
  (counted from when it began waiting: a Wait containerd sent when the task started,
  replayed after a daemon crash hours later, gets the whole bound too).

An oversized frame or a request that does not decode, from either side, closes this
link (both its connections) and nothing else.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from google.protobuf.message import DecodeError

from ttrpc import transport
from ttrpc.errors import Code, TransportError
from ttrpc.framing import REQUEST, RESPONSE
from ttrpc.proto.ttrpc_pb2 import Request
from ttrpc.protocol import FrameProtocol
from ttrpc.responses import encode_response
from ttrpc.transport import PeerCheck, PeerCredentials

log = logging.getLogger(__name__)

TASK_SERVICES = frozenset({"containerd.task.v2.Task", "containerd.task.v3.Task"})
# Safe to send again to a new daemon: they change nothing and the new daemon answers
# them from its persisted state. Wait is the one that matters: containerd (CRI) keeps
# one in flight per task for as long as the task runs; a replayed Wait of a task that
# exited while no daemon ran is answered from the state the new daemon reattached.
REPLAYABLE = frozenset({"Wait", "State", "Connect", "Pids", "Stats"})
# How long a request without a deadline waits for a daemon before UNAVAILABLE. Generous:
# a restarted daemon reattaches every pod-VM before it serves.
WAIT_SECONDS = 120.0
RETRY_FIRST = 0.05
RETRY_MAX = 1.0


class Hub(Protocol):
    """What a link needs of the relay."""

    def daemon_wanted(self) -> None:
        """The daemon's socket refused us: start a daemon if that is ours to do."""

    def forget(self, link: Link) -> None:
        """The link is closed."""


@dataclass
class Pending:
    """A request the daemon has not answered."""

    flags: int
    data: bytes
    method: str
    replayable: bool
    deadline: float
    sent: bool
    own_deadline: bool  # containerd's timeout_nano, else WAIT_SECONDS from its wait


class Downstream(FrameProtocol):
    """containerd's side: an accepted connection on ``ns/<namespace>.sock``."""

    def __init__(self, make_link: Callable[[Downstream], Link], peer_check: PeerCheck) -> None:
        super().__init__()
        self.label = "relay: containerd connection"
        self._make_link = make_link
        self._peer_check = peer_check
        self.link: Link | None = None

    def connection_ready(self) -> bool:
        sock = self.get_extra_info("socket")
        try:
            peer: PeerCredentials | None = transport.peer_credentials(sock) if sock else None
        except OSError as err:
            log.warning("relay: refusing a connection: no peer credentials: %s", err)
            return False
        if peer is not None and not self._peer_check(peer):
            log.warning("relay: refusing a connection from pid %d uid %d", peer.pid, peer.uid)
            return False
        if peer is not None:
            self.label = f"relay: containerd connection from pid {peer.pid}"
        self.link = self._make_link(self)
        return True

    def frame_received(self, stream_id: int, message_type: int, flags: int, data: bytes) -> None:
        if self.link is not None:
            self.link.from_containerd(stream_id, message_type, flags, data)

    def oversized_frame_received(
        self, stream_id: int, message_type: int, flags: int, length: int
    ) -> None:
        if self.link is not None:
            self.link.close(f"containerd sent a frame of {length} bytes")

    def connection_ended(self, reason: str) -> None:
        if self.link is not None:
            self.link.close(f"containerd's side: {reason}")


class Upstream(FrameProtocol):
    """The daemon's side: our connection to ``daemon-ns/<namespace>.sock``."""

    def __init__(self, link: Link) -> None:
        super().__init__()
        self.label = f"relay: daemon connection for {link.namespace}"
        self._link = link

    def frame_received(self, stream_id: int, message_type: int, flags: int, data: bytes) -> None:
        self._link.from_daemon(self, stream_id, message_type, flags, data)

    def oversized_frame_received(
        self, stream_id: int, message_type: int, flags: int, length: int
    ) -> None:
        self._link.close(f"the daemon sent a frame of {length} bytes")

    def connection_ended(self, reason: str) -> None:
        self._link.daemon_lost(self, reason)


class Link:
    """A containerd connection and the daemon connection it is passed on to."""

    def __init__(self, hub: Hub, namespace: str, upstream_path: Path, downstream: Downstream):
        self.hub = hub
        self.namespace = namespace
        self.upstream_path = upstream_path
        self.downstream = downstream
        self.upstream: Upstream | None = None
        self.pending: dict[int, Pending] = {}
        self.closed = False
        self._loop = asyncio.get_running_loop()
        self._connecting: asyncio.Task[None] | None = None
        self._reconnect()

    # -- containerd -> daemon ------------------------------------------------------

    def from_containerd(self, stream_id: int, message_type: int, flags: int, data: bytes) -> None:
        if message_type == REQUEST:
            try:
                request = Request.FromString(data)
            except DecodeError as err:
                self.close(f"containerd sent a request that does not decode: {err}")
                return
            timeout = request.timeout_nano / 1e9 if request.timeout_nano > 0 else WAIT_SECONDS
            self.pending[stream_id] = Pending(
                flags=flags,
                data=data,
                method=f"{request.service}/{request.method}",
                replayable=request.service in TASK_SERVICES and request.method in REPLAYABLE,
                deadline=self._loop.time() + timeout,
                sent=self.upstream is not None,
                own_deadline=request.timeout_nano > 0,
            )
        if self.upstream is not None:
            self.upstream.write_frame(stream_id, message_type, flags, data)
        elif message_type != REQUEST:
            # Data frames belong to streaming calls, which the Task API has none of.
            log.info("%s: no daemon; dropping a frame of type %d", self.namespace, message_type)

    # -- daemon -> containerd ------------------------------------------------------

    def from_daemon(
        self, upstream: Upstream, stream_id: int, message_type: int, flags: int, data: bytes
    ) -> None:
        if upstream is not self.upstream:
            return
        if message_type == RESPONSE:
            self.pending.pop(stream_id, None)
        self.downstream.write_frame(stream_id, message_type, flags, data)

    def daemon_lost(self, upstream: Upstream, reason: str) -> None:
        if upstream is not self.upstream or self.closed:
            return
        self.upstream = None
        log.warning(
            "%s: lost the daemon (%s); holding containerd's connection", self.namespace, reason
        )
        for stream_id in sorted(self.pending):
            request = self.pending[stream_id]
            if request.sent and not request.replayable:
                self._unavailable(
                    stream_id, f"{request.method}: the node daemon restarted during the call"
                )
            else:
                request.sent = False
                if not request.own_deadline:  # waits for a daemon from now on
                    request.deadline = self._loop.time() + WAIT_SECONDS
        self._reconnect()

    # -- reconnecting --------------------------------------------------------------

    def _reconnect(self) -> None:
        if self._connecting is None or self._connecting.done():
            self._connecting = self._loop.create_task(self._connect())

    async def _connect(self) -> None:
        delay = RETRY_FIRST
        while not self.closed:
            self._expire()
            try:
                upstream = await transport.connect_unix(self.upstream_path, lambda: Upstream(self))
            except TransportError as err:
                log.debug("%s: %s", self.namespace, err)
                try:
                    self.hub.daemon_wanted()
                except Exception:  # nothing may end the reconnect loop
                    log.exception("%s: asking for a daemon failed", self.namespace)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            if self.is_closed():  # closed while we were connecting
                upstream.close()
                return
            self._attach(upstream)
            return

    def _attach(self, upstream: Upstream) -> None:
        self.upstream = upstream
        for stream_id in sorted(self.pending):
            request = self.pending[stream_id]
            if not request.sent:
                request.sent = True
                upstream.write_frame(stream_id, REQUEST, request.flags, request.data)
        log.info(
            "%s: connected to the daemon (%d requests replayed or sent)",
            self.namespace,
            len(self.pending),
        )

    def _expire(self) -> None:
        now = self._loop.time()
        for stream_id in sorted(self.pending):
            request = self.pending[stream_id]
            if not request.sent and request.deadline <= now:
                self._unavailable(
                    stream_id, f"{request.method}: the node daemon did not come back in time"
                )

    def _unavailable(self, stream_id: int, message: str) -> None:
        self.pending.pop(stream_id, None)
        self.downstream.write_frame(
            stream_id, RESPONSE, 0, encode_response(Code.UNAVAILABLE, message, b"")
        )

    # -- closing -------------------------------------------------------------------

    def is_closed(self) -> bool:
        return self.closed

    def close(self, reason: str) -> None:
        """Close both connections (containerd will take the shim for dead)."""
        if self.closed:
            return
        self.closed = True
        log.info("%s: closing a relayed connection: %s", self.namespace, reason)
        if self._connecting is not None:
            self._connecting.cancel()
        self.pending.clear()
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.close(reason)
        self.downstream.close(reason)
        self.hub.forget(self)
