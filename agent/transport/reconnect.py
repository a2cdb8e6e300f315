"""Reaching the guest agent of a running pod-VM again, after the daemon that talked to
it died (a new daemon reattaching).

The guest agent keeps its end of the port open and takes a request on stream 1 for a
new host's session (guest/agent/channel.py, ttrpc.connection), so a new connection's
first request is neither discarded nor refused. What it cannot tell apart: a frame the
dead daemon left half-written, which would swallow the new connection's first bytes.
Waiting out the whole call bound on that one attempt would stall the new daemon's
start; so Health is tried on a fresh connection every few seconds until the bound.
"""

from __future__ import annotations

import asyncio
import time

from agent.transport.client import AgentClient
from agent.transport.connect import connect
from agent.transport.errors import AgentTransportError
from agent.vm.config import Transport
from ttrpc import TtrpcError

ATTEMPT_SECONDS = 5.0


async def connect_serving(
    transport: Transport, bound: float, attempt_seconds: float = ATTEMPT_SECONDS
) -> AgentClient:
    """A client whose guest agent answered Health SERVING, within ``bound`` seconds over
    attempts of at most ``attempt_seconds`` each. Raises AgentTransportError naming the
    last failure."""
    deadline = time.monotonic() + bound
    last = "no attempt"
    while (left := deadline - time.monotonic()) > 0:
        try:
            client = await connect(transport, timeout=min(10.0, left))
        except AgentTransportError as err:
            last = str(err)
            await asyncio.sleep(min(0.5, left))
            continue
        agent = AgentClient(client)
        try:
            if await agent.check(timeout=min(attempt_seconds, left)):
                return agent
            last = "the guest agent is not serving"
        except (TtrpcError, TimeoutError) as err:
            last = f"Health: {type(err).__name__}: {err}"
        await agent.close()
    raise AgentTransportError(
        f"guest agent over {transport} did not answer Health SERVING within {bound:g} s: {last}"
    )
