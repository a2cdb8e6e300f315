"""The agent's start-up: Health answers while the AgentService (imports, initdata,
policy) is still being built, and no AgentService request is served before it is."""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.transport.client import AgentClient
from api.kata import agent_pb2
from guest.agent.policy import Policy
from guest.agent.server import AgentConfig, DeferredAgentService, build_agent, build_server
from guest.agent.service import AgentService
from ttrpc import Client, PermissionDenied, Unavailable, Unimplemented

DETAILS_ONLY = "package agent_policy\n\nGuestDetailsRequest := true\n"


@pytest.fixture
async def started(
    tmp_path: Path,
) -> AsyncIterator[tuple[AgentClient, DeferredAgentService, threading.Event]]:
    """A server with a DeferredAgentService whose build waits for ``release``."""
    release = threading.Event()
    config = AgentConfig(run_dir=tmp_path / "run", policy_path=tmp_path / "absent.rego")

    def build() -> AgentService:
        if not release.wait(10):
            raise TimeoutError("the test never released the build")
        return build_agent(config, agent_policy=Policy(DETAILS_ONLY))

    deferred = DeferredAgentService()
    server = build_server(deferred)
    ours, theirs = socket.socketpair()
    await server.serve_fd(theirs.detach())
    deferred.start(build)
    client = AgentClient(await Client.from_fd(ours.detach()))
    yield client, deferred, release
    release.set()
    await client.close()
    await server.close()


async def test_health_answers_while_requests_wait_for_the_policy(
    started: tuple[AgentClient, DeferredAgentService, threading.Event],
) -> None:
    client, _, release = started
    details = asyncio.ensure_future(client.guest_details())
    create = asyncio.ensure_future(
        client.agent.CreateContainer(agent_pb2.CreateContainerRequest(container_id="c"))
    )
    assert await client.check()
    await asyncio.sleep(0.3)
    assert not details.done()
    assert not create.done()
    release.set()
    # Both are then decided by the policy: one served, the other denied.
    assert (await asyncio.wait_for(details, 10)).agent_details.version
    with pytest.raises(PermissionDenied, match="CreateContainerRequest is blocked by policy"):
        await asyncio.wait_for(create, 10)
    with pytest.raises(Unimplemented):
        await client.agent.MemHotplugByProbe(agent_pb2.MemHotplugByProbeRequest())


def failing_build() -> AgentService:
    raise OSError("cannot import regopy")


async def test_a_failed_build_fails_every_request() -> None:
    deferred = DeferredAgentService()
    server = build_server(deferred)
    ours, theirs = socket.socketpair()
    await server.serve_fd(theirs.detach())
    building = deferred.start(failing_build)
    client = AgentClient(await Client.from_fd(ours.detach()))
    try:
        with pytest.raises(OSError, match="cannot import regopy"):
            await building
        assert await client.check()
        with pytest.raises(Unavailable, match="failed to start: cannot import regopy"):
            await client.guest_details()
    finally:
        await client.close()
        await server.close()


async def test_start_only_once() -> None:
    deferred = DeferredAgentService()
    first = deferred.start(failing_build)
    with pytest.raises(RuntimeError, match="already being built"):
        deferred.start(failing_build)
    with pytest.raises(OSError):
        await first


async def test_answered_is_set_only_once_the_first_call_is_answered(
    started: tuple[AgentClient, DeferredAgentService, threading.Event],
) -> None:
    # The agent sets up the image puller on this event: before the first answer, its
    # imports would hold up that answer.
    client, deferred, release = started
    details = asyncio.ensure_future(client.guest_details())
    assert await client.check()  # Health is no AgentService call
    await asyncio.sleep(0.3)
    assert not deferred.answered.is_set()
    release.set()
    await asyncio.wait_for(details, 10)
    await asyncio.wait_for(deferred.answered.wait(), 10)


def test_the_ready_lines_clocks_are_what_the_boot_bench_reads() -> None:
    from bench.vm_boot_bench import READY
    from guest.agent.__main__ import boot_clocks
    from guest.init import READY_LINE

    found = READY.search(f"{READY_LINE} on /dev/vport0p1 {boot_clocks()}\n")
    assert found is not None
    now, started = float(found[1]), float(found[2])
    # This process started before now, on the same clock (the host's uptime here).
    assert 0 < started <= now <= float(Path("/proc/uptime").read_text().split()[0]) + 0.01


def test_the_collector_turned_off_by_the_guest_entry_is_turned_on_once_built() -> None:
    from guest.agent.__main__ import collect_from_now

    assert gc.isenabled()
    gc.disable()  # as contrast-init starts the agent
    try:
        kept: list[list[int]] = [[]]  # built during start-up: frozen out of later collections
        frozen = gc.get_freeze_count()
        collect_from_now()
        assert gc.isenabled()
        assert gc.get_freeze_count() > frozen
        after = gc.get_freeze_count()
        more: list[list[int]] = [[] for _ in range(10)]  # what a 2nd freeze would take
        collect_from_now()  # on already: nothing more is frozen
        assert gc.get_freeze_count() == after
    finally:
        gc.unfreeze()
        gc.enable()
    del kept, more


@pytest.mark.allow_programs(os.path.basename(sys.executable))
def test_the_guest_entry_imports_asyncio_without_tls_and_ssl_stays_importable() -> None:
    # A fresh interpreter, as contrast-init starts it (-S, no site): asyncio's TLS is
    # off, and the image puller's later "import ssl" (urllib's HTTPS) still works.
    probe = (
        "import sys\n"
        "from guest.init.__main__ import import_asyncio_without_tls\n"
        "import_asyncio_without_tls()\n"
        "import asyncio.base_events, asyncio.selector_events, asyncio.sslproto\n"
        "assert 'ssl' not in sys.modules, 'ssl was loaded'\n"
        "tls = [m.ssl for m in (asyncio.base_events, asyncio.selector_events, asyncio.sslproto)]\n"
        "assert tls == [None, None, None], tls\n"
        "import ssl, urllib.request\n"
        "assert ssl.create_default_context().check_hostname\n"
    )
    root = Path(__file__).resolve().parents[3]
    done = subprocess.run(
        [sys.executable, "-S", "-P", "-c", probe],
        env={"PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_the_native_bench_starts_python_as_contrast_init_does() -> None:
    # bench.guest_native compares the guest's Python part with the same start on the
    # host: contrast-init's interpreter flags and the steps of its guest entry. A change
    # to either must be carried over to bench/guest_native.py's FLAGS and ENTRY.
    import inspect

    from bench.guest_native import ENTRY, FLAGS
    from guest.init.__main__ import main

    root = Path(__file__).resolve().parents[3]
    init = (root / "guest/init/contrast-init.sh").read_text()
    starts = [line.strip() for line in init.splitlines() if line.strip().startswith("python3 ")]
    assert len(starts) == 1, starts
    assert starts[0].split()[1 : 1 + len(FLAGS)] == list(FLAGS)
    entry = init.split("-c '", 1)[1].split("'", 1)[0]
    assert entry == (
        "import gc, sys; gc.disable(); from guest.init.__main__ import main; sys.exit(main())"
    )
    body = [line.strip() for line in inspect.getsource(main).splitlines()[1:] if line.strip()]
    assert body == [
        "import_asyncio_without_tls()",
        "from guest.agent.__main__ import main as agent_main",
        'if importlib.util.find_spec("guest.initdata.cli") is not None:',
        "return agent_main([], before_policy=process_initdata)",
        "return agent_main([])",
    ]
    for step in ("gc.disable()", "import_asyncio_without_tls()", "before_policy=process_initdata"):
        assert step in ENTRY, step
