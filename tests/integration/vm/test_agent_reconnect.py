"""The host reconnecting to a running guest agent over virtio-serial, as the daemon
does after a restart (reattach) or a SIGKILL: every connection's first request is
answered, whatever moment of the agent's wait for the host it lands in.

The agent waits for the host by reading the port, which reads as end-of-file while
no host is connected. A request that arrived while the agent was just giving up on
the previous connection must not be lost.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from agent.transport.client import AgentClient
from agent.transport.connect import connect
from agent.vm.manager import VM
from guest.image.manifest import GuestImage
from tests.integration.vm.conftest import vm_config

BOOT_TIMEOUT = 300.0
CONNECTIONS = 60
ANSWER_SECONDS = 30.0  # generous under a loaded TCG guest; a lost request never answers


async def test_every_reconnection_is_answered(guest_image: GuestImage, vm_dir: Path) -> None:
    config = vm_config(guest_image, vm_dir, "reconnect")
    vm = await VM.launch(config)
    try:
        # Not connected before the agent serves: it waits for the host, as it does
        # for a restarted daemon.
        await vm.wait_ready(BOOT_TIMEOUT)
        rng = random.Random(20261202)
        lost: list[tuple[int, str]] = []
        for attempt in range(CONNECTIONS):
            agent = AgentClient(await connect(config.transport))
            try:
                if not await agent.check(timeout=ANSWER_SECONDS):
                    lost.append((attempt, "not SERVING"))
            except Exception as err:  # counted and reported below
                lost.append((attempt, repr(err)))
            finally:
                await agent.close()
            # Land the next connection anywhere in the agent's wait for the host.
            await asyncio.sleep(rng.uniform(0.0, 0.25))
        assert lost == [], f"{len(lost)} of {CONNECTIONS} connections got no answer: {lost}"
    finally:
        await vm.stop()
