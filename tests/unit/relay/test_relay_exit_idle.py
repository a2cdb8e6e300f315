"""A supervised relay started on demand (the DaemonSet: ``CONTRAST_RELAY_EXIT_IDLE=1``)
leaves once it holds no containerd connection, served no Listen and the state directory
has no sandbox, for IDLE_SECONDS; the systemd unit's relay (no such flag) never does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agent.daemon.settings import Settings
from agent.relay import relay as relay_module
from agent.relay.relay import Relay
from api.node import relay_pb2
from tests.unit.shim.sinks import socket_dir
from ttrpc import Client, ServiceStub

RELAY = relay_pb2.DESCRIPTOR.services_by_name["Relay"]


@pytest.fixture
def run_dir() -> Iterator[Path]:
    with socket_dir() as folder:
        yield folder


def sandbox_state(run_dir: Path) -> Path:
    path = run_dir / "state" / "sandboxes" / "k8s.io" / "pod1.json"
    path.parent.mkdir(parents=True)
    path.write_text("{}")
    return path


class Polls:
    """The relay's idle watch, one look at a time when the test says, on a clock that
    moves by a second per look: no wall-clock margin decides the outcome."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.now = 0.0
        self._go: asyncio.Queue[None] = asyncio.Queue()
        self._looked: asyncio.Queue[None] = asyncio.Queue()

    async def times(self) -> AsyncIterator[float]:
        while True:
            await self._go.get()
            self.now += 1.0
            yield self.now
            self._looked.put_nowait(None)  # asked for the next: this look is done

    async def look(self) -> bool:
        """Let the watch look once; whether it then found the relay idle."""
        self._go.put_nowait(None)
        looked = asyncio.ensure_future(self._looked.get())
        idle = asyncio.ensure_future(self.relay.idle.wait())
        await asyncio.wait([looked, idle], timeout=30, return_when=asyncio.FIRST_COMPLETED)
        looked.cancel()
        idle.cancel()
        return self.relay.idle.is_set()


async def test_a_relay_started_on_demand_leaves_once_no_sandbox_remains(run_dir: Path) -> None:
    state = sandbox_state(run_dir)
    config = Settings(
        run_dir, run_dir / "state", "pod-vm", None, supervised=True, relay_exit_idle=True
    )
    relay = Relay(config)
    await relay.start()
    polls = Polls(relay)
    try:
        watcher = asyncio.create_task(relay.watch_idle(polls.times()))
        for _ in range(30):
            assert not await polls.look()  # a sandbox: containerd may be restarting
        state.unlink()
        async with await Client.connect_unix(config.relay_socket) as client:
            for _ in range(30):  # a shim's start, a task not created yet, keeps us
                await ServiceStub(client, RELAY).Listen(
                    relay_pb2.ListenRequest(namespace="k8s.io"), timeout=10
                )
                assert not await polls.look()
        # Idle from the first look that found nothing; left IDLE_SECONDS later.
        idle_after = [await polls.look() for _ in range(int(relay_module.IDLE_SECONDS) + 1)]
        assert idle_after == [False] * int(relay_module.IDLE_SECONDS) + [True]
        await asyncio.wait_for(watcher, 30)
    finally:
        await relay.close()


async def test_the_services_relay_never_leaves_by_itself(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(relay_module, "IDLE_SECONDS", 0.1)
    relay = Relay(Settings(run_dir, run_dir / "state", "pod-vm", None, supervised=True))
    await relay.start()
    try:
        await asyncio.wait_for(relay.watch_idle(), 1)  # returns at once: nothing to watch
        await asyncio.sleep(1.5)
        assert not relay.idle.is_set()
    finally:
        await relay.close()


async def test_the_sandboxes_keep_it_when_the_state_directory_path_leads_elsewhere(
    run_dir: Path,
) -> None:
    # A relay whose daemon container was removed: its mount of the host's state
    # directory is detached, the path leads nowhere (moved away here); the sandboxes in
    # the host's directory must still keep it.
    state = sandbox_state(run_dir)
    config = Settings(
        run_dir, run_dir / "state", "pod-vm", None, supervised=True, relay_exit_idle=True
    )
    relay = Relay(config)
    await relay.start()
    polls = Polls(relay)
    try:
        watcher = asyncio.create_task(relay.watch_idle(polls.times()))
        moved = run_dir / "host-state"
        (run_dir / "state").rename(moved)
        for _ in range(int(relay_module.IDLE_SECONDS) * 2):
            assert not await polls.look()
        (moved / state.relative_to(run_dir / "state")).unlink()
        idle_after = [await polls.look() for _ in range(int(relay_module.IDLE_SECONDS) + 1)]
        assert idle_after == [False] * int(relay_module.IDLE_SECONDS) + [True]
        await asyncio.wait_for(watcher, 30)
    finally:
        await relay.close()
