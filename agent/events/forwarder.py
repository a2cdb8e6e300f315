"""Forwarding task events to containerd, in order, one queue per containerd address.

CRI relies on seeing create, start, exit and delete of a task in that order. Every
event for one address goes through one queue and one connection: the order events
are published in is the order containerd receives them. A failed send is retried
(containerd restarting) with backoff for ``retry_seconds``; after that the event is
dropped with an error log line naming it: a daemon never blocks on containerd.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from google.protobuf.message import Message

from agent.events.envelope import envelope
from api.containerd.services.events.ttrpc.v1 import events_pb2
from ttrpc import Client, ServiceStub, TtrpcError

log = logging.getLogger(__name__)

EVENTS_SERVICE = events_pb2.DESCRIPTOR.services_by_name["Events"]


class ForwardError(Exception):
    """An event could not be delivered to containerd."""


class _Route:
    """The queue and connection for one containerd ttrpc address."""

    def __init__(self, address: str, retry_seconds: float, call_timeout: float) -> None:
        self.address = address
        self.retry_seconds = retry_seconds
        self.call_timeout = call_timeout
        self.queue: asyncio.Queue[events_pb2.Envelope] = asyncio.Queue()
        self.client: Client | None = None
        self.task = asyncio.create_task(self._run(), name=f"events→{address}")

    async def _send(self, item: events_pb2.Envelope) -> None:
        if self.client is None or self.client.closed:
            # Bounded too: a containerd whose listen backlog is full never accepts.
            self.client = await asyncio.wait_for(
                Client.connect_unix(self.address.removeprefix("unix://")), self.call_timeout
            )
        stub = ServiceStub(self.client, EVENTS_SERVICE)
        await stub.Forward(events_pb2.ForwardRequest(envelope=item), timeout=self.call_timeout)

    async def _deliver(self, item: events_pb2.Envelope) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.retry_seconds
        delay = 0.05
        while True:
            try:
                await self._send(item)
            except (TtrpcError, OSError, TimeoutError) as err:
                if self.client is not None:
                    await self.client.close()
                    self.client = None
                if loop.time() + delay > deadline:
                    log.error(  # noqa: TRY400 (one line, no traceback: containerd is away)
                        "event %s (namespace %s) to %s dropped: %s",
                        item.topic, item.namespace, self.address, err,
                    )  # fmt: skip
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
            else:
                return

    async def _run(self) -> None:
        while True:
            item = await self.queue.get()
            try:
                await self._deliver(item)
            finally:
                self.queue.task_done()

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        if self.client is not None:
            await self.client.close()


class EventForwarder:
    """Publishes task events to the containerd whose ttrpc address each sandbox names."""

    def __init__(self, retry_seconds: float = 30.0, call_timeout: float = 5.0) -> None:
        self.retry_seconds = retry_seconds
        self.call_timeout = call_timeout
        self._routes: dict[str, _Route] = {}

    def publish(
        self, address: str, namespace: str, event: Message, at_ns: int | None = None
    ) -> None:
        """Queue ``event`` for ``address``; returns at once. Raises ForwardError for an
        empty address or a message that is no task event."""
        if not address:
            raise ForwardError(f"no containerd address to publish {type(event).__name__} to")
        try:
            item = envelope(namespace, event, at_ns)
        except KeyError as err:
            raise ForwardError(f"{type(event).__name__} is not a task event") from err
        route = self._routes.get(address)
        if route is None:
            route = self._routes[address] = _Route(address, self.retry_seconds, self.call_timeout)
        route.queue.put_nowait(item)

    async def flush(self) -> None:
        """Wait until every queued event was delivered or dropped."""
        await asyncio.gather(*(r.queue.join() for r in self._routes.values()))

    async def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (up to ``timeout`` seconds), then close the connections."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.flush(), timeout)
        routes, self._routes = list(self._routes.values()), {}
        for route in routes:
            await route.close()
