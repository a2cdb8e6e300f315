"""``contrast-node-daemon``: one process serving the shim API for every pod.

Start-up: take the run directory's lock (one daemon per node), load the persisted
sandboxes and reattach them, serve ``containerd.task.v2.Task`` (also as ``v3``) and
``contrast.node.v1.Shim`` on ``<run dir>/daemon.sock`` (mode 0600, peers must be
root) and each namespace's Task socket ``<run dir>/daemon-ns/<namespace>.sock``
(containerd reaches those through the relay, :mod:`agent.relay`), write
``daemon.pid`` (the DaemonSet's shim launcher enters our mount namespace through it),
then tell systemd READY=1. From then on, and every ``CONTRAST_GC_SECONDS``, sandboxes
whose container containerd no longer has are destroyed (:mod:`agent.sandbox.gc`).
SIGTERM/SIGINT stop serving; pod-VMs keep running for the next daemon to reattach.

Exit codes: 0 after a signal, 1 on a start-up failure (one line on stderr or in the
journal naming the problem), 2 on bad usage.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from agent.daemon import entry, introspect
from agent.daemon import settings as daemon_settings
from agent.daemon.lifecycle import (
    remove_pid_file,
    root_only,
    write_pid_file,
)
from agent.daemon.systemd import Notifier
from agent.events import EventForwarder
from agent.sandbox import gc
from agent.sandbox.backend import SandboxBackend
from agent.sandbox.local_backend import LocalAgentBackend
from agent.sandbox.state import StateStore
from agent.sandbox.vm_backend import PodVmBackend
from shim import control, task
from shim.endpoints import Endpoints
from shim.pods import Pods
from ttrpc import Server, TtrpcError

log = logging.getLogger("agent.daemon")


class DaemonError(Exception):
    """The daemon cannot start; names what is wrong."""


def gc_candidates(
    tasks: task.TaskService, registrations: control.Registrations
) -> list[gc.Candidate]:
    """Every sandbox, with the containerd that owns it (see :mod:`agent.sandbox.gc`)."""
    found = []
    for pod in tasks.pods.all():
        record = pod.record
        registration = registrations.get(record.namespace, record.id)
        registered = registration.grpc_address if registration is not None else ""
        address = gc.grpc_address(registered, record.ttrpc_address)
        found.append(gc.Candidate(record.namespace, record.id, address))
    return found


def make_backend(config: daemon_settings.Settings) -> SandboxBackend:
    if config.backend == "local-agent":
        assert config.agent_socket is not None
        return LocalAgentBackend(config.agent_socket)
    return PodVmBackend()


async def serve(config: daemon_settings.Settings, notifier: Notifier) -> int:
    """Run the daemon until SIGTERM/SIGINT; raises DaemonError at start-up."""
    store = StateStore(config.state_dir)
    registrations = control.Registrations()
    events = EventForwarder()
    tasks = task.TaskService(
        make_backend(config), Pods(store), registrations, events, config.run_dir
    )
    await tasks.reattach()
    endpoints = Endpoints(config.run_dir, tasks, root_only)
    for pod in tasks.pods.all():
        await endpoints.ensure(pod.record.namespace)
    server = Server(peer_check=root_only)
    for name in task.NAMES:  # for clients that send containerd's namespace metadata
        server.register(task.SERVICE, tasks, name=name)
    server.register(control.SERVICE, control.ControlService(registrations, tasks, endpoints.ensure))
    try:
        await server.serve_unix(config.socket, mode=0o600)
    except TtrpcError as err:
        raise DaemonError(f"cannot serve on {config.socket}: {err}") from err
    write_pid_file(config.pid_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    introspect.install(config.run_dir)
    notifier.notify("READY=1", f"STATUS=serving on {config.socket}")
    log.info("serving the shim API on %s (backend %s)", config.socket, config.backend)
    watchdog = asyncio.create_task(notifier.watchdog())
    collector = gc.SandboxCollector(lambda: gc_candidates(tasks, registrations), tasks.collect)
    sweeper = asyncio.create_task(collector.run(config.gc_seconds))
    try:
        await stop.wait()
    finally:
        notifier.notify("STOPPING=1")
        log.info("stopping; pod-VMs keep running")
        watchdog.cancel()
        sweeper.cancel()
        remove_pid_file(config.pid_file)
        await server.close()
        await endpoints.close()
        await tasks.close()
        await events.close()
    return 0


PROGRAM = entry.Program(
    name="contrast-node-daemon",
    description="Serve the containerd shim API for every Contrast pod-VM of this node.",
    lock_file=daemon_settings.LOCK_FILE,
    what="node daemon",
    errors=(DaemonError,),
)


def main(argv: list[str] | None = None) -> int:
    return entry.run(PROGRAM, serve, argv)
